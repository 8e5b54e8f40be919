"""The candidates of one study, filtered and sorted in Python, shown one page at a time.

Every candidate of the study is cached as a :class:`~.model.CandRow`; the sorted order is a
list of ``(value, idx, id)`` tuples kept up to date with ``bisect`` as candidates change, so a
poll that brings a handful of changes costs O(changes · log n) comparisons plus a memmove —
never a re-sort of 100k rows. Rows missing the sort value (e.g. no ppl yet) sit after the
others, in idx order, whatever the direction.
"""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from .model import CandRow, MetricColumn, choose_primary

__all__ = ["BASE_SORTS", "STATUS_ORDER", "CandidateView", "Changes"]

STATUS_ORDER = ("running", "pending", "done", "failed", "skipped")
_STATUS_RANK = {s: i for i, s in enumerate(STATUS_ORDER)}
# sort key -> (title, value of a row or None when missing)
BASE_SORTS: dict[str, tuple[str, Callable[[CandRow], Any]]] = {
    "idx": ("id", lambda r: r.idx),  # ids grow with the index inside a study
    "status": ("status", lambda r: _STATUS_RANK.get(r.status, len(STATUS_ORDER))),
    "origin": ("origin", lambda r: r.origin),
    "generation": ("gen", lambda r: r.generation),
    "label": ("candidate", lambda r: r.label),
    "seconds": ("time", lambda r: r.seconds),
    "worker": ("worker", lambda r: r.worker),
}
MAX_METRIC_COLUMNS = 6
_BULK = 200  # more changes than this in one batch: merge them with one sort, not bisect


@dataclass
class Changes:
    """What one :meth:`CandidateView.apply` did to the view."""

    changed: set[int] = field(default_factory=set)  # ids whose row changed in place
    order_changed: bool = False  # rows entered, left or moved
    columns_changed: bool = False


class CandidateView:
    """``preferred_role``: the study's primary role (``Study.primary_role``), which picks the
    primary metric among the identities found."""

    def __init__(self, preferred_role: str | None = None) -> None:
        self.rows: dict[int, CandRow] = {}
        self.columns: dict[str, MetricColumn] = {}
        self.preferred_role = preferred_role
        self.sort_key = "idx"
        self.descending = False
        self.status_filter: str | None = None
        self.origin_filter: str | None = None
        self.origins: list[str] = []
        self.workers: list[str] = []  # every worker that ran a candidate, sorted
        self.status_counts: Counter[str] = Counter()
        self.budget_used = 0  # rows that spent the study's budget (CandRow.in_budget)
        self.primary: MetricColumn | None = None
        self._present: list[tuple[Any, int, int]] = []
        self._missing: list[tuple[int, int]] = []
        # best primary value so far over idx (done candidates), kept incrementally while
        # candidates finish in idx order; None means "recompute on next read"
        self._series: list[float] | None = []
        self._series_last: tuple[int, int] = (-1, -1)  # (idx, id) of the last point
        self._best: tuple[float, int, int] | None = None  # (signed value, idx, id)

    # -- state ------------------------------------------------------------------------------

    def __len__(self) -> int:
        """Rows that pass the filters."""
        return len(self._present) + len(self._missing)

    @property
    def metric_columns(self) -> list[MetricColumn]:
        """The metric columns the table shows, at most six: the primary metric first, then
        the other metrics of its name (the other perplexities), then the rest, each group in
        first-seen order."""
        cols = list(self.columns.values())
        if self.primary is not None:
            cols.remove(self.primary)
            name = self.primary.name
            cols = [self.primary, *(c for c in cols if c.name == name),
                    *(c for c in cols if c.name != name)]
        return cols[:MAX_METRIC_COLUMNS]

    def sort_title(self) -> str:
        if self.sort_key in BASE_SORTS:
            title = BASE_SORTS[self.sort_key][0]
        else:
            col = self.columns.get(self.sort_key)
            title = col.title if col else self.sort_key
        return f"{title} {'↓' if self.descending else '↑'}"

    def sort_keys(self) -> list[str]:
        """Every key the table can be sorted by, in column order."""
        return ["idx", "status", "origin", "generation", "label",
                *(c.key for c in self.metric_columns), "seconds", "worker"]

    # -- filters and sorting ----------------------------------------------------------------

    def _value(self, row: CandRow) -> Any:
        if self.sort_key in BASE_SORTS:
            return BASE_SORTS[self.sort_key][1](row)
        return row.metrics.get(self.sort_key)

    def _matches(self, row: CandRow) -> bool:
        return ((self.status_filter is None or row.status == self.status_filter)
                and (self.origin_filter is None or row.origin == self.origin_filter))

    def _entry(self, row: CandRow) -> tuple[Any, int, int] | tuple[int, int] | None:
        if not self._matches(row):
            return None
        value = self._value(row)
        return (row.idx, row.id) if value is None else (value, row.idx, row.id)

    def _rebuild(self) -> None:
        present, missing = [], []
        for row in self.rows.values():
            entry = self._entry(row)
            if entry is not None:
                (present if len(entry) == 3 else missing).append(entry)
        present.sort()
        missing.sort()
        self._present, self._missing = present, missing

    def set_sort(self, key: str, descending: bool | None = None) -> None:
        """Sort by ``key`` (see :meth:`sort_keys`); the direction defaults to best first for
        metrics and ascending otherwise."""
        if descending is None:
            col = self.columns.get(key)
            descending = col is not None and not col.lower_is_better
        self.sort_key, self.descending = key, descending
        self._rebuild()

    def set_filter(self, *, status: str | None | bool = False,
                   origin: str | None | bool = False) -> None:
        """Set the status and/or origin filter (None: all); False leaves one unchanged."""
        if status is not False:
            self.status_filter = status  # type: ignore[assignment]
        if origin is not False:
            self.origin_filter = origin  # type: ignore[assignment]
        self._rebuild()

    # -- changes ----------------------------------------------------------------------------

    def apply(self, rows: Iterable[CandRow], columns: Iterable[MetricColumn] = ()) -> Changes:
        """Merge changed rows (and newly seen metric columns) into the view."""
        out = Changes()
        new_cols = [c for c in columns if c.key not in self.columns]
        for col in new_cols:
            self.columns[col.key] = col
        if new_cols:
            primary = choose_primary(self.columns.values(), self.preferred_role)
            out.columns_changed = True
            if primary != self.primary:
                self.primary = primary
                self._series = None
        rows = list(rows)
        many = len(rows) > _BULK
        bulk: list[tuple] = []  # entries to merge in one sort when many rows arrive at once
        stale: list[tuple] = []  # old places of rows of a big batch that moved
        for row in rows:
            old = self.rows.get(row.id)
            self.rows[row.id] = row
            self.status_counts[row.status] += 1
            self.budget_used += row.in_budget
            if old is not None:
                self.status_counts[old.status] -= 1
                self.budget_used -= old.in_budget
            if row.origin not in self.origins:
                bisect.insort(self.origins, row.origin)
            if row.worker is not None and row.worker not in self.workers:
                bisect.insort(self.workers, row.worker)
            self._track_best(old, row)
            before = None if old is None else self._entry(old)
            after = self._entry(row)
            if before == after:
                if after is not None:
                    out.changed.add(row.id)
                continue
            out.order_changed = True
            out.changed.add(row.id)
            if many:
                if before is not None:
                    stale.append(before)
                if after is not None:
                    bulk.append(after)
                continue
            if before is not None:
                self._remove(before)
            if after is not None:
                bisect.insort(self._present if len(after) == 3 else self._missing, after)
        if len(stale) > _BULK or (out.columns_changed and self.sort_key in self.columns):
            self._rebuild()  # cheaper than thousands of deletions from the middle of a list
            out.order_changed = True
            out.changed.update(r.id for r in rows)
            return out
        for entry in stale:
            self._remove(entry)
        if bulk:
            # timsort merges the sorted old list with the sorted new run in linear time
            self._present.extend(e for e in bulk if len(e) == 3)
            self._missing.extend(e for e in bulk if len(e) == 2)
            self._present.sort()
            self._missing.sort()
        return out

    def _remove(self, entry: tuple) -> None:
        target = self._present if len(entry) == 3 else self._missing
        i = bisect.bisect_left(target, entry)
        if i < len(target) and target[i] == entry:
            del target[i]

    # -- reading ----------------------------------------------------------------------------

    def page(self, offset: int, size: int) -> list[int]:
        """Ids of the rows at positions ``offset .. offset+size`` of the sorted view."""
        n_present = len(self._present)
        out: list[int] = []
        for pos in range(max(0, offset), min(len(self), offset + size)):
            if pos < n_present:
                entry = self._present[n_present - 1 - pos if self.descending else pos]
                out.append(entry[2])
            else:
                out.append(self._missing[pos - n_present][1])
        return out

    def position(self, candidate_id: int) -> int | None:
        """Where the candidate sits in the sorted view (None when filtered out)."""
        row = self.rows.get(candidate_id)
        entry = None if row is None else self._entry(row)
        if entry is None:
            return None
        if len(entry) == 2:
            i = bisect.bisect_left(self._missing, entry)
            return len(self._present) + i
        i = bisect.bisect_left(self._present, entry)
        return len(self._present) - 1 - i if self.descending else i

    def _primary_value(self, row: CandRow | None) -> float | None:
        if row is None or self.primary is None or row.status != "done" or row.reference:
            return None
        return row.metrics.get(self.primary.key)

    def _track_best(self, old: CandRow | None, row: CandRow) -> None:
        if self._series is None or self.primary is None:
            return
        before, after = self._primary_value(old), self._primary_value(row)
        if before == after:
            return
        if before is not None or (after is not None and (row.idx, row.id) < self._series_last):
            self._series = None  # a value changed or arrived out of order: recompute later
            return
        assert after is not None
        sign = 1.0 if self.primary.lower_is_better else -1.0
        point = (sign * after, row.idx, row.id)
        if self._best is None or point < self._best:
            self._best = point
        self._series.append(sign * self._best[0])
        self._series_last = (row.idx, row.id)

    def _recompute_best(self) -> list[float]:
        self._best, self._series_last, series = None, (-1, -1), []
        col = self.primary
        if col is not None:
            sign = 1.0 if col.lower_is_better else -1.0
            done = sorted((r.idx, r.id, r.metrics[col.key]) for r in self.rows.values()
                          if r.status == "done" and col.key in r.metrics and not r.reference)
            for idx, cid, value in done:
                point = (sign * value, idx, cid)
                if self._best is None or point < self._best:
                    self._best = point
                series.append(sign * self._best[0])
            if done:
                self._series_last = (done[-1][0], done[-1][1])
        self._series = series
        return series

    def best(self) -> tuple[CandRow, float] | None:
        """The done candidate with the best primary metric (the dense reference never counts),
        and that value."""
        if self._series is None:
            self._recompute_best()
        if self._best is None or self.primary is None:
            return None
        row = self.rows[self._best[2]]
        return row, row.metrics[self.primary.key]

    def best_series(self, points: int = 256) -> list[float]:
        """Best primary value so far over candidate index (done candidates only), reduced to
        at most ``points`` values (each the best at the end of its slice)."""
        series = self._series if self._series is not None else self._recompute_best()
        if len(series) <= points:
            return list(series)
        step = len(series) / points
        return [series[min(len(series) - 1, int((i + 1) * step) - 1)] for i in range(points)]
