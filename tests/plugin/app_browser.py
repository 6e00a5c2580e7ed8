"""What the browser tests of the FiftyOne App share: the App server, Chromium's settings,
the artifacts folder, and the App's one-time pop-up.

Used by every ``test_app_*_browser.py`` (the grid, the operators run from their forms, search, the
runs panel).
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from urllib.parse import parse_qs, urlparse

import pytest

from cilp_plugin.service.app import app_answers

REPO = Path(__file__).resolve().parents[2]
CHROMIUM = shutil.which("chromium")
#: flags that work for headless Chromium as root, offline (see shared notes)
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]
VIEWPORT = {"width": 1400, "height": 900}  # 12 tiles fit without scrolling
SERVER_START_TIMEOUT = 120.0  # s; the server imports fiftyone (a few s), more on a busy machine

needs_chromium = pytest.mark.skipif(CHROMIUM is None, reason="chromium is not on PATH (apt-get install chromium)")


def artifacts_dir() -> Path:
    path = Path(os.environ.get("CILP_TEST_ARTIFACTS") or REPO / "test-artifacts")
    path.mkdir(parents=True, exist_ok=True)
    return path


def clear_screenshots(prefix: str) -> None:
    """Delete the screenshots ``<prefix>*.png`` of an earlier run: a failed run must not leave older shots."""
    for stale in artifacts_dir().glob(f"{prefix}*.png"):
        stale.unlink()


@contextmanager
def running_app(log_path: Path, env: dict | None = None):
    """An :class:`AppServer` that answers, stopped on leaving."""
    server = AppServer(log_path, env)
    try:
        server.wait_ready()
        yield server
    finally:
        server.stop()


class AppServer:
    """``python -m fiftyone.server.main`` on a free loopback port, the tests' environment plus ``env``."""

    def __init__(self, log_path: Path, env: dict | None = None):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = log_path
        self._log = open(log_path, "wb")  # noqa: SIM115 - open for the server's life, closed by stop()
        self.process = subprocess.Popen(
            [sys.executable, "-m", "fiftyone.server.main", "--port", str(self.port), "--address", "127.0.0.1"],
            cwd=REPO, env={**os.environ, **(env or {})},  # os.environ: the private database settings (conftest)
            stdout=self._log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
        )

    def log_tail(self, chars: int = 3000) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")[-chars:]

    def wait_ready(self, timeout: float = SERVER_START_TIMEOUT) -> None:
        self.wait_until_answering(self.url, self.process, timeout, self.log_tail)

    @staticmethod
    def wait_until_answering(url: str, process: subprocess.Popen, timeout: float = SERVER_START_TIMEOUT,
                             log_tail=lambda: "") -> None:
        """Wait until the server started as ``process`` answers ``GET url/fiftyone``."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if process.poll() is not None:
                pytest.fail(f"the App server exited with status {process.returncode}:\n{log_tail()}")
            if app_answers(url):
                return
            time.sleep(0.25)
        pytest.fail(f"the App server did not answer GET /fiftyone within {timeout:.0f} s:\n{log_tail()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(15)
        self._log.close()


def dismiss_popups(page) -> None:
    """The App's one-time "Explore Enterprise" note covers the top right of the grid."""
    dismiss = page.get_by_role("button", name="Dismiss")
    if dismiss.is_visible():
        dismiss.click()
        dismiss.wait_for(state="hidden")


# --------------------------------------------------------------------------- fixtures (tests/plugin/conftest.py)


@pytest.fixture(scope="module")
def browser():
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        pw.selectors.set_test_id_attribute("data-cy")  # the App's test ids
        chromium = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS)
        try:
            yield chromium
        finally:
            chromium.close()


@pytest.fixture
def page(browser):
    """A page in a fresh browser context; records ``/media`` answers, the operator requests the
    App sends (to check what a form sent) and the page's errors."""
    context = browser.new_context(viewport=VIEWPORT)
    try:
        page = context.new_page()
        page.set_default_timeout(30_000)
        page.media = []  # (status, filepath) of each /media answer, in order
        page.operator_calls = []  # (route, JSON body) of each request to the operator routes
        page.errors = []  # uncaught exceptions and console errors, for failure messages

        def on_response(response):
            url = urlparse(response.url)
            if url.path == "/media":
                page.media.append((response.status, parse_qs(url.query).get("filepath", [""])[0]))

        def on_request(request):
            if "/operators/" in request.url and request.method == "POST":
                try:
                    body = request.post_data_json
                except Exception:  # noqa: BLE001 - not JSON: not a form's call
                    body = None
                page.operator_calls.append((request.url.rsplit("/operators/", 1)[1], body))

        context.on("response", on_response)  # the context also sees requests made by workers
        page.on("request", on_request)
        page.on("pageerror", lambda error: page.errors.append(str(error)))
        page.on("console", lambda m: page.errors.append(m.text[:500]) if m.type == "error"
                and "ERR_NAME_NOT_RESOLVED" not in m.text else None)  # offline: no fonts, no telemetry
        yield page
    finally:
        context.close()
