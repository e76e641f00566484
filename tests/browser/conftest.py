"""Serve _build/html on 127.0.0.1 and drive Debian's chromium with playwright.

Any request that leaves 127.0.0.1 is aborted and recorded, so a test can assert the site
is self-contained (no CDN for MathJax, require.js or the widget manager).
"""

from __future__ import annotations

import functools
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[2]
SITE = ROOT / "_build" / "html"
CHROMIUM = "/usr/bin/chromium"
# sphinx-thebe's script is injected twice by Jupyter Book 1 (a known upstream issue):
# the second copy redeclares a constant. It is harmless here (thebe is off); nothing else
# may raise on a page.
# pydata-sphinx-theme logs "Got invalid theme mode" to the console on a first visit (no
# saved light/dark preference) before falling back to "auto": also harmless.
KNOWN_PAGE_ERRORS = (
    "Identifier 'THEBE_JS_URL' has already been declared",
    "Got invalid theme mode",
)


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def site_url():
    if not (SITE / "index.html").exists():
        pytest.fail("_build/html is missing: run `make book` (make test builds it before this stage)")
    handler = functools.partial(QuietHandler, directory=str(SITE))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()


@pytest.fixture(scope="session")
def browser():
    from playwright.sync_api import sync_playwright

    if not Path(CHROMIUM).exists():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run does)")
    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM,
            headless=True,
            args=["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                  "--disable-background-networking", "--disable-component-update", "--disable-sync"],
        )
        yield browser
        browser.close()


class Visit:
    """A page plus what went wrong while loading it."""

    def __init__(self, browser, url: str):
        self.page = browser.new_page(viewport={"width": 1280, "height": 900})
        self.errors: list[str] = []
        self.external: list[str] = []
        self.page.on("pageerror", lambda err: self._page_error(str(err)))
        self.page.on("console", self._console)
        self.page.route("**/*", self._route)
        self.page.goto(url, wait_until="load", timeout=60_000)

    def _page_error(self, text: str) -> None:
        if not any(known in text for known in KNOWN_PAGE_ERRORS):
            self.errors.append(text)

    def _console(self, message) -> None:
        if message.type == "error" and "net::ERR_FAILED" not in message.text:
            self._page_error(f"console: {message.text}")

    def _route(self, route) -> None:
        host = urlparse(route.request.url).hostname
        if route.request.url.startswith(("data:", "blob:")) or host == "127.0.0.1":
            route.continue_()
        else:
            self.external.append(route.request.url)
            route.abort()

    def close(self) -> None:
        self.page.close()


@pytest.fixture
def visit(browser, site_url):
    opened: list[Visit] = []

    def open_page(path: str) -> Visit:
        v = Visit(browser, f"{site_url}/{path}")
        opened.append(v)
        return v

    yield open_page
    for v in opened:
        v.close()


# ---------------------------------------------------------------- Jupyter servers (issue 17)


class JupyterServer:
    """A JupyterLab server on 127.0.0.1 for one test module; ``url(path)`` carries the token."""

    def __init__(self, root_dir: Path, cwd: Path, home: Path, env: dict | None = None,
                 args: tuple[str, ...] = ()):
        import os
        import secrets
        import socket
        import subprocess
        import sys
        import time
        import urllib.request

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.token = secrets.token_hex(16)
        self.log_path = home / "jupyter.log"
        env = {**os.environ, **(env or {})}
        for name in ("JUPYTER_RUNTIME_DIR", "JUPYTERLAB_SETTINGS_DIR", "JUPYTERLAB_WORKSPACES_DIR"):
            env.setdefault(name, str(home / name.lower()))
        command = [str(Path(sys.executable).parent / "jupyter"), "lab", "--no-browser",
                   f"--port={self.port}", "--ip=127.0.0.1", f"--ServerApp.root_dir={root_dir}",
                   f"--IdentityProvider.token={self.token}", "--ServerApp.port_retries=0",
                   "--LabApp.news_url=", "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
                   "--allow-root", *args]
        self._log = open(self.log_path, "w")
        self.process = subprocess.Popen(command, cwd=cwd, env=env, stdout=self._log,
                                        stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            try:
                urllib.request.urlopen(self.url("api/status"), timeout=2).read()
                return
            except OSError:
                if self.process.poll() is not None:
                    break
                time.sleep(0.5)
        self.stop()
        pytest.fail(f"JupyterLab did not start:\n{self.log()[-3000:]}")

    def url(self, path: str = "") -> str:
        sep = "&" if "?" in path else "?"
        return f"http://127.0.0.1:{self.port}/{path}{sep}token={self.token}"

    def log(self) -> str:
        if not self._log.closed:
            self._log.flush()
        return self.log_path.read_text(errors="replace")

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except Exception:  # noqa: BLE001
            self.process.kill()
        self._log.close()


@pytest.fixture(scope="module")
def start_jupyter():
    """Factory fixture: ``start_jupyter(root_dir, cwd, home, env, args)`` -> JupyterServer,
    stopped when the module's tests are done."""
    started: list[JupyterServer] = []

    def start(root_dir: Path, cwd: Path, home: Path, env: dict | None = None,
              args: tuple[str, ...] = ()) -> JupyterServer:
        server = JupyterServer(root_dir, cwd, home, env, args)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


def offline_page(browser, errors: list[str], external: list[str]):
    """A new page that aborts and records every request leaving 127.0.0.1."""
    page = browser.new_page(viewport={"width": 1400, "height": 1000})

    def route(r):
        host = urlparse(r.request.url).hostname
        if r.request.url.startswith(("data:", "blob:")) or host == "127.0.0.1":
            r.continue_()
        else:
            external.append(r.request.url)
            r.abort()

    page.route("**/*", route)
    page.on("pageerror", lambda err: errors.append(str(err)))
    return page
