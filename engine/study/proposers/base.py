"""The Proposer seam: what to evaluate next, decided from what is recorded.

    proposer.restore(candidates, description) -> notes   # state rebuilt from the store
    proposer.ask()  -> Round | None                      # the next proposals; None: done
    proposer.tell(candidate)                             # a recorded / finished candidate

`study.loop.run_study` drives it: it records a round's proposals (pending, before anything is
evaluated, so a kill -9 resumes with the same proposals), then takes the round's `todo` items
one by one (cancel checked before each), asks `plan(item)` for a `Job` — or a decision that
needs no evaluation (`Skip`, `Reuse`) — hands the job to the executor and records the result.
Every other method below has a default; a search overrides what it needs (its events, its
progress, a budget, a second pass such as finalists).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

from prunestudio.engine.study.executor import CandidateResult, Job


@dataclass(frozen=True)
class Proposal:
    """A candidate to record (pending)."""

    spec: dict[str, Any]  # canonical spec
    origin: str
    parents: tuple[int, ...] = ()
    generation: int | None = None


@dataclass
class Round:
    proposals: Sequence[Proposal] = ()
    generation: int | None = None
    n_proposed: int = 0  # before any cap (0 with no proposals: nothing new could be proposed)
    ids: list[int] = field(default_factory=list)  # filled in by the loop, in proposal order
    name: str = ""


@dataclass
class Item:
    """One thing to do: evaluate a pending candidate, or re-measure a recorded one."""

    candidate: dict[str, Any]
    mode: str = "evaluate"  # evaluate | remeasure
    rank: int | None = None  # e.g. a finalist's rank

    @property
    def id(self) -> int:
        return self.candidate["id"]


@dataclass
class Note:
    """An event for the store (`console=False`) or a line for the terminal."""

    message: str
    level: str = "info"
    candidate_id: int | None = None
    progress: float | None = None
    console: bool = False


@dataclass
class PredictorFit:
    """A fitted predictor to record (`Store.add_predictor_fit`): a proposer returns it among its
    notes (e.g. from `end_round`) and the loop, the only writer, stores it. A second fit of the
    same round and target replaces the first, so a resumed round records no duplicate."""

    round: int
    target: str
    payload: dict[str, Any]


def proposed(candidates: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The candidates a proposer rebuilds its state from: all but those added after a study
    (origin ``recovered``: LoRA recovery of a finished candidate, not a proposal)."""
    return [c for c in candidates if c.get("origin") != "recovered"]


@dataclass
class Skip:
    """Do not evaluate: the candidate is recorded 'skipped' with this reason."""

    reason: str
    info: dict[str, Any] = field(default_factory=dict)


@dataclass
class Reuse:
    """Take another candidate's measurements instead of measuring (mask equivalence).

    `metrics` are added to the candidate; with a `reason` it is then recorded 'skipped'
    (evaluate items), without one it only gains the metrics (re-measure items)."""

    ref_id: int
    metrics: list[dict[str, Any]]
    info: dict[str, Any] = field(default_factory=dict)
    reason: str | None = None
    notes: list[Note] = field(default_factory=list)


class Proposer:
    """Base of every proposer: a study kind registers one by its `kind`."""

    kind: ClassVar[str] = ""

    @classmethod
    def from_config(cls, config) -> Proposer:
        raise NotImplementedError

    # -- the protocol --------------------------------------------------------------------------

    def restore(self, candidates: list[dict[str, Any]], description: dict[str, Any]
                ) -> list[Note]:
        """Rebuild the state from every recorded candidate (with metrics); return events to
        record (e.g. a description of the study)."""
        self.description = description
        self.candidates: dict[int, dict[str, Any]] = {}
        for c in proposed(candidates):
            self.tell(c)
        return []

    def ask(self) -> Round | None:
        raise NotImplementedError

    def tell(self, candidate: dict[str, Any]) -> None:
        self.candidates[candidate["id"]] = candidate

    # -- hooks with defaults -------------------------------------------------------------------

    def warm(self) -> list[str]:
        """Statistics the executor computes before the first job."""
        return []

    def todo(self, round: Round) -> list[Item]:
        """What to do in this round: by default its pending candidates, in proposal order."""
        return [Item(self.candidates[i]) for i in dict.fromkeys(round.ids)
                if self.candidates[i]["status"] == "pending"]

    def plan(self, item: Item) -> Job | Skip | Reuse:
        """What to do with `item`, from what is recorded now. Free of side effects: with
        several workers the loop plans an item ahead of its turn and again at its turn."""
        raise NotImplementedError

    def reuse(self, item: Item, result: CandidateResult) -> Reuse:
        """The executor found the pruned model equal to a measured one (`equivalent`)."""
        raise NotImplementedError(f"{type(self).__name__} asked for no equivalence check")

    def end_round(self, round: Round, items: list[Item]) -> list[Note]:
        return []

    def progress(self) -> float:
        done = sum(c["status"] != "pending" for c in self.candidates.values())
        return min(1.0, done / max(1, len(self.candidates)))

    def bar(self) -> tuple[str, int, int]:
        """(title, done, total) of the terminal progress bar."""
        done = sum(c["status"] != "pending" for c in self.candidates.values())
        return "candidates", done, len(self.candidates)

    def label(self, item: Item) -> str:
        """How events name the item's candidate: they start 'candidate {label}'."""
        return str(item.id)

    def where(self, item: Item) -> str:
        return f"before candidate {item.id}"

    def done_notes(self, item: Item, result: CandidateResult) -> list[Note]:
        return [Note(f"candidate {self.label(item)} done", candidate_id=item.id,
                     progress=self.progress())]

    def failed_notes(self, item: Item, result: CandidateResult) -> list[Note]:
        return [Note(f"candidate {self.label(item)} failed: {result.error_summary}",
                     level="error", candidate_id=item.id, progress=self.progress())]

    def next_pass(self) -> Proposer | None:
        """A second pass of the same loop (e.g. finalists), or None."""
        return None

    def finish(self) -> list[Note]:
        """Events once every pass is over (e.g. a summary)."""
        return []


def search_fitness(c: dict[str, Any]) -> float | None:
    """A recorded candidate's fitness (its ``ppl`` of role ``search``), None unless finite
    and positive."""
    from prunestudio.schema import SEARCH_ROLE

    v = next((m["value"] for m in c.get("metrics") or ()
              if m["name"] == "ppl" and m["role"] == SEARCH_ROLE), None)
    return v if v is not None and math.isfinite(v) and v > 0 else None


def task_accuracy(c: dict[str, Any]) -> float | None:
    """A recorded candidate's mean ``acc`` over its tasks, None without one."""
    from prunestudio.schema import TASK_ROLE

    accs = [m["value"] for m in c.get("metrics") or ()
            if m["role"] == TASK_ROLE and m["name"] == "acc" and math.isfinite(m["value"])]
    return sum(accs) / len(accs) if accs else None


def model_loaded(description: dict[str, Any]) -> str:
    return (f"model {description['model']} loaded in {description['timings']['load']:.1f}s on "
            f"{description['device']}")
