"""One study: the candidates table (sortable, filterable, paged), the best-so-far chart, the
per-worker timeline (``t``), the events log and the detail of the highlighted candidate; and
the full-screen candidate view."""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prunestudio.store import StoreError
from rich.text import Text
from textual import on, work
from textual.app import ComposeResult, SystemCommand
from textual.binding import Binding
from textual.containers import Horizontal
from textual.screen import Screen
from textual.widgets import DataTable, Footer, Header, Static
from textual.worker import Worker, WorkerState, get_current_worker

from prunestudio.schema import Candidate

from .detail import CandidateDetail, render_candidate
from .feed import PollLatch, StudyFeed, TimelineFeed
from .messages import CandidateLoaded, PollFailed, StudyPolled, TimelinePolled
from .model import StudySummary
from .tables import CandidateTable
from .view import STATUS_ORDER, CandidateView
from .widgets import BestChart, EventLog, study_line, warnings_text
from .workers import WorkerTimelinePanel

if TYPE_CHECKING:
    from .app import PruneStudioApp

__all__ = ["CandidateScreen", "StudyScreen"]


class CandidateTableWidget(CandidateTable):
    BINDINGS = [Binding("enter", "select_cursor", "Detail", show=True)]


class StudyScreen(Screen[None]):
    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("s", "sort_next", "Sort"),
        Binding("S", "sort_reverse", "Reverse", show=False),
        Binding("f", "filter_status", "Status"),
        Binding("o", "filter_origin", "Origin"),
        Binding("x", "export", "Export"),
        Binding("c", "cancel_study", "Cancel"),
        Binding("t", "toggle_timeline", "Workers"),
        Binding("right_square_bracket", "page(1)", "Next page", show=False),
        Binding("left_square_bracket", "page(-1)", "Prev page", show=False),
        Binding("r", "refresh", "Refresh", show=False),
    ]
    app: PruneStudioApp  # type: ignore[assignment]

    def __init__(self, study: StudySummary) -> None:
        super().__init__()
        self.study = study
        self.view = CandidateView(study.primary_role)
        self._latch = PollLatch()
        self._last_error: str | None = None
        self._loading = False
        self._detail_id: int | None = None
        self._study_row = study  # the study's own fields; counts come from the view
        self._chunks = 0
        self._timeline_on = False  # the worker timeline is shown: the poll reads it too
        self._timeline_force = False  # read it at the next poll even if not due

    def compose(self) -> ComposeResult:
        yield Header()
        yield Static("", id="study-info")
        yield Static("", id="warnings")
        yield BestChart(id="chart")
        yield WorkerTimelinePanel(id="timeline")
        with Horizontal(id="main"):
            yield CandidateTableWidget(id="candidates", page_size=self.app.page_size)
            yield CandidateDetail(id="side")
        yield Static("", id="table-info")
        yield EventLog(id="events")
        yield Footer()

    def on_mount(self) -> None:
        self.title = f"{self.app.title} · {self.study.name}"
        self.sub_title = self.app.store_label
        self.feed = StudyFeed(self.app.reader, self.study.id, chunk=self.app.chunk,
                              now=self.app.clock)
        self.timeline_feed = TimelineFeed(self.app.reader, self.study.id, now=self.app.clock)
        self.query_one(CandidateTableWidget).focus()
        self.render_info()
        self.poll()
        self.set_interval(self.app.interval, self.tick)

    # -- polling ----------------------------------------------------------------------------

    def tick(self) -> None:
        if self.is_current:
            self.poll()
            self.render_info()

    def poll(self) -> None:
        if self._latch.start():
            self._poll_worker()

    @work(thread=True, group="study-poll", exit_on_error=False)
    def _poll_worker(self) -> None:
        worker = get_current_worker()
        while not worker.is_cancelled:
            try:
                update = self.feed.poll(lambda: worker.is_cancelled)
            except StoreError as exc:
                self.post_message(PollFailed(str(exc)))
                return
            if not update.empty:
                self.post_message(StudyPolled(
                    self.study.id, update.study, update.rows, update.columns, update.events,
                    more=update.more, loaded=update.loaded, stale=update.stale,
                    warnings=update.warnings,
                ))
            if not update.more:
                break
        if self._timeline_on and not worker.is_cancelled:
            force, self._timeline_force = self._timeline_force, False
            try:
                view = self.timeline_feed.poll(force)
            except StoreError as exc:
                self.post_message(PollFailed(str(exc)))
                return
            if view is not None:
                self.post_message(TimelinePolled(view))

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.group == "study-poll" and event.state in (
            WorkerState.SUCCESS, WorkerState.ERROR, WorkerState.CANCELLED
        ):
            if event.state == WorkerState.ERROR:
                self.app.notify(f"reading the store failed: {event.worker.error}",
                                severity="error", timeout=5)
            if self._latch.finish(cancelled=event.state == WorkerState.CANCELLED) is not None:
                self.poll()

    def on_screen_resume(self) -> None:
        self.poll()

    def on_poll_failed(self, message: PollFailed) -> None:
        if message.error != self._last_error:  # once per distinct error, not every second
            self.app.notify(f"reading the store failed: {message.error}", severity="warning",
                            timeout=6)
        self._last_error = message.error

    def on_timeline_polled(self, message: TimelinePolled) -> None:
        if self._timeline_on:
            self.query_one(WorkerTimelinePanel).show(message.view)

    def on_study_polled(self, message: StudyPolled) -> None:
        self._last_error = None
        if message.study is not None:
            self._study_row = StudySummary.of(message.study)
        self._loading = message.more
        changes = self.view.apply(message.rows, message.columns)
        if message.stale is not None and message.stale != self._study_row.stale:
            self._study_row = self._study_row.with_stale(message.stale)
        self.study = self._study_row.with_counts(self.view.status_counts, self.view.budget_used)
        table = self.query_one(CandidateTableWidget)
        table.refresh_view(self.view, None if changes.columns_changed else changes.changed)
        if message.events:
            self.query_one(EventLog).add(message.events)
        if message.warnings is not None:
            self.render_warnings(message.warnings)
        self._chunks += 1
        if not message.more or self._chunks % 10 == 1:  # a big first load: not every chunk
            self.render_info(loaded=message.loaded)
            self.render_chart()
        if self._detail_id is None or self._detail_id in changes.changed:
            self.load_detail(table.cursor_id)

    # -- rendering --------------------------------------------------------------------------

    def render_info(self, loaded: int | None = None) -> None:
        best = self.view.best()
        head = None
        if best is not None and self.view.primary is not None:
            head = (self.view.primary.title, best[1], best[0].id)
        self.query_one("#study-info", Static).update(study_line(self.study, self.app.clock(),
                                                                head))
        table = self.query_one(CandidateTableWidget)
        n = len(self.view)
        first = table.start + 1 if n else 0
        last = min(n, table.start + table.page_size)
        text = Text.assemble(
            ("sort ", "dim"), self.view.sort_title(),
            ("  status ", "dim"), self.view.status_filter or "all",
            ("  origin ", "dim"), self.view.origin_filter or "all",
            ("  rows ", "dim"), f"{first:,}–{last:,} of {n:,}",
        )
        if table.pages > 1:
            text.append(f"  page {table.page + 1}/{table.pages} ([ ])", style="dim")
        if self._loading and loaded is not None:
            text.append(f"  loading… {loaded:,}", style="yellow")
        self.query_one("#table-info", Static).update(text)

    def render_warnings(self, warnings: list[str]) -> None:
        """The overfitting warnings of a reconstruction grid, one line each (hidden when
        there are none)."""
        panel = self.query_one("#warnings", Static)
        panel.update(warnings_text(warnings))
        panel.tooltip = "\n\n".join(warnings) or None  # whole, where a line is cut
        panel.display = bool(warnings)

    def render_chart(self) -> None:
        col = self.view.primary
        self.query_one(BestChart).show(
            None if col is None else col.title, self.view.best_series(),
            True if col is None else col.lower_is_better,
        )

    def refresh_table(self) -> None:
        self.query_one(CandidateTableWidget).refresh_view(self.view, rebuild=True)
        self.render_info()

    # -- detail -----------------------------------------------------------------------------

    @on(DataTable.RowHighlighted, "#candidates")
    def _highlighted(self, event: DataTable.RowHighlighted) -> None:
        if event.row_key.value is not None:
            self.load_detail(int(event.row_key.value))

    @on(DataTable.RowSelected, "#candidates")
    def _selected(self, event: DataTable.RowSelected) -> None:
        if event.row_key.value is not None:
            self.app.push_screen(CandidateScreen(self, int(event.row_key.value)))

    def load_detail(self, candidate_id: int | None) -> None:
        self._detail_id = candidate_id
        if candidate_id is not None and self.query_one("#side").display:
            self._detail_worker(candidate_id)

    @work(thread=True, exclusive=True, group="detail", exit_on_error=False)
    def _detail_worker(self, candidate_id: int) -> None:
        self.post_message(CandidateLoaded(self.app.reader.candidate(candidate_id)))

    def on_candidate_loaded(self, message: CandidateLoaded) -> None:
        c = message.candidate
        if c.id == self._detail_id:
            self.query_one(CandidateDetail).show(self.render_detail(c))

    def render_detail(self, c: Candidate) -> Text | object:
        return render_candidate(c, idx_of=self.idx_of,
                                export_command=self.app.export_command(c.id, self.study, c.idx))

    def idx_of(self, candidate_id: int) -> int | None:
        row = self.view.rows.get(candidate_id)
        return None if row is None else row.idx

    # -- actions ----------------------------------------------------------------------------

    def action_sort_next(self) -> None:
        keys = self.view.sort_keys()
        i = keys.index(self.view.sort_key) if self.view.sort_key in keys else -1
        self.sort_by(keys[(i + 1) % len(keys)])

    def action_sort_reverse(self) -> None:
        self.sort_by(self.view.sort_key, not self.view.descending)

    def sort_by(self, key: str, descending: bool | None = None) -> None:
        self.view.set_sort(key, descending)
        self.refresh_table()

    @on(DataTable.HeaderSelected, "#candidates")
    def _header(self, event: DataTable.HeaderSelected) -> None:
        key = "idx" if event.column_key.value == "_id" else str(event.column_key.value)
        if key == self.view.sort_key:
            self.action_sort_reverse()
        else:
            self.sort_by(key)

    def action_filter_status(self) -> None:
        options: list[str | None] = [None, *STATUS_ORDER]
        i = options.index(self.view.status_filter)
        self.filter(status=options[(i + 1) % len(options)])

    def action_filter_origin(self) -> None:
        options: list[str | None] = [None, *self.view.origins]
        i = options.index(self.view.origin_filter) if self.view.origin_filter in options else 0
        self.filter(origin=options[(i + 1) % len(options)])

    def filter(self, *, status: str | None | bool = False,
               origin: str | None | bool = False) -> None:
        self.view.set_filter(status=status, origin=origin)
        self.query_one(CandidateTableWidget).start = 0
        self.refresh_table()

    def action_page(self, step: int) -> None:
        table = self.query_one(CandidateTableWidget)
        new = min(max(0, table.page + step), table.pages - 1)
        if new != table.page:
            table.start = new * table.page_size
            table.refresh_view(self.view)
            table.move_cursor(row=0)
            self.render_info()

    def action_export(self) -> None:
        cid = self.query_one(CandidateTableWidget).cursor_id
        if cid is None:
            self.app.notify("no candidate selected", severity="warning")
        else:
            self.app.show_export(cid, self.study, self.idx_of(cid))

    def action_cancel_study(self) -> None:
        self.app.confirm_cancel(self.study)

    def action_refresh(self) -> None:
        self._timeline_force = True
        self.poll()

    def action_toggle_timeline(self) -> None:
        """Show or hide the per-worker timeline; it is read (in the poll's thread worker)
        only while shown."""
        panel = self.query_one(WorkerTimelinePanel)
        self._timeline_on = panel.display = not panel.display
        if self._timeline_on:
            self._timeline_force = True
            self.poll()

    def palette_commands(self) -> Iterator[SystemCommand]:
        yield SystemCommand("Back to studies", "Leave this study", self.app.pop_screen)
        yield SystemCommand("Export command", "Show and copy the export command of the "
                            "highlighted candidate", self.action_export)
        if self.study.active:
            yield SystemCommand("Cancel study", f"Stop {self.study.name} after its current "
                                "candidate", self.action_cancel_study)
        for key in self.view.sort_keys():
            view_title = self.view.columns[key].title if key in self.view.columns else {
                "idx": "index", "status": "status", "origin": "origin",
                "generation": "generation", "label": "candidate", "seconds": "time",
                "worker": "worker"}[key]
            yield SystemCommand(f"Sort by {view_title}", "Sort the candidates table",
                                lambda k=key: self.sort_by(k))
        yield SystemCommand("Toggle worker timeline", "Show or hide when each worker was busy, "
                            "its figures and what it runs now", self.action_toggle_timeline)
        yield SystemCommand("Reverse sort order", "Flip ascending / descending",
                            self.action_sort_reverse)
        yield SystemCommand("Show all statuses", "Clear the status filter",
                            lambda: self.filter(status=None))
        for status in STATUS_ORDER:
            yield SystemCommand(f"Show only {status}", "Filter candidates by status",
                                lambda s=status: self.filter(status=s))
        yield SystemCommand("Show all origins", "Clear the origin filter",
                            lambda: self.filter(origin=None))
        for origin in self.view.origins:
            yield SystemCommand(f"Show only origin {origin}", "Filter candidates by origin",
                                lambda o=origin: self.filter(origin=o))
        yield SystemCommand("Next page", "Candidates table: next page", lambda: self.action_page(1))
        yield SystemCommand("Previous page", "Candidates table: previous page",
                            lambda: self.action_page(-1))
        yield SystemCommand("Refresh now", "Read the store again", self.action_refresh)


class CandidateScreen(Screen[None]):
    """Everything about one candidate, full screen (Enter on a row)."""

    BINDINGS = [
        Binding("escape", "app.pop_screen", "Back"),
        Binding("x", "export", "Export"),
        Binding("r", "reload", "Reload"),
    ]
    app: PruneStudioApp  # type: ignore[assignment]

    def __init__(self, parent: StudyScreen, candidate_id: int) -> None:
        super().__init__()
        self.study_screen = parent
        self.candidate_id = candidate_id

    def compose(self) -> ComposeResult:
        yield Header()
        yield CandidateDetail(id="full-detail")
        yield Footer()

    def on_mount(self) -> None:
        idx = self.study_screen.idx_of(self.candidate_id)
        self.title = f"{self.study_screen.study.name} · candidate #{idx}"
        self.sub_title = f"id {self.candidate_id}"
        self.query_one(CandidateDetail).focus()
        self.action_reload()

    @work(thread=True, exclusive=True, group="candidate", exit_on_error=False)
    def action_reload(self) -> None:
        self.post_message(CandidateLoaded(self.app.reader.candidate(self.candidate_id)))

    def on_candidate_loaded(self, message: CandidateLoaded) -> None:
        self.query_one(CandidateDetail).show(self.study_screen.render_detail(message.candidate))

    def action_export(self) -> None:
        self.app.show_export(self.candidate_id, self.study_screen.study,
                             self.study_screen.idx_of(self.candidate_id))

    def palette_commands(self) -> Iterator[SystemCommand]:
        yield SystemCommand("Export command", "Show and copy this candidate's export command",
                            self.action_export)
        yield SystemCommand("Back to the study", "Leave this candidate", self.app.pop_screen)
