"""What a study recorded, reduced to what must not depend on how many workers ran it, and an
executor that hands results back out of order (the loop's reorder logic, without Ray)."""

from __future__ import annotations

import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from prunestudio.engine.study.executor import (
    Completion,
    InProcessExecutor,
    Job,
    Ticket,
    WorkerRow,
)
from prunestudio.store import open_store

# measured wall-clock figures: they differ from one run to the next in any one process too
TIMED_METRICS = {"latency_ms", "tokens_per_s"}


def study_records(db: Path, study_id: int) -> list[tuple[Any, ...]]:
    """Every candidate in order: index, spec hash, origin, parents, generation, status, error
    or skip reason, its metrics (identity and value, to the last digit) and the info keys
    that carry results (expression, mask hash, equivalence)."""
    with open_store(db, readonly=True) as store:
        cands = store.candidates(study_id, with_metrics=True)
    out = []
    for c in cands:
        info = c.get("info") or {}
        metrics = sorted((m["name"], m["role"], m["fidelity"], m["dataset"], m["seqlen"],
                          m["value"]) for m in c["metrics"] if m["name"] not in TIMED_METRICS)
        kept = {k: info.get(k) for k in ("expression", "mask_hash", "equivalent_to",
                                         "reused_from", "label", "evaluation")}
        error = (c.get("error") or "").split("\n")[0]
        out.append((c["idx"], c["spec_hash"], c["origin"], c.get("parents"), c["generation"],
                    c["status"], error, metrics, kept))
    return out


class ReorderingExecutor:
    """`slots` jobs in flight in this process: `wait` runs everything submitted and hands the
    completions back last-submitted first, the worst order for a loop that must record in
    proposal order. `lose` names candidates whose worker 'dies' on every attempt."""

    def __init__(self, inner: InProcessExecutor, slots: int = 3,
                 lose: Sequence[int] = ()) -> None:
        self.inner, self.slots, self.lose = inner, slots, set(lose)
        self.queued: list[tuple[Ticket, Job]] = []
        self.submitted: list[int] = []  # candidate ids in submission order
        self.most_in_flight = 0  # the most jobs submitted and not yet handed back
        self.tickets = 0

    def setup(self, warm=()):
        return self.inner.setup(warm)

    def workers(self) -> list[WorkerRow]:
        return [WorkerRow(f"fake/w{i}", "host", 1, {"device": "cpu"})
                for i in range(self.slots)]

    def idle_worker(self) -> str:
        busy = {t.worker for t, _ in self.queued}
        return next(f"fake/w{i}" for i in range(self.slots) if f"fake/w{i}" not in busy)

    def submit(self, job: Job) -> Ticket:
        assert len(self.queued) < self.slots, "the loop overfilled the slots"
        self.tickets += 1
        ticket = Ticket(self.tickets, self.idle_worker())
        self.queued.append((ticket, job))
        self.submitted.append(job.candidate_id)
        self.most_in_flight = max(self.most_in_flight, len(self.queued))
        return ticket

    def wait(self, timeout=None) -> list[Completion]:
        from prunestudio.engine.study.executor import CandidateResult

        out = []
        for ticket, job in reversed(self.queued):
            if job.candidate_id in self.lose:
                result = CandidateResult("lost", error="ActorDiedError: killed (test)")
            else:
                result = self.inner.run(job)
            out.append(Completion(ticket, result, time.time()))
        self.queued = []
        return out

    def close(self) -> None:
        self.inner.close()
