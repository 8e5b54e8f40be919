"""Running the console script as a user does, and proving that nothing on disk was touched."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

EXE = [sys.executable, "-m", "prunestudio.cli"]


def cli(*args: str, check: bool = True, timeout: float = 300, cwd: Path | None = None
        ) -> subprocess.CompletedProcess:
    proc = subprocess.run([*EXE, *args], capture_output=True, text=True, timeout=timeout,
                          cwd=cwd, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if check and proc.returncode != 0:
        raise AssertionError(f"exit {proc.returncode}\nstdout:\n{proc.stdout}\n"
                             f"stderr:\n{proc.stderr}")
    return proc


def cli_error(*args: str, code: int = 2, cwd: Path | None = None) -> str:
    """Run a command that must fail with `code` and an `error:` line, no traceback; returns
    stderr."""
    proc = cli(*args, check=False, cwd=cwd)
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    if code == 2:
        assert "error:" in proc.stderr, proc.stderr
    return proc.stderr


def tree_digest(*roots: Path) -> dict[str, str]:
    """sha256 of every file under (or at) each root: compare before and after a command."""
    out = {}
    for root in roots:
        paths = [root] if root.is_file() else sorted(p for p in root.rglob("*") if p.is_file())
        for p in paths:
            out[str(p)] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def changed_files(before: dict[str, str], *roots: Path) -> list[str]:
    """Files of `before` that are gone or differ now (new files, such as SQLite's -wal / -shm
    beside a store a reader opened, are allowed: nothing that existed was touched)."""
    after = tree_digest(*roots)
    return [p for p, digest in before.items() if after.get(p) != digest]


def start_until(args: list[str], db: Path, ready, *, what: str, timeout: float = 240
                ) -> subprocess.Popen:
    """Start `prunestudio ARGS` (stdout / stderr piped, text) and return it once
    `ready(rows)` holds for the store's candidate rows (dicts with status and generation).
    Fails the test, killing the process, if it ends first or `timeout` passes."""
    import time

    import pytest
    from prunestudio.store import StoreError, open_store

    proc = subprocess.Popen([*EXE, *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"},
                            preexec_fn=_default_sigint)
    deadline = time.time() + timeout
    while time.time() < deadline:
        time.sleep(0.05)
        if proc.poll() is not None:
            pytest.fail(f"the command ended before {what}: {proc.communicate()}")
        if not db.exists():
            continue
        try:
            with open_store(db, readonly=True) as store:
                rows = list(store.db.query("SELECT status, generation FROM candidates"))
        except StoreError:  # the runner is still creating the store
            continue
        if ready(rows):
            return proc
    proc.kill()
    proc.communicate()
    pytest.fail(f"never reached {what}")


def _default_sigint() -> None:
    """In the child: Ctrl-C's default disposition, as a terminal's foreground job has it. A
    test run started in the background of a non-interactive shell (`./scripts/test.sh &`,
    CI) ignores SIGINT, the child would inherit that, and Python keeps an ignored SIGINT
    ignored: the interrupt tests would then test nothing."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)


def statuses(rows: list[dict]) -> list[str]:
    return [r["status"] for r in rows]
