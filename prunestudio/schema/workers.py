"""Per-worker records of a study: what each worker ran (:class:`WorkerSummary`) and when it
was busy (:class:`WorkerTimeline`, binned lanes).

A study may run its candidates on several workers (Ray actors, one per GPU; the classic run
is one worker named ``host:pid``). The store aggregates its candidates by ``candidates.worker``
into these (``prunestudio.store.browse.worker_summary`` / ``worker_timeline``): a few rows per
worker whatever the number of candidates, so a view of a 100k-candidate study stays cheap.
What a worker runs on (device, GPU, memory) is the :class:`~.records.Worker` record's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .records import Worker

__all__ = ["LANE_STATUSES", "WorkerLane", "WorkerSummary", "WorkerTimeline", "dominant_status",
           "running_until"]

# the statuses a lane tells apart; on a tie, the first wins
LANE_STATUSES = ("running", "failed", "done", "skipped")


def dominant_status(busy: Mapping[str, float]) -> str | None:
    """The status a stretch of a lane is drawn in, from its busy seconds by status: a
    running candidate first (it is what the worker does now), then failures when they took
    at least a quarter of the busy time (a quick failure among long candidates stays
    visible), else the status with the most seconds; None when idle."""
    total = sum(busy.values())
    if total <= 0:
        return None
    if busy.get("running"):
        return "running"
    if busy.get("failed", 0.0) >= total / 4:
        return "failed"
    return max(LANE_STATUSES, key=lambda s: (busy.get(s, 0.0), -LANE_STATUSES.index(s)))


def running_until(now: float, workers: Iterable[Worker]) -> float:
    """Up to when a study's running candidates are drawn: ``now`` while one of its worker
    rows is live (or it has none to tell), else its last heartbeat — a runner that died
    left its candidates 'running', but they stopped then, not now."""
    rows = list(workers)
    if rows and all(w.stale for w in rows):
        return min(now, max(w.heartbeat for w in rows))
    return now


def _number(value: Any) -> float | None:
    return None if value is None else float(value)


@dataclass(frozen=True, slots=True)
class WorkerSummary:
    """One worker's candidates in a study. ``busy_s`` sums ``finished_at - started_at`` of
    its ended candidates (done, failed or skipped) that have both times; ``timed`` counts
    those (the mean's denominator); ``first_start`` / ``last_finish`` bound its work."""

    name: str
    done: int = 0
    failed: int = 0
    skipped: int = 0
    running: int = 0
    busy_s: float = 0.0
    timed: int = 0
    first_start: float | None = None
    last_finish: float | None = None

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> WorkerSummary:
        """From an aggregate row (``browse.worker_summary``'s columns)."""
        return cls(name=str(row["name"]), done=int(row.get("done") or 0),
                   failed=int(row.get("failed") or 0), skipped=int(row.get("skipped") or 0),
                   running=int(row.get("running") or 0),
                   busy_s=float(row.get("busy_s") or 0.0), timed=int(row.get("timed") or 0),
                   first_start=_number(row.get("first_start")),
                   last_finish=_number(row.get("last_finish")))

    @property
    def candidates(self) -> int:
        """Every candidate it took (ended or running)."""
        return self.done + self.failed + self.skipped + self.running

    @property
    def mean_s(self) -> float | None:
        """Mean seconds per ended candidate (None before the first one ended)."""
        return self.busy_s / self.timed if self.timed else None


@dataclass(frozen=True, slots=True)
class WorkerLane:
    """One worker's busy seconds in each bin of a :class:`WorkerTimeline`, by status
    (``bins[i]``: status -> seconds; a running candidate counts up to the timeline's end)."""

    name: str
    bins: tuple[Mapping[str, float], ...] = field(default=(), hash=False)

    @property
    def busy_s(self) -> float:
        return sum(sum(b.values()) for b in self.bins)

    def status_at(self, i: int) -> str | None:
        """The status bin ``i`` is drawn in (see :func:`dominant_status`)."""
        return dominant_status(self.bins[i])


@dataclass(frozen=True, slots=True)
class WorkerTimeline:
    """When each worker of a study was busy, from the first start of a candidate
    (``start``) to the last finish, or to ``now`` while a candidate runs (``end``), cut
    into ``n_bins`` equal bins. ``start`` / ``end`` are None when no candidate started."""

    start: float | None
    end: float | None
    n_bins: int
    lanes: tuple[WorkerLane, ...] = ()

    @property
    def span_s(self) -> float:
        if self.start is None or self.end is None:
            return 0.0
        return max(0.0, self.end - self.start)

    @property
    def bin_s(self) -> float:
        return self.span_s / self.n_bins if self.n_bins else 0.0

    def lane(self, name: str) -> WorkerLane | None:
        return next((lane for lane in self.lanes if lane.name == name), None)

    def utilisation(self, name: str) -> float | None:
        """The share of the timeline's span the worker was busy (running candidates
        included); None for an unknown worker or an empty span."""
        lane = self.lane(name)
        if lane is None or self.span_s <= 0:
            return None
        return min(1.0, lane.busy_s / self.span_s)
