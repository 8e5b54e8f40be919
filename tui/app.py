"""The Textual app: ``prunestudio tui [STORE]``.

Opens the store read-only and polls it from thread workers; the one write it ever makes is a
cancel request, through a separate short-lived read-write connection. Clock and machine
sampler are injectable so tests and screenshots are deterministic.
"""

from __future__ import annotations

import getpass
import shlex
import socket
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from prunestudio.store import StoreError, open_store, queries
from textual import work
from textual.app import App, SystemCommand
from textual.binding import Binding
from textual.screen import Screen

from .dialogs import ConfirmCancel, ExportDialog
from .feed import StoreReader
from .machine import MachineSnapshot, Sampler, SystemSampler
from .messages import CancelRequested, MachineSampled
from .model import StudySummary
from .studies_screen import StudiesScreen
from .study_screen import StudyScreen

__all__ = ["PruneStudioApp"]


class PruneStudioApp(App[int]):
    """Watch and steer Prune Studio studies live."""

    CSS_PATH = "prunestudio.tcss"
    TITLE = "Prune Studio"
    BINDINGS = [Binding("q", "quit", "Quit")]
    HORIZONTAL_BREAKPOINTS = [(0, "-narrow"), (110, "-wide")]

    def __init__(
        self,
        reader: StoreReader,
        *,
        interval: float = 1.0,
        machine_interval: float = 2.0,
        clock: Callable[[], float] = time.time,
        sampler: Sampler | None = None,
        open_study: int | str | None = None,
        page_size: int = 500,
        chunk: int = 10_000,
        store_label: str | None = None,
    ) -> None:
        super().__init__()
        self.reader = reader
        self.store_path: Path = reader.path
        # how the store is named on screen and in export commands (absolute by default)
        self.store_label = store_label or str(reader.path)
        self.interval = interval
        self.machine_interval = machine_interval
        self.clock = clock
        self.sampler = sampler
        self.machine: MachineSnapshot | None = None
        self.page_size = page_size
        self.chunk = chunk
        self._open_study = open_study

    def on_mount(self) -> None:
        self.push_screen(StudiesScreen())
        if self._open_study is not None:
            self._open_initial(self._open_study)
        self.sample_machine()
        if self.machine_interval > 0:
            self.set_interval(self.machine_interval, self.sample_machine)

    def _open_initial(self, key: int | str) -> None:
        try:
            with self.reader.lock:
                wanted = self.reader.store.study_record(key).id
                found = [s for s in queries.study_records(self.reader.store) if s.id == wanted]
        except StoreError as exc:
            self.notify(str(exc), severity="error", timeout=8)
            return
        self.open_study(StudySummary.of(found[0]))

    def on_unmount(self) -> None:
        close = getattr(self.sampler, "close", None)
        if callable(close):
            close()

    # -- machine ----------------------------------------------------------------------------

    def sample_machine(self) -> None:
        if not any(w.group == "machine" and w.is_running for w in self.workers):
            self._machine_worker()

    @work(thread=True, group="machine", exit_on_error=False)
    def _machine_worker(self) -> None:
        if self.sampler is None:
            self.sampler = SystemSampler()
        self.post_message(MachineSampled(self.sampler.sample()))

    def on_machine_sampled(self, message: MachineSampled) -> None:
        self.machine = message.snapshot
        handler = getattr(self.screen, "on_machine_sampled", None)
        if callable(handler):
            handler(message)

    # -- navigation and actions -------------------------------------------------------------

    def open_study(self, study: StudySummary) -> None:
        self.push_screen(StudyScreen(study))

    def export_command(self, candidate_id: int, study: StudySummary,
                       idx: int | None = None) -> str:
        folder = f"exports/{study.name}-{idx if idx is not None else candidate_id}"
        return (f"prunestudio export {candidate_id} {shlex.quote(folder)} "
                f"--store {shlex.quote(self.store_label)}")

    def show_export(self, candidate_id: int, study: StudySummary, idx: int | None) -> None:
        command = self.export_command(candidate_id, study, idx)
        self.copy_to_clipboard(command)
        self.push_screen(ExportDialog(f"Export candidate #{idx} of {study.name}", command))

    def confirm_cancel(self, study: StudySummary) -> None:
        if not study.active:
            self.notify(f"study {study.name} is {study.status}: nothing to cancel",
                        severity="warning")
            return
        if study.cancel_requested:
            self.notify(f"study {study.name}: cancel already requested ({study.cancel_requested})")
            return

        def answered(yes: bool | None) -> None:
            if yes:
                self._cancel_worker(study.id, study.name)

        self.push_screen(ConfirmCancel(study), answered)

    @work(thread=True, group="cancel", exit_on_error=False)
    def _cancel_worker(self, study_id: int, name: str) -> None:
        reason = f"cancelled from the TUI by {getpass.getuser()}@{socket.gethostname()}"
        try:
            with open_store(self.store_path, readonly=False, timeout=5.0) as store:
                store.request_cancel(study_id, reason)
        except (StoreError, OSError) as exc:
            self.post_message(CancelRequested(study_id, False, f"could not cancel {name}: {exc}"))
            return
        self.post_message(CancelRequested(
            study_id, True, f"cancel requested for {name}: it stops after its current candidate"
        ))

    def on_cancel_requested(self, message: CancelRequested) -> None:
        self.notify(message.text, severity="information" if message.ok else "error",
                    timeout=6)
        refresh = getattr(self.screen, "poll", None)
        if callable(refresh):
            refresh()

    def get_system_commands(self, screen: Screen[Any]) -> Iterable[SystemCommand]:
        commands = getattr(screen, "palette_commands", None)
        if callable(commands):
            yield from commands()
        yield from super().get_system_commands(screen)
