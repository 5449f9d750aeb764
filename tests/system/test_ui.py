"""The Dagster UI over a real audit, in a real browser: dagster-webserver on 127.0.0.1 over the Dagster home of a
small real audit (vLLM on a demo checkpoint), opened in headless Chromium (Debian's ``chromium`` and
``chromium-driver``; ``make test`` installs them when missing). What a user opens to see "what is fixable in this
checkpoint?" must show the picture and the numbers, not a file path: the figures come from
``fixability figures serve`` (started here as ``make ui`` starts it) and are on the page as it opens, whole, without
a click on "[Show Markdown]". Screenshots land in ``test-artifacts/`` (``FIXABILITY_TEST_ARTIFACTS`` to move them);
the README's is ``topography.png``."""

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from fixability_dag.core.regimes import REGIMES
from fixability_dag.pipeline.figure_server import FIGURE_URL_ENV

from tests.support import REPO, default_signals, free_port

pytestmark = [pytest.mark.vllm, pytest.mark.browser]

ARTIFACTS = Path(os.environ.get("FIXABILITY_TEST_ARTIFACTS") or REPO / "test-artifacts")
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")
WINDOW = "1920,1200"
"""A full-HD screen: the asset page's metadata table leaves a 640 px figure room beside its key and timestamp
(fixability_dag/pipeline/plots.py); a 1280 px window leaves about 300 px."""


@pytest.fixture(scope="module")
def webserver(audited_instance):
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(audited_instance.home), "FIXABILITY_DB_URL": audited_instance.db_url}
    log = (audited_instance.home / "webserver.log").open("w")
    server = subprocess.Popen([str(Path(sys.executable).with_name("dagster-webserver")), "-h", "127.0.0.1", "-p",
                               str(port), "-w", str(REPO / "workspace.yaml")], cwd=REPO, env=env, stdout=log,
                              stderr=subprocess.STDOUT, preexec_fn=default_signals)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
    while True:
        try:
            with urllib.request.urlopen(f"{url}/server_info", timeout=2):
                break
        except OSError:
            if server.poll() is not None or time.monotonic() > deadline:
                server.kill()
                pytest.fail(f"dagster-webserver did not start: {(audited_instance.home / 'webserver.log').read_text()[-3000:]}")
            time.sleep(1)
    yield url
    server.terminate()
    server.wait(timeout=30)
    log.close()


@pytest.fixture(scope="module")
def figure_server(audited_instance):
    """``fixability figures serve`` over the audit's figures, on the port its asset pages link (as ``make ui``)."""
    env = {**os.environ, FIGURE_URL_ENV: f"http://127.0.0.1:{audited_instance.figure_port}"}
    server = subprocess.Popen([sys.executable, "-m", "fixability_dag.cli", "figures", "serve", "--db",
                               audited_instance.db_url], cwd=REPO, env=env, stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, preexec_fn=default_signals)
    line = server.stdout.readline()
    if "serving the PNG files" not in line:
        server.kill()
        pytest.fail(f"the figure server did not start: {line}{server.stdout.read()}")
    yield env[FIGURE_URL_ENV]
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.fail("chromium and chromedriver are needed (make test installs Debian's chromium and chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", f"--window-size={WINDOW}"):
        options.add_argument(flag)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_page_load_timeout(120)
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    yield driver
    driver.quit()


def wait_for(driver, find, what: str, timeout: float = 120):
    """Poll ``find(driver)`` until it returns something truthy; fail with a screenshot saying what was missing."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            found = find(driver)
        except Exception:  # noqa: BLE001 (the page is still rendering: stale or absent elements)
            found = None
        if found:
            return found
        time.sleep(0.5)
    driver.save_screenshot(str(ARTIFACTS / f"missing-{what.replace(' ', '_')}.png"))
    pytest.fail(f"{what} did not appear within {timeout} s at {driver.current_url}")


def page(driver, url: str, ready, what: str):
    """Open ``url``, wait until ``ready(driver)``, and close the UI's first-visit newsletter prompt if it shows."""
    driver.get(url)
    # The prompt opens 1 s after the UI mounts unless the browser dismissed it before ("communityNux" in local
    # storage, read at mount): dismissed here for every later page, and closed on this one if it opens.
    driver.execute_script("window.localStorage.setItem('communityNux', JSON.stringify('1'))")
    wait_for(driver, ready, what)
    deadline = time.monotonic() + 3
    while time.monotonic() < deadline:
        buttons = driver.find_elements("xpath", "//div[contains(@class, 'bp5-dialog')]//button[normalize-space()='Skip']")
        if buttons:
            buttons[0].click()
            wait_for(driver, lambda d: not d.find_elements("css selector", ".bp5-overlay-backdrop"), "the prompt closed", 10)
            break
        time.sleep(0.25)


def shown_figures(driver, base_url: str):
    """The figures the page shows in place (images from the figure server that loaded: non-zero natural size)."""
    shown = []
    for img in driver.find_elements("css selector", f"img[src^='{base_url}/']"):
        natural = driver.execute_script("return [arguments[0].complete, arguments[0].naturalWidth, "
                                        "arguments[0].naturalHeight]", img)
        if natural[0] and natural[1] > 0 and img.size["width"] > 0 and img.size["height"] > 0:
            shown.append((img.get_attribute("src"), img.size))
    return shown


SCROLL_TO = """
let img = arguments[0];
img.scrollIntoView({block: "center"});
for (let box = img.parentElement; box; box = box.parentElement) box.scrollLeft = 0;  // as the page opened: no sideways
"""
CLIPPED = """
let img = arguments[0], right = img.getBoundingClientRect().right, clipped = [];
for (let box = img.parentElement; box; box = box.parentElement) {
  let style = getComputedStyle(box);
  if (["auto", "scroll", "hidden", "clip"].includes(style.overflowX) && box.getBoundingClientRect().right < right - 1)
    clipped.push(box.tagName + "." + box.className + " ends at " + box.getBoundingClientRect().right);
}
if (right > window.innerWidth) clipped.push("the window ends at " + window.innerWidth);
return [right, clipped];
"""


def assert_figure_shown(driver, base_url: str, name: str, what: str):
    """``name``'s figure is on the page as it opened (no click on [Show Markdown]) and readable there: full size
    and whole, not cut off by a box the user would have to scroll sideways."""
    assert not driver.find_elements("css selector", ".bp5-dialog"), "a dialog is open"
    [(src, size)] = wait_for(driver, lambda d: [f for f in shown_figures(d, base_url) if f"/{name}.png?v=" in f[0]],
                             what)
    assert size["width"] >= 500 and size["height"] >= 200, size
    img = driver.find_element("css selector", f"img[src='{src}']")
    driver.execute_script(SCROLL_TO, img)
    right, clipped = driver.execute_script(CLIPPED, img)
    assert not clipped, f"{what} (right edge at {right}) is cut off: {clipped}"


def test_topography_page_shows_the_plot_and_the_shares(webserver, figure_server, browser, audited_instance):
    page(browser, f"{webserver}/assets/failure_topography", lambda d: "latest_share_structural" in d.page_source,
         "the topography's regime-share entries")
    for regime in REGIMES:
        assert f"latest_share_{regime}" in browser.page_source
    assert_figure_shown(browser, figure_server, "topography", "the topography plot")
    browser.save_screenshot(str(ARTIFACTS / "topography.png"))


def test_checkpoint_pages_show_their_plots_regime_shares_and_checks(webserver, figure_server, browser, audited_instance):
    key = audited_instance.checkpoint_id
    page(browser, f"{webserver}/assets/base_rollouts?partition={key}",
         lambda d: "pass_rate_by_difficulty_plot" in d.page_source, "base_rollouts' plot entry")
    assert_figure_shown(browser, figure_server, f"{key}/pass_rate_by_difficulty", "the pass-rate plot")
    browser.save_screenshot(str(ARTIFACTS / "base_rollouts.png"))

    page(browser, f"{webserver}/assets/regime_labels?partition={key}", lambda d: "share_structural" in d.page_source,
         "regime_labels' share entries")
    for regime in REGIMES:
        assert f"share_{regime}" in browser.page_source
    assert "training_step" in browser.page_source
    browser.save_screenshot(str(ARTIFACTS / "regime_labels.png"))
    page(browser, f"{webserver}/assets/regime_labels?view=checks",
         lambda d: "every_failed_problem_has_evidence_and_a_label" in d.page_source, "the Checks tab")
    browser.save_screenshot(str(ARTIFACTS / "regime_labels-checks.png"))

    page(browser, f"{webserver}/assets/rescue_evaluation?partition={key}", lambda d: "rescue_rate_routed" in d.page_source,
         "rescue_evaluation's rates")
    assert_figure_shown(browser, figure_server, f"{key}/rescue_by_policy", "the rescue plot")
    browser.save_screenshot(str(ARTIFACTS / "rescue_evaluation.png"))
