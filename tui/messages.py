"""Messages that thread workers post back to the screens (small dataclasses, as in Toolong)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from textual.message import Message

from prunestudio.schema import Candidate, Study, Worker

from .feed import WorkersView
from .machine import MachineSnapshot
from .model import BestMetric, CandRow, MetricColumn, StudySummary

__all__ = [
    "CancelRequested",
    "CandidateLoaded",
    "MachineSampled",
    "PollFailed",
    "StudiesPolled",
    "StudyPolled",
    "TimelinePolled",
]


@dataclass
class StudiesPolled(Message):
    """Studies that changed since the last poll, with their best primary metric."""

    studies: list[StudySummary]
    best: dict[int, BestMetric]
    workers: list[Worker] | None = None  # every worker row, when any changed


@dataclass
class StudyPolled(Message):
    """What changed in one study: its row, candidates, metric columns seen, new events."""

    study_id: int
    study: Study | None  # the study record (without counts) when it changed
    rows: list[CandRow]
    columns: list[MetricColumn]
    events: list[dict[str, Any]] = field(default_factory=list)
    more: bool = False  # a first load still in progress: more rows are coming
    loaded: int = 0  # rows read so far by this feed
    stale: bool | None = None  # the study is 'running' but its runner stopped beating
    warnings: list[str] | None = None  # the study's overfitting warnings when they changed


@dataclass
class TimelinePolled(Message):
    """The study's per-worker timeline, summaries and worker rows (the timeline panel)."""

    view: WorkersView


@dataclass
class CandidateLoaded(Message):
    """The full record of one candidate (spec, metrics with protocol, timings, info)."""

    candidate: Candidate


@dataclass
class MachineSampled(Message):
    snapshot: MachineSnapshot


@dataclass
class PollFailed(Message):
    """A read failed (e.g. the store was locked or removed); the next poll retries."""

    error: str


@dataclass
class CancelRequested(Message):
    """Result of writing a cancel request for a study."""

    study_id: int
    ok: bool
    text: str
