"""Compact records the TUI keeps in memory, built from the store's rows.

A study with 100k candidates is held as 100k :class:`CandRow` (slots, metric values in a small
dict): the spec, timings and info stay in the store and are read again for the one candidate
shown in the detail pane.
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from prunestudio.store import metric_key, task_metric_title

from .formatting import spec_label

__all__ = [
    "BestMetric",
    "CandRow",
    "MetricColumn",
    "StudySummary",
    "choose_primary",
    "column_titles",
]

# Metric names where a larger value is better; everything else (ppl, loss, latency...) is
# lower-is-better. Only the default sort direction and the "best" marker depend on it.
_HIGHER_IS_BETTER = ("acc", "accuracy", "mmlu", "f1", "exact_match", "score", "reward")
_ROLE_SHORT = {"in_domain": "in", "out_of_domain": "ood", "heldout": "held", "search": "search"}


@dataclass(frozen=True, slots=True)
class MetricColumn:
    """One metric identity: what ``metric_key`` names (value comparisons only within one)."""

    key: str
    name: str
    dataset: str | None = None
    split: str | None = None
    seqlen: int | None = None
    fidelity: str | None = None
    role: str | None = None

    @classmethod
    def of(cls, m: Mapping[str, Any]) -> MetricColumn:
        return cls(
            key=metric_key(m), name=str(m["name"]), dataset=m.get("dataset"),
            split=m.get("split"), seqlen=m.get("seqlen"), fidelity=m.get("fidelity"),
            role=m.get("role"),
        )

    @property
    def lower_is_better(self) -> bool:
        name = self.name.lower()
        return not any(name == h or name.startswith(h + "_") for h in _HIGHER_IS_BETTER)

    @property
    def title(self) -> str:
        """Short column header: ``ppl in``, ``ppl ood``, ``ppl search·p`` (p: proxy),
        ``acc next-line·p`` (a task accuracy: named by its task)."""
        if self.role == "task" and self.dataset:
            text = task_metric_title(self.dataset, self.name)
        else:
            where = _ROLE_SHORT.get(self.role or "", self.role or self.dataset or "")
            text = f"{self.name} {where}".strip()
        return text + ("·p" if self.fidelity == "proxy" else "")

    @property
    def identity(self) -> str:
        """Every field, for the detail pane: ``wikitext2/test seqlen 2048 full in_domain``."""
        where = "/".join(p for p in (self.dataset, self.split) if p)
        parts = [where, f"seqlen {self.seqlen}" if self.seqlen else "", self.fidelity or "",
                 self.role or ""]
        return " · ".join(p for p in parts if p)


def column_titles(columns: Sequence[MetricColumn]) -> list[str]:
    """Titles, made unique by adding the seqlen (then the dataset) where two collide."""
    titles = [c.title for c in columns]
    for extra in (lambda c: f"@{c.seqlen}" if c.seqlen else "",
                  lambda c: f" {c.dataset}" if c.dataset else ""):
        dupes = {t for t in titles if titles.count(t) > 1}
        titles = [t + extra(c) if t in dupes else t for t, c in zip(titles, columns, strict=True)]
    return titles


def _rank(col: MetricColumn, preferred_role: str | None) -> int:
    full = col.fidelity in (None, "full")
    if preferred_role is not None and col.role == preferred_role and full:
        return 0
    if col.role == "in_domain" and full:
        return 1
    if col.role == "search":
        return 2
    if col.role is not None and col.role in ("in_domain", preferred_role):
        return 3
    return 4


def choose_primary(
    columns: Iterable[MetricColumn], preferred_role: str | None = None, name: str = "ppl"
) -> MetricColumn | None:
    """The metric the study is judged by: ``name`` (ppl) of the study's primary role at full
    fidelity, else in_domain full, else the search role, else any ``name`` metric. Ties go to
    the first seen."""
    found = [c for c in columns if c.name == name]
    if not found:
        return None
    return min(enumerate(found), key=lambda ic: (_rank(ic[1], preferred_role), ic[0]))[1]


@dataclass(slots=True)
class BestMetric:
    column: MetricColumn
    value: float
    candidate_id: int | None = None
    idx: int | None = None
    n: int = 0


@dataclass(slots=True)
class StudySummary:
    """A study row with its candidate counts (from ``list_studies`` / ``studies_since``)."""

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
    primary_role: str | None
    config: dict[str, Any] = field(default_factory=dict)
    stale: bool = False  # 'running' in the store, but its runner stopped beating

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> StudySummary:
        config = row.get("config") if isinstance(row.get("config"), dict) else {}
        return cls(
            id=int(row["id"]), name=str(row.get("name") or row["id"]), kind=str(row["kind"]),
            model=str(row["model"]), status=str(row["status"]), budget=row.get("budget"),
            n_total=int(row.get("n_total") or 0), n_done=int(row.get("n_done") or 0),
            n_failed=int(row.get("n_failed") or 0), n_running=int(row.get("n_running") or 0),
            n_pending=int(row.get("n_pending") or 0), n_skipped=int(row.get("n_skipped") or 0),
            n_budget_used=int(row.get("n_budget_used") or 0), created_at=row.get("created_at"),
            started_at=row.get("started_at"), finished_at=row.get("finished_at"),
            cancel_requested=row.get("cancel_requested"), error=row.get("error"),
            primary_role=primary_role_of(config), config=config, stale=bool(row.get("stale")),
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

    @property
    def shown_status(self) -> str:
        """The status to show: 'stale' for a 'running' study whose runner is gone."""
        return "stale" if self.stale and self.status == "running" else self.status

    @property
    def live(self) -> bool:
        """Running, with a live runner (elapsed time moves, an ETA makes sense)."""
        return self.status == "running" and not self.stale

    @property
    def active(self) -> bool:
        return self.status in ("created", "running")

    def elapsed(self, now: float) -> float | None:
        if self.started_at is None:
            return None
        end = self.finished_at if self.finished_at is not None else now
        return max(0.0, end - self.started_at)


def primary_role_of(config: Mapping[str, Any]) -> str | None:
    """The role of the first evaluation set of a study config, when it has one."""
    evaluation = config.get("evaluation") if isinstance(config, Mapping) else None
    if isinstance(evaluation, list) and evaluation and isinstance(evaluation[0], Mapping):
        role = evaluation[0].get("role")
        return str(role) if role else None
    return None


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

    @classmethod
    def of(cls, row: Mapping[str, Any], columns: dict[str, MetricColumn]) -> CandRow:
        """Build from a ``candidates_since`` row; new metric identities are added to
        ``columns`` (key -> column, in first-seen order)."""
        values: dict[str, float] = {}
        for m in row.get("metrics") or ():
            key = metric_key(m)
            col = columns.get(key)
            if col is None:
                col = columns[key] = MetricColumn.of(m)
            values[col.key] = float(m["value"])  # the column's key: one string, shared
        timings = row.get("timings") if isinstance(row.get("timings"), Mapping) else {}
        seconds = timings.get("total")
        if not isinstance(seconds, (int, float)):
            start, end = row.get("started_at"), row.get("finished_at")
            seconds = end - start if start is not None and end is not None else None
        error = row.get("error")
        return cls(
            id=int(row["id"]), idx=int(row["idx"]), status=sys.intern(str(row["status"])),
            origin=sys.intern(str(row.get("origin") or "")), generation=row.get("generation"),
            label=spec_label(row.get("spec")), seconds=None if seconds is None else float(seconds),
            error=error.strip().splitlines()[0] if isinstance(error, str) and error.strip()
            else None,
            metrics=values, reference=is_reference(row.get("spec")),
            in_budget=bool(row.get("in_budget")),
        )


REFERENCE_METHODS = ("dense",)


def is_reference(spec: Any) -> bool:
    """Whether a spec is the unpruned reference model rather than a pruning result."""
    return isinstance(spec, Mapping) and spec.get("method") in REFERENCE_METHODS
