"""Compact records the TUI keeps in memory, built from the store's schema records.

A study with 100k candidates is held as 100k :class:`CandRow` (slots, metric values in a small
dict): the spec, timings and info stay in the store and are read again for the one candidate
shown in the detail pane.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from prunestudio.schema import (
    Candidate,
    MetricIdentity,
    Study,
    choose_primary,
    column_titles,
)
from prunestudio.schema.records import StudyState

__all__ = [
    "BestMetric",
    "CandRow",
    "MetricColumn",
    "StudySummary",
    "choose_primary",
    "column_titles",
]

# A table column is one metric identity (the schema's record; ``.key`` names it, ``.title``
# heads the column). The primary one comes from ``Study.primary_metric``.
MetricColumn = MetricIdentity


@dataclass(slots=True)
class BestMetric:
    column: MetricColumn
    value: float
    candidate_id: int | None = None
    idx: int | None = None
    n: int = 0


@dataclass(slots=True)
class StudySummary(StudyState):
    """A study row with its candidate counts (from ``list_studies`` / ``studies_since``);
    shown_status, live, active and elapsed follow the schema's rules (``StudyState``)."""

    id: int
    name: str
    kind: str
    model: str
    status: str
    budget: int | None
    n_total: int
    n_done: int
    n_failed: int
    n_running: int
    n_pending: int
    n_skipped: int
    n_budget_used: int  # candidates that spent the budget (store's rule: real evaluations
    #                     of a gp / random search, finished candidates otherwise)
    created_at: float | None
    started_at: float | None
    finished_at: float | None
    cancel_requested: str | None
    error: str | None
    primary_role: str | None  # Study.primary_role: what the study is ranked by
    config: dict[str, Any] = field(default_factory=dict)
    stale: bool = False  # 'running' in the store, but its runner stopped beating

    @classmethod
    def of(cls, study: Study) -> StudySummary:
        """From a store record (counts when the record has them)."""
        n = study.counts
        return cls(
            id=study.id, name=study.name, kind=study.kind, model=study.model,
            status=study.status, budget=study.budget,
            n_total=n.total if n else 0, n_done=n.done if n else 0,
            n_failed=n.failed if n else 0, n_running=n.running if n else 0,
            n_pending=n.pending if n else 0, n_skipped=n.skipped if n else 0,
            n_budget_used=n.budget_used if n else 0, created_at=study.created_at,
            started_at=study.started_at, finished_at=study.finished_at,
            cancel_requested=study.cancel_requested, error=study.error,
            primary_role=study.primary_role, config=dict(study.config), stale=study.stale,
        )

    def with_counts(self, counts: Mapping[str, int], budget_used: int) -> StudySummary:
        """A copy with candidate counts taken from ``counts`` (status -> number) and the
        number of candidates that spent the budget."""
        from dataclasses import replace

        return replace(
            self, n_total=sum(counts.values()), n_done=counts.get("done", 0),
            n_failed=counts.get("failed", 0), n_running=counts.get("running", 0),
            n_pending=counts.get("pending", 0), n_skipped=counts.get("skipped", 0),
            n_budget_used=budget_used,
        )

    def with_stale(self, stale: bool) -> StudySummary:
        from dataclasses import replace

        return replace(self, stale=stale)

    @property
    def finished(self) -> int:
        """Candidates that reached an end state (done, failed or skipped)."""
        return self.n_done + self.n_failed + self.n_skipped

    @property
    def progress(self) -> int:
        """What the progress bar and the ETA count against :attr:`total`: the candidates
        that spent the budget (a gp / random search: real fitness evaluations only)."""
        return self.n_budget_used

    @property
    def total(self) -> int | None:
        """The budget, else the number of candidates recorded so far."""
        return self.budget if self.budget else (self.n_total or None)



@dataclass(slots=True)
class CandRow:
    """What the candidates table shows for one candidate."""

    id: int
    idx: int
    status: str
    origin: str
    generation: int | None
    label: str
    seconds: float | None
    error: str | None
    metrics: dict[str, float]
    reference: bool = False  # the unpruned model ("dense"): shown, never the best
    in_budget: bool = False  # spent one unit of the study's budget (the store says)
    worker: str | None = None  # the worker that ran it (a Ray actor, or host:pid)

    @classmethod
    def of(cls, c: Candidate, columns: dict[str, MetricColumn]) -> CandRow:
        """Build from a store record; new metric identities are added to ``columns``
        (key -> column, in first-seen order)."""
        values: dict[str, float] = {}
        for m in c.metrics:
            col = columns.get(m.key)
            if col is None:
                col = columns[m.key] = m.identity
            values[col.key] = m.value  # the column's key: one string, shared
        return cls(
            id=c.id, idx=c.idx, status=sys.intern(c.status), origin=sys.intern(c.origin),
            generation=c.generation, label=c.label, seconds=c.seconds,
            error=c.first_error_line, metrics=values, reference=c.is_reference,
            in_budget=bool(c.in_budget),
            worker=sys.intern(c.worker) if c.worker else None,
        )
