"""A real browser on the real web app, for the browser test and the screenshot / benchmark
scripts: ``prunestudio web`` (the console script) in a child process on a free port, and
Debian's Chromium driven by Playwright for Python (never ``playwright install``: it downloads
browsers).

Readiness follows Streamlit's own e2e suite: ``/_stcore/health`` answers, the app is
connected, its script is not running, and no skeleton (a placeholder while an element loads)
nor the running-status widget is left. A page with live refresh on keeps re-running its
fragment: open pages with ``live=0`` to wait for idle, and assert on live content with
``expect`` instead.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "IDLE_JS", "chromium", "free_port", "open_app", "plotly_drawn",
           "stop", "wait_idle", "web_server"]

CHROMIUM = Path("/usr/bin/chromium")
# root needs --no-sandbox; the machines' closed network needs no background fetches
CHROMIUM_ARGS = ("--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                 "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync",
                 "--disable-dev-shm-usage")
PRUNESTUDIO = Path(sys.executable).parent / "prunestudio"  # the console script of this venv

IDLE_JS = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  return !!app && app.getAttribute('data-test-connection-state') === 'CONNECTED'
    && app.getAttribute('data-test-script-state') === 'notRunning'
    && !document.querySelector('[data-testid="stSkeleton"]')
    && !document.querySelector('[data-testid="stStatusWidget"]')
    && !!document.querySelector('[data-testid="stMainBlockContainer"] h1');
}"""

# every Plotly container has drawn its figure (a .js-plotly-plot with its SVG)
PLOTLY_DRAWN_JS = """() => {
  const boxes = document.querySelectorAll('[data-testid="stPlotlyChart"]');
  return [...boxes].every(b => b.querySelector('.js-plotly-plot .main-svg'));
}"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r:
            return r.read().decode() == "ok"
    except OSError:
        return False


@contextmanager
def web_server(store: Path, *, port: int | None = None, timeout: float = 60.0,
               log: Path | None = None) -> Iterator[str]:
    """``prunestudio web STORE --port PORT`` until the block ends (then SIGTERM, SIGKILL
    after 20 s); yields the base URL once ``/_stcore/health`` answers. Its output goes to
    ``log`` (default: a temporary file), quoted when it never gets healthy."""
    port = port or free_port()
    url = f"http://127.0.0.1:{port}"
    with tempfile.TemporaryDirectory(prefix="prunestudio-web-") as tmp:
        log_path = log or Path(tmp) / "web.log"
        with open(log_path, "w") as out:
            proc = subprocess.Popen(
                [str(PRUNESTUDIO), "web", str(store), "--port", str(port)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                env={**os.environ, "PYTHONUNBUFFERED": "1"})
            try:
                deadline = time.monotonic() + timeout
                while not _healthy(url):
                    if proc.poll() is not None or time.monotonic() > deadline:
                        why = (f"exited with {proc.returncode}" if proc.poll() is not None
                               else f"no answer in {timeout:.0f} s")
                        raise RuntimeError(f"prunestudio web {why}:\n"
                                           f"{log_path.read_text()[-4000:]}")
                    time.sleep(0.2)
                yield url
            finally:
                stop(proc)


def stop(proc: subprocess.Popen, grace: float = 20.0) -> None:
    """SIGTERM ``proc`` (the web command stops its Streamlit child), SIGKILL after
    ``grace`` seconds; always reaped."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=grace)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


@contextmanager
def chromium(size: tuple[int, int] = (1400, 900), **context: Any) -> Iterator[Any]:
    """A fresh Chromium profile (its own user-data-dir) in light colours; yields the
    Playwright BrowserContext. ``context`` goes to ``launch_persistent_context``."""
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="prunestudio-chromium-") as profile, \
            sync_playwright() as pw:
        ctx = pw.chromium.launch_persistent_context(
            profile, executable_path=str(CHROMIUM), args=list(CHROMIUM_ARGS), headless=True,
            viewport={"width": size[0], "height": size[1]}, color_scheme="light",
            **context)
        try:
            yield ctx
        finally:
            ctx.close()


def wait_idle(page: Any, timeout: float = 30.0) -> None:
    """Until the app is connected, its script done, no skeleton left, a title shown and
    every Plotly chart drawn."""
    page.wait_for_function(IDLE_JS, timeout=timeout * 1000)
    plotly_drawn(page, timeout)


def plotly_drawn(page: Any, timeout: float = 30.0) -> None:
    page.wait_for_function(PLOTLY_DRAWN_JS, timeout=timeout * 1000)


def open_app(page: Any, url: str, timeout: float = 30.0) -> float:
    """Load ``url`` and wait until the app is idle; returns the seconds it took."""
    start = time.perf_counter()
    page.goto(url, wait_until="domcontentloaded", timeout=timeout * 1000)
    wait_idle(page, timeout)
    return time.perf_counter() - start
