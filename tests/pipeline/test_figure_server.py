"""The figure server serves the PNGs beside the database and nothing else; a figure's metadata entry is short
enough for the UI to show it in place and still says where the file is."""

import http.client
import os
import signal
import socket
import subprocess
import sys
import threading
import urllib.request

import pandas as pd
import pytest

from assets.shape import metadata_value
from fixability_dag.cli import main as cli_main
from fixability_dag.pipeline import figure_server
from fixability_dag.pipeline.figure_server import (
    FIGURE_URL_ENV,
    MARKDOWN_LIMIT,
    FigureServer,
    FigureServerError,
    figure_base_url,
    figure_markdown,
)
from fixability_dag.pipeline.plots import figure_dir, pass_rate_by_difficulty_plot

from tests.support import REPO, default_signals, free_port


@pytest.fixture
def figures(tmp_path):
    """A real figure where an audit writes it: ``figures/<checkpoint>/`` beside a SQLite database."""
    root = figure_dir(f"sqlite:///{tmp_path / 'audit.db'}")
    rates = pd.DataFrame({"difficulty": [1, 2, 3], "pass rate": [0.9, 0.5, 0.1]})
    figure = pass_rate_by_difficulty_plot(rates, "arith-sft-s0300", root / "arith-sft-s0300" / "pass_rate_by_difficulty.png")
    (tmp_path / "audit.db").write_text("not a figure")
    (root / "notes.txt").write_text("not a png")
    (root / ".hidden.png").write_bytes(figure.png)
    (root / "escape.png").symlink_to(tmp_path / "audit.db")
    return root, figure


@pytest.fixture
def server(figures):
    root, _ = figures
    server = FigureServer(root, 0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()


def status(server, path: str, method: str = "GET") -> tuple[int, bytes, str | None]:
    """The raw request (urllib would normalise ``..`` away before sending it)."""
    connection = http.client.HTTPConnection("127.0.0.1", server.server_port, timeout=10)
    connection.request(method, path)
    response = connection.getresponse()
    body = response.read()
    connection.close()
    return response.status, body, response.getheader("Content-Type")


def test_a_figure_entry_is_short_shows_the_picture_and_names_the_file(figures, monkeypatch):
    root, figure = figures
    monkeypatch.setenv(FIGURE_URL_ENV, "http://127.0.0.1:4321/")
    entry = metadata_value(figure, root)  # what the asset page gets
    text = entry.value
    assert len(text) < MARKDOWN_LIMIT, len(text)  # shown in place, not behind [Show Markdown]
    url = "http://127.0.0.1:4321/arith-sft-s0300/pass_rate_by_difficulty.png?v="
    assert text.startswith(f"![{figure.caption}]({url}") and f"File: `{figure.path}`" in text
    assert "base64" not in text
    # a new picture at the same path gets a new URL, so a browser does not show the cached older one
    other = figure_markdown(figure.caption, figure.path, root, figure.png + b"x", "http://127.0.0.1:4321")
    assert other.split(")")[0] != text.split(")")[0]
    # a database so deep that the absolute path would cross the limit: the picture stays, the file is named under
    # the figure directory
    deep = root.parent / ("d" * 400) / ("e" * 400) / "figures"
    short = figure_markdown(figure.caption, deep / "ck" / "p.png", deep, figure.png, "http://127.0.0.1:4321")
    assert len(short) < MARKDOWN_LIMIT and short.startswith("![") and "File: `ck/p.png`" in short
    # a figure outside the served directory is named, not linked
    outside = figure_markdown(figure.caption, figure.path, root / "elsewhere", figure.png, "http://127.0.0.1:4321")
    assert "![" not in outside and str(figure.path) in outside


@pytest.mark.parametrize("value, problem", [("ftp://127.0.0.1:3001", "must be an http URL"),
                                            ("http://", "must be an http URL"),
                                            ("http://127.0.0.1:3001/?x=1", "must not have a query"),
                                            ("http://127.0.0.1:99999", "out of range")])
def test_a_bad_figure_url_is_refused_naming_the_variable(value, problem):
    with pytest.raises(FigureServerError, match=rf"{FIGURE_URL_ENV}=.*{problem}"):
        figure_base_url({FIGURE_URL_ENV: value})
    assert figure_base_url({}) == figure_server.DEFAULT_FIGURE_URL


def test_the_server_serves_pngs_under_its_directory_and_nothing_else(server, figures):
    _, figure = figures
    code, body, kind = status(server, "/arith-sft-s0300/pass_rate_by_difficulty.png?v=abc")
    assert (code, kind) == (200, "image/png") and body == figure.png
    assert status(server, "/arith-sft-s0300/pass_rate_by_difficulty.png", "HEAD")[:2] == (200, b"")
    for path in ("/arith-sft-s0300/../../audit.db", "/%2e%2e/audit.db", "/..%2faudit.db", "//etc/passwd",
                 "/notes.txt", "/arith-sft-s0300/", "/", "/.hidden.png", "/escape.png", "/missing.png",
                 "/arith-sft-s0300%5c..%5c..%5caudit.db"):
        assert status(server, path)[0] == 404, path
    for method in ("POST", "PUT", "DELETE"):
        assert status(server, "/arith-sft-s0300/pass_rate_by_difficulty.png", method)[0] == 405, method
    assert server.server_address[0] == "127.0.0.1"


def test_serve_refuses_a_taken_port_clearly(tmp_path, capsys):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        assert cli_main(["figures", "serve", "--db", f"sqlite:///{tmp_path / 'a.db'}", "--port", str(port)]) == 2
    err = capsys.readouterr().err
    assert f"cannot serve figures on 127.0.0.1:{port}" in err and FIGURE_URL_ENV in err


def test_serve_serves_the_database_figures_until_interrupted(tmp_path, figures):
    """``fixability figures serve`` as ``make ui`` starts it: on the port of ``$FIXABILITY_FIGURE_URL``, over the
    figures beside ``--db``; Ctrl-C stops it cleanly."""
    root, figure = figures
    port = free_port()
    env = {**os.environ, FIGURE_URL_ENV: f"http://127.0.0.1:{port}"}
    server = subprocess.Popen([sys.executable, "-m", "fixability_dag.cli", "figures", "serve", "--db",
                               f"sqlite:///{root.parent / 'audit.db'}"], cwd=REPO, env=env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, preexec_fn=default_signals)
    try:
        assert f"serving the PNG files under {root}" in server.stdout.readline()
        url = f"http://127.0.0.1:{port}/arith-sft-s0300/pass_rate_by_difficulty.png"
        with urllib.request.urlopen(url, timeout=10) as response:
            assert response.read() == figure.png
    finally:
        server.send_signal(signal.SIGINT)
        assert server.wait(timeout=30) == 0, server.stderr.read()
