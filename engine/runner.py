"""The study runner: every candidate of a study pruned, evaluated and recorded, resumably.

Per study: the model is loaded once, the calibration and evaluation windows are cut once, dense
statistics are computed once (and cached on disk), and a pristine copy of the prunable weights
is kept. Per candidate: prune in place → evaluate every evaluation set → record metrics and
status in one transaction → restore only the layers the candidate touched.

A candidate that raises is recorded as failed (with its error) and the study goes on. A killed
study resumes with `run_study(..., resume=<id or name>)`: candidates left 'running' go back to
'pending' (their partial metrics dropped), finished ones are skipped, nothing is duplicated
because candidates are keyed by their spec hash.
"""

from __future__ import annotations

import logging
import os
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from prunestudio.engine.calibration import StatsCache, calibration_hash
from prunestudio.engine.data.windows import Windows, build_windows, check_disjoint
from prunestudio.engine.evaluate.perplexity import perplexity
from prunestudio.engine.models.loading import LoadedModel, load_model
from prunestudio.engine.progress import Reporter
from prunestudio.engine.pruning import PruneResult, WeightSnapshot, prune_model
from prunestudio.engine.spec import CandidateSpec
from prunestudio.engine.studies.config import StudyConfig, TasksSection, parse_config
from prunestudio.store import Heartbeat, Store, open_store, task_metric_title

log = logging.getLogger(__name__)


@dataclass
class EvalWindows:
    role: str
    fidelity: str
    windows: Windows
    batch_size: int


@dataclass
class StudyContext:
    """Everything loaded once per study and shared by its candidates."""

    lm: LoadedModel
    calibration: Windows
    evaluations: list[EvalWindows]
    stats: StatsCache
    snapshot: WeightSnapshot
    timings: dict[str, float] = field(default_factory=dict)
    tasks: TasksSection | None = None  # lm-eval accuracy after the perplexities
    search_split: EvalWindows | None = None  # searches: the fitness windows (cut once)


@dataclass
class CandidateOutcome:
    metrics: list[dict[str, Any]]
    timings: dict[str, float]
    info: dict[str, Any]


def cut_windows(config: StudyConfig, tokenizer) -> tuple[Windows, list[EvalWindows]]:
    """Calibration and evaluation windows; evaluation text never overlaps calibration text."""
    calibration = build_windows(config.calibration, tokenizer)
    evaluations = []
    for ev in config.evaluation:
        windows = build_windows(ev.windows, tokenizer)
        check_disjoint(calibration, windows)
        evaluations.append(EvalWindows(ev.role, ev.fidelity, windows, ev.batch_size))
    return calibration, evaluations


def prepare(config: StudyConfig, reporter: Reporter | None = None,
            lm: LoadedModel | None = None) -> StudyContext:
    """Load the model (unless given) and cut the windows: the once-per-study work."""
    reporter = reporter or Reporter()
    timings: dict[str, float] = {}
    if lm is None:
        reporter.message(f"loading model {config.model.source!r} ...")
        lm = load_model(config.model.source, device=config.model.device, dtype=config.model.dtype)
    timings["load"] = lm.load_seconds
    t0 = time.perf_counter()
    calibration, evaluations = cut_windows(config, lm.tokenizer)
    timings["windows"] = time.perf_counter() - t0
    calib_key = calibration_hash(calibration.ids, calibration.tokens_hash)
    stats = StatsCache(lm, calibration.ids, calib_key)
    return StudyContext(lm, calibration, evaluations, stats, WeightSnapshot(lm), timings,
                        tasks=config.tasks)


def _sparsity_metrics(spec: CandidateSpec, result: PruneResult) -> list[dict[str, Any]]:
    if spec.method == "dense" or not result.layer_sparsity:
        return []
    values = list(result.layer_sparsity.values())
    protocol = {
        "target": spec.sparsity,
        "n_layers": len(values),
        "min_layer": min(values),
        "max_layer": max(values),
        "max_abs_error": result.max_target_error,
        "scope": "prunable linear layers (embeddings and lm_head excluded)",
    }
    return [
        {"name": "sparsity", "value": result.overall_sparsity, "role": "pruned_layers",
         "protocol": protocol},
        {"name": "sparsity_max_error", "value": result.max_target_error, "role": "pruned_layers",
         "protocol": {"target": spec.sparsity}},
    ]


def pruned_model(ctx: StudyContext, spec: CandidateSpec, reporter: Reporter | None = None,
                 snapshot: WeightSnapshot | None = None):
    """Prune per `spec`: returns (model to evaluate, its LoadedModel, PruneResult or None,
    StructuredInfo or None). Unstructured methods prune `ctx.lm` in place (restore with the
    snapshot); structured ones return a shrunk copy and leave `ctx.lm` as it was."""
    from prunestudio.engine.structured import is_structured, prune_structured

    reporter = reporter or Reporter()
    n_blocks = ctx.lm.adapter.num_blocks(ctx.lm.model)
    with reporter.task(f"prune {spec.label}", n_blocks) as bar:
        if is_structured(spec):
            lm, info = prune_structured(ctx.lm, spec, ctx.stats, progress=bar)
            return lm, None, info
        result = prune_model(ctx.lm, spec, ctx.stats, snapshot, progress=bar)
        return ctx.lm, result, None


def input_identity(ctx: StudyContext) -> dict[str, str]:
    """What every candidate records of its inputs (checked on resume, export and eval)."""
    return {"model_fingerprint": ctx.lm.fingerprint,
            "calibration_tokens_hash": ctx.calibration.tokens_hash}


def evaluate_candidate(ctx: StudyContext, spec: CandidateSpec,
                       reporter: Reporter | None = None) -> CandidateOutcome:
    """Prune, evaluate, restore. Raises on any failure (the caller records it)."""
    from prunestudio.engine.evaluate.efficiency import efficiency_metrics

    reporter = reporter or Reporter()
    timings: dict[str, float] = {}
    info: dict[str, Any] = {"label": spec.label, **input_identity(ctx)}
    try:
        t0 = time.perf_counter()
        lm, result, structured = pruned_model(ctx, spec, reporter, ctx.snapshot)
        timings["prune"] = time.perf_counter() - t0
        if structured is not None:
            metrics = structured.metrics()
            info["structured"] = structured.to_dict()
            info["label"] = f"{spec.label} ({structured.realised_label})"
        else:
            metrics = _sparsity_metrics(spec, result)
            info["stats_computed"] = result.stats_computed
            info["block_ratios"] = result.block_ratios
        t0 = time.perf_counter()
        for ev in ctx.evaluations:
            with reporter.task(f"ppl {ev.role}", ev.windows.n) as bar:
                ppl = perplexity(lm.model, ev.windows, lm.device, ev.batch_size, bar)
            metrics.append(ppl.metric(fidelity=ev.fidelity, role=ev.role, windows=ev.windows))
        timings["evaluate"] = time.perf_counter() - t0
        if ctx.tasks is not None:
            t0 = time.perf_counter()
            metrics += task_accuracy(lm, ctx.tasks, reporter)
            timings["tasks"] = time.perf_counter() - t0
        if structured is not None or spec.method == "dense":
            # Size and speed change only when the model shrinks: dense is their reference.
            t0 = time.perf_counter()
            seqlen = ctx.evaluations[0].windows.seqlen
            metrics += efficiency_metrics(lm.model, lm.adapter, seqlen=seqlen)
            timings["efficiency"] = time.perf_counter() - t0
        del lm
    finally:
        t0 = time.perf_counter()
        ctx.snapshot.restore()
        timings["restore"] = time.perf_counter() - t0
    return CandidateOutcome(metrics, timings, info)


def task_accuracy(lm: LoadedModel, tasks: TasksSection,
                  reporter: Reporter | None = None) -> list[dict[str, Any]]:
    """lm-eval accuracy of the in-memory (pruned) model: one metric record per task and
    metric (acc, acc_norm) with its protocol."""
    from prunestudio.engine.evaluate.tasks import evaluate_tasks, task_metrics

    reporter = reporter or Reporter()
    with reporter.task(f"lm-eval {', '.join(tasks.names)}"
                       + (f" (limit {tasks.limit})" if tasks.limit is not None else "")):
        results = evaluate_tasks(lm.model, lm.tokenizer, tasks.names, limit=tasks.limit,
                                 num_fewshot=tasks.num_fewshot, batch_size=tasks.batch_size,
                                 progress_bars=False)
    return task_metrics(results)


def _error_text(exc: BaseException) -> str:
    tail = "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)[-3:])
    return f"{type(exc).__name__}: {exc}\n\n{tail}".strip()


def _summary(metrics: list[dict[str, Any]]) -> str:
    return ", ".join([f"{m['role']} {m['name']} {m['value']:.3f}" for m in metrics
                      if m["name"] == "ppl"]
                     + [f"{task_metric_title(m['dataset'], 'acc')} {m['value']:.3f}"
                        for m in metrics if m["role"] == "task" and m["name"] == "acc"])


class StudyRunner:
    """Runs one recorded study to its end, through the store's write path."""

    def __init__(self, store: Store, study_id: int, config: StudyConfig,
                 reporter: Reporter | None = None, lm: LoadedModel | None = None, *,
                 ctx: StudyContext | None = None, resumed: bool = False) -> None:
        self.store, self.study_id, self.config = store, study_id, config
        self.reporter = reporter or Reporter()
        self.worker = worker_name()
        self._lm = lm
        self.ctx = ctx  # prepared before the study was created (validate first, create after)
        self.resumed = resumed

    def _event(self, message: str, *, level: str = "info", candidate_id: int | None = None,
               progress: float | None = None) -> None:
        self.store.add_event(self.study_id, message, level=level, candidate_id=candidate_id,
                             progress=progress)
        if level != "info":
            self.reporter.message(f"[{level}] {message}")

    def enqueue(self) -> list[int]:
        """Record every candidate of the config (idempotent: existing specs keep their id)."""
        ids = []
        for spec in self.config.candidate_specs():
            origin = "baseline" if spec.method == "dense" else "grid"
            cid, _ = self.store.add_candidate(self.study_id, spec.canonical(), origin=origin)
            ids.append(cid)
        return ids

    def run(self) -> str:
        """Run the pending candidates; return the study's final status."""
        store, sid = self.store, self.study_id
        reset = store.reset_running(sid)
        self.enqueue()
        if self.resumed or reset:
            resume_event(store, sid, self.worker, reset)
        store.set_study_status(sid, "running")
        try:
            ctx = self.ctx or prepare(self.config, self.reporter, self._lm)
        except Exception as exc:
            mark_study_failed(store, sid, exc, "study failed before its first candidate")
            raise
        self._event(f"model {ctx.lm.description} loaded in {ctx.timings['load']:.1f}s on "
                    f"{ctx.lm.device} ({str(ctx.lm.dtype).removeprefix('torch.')})")
        candidates = store.candidates(sid)
        total = len(candidates)
        todo = [c for c in candidates if c["status"] == "pending"]
        done = total - len(todo)
        with self.reporter.task("candidates", total) as bar:
            bar(done, total)
            for cand in todo:
                reason = store.cancel_requested(sid)
                if reason:
                    store.set_study_status(sid, "cancelled", error=reason)
                    self._event(f"cancelled before candidate {cand['id']}: {reason}",
                                level="warning", progress=done / total)
                    return "cancelled"
                self._run_one(ctx, cand, done, total)
                done += 1
                bar(done, total)
        store.heartbeat(self.worker, study_id=sid, candidate_id=None)
        store.set_study_status(sid, "finished")
        self._event("study finished", progress=1.0)
        return "finished"

    def _run_one(self, ctx: StudyContext, cand: dict[str, Any], done: int, total: int) -> None:
        store, cid = self.store, cand["id"]
        if not store.start_candidate(cid, worker=self.worker):
            return  # another worker took it
        store.heartbeat(self.worker, study_id=self.study_id, candidate_id=cid)
        progress = min(1.0, (done + 1) / max(1, total))
        t0 = time.perf_counter()
        try:
            spec = CandidateSpec.model_validate(cand["spec"])
            outcome = evaluate_candidate(ctx, spec, self.reporter)
        except Exception as exc:  # a failing candidate never stops the study
            if isinstance(exc, torch.cuda.OutOfMemoryError):
                torch.cuda.empty_cache()
            store.fail_candidate(cid, error=_error_text(exc),
                                 timings={"total": time.perf_counter() - t0})
            self._event(f"candidate {cid} failed: {type(exc).__name__}: {exc}",
                        level="error", candidate_id=cid, progress=progress)
            return
        t_record = time.perf_counter()
        outcome.timings["total"] = t_record - t0
        store.finish_candidate(cid, metrics=outcome.metrics, timings=outcome.timings,
                               info=outcome.info)
        outcome.timings["record"] = time.perf_counter() - t_record
        self._event(f"candidate {cid} {outcome.info['label']}: {_summary(outcome.metrics)}",
                    candidate_id=cid, progress=progress)
        self._warn_same_structure(cid, outcome.info)
        self.reporter.message(f"  {cid:>4} {outcome.info['label']:<22} "
                              f"{_summary(outcome.metrics)}")

    def _warn_same_structure(self, cid: int, info: dict[str, Any]) -> None:
        """Two specs of one study that realise the same structure are one model measured twice
        (e.g. two ratios rounding to the same number of heads): say so."""
        key = (info.get("structured") or {}).get("structure_key")
        if not key:
            return
        twins = [c["id"] for c in self.store.candidates(self.study_id, status="done")
                 if c["id"] != cid and ((c.get("info") or {}).get("structured") or {}
                                        ).get("structure_key") == key]
        if twins:
            self._event(f"candidate {cid} {info.get('label')} realises the same structure as "
                        f"candidate(s) {', '.join(map(str, twins))}: the same model under two "
                        "specs (the realised ratios are in their metrics)", level="warning",
                        candidate_id=cid)


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
        store.set_study_status(study_id, "failed", error=_error_text(exc))
        store.add_event(study_id, f"{what}: {type(exc).__name__}: {exc}", level="error")
    except StoreError as store_exc:
        log.warning("could not record the failure of study %s: %s", study_id, store_exc)


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


def make_runner(store: Store, study_id: int, config: StudyConfig,
                reporter: Reporter | None = None, lm: LoadedModel | None = None, *,
                ctx: StudyContext | None = None, resumed: bool = False):
    """The runner of the study's kind: `StudyRunner` (grid) or `SearchRunner` (gp, random)."""
    if config.is_search:
        from prunestudio.engine.search.runner import SearchRunner

        return SearchRunner(store, study_id, config, reporter, lm, ctx=ctx, resumed=resumed)
    return StudyRunner(store, study_id, config, reporter, lm, ctx=ctx, resumed=resumed)


def check_runnable(config: StudyConfig, ctx: StudyContext) -> None:
    """Every check that needs the loaded model but no candidate: window lengths against the
    model's context, N:M widths, structured ratios and options, the search split. Raises a
    ValueError naming the problem (the CLI's exit 2) before anything is recorded."""
    from prunestudio.engine.models.loading import check_context
    from prunestudio.engine.preflight import check_specs

    check_context(ctx.lm, ctx.calibration.seqlen, "calibration")
    for ev in ctx.evaluations:
        check_context(ctx.lm, ev.windows.seqlen, f"evaluation {ev.role!r}")
    if config.is_search:
        from prunestudio.engine.search.runner import cut_search_split

        split = cut_search_split(config, ctx)
        check_context(ctx.lm, split.windows.seqlen, "search split")
        ctx.search_split = split
        specs = [config.search.baseline_spec(m) for m in config.search.baselines]
        specs.append(config.search.candidate_spec("W"))  # the pattern every proposal uses
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


def run_study(config: StudyConfig | None, store_path: str | Path, *, name: str | None = None,
              resume: str | int | None = None, reporter: Reporter | None = None,
              lm: LoadedModel | None = None, allow_changed_inputs: bool = False,
              lock_timeout: float = 30.0) -> tuple[int, str]:
    """Create (or resume) a study in the store at `store_path` and run it.

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
    from prunestudio.engine.models.loading import validate_model_options

    reporter = reporter or Reporter()
    study_id: int | None = None
    study_name: str | None = None
    with sigterm_as_interrupt(), open_store(store_path, timeout=lock_timeout) as store:
        try:
            study = None
            if resume is not None:
                study = store.get_study(resume)
                config = parse_config(study["config"], f"(study {study['name']} in {store_path})")
            elif config is None:
                raise ValueError("run_study needs a config or a study to resume")
            else:
                _check_name_free(store, name or config.study.name)
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
            runner = make_runner(store, study_id, config, reporter, lm, ctx=ctx,
                                 resumed=study is not None)
            store.remove_dead_workers(study_id)  # rows of runners killed on this host
            # a thread with its own connection beats every few seconds, so a study whose
            # process died (kill -9) shows as stale in `studies` and the TUI
            with Heartbeat(store.path, runner.worker, study_id, timeout=lock_timeout):
                return study_id, runner.run()
        except KeyboardInterrupt as exc:
            signame = signal_name(exc)
            detail = ""
            if study_id is not None:
                with signals_deferred():
                    detail = _record_interrupt(store, study_id, signame)
            raise StudyInterrupted(signame, study_id, study_name, str(store_path),
                                   detail) from None


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
