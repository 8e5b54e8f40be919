"""The one study loop: resume, cancel, status, events, failures and OOM for every study kind.

    status = run_study(store, study_id, proposer, executor)

1. candidates left 'running' by a killed run go back to 'pending' (partial metrics dropped);
   every resume leaves an event; the study is 'running';
2. the executor sets up (model, windows, statistics); a failure there fails the study;
3. per pass (the proposer, then `proposer.next_pass()`, e.g. a search's finalists): the
   proposer's state is rebuilt from the store, then round by round its proposals are recorded
   (pending) *before* any is evaluated, and each item of the round is planned, handed to the
   executor and recorded in one transaction (done / failed / skipped / metrics added);
   a cancel request is honoured before each item;
4. the proposers' closing events, the study 'finished'.

A failing candidate is recorded with its error (an out-of-memory error frees the CUDA cache in
the executor) and the study goes on; any other error fails the study and is re-raised. The
loop is the only writer of the store; proposers and executors return what to record.
"""

from __future__ import annotations

import logging
import os
import socket
import time

from prunestudio.engine.progress import Reporter
from prunestudio.engine.study.executor import Executor, Job, error_text
from prunestudio.engine.study.proposers.base import (
    Item,
    Note,
    PredictorFit,
    Proposer,
    Reuse,
    Skip,
)
from prunestudio.store import Store

log = logging.getLogger(__name__)


def worker_name() -> str:
    """This process as a worker: host:pid."""
    return f"{socket.gethostname()}:{os.getpid()}"


def resume_event(store: Store, study_id: int, worker: str, reset: list[int]) -> None:
    """Every resume leaves an event, whether or not a candidate was in flight."""
    pending = len(store.candidates(study_id, status="pending"))
    if reset:
        what = (f"{len(reset)} interrupted candidate(s) ({', '.join(map(str, reset))}) go back "
                "to pending and will be re-run")
    else:
        what = "no candidate was in flight"
    store.add_event(study_id, f"resumed by {worker}: {what}; {pending} pending")


def mark_study_failed(store: Store, study_id: int, exc: BaseException, what: str) -> None:
    """Record a study error as far as the store allows: when the store itself is what failed
    (disk full, read-only), the original error still reaches the user, not this one."""
    from prunestudio.store import StoreError

    try:
        store.set_study_status(study_id, "failed", error=error_text(exc))
        store.add_event(study_id, f"{what}: {type(exc).__name__}: {exc}", level="error")
    except StoreError as store_exc:
        log.warning("could not record the failure of study %s: %s", study_id, store_exc)


def run_study(store: Store, study_id: int, proposer: Proposer, executor: Executor, *,
              reporter: Reporter | None = None, worker: str | None = None,
              resumed: bool = False) -> str:
    """Run a recorded study to its end; return its final status (finished | cancelled)."""
    return _Loop(store, study_id, executor, reporter or Reporter(),
                 worker or worker_name()).run(proposer, resumed)


class _Loop:
    def __init__(self, store: Store, study_id: int, executor: Executor, reporter: Reporter,
                 worker: str) -> None:
        self.store, self.sid, self.executor = store, study_id, executor
        self.reporter, self.worker = reporter, worker

    def note(self, note: Note | PredictorFit) -> None:
        if isinstance(note, PredictorFit):
            self.store.add_predictor_fit(self.sid, round=note.round, target=note.target,
                                         payload=note.payload)
            return
        if note.console:
            self.reporter.message(note.message)
            return
        self.store.add_event(self.sid, note.message, level=note.level,
                             candidate_id=note.candidate_id, progress=note.progress)
        if note.level != "info":
            self.reporter.message(f"[{note.level}] {note.message}")

    def notes(self, notes: list[Note | PredictorFit]) -> None:
        for n in notes:
            self.note(n)

    def run(self, proposer: Proposer, resumed: bool) -> str:
        store, sid = self.store, self.sid
        reset = store.reset_running(sid)
        if resumed or reset:
            resume_event(store, sid, self.worker, reset)
        store.set_study_status(sid, "running")
        try:
            description = self.executor.setup(proposer.warm())
        except Exception as exc:
            mark_study_failed(store, sid, exc, "study failed before its first candidate")
            raise
        try:
            passes: list[Proposer] = []
            current: Proposer | None = proposer
            while current is not None:
                if self._pass(current, description) == "cancelled":
                    return "cancelled"
                passes.append(current)
                current = current.next_pass()
            for p in passes:
                self.notes(p.finish())
        except Exception as exc:  # candidate errors are caught per candidate: this is the study
            mark_study_failed(store, sid, exc, "study failed (fix the cause; `prunestudio run "
                              "--resume` continues where it stopped)")
            raise
        store.heartbeat(self.worker, study_id=sid, candidate_id=None)
        store.set_study_status(sid, "finished")
        self.note(Note("study finished", progress=1.0))
        return "finished"

    def _pass(self, p: Proposer, description: dict) -> str | None:
        store, sid = self.store, self.sid
        self.notes(p.restore(store.candidates(sid, with_metrics=True), description))
        title, done, total = p.bar()
        with self.reporter.task(title, total) as bar:
            bar(done, total)
            while (rnd := p.ask()) is not None:
                for prop in rnd.proposals:
                    cid, _ = store.add_candidate(sid, prop.spec, origin=prop.origin,
                                                 parents=list(prop.parents) or None,
                                                 generation=prop.generation)
                    rnd.ids.append(cid)
                    p.tell(store.candidate(cid))
                items = p.todo(rnd)
                for item in items:
                    reason = store.cancel_requested(sid)
                    if reason:
                        store.set_study_status(sid, "cancelled", error=reason)
                        self.note(Note(f"cancelled {p.where(item)}: {reason}", level="warning",
                                       progress=p.progress()))
                        return "cancelled"
                    self._item(p, item)
                    _, done, total = p.bar()
                    bar(done, total)
                self.notes(p.end_round(rnd, items))
        return None

    def _item(self, p: Proposer, item: Item) -> None:
        store, cid = self.store, item.id
        decision = p.plan(item)
        if isinstance(decision, Skip):
            store.skip_candidate(cid, reason=decision.reason, info=decision.info)
            p.tell(store.candidate(cid))
            return
        evaluate = item.mode == "evaluate"
        if evaluate:
            if not store.start_candidate(cid, worker=self.worker):
                p.tell(store.candidate(cid))
                return  # another worker took it
            store.heartbeat(self.worker, study_id=self.sid, candidate_id=cid)
        t0 = time.perf_counter()
        if isinstance(decision, Job):
            result = self.executor.run(decision)
            if result.status == "equivalent":
                decision = p.reuse(item, result)
            elif result.status == "failed":
                if evaluate:
                    store.fail_candidate(cid, error=result.error, timings=result.timings,
                                         info=result.info)
                    p.tell(store.candidate(cid))
                self.notes(p.failed_notes(item, result))
                return
            else:
                if evaluate:
                    store.finish_candidate(cid, metrics=result.metrics, timings=result.timings,
                                           info={**result.info, **decision.done_info})
                else:
                    store.add_metrics(cid, result.metrics)
                p.tell(store.candidate(cid))
                self.notes(p.done_notes(item, result))
                return
        self._reuse(p, item, decision, t0)

    def _reuse(self, p: Proposer, item: Item, reuse: Reuse, t0: float) -> None:
        """Record measurements taken from an equivalent candidate. For an evaluated item: the
        metrics, then status 'skipped' — a crash between the two leaves it 'running', and
        resume resets it (dropping the metrics) and redoes it."""
        store, cid = self.store, item.id
        store.add_metrics(cid, reuse.metrics)
        if reuse.reason is not None:
            info = {**reuse.info, "seconds": time.perf_counter() - t0}
            store.skip_candidate(cid, reason=reuse.reason, info=info)
        p.tell(store.candidate(cid))
        self.notes(reuse.notes)
