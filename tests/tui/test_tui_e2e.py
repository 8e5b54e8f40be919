"""End to end: a real `prunestudio prune` study on a tiny model, watched and cancelled from
`prunestudio tui` running in tmux (a real terminal), quit with `q`."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from prunestudio.store import StoreError, open_store

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="needs tmux")

BIN = Path(sys.executable).parent / "prunestudio"


def _wait(what: str, check: Callable[[], object], timeout: float = 60.0) -> object:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = check()
        if found:
            return found
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")


class Tmux:
    def __init__(self, name: str) -> None:
        self.name = name

    def pane(self) -> str:
        out = subprocess.run(["tmux", "capture-pane", "-p", "-t", self.name],
                             capture_output=True, text=True)
        return out.stdout

    def keys(self, *keys: str) -> None:
        subprocess.run(["tmux", "send-keys", "-t", self.name, *keys], check=True)

    def shows(self, *texts: str, timeout: float = 60.0) -> str:
        def check() -> str | None:
            pane = self.pane()
            return pane if all(t in pane for t in texts) else None

        try:
            return str(_wait(f"{texts} on screen", check, timeout))
        except AssertionError as exc:
            raise AssertionError(f"{exc}; the screen shows:\n{self.pane()}") from None

    def alive(self) -> bool:
        return subprocess.run(["tmux", "has-session", "-t", self.name],
                              capture_output=True).returncode == 0


@pytest.fixture
def tiny_llama(tmp_path: Path) -> Path:
    from tiny_models import save_tiny_model

    return save_tiny_model("llama", tmp_path / "tiny-llama")


@pytest.fixture
def tmux(tmp_path: Path) -> Iterator[Tmux]:
    session = Tmux(f"prunestudio-e2e-{os.getpid()}")
    yield session
    subprocess.run(["tmux", "kill-session", "-t", session.name], capture_output=True)


def _study(store: Path) -> dict | None:
    try:
        with open_store(store, readonly=True) as s:
            return s.get_study("e2e")
    except StoreError:
        return None


def test_watch_and_cancel_a_running_study(tiny_llama: Path, tmp_path: Path, tmux: Tmux) -> None:
    store = tmp_path / "studio.db"
    sparsities = ",".join(f"{s / 20:.2f}" for s in range(1, 20))
    prune = subprocess.Popen(
        [str(BIN), "prune", "--model", str(tiny_llama), "--methods", "wanda,magnitude,gblm",
         "--sparsities", sparsities, "--calib", "source=pydoc,n=8,seqlen=128",
         "--eval", "role=in_domain,source=pydoc,n=16,seqlen=128,offset=40000",
         "--store", str(store), "--name", "e2e", "--quiet", "--device", "cpu"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
    )
    try:
        _wait("the study in the store", lambda: _study(store), timeout=120)
        done_file = tmp_path / "tui-exit"
        subprocess.run(
            ["tmux", "new-session", "-d", "-s", tmux.name, "-x", "100", "-y", "30",
             f"{BIN} tui {store}; echo $? > {done_file}"],
            check=True, env={**os.environ, "TERM": "xterm-256color"},
        )
        tmux.shows("e2e", "running", timeout=60)
        tmux.keys("Enter")  # the only study: open it
        pane = tmux.shows("e2e grid", "wanda", "done", timeout=60)
        assert "best ppl in" in pane or prune.poll() is None
        tmux.keys("c")
        tmux.shows("Cancel study e2e?", timeout=20)
        tmux.keys("y")

        def requested() -> str | None:
            with open_store(store, readonly=True) as s:
                return s.cancel_requested(_study(store)["id"])  # type: ignore[index]

        reason = _wait("the cancel request in the store", requested, timeout=30)
        assert "cancelled from the TUI" in str(reason)
        assert prune.wait(timeout=180) in (0, 1, 2, 130), prune.stderr
        final = _study(store)
        assert final is not None and final["status"] in ("cancelled", "finished")
        with open_store(store, readonly=True) as s:
            statuses = [c["status"] for c in s.candidates(final["id"])]
        if final["status"] == "cancelled":  # stopped after its current candidate
            assert "pending" in statuses and "running" not in statuses
        tmux.shows(final["status"], timeout=30)  # the TUI picked up the end of the study
        tmux.keys("q")
        _wait("the TUI to quit", lambda: not tmux.alive(), timeout=20)
        assert done_file.read_text().strip() == "0"
    finally:
        if prune.poll() is None:
            prune.kill()
            prune.wait()
