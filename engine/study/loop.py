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

Parallel executors (`executor.slots` > 1, e.g. Ray actors) get the items of a round ahead of
their turn — *speculatively*, planned on what is recorded so far — but results are recorded
strictly in proposal order, like a CPU's reorder buffer: when an item's turn comes it is
planned again on everything recorded before it; the same job keeps its result (a pruned model
whose mask hash an earlier item of the round recorded in the meantime becomes ``equivalent``,
as it would have in one process), a different decision (a skip, a reuse, another job) drops the
early result. So N workers record exactly what one process records, in the same order.

A failing candidate is recorded with its error (an out-of-memory error frees the CUDA cache in
the executor) and the study goes on. A worker that dies mid-candidate (result ``lost``) is
recorded as an event and its candidate re-queued; a candidate that kills its worker
`MAX_LOST` times is recorded failed. Any other error fails the study and is re-raised. The
loop is the only writer of the store; proposers and executors return what to record.
"""

from __future__ import annotations

import logging
import os
import socket
import time
from dataclasses import dataclass

from prunestudio.engine.progress import Reporter
from prunestudio.engine.study.executor import (
    CandidateResult,
    Completion,
    Executor,
    Job,
    Ticket,
    error_text,
)
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

MAX_LOST = 2  # a candidate whose worker died this many times running it is recorded failed
BEAT_EVERY = 10.0  # seconds: refresh the executor's worker rows while waiting


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


@dataclass
class _Flight:
    """An item handed to the executor: its job, when it was planned (items recorded before it
    in the round), its ticket and, once back, its completion."""

    item: Item
    job: Job
    planned_after: int
    ticket: Ticket | None = None
    done: Completion | None = None
    lost: int = 0  # times its worker died running it
    orphan: bool = False  # superseded at its turn: the result is dropped when it comes back


def _same_work(a: Job, b: Job) -> bool:
    """The same job but for the known mask hashes (the loop applies the newer ones)."""
    da, db = a.to_dict(), b.to_dict()
    da.pop("equivalent_masks"), db.pop("equivalent_masks")
    return da == db


class _Loop:
    def __init__(self, store: Store, study_id: int, executor: Executor, reporter: Reporter,
                 worker: str) -> None:
        self.store, self.sid, self.executor = store, study_id, executor
        self.reporter, self.worker = reporter, worker
        self.slots = 1  # jobs in flight at once: the executor's, once it is set up
        self.inflight: dict[int, _Flight] = {}  # ticket id -> flight (orphans included)
        self.worker_rows: dict[str, dict] = {}  # executor workers: name -> host, pid, device
        self.last_beat = 0.0

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
        self.slots = max(1, int(self.executor.slots))
        self._record_workers()
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
        finally:
            self._forget_workers()
        store.heartbeat(self.worker, study_id=sid, candidate_id=None)
        store.set_study_status(sid, "finished")
        self.note(Note("study finished", progress=1.0))
        return "finished"

    # -- workers -------------------------------------------------------------------------------

    def _record_workers(self) -> None:
        """The executor's workers as rows of the store's ``workers`` table (the in-process
        executor's is this process: its row gains the device)."""
        for w in self.executor.workers():
            name = w.name or self.worker
            if name != self.worker:
                self.worker_rows[name] = {"host": w.host, "pid": w.pid, "device": w.device}
            self.store.heartbeat(name, study_id=self.sid, keep_candidate=True, host=w.host,
                                 pid=w.pid, device=w.device)
        self.last_beat = time.monotonic()

    def _worker_busy(self, name: str, candidate_id: int | None,
                     seen: dict | None = None) -> None:
        if name not in self.worker_rows:
            self.store.heartbeat(self.worker, study_id=self.sid, candidate_id=candidate_id)
            return
        row = self.worker_rows[name]
        if seen:  # a result tells which process ran it (a restarted actor has a new pid)
            row.update({k: seen[k] for k in ("host", "pid", "device") if seen.get(k)})
        self.store.heartbeat(name, study_id=self.sid, candidate_id=candidate_id,
                             host=row["host"], pid=row["pid"], device=row["device"])

    def _beat(self) -> None:
        if time.monotonic() - self.last_beat < BEAT_EVERY:
            return
        for name, row in self.worker_rows.items():
            self.store.heartbeat(name, study_id=self.sid, keep_candidate=True,
                                 host=row["host"], pid=row["pid"])
        self.last_beat = time.monotonic()

    def _forget_workers(self) -> None:
        from prunestudio.store import StoreError

        try:
            for name in self.worker_rows:
                self.store.remove_worker(name)
        except StoreError as exc:
            log.warning("could not remove the workers' rows: %s", exc)

    # -- a pass, a round -----------------------------------------------------------------------

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
                if self._round(p, items, bar) == "cancelled":
                    return "cancelled"
                self.notes(p.end_round(rnd, items))
        return None

    def _round(self, p: Proposer, items: list[Item], bar) -> str | None:
        """Record every item of a round in order; with several slots, later items run ahead
        (see the module's docstring)."""
        flights: dict[int, _Flight] = {}
        ahead = 0  # the next item to consider running ahead
        cancel: str | None = None
        for head, item in enumerate(items):
            if cancel is None:
                cancel = self.store.cancel_requested(self.sid) or None
            fl, decision = flights.pop(head, None), None
            if fl is not None and fl.planned_after != head:  # planned before items recorded
                fresh = p.plan(item)
                if isinstance(fresh, Job) and _same_work(fresh, fl.job):
                    fl.job = fresh
                else:
                    self._orphan(fl)
                    fl, decision = None, fresh
            if fl is None:
                if cancel:  # nothing of this item started: stop before it
                    return self._cancelled(p, item, cancel, flights)
                decision = decision if decision is not None else p.plan(item)
                if isinstance(decision, Job):
                    fl = self._dispatch(p, item, decision, head)
                    if fl is None:
                        continue  # another worker took it
            if cancel is None and self.slots > 1:
                ahead = self._run_ahead(p, items, flights, max(ahead, head + 1), head)
            if fl is None:
                self._decided(p, item, decision)
            else:
                self._record(p, fl, self._await(fl))
            _, done, total = p.bar()
            bar(done, total)
        if cancel:
            return self._cancelled(p, None, cancel, flights)
        return None

    def _run_ahead(self, p: Proposer, items: list[Item], flights: dict[int, _Flight],
                   start: int, head: int) -> int:
        """Hand later items of the round to free slots; return the next item to consider."""
        i = start
        while i < len(items) and len(self.inflight) < self.slots:
            item = items[i]
            if item.mode == "evaluate" and item.candidate.get("status") not in (None, "pending"):
                i += 1
                continue
            decision = p.plan(item)
            if isinstance(decision, Job):  # skips and reuses wait for their turn: no work
                fl = self._dispatch(p, item, decision, head)
                if fl is not None:
                    flights[i] = fl
            i += 1
        return i

    def _dispatch(self, p: Proposer, item: Item, job: Job,
                  planned_after: int) -> _Flight | None:
        """Mark an evaluated item running and submit its job (waiting for a free slot)."""
        while len(self.inflight) >= self.slots:
            self._collect()
        fl = _Flight(item, job, planned_after)
        if not self._submit(fl):
            p.tell(self.store.candidate(item.id))
            return None
        return fl

    def _submit(self, fl: _Flight) -> bool:
        """Mark an evaluated item running on the worker that will take it, then submit; False
        when the candidate is no longer pending (another runner took it)."""
        name = self.executor.idle_worker() or self.worker
        if fl.item.mode == "evaluate":
            if not self.store.start_candidate(fl.item.id, worker=name):
                return False
            self._worker_busy(name, fl.item.id)
        fl.ticket = self.executor.submit(fl.job)
        self.inflight[fl.ticket.id] = fl
        return True

    def _orphan(self, fl: _Flight) -> None:
        """Its result will not be recorded (its turn came with another decision, or a cancel):
        its candidate goes back to pending; a job still in flight is dropped when it ends."""
        fl.orphan = True
        if fl.item.mode == "evaluate":
            self.store.release_candidates([fl.item.id])

    def _collect(self, timeout: float | None = BEAT_EVERY) -> None:
        """Take what ended from the executor (a lost job is re-queued or failed)."""
        completions = self.executor.wait(timeout)
        self._beat()  # every few seconds, however busy: a long candidate's worker stays fresh
        for c in completions:
            fl = self.inflight.pop(c.ticket.id, None)
            if fl is None:
                continue
            name = c.ticket.worker or self.worker
            if name in self.worker_rows or name == self.worker:
                self._worker_busy(name, None, c.result.worker)
            if fl.orphan:
                continue
            if c.result.status == "lost":
                self._lost(fl, c)
            else:
                fl.done = c

    def _lost(self, fl: _Flight, c: Completion) -> None:
        fl.lost += 1
        cid, name = fl.item.id, c.ticket.worker
        first = (c.result.error or "the worker process died").strip().splitlines()[0]
        if fl.lost < MAX_LOST:
            self.note(Note(f"worker {name} died while running candidate {cid} ({first}); it is "
                           f"restarted and candidate {cid} re-queued (attempt {fl.lost + 1} of "
                           f"{MAX_LOST})", level="warning", candidate_id=cid))
            if fl.item.mode == "evaluate":
                self.store.release_candidates([cid])
            while len(self.inflight) >= self.slots:
                self._collect()
            self._submit(fl)
            return
        self.note(Note(f"worker {name} died while running candidate {cid} ({first}), "
                       f"{fl.lost} times: candidate {cid} is recorded failed", level="error",
                       candidate_id=cid))
        fl.done = Completion(c.ticket, CandidateResult(
            "failed", info=dict(fl.job.info),
            error=f"the worker process died {fl.lost} times while running this candidate "
                  f"(last: {name}): {c.result.error or 'no error reported'}",
            error_summary=f"WorkerDied: {first}"), c.received_at)

    def _await(self, fl: _Flight) -> Completion:
        while fl.done is None:
            self._collect()
        return fl.done

    def _cancelled(self, p: Proposer, item: Item | None, reason: str,
                   flights: dict[int, _Flight]) -> str:
        """Stop: work started ahead goes back to pending (recorded in order or not at all)."""
        for fl in flights.values():
            self._orphan(fl)
        self.store.set_study_status(self.sid, "cancelled", error=reason)
        where = p.where(item) if item is not None else "at the end of a round"
        self.note(Note(f"cancelled {where}: {reason}", level="warning", progress=p.progress()))
        return "cancelled"

    # -- recording -----------------------------------------------------------------------------

    def _decided(self, p: Proposer, item: Item, decision: Skip | Reuse) -> None:
        if isinstance(decision, Skip):
            self.store.skip_candidate(item.id, reason=decision.reason, info=decision.info)
            p.tell(self.store.candidate(item.id))
            return
        self._reuse(p, item, decision, time.perf_counter())

    def _record(self, p: Proposer, fl: _Flight, done: Completion) -> None:
        store, item, job, result = self.store, fl.item, fl.job, done.result
        cid, evaluate = item.id, item.mode == "evaluate"
        if result.status == "done" and job.hash_masks:  # an earlier item of the round pruned
            ref = job.equivalent_masks.get(result.info.get("mask_hash"))  # the same model
            if ref is not None:
                result = CandidateResult("equivalent", [], result.timings, result.info,
                                         equivalent_to=ref, worker=result.worker)
        if result.status == "equivalent":
            t0 = time.perf_counter() - float(result.timings.get("total", 0.0))
            self._reuse(p, item, p.reuse(item, result), t0)
        elif result.status == "failed":
            if evaluate:
                store.fail_candidate(cid, error=result.error, timings=result.timings,
                                     info=result.info, finished_at=done.received_at)
                p.tell(store.candidate(cid))
            self.notes(p.failed_notes(item, result))
        else:
            if evaluate:
                store.finish_candidate(cid, metrics=result.metrics, timings=result.timings,
                                       info={**result.info, **job.done_info},
                                       finished_at=done.received_at)
            else:
                store.add_metrics(cid, result.metrics)
            p.tell(store.candidate(cid))
            for warning in result.info.get("warnings", []):  # e.g. an expert no token reached
                self.note(Note(warning, level="warning", candidate_id=cid))
            self.notes(p.done_notes(item, result))

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
