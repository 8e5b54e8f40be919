"""Progress reporting for long steps: rich bars in a terminal, silence in tests.

The runner talks to a `Reporter`; what the user sees is the reporter's business. Progress also
goes to the store as events (the TUI's view), which the runner writes itself.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager

ProgressFn = Callable[[int, int], None]


class Reporter:
    """No output (tests, `--quiet`)."""

    def message(self, text: str) -> None:
        pass

    @contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[ProgressFn]:
        yield lambda done, total_: None


class RichReporter(Reporter):
    """Progress bars and messages on stderr, so stdout stays clean for `--json`."""

    def __init__(self) -> None:
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.console = Console(file=sys.stderr)
        self._progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TimeElapsedColumn(), TimeRemainingColumn(), console=self.console, transient=True,
        )

    def message(self, text: str) -> None:
        # labels hold [brackets]; a log file (not a terminal) gets whole lines, never wrapped
        self.console.print(text, highlight=False, markup=False,
                           soft_wrap=not self.console.is_terminal)

    @contextmanager
    def task(self, description: str, total: int | None = None) -> Iterator[ProgressFn]:
        started = not self._progress.live.is_started
        if started:
            self._progress.start()
        tid = self._progress.add_task(description, total=total)

        def update(done: int, total_: int) -> None:
            self._progress.update(tid, completed=done, total=total_)

        try:
            yield update
        finally:
            self._progress.remove_task(tid)
            if started:
                self._progress.stop()
