"""Metric records: a value and its identity (name, role, dataset, split, seqlen, fidelity).

Two values are compared only when their identities are equal; UIs build one column per
identity they find, titled by :attr:`MetricIdentity.title`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from .constants import HIGHER_IS_BETTER, SEARCH_ROLE, TASK_ROLE

__all__ = [
    "Metric",
    "MetricIdentity",
    "TASK_SHORT_NAMES",
    "choose_primary",
    "column_titles",
    "metric_key",
    "task_metric_title",
]

TASK_SHORT_NAMES = {"shakespeare_next_line": "next-line", "arc_challenge": "arc-c",
                    "arc_easy": "arc-e", "winogrande": "wino", "openbookqa": "obqa"}
ROLE_SHORT = {"in_domain": "in", "out_of_domain": "ood", "heldout": "held", "search": "search"}


def task_metric_title(task: str, name: str) -> str:
    """Title of a task accuracy: ``acc next-line``, ``acc_norm arc-c``."""
    return f"{name} {TASK_SHORT_NAMES.get(task, task)}"


def metric_key(m: Mapping[str, Any] | MetricIdentity) -> str:
    """One string naming a metric identity: ``name:dataset:split:seqlen:fidelity``, missing
    parts empty (``params::::``), ``:role`` appended when a role is set."""
    if isinstance(m, MetricIdentity):
        return m.key
    parts: Iterable[Any] = (m["name"], m.get("dataset"), m.get("split"), m.get("seqlen") or None,
                            m.get("fidelity"))
    key = ":".join("" if p is None or p == "" else str(p) for p in parts)
    role = m.get("role")
    return f"{key}:{role}" if role else key


@dataclass(frozen=True, slots=True)
class MetricIdentity:
    """What a metric value measures. Missing parts are None (never '' or 0)."""

    name: str
    role: str | None = None
    dataset: str | None = None
    split: str | None = None
    seqlen: int | None = None
    fidelity: str | None = None
    key: str = field(default="", compare=False, repr=False)

    def __post_init__(self) -> None:
        for attr in ("role", "dataset", "split", "fidelity"):
            if getattr(self, attr) == "":
                object.__setattr__(self, attr, None)
        if not self.seqlen:
            object.__setattr__(self, "seqlen", None)
        if not self.key:
            parts = (self.name, self.dataset, self.split, self.seqlen, self.fidelity)
            key = ":".join("" if p is None else str(p) for p in parts)
            object.__setattr__(self, "key", f"{key}:{self.role}" if self.role else key)

    @classmethod
    def of(cls, m: Mapping[str, Any]) -> MetricIdentity:
        """The identity of a metric dict (store row or engine output)."""
        return cls(name=str(m["name"]), role=m.get("role"), dataset=m.get("dataset"),
                   split=m.get("split"), seqlen=m.get("seqlen"), fidelity=m.get("fidelity"))

    @property
    def lower_is_better(self) -> bool:
        name = self.name.lower()
        return not any(name == h or name.startswith(h + "_") for h in HIGHER_IS_BETTER)

    @property
    def title(self) -> str:
        """Short column header: ``ppl in``, ``ppl ood``, ``ppl search·p`` (p: proxy),
        ``acc next-line·p`` (a task accuracy: named by its task)."""
        if self.role == TASK_ROLE and self.dataset:
            text = task_metric_title(self.dataset, self.name)
        else:
            where = ROLE_SHORT.get(self.role or "", self.role or self.dataset or "")
            text = f"{self.name} {where}".strip()
        return text + ("·p" if self.fidelity == "proxy" else "")

    @property
    def description(self) -> str:
        """Every field but the name: ``wikitext2/test · seqlen 2048 · full · in_domain``."""
        where = "/".join(p for p in (self.dataset, self.split) if p)
        parts = [where, f"seqlen {self.seqlen}" if self.seqlen else "", self.fidelity or "",
                 self.role or ""]
        return " · ".join(p for p in parts if p)

    def as_dict(self) -> dict[str, Any]:
        return {"name": self.name, "role": self.role, "dataset": self.dataset,
                "split": self.split, "seqlen": self.seqlen, "fidelity": self.fidelity}


@dataclass(frozen=True, slots=True)
class Metric:
    """One recorded value with its identity, sample count and protocol."""

    identity: MetricIdentity
    value: float
    n_samples: int | None = None
    protocol: Mapping[str, Any] = field(default_factory=dict, hash=False)
    id: int | None = None
    candidate_id: int | None = None
    created_at: float | None = field(default=None, compare=False)

    @classmethod
    def of(cls, m: Mapping[str, Any]) -> Metric:
        """From a decoded metric dict (``Store.candidate(...)["metrics"]`` items)."""
        return cls(identity=MetricIdentity.of(m), value=float(m["value"]),
                   n_samples=m.get("n_samples"), protocol=m.get("protocol") or {},
                   id=m.get("id"), candidate_id=m.get("candidate_id"),
                   created_at=m.get("created_at"))

    # the identity's fields, read through
    name = property(lambda self: self.identity.name)
    role = property(lambda self: self.identity.role)
    dataset = property(lambda self: self.identity.dataset)
    split = property(lambda self: self.identity.split)
    seqlen = property(lambda self: self.identity.seqlen)
    fidelity = property(lambda self: self.identity.fidelity)
    key = property(lambda self: self.identity.key)

    @property
    def stage(self) -> str | None:
        """``protocol['stage']`` (e.g. 'finalist' for a search's re-evaluations)."""
        stage = self.protocol.get("stage")
        return None if stage is None else str(stage)

    def as_dict(self) -> dict[str, Any]:
        """The store's dict form (what ``Store.candidate`` returns in ``metrics``)."""
        out: dict[str, Any] = {}
        if self.id is not None:
            out["id"] = self.id
        if self.candidate_id is not None:
            out["candidate_id"] = self.candidate_id
        i = self.identity
        out.update(name=i.name, value=self.value, dataset=i.dataset, split=i.split,
                   seqlen=i.seqlen, n_samples=self.n_samples, fidelity=i.fidelity, role=i.role,
                   protocol=dict(self.protocol))
        if self.created_at is not None:
            out["created_at"] = self.created_at
        return out


def _rank(col: MetricIdentity, primary_role: str | None) -> int:
    full = col.fidelity in (None, "full")
    if primary_role is not None and col.role == primary_role:
        return 0 if full else 1
    if col.role == "in_domain":
        return 2 if full else 4
    if col.role == SEARCH_ROLE:
        return 3
    return 5


def choose_primary(identities: Iterable[MetricIdentity], primary_role: str | None = None,
                   name: str = "ppl") -> MetricIdentity | None:
    """The metric a study is judged by among ``identities``: ``name`` (ppl) of the study's
    primary role (full fidelity before proxy), else in_domain at full fidelity, else the
    search fitness, else in_domain proxy, else any ``name`` metric. Ties: first seen.
    Use :meth:`Study.primary_metric` rather than calling this with a guessed role."""
    found = [c for c in identities if c.name == name]
    if not found:
        return None
    return min(enumerate(found), key=lambda ic: (_rank(ic[1], primary_role), ic[0]))[1]


def column_titles(identities: Sequence[MetricIdentity]) -> list[str]:
    """Titles, made unique by adding the seqlen (then the dataset) where two collide."""
    titles = [c.title for c in identities]
    for extra in (lambda c: f"@{c.seqlen}" if c.seqlen else "",
                  lambda c: f" {c.dataset}" if c.dataset else ""):
        dupes = {t for t in titles if titles.count(t) > 1}
        titles = [t + extra(c) if t in dupes else t
                  for t, c in zip(titles, identities, strict=True)]
    return titles
