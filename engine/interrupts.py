"""Ctrl-C and SIGTERM during a study: leave the store resumable and say how to resume.

SIGINT raises KeyboardInterrupt wherever Python is; SIGTERM (what `kill`, systemd and job
schedulers send) is turned into the same exception while a study runs. The study loop catches
it, puts the in-flight candidate back to `pending` (its partial metrics dropped), marks the
study `interrupted`, records an event, and re-raises :class:`StudyInterrupted`, which the CLI
turns into the resume hint (with the real study name) and exit code 130 / 143.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager

log = logging.getLogger(__name__)


class Interrupted(KeyboardInterrupt):
    """A stop signal other than SIGINT, raised like Ctrl-C's KeyboardInterrupt."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


class StudyInterrupted(KeyboardInterrupt):
    """The study was stopped by a signal and left resumable."""

    def __init__(self, signame: str, study_id: int | None, study_name: str | None,
                 store_path: str, detail: str = "") -> None:
        super().__init__(signame)
        self.signame, self.study_id, self.study_name = signame, study_id, study_name
        self.store_path, self.detail = store_path, detail

    @property
    def exit_code(self) -> int:
        """128 + the signal number, as shells report a process ended by that signal."""
        return 128 + int(getattr(signal, self.signame, signal.SIGINT))

    @property
    def hint(self) -> str:
        if self.study_id is None:
            return (f"interrupted by {self.signame} before the study was created; nothing was "
                    "recorded")
        return (f"interrupted by {self.signame}: study {self.study_name} (id {self.study_id}) "
                f"is marked interrupted{self.detail}; resume with `prunestudio run --resume "
                f"{self.study_name} --store {self.store_path}`")


def signal_name(exc: KeyboardInterrupt) -> str:
    return signal.Signals(exc.signum).name if isinstance(exc, Interrupted) else "SIGINT"


@contextmanager
def sigterm_as_interrupt() -> Iterator[None]:
    """While inside, SIGTERM raises :class:`Interrupted` (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def raise_interrupted(signum, frame):  # noqa: ARG001 - signal handler signature
        raise Interrupted(signum)

    previous = signal.signal(signal.SIGTERM, raise_interrupted)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Ignore SIGINT / SIGTERM while the interrupted study is being recorded: a second Ctrl-C
    must not stop that bookkeeping half-way."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    saved = {s: signal.signal(s, signal.SIG_IGN) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in saved.items():
            signal.signal(s, handler)
