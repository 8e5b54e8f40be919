"""Running a study from a config: validate first, create after, then the one study loop.

`launch_study(config, store_path, ...)` loads the model, cuts the windows and checks every spec
against the model *before* the study is recorded, then hands the recorded study to
`prunestudio.engine.study.loop.run_study` with the proposer of its kind (grid, gp, random)
and an in-process executor. Interrupts (Ctrl-C, SIGTERM) leave the study `interrupted`; a
resume checks the recorded model and text fingerprints. The loop, its seams and the
measurements live in `prunestudio.engine.study` (docs/loop.md); the names the CLI imports from
here are re-exported.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from prunestudio.engine.models.loading import LoadedModel
from prunestudio.engine.progress import Reporter
from prunestudio.engine.study.context import (
    EvalWindows,
    StudyContext,
    cut_windows,
    input_identity,
    prepare,
)
from prunestudio.engine.study.executor import (
    Executor,
    InProcessExecutor,
    Job,
    pruned_model,
    run_job,
)
from prunestudio.engine.study.loop import mark_study_failed, resume_event, worker_name
from prunestudio.engine.study.measurements.tasks import task_accuracy
from prunestudio.engine.study.proposers import make_proposer
from prunestudio.engine.study.proposers.grid import GRID_MEASUREMENTS
from prunestudio.store import Heartbeat, Store, open_store

if TYPE_CHECKING:
    from prunestudio.engine.study.ray_executor import WorkerPlan

from prunestudio.schema.spec import CandidateSpec
from prunestudio.schema.study_file import StudyConfig

log = logging.getLogger(__name__)

__all__ = [
    "CandidateOutcome", "EvalWindows", "StudyContext", "check_inputs_unchanged",
    "check_runnable", "cut_windows", "evaluate_candidate", "input_identity",
    "mark_study_failed", "prepare", "pruned_model", "resume_event", "run_recorded",
    "launch_study", "start_study", "task_accuracy", "worker_name",
]


@dataclass
class CandidateOutcome:
    metrics: list[dict[str, Any]]
    timings: dict[str, float]
    info: dict[str, Any]


def evaluate_candidate(ctx: StudyContext, spec: CandidateSpec,
                       reporter: Reporter | None = None) -> CandidateOutcome:
    """Prune, measure as a grid candidate, restore. Raises on any failure."""
    job = Job(0, spec.canonical(), [{"name": n} for n in GRID_MEASUREMENTS])
    result = run_job(ctx, job, reporter)
    return CandidateOutcome(result.metrics, result.timings, result.info)


def make_executor(config: StudyConfig, *, reporter: Reporter | None = None,
                  lm: LoadedModel | None = None, ctx: StudyContext | None = None,
                  worker: str | None = None, plan: WorkerPlan | None = None,
                  identity: dict[str, str] | None = None) -> Executor:
    """In this process (`plan` None), or on Ray actors (`plan`: how many, where; `identity`:
    the model and text fingerprints every actor must report)."""
    if plan is None:
        return InProcessExecutor(config, reporter=reporter, lm=lm, ctx=ctx, name=worker)
    from prunestudio.engine.study.ray_executor import RayExecutor

    return RayExecutor(config, plan, prefix=worker or worker_name(), reporter=reporter,
                       identity=identity)


def run_recorded(store: Store, study_id: int, config: StudyConfig,
                 reporter: Reporter | None = None, lm: LoadedModel | None = None, *,
                 ctx: StudyContext | None = None, resumed: bool = False,
                 worker: str | None = None, plan: WorkerPlan | None = None,
                 identity: dict[str, str] | None = None) -> str:
    """Run a recorded study (any kind) in this process, or on Ray workers (`plan`); return
    its final status."""
    from prunestudio.engine.study.loop import run_study as loop

    executor = make_executor(config, reporter=reporter, lm=lm, ctx=ctx, worker=worker,
                             plan=plan, identity=identity)
    try:
        return loop(store, study_id, make_proposer(config), executor, reporter=reporter,
                    worker=worker, resumed=resumed)
    finally:
        executor.close()


def start_study(store: Store, config: StudyConfig, name: str | None = None) -> int:
    """Record a new study for `config`; return its id.

    The budget is the number of candidates of a grid study, the number of real fitness
    evaluations of a search (gp / random)."""
    if config.is_search:
        budget = config.search.real_budget
    else:
        budget = len(config.candidate_specs())
        if not budget:
            raise ValueError("the study has no candidates: give grid.methods or [[candidates]]")
    return store.create_study(
        name=name or config.study.name, kind=config.study.kind, model=config.model.source,
        config=config.to_dict(), seed=config.study.seed, budget=budget,
    )


def check_runnable(config: StudyConfig, ctx: StudyContext) -> None:
    """Every check that needs the loaded model but no candidate: window lengths against the
    model's context, N:M widths, structured ratios and options, the search split. Raises a
    ValueError naming the problem (the CLI's exit 2) before anything is recorded."""
    from prunestudio.engine.models.loading import check_context
    from prunestudio.engine.preflight import check_specs, check_token_ids

    check_context(ctx.lm, ctx.calibration.seqlen, "calibration")
    check_token_ids(ctx.lm, ctx.calibration, "calibration")
    for ev in ctx.evaluations:
        check_context(ctx.lm, ev.windows.seqlen, f"evaluation {ev.role!r}")
        check_token_ids(ctx.lm, ev.windows, f"evaluation {ev.role!r}")
    if config.is_search:
        from prunestudio.engine.study.measurements.fitness import cut_search_split

        split = cut_search_split(config, ctx)
        check_context(ctx.lm, split.windows.seqlen, "search split")
        ctx.search_split = split
        if config.tpe is not None:  # every text of the objective, cut and checked now
            from prunestudio.engine.study.measurements.search_mean import search_parts

            for part in search_parts(ctx, list(config.tpe.splits), config.tpe.batch_size):
                check_context(ctx.lm, part.windows.seqlen, f"search split {part.windows.spec.label()}")
        specs = [config.search.baseline_spec(m) for m in config.search.baselines]
        specs.append(config.search.candidate_spec("W"))  # the pattern every proposal uses
        allocation = config.search.allocation
        if allocation.mode == "by_kind":  # the kinds every allocation names
            specs.append(config.search.candidate_spec(
                "W", {k: allocation.step for k in allocation.kinds}))
    else:
        specs = config.candidate_specs()
    check_specs(ctx.lm, specs)


def check_inputs_unchanged(store: Store, study: dict[str, Any], ctx: StudyContext, *,
                           allow: bool, action: str,
                           candidates: list[dict[str, Any]] | None = None) -> None:
    """Refuse to add results computed on another model or text than the recorded ones
    (IdentityMismatchError naming both fingerprints), unless `allow`: then a warning event.
    `candidates` (with metrics) whose records count; default: every candidate of the study."""
    from prunestudio.engine.identity import Identity, check_identity, recorded_identity

    if candidates is None:
        candidates = store.candidates(study["id"], with_metrics=True)
    recorded = recorded_identity(candidates)
    found = check_identity(recorded, Identity.of_context(ctx), model_source=study["model"],
                           action=action, allow=allow)
    if found and not store.readonly:
        store.add_event(study["id"], f"{action} with changed inputs (--allow-changed-inputs): "
                        + "; ".join(found), level="warning")


def launch_study(config: StudyConfig | None, store_path: str | Path, *, name: str | None = None,
              resume: str | int | None = None, reporter: Reporter | None = None,
              lm: LoadedModel | None = None, allow_changed_inputs: bool = False,
              lock_timeout: float = 30.0, plan: WorkerPlan | None = None
              ) -> tuple[int, str]:
    """Create (or resume) a study in the store at `store_path` and run it (on Ray workers
    with a `plan`: the driver validates, records and proposes; the actors evaluate).

    Validate first, create after: the model is loaded, the windows cut and every spec checked
    against the model before the study is recorded, so bad input leaves no `failed` study
    behind. With `resume`, the study's own recorded config is used and its recorded model and
    text fingerprints must match (unless `allow_changed_inputs`). Ctrl-C / SIGTERM leave the
    study `interrupted` and raise StudyInterrupted. Returns (study id, final status)."""
    from prunestudio.engine.interrupts import (
        StudyInterrupted,
        signal_name,
        signals_deferred,
        sigterm_as_interrupt,
    )
    from prunestudio.engine.models.adapters import layout_summary
    from prunestudio.engine.models.loading import validate_model_options

    reporter = reporter or Reporter()
    study_id: int | None = None
    study_name: str | None = None
    with sigterm_as_interrupt(), open_store(store_path, timeout=lock_timeout) as store:
        try:
            study = None
            if resume is not None:
                from prunestudio.engine.candidate_jobs import recorded_config

                study = store.get_study(resume)
                config = recorded_config(study)
            elif config is None:
                raise ValueError("launch_study needs a config or a study to resume")
            else:
                _check_name_free(store, name or config.study.name)
                config = _batch_for_workers(config, plan)
            validate_model_options(config.model.device, config.model.dtype)
            ctx = prepare(config, reporter, lm)
            check_runnable(config, ctx)
            if study is not None:
                check_inputs_unchanged(store, study, ctx, allow=allow_changed_inputs,
                                       action=f"resume study {study['name']}")
                study_id, study_name = study["id"], study["name"]
                store.clear_cancel(study_id)
            else:
                study_id = start_study(store, config, name)
                study_name = store.get_study(study_id)["name"]
                layout = layout_summary(ctx.lm.adapter, ctx.lm.model)
                if layout:
                    store.add_event(study_id, layout)
            worker = worker_name()
            store.remove_dead_workers(study_id)  # rows of runners killed on this host
            # a thread with its own connection beats every few seconds, so a study whose
            # process died (kill -9) shows as stale in `studies` and the TUI
            identity = input_identity(ctx)
            if plan is not None and ctx.lm.device.type == "cuda":
                ctx = None  # the actors need the GPUs: the driver only records
                _free_gpu_memory()
            with Heartbeat(store.path, worker, study_id, timeout=lock_timeout):
                status = run_recorded(store, study_id, config, reporter, ctx=ctx,
                                      resumed=study is not None, worker=worker, plan=plan,
                                      identity=identity)
                if status == "finished" and config.recovery is not None:
                    from prunestudio.engine.recovery import recover_candidates

                    ctx = ctx or prepare(config, reporter)
                    recover_candidates(store, study_id, config.recovery, ctx, reporter)
                return study_id, status
        except KeyboardInterrupt as exc:
            signame = signal_name(exc)
            detail = ""
            if study_id is not None:
                with signals_deferred():
                    detail = _record_interrupt(store, study_id, signame)
            raise StudyInterrupted(signame, study_id, study_name, str(store_path),
                                   detail) from None


def _batch_for_workers(config: StudyConfig, plan: WorkerPlan | None) -> StudyConfig:
    """A TPE study without `tpe.batch` asks one trial per worker of the run that creates it;
    the number is recorded with the config, so a resume (on any number of workers) asks the
    same trials."""
    if config.tpe is None or config.tpe.batch is not None:
        return config
    workers = 1 if plan is None else plan.workers
    return config.model_copy(update={"tpe": config.tpe.model_copy(update={"batch": workers})})


def _free_gpu_memory() -> None:
    """Once the driver's copy of the model (loaded to validate the study) is dropped, give its
    GPU memory back, so that the Ray workers have the GPUs to themselves."""
    import gc

    import torch

    gc.collect()
    torch.cuda.empty_cache()


def _check_name_free(store: Store, name: str | None) -> None:
    """A new study's name must be free: checked before the model loads (minutes on a big one)."""
    from prunestudio.store import StoreError

    if name is None:
        return
    try:
        existing = store.get_study(name)
    except StoreError:
        return
    raise StoreError(f"a study named {name!r} already exists (id {existing['id']}, "
                     f"{existing['status']}); choose another --name, or continue it with "
                     f"`prunestudio run --resume {name}`")


def _record_interrupt(store: Store, study_id: int, signame: str) -> str:
    """Put in-flight candidates back to pending, mark the study interrupted, add an event.
    Returns a clause for the user's message."""
    from prunestudio.store import StoreError

    try:
        reset = store.reset_running(study_id)
        status = store.get_study(study_id)["status"]
        if status in ("created", "running"):
            store.set_study_status(study_id, "interrupted", error=f"interrupted by {signame}")
        flight = (f"candidate(s) {', '.join(map(str, reset))} were in flight and go back to "
                  "pending" if reset else "no candidate was in flight")
        store.add_event(study_id, f"interrupted by {signame}: {flight}; `prunestudio run "
                        "--resume` continues where it stopped", level="warning")
        return f" ({flight})"
    except StoreError as exc:
        log.warning("could not record the interrupt of study %s: %s", study_id, exc)
        return f" (could not record it: {exc})"
