"""The built book, served on 127.0.0.1 and read by Debian's chromium.

Without a `chromium` (or with DLCOURSE_CHROMIUM="") these tests are
SKIPPED, and the run says so in its summary; with
DLCOURSE_REQUIRE_BROWSER=1 (set by .ci/run) a missing chromium FAILS them
instead. The browser comes from the system (apt-get
install chromium); playwright never downloads one here.

The book is built once per session into a temporary folder, or taken from
DLCOURSE_BOOK_HTML (a built _build/html) when that is set.
"""
from __future__ import annotations

import functools
import http.server
import os
import shutil
import threading
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SHOTS = REPO / "_build" / "screenshots"
REQUIRE = os.environ.get("DLCOURSE_REQUIRE_BROWSER") == "1"
_SKIPPED: list[str] = []


def chromium_path() -> str | None:
    given = os.environ.get("DLCOURSE_CHROMIUM")  # "" or "none": no browser
    if given is not None:
        return given if given and os.access(given, os.X_OK) else None
    # The binary itself, not Debian's wrapper script (which prints shell
    # noise to stderr); the wrapper where that is all there is.
    for path in ("/usr/lib/chromium/chromium",):
        if os.access(path, os.X_OK):
            return path
    for name in ("chromium", "chromium-browser"):
        if shutil.which(name):
            return shutil.which(name)
    return None


def _no_browser(reason: str):
    if REQUIRE:
        pytest.fail(f"{reason} (DLCOURSE_REQUIRE_BROWSER=1: the browser "
                    "tests are mandatory here)", pytrace=False)
    _SKIPPED.append(reason)
    pytest.skip(f"BROWSER TESTS SKIPPED: {reason}")


def pytest_terminal_summary(terminalreporter):
    if _SKIPPED:
        terminalreporter.write_sep(
            "!", "BROWSER TESTS OF THE BOOK WERE SKIPPED", yellow=True,
            bold=True)
        terminalreporter.write_line(
            f"  {_SKIPPED[0]}.\n  Install it with `apt-get install "
            "chromium` (CI does) to check the book the way a reader sees it.")


@pytest.fixture(scope="session")
def chromium() -> str:
    path = chromium_path()
    if path is None:
        _no_browser("no chromium on this machine")
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        _no_browser("the playwright package is not installed (make venv)")
    return path


@pytest.fixture(scope="session")
def site(chromium, request) -> Path:
    """The built HTML book (built once for the whole session).

    The session fixture `built_book` of tests/conftest.py builds it, and
    tests/book/test_build.py checks the same build. DLCOURSE_BOOK_HTML
    points at an already built site instead.
    """
    given = os.environ.get("DLCOURSE_BOOK_HTML")
    if given:
        return Path(given).resolve()
    proc, html = request.getfixturevalue("built_book")
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-4000:]
    return Path(html)


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def server(site):
    handler = functools.partial(_Quiet, directory=str(site))
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture(scope="session")
def browser(chromium):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(
            executable_path=chromium,
            args=["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"])
        yield b
        b.close()
