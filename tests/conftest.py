"""Shared fixtures: isolated caches and tiny model folders built once per session."""

from __future__ import annotations

import gc
import os
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

# before torch loads: OpenMP threads that spin-wait slow a busy small machine by 10×+
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

sys.path.insert(0, str(Path(__file__).parent))


@pytest.fixture(scope="session", autouse=True)
def _isolated_cache(tmp_path_factory: pytest.TempPathFactory) -> None:
    """Every cache (statistics, the default model's dequantized copy) goes to a temporary
    folder: tests never read what an earlier run left behind."""
    if "PRUNESTUDIO_CACHE" not in os.environ:
        os.environ["PRUNESTUDIO_CACHE"] = str(tmp_path_factory.mktemp("cache"))
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(autouse=True)
def _quiet_switches_restored(monkeypatch: pytest.MonkeyPatch) -> None:
    """A test that runs the CLI in-process with --quiet sets the libraries' quiet switches in
    os.environ (``engine/quiet.py``, for the rest of that process): undo them after each test,
    so later tests' subprocesses start as a user's would."""
    from prunestudio.engine.quiet import QUIET_ENV

    for key in QUIET_ENV:
        if key in os.environ:
            monkeypatch.setenv(key, os.environ[key])
        else:  # setenv records "absent" for the undo (delenv of a missing key records nothing)
            monkeypatch.setenv(key, "")
            monkeypatch.delenv(key)


@pytest.fixture(scope="session")
def tiny_model_dirs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    from tiny_models import save_tiny_model

    root = tmp_path_factory.mktemp("tiny-models")
    return {arch: save_tiny_model(arch, root / arch) for arch in ("llama", "opt", "gpt_neox",
                                                                   "gpt2")}


# -- real mounts: full disks and read-only media ----------------------------------------------
# Root ignores file permissions (and CI runs as root), so "cannot write" is tested with what
# root cannot override: a size-limited tmpfs (a full disk) and a read-only remount.


class Mount:
    """A tmpfs mounted on ``path`` for one test."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _run(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(args, capture_output=True, text=True, timeout=30)

    def remount(self, readonly: bool) -> None:
        gc.collect()  # a leaked sqlite3 connection keeps files open: EBUSY on remount ro
        r = self._run("mount", "-o", f"remount,{'ro' if readonly else 'rw'}", str(self.path))
        assert r.returncode == 0, f"remount {self.path} failed: {r.stderr}"

    def fill(self) -> Path:
        """Fill the file system to the last byte with a file; return it (delete it to free
        the space)."""
        filler = self.path / "filler.bin"
        with open(filler, "wb", buffering=0) as f:
            for size in (1 << 20, 1 << 16, 1 << 12, 1 << 9, 1):
                while True:
                    try:
                        if not f.write(b"\0" * size):
                            break
                    except OSError:
                        break
        return filler

    def unmount(self) -> None:
        gc.collect()
        if self._run("umount", str(self.path)).returncode != 0:
            self._run("umount", "-l", str(self.path))  # lazily: a test left a file open


@pytest.fixture
def tmpfs(tmp_path: Path) -> Iterator[Callable[..., Mount]]:
    """``tmpfs(size="4m", name="mnt")`` mounts a fresh tmpfs under tmp_path; every mount is
    unmounted after the test. Skips (with the reason) where mounting is not permitted."""
    mounts: list[Mount] = []

    def make(size: str = "4m", name: str = "mnt") -> Mount:
        if os.geteuid() != 0:
            pytest.skip("needs root: full-disk and read-only-medium tests mount a tmpfs")
        target = tmp_path / name
        target.mkdir()
        r = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs",
                            str(target)], capture_output=True, text=True, timeout=30)
        if r.returncode != 0:
            pytest.skip(f"mounting a tmpfs is not permitted here: {r.stderr.strip()}")
        mount = Mount(target)
        mounts.append(mount)
        return mount

    yield make
    for m in reversed(mounts):
        m.unmount()
