"""The figures beside the database, over HTTP on 127.0.0.1, so the Dagster UI shows them on the asset page.

Dagster's UI renders a markdown metadata entry in place only while it is shorter than 1,000 characters; a longer
one sits behind "[Show Markdown]" in a modal (``MetadataEntry.tsx``). A PNG inlined as a data URI is always longer,
so the picture was never where people look. The entry is instead a short link to the PNG as this server serves it
(:func:`figure_markdown`), plus the caption and the file's path, which still say where the figure is when the server
is not running (the browser then shows the caption as the broken image's text).

The server is read-only and narrow: GET (and HEAD) of an existing ``.png`` file under the figure directory, nothing
else (no listings, no dot files, no ``..``, no symlink out of the directory). It binds 127.0.0.1 only. ``make ui``
starts it beside ``dagster dev`` (``fixability figures serve``); ``FIXABILITY_FIGURE_URL`` says where it is, read
when an asset writes its metadata, so a run and the server agree when both see the same environment.
"""

from __future__ import annotations

import hashlib
import os
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path, PurePosixPath
from urllib.parse import quote, unquote, urlsplit

FIGURE_URL_ENV = "FIXABILITY_FIGURE_URL"
DEFAULT_FIGURE_URL = "http://127.0.0.1:3001"
MARKDOWN_LIMIT = 1000
"""Dagster's UI shows a markdown entry in place only below this many characters."""
HOST = "127.0.0.1"


class FigureServerError(ValueError):
    """A bad ``FIXABILITY_FIGURE_URL`` or a port the server cannot take."""


def figure_base_url(environ=None) -> str:
    """``$FIXABILITY_FIGURE_URL`` (else the default), checked: an http URL with a host and nothing after the path."""
    value = (os.environ if environ is None else environ).get(FIGURE_URL_ENV) or DEFAULT_FIGURE_URL
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise FigureServerError(f"{FIGURE_URL_ENV}={value!r}: must be an http URL with a host, "
                                f"e.g. {DEFAULT_FIGURE_URL}")
    if parts.query or parts.fragment:
        raise FigureServerError(f"{FIGURE_URL_ENV}={value!r}: must not have a query or fragment")
    try:
        parts.port
    except ValueError as exc:
        raise FigureServerError(f"{FIGURE_URL_ENV}={value!r}: {exc}") from None
    return value.rstrip("/")


def figure_port(base_url: str) -> int:
    """The port the server listens on for ``base_url`` (its explicit port, else the scheme's)."""
    parts = urlsplit(base_url)
    return parts.port or (443 if parts.scheme == "https" else 80)


def figure_url(path: Path, root: Path, png: bytes, base_url: str) -> str | None:
    """Where the server serves ``path`` (a file under ``root``), with a hash of its content so a browser does not
    show a cached older picture of the same file; None when ``path`` is not under ``root``."""
    try:
        relative = Path(path).resolve().relative_to(Path(root).resolve())
    except ValueError:
        return None
    return f"{base_url}/{quote(relative.as_posix())}?v={hashlib.sha256(png).hexdigest()[:12]}"


def figure_markdown(caption: str, path: Path, root: Path, png: bytes, base_url: str) -> str:
    """The figure as a short markdown entry: the picture from the server, its caption, and the file's path (the
    absolute one, or the one under ``root`` when the absolute path would push the entry past Dagster's limit)."""
    url = figure_url(path, root, png, base_url)
    picture = f"![{caption}]({url})\n\n" if url else ""
    hint = " (served by `fixability figures serve`, which `make ui` starts)" if url else ""
    markdown = f"{picture}{caption}. File: `{path}`{hint}"
    if len(markdown) >= MARKDOWN_LIMIT and url:
        markdown = f"{picture}{caption}. File: `{Path(path).resolve().relative_to(Path(root).resolve())}`{hint}"
    return markdown


def resolve_request(root: Path, request_path: str) -> Path | None:
    """The file a request path names, or None unless it is an existing ``.png`` inside ``root`` reached without
    ``..``, dot files or a symlink that leads out."""
    path = unquote(urlsplit(request_path).path)
    parts = PurePosixPath(path).parts
    if not parts or parts[0] != "/" or len(parts) < 2 or "\\" in path or "\x00" in path:
        return None
    names = parts[1:]
    if any(name in ("", ".", "..") or name.startswith(".") for name in names) or not names[-1].endswith(".png"):
        return None
    base = Path(root).resolve()
    candidate = base.joinpath(*names).resolve()
    if not candidate.is_relative_to(base) or not candidate.is_file():
        return None
    return candidate


class _Handler(BaseHTTPRequestHandler):
    server: FigureServer
    server_version = "fixability-figures"

    def _send(self, body: bool) -> None:
        file = resolve_request(self.server.root, self.path)
        if file is None:
            self.send_error(HTTPStatus.NOT_FOUND, "no such figure")
            return
        data = file.read_bytes()
        self.send_response(HTTPStatus.OK)
        self.send_header("Content-Type", "image/png")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Cache-Control", "no-cache")  # the file is rewritten in place by the next materialization
        self.send_header("X-Content-Type-Options", "nosniff")
        self.end_headers()
        if body:
            self.wfile.write(data)

    def do_GET(self) -> None:  # noqa: N802 (http.server's naming)
        self._send(body=True)

    def do_HEAD(self) -> None:  # noqa: N802
        self._send(body=False)

    def _refuse(self) -> None:
        self.send_error(HTTPStatus.METHOD_NOT_ALLOWED, "read-only")

    do_POST = do_PUT = do_DELETE = do_PATCH = do_OPTIONS = _refuse  # noqa: N815

    def log_message(self, format, *args) -> None:  # noqa: A002 (http.server's signature)
        if self.server.verbose:
            super().log_message(format, *args)


class FigureServer(ThreadingHTTPServer):
    """Serves the PNG files under ``root`` on 127.0.0.1:``port`` (0 picks a free port: see ``server_port``)."""

    daemon_threads = True

    def __init__(self, root: Path, port: int, verbose: bool = False):
        self.root, self.verbose = Path(root), verbose
        try:
            super().__init__((HOST, port), _Handler)
        except OSError as exc:
            raise FigureServerError(f"cannot serve figures on {HOST}:{port}: {exc.strerror or exc} "
                                    f"(another server there? set {FIGURE_URL_ENV} to another port)") from None
