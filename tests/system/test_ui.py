"""The Dagster UI over a real audit, in a real browser: dagster-webserver on 127.0.0.1 over the Dagster home of a
small real audit (vLLM on a demo checkpoint), opened in headless Chromium (Debian's ``chromium`` and
``chromium-driver``; ``make test`` installs them when missing). What a user opens to see "what is fixable in this
checkpoint?" must show the picture and the numbers, not a file path. Screenshots land in ``test-artifacts/``
(``FIXABILITY_TEST_ARTIFACTS`` to move them); the README's is one of them."""

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from fixability_dag.core.regimes import REGIMES

from tests.support import REPO, free_port

pytestmark = [pytest.mark.vllm, pytest.mark.browser]

ARTIFACTS = Path(os.environ.get("FIXABILITY_TEST_ARTIFACTS") or REPO / "test-artifacts")
CHROMIUM, CHROMEDRIVER = shutil.which("chromium"), shutil.which("chromedriver")


@pytest.fixture(scope="module")
def webserver(audited_instance):
    port = free_port()
    env = {**os.environ, "DAGSTER_HOME": str(audited_instance.home), "FIXABILITY_DB_URL": audited_instance.db_url}
    log = (audited_instance.home / "webserver.log").open("w")
    server = subprocess.Popen([str(Path(sys.executable).with_name("dagster-webserver")), "-h", "127.0.0.1", "-p",
                               str(port), "-w", str(REPO / "workspace.yaml")], cwd=REPO, env=env, stdout=log,
                              stderr=subprocess.STDOUT)
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
def browser():
    if not (CHROMIUM and CHROMEDRIVER):
        pytest.fail("chromium and chromedriver are needed (make test installs Debian's chromium and chromium-driver)")
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1280,1400"):
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


def embedded_images(driver):
    """Images whose source is an inline PNG (our figures), with their rendered size."""
    return [(img, img.size) for img in driver.find_elements("css selector", "img[src^='data:image/png;base64,']")
            if img.size["width"] > 0 and img.size["height"] > 0]


def open_markdown(driver, entry: str):
    """Open a markdown metadata entry the way a user would: click its [Show Markdown] button, wait for the modal."""
    row = wait_for(driver, lambda d: [r for r in d.find_elements("css selector", "tr") if r.text.startswith(entry)],
                   f"metadata entry {entry}")[0]
    row.find_element("xpath", ".//button[contains(., 'Markdown')] | .//*[contains(text(), 'Markdown')]").click()


def test_topography_page_shows_the_plot_and_the_shares(webserver, browser, audited_instance):
    page(browser, f"{webserver}/assets/failure_topography", lambda d: "latest_share_structural" in d.page_source,
         "the topography's regime-share entries")
    for regime in REGIMES:
        assert f"latest_share_{regime}" in browser.page_source
    browser.save_screenshot(str(ARTIFACTS / "topography-overview.png"))
    images = embedded_images(browser)
    if not images:  # markdown entries open in a modal
        open_markdown(browser, "plot")
        images = wait_for(browser, embedded_images, "the embedded topography plot")
    [(_, size)] = images[:1]
    assert size["width"] >= 300 and size["height"] >= 100
    browser.save_screenshot(str(ARTIFACTS / "topography.png"))


def test_checkpoint_page_shows_regime_shares_and_checks(webserver, browser, audited_instance):
    key = audited_instance.checkpoint_id
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
    open_markdown(browser, "rescue_by_policy_plot")
    wait_for(browser, embedded_images, "the embedded rescue plot")
    browser.save_screenshot(str(ARTIFACTS / "rescue_evaluation.png"))
