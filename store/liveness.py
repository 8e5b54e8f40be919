"""Is a study's runner still alive? Heartbeats in the ``workers`` table, and the 'stale' rule.

A runner keeps a ``workers`` row fresh while it runs (see :class:`~.heartbeat.Heartbeat`,
every :data:`HEARTBEAT_INTERVAL` seconds). A worker row is **stale** when its heartbeat is
older than :data:`STALE_AFTER` seconds, or when it was written on this host by a process that
no longer exists. A study is **stale** when its status is 'running' but none of its worker
rows is fresh: the runner died (kill -9, power loss, a crash before it could record
'interrupted') and the study needs ``--resume``. UIs show 'stale' instead of 'running'.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterable, Mapping
from typing import Any

__all__ = [
    "HEARTBEAT_INTERVAL",
    "STALE_AFTER",
    "pid_alive",
    "this_host",
    "worker_stale",
    "study_stale",
]

HEARTBEAT_INTERVAL = 10.0  # seconds between two beats of a running study's worker
STALE_AFTER = 60.0  # a heartbeat older than this (6 missed beats) means the worker is gone


def this_host() -> str:
    return socket.gethostname()


def pid_alive(pid: int | None) -> bool:
    """Whether process ``pid`` of this host exists (a zombie counts as dead). Unknown (None)
    counts as alive: only a heartbeat's age can tell then."""
    if pid is None:
        return True
    pid = int(pid)
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists, owned by someone else
        return True
    try:  # Linux: an exited, not yet reaped process still answers kill(pid, 0)
        with open(f"/proc/{pid}/stat", "rb") as f:
            state = f.read().rsplit(b")", 1)[-1].split()[0]
        return state not in (b"Z", b"X")
    except (OSError, IndexError):
        return True


def worker_stale(row: Mapping[str, Any], now: float | None = None, host: str | None = None,
                 stale_after: float = STALE_AFTER) -> bool:
    """The stale rule for one ``workers`` row: heartbeat older than ``stale_after`` seconds
    before ``now``, or written on this host by a process that is gone."""
    now = time.time() if now is None else now
    beat = row.get("heartbeat")
    if beat is None or now - float(beat) > stale_after:
        return True
    host = this_host() if host is None else host
    return row.get("host") == host and not pid_alive(row.get("pid"))


def study_stale(status: str, workers: Iterable[Mapping[str, Any]], now: float | None = None,
                host: str | None = None, stale_after: float = STALE_AFTER) -> bool:
    """A study is stale when it is 'running' and none of its ``workers`` rows is fresh."""
    if status != "running":
        return False
    host = this_host() if host is None else host
    return all(worker_stale(w, now, host, stale_after) for w in workers)
