"""Frozen records of a store: :class:`Study`, :class:`Candidate` (with its :class:`Metric`
values), :class:`Event`, :class:`Artifact`, :class:`Worker`.

The store decodes its rows into these (``prunestudio.store``: ``Store.study_record``,
``Store.candidate_records``, ``queries.candidate_records_since``, ...). A record knows what
readers would otherwise re-derive: a candidate's label, whether it is a reference, its
metrics by identity and its search fitness; a study's primary role and primary metric.
Nothing outside this package computes those.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from .constants import (
    REFERENCE_METHODS,
    REFERENCE_ORIGINS,
    SEARCH_KINDS,
    SEARCH_ROLE,
    TASK_ROLE,
)
from .labels import realised_label, spec_label
from .metrics import Metric, MetricIdentity, choose_primary
from .settings import StudySettings

__all__ = ["Artifact", "Candidate", "Event", "Study", "StudyCounts", "StudyState", "Worker"]


def _mapping(value: Any) -> dict[str, Any]:
    return dict(value) if isinstance(value, Mapping) else {}



class StudyState:
    """How a study's status and times read — one rule for the `Study` record and for any
    view of it (the TUI's rows): needs `status`, `stale`, `started_at`, `finished_at`."""

    __slots__ = ()
    status: str
    stale: bool
    started_at: float | None
    finished_at: float | None

    @property
    def shown_status(self) -> str:
        """'stale' for a 'running' study whose runner is gone, else the stored status."""
        return "stale" if self.stale and self.status == "running" else self.status

    @property
    def live(self) -> bool:
        """Running with a live runner: elapsed time moves, an ETA makes sense."""
        return self.status == "running" and not self.stale

    @property
    def active(self) -> bool:
        return self.status in ("created", "running")

    def elapsed(self, now: float) -> float | None:
        """Seconds from start to finish (or to `now` while unfinished); None before."""
        if self.started_at is None:
            return None
        end = self.finished_at if self.finished_at is not None else now
        return max(0.0, end - self.started_at)

@dataclass(frozen=True, slots=True)
class StudyCounts:
    """Candidate counts of a study (the store's aggregate). ``budget_used``: candidates that
    spent the budget (real fitness evaluations of a search, finished candidates otherwise)."""

    total: int = 0
    done: int = 0
    failed: int = 0
    pending: int = 0
    running: int = 0
    skipped: int = 0
    budget_used: int = 0

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> StudyCounts:
        return cls(**{k: int(row.get(f"n_{k}") or 0) for k in
                      ("total", "done", "failed", "pending", "running", "skipped",
                       "budget_used")})

    @property
    def finished(self) -> int:
        return self.done + self.failed + self.skipped


@dataclass(frozen=True, slots=True)
class Study(StudyState):
    id: int
    name: str
    kind: str
    model: str
    status: str
    config: Mapping[str, Any] = field(default_factory=dict, hash=False, repr=False)
    seed: int | None = None
    budget: int | None = None
    host: str | None = None
    error: str | None = None
    cancel_requested: str | None = None
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    updated_seq: int = 0
    counts: StudyCounts | None = None  # with list / since queries only
    stale: bool = False  # 'running' in the store, but no live runner (the store's rule)
    settings: StudySettings = field(default_factory=StudySettings, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "settings", StudySettings.of(self.config, self.kind))

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Study:
        """From a decoded study row (config a dict), with counts when the row has them."""
        return cls(
            id=int(row["id"]), name=str(row.get("name") or row["id"]), kind=str(row["kind"]),
            model=str(row["model"]), status=str(row["status"]),
            config=_mapping(row.get("config")), seed=row.get("seed"), budget=row.get("budget"),
            host=row.get("host"), error=row.get("error"),
            cancel_requested=row.get("cancel_requested"), created_at=row.get("created_at"),
            started_at=row.get("started_at"), finished_at=row.get("finished_at"),
            updated_seq=int(row.get("updated_seq") or 0),
            counts=StudyCounts.of(row) if "n_total" in row else None,
            stale=bool(row.get("stale")),
        )

    @property
    def is_search(self) -> bool:
        return self.kind in SEARCH_KINDS

    @property
    def primary_role(self) -> str | None:
        """The role the study is ranked by: 'search' (the search-split fitness) for gp /
        random, else the first evaluation role."""
        return self.settings.primary_role

    @property
    def sort_role(self) -> str | None:
        """The role result tables sort by by default (the primary role)."""
        return self.primary_role

    @property
    def evaluation_roles(self) -> tuple[str, ...]:
        """[[evaluation]] roles in config order (the search role is never one of them)."""
        return self.settings.evaluation_roles

    def primary_metric(self, identities: Iterable[MetricIdentity],
                       name: str = "ppl") -> MetricIdentity | None:
        """Among ``identities`` (those found in the store), the one the study is judged by:
        ``name`` of its primary role, full fidelity first (see ``choose_primary``)."""
        return choose_primary(identities, self.primary_role, name)


    def as_dict(self) -> dict[str, Any]:
        """The stored fields (as ``Store.get_study`` returns them)."""
        return {"id": self.id, "name": self.name, "kind": self.kind, "model": self.model,
                "config": dict(self.config), "seed": self.seed, "budget": self.budget,
                "status": self.status, "host": self.host, "error": self.error,
                "cancel_requested": self.cancel_requested, "created_at": self.created_at,
                "started_at": self.started_at, "finished_at": self.finished_at,
                "updated_seq": self.updated_seq}


@dataclass(frozen=True, slots=True)
class Candidate:
    id: int
    study_id: int
    idx: int
    spec: Mapping[str, Any] = field(hash=False)
    spec_hash: str
    origin: str
    status: str
    parents: tuple[int, ...] | None = None
    generation: int | None = None
    error: str | None = None
    worker: str | None = None
    created_at: float | None = None
    started_at: float | None = None
    finished_at: float | None = None
    timings: Mapping[str, Any] = field(default_factory=dict, hash=False)
    info: Mapping[str, Any] = field(default_factory=dict, hash=False)
    updated_seq: int = 0
    metrics: tuple[Metric, ...] = ()
    in_budget: bool | None = None  # spent a unit of its study's budget (since queries only)

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Candidate:
        """From a decoded candidate row (JSON columns decoded, ``metrics`` a list of dicts)."""
        parents = row.get("parents")
        in_budget = row.get("in_budget")
        return cls(
            id=int(row["id"]), study_id=int(row["study_id"]), idx=int(row["idx"]),
            spec=_mapping(row.get("spec")), spec_hash=str(row.get("spec_hash") or ""),
            origin=str(row.get("origin") or ""), status=str(row["status"]),
            parents=None if parents is None else tuple(int(p) for p in parents),
            generation=row.get("generation"), error=row.get("error"), worker=row.get("worker"),
            created_at=row.get("created_at"), started_at=row.get("started_at"),
            finished_at=row.get("finished_at"), timings=_mapping(row.get("timings")),
            info=_mapping(row.get("info")), updated_seq=int(row.get("updated_seq") or 0),
            metrics=tuple(Metric.of(m) for m in row.get("metrics") or ()),
            in_budget=None if in_budget is None else bool(in_budget),
        )

    # -- what it is ---------------------------------------------------------------------------

    @property
    def method(self) -> str | None:
        method = self.spec.get("method")
        return None if method is None else str(method)

    @property
    def label(self) -> str:
        """THE label: the spec's (see ``labels.spec_label``), with what a structured
        candidate really removed when it was recorded: ``structured[...] 25% params
        (realised 0% query heads)``."""
        text = spec_label(self.spec)
        if text == "?" and self.info.get("label"):
            return str(self.info["label"])
        realised = realised_label(self.info)
        return f"{text} ({realised})" if realised else text

    @property
    def expression(self) -> str | None:
        """A symbolic candidate's expression (canonical text)."""
        options = self.spec.get("options")
        if isinstance(options, Mapping) and options.get("expression") is not None:
            return str(options["expression"])
        return None

    @property
    def is_reference(self) -> bool:
        """The unpruned model or a baseline measured for comparison: shown, never the best."""
        return self.method in REFERENCE_METHODS or self.origin in REFERENCE_ORIGINS

    @property
    def is_dense(self) -> bool:
        return self.method in REFERENCE_METHODS

    @property
    def is_search_candidate(self) -> bool:
        """Proposed by a search (a generation, not a baseline)."""
        return self.generation is not None and self.origin not in REFERENCE_ORIGINS

    @property
    def equivalent_to(self) -> int | None:
        """The candidate whose fitness this one reuses (mask equivalence), or None."""
        eq = self.info.get("equivalent_to")
        return None if eq is None else int(eq)

    @property
    def equivalence(self) -> str | None:
        """How it is equivalent: 'rank_key' or 'mask' (None when it is not)."""
        if self.equivalent_to is None:
            return None
        return str(self.info.get("equivalence") or "mask")

    @property
    def seconds(self) -> float | None:
        """Recorded total time, else finished - started."""
        total = self.timings.get("total")
        if isinstance(total, (int, float)) and not isinstance(total, bool):
            return float(total)
        if self.started_at is not None and self.finished_at is not None:
            return float(self.finished_at - self.started_at)
        return None

    @property
    def first_error_line(self) -> str | None:
        text = (self.error or "").strip()
        return text.splitlines()[0] if text else None

    # -- metrics by identity ------------------------------------------------------------------

    def metric(self, identity: MetricIdentity) -> Metric | None:
        """The value recorded under exactly this identity."""
        return next((m for m in self.metrics if m.identity == identity), None)

    def find(self, name: str, role: str | None = None, **fields: Any) -> list[Metric]:
        """Metrics with this name (and role, and any of dataset / split / seqlen / fidelity
        given), in recording order."""
        return [m for m in self.metrics if m.name == name
                and (role is None or m.role == role)
                and all(getattr(m.identity, k) == v for k, v in fields.items())]

    def value(self, name: str, role: str) -> float | None:
        """The value of metric `name` under `role` (full fidelity before proxy), None when
        not recorded or not finite: what tables and the overfitting rule read."""
        m = min(self.find(name, role), key=lambda m: m.fidelity != "full", default=None)
        return float(m.value) if m is not None and math.isfinite(m.value) else None

    def ppl(self, role: str) -> Metric | None:
        """The perplexity of an evaluation role (full fidelity before proxy)."""
        found = self.find("ppl", role)
        return min(found, key=lambda m: m.fidelity != "full", default=None)

    @property
    def ppl_by_role(self) -> dict[str, Metric]:
        """Perplexities by role (one per role; full fidelity before proxy)."""
        roles = dict.fromkeys(m.role for m in self.metrics if m.name == "ppl" and m.role)
        return {r: m for r in roles if (m := self.ppl(r)) is not None}

    @property
    def fitness(self) -> Metric | None:
        """A search candidate's fitness: ppl on the search split (role 'search')."""
        return self.ppl(SEARCH_ROLE)

    @property
    def task_metrics(self) -> dict[tuple[str, str], Metric]:
        """Task accuracies by (task, metric name); where a task was measured more than once
        (the study's proxy, then ``prunestudio eval`` on more examples) the one on the most
        examples wins, the later one on a tie."""
        out: dict[tuple[str, str], Metric] = {}
        for m in self.metrics:
            if m.role != TASK_ROLE or m.dataset is None:
                continue
            key = (m.dataset, m.name)
            if key not in out or (m.n_samples or 0) >= (out[key].n_samples or 0):
                out[key] = m
        return out

    @property
    def sparsity(self) -> float | None:
        """Realised sparsity of the pruned layers (unstructured) or the fraction of
        parameters removed (structured); 0 for the dense model."""
        if self.is_dense:
            return 0.0
        m = next((m for m in self.metrics if m.name in ("sparsity", "param_ratio")), None)
        return None if m is None else m.value

    @property
    def finalist_rank(self) -> int | None:
        """Rank among a search's finalists (1 = best by search fitness), or None."""
        ranks = [m.protocol.get("finalist_rank", 99) for m in self.metrics
                 if m.stage == "finalist"]
        return min(ranks) if ranks else None

    def as_dict(self) -> dict[str, Any]:
        """The store's dict form (``Store.candidate``), metrics included."""
        return {"id": self.id, "study_id": self.study_id, "idx": self.idx,
                "spec": dict(self.spec), "spec_hash": self.spec_hash, "origin": self.origin,
                "parents": None if self.parents is None else list(self.parents),
                "generation": self.generation, "status": self.status, "error": self.error,
                "worker": self.worker, "created_at": self.created_at,
                "started_at": self.started_at, "finished_at": self.finished_at,
                "timings": dict(self.timings) or None, "info": dict(self.info) or None,
                "updated_seq": self.updated_seq,
                "metrics": [m.as_dict() for m in self.metrics]}


@dataclass(frozen=True, slots=True)
class Event:
    id: int
    study_id: int
    time: float
    level: str
    message: str
    candidate_id: int | None = None
    progress: float | None = None

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Event:
        return cls(id=int(row["id"]), study_id=int(row["study_id"]), time=float(row["time"]),
                   level=str(row["level"]), message=str(row["message"]),
                   candidate_id=row.get("candidate_id"), progress=row.get("progress"))


@dataclass(frozen=True, slots=True)
class Artifact:
    id: int
    candidate_id: int
    kind: str
    path: str
    hash: str | None = None
    bytes: int | None = None
    created_at: float | None = None

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Artifact:
        return cls(id=int(row["id"]), candidate_id=int(row["candidate_id"]),
                   kind=str(row["kind"]), path=str(row["path"]), hash=row.get("hash"),
                   bytes=row.get("bytes"), created_at=row.get("created_at"))


@dataclass(frozen=True, slots=True)
class Worker:
    name: str
    heartbeat: float
    study_id: int | None = None
    candidate_id: int | None = None
    host: str | None = None
    pid: int | None = None
    stale: bool | None = None  # from list queries: no recent heartbeat from a live process
    # what it runs on (device, gpu, memory_total, memory_used, memory_peak, threads, node):
    # written by the driver for itself and for every Ray actor
    device: Mapping[str, Any] | None = None

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Worker:
        stale = row.get("stale")
        device = row.get("device")
        if isinstance(device, str):
            try:
                device = json.loads(device)
            except ValueError:
                device = None
        return cls(name=str(row["name"]), heartbeat=float(row["heartbeat"]),
                   study_id=row.get("study_id"), candidate_id=row.get("candidate_id"),
                   host=row.get("host"), pid=row.get("pid"),
                   stale=None if stale is None else bool(stale),
                   device=device if isinstance(device, dict) else None)

    @property
    def device_label(self) -> str:
        """'cuda:0 NVIDIA H200 12.1/139.8 GiB' / 'cpu (4 threads)' / '' (nothing recorded)."""
        d = self.device or {}
        if not d:
            return ""
        parts = [str(d.get("device") or "?")]
        if d.get("gpu"):
            parts.append(str(d["gpu"]))
        total, used = d.get("memory_total"), d.get("memory_used")
        if total:
            gib = 1024 ** 3
            parts.append(f"{(used or 0) / gib:.1f}/{total / gib:.1f} GiB")
        if d.get("threads") and not d.get("gpu"):  # a CPU worker's budget
            parts.append(f"({d['threads']} threads)")
        return " ".join(parts)
