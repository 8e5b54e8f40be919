"""Polling the store: cursors and conversion to the TUI's records, run in thread workers.

One read-only connection is shared by the workers (``check_same_thread=False``) and used by
one of them at a time (``StoreReader.lock``). Every poll reads only what changed since its
cursor (``studies_since`` / ``candidates_since`` / ``events_since``), so a refresh stays cheap
on a store with 100k candidates. Nothing here touches Textual: screens turn the returned
updates into messages.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from prunestudio.store import Store, browse, open_store, queries

from prunestudio.schema import (
    Candidate,
    MetricIdentity,
    Study,
    Worker,
    WorkerSummary,
    WorkerTimeline,
)
from prunestudio.schema.overfitting import CALIBRATION_ERROR, overfitting_warnings
from prunestudio.schema.workers import running_until

from .model import BestMetric, CandRow, MetricColumn, StudySummary, choose_primary

__all__ = ["PollLatch", "StoreReader", "StudiesFeed", "StudiesUpdate", "StudyFeed",
           "StudyUpdate", "TimelineFeed", "WorkersView"]


class PollLatch:
    """One poll in flight per screen. A poll asked for meanwhile is not dropped: the one in
    flight may have read before the write its caller wants to see (a cancel request), so it
    runs once after it, forced if any of the requests was."""

    def __init__(self) -> None:
        self.running = False
        self._again: bool | None = None  # a pending poll and its `force`

    def start(self, force: bool = False) -> bool:
        """True: start a poll now. False: one is running; this one will follow it."""
        if self.running:
            self._again = force or bool(self._again)
            return False
        self.running = True
        return True

    def finish(self, cancelled: bool = False) -> bool | None:
        """The poll ended; returns the pending poll's `force`, or None when none is due (a
        cancelled worker — the screen is going away — drops it)."""
        self.running = False
        again, self._again = self._again, None
        return None if cancelled else again


class StoreReader:
    """The read-only store, shared between worker threads (one query at a time)."""

    def __init__(self, path: str | os.PathLike[str], timeout: float = 5.0) -> None:
        self.store: Store = open_store(path, readonly=True, timeout=timeout,
                                       check_same_thread=False)
        self.path = Path(path).expanduser().resolve()
        self.lock = threading.Lock()

    def close(self) -> None:
        with self.lock:
            self.store.close()

    def candidate(self, candidate_id: int) -> Candidate:
        with self.lock:
            return self.store.candidate_record(candidate_id)


@dataclass
class StudiesUpdate:
    studies: list[StudySummary]
    best: dict[int, BestMetric]
    workers: list[Worker] | None = None  # every worker row, when any changed


def best_of(rows: list[dict[str, Any]], summaries: dict[int, StudySummary]
            ) -> dict[int, BestMetric]:
    """The primary best metric of each study (its primary role's, see
    ``Study.primary_metric``) from ``queries.best_metrics`` rows."""
    by_study: dict[int, list[tuple[MetricColumn, dict[str, Any]]]] = {}
    for r in rows:
        by_study.setdefault(int(r["study_id"]), []).append((MetricIdentity.of(r), r))
    out: dict[int, BestMetric] = {}
    for sid, found in by_study.items():
        summary = summaries.get(sid)
        col = choose_primary([c for c, _ in found], summary.primary_role if summary else None)
        if col is None:
            continue
        r = next(r for c, r in found if c == col)
        out[sid] = BestMetric(column=col, value=float(r["value"]), candidate_id=r["candidate_id"],
                              idx=r["idx"], n=int(r["n"]))
    return out


class StudiesFeed:
    """Studies (with counts and best ppl) that changed since the last poll.

    The best-ppl aggregate reads every metric of a changed study (~0.2–0.4 s at 100k
    candidates), so it is re-run at most every ``best_duty`` × its own last duration (10 s
    for a 0.5 s query at the default 20): a long study's best lags by seconds, the machine
    is not kept busy. ``force=True`` (the refresh key) ignores the delay."""

    def __init__(self, reader: StoreReader, best_duty: float = 20.0,
                 clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], float] = time.time) -> None:
        self.reader = reader
        self.now = now  # the clock the stale rule reads (the app's clock)
        self.known: dict[int, StudySummary] = {}  # the last summary sent of each study
        self.cursor = 0
        self.best_duty = best_duty
        self.clock = clock
        self.best_due = 0.0
        self.stale: dict[int, StudySummary] = {}  # changed studies whose best is not re-read
        self.workers: list[Worker] | None = None  # the worker rows last sent

    def poll(self, force: bool = False) -> StudiesUpdate | None:
        with self.reader.lock:
            now = self.now()
            found, cursor = queries.study_records_since(self.reader.store, self.cursor, now)
            # the machine panel lists them; a few rows, re-read each poll (heartbeats move)
            workers = queries.worker_records(self.reader.store, None, now)
            summaries = {s.id: StudySummary.of(s) for s in found}
            # a runner that dies changes nothing in the store: re-read the liveness of the
            # running studies each poll (cheap) and resend those whose flag flipped
            if any(s.status == "running" for s in self.known.values()):
                flags = queries.stale_running(self.reader.store, now)
                for sid, known in self.known.items():
                    flag = flags.get(sid)
                    if sid not in summaries and flag is not None and flag != known.stale:
                        summaries[sid] = known.with_stale(flag)
            self.known.update(summaries)
            self.stale.update(summaries)
            rows: list[dict[str, Any]] | None = None
            start = self.clock() if self.stale else 0.0
            if self.stale and (force or start >= self.best_due):
                rows = queries.best_metrics(self.reader.store, list(self.stale),
                                            exclude_references=True)
                spent = self.clock() - start
                self.best_due = start + self.best_duty * spent
        self.cursor = cursor
        best: dict[int, BestMetric] = {}
        if rows is not None:
            best = best_of(rows, self.stale)
            self.stale = {}
        moved = workers != self.workers
        self.workers = workers
        if not summaries and rows is None and not moved:
            return None
        return StudiesUpdate(studies=list(summaries.values()), best=best,
                             workers=workers if moved else None)


@dataclass
class StudyUpdate:
    study: Study | None  # the study record (no counts) when it changed
    rows: list[CandRow] = field(default_factory=list)
    columns: list[MetricColumn] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    more: bool = False
    loaded: int = 0
    stale: bool = False  # 'running' with no live worker (the store's rule)
    stale_changed: bool = False
    warnings: list[str] | None = None  # the overfitting warnings when they changed

    @property
    def empty(self) -> bool:
        return (self.study is None and not self.rows and not self.events
                and not self.stale_changed and self.warnings is None)


class StudyFeed:
    """One study: its row, its candidates and its events, read in chunks of ``chunk`` rows.

    The first poll of a big study returns ``more=True`` after each chunk so the screen can
    show rows while the rest loads. Only the last ``keep_events`` events are kept. The
    reconstructed candidates (a grid with ``[reconstruction]``) are kept too, with only the
    metrics the overfitting rule reads, so their warnings (``overfitting_warnings``) are
    recomputed when one of them changes.
    """

    def __init__(self, reader: StoreReader, study_id: int, *, chunk: int = 5000,
                 keep_events: int = 500, now: Callable[[], float] = time.time) -> None:
        self.reader = reader
        self.now = now  # the clock the stale rule reads (the app's clock)
        self.stale: bool | None = None
        self.study_id = study_id
        self.chunk = chunk
        self.keep_events = keep_events
        self.study_seq: int | None = None
        self.cand_cursor = 0
        self.event_cursor = 0
        self.loaded = 0
        self.columns: dict[str, MetricColumn] = {}
        self.reconstructed: dict[int, Candidate] = {}
        self.warnings: list[str] = []

    def poll(self, cancelled: Callable[[], bool] = lambda: False) -> StudyUpdate:
        """What changed since the last poll. The study row comes without candidate counts
        (``study_record`` is one primary-key read; counting 100k candidates per poll is not):
        the screen counts the candidates it holds."""
        store = self.reader.store
        with self.reader.lock:
            record = store.study_record(self.study_id)
            study = None
            if record.updated_seq != self.study_seq:
                self.study_seq = record.updated_seq
                study = record
            stale = record.status == "running" and queries.stale_running(
                store, self.now(), [self.study_id]).get(self.study_id, False)
            raw, self.cand_cursor = queries.candidate_records_since(
                store, self.study_id, self.cand_cursor, limit=self.chunk
            )
            events: deque[dict[str, Any]] = deque(maxlen=self.keep_events)
            while not cancelled():
                batch, self.event_cursor = queries.events_since(
                    store, self.study_id, self.event_cursor, limit=1000
                )
                events.extend(batch)
                if len(batch) < 1000:
                    break
        before = set(self.columns)
        rows = [CandRow.of(r, self.columns) for r in raw]
        self.loaded += len(rows)
        stale_changed, self.stale = stale != self.stale, stale
        return StudyUpdate(
            study=study, rows=rows,
            columns=[c for k, c in self.columns.items() if k not in before],
            events=list(events), more=len(raw) == self.chunk, loaded=self.loaded,
            stale=stale, stale_changed=stale_changed,
            warnings=self._warnings(raw, record),
        )

    def _warnings(self, raw: list[Candidate], study: Study) -> list[str] | None:
        """The overfitting warnings' texts when a reconstructed candidate changed and they
        differ from the last ones sent, else None."""
        changed = False
        for c in raw:
            if isinstance(c.spec.get("reconstruction"), Mapping):
                self.reconstructed[c.id] = replace(c, metrics=tuple(
                    m for m in c.metrics if m.name in ("ppl", CALIBRATION_ERROR)))
                changed = True
        if not changed:
            return None
        found = [w.text for w in overfitting_warnings(self.reconstructed.values(),
                                                      study.evaluation_roles)]
        if found == self.warnings:
            return None
        self.warnings = found
        return found


@dataclass(frozen=True)
class WorkersView:
    """What the study screen's worker timeline shows: the binned lanes, each worker's
    summary (by name) and its heartbeat row while it has one (by name), at ``now``."""

    timeline: WorkerTimeline
    summaries: dict[str, WorkerSummary]
    workers: dict[str, Worker]
    now: float


class TimelineFeed:
    """The per-worker timeline of one study, read only while the panel is shown.

    The two aggregates scan the study's candidates (~0.2 s at 100k), so they are re-read at
    most every ``duty`` × their last duration (and ``min_interval`` seconds), and only when
    the study changed or a candidate runs (its bar grows with the clock); the worker rows
    (heartbeats) are re-read each time. ``force`` (the panel was just shown, the refresh
    key) ignores the delay. ``n_bins`` bins: the panel draws them on the width it has."""

    def __init__(self, reader: StoreReader, study_id: int, *, n_bins: int = 120,
                 duty: float = 10.0, min_interval: float = 2.0,
                 clock: Callable[[], float] = time.monotonic,
                 now: Callable[[], float] = time.time) -> None:
        self.reader = reader
        self.study_id = study_id
        self.n_bins = n_bins
        self.duty = duty
        self.min_interval = min_interval
        self.clock = clock
        self.now = now
        self.due = 0.0
        self.last: WorkersView | None = None
        self._seq: int | None = None

    def poll(self, force: bool = False) -> WorkersView | None:
        """The view when it is due (None otherwise)."""
        start = self.clock()
        if not force and start < self.due:
            return None
        store = self.reader.store
        with self.reader.lock:
            now = self.now()
            seq = browse.study_token(store, self.study_id)
            last = self.last
            running = last is not None and any(s.running for s in last.summaries.values())
            workers = {w.name: w for w in queries.worker_records(store, self.study_id, now)}
            if force or last is None or seq != self._seq or running:
                summaries = {s.name: s for s in browse.worker_summary(store, self.study_id)}
                timeline = browse.worker_timeline(store, self.study_id, self.n_bins,
                                                  running_until(now, workers.values()))
            else:
                summaries, timeline = last.summaries, last.timeline
        self._seq = seq
        spent = self.clock() - start
        self.due = start + max(self.min_interval, self.duty * spent)
        self.last = WorkersView(timeline, summaries, workers, now)
        return self.last
