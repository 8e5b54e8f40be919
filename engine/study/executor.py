"""The Executor seam: a job (JSON) goes out, a result (JSON) comes back, never a model object.

    executor.setup(warm)       -> description     # once: model, windows, statistics; JSON
    executor.slots                                # how many jobs may be in flight at once
    executor.submit(job)       -> Ticket          # start a job on a free worker
    executor.wait(timeout)     -> [Completion]    # jobs that ended ([] when the timeout passed)
    executor.workers()         -> [WorkerRow]     # what each worker is and runs on (the store's
                                                  # `workers` rows, written by the driver)
    executor.close()

A `Job` names one recorded candidate: its canonical spec, the measurements to run (by name,
with settings), whether to hash the pruned zero pattern and which hashes are already known
(the mask-equivalence hook: a known hash returns status ``equivalent`` before any measurement),
and info the driver already knows. A `CandidateResult` carries status (done | failed |
equivalent | lost), metric records, timings, info, the error text and `equivalent_to`; ``lost``
means the worker process died while running the job (the loop re-queues it).

The worker keeps its model, windows, statistics and pristine weights loaded between jobs
(`StudyContext`); the driver (`study.loop`) is the only writer of the store.
`InProcessExecutor` runs one job at a time in this process (`slots` = 1: `wait` runs it);
`prunestudio.engine.study.ray_executor.RayExecutor` runs one `InProcessExecutor` per Ray actor
(one per GPU, or CPU actors with a thread budget each) and keeps several jobs in flight.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Protocol

import torch
from prunestudio.engine.methods import ShapeChangingMethod, get_method
from prunestudio.engine.methods.base import ShapeInfo
from prunestudio.engine.models.loading import LoadedModel
from prunestudio.engine.progress import Reporter
from prunestudio.engine.pruning import PruneResult, WeightSnapshot, prune_model
from prunestudio.engine.study.context import StudyContext, input_identity, prepare
from prunestudio.engine.study.measurements import MeasureContext, make_measurement

from prunestudio.schema.spec import CandidateSpec
from prunestudio.schema.study_file import StudyConfig


@dataclass
class Job:
    """One candidate to prune and measure (JSON-able: `to_dict` / `from_dict`)."""

    candidate_id: int
    spec: dict[str, Any]  # canonical CandidateSpec
    measurements: list[dict[str, Any]]  # [{"name": ..., "settings": {...}}], in order
    hash_masks: bool = False  # record info.mask_hash (zero pattern of the pruned weights)
    equivalent_masks: dict[str, int] = field(default_factory=dict)  # known hash -> candidate
    info: dict[str, Any] = field(default_factory=dict)  # recorded with the result
    done_info: dict[str, Any] = field(default_factory=dict)  # recorded only when done

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Job:
        return cls(**data)


@dataclass
class CandidateResult:
    """What comes back from a worker (JSON-able)."""

    status: str  # done | failed | equivalent
    metrics: list[dict[str, Any]] = field(default_factory=list)
    timings: dict[str, float] = field(default_factory=dict)
    info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None  # type, message and traceback tail
    error_summary: str | None = None  # "Type: message", for the event
    equivalent_to: int | None = None
    out_of_memory: bool = False
    worker: dict[str, Any] | None = None  # host, pid, device of the worker that ran it

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CandidateResult:
        return cls(**data)


@dataclass(frozen=True)
class Ticket:
    """A submitted job: `id` is unique per executor, `worker` the name of the worker that
    runs it (the store's ``candidates.worker`` and ``workers.name``)."""

    id: int
    worker: str


@dataclass
class Completion:
    ticket: Ticket
    result: CandidateResult
    received_at: float  # epoch seconds: when the driver got it (the candidate's finished_at)


@dataclass
class WorkerRow:
    """One worker as the store's ``workers`` table records it."""

    name: str
    host: str | None = None
    pid: int | None = None
    device: dict[str, Any] | None = None


class Executor(Protocol):
    slots: int

    def setup(self, warm: Sequence[str] = ()) -> dict[str, Any]:
        """Load what every job shares; warm the named statistics; return a JSON description
        (model, device, dtype, timings, identity, evaluation roles, search split)."""

    def idle_worker(self) -> str:
        """The name of the worker the next `submit` starts on (one is idle while fewer than
        `slots` jobs are in flight): the loop records the candidate running on it first."""

    def submit(self, job: Job) -> Ticket:
        """Start `job` on the idle worker (the loop keeps at most `slots` jobs in flight)."""

    def wait(self, timeout: float | None = None) -> list[Completion]:
        """Block until at least one submitted job ends (or `timeout` seconds pass: [])."""

    def workers(self) -> list[WorkerRow]: ...

    def close(self) -> None: ...


def device_info(lm: LoadedModel, role: str) -> dict[str, Any]:
    """What a worker runs on, for the store's ``workers.device`` (JSON): device, GPU name and
    memory (total, used now, peak), CPU threads, node, role (driver | ray actor)."""
    device = lm.device
    info: dict[str, Any] = {"device": str(device), "gpu": None, "memory_total": None,
                            "memory_used": None, "memory_peak": None,
                            "threads": torch.get_num_threads(), "node": socket.gethostname(),
                            "role": role}
    if device.type == "cuda" and torch.cuda.is_available():
        props = torch.cuda.get_device_properties(device)
        info.update(gpu=props.name, memory_total=int(props.total_memory),
                    memory_used=int(torch.cuda.memory_reserved(device)),
                    memory_peak=int(torch.cuda.max_memory_allocated(device)))
    return info


# -- pruning one candidate -------------------------------------------------------------------


@dataclass
class Pruned:
    """A candidate's pruned model: `lm` pruned in place (`result`, restore with the snapshot),
    or a new model from a shape-changing method (`shape`, the original left intact)."""

    lm: LoadedModel
    result: PruneResult | None = None
    shape: ShapeInfo | None = None
    info_key: str = "structured"

    def info(self, spec: CandidateSpec) -> dict[str, Any]:
        if self.shape is not None:
            return {self.info_key: self.shape.to_dict(),
                    "label": f"{spec.label} ({self.shape.realised_label})"}
        info: dict[str, Any] = {"stats_computed": self.result.stats_computed,
                                "block_ratios": self.result.block_ratios}
        if self.result.kind_ratios is not None:
            info["kind_ratios"] = self.result.kind_ratios
        if self.result.uncalibrated:
            info["uncalibrated_layers"] = self.result.uncalibrated
            info["warnings"] = self.result.warnings()
        return info


def prune_candidate(ctx: StudyContext, spec: CandidateSpec, reporter: Reporter | None = None,
                    snapshot: WeightSnapshot | None = None) -> Pruned:
    reporter = reporter or Reporter()
    method = get_method(spec.method)
    n_blocks = ctx.lm.adapter.num_blocks(ctx.lm.model)
    stats = ctx.stats_for(spec.calibration_samples)
    with reporter.task(f"prune {spec.label}", n_blocks) as bar:
        if isinstance(method, ShapeChangingMethod):
            lm, shape = method.prune(ctx.lm, spec, stats, progress=bar)
            pruned = Pruned(lm, shape=shape, info_key=method.info_key)
        else:
            pruned = Pruned(ctx.lm, result=prune_model(ctx.lm, spec, stats, snapshot,
                                                       progress=bar))
    if spec.recovery is not None:  # a recovered candidate is its pruned model, then trained
        from prunestudio.engine.recovery import recover_pruned

        recover_pruned(ctx, pruned.lm, spec, reporter)
    return pruned


def pruned_model(ctx: StudyContext, spec: CandidateSpec, reporter: Reporter | None = None,
                 snapshot: WeightSnapshot | None = None):
    """Prune per `spec`: returns the 3-tuple (its LoadedModel, PruneResult or None, shape info
    (StructuredInfo) or None). In-place methods prune `ctx.lm` (restore with the snapshot);
    shape-changing ones return a new model and leave `ctx.lm` as it was."""
    pruned = prune_candidate(ctx, spec, reporter, snapshot)
    return pruned.lm, pruned.result, pruned.shape


def error_text(exc: BaseException) -> str:
    tail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:])
    return f"{type(exc).__name__}: {exc}\n\n{tail}".strip()


def run_job(ctx: StudyContext, job: Job, reporter: Reporter | None = None) -> CandidateResult:
    """Prune, (hash,) measure, restore. Raises on any failure (`InProcessExecutor.run` turns
    it into a failed result); `timings` and `info` gathered so far ride on the exception."""
    from prunestudio.engine.search.fitness_reuse import zero_pattern_hash

    reporter = reporter or Reporter()
    spec = CandidateSpec.model_validate(job.spec)
    measurements = [make_measurement(m["name"], m.get("settings")) for m in job.measurements]
    timings: dict[str, float] = {}
    info: dict[str, Any] = {**job.info, "label": spec.label, **input_identity(ctx)}
    t_start = time.perf_counter()
    try:
        try:
            t0 = time.perf_counter()
            pruned = prune_candidate(ctx, spec, reporter, ctx.snapshot)
            timings["prune"] = time.perf_counter() - t0
            info.update(pruned.info(spec))
            if job.hash_masks:
                t0 = time.perf_counter()
                info["mask_hash"] = zero_pattern_hash(pruned.lm)
                timings["mask_hash"] = time.perf_counter() - t0
                ref = job.equivalent_masks.get(info["mask_hash"])
                if ref is not None:  # the same pruned model was measured: say so, measure not
                    info["timings"] = timings  # (restore's seconds are added below)
                    return CandidateResult("equivalent", [], timings, info, equivalent_to=ref)
            mctx = MeasureContext(ctx, spec, pruned, reporter, job.candidate_id)
            metrics = []
            for m in measurements:
                if not m.applies(mctx):
                    continue
                t0 = time.perf_counter()
                metrics += m.measure(pruned.lm, mctx)
                if m.timing:
                    timings[m.timing] = timings.get(m.timing, 0.0) + time.perf_counter() - t0
            del pruned
        finally:
            t0 = time.perf_counter()
            ctx.snapshot.restore()
            timings["restore"] = time.perf_counter() - t0
    except Exception as exc:
        timings["total"] = time.perf_counter() - t_start
        exc.job_timings, exc.job_info = timings, info  # type: ignore[attr-defined]
        raise
    timings["total"] = time.perf_counter() - t_start
    return CandidateResult("done", metrics, timings, info)


class InProcessExecutor:
    """Runs jobs in this process on one loaded `StudyContext`, one at a time: `submit` keeps
    the job, `wait` runs it."""

    slots = 1

    def __init__(self, config: StudyConfig, *, reporter: Reporter | None = None,
                 lm: LoadedModel | None = None, ctx: StudyContext | None = None,
                 name: str | None = None, role: str = "driver") -> None:
        self.config, self.reporter, self._lm, self.ctx = config, reporter or Reporter(), lm, ctx
        self.name, self.role = name, role
        self._queued: tuple[Ticket, Job] | None = None
        self._tickets = 0

    def setup(self, warm: Sequence[str] = ()) -> dict[str, Any]:
        if self.ctx is None:
            self.ctx = prepare(self.config, self.reporter, self._lm)
        ctx = self.ctx
        if self.config.is_search and ctx.search_split is None:
            from prunestudio.engine.study.measurements.fitness import cut_search_split

            ctx.search_split = cut_search_split(self.config, ctx)
        if warm:
            self._warm(warm)
        split = ctx.search_split
        return {
            "model": ctx.lm.description, "device": str(ctx.lm.device),
            "dtype": str(ctx.lm.dtype).removeprefix("torch."), "timings": dict(ctx.timings),
            "identity": input_identity(ctx),
            "evaluations": [{"role": ev.role, "fidelity": ev.fidelity} for ev in ctx.evaluations],
            "search_split": None if split is None else {
                "label": split.windows.spec.label(), "offset": split.windows.spec.offset,
                "n": split.windows.n, "seqlen": split.windows.seqlen},
        }

    def _warm(self, warm: Sequence[str]) -> None:
        """Compute (or load from the disk cache) the statistics every candidate reads."""
        stats = self.ctx.stats
        before = len(stats.computed)
        t0 = time.perf_counter()
        self.reporter.message("statistics of the dense model (X, G: computed once, then read "
                              "from the disk cache) ...")
        for what in warm:
            if what == "dense_hessians":  # the leaf D reads H (with X, in one pass)
                stats.dense_layer_stats(want_hessian=True)
                continue
            if what not in ("dense_layer_stats", "block_inputs", "gradients"):
                raise ValueError(f"unknown statistics {what!r}")
            getattr(stats, what)()
        self.ctx.timings["statistics"] = time.perf_counter() - t0
        self.ctx.timings["statistics_computed"] = float(len(stats.computed) - before)

    def idle_worker(self) -> str:
        return self.name or ""

    def submit(self, job: Job) -> Ticket:
        if self._queued is not None:
            raise RuntimeError("InProcessExecutor runs one job at a time: wait() for it first")
        self._tickets += 1
        ticket = Ticket(self._tickets, self.name or "")
        self._queued = (ticket, job)
        return ticket

    def wait(self, timeout: float | None = None) -> list[Completion]:
        if self._queued is None:
            return []
        (ticket, job), self._queued = self._queued, None
        result = self.run(job)
        return [Completion(ticket, result, time.time())]

    def workers(self) -> list[WorkerRow]:
        device = None if self.ctx is None else device_info(self.ctx.lm, self.role)
        return [WorkerRow(self.name or "", socket.gethostname(), os.getpid(), device)]

    def run(self, job: Job) -> CandidateResult:
        """Run `job` now (a failure becomes a failed result: one candidate never stops a
        study)."""
        job = Job.from_dict(job.to_dict())  # what a remote worker would get
        try:
            return run_job(self.ctx, job, self.reporter)
        except Exception as exc:  # one failing candidate never stops the study
            oom = isinstance(exc, torch.cuda.OutOfMemoryError)
            if oom:
                torch.cuda.empty_cache()
            return CandidateResult("failed", [], getattr(exc, "job_timings", {}),
                                   getattr(exc, "job_info", dict(job.info)),
                                   error=error_text(exc),
                                   error_summary=f"{type(exc).__name__}: {exc}",
                                   out_of_memory=oom)

    def close(self) -> None:
        self.ctx = None
