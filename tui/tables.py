"""The two DataTables: studies, and one page of a study's candidates.

Rows are keyed by id. A refresh compares each shown row's cell texts with what is displayed
and calls ``update_cell`` only for cells that differ, so the cursor and the scroll position
survive; rows are added, removed or re-ordered only when the page's membership or order
really changes (then the cursor follows its candidate).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual.binding import Binding
from textual.widgets import DataTable
from textual.widgets.data_table import CellDoesNotExist

from .detail import STATUS_STYLE
from .formatting import duration, eta, metric_value, truncate
from .model import BestMetric, CandRow, StudySummary, column_titles
from .view import CandidateView
from .widgets import STUDY_STYLE, progress_text

__all__ = ["CandidateTable", "StudiesTable", "Cell"]

Cell = tuple[str, str, str]  # text, style, justify


def _cell(c: Cell) -> Text:
    return Text(c[0], style=c[1], justify=c[2])  # type: ignore[arg-type]


class _KeyedTable(DataTable[Any]):
    """A DataTable that remembers the cells it shows, keyed by row id."""

    BINDINGS = [
        Binding("home,g", "scroll_top", "First row", show=False),
        Binding("end,G", "scroll_bottom", "Last row", show=False),
    ]

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.shown: dict[int, tuple[Cell, ...]] = {}
        self.order: list[int] = []
        self.column_keys: list[str] = []

    @property
    def cursor_id(self) -> int | None:
        """Id of the row under the cursor (None for an empty table)."""
        if not self.order or not 0 <= self.cursor_row < self.row_count:
            return None
        try:
            key = self.coordinate_to_cell_key((self.cursor_row, 0)).row_key
        except CellDoesNotExist:
            return None
        return int(key.value) if key.value is not None else None

    def reset(self, columns: Sequence[tuple[str, str | Text, int]]) -> None:
        """Replace the columns (key, title, width) and drop every row."""
        self.clear(columns=True)
        self.shown.clear()
        self.order = []
        self.column_keys = [k for k, _, _ in columns]
        for key, title, width in columns:
            self.add_column(title, key=key, width=width)

    def _update(self, rid: int, cells: tuple[Cell, ...]) -> None:
        old = self.shown.get(rid)
        if old == cells:
            return
        for col, new, prev in zip(self.column_keys, cells, old or (None,) * len(cells),
                                  strict=True):
            if new != prev:
                self.update_cell(str(rid), col, _cell(new))
        self.shown[rid] = cells

    def show_rows(self, ids: list[int], cells_of: dict[int, tuple[Cell, ...]],
                  changed: set[int] | None = None) -> None:
        """Make the table show ``ids`` in this order with these cells (only ``changed`` ids
        and new ones are compared when ``changed`` is given)."""
        if ids == self.order:
            for rid in (ids if changed is None else changed & set(cells_of)):
                if rid in self.shown:
                    self._update(rid, cells_of[rid])
            return
        keep = self.cursor_id
        new_set, old_set = set(ids), set(self.order)
        if len(new_set ^ old_set) > max(50, len(ids) // 2):
            self.clear()
            self.shown.clear()
            for rid in ids:
                self.add_row(*map(_cell, cells_of[rid]), key=str(rid))
                self.shown[rid] = cells_of[rid]
            self.order = list(ids)
        else:
            for rid in self.order:
                if rid not in new_set:
                    self.remove_row(str(rid))
                    del self.shown[rid]
            current = [rid for rid in self.order if rid in new_set]
            for rid in ids:
                if rid not in old_set:
                    self.add_row(*map(_cell, cells_of[rid]), key=str(rid))
                    self.shown[rid] = cells_of[rid]
                    current.append(rid)
                elif changed is None or rid in changed:
                    self._update(rid, cells_of[rid])
            if current != ids:  # the first cell (idx / id) is unique: sort on its text
                position = {self.shown[rid][0][0]: i for i, rid in enumerate(ids)}
                self.sort(self.column_keys[0], key=lambda cell: position[cell.plain])
            self.order = list(ids)
        if keep is not None and keep in new_set:
            row = self.get_row_index(str(keep))
            if row != self.cursor_row:
                self.move_cursor(row=row, animate=False)


def _worker_width(view: CandidateView) -> int:
    """The worker column's width: its longest name (``w0@gpu-box:4242``), 6 to 18 cells."""
    return max(6, min(18, max((len(w) for w in view.workers), default=0)))


class CandidateTable(_KeyedTable):
    """One page of the candidate view. ``page_size`` rows at most are ever in the table."""

    def __init__(self, page_size: int = 500, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.page_size = page_size
        self.start = 0
        self.best_id: int | None = None
        self._signature: tuple[Any, ...] = (None,)

    def _columns(self, view: CandidateView) -> list[tuple[str, str | Text, int]]:
        """Columns that fit the table's width: #, status, origin, candidate and the primary
        metric always; then the other metrics, time, the worker (when more than one ran the
        study's candidates) and generation while they fit. The candidate column takes what
        is left."""
        metrics = view.metric_columns
        titles = dict(zip((c.key for c in metrics), column_titles(metrics), strict=True))
        room = (self.size.width or 80) - 2 - 2 * 4 - (4 + 7 + 9)  # scrollbar, pads, fixed
        label_min = 18
        optional: list[tuple[str, str | Text, int]] = []
        for col in metrics:
            w = max(7, min(13, len(titles[col.key])))
            optional.append((col.key, Text(titles[col.key], justify="right"), w))
        keep = optional[:1]
        extra = [*optional[1:2], ("seconds", Text("time", justify="right"), 6),
                 *([("worker", "worker", _worker_width(view))] if len(view.workers) > 1
                   else []),
                 ("generation", Text("gen", justify="right"), 3), *optional[2:]]
        used = sum(w + 2 for _, _, w in keep)
        for col in extra:
            if room - used - (col[2] + 2) >= label_min:
                keep.append(col)
                used += col[2] + 2
        shown = {k for k, _, _ in keep}
        self._label_width = max(label_min, min(60, room - used))
        self._worker_width = _worker_width(view)
        cols: list[tuple[str, str | Text, int]] = [
            # the candidate id, the number `show`, `export` and `eval` take (not its index)
            ("_id", Text("id", justify="right"), 5), ("status", "status", 7),
            ("origin", "origin", 9),
        ]
        if "generation" in shown:
            cols.append(("generation", Text("gen", justify="right"), 3))
        cols.append(("label", "candidate", self._label_width))
        cols += [c for c in keep if c[0] in view.columns]
        if "seconds" in shown:
            cols.append(("seconds", Text("time", justify="right"), 6))
        cols += [c for c in keep if c[0] == "worker"]
        marked = []
        for key, title, w in cols:
            text = title.copy() if isinstance(title, Text) else Text(title)
            if key == view.sort_key or (key == "_id" and view.sort_key == "idx"):
                text.append("↓" if view.descending else "↑", style="bold")
            marked.append((key, text, w))
        return marked

    def cells(self, row: CandRow, view: CandidateView) -> tuple[Cell, ...]:
        primary = view.primary.key if view.primary is not None else None
        out: list[Cell] = []
        for key in self.column_keys:
            if key == "_id":
                out.append((str(row.id), "bold" if row.id == self.best_id else "", "right"))
            elif key == "status":
                out.append((row.status, STATUS_STYLE.get(row.status, ""), "left"))
            elif key == "origin":
                out.append((truncate(row.origin, 9), "", "left"))
            elif key == "generation":
                out.append(("" if row.generation is None else str(row.generation), "dim",
                            "right"))
            elif key == "label":
                style = "red" if row.error else "italic" if row.reference else ""
                label = f"{row.label} (reference)" if row.reference else row.label
                out.append((truncate(label, self._label_width), style, "left"))
            elif key == "seconds":
                out.append((duration(row.seconds) if row.seconds is not None else "", "dim",
                            "right"))
            elif key == "worker":
                out.append((truncate(row.worker or "", self._worker_width), "", "left"))
            else:
                best = row.id == self.best_id and key == primary
                out.append((metric_value(row.metrics.get(key)), "bold green" if best else "",
                            "right"))
        return tuple(out)

    @property
    def pages(self) -> int:
        return self._pages

    def on_resize(self) -> None:
        if self._view is not None and self.size.width != self._signature[-1]:
            self.refresh_view(self._view)

    @property
    def page(self) -> int:
        return self.start // self.page_size

    def refresh_view(self, view: CandidateView, changed: set[int] | None = None,
                     *, rebuild: bool = False) -> None:
        """Show the current page of ``view``. ``changed`` (ids) limits the cell comparison to
        those rows; None compares every row of the page. ``rebuild`` forces new columns."""
        self._view = view
        workers = _worker_width(view) if len(view.workers) > 1 else 0
        signature = (tuple(c.key for c in view.metric_columns), view.sort_key, view.descending,
                     workers, self.size.width)
        restore = None
        if rebuild or signature != self._signature:
            restore = self.cursor_id
            self.reset(self._columns(view))
            self._signature = signature
            changed = None
        n = len(view)
        self._pages = max(1, -(-n // self.page_size))
        if self.start >= n and self.start:
            self.start = (self._pages - 1) * self.page_size
        ids = view.page(self.start, self.page_size)
        best = view.best()
        best_id = best[0].id if best else None
        if best_id != self.best_id:
            if changed is not None:
                changed = changed | {x for x in (best_id, self.best_id) if x is not None}
            self.best_id = best_id
        if changed is None:
            need = ids
        else:
            need = [rid for rid in ids if rid in changed or rid not in self.shown]
        self.show_rows(ids, {rid: self.cells(view.rows[rid], view) for rid in need}, changed)
        if restore is not None and restore in self.shown:
            self.move_cursor(row=self.get_row_index(str(restore)), animate=False)

    _pages = 1
    _label_width = 24
    _worker_width = 6
    _view: CandidateView | None = None


class StudiesTable(_KeyedTable):
    """Every study (newest first), with progress, best ppl, elapsed time and ETA; kind and
    model are added when the terminal is wide enough (no horizontal scrolling at 80
    columns)."""

    REQUIRED = (("_id", Text("id", justify="right"), 3), ("name", "study", 16),
                ("status", "status", 11), ("progress", "progress", 13),
                ("best", Text("best ppl", justify="right"), 8),
                ("elapsed", Text("elapsed", justify="right"), 7),
                ("eta", Text("ETA", justify="right"), 7))

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._data_args: tuple[dict[int, StudySummary], dict[int, BestMetric], float] | None
        self._data_args = None
        self._width = -1
        self._layout: list[tuple[str, int]] = []

    def _columns_for(self, width: int) -> list[tuple[str, str | Text, int]]:
        cols: list[tuple[str, str | Text, int]] = list(self.REQUIRED)
        room = width - 2 - sum(w + 2 for _, _, w in cols)
        if room >= 11:
            cols.append(("kind", "kind", 9))
            room -= 11
        if room >= 14:
            cols.append(("model", "model", min(40, room - 2)))
        return cols

    def on_resize(self) -> None:
        width = self.size.width
        if width != self._width:
            cols = self._columns_for(width)
            if [(k, w) for k, _, w in cols] != self._layout:
                keep = self.cursor_id
                self.reset(cols)
                if self._data_args is not None:
                    self.show_studies(*self._data_args)
                if keep is not None and keep in self.shown:
                    self.move_cursor(row=self.get_row_index(str(keep)), animate=False)
            self._width = width

    def on_mount(self) -> None:
        self.reset(self._columns_for(self.size.width or 80))

    def reset(self, columns: Sequence[tuple[str, str | Text, int]]) -> None:
        super().reset(columns)
        self._layout = [(k, w) for k, _, w in columns]

    def show_studies(self, summaries: dict[int, StudySummary], best: dict[int, BestMetric],
                     now: float) -> None:
        """Show every study, newest first (cells compared, only changes written)."""
        self._data_args = (summaries, best, now)
        ids = sorted(summaries, reverse=True)
        self.show_rows(ids, {sid: self.cells(summaries[sid], best.get(sid), now) for sid in ids})

    def cells(self, s: StudySummary, best: BestMetric | None, now: float) -> tuple[Cell, ...]:
        elapsed = s.elapsed(now)
        left = eta(elapsed, s.progress, s.total) if s.live else None
        shown = s.shown_status
        status = shown + (" ✕" if s.cancel_requested and s.active else "")
        width = dict((k, w) for k, _, w in self._columns_for(self._width if self._width > 0
                                                               else self.size.width or 80))
        every: dict[str, Cell] = {
            "_id": (str(s.id), "dim", "right"),
            "name": (truncate(s.name, 16), "bold", "left"),
            "status": (status, STUDY_STYLE.get(shown, ""), "left"),
            "progress": (progress_text(s, 5).plain, "cyan" if s.live else
                         "green" if s.status == "finished" else "dim", "left"),
            "best": ("" if best is None else metric_value(best.value), "bold green", "right"),
            "elapsed": (duration(elapsed) if elapsed is not None else "", "", "right"),
            "eta": (duration(left) if left is not None else "", "", "right"),
            "kind": (truncate(s.kind, 9), "", "left"),
            "model": (truncate(s.model, width.get("model", 40)), "dim", "left"),
        }
        return tuple(every[k] for k in self.column_keys)
