"""The first screen: every study with its progress, best ppl, elapsed time and ETA, and the
machine panel (this machine's figures, then the workers of the running studies with their
devices)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prunestudio.store import StoreError
from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static
from textual.worker import Worker, WorkerState

from prunestudio.schema import Worker as WorkerRecord

from .feed import PollLatch, StudiesFeed
from .messages import MachineSampled, PollFailed, StudiesPolled
from .model import BestMetric, StudySummary
from .tables import StudiesTable
from .widgets import MachinePanel

if TYPE_CHECKING:
    from .app import PruneStudioApp

__all__ = ["StudiesScreen"]


class StudiesTableWidget(StudiesTable):
    BINDINGS = [Binding("enter", "select_cursor", "Open", show=True)]


class StudiesScreen(Screen[None]):
    BINDINGS = [
        Binding("c", "cancel_study", "Cancel study"),
        Binding("r", "refresh", "Refresh"),
        Binding("m", "toggle_machine", "Machine", show=False),
    ]
    app: PruneStudioApp  # type: ignore[assignment]

    def __init__(self) -> None:
        super().__init__()
        self.summaries: dict[int, StudySummary] = {}
        self.best: dict[int, BestMetric] = {}
        self.worker_rows: list[WorkerRecord] = []  # every worker row of the store
        self._latch = PollLatch()
        self._last_error: str | None = None

    def compose(self) -> ComposeResult:
        yield Header()
        yield StudiesTableWidget(id="studies")
        yield Static("", id="studies-info")
        yield MachinePanel(id="machine")
        yield Footer()

    def on_mount(self) -> None:
        self.sub_title = self.app.store_label
        self.feed = StudiesFeed(self.app.reader, now=self.app.clock)
        self.query_one(StudiesTableWidget).focus()
        self.poll()
        self.set_interval(self.app.interval, self.tick)
        if self.app.machine is not None:
            self.query_one(MachinePanel).show(self.app.machine)

    # -- polling ----------------------------------------------------------------------------

    def tick(self) -> None:
        if self.is_current:
            self.poll()
            self.render_rows()  # elapsed / ETA move with the clock

    def poll(self, force: bool = False) -> None:
        if self._latch.start(force):
            self._poll_worker(force)

    @work(thread=True, group="studies-poll", exit_on_error=False)
    def _poll_worker(self, force: bool) -> None:
        try:
            update = self.feed.poll(force)
        except StoreError as exc:
            self.post_message(PollFailed(str(exc)))
            return
        if update is not None:
            self.post_message(StudiesPolled(update.studies, update.best, update.workers))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "studies-poll" and event.state in (
            WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED
        ):
            if event.state == WorkerState.ERROR:
                self.app.notify(f"reading the store failed: {event.worker.error}",
                                severity="error", timeout=5)
            again = self._latch.finish(cancelled=event.state == WorkerState.CANCELLED)
            if again is not None:
                self.poll(again)

    def on_screen_resume(self) -> None:
        self.poll()
        if self.app.machine is not None:
            self.query_one(MachinePanel).show(self.app.machine)

    def on_studies_polled(self, message: StudiesPolled) -> None:
        self._last_error = None
        for s in message.studies:
            self.summaries[s.id] = s
        self.best.update(message.best)
        if message.workers is not None:
            self.worker_rows = message.workers
        self.render_rows()

    def on_poll_failed(self, message: PollFailed) -> None:
        if message.error != self._last_error:  # once per distinct error, not every second
            self.app.notify(f"reading the store failed: {message.error}", severity="warning",
                            timeout=6)
        self._last_error = message.error

    def on_machine_sampled(self, message: MachineSampled) -> None:
        self.query_one(MachinePanel).show(message.snapshot)

    def render_rows(self) -> None:
        self.query_one(StudiesTableWidget).show_studies(self.summaries, self.best,
                                                       self.app.clock())
        ids = self.summaries
        running = sum(s.live for s in self.summaries.values())
        stale = sum(s.shown_status == "stale" for s in self.summaries.values())
        info = f"{len(ids)} studies · {running} running"
        if stale:
            info += f" · {stale} stale (runner gone: resume with --resume)"
        if not ids:
            info = "no studies in this store yet — start one with `prunestudio run`"
        self.query_one("#studies-info", Static).update(info)
        self.render_workers()

    def render_workers(self) -> None:
        """The machine panel's workers: those of the running studies (stale ones too: their
        runner is gone and the panel says so), their ages on the app's clock."""
        running = {sid: s.name for sid, s in self.summaries.items() if s.status == "running"}
        shown = [w for w in self.worker_rows if w.study_id in running]
        self.query_one(MachinePanel).show_workers(shown, running, self.app.clock())

    # -- actions ----------------------------------------------------------------------------

    @property
    def selected(self) -> StudySummary | None:
        sid = self.query_one(StudiesTableWidget).cursor_id
        return None if sid is None else self.summaries.get(sid)

    @on(DataTable.RowSelected, "#studies")
    def open_study(self, event: DataTable.RowSelected) -> None:
        sid = int(event.row_key.value or 0)
        if sid in self.summaries:
            self.app.open_study(self.summaries[sid])

    def action_cancel_study(self) -> None:
        study = self.selected
        if study is None:
            self.app.notify("no study selected", severity="warning")
        else:
            self.app.confirm_cancel(study)

    def action_refresh(self) -> None:
        self.poll(force=True)

    def action_toggle_machine(self) -> None:
        panel = self.query_one(MachinePanel)
        panel.display = not panel.display

    def palette_commands(self) -> Iterator[SystemCommand]:
        yield SystemCommand("Refresh now", "Read the store again", self.action_refresh)
        yield SystemCommand("Toggle machine panel", "Show or hide GPU / CPU figures",
                            self.action_toggle_machine)
        for s in sorted(self.summaries.values(), key=lambda s: -s.id):
            yield SystemCommand(f"Open study {s.name}", f"{s.kind} · {s.model} · {s.shown_status}",
                                lambda s=s: self.app.open_study(s))
            if s.active:
                yield SystemCommand(f"Cancel study {s.name}",
                                    "Ask the runner to stop after its current candidate",
                                    lambda s=s: self.app.confirm_cancel(s))
