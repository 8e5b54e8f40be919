"""A background heartbeat for a running study: keeps its ``workers`` row fresh.

The thread has its own connection to the store, so a long candidate (minutes of pruning on a
GPU) never makes the study look dead, and the runner's connection is never shared between
threads. Torch-free::

    from prunestudio.store.heartbeat import Heartbeat

    with Heartbeat(store.path, worker, study_id) as beat:   # first beat before it returns
        for cand in todo:
            beat.working_on(cand["id"])                      # shown by the UIs
            ...
    # on exit: the thread stops and the worker's row is removed

A failing beat (store locked past the busy timeout, disk full) is kept in ``last_error`` and
retried at the next interval: a heartbeat never stops a study.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path
from types import TracebackType

from .errors import StoreError
from .liveness import HEARTBEAT_INTERVAL

__all__ = ["Heartbeat", "HEARTBEAT_INTERVAL"]

_UNSET = object()


class Heartbeat:
    """Beat every ``interval`` seconds for ``worker`` on study ``study_id`` of the store at
    ``path`` (a daemon thread with its own read-write connection) until :meth:`stop` or the
    end of the ``with`` block. ``remove_on_exit`` deletes the worker's row when it stops."""

    def __init__(self, path: str | os.PathLike[str], worker: str, study_id: int, *,
                 interval: float = HEARTBEAT_INTERVAL, timeout: float = 30.0,
                 remove_on_exit: bool = True) -> None:
        if not worker or not isinstance(worker, str):
            raise ValueError(f"worker must be a non-empty string; got {worker!r}")
        if interval <= 0:
            raise ValueError(f"interval must be > 0 seconds; got {interval!r}")
        self.path = Path(path)
        self.worker = worker
        self.study_id = int(study_id)
        self.interval = float(interval)
        self.timeout = timeout
        self.remove_on_exit = remove_on_exit
        self.beats = 0
        self.last_beat: float | None = None  # time.time() of the last recorded beat
        self.last_error: StoreError | None = None
        self._candidate: object = _UNSET  # _UNSET: keep what the row says
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = False
        self._thread: threading.Thread | None = None
        self._store = None

    # -- control ------------------------------------------------------------------------------

    def start(self) -> Heartbeat:
        """Open the connection, record the first beat (errors raise here), start the thread."""
        if self._thread is not None:
            raise RuntimeError("heartbeat already started")
        from .db import open_store

        # Used by the caller's thread only here and in stop() (after the join): one thread at
        # a time.
        self._store = open_store(self.path, timeout=self.timeout, check_same_thread=False)
        try:
            self._beat(raise_errors=True)
        except BaseException:
            self._store.close()
            self._store = None
            raise
        self._thread = threading.Thread(target=self._run, daemon=True,
                                        name=f"heartbeat-{self.worker}")
        self._thread.start()
        return self

    def working_on(self, candidate_id: int | None) -> None:
        """Record the candidate being worked on (None: between candidates) at once."""
        with self._lock:
            self._candidate = candidate_id
        self._wake.set()

    def stop(self) -> None:
        """Stop the thread, remove the worker row (``remove_on_exit``), close."""
        if self._thread is None:
            return
        self._stopping = True
        self._wake.set()
        self._thread.join()
        self._thread = None
        store, self._store = self._store, None
        if store is None:
            return
        try:
            if self.remove_on_exit:
                store.remove_worker(self.worker)
        except StoreError as exc:
            self.last_error = exc
        finally:
            store.close()

    @property
    def alive(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def __enter__(self) -> Heartbeat:
        return self.start()

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        self.stop()

    # -- thread -------------------------------------------------------------------------------

    def _beat(self, raise_errors: bool = False) -> None:
        with self._lock:
            candidate = self._candidate
        assert self._store is not None
        try:
            if candidate is _UNSET:
                self._store.heartbeat(self.worker, study_id=self.study_id, keep_candidate=True)
            else:
                self._store.heartbeat(self.worker, study_id=self.study_id,
                                      candidate_id=candidate)  # type: ignore[arg-type]
        except StoreError as exc:
            self.last_error = exc
            if raise_errors:
                raise
            return
        self.beats += 1
        self.last_beat = time.time()
        self.last_error = None

    def _run(self) -> None:
        while True:
            self._wake.wait(self.interval)
            self._wake.clear()
            if self._stopping:
                return
            self._beat()
