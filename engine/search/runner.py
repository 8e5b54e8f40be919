"""Runs a gp / random study to its budget, every candidate recorded, resumable after kill -9.

Phases (each resumable; a restart skips what is recorded):

1. **prepare**: model loaded once, windows cut once (search split disjoint from calibration and
   from every evaluation set — checked), dense statistics computed once (disk-cached).
2. **baselines** (`search.baselines`): e.g. Wanda at the search's settings, evaluated on the
   search split and the full evaluation sets, origin ``baseline``.
3. **search**: generation by generation, the strategy's proposals are recorded (pending, with
   generation, origin, parents) *before* any is evaluated; each is then evaluated (or reuses the
   fitness of a mask-equivalent candidate, or fails) in one transaction. Stops at the budget of
   real evaluations, after `iterations` generations, or at the candidate cap.
4. **finalists**: the `finalists` best distinct metrics by search fitness are re-evaluated on
   the [[evaluation]] sets (fidelity full, held-out text), metrics added to the same candidate.
5. **summary**: an event with real evaluations, reused fitness (the fraction of evaluations
   saved), failures and evaluations per minute.

Calibration of search candidates defaults to ``dense``: every candidate prunes from the dense
model's statistics, computed once, instead of a layer-by-layer forward per candidate — recorded
in each spec (``calibration.mode``) and in an event.
"""

from __future__ import annotations

import time
from typing import Any

import torch
from prunestudio.engine.data.windows import WindowError, build_windows, check_disjoint
from prunestudio.engine.evaluate.perplexity import perplexity
from prunestudio.engine.models.loading import LoadedModel
from prunestudio.engine.progress import Reporter
from prunestudio.engine.pruning import prune_model
from prunestudio.engine.runner import (
    EvalWindows,
    StudyContext,
    _error_text,
    _sparsity_metrics,
    input_identity,
    mark_study_failed,
    prepare,
    resume_event,
    worker_name,
)
from prunestudio.engine.search import make_strategy
from prunestudio.engine.search.fitness import (
    check_fitness,
    reused_metric,
    zero_pattern_hash,
)
from prunestudio.engine.search.state import BASELINE, Individual, SearchHistory, saved_fraction
from prunestudio.engine.spec import CandidateSpec
from prunestudio.engine.studies.config import SEARCH_ROLE, StudyConfig
from prunestudio.engine.symbolic import parse, rank_key
from prunestudio.store import Store


def cut_search_split(config: StudyConfig, ctx: StudyContext) -> EvalWindows:
    """The search split's windows, checked disjoint from calibration and every evaluation set."""
    settings = config.search
    windows = build_windows(settings.split, ctx.lm.tokenizer)
    pairs = [("calibration", ctx.calibration)] + [
        (f"evaluation set {ev.role!r}", ev.windows) for ev in ctx.evaluations]
    for what, other in pairs:
        try:
            check_disjoint(other, windows)
        except WindowError as exc:
            raise WindowError(f"search.split overlaps the {what}: {exc}") from None
    return EvalWindows(SEARCH_ROLE, "proxy", windows, settings.batch_size)


def _metric_fields(m: dict[str, Any]) -> dict[str, Any]:
    keys = ("name", "value", "dataset", "split", "seqlen", "n_samples", "fidelity", "role",
            "protocol")
    return {k: m.get(k) for k in keys}


class SearchRunner:
    """Runs one recorded gp / random study through the store's write path."""

    def __init__(self, store: Store, study_id: int, config: StudyConfig,
                 reporter: Reporter | None = None, lm: LoadedModel | None = None, *,
                 ctx: StudyContext | None = None, resumed: bool = False) -> None:
        if not config.is_search or config.search is None:
            raise ValueError(f"study kind {config.study.kind!r} is not a search")
        self.store, self.study_id, self.config = store, study_id, config
        self.settings = config.search
        self.kind = config.study.kind
        self.strategy = make_strategy(self.kind, self.settings, config.study.seed)
        self.reporter = reporter or Reporter()
        self.worker = worker_name()
        self._lm = lm
        self.ctx = ctx  # prepared (and checked) before the study was created
        self.resumed = resumed
        self.budget = self.settings.real_budget
        self.history = SearchHistory()
        self.search_split: EvalWindows | None = None

    # -- plumbing ------------------------------------------------------------------------------

    def _event(self, message: str, *, level: str = "info", candidate_id: int | None = None,
               progress: float | None = None) -> None:
        self.store.add_event(self.study_id, message, level=level, candidate_id=candidate_id,
                             progress=progress)
        if level != "info":
            self.reporter.message(f"[{level}] {message}")

    def _progress(self) -> float:
        return min(1.0, self.history.real_evaluations / max(1, self.budget))

    def _cancelled(self, where: str) -> bool:
        reason = self.store.cancel_requested(self.study_id)
        if reason:
            self.store.set_study_status(self.study_id, "cancelled", error=reason)
            self._event(f"cancelled {where}: {reason}", level="warning",
                        progress=self._progress())
        return bool(reason)

    def _refresh(self, candidate_id: int) -> Individual:
        ind = Individual.from_candidate(self.store.candidate(candidate_id))
        self.strategy.tell(self.history, ind)
        return ind

    # -- the study -----------------------------------------------------------------------------

    def run(self) -> str:
        store, sid = self.store, self.study_id
        reset = store.reset_running(sid)
        if self.resumed or reset:
            resume_event(store, sid, self.worker, reset)
        store.set_study_status(sid, "running")
        try:
            ctx = self.ctx or prepare(self.config, self.reporter, self._lm)
            self.search_split = ctx.search_split or cut_search_split(self.config, ctx)
            self._warm_statistics(ctx)
        except Exception as exc:
            mark_study_failed(store, sid, exc, "study failed before its first candidate")
            raise
        try:
            self._describe(ctx)
            self.history = SearchHistory.from_store(store, sid)
            for phase in (self._baselines, self._search, self._finalists):
                if phase(ctx) == "cancelled":
                    return "cancelled"
            self._summary()
        except Exception as exc:  # candidate errors are caught per candidate: this is the study
            mark_study_failed(store, sid, exc, "study failed (fix the cause; `prunestudio run "
                              "--resume` continues where it stopped)")
            raise
        store.heartbeat(self.worker, study_id=sid, candidate_id=None)
        store.set_study_status(sid, "finished")
        return "finished"

    def _warm_statistics(self, ctx: StudyContext) -> None:
        """Compute (or load from the disk cache) the statistics every candidate reads."""
        leaves = set(self.settings.leaves)
        before = len(ctx.stats.computed)
        t0 = time.perf_counter()
        self.reporter.message("statistics of the dense model (X, G: computed once, then read "
                              "from the disk cache) ...")
        if "X" in leaves or self.settings.baselines:
            if self.settings.calibration == "dense":
                ctx.stats.dense_layer_stats()
            else:
                ctx.stats.block_inputs()
        if "G" in leaves:
            ctx.stats.gradients()
        ctx.timings["statistics"] = time.perf_counter() - t0
        ctx.timings["statistics_computed"] = float(len(ctx.stats.computed) - before)

    def _describe(self, ctx: StudyContext) -> None:
        s, split = self.settings, self.search_split
        w = split.windows
        self._event(
            f"model {ctx.lm.description} loaded in {ctx.timings['load']:.1f}s on {ctx.lm.device}; "
            f"statistics ready in {ctx.timings['statistics']:.1f}s "
            f"({'computed' if ctx.timings['statistics_computed'] else 'from cache'})")
        self._event(
            f"{self.kind} search, seed {self.config.study.seed}: budget {self.budget} real "
            f"evaluations, population {s.population}, {s.iterations} iterations × "
            f"{s.offspring} offspring" + (f", top-k {s.top_k}, tournament {s.tournament_size}, "
                                          f"p_mutation {s.p_mutation}" if self.kind == "gp"
                                          else "")
            + f"; fitness = PPL on {w.spec.label()} tokens from {w.spec.offset} ({w.n} × "
            f"{w.seqlen}, proxy) at {s.sparsity:.0%} {s.pattern}; calibration {s.calibration}"
            + (" (dense-model statistics computed once; no forward pass per candidate)"
               if s.calibration == "dense" else " (a layer-by-layer forward per candidate)")
            + f"; equivalence {s.equivalence}")

    # -- evaluation pieces ---------------------------------------------------------------------

    def _search_ppl(self, ctx: StudyContext) -> dict[str, Any]:
        ev = self.search_split
        with self.reporter.task("ppl search split", ev.windows.n) as bar:
            ppl = perplexity(ctx.lm.model, ev.windows, ctx.lm.device, ev.batch_size, bar)
        return ppl.metric(fidelity="proxy", role=SEARCH_ROLE, windows=ev.windows)

    def _full_ppl(self, ctx: StudyContext, extra: dict[str, Any]) -> list[dict[str, Any]]:
        out = []
        for ev in ctx.evaluations:
            with self.reporter.task(f"ppl {ev.role}", ev.windows.n) as bar:
                ppl = perplexity(ctx.lm.model, ev.windows, ctx.lm.device, ev.batch_size, bar)
            m = ppl.metric(fidelity=ev.fidelity, role=ev.role, windows=ev.windows)
            m["protocol"].update(extra)
            out.append(m)
        return out

    def _prune(self, ctx: StudyContext, spec: CandidateSpec, timings: dict[str, float]):
        t0 = time.perf_counter()
        n_blocks = ctx.lm.adapter.num_blocks(ctx.lm.model)
        with self.reporter.task(f"prune {spec.label}", n_blocks) as bar:
            result = prune_model(ctx.lm, spec, ctx.stats, ctx.snapshot, progress=bar)
        timings["prune"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        mask_hash = zero_pattern_hash(ctx.lm)
        timings["mask_hash"] = time.perf_counter() - t0
        return result, mask_hash

    def _restore(self, ctx: StudyContext, timings: dict[str, float]) -> None:
        t0 = time.perf_counter()
        ctx.snapshot.restore()
        timings["restore"] = time.perf_counter() - t0

    def _fail(self, cand_id: int, exc: Exception, timings: dict[str, float],
              info: dict[str, Any], label: str) -> None:
        if isinstance(exc, torch.cuda.OutOfMemoryError):
            torch.cuda.empty_cache()
        self.store.fail_candidate(cand_id, error=_error_text(exc), timings=timings, info=info)
        self._event(f"candidate {label} failed: {type(exc).__name__}: {exc}", level="error",
                    candidate_id=cand_id, progress=self._progress())

    # -- phase 2: baselines --------------------------------------------------------------------

    def _baselines(self, ctx: StudyContext) -> str | None:
        for method in self.settings.baselines:
            spec = self.settings.baseline_spec(method)
            cid, _ = self.store.add_candidate(self.study_id, spec.canonical(), origin=BASELINE)
            if self.store.candidate(cid)["status"] != "pending":
                self._refresh(cid)
                continue
            if self._cancelled(f"before baseline {spec.label}"):
                return "cancelled"
            if not self.store.start_candidate(cid, worker=self.worker):
                continue
            timings: dict[str, float] = {}
            t0 = time.perf_counter()
            info: dict[str, Any] = {"label": spec.label, **input_identity(ctx)}
            try:
                try:
                    result, mask_hash = self._prune(ctx, spec, timings)
                    info["mask_hash"] = mask_hash
                    t1 = time.perf_counter()
                    metrics = _sparsity_metrics(spec, result) + [self._search_ppl(ctx)]
                    metrics += self._full_ppl(ctx, {"stage": "baseline"})
                    timings["evaluate"] = time.perf_counter() - t1
                finally:
                    self._restore(ctx, timings)
            except Exception as exc:
                timings["total"] = time.perf_counter() - t0
                self._fail(cid, exc, timings, info, f"{cid} (baseline {spec.label})")
                self._refresh(cid)
                continue
            timings["total"] = time.perf_counter() - t0
            self.store.finish_candidate(cid, metrics=metrics, timings=timings, info=info)
            self._event(f"candidate {cid} (baseline {spec.label}): " + ", ".join(
                f"{m['role']} {m['value']:.3f}" for m in metrics if m["name"] == "ppl"),
                candidate_id=cid)
            self._refresh(cid)
        return None

    # -- phase 3: the search -------------------------------------------------------------------

    def _stop_reason(self, generation: int) -> str | None:
        if self.history.real_evaluations >= self.budget:
            return f"budget of {self.budget} real evaluations reached"
        if generation >= self.settings.iterations:
            return f"{self.settings.iterations} iterations done"
        if len(self.history.search()) >= self.settings.candidate_cap:
            return f"candidate cap {self.settings.candidate_cap} reached"
        return None

    def _record_generation(self, generation: int) -> int:
        """Record the strategy's proposals of `generation` (idempotent: a resumed run asks
        again and gets the same, already recorded, proposals). Returns how many it proposed."""
        proposals = self.strategy.ask(self.history, generation)
        room = self.settings.candidate_cap - len(self.history.search(before=generation))
        for p in proposals[:max(0, room)]:
            spec = self.settings.candidate_spec(p.expression)
            cid, created = self.store.add_candidate(
                self.study_id, spec.canonical(), origin=p.origin,
                parents=list(p.parents) or None, generation=generation)
            if created or cid not in {i.id for i in self.history.individuals}:
                self._refresh(cid)
        return len(proposals)

    def _search(self, ctx: StudyContext) -> str | None:
        last = self.history.last_generation()
        generation = 0 if last is None else last
        with self.reporter.task(f"{self.kind} search (real evaluations)", self.budget) as bar:
            bar(self.history.real_evaluations, self.budget)
            while True:
                n_proposed = self._record_generation(generation)
                todo = [i for i in self.history.generation(generation) if i.status == "pending"]
                if not todo and n_proposed == 0 and not self.history.generation(generation):
                    self._event(f"generation {generation}: no new distinct metric could be "
                                "proposed; the search stops", level="warning")
                    break
                for ind in todo:
                    if self._cancelled(f"before candidate {ind.id}"):
                        return "cancelled"
                    if self.history.real_evaluations >= self.budget:
                        self.store.skip_candidate(
                            ind.id, reason=f"not evaluated: the budget of {self.budget} real "
                            "evaluations was reached", info={"budget": self.budget})
                        self._refresh(ind.id)
                        continue
                    self._evaluate(ctx, ind)
                    bar(self.history.real_evaluations, self.budget)
                if todo:
                    self._generation_event(generation)
                reason = self._stop_reason(generation)
                if reason:
                    self._event(f"search stops: {reason}", progress=self._progress())
                    break
                generation += 1
        return None

    def _generation_event(self, generation: int) -> None:
        counts = self.history.counts()
        best = self.history.best()
        pop = self.history.population(before=generation + 1, size=self.settings.population)
        best_text = (f"best search PPL {best.fitness:.3f} {best.expression} (candidate {best.id})"
                     if best else "no fitness yet")
        self._event(
            f"generation {generation}: {best_text}; population {len(pop)}; real evaluations "
            f"{counts['evaluated']}/{self.budget}, reused {counts['reused']} "
            f"({saved_fraction(counts):.0%} saved), failed {counts['failed']}, duplicates "
            f"rejected {self.strategy.last_rejected}", progress=self._progress())

    def _evaluate(self, ctx: StudyContext, ind: Individual) -> None:
        store, cid = self.store, ind.id
        if not store.start_candidate(cid, worker=self.worker):
            return
        store.heartbeat(self.worker, study_id=self.study_id, candidate_id=cid)
        t0 = time.perf_counter()
        timings: dict[str, float] = {}
        equivalence = self.settings.equivalence
        tree = parse(ind.expression)
        info: dict[str, Any] = {"expression": ind.expression, "canonical_key": ind.key,
                                "rank_key": rank_key(tree),
                                "calibration": self.settings.calibration,
                                **input_identity(ctx)}
        label = f"{ind.id} (gen {ind.generation}, {ind.origin}) {ind.expression}"
        try:
            spec = self.settings.candidate_spec(ind.expression)
            info["label"] = spec.label
            if equivalence == "rank_key+mask":
                ref = self.history.equivalent_by_rank_key(info["rank_key"])
                if ref is not None:
                    self._reuse(cid, ref, "rank_key", ref.mask_hash, info, t0, label)
                    return
            try:
                result, mask_hash = self._prune(ctx, spec, timings)
                info["mask_hash"] = mask_hash
                ref = (self.history.equivalent_by_hash(mask_hash)
                       if equivalence != "off" else None)
                if ref is not None:
                    info["timings"] = timings
                    self._restore(ctx, timings)
                    self._reuse(cid, ref, "mask", mask_hash, info, t0, label)
                    return
                t1 = time.perf_counter()
                fitness = self._search_ppl(ctx)
                check_fitness(fitness["value"], f"candidate {ind.id} {ind.expression}")
                timings["evaluate"] = time.perf_counter() - t1
            finally:
                if ctx.snapshot.dirty:
                    self._restore(ctx, timings)
        except Exception as exc:  # one failing candidate never stops the search
            timings["total"] = time.perf_counter() - t0
            self._fail(cid, exc, timings, info, label)
            self._refresh(cid)
            return
        timings["total"] = time.perf_counter() - t0
        metrics = _sparsity_metrics(spec, result) + [fitness]
        store.finish_candidate(cid, metrics=metrics, timings=timings,
                               info={**info, "evaluation": "real"})
        self._refresh(cid)
        self._event(f"candidate {label}: search PPL {fitness['value']:.3f}", candidate_id=cid,
                    progress=self._progress())
        self.reporter.message(f"  g{ind.generation:<3} {ind.origin:<9} "
                              f"{fitness['value']:>10.3f}  {ind.expression}")

    def _reuse(self, cid: int, ref: Individual, how: str, mask_hash: str | None,
               info: dict[str, Any], t0: float, label: str) -> None:
        """Record `cid` as mask-equivalent to the evaluated candidate `ref`: its fitness metric
        (protocol marks the reuse) then status 'skipped' with the link in info. A crash between
        the two leaves it 'running'; resume resets it (dropping the metric) and redoes it."""
        source = next(m for m in self.store.candidate(ref.id)["metrics"]
                      if m["name"] == "ppl" and m["role"] == SEARCH_ROLE)
        self.store.add_metrics(cid, [reused_metric(_metric_fields(source), ref.id, how,
                                                   mask_hash)])
        info = {**info, "equivalent_to": ref.id, "equivalence": how, "mask_hash": mask_hash,
                "evaluation": "reused", "seconds": time.perf_counter() - t0}
        self.store.skip_candidate(
            cid, reason=f"mask-equivalent to candidate {ref.id} ({ref.expression or ref.method}"
            f", by {'rank key' if how == 'rank_key' else 'identical pruned weights'}): fitness "
            "reused, not evaluated again", info=info)
        self._refresh(cid)
        self._event(f"candidate {label}: ≡ candidate {ref.id} by {how}, search PPL "
                    f"{ref.fitness:.3f} reused", candidate_id=cid, progress=self._progress())
        self.reporter.message(f"  g{self.history.get(cid).generation:<3} "
                              f"{self.history.get(cid).origin:<9} {'≡ ' + str(ref.id):>10}  "
                              f"{self.history.get(cid).expression}")

    # -- phase 4: finalists ---------------------------------------------------------------------

    def _finalists(self, ctx: StudyContext) -> str | None:
        n = self.settings.finalists
        if n == 0:
            return None
        finals = self.history.population(size=n)
        for rank, ind in enumerate(finals, 1):
            cand = self.store.candidate(ind.id)
            have = {(m["role"], m["fidelity"]) for m in cand["metrics"] if m["name"] == "ppl"}
            if all((ev.role, ev.fidelity) in have for ev in ctx.evaluations):
                continue
            if self._cancelled(f"before finalist {rank}"):
                return "cancelled"
            if self._reuse_full_metrics(ctx, ind, rank):
                continue
            timings: dict[str, float] = {}
            spec = CandidateSpec.model_validate(cand["spec"])
            try:
                try:
                    self._prune(ctx, spec, timings)
                    metrics = self._full_ppl(ctx, {"stage": "finalist", "finalist_rank": rank,
                                                   "selected_by": "search-split PPL"})
                finally:
                    self._restore(ctx, timings)
            except Exception as exc:
                self._event(f"finalist {rank} (candidate {ind.id}) failed on the evaluation "
                            f"sets: {type(exc).__name__}: {exc}", level="error",
                            candidate_id=ind.id)
                continue
            self.store.add_metrics(ind.id, metrics)
            self._event(f"finalist {rank}: candidate {ind.id} {ind.expression}: search PPL "
                        f"{ind.fitness:.3f} (proxy) → " + ", ".join(
                            f"{m['role']} {m['value']:.3f}" for m in metrics),
                        candidate_id=ind.id)
            self.reporter.message(f"finalist {rank}: {ind.expression}  search {ind.fitness:.3f}"
                                  + "".join(f"  {m['role']} {m['value']:.3f}" for m in metrics))
        return None

    def _reuse_full_metrics(self, ctx: StudyContext, ind: Individual, rank: int) -> bool:
        """A finalist whose pruned model equals one already measured on the evaluation sets
        (e.g. the Wanda seed and the Wanda baseline) takes those figures, marked as reused."""
        if not ind.mask_hash:
            return False
        wanted = {(ev.role, ev.fidelity) for ev in ctx.evaluations}
        for other in self.history.individuals:
            if other.id == ind.id or other.mask_hash != ind.mask_hash:
                continue
            full = [m for m in self.store.candidate(other.id)["metrics"]
                    if m["name"] == "ppl" and (m["role"], m["fidelity"]) in wanted]
            if {(m["role"], m["fidelity"]) for m in full} != wanted:
                continue
            metrics = []
            for m in full:
                m = _metric_fields(m)
                m["protocol"] = {**(m["protocol"] or {}), "stage": "finalist",
                                 "finalist_rank": rank, "selected_by": "search-split PPL",
                                 "reused_from": other.id, "equivalence": "mask",
                                 "mask_hash": ind.mask_hash}
                metrics.append(m)
            self.store.add_metrics(ind.id, metrics)
            self._event(f"finalist {rank}: candidate {ind.id} {ind.expression}: same pruned "
                        f"model as candidate {other.id}, its held-out figures reused: "
                        + ", ".join(f"{m['role']} {m['value']:.3f}" for m in metrics),
                        candidate_id=ind.id)
            return True
        return False

    # -- phase 5: summary -----------------------------------------------------------------------

    def _summary(self) -> None:
        counts = self.history.counts()
        cands = self.store.candidates(self.study_id)
        search_ids = {i.id for i in self.history.search()}
        seconds = sum((c["finished_at"] or 0) - (c["started_at"] or 0) for c in cands
                      if c["id"] in search_ids and c["started_at"] and c["finished_at"])
        rate = counts["evaluated"] / (seconds / 60) if seconds > 0 else 0.0
        best = self.history.best()
        self._event(
            f"search finished: {counts['candidates']} candidates, {counts['evaluated']} real "
            f"evaluations, {counts['reused']} fitness value(s) reused by mask equivalence "
            f"({saved_fraction(counts):.1%} of evaluations saved), {counts['failed']} failed, "
            f"{counts['skipped']} not evaluated; {rate:.2f} real evaluations per minute of "
            f"candidate time ({seconds / 60:.1f} min)"
            + (f"; best {best.expression} search PPL {best.fitness:.3f}" if best else ""),
            progress=1.0)
