"""The accuracy-predictor search (kind ``predictor``; Pruning LLMs via Accuracy Predictor,
arXiv 2309.09507) over per-block structured pruning ratios, as rounds of the one loop.

Stages, each one round of the loop (settings: `[predictor]`, `schema.study_file.
PredictorSection`):

1. **reference**: the dense model (origin ``baseline``): search-split PPL, task accuracy (with
   [tasks]), the [[evaluation]] sets, and its prunable structure (`structure_layout`), from
   which the search space is built (`engine.predictor.space`);
2. **baselines** (origin ``baseline``): ``uniform`` (one group ratio in every free block,
   solved for the budget) and ``llm_pruner`` (LLM-Pruner's default range, blocks 4..n-3 of 32
   scaled to the model's depth, at the budget), measured like the reference;
3. **rounds** 0..R-1 (generation r, origin ``sample``): `samples_per_round` distinct
   architectures inside the round's space, every one within the parameter budget; each is
   pruned structurally (the `structured` method, `importance`) and measured (fitness, task
   accuracy). After the round LightGBM predictors of log search PPL and of accuracy are fitted
   on every measured sample (k-fold: R², Spearman, Kendall τ on held-out folds, out-of-fold
   predictions per candidate, gain importances) and the ranges of the `narrow_top` most
   important per-block features shrink to the values the predictor's best architectures take;
   each fit is recorded (`PredictorFit`, the store's ``predictor_fits``);
4. **select** (generation R, origin ``predictor``): the last predictor scores
   `candidates_scored` new architectures of the narrowed space; the `top_k` are measured, with
   their predictions in their info (predicted vs measured, recorded as target ``selection``);
5. **random** (origin ``baseline``, info ``baseline = "random"``): as many random
   architectures of the initial space as the search measured — the best-of-random baseline;
6. **final**: the winner (best measured search PPL of every search candidate; finalist rank 1)
   and the best random architecture are re-measured on the [[evaluation]] sets (fidelity full).

Every proposal is a pure function of (settings, seed, the recorded candidates of earlier
stages): LightGBM runs deterministically on one thread, so a resumed study re-derives the same
spaces, fits and proposals, and records nothing twice (a fit of the same round replaces its
row).
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
from prunestudio.engine.predictor.fit import MIN_TRAIN, Fit, fit_predictor, rank_correlations
from prunestudio.engine.predictor.space import Layout, SearchSpace, SpaceError
from prunestudio.engine.study.executor import CandidateResult, Job
from prunestudio.engine.study.proposers.base import (
    Item,
    Note,
    PredictorFit,
    Proposal,
    Proposer,
    Round,
    model_loaded,
    proposed,
    search_fitness,
    task_accuracy,
)

from prunestudio.schema import SEARCH_ROLE, TASK_ROLE
from prunestudio.schema.spec import CandidateSpec
from prunestudio.schema.study_file import PredictorSection

BASELINE, SAMPLE, PREDICTOR = "baseline", "sample", "predictor"
LOG_PPL, ACCURACY = "log_ppl", "accuracy"
_RNG_ROUND, _RNG_SCORE, _RNG_RANDOM = 1, 2, 3


def llm_pruner_blocks(n_blocks: int) -> tuple[int, int]:
    """LLM-Pruner's default pruned range (blocks 4..29 of LLaMA-7B's 32: [4, 30)) scaled to
    `n_blocks`: [round(n/8), n − round(n/16)), at least one block."""
    start = math.floor(4 * n_blocks / 32 + 0.5)
    end = n_blocks - math.floor(2 * n_blocks / 32 + 0.5)
    start = min(start, n_blocks - 1)
    return start, max(end, start + 1)


def _layout(c: dict[str, Any]) -> Layout | None:
    for m in c.get("metrics") or ():
        if m["name"] == "prunable_params" and m["role"] == "structure":
            return Layout.from_dict(m["protocol"]["layout"])
    return None


class PredictorSearch(Proposer):
    """See the module docstring."""

    kind = "predictor"

    def __init__(self, settings: PredictorSection, seed: int,
                 measurements: list[str] | None = None, tasks: bool = False) -> None:
        self.settings, self.seed = settings, seed
        self.tasks = tasks  # the study has [tasks]
        self.extra = [{"name": name} for name in measurements or ()]
        self.budget = settings.real_budget
        s = settings
        self.stages = (["reference"] + (["baselines"] if {"uniform", "llm_pruner"} & set(
            s.baselines) else []) + [f"round{r}" for r in range(s.rounds)] + ["select"]
            + (["random"] if "random" in s.baselines else []) + ["final"])
        self.candidates: dict[int, dict[str, Any]] = {}
        self.description: dict[str, Any] = {}
        self._reset()

    @classmethod
    def from_config(cls, config) -> PredictorSearch:
        return cls(config.predictor, config.study.seed, config.study.measurements,
                   tasks=config.tasks is not None)

    def _reset(self) -> None:
        self._pos = 0
        self._space0: SearchSpace | None = None
        self._spaces: dict[int, SearchSpace] = {}
        self._fits: dict[int, dict[str, Fit]] = {}
        self._narrowed: dict[int, list[dict[str, Any]]] = {}
        self._selection: list[dict[str, Any]] | None = None

    # -- state ---------------------------------------------------------------------------------

    def stage_of(self, c: dict[str, Any]) -> str:
        spec, gen = c["spec"], c.get("generation")
        if gen is not None:
            return f"round{gen}" if gen < self.settings.rounds else "select"
        if spec.get("method") == "dense":
            return "reference"
        opts = spec.get("options") or {}
        return "random" if opts.get("attention_ratios") is not None else "baselines"

    def restore(self, candidates, description) -> list[Note]:
        self.description = description
        self.candidates = {}
        self._reset()
        for c in proposed(candidates):
            self.tell(c)
        recorded = {self.stage_of(c) for c in self.candidates.values()}
        self._pos = max((i for i, st in enumerate(self.stages) if st in recorded), default=0)
        return self._describe()

    def _describe(self) -> list[Note]:
        s, d = self.settings, self.description
        w = d.get("search_split") or {}
        return [Note(f"{model_loaded(d)} ({d.get('dtype')})"),
                Note(f"predictor search, seed {self.seed}: remove {s.budget:.1%} ± "
                     f"{s.tolerance:.1%} of all parameters (whole units, {s.importance} "
                     f"importance); {s.rounds} rounds × {s.samples_per_round} architectures, "
                     f"then the predictor's top {s.top_k} of {s.candidates_scored} scored: "
                     f"budget {self.budget} real evaluations; keep the first {s.keep_first} and "
                     f"last {s.keep_last} blocks; ranges attention {list(s.attention_range)}, "
                     f"MLP {list(s.mlp_range)}, step {s.step}; fitness = PPL on "
                     f"{w.get('label')} ({w.get('n')} × {w.get('seqlen')}, proxy); baselines "
                     f"{', '.join(s.baselines) or 'none'}")]

    # -- the search space ----------------------------------------------------------------------

    def _dense(self) -> dict[str, Any] | None:
        return next((c for c in self.candidates.values() if c["spec"].get("method") == "dense"),
                    None)

    def space0(self) -> SearchSpace:
        if self._space0 is None:
            dense = self._dense()
            layout = _layout(dense) if dense is not None else None
            if layout is None:
                raise RuntimeError("the predictor search needs the dense model's structure "
                                   "(measurement structure_layout of the dense candidate), "
                                   "and it was not measured")
            s = self.settings
            try:
                self._space0 = SearchSpace.create(
                    layout, budget=s.budget, tolerance=s.tolerance, step=s.step,
                    attention_range=s.attention_range, mlp_range=s.mlp_range,
                    keep_first=s.keep_first, keep_last=s.keep_last, attention=s.attention,
                    mlp=s.mlp)
            except SpaceError as exc:
                raise SpaceError(f"[predictor]: {exc}") from None
        return self._space0

    def arch(self, c: dict[str, Any]) -> tuple[int, ...]:
        opts = c["spec"].get("options") or {}
        n = self.space0().layout.n_blocks
        return self.space0().from_ratios(opts.get("attention_ratios") or [0.0] * n,
                                         opts.get("mlp_ratios") or [0.0] * n)

    def _spec(self, k: tuple[int, ...]) -> dict[str, Any]:
        s = self.settings
        att, mlp = self.space0().ratios(k)
        return CandidateSpec(method="structured", options={
            "importance": s.importance, "attention_unit": s.attention_unit,
            "attention": s.attention, "mlp": s.mlp, "attention_ratios": att,
            "mlp_ratios": mlp}).canonical()

    def _baseline_spec(self, name: str) -> dict[str, Any]:
        s = self.settings
        n = self.space0().layout.n_blocks
        if name == "uniform":
            start, end = s.keep_first, n - s.keep_last
        else:
            start, end = llm_pruner_blocks(n)
        return CandidateSpec(method="structured", sparsity=s.budget, options={
            "importance": s.importance, "attention_unit": s.attention_unit,
            "attention": s.attention, "mlp": s.mlp, "ratio": "params", "block_start": start,
            "block_end": end}).canonical()

    def _in_stage(self, stage: str) -> list[dict[str, Any]]:
        return sorted((c for c in self.candidates.values() if self.stage_of(c) == stage),
                      key=lambda c: c["idx"])

    def _samples(self, up_to: int) -> list[dict[str, Any]]:
        """The measured samples of rounds ≤ up_to (the training set of that round's fit)."""
        return [c for c in sorted(self.candidates.values(), key=lambda c: c["idx"])
                if c.get("generation") is not None and c["generation"] <= up_to
                and c["origin"] == SAMPLE and c["status"] == "done" and search_fitness(c) is not None]

    def space(self, r: int) -> SearchSpace:
        """The space round r samples from: the initial one, narrowed after every earlier
        round (r = rounds: the space the predictor selects from)."""
        if r == 0:
            return self.space0()
        if r not in self._spaces:
            self._fit(r - 1)
        return self._spaces[r]

    def _fit(self, r: int) -> dict[str, Fit]:
        """The predictors fitted after round r, and the space of round r + 1 (memoised)."""
        if r in self._fits:
            return self._fits[r]
        space = self.space(r)
        train = self._samples(r)
        s = self.settings
        fits: dict[str, Fit] = {}
        X = space.features([self.arch(c) for c in train]) if train else None
        targets = {LOG_PPL: [math.log(search_fitness(c)) for c in train],
                   ACCURACY: [task_accuracy(c) for c in train]}
        for target, y in targets.items():
            if len(train) < MIN_TRAIN or any(v is None for v in y):
                continue
            fits[target] = fit_predictor(X, np.asarray(y), space.feature_names, target=target,
                                         params=s.lightgbm, num_boost_round=s.num_boost_round,
                                         kfold=s.kfold, seed=self.seed + r, base=s.base)
        nxt, changes = space, []
        if LOG_PPL in fits and s.narrow_top > 0:
            rng = np.random.default_rng([self.seed, r, _RNG_SCORE])
            scored = space.sample(rng, s.candidates_scored)
            pred = fits[LOG_PPL].predict(space.features(scored))
            ranked = [scored[i] for i in np.argsort(pred, kind="stable")]
            nxt, changes = space.narrow(fits[LOG_PPL].importance, ranked, top=s.narrow_top,
                                        elite=s.elite)
            try:  # a narrowed space whose whole units cannot meet the budget is not used
                nxt.sample(np.random.default_rng([self.seed, r + 1, _RNG_ROUND]), 1)
            except SpaceError:
                nxt, changes = space, [{"skipped": "no architecture of the narrowed space "
                                        "meets the budget; the space stays as it was"}]
        self._fits[r], self._spaces[r + 1], self._narrowed[r] = fits, nxt, changes
        return fits

    def predictions(self, fits: dict[str, Fit], space: SearchSpace,
                    ks: list[tuple[int, ...]]) -> dict[str, np.ndarray]:
        X = space.features(ks)
        return {t: f.predict(X) for t, f in fits.items()}

    # -- rounds --------------------------------------------------------------------------------

    @property
    def stage(self) -> str | None:
        return self.stages[self._pos] if self._pos < len(self.stages) else None

    def ask(self) -> Round | None:
        stage = self.stage
        if stage is None:
            return None
        if stage == "reference":
            return Round([Proposal(CandidateSpec(method="dense").canonical(), BASELINE)],
                         name=stage)
        if stage == "baselines":
            return Round([Proposal(self._baseline_spec(b), BASELINE)
                          for b in self.settings.baselines if b != "random"], name=stage)
        if stage.startswith("round"):
            r = int(stage.removeprefix("round"))
            seen = {self.arch(c) for c in self.candidates.values()
                    if c.get("generation") is not None and c["generation"] < r}
            ks = self.space(r).sample(np.random.default_rng([self.seed, r, _RNG_ROUND]),
                                      self.settings.samples_per_round, exclude=seen)
            return Round([Proposal(self._spec(k), SAMPLE, generation=r) for k in ks],
                         generation=r, n_proposed=len(ks), name=stage)
        if stage == "select":
            return Round([Proposal(self._spec(p["arch"]), PREDICTOR,
                                   generation=self.settings.rounds)
                          for p in self._select()], generation=self.settings.rounds,
                         name=stage)
        if stage == "random":
            seen = {self.arch(c) for c in self.candidates.values()
                    if c.get("generation") is not None}
            ks = self.space0().sample(np.random.default_rng([self.seed, 0, _RNG_RANDOM]),
                                      self.settings.n_random, exclude=seen)
            return Round([Proposal(self._spec(k), BASELINE) for k in ks], name=stage)
        return Round(name="final")

    def _select(self) -> list[dict[str, Any]]:
        """The predictor's top_k new architectures of the final space, with predictions."""
        if self._selection is None:
            R = self.settings.rounds
            fits = self._fit(R - 1)
            self._selection = []
            if LOG_PPL in fits:
                space = self.space(R)
                seen = {self.arch(c) for c in self.candidates.values()
                        if c.get("generation") is not None and c["generation"] < R}
                ks = space.sample(np.random.default_rng([self.seed, R, _RNG_SCORE]),
                                  self.settings.candidates_scored, exclude=seen)
                pred = self.predictions(fits, space, ks)
                order = np.argsort(pred[LOG_PPL], kind="stable")[:self.settings.top_k]
                for rank, i in enumerate(order, 1):
                    self._selection.append({
                        "arch": ks[i], "rank": rank, "scored": len(ks), "predictor_round": R - 1,
                        **{f"predicted_{t}": float(v[i]) for t, v in pred.items()}})
        return self._selection

    def todo(self, round: Round) -> list[Item]:
        if round.name != "final":
            return super().todo(round)
        wanted = self._wanted()
        out = []
        for rank, c in self._finals():
            have = {(m["role"], m["fidelity"]) for m in c.get("metrics") or ()
                    if m["name"] == "ppl"}
            if not wanted <= have or (self._final_tasks() and task_accuracy(c) is None):
                out.append(Item(c, mode="remeasure", rank=rank))
        return out

    def _final_tasks(self) -> bool:
        """Task accuracy is measured at the finals only (`accuracy_on = "finals"`)."""
        return self.tasks and self.settings.accuracy_on == "finals"

    def _wanted(self) -> set[tuple[str, str]]:
        return {(ev["role"], ev["fidelity"]) for ev in self.description.get("evaluations", [])}

    def winner(self) -> dict[str, Any] | None:
        """The best measured search candidate (search-split PPL; ties: the earlier)."""
        found = [(search_fitness(c), c["idx"], c) for c in self.candidates.values()
                 if c.get("generation") is not None and c["status"] == "done"
                 and search_fitness(c) is not None]
        return min(found, key=lambda t: t[:2])[2] if found else None

    def best_random(self) -> dict[str, Any] | None:
        found = [(search_fitness(c), c["idx"], c) for c in self._in_stage("random")
                 if c["status"] == "done" and search_fitness(c) is not None]
        return min(found, key=lambda t: t[:2])[2] if found else None

    def _finals(self) -> list[tuple[int, dict[str, Any]]]:
        """(rank, candidate): rank 1 the winner, 0 the best random architecture."""
        out = []
        if (w := self.winner()) is not None:
            out.append((1, w))
        if (b := self.best_random()) is not None:
            out.append((0, b))
        return out

    # -- one candidate -------------------------------------------------------------------------

    def plan(self, item: Item) -> Job:
        c = item.candidate
        stage = self.stage_of(c)
        if item.mode == "remeasure":
            protocol = ({"stage": "finalist", "finalist_rank": 1,
                         "selected_by": "search-split PPL (measured)"} if item.rank == 1 else
                        {"stage": "baseline", "baseline": "random",
                         "selected_by": "search-split PPL (measured), best of random"})
            return Job(c["id"], c["spec"], [{"name": "perplexity",
                                             "settings": {"protocol": protocol}}]
                       + ([{"name": "tasks"}] if self._final_tasks() else []))
        fitness = [{"name": "sparsity"}, {"name": "fitness"}, *self.extra]
        if self.settings.accuracy_on == "all":
            fitness.insert(2, {"name": "tasks"})
        if stage in ("reference", "baselines"):
            measurements = [{"name": "sparsity"},
                            {"name": "fitness", "settings": {"check_finite": False}},
                            {"name": "tasks"},
                            {"name": "perplexity", "settings": {"protocol": {
                                "stage": "baseline"}}}, *self.extra]
            if stage == "reference":
                measurements.insert(0, {"name": "structure_layout", "settings": {
                    "attention_unit": self.settings.attention_unit}})
            name = ("dense" if stage == "reference" else
                    "uniform" if c["spec"] == self._baseline_spec("uniform") else "llm_pruner")
            return Job(c["id"], c["spec"], measurements, info={"baseline": name})
        k = self.arch(c)
        space = self.space0()
        info: dict[str, Any] = {"predictor": {
            "architecture": list(k), "features": dict(zip(
                space.feature_names, space.features([k])[0].tolist(), strict=True)),
            "param_ratio": space.param_ratio(k)}}
        if stage == "random":
            info["baseline"] = "random"
        elif stage == "select":
            pick = next(p for p in self._select() if p["arch"] == k)
            info["predictor"].update({key: v for key, v in pick.items() if key != "arch"})
        else:
            r = c["generation"]
            info["predictor"]["round"] = r
            if r > 0:  # what the previous round's predictors expected, before measuring
                fits = self._fit(r - 1)
                info["predictor"].update({f"predicted_{t}": float(v[0]) for t, v in
                                          self.predictions(fits, space, [k]).items()})
        return Job(c["id"], c["spec"], fitness, info=info,
                   done_info={} if stage == "random" else {"evaluation": "real"})

    # -- rounds end ----------------------------------------------------------------------------

    def end_round(self, round: Round, items: list[Item]) -> list[Note | PredictorFit]:
        stage = self.stage
        self._pos += 1
        if stage == "reference":
            dense = self._dense()
            if dense is None or _layout(dense) is None:
                raise RuntimeError("the dense model could not be measured (see its candidate's "
                                   "error): the predictor search needs its structure")
            space = self.space0()
            return [Note(f"search space: {len(space.variables)} per-block ratios "
                         f"({space.layout.n_blocks} blocks, fixed {list(space.fixed)}), "
                         f"{space.layout.total_params:,} parameters, budget "
                         f"{space.budget:.1%} ± {space.tolerance:.1%}")]
        if stage and stage.startswith("round"):
            return self._round_notes(int(stage.removeprefix("round")))
        if stage == "select":
            return self._selection_notes()
        if stage == "random":
            best = self.best_random()
            return [Note(f"random baseline: {len(self._in_stage('random'))} architectures; "
                         + (f"best search PPL {search_fitness(best):.3f} (candidate {best['id']})"
                            if best else "none measured"), progress=self.progress())]
        return []

    def _round_notes(self, r: int) -> list[Note | PredictorFit]:
        fits = self._fit(r)
        train = self._samples(r)
        out: list[Note | PredictorFit] = []
        if not fits:
            return [Note(f"round {r}: {len(train)} measured architecture(s), fewer than "
                         f"{MIN_TRAIN}: no predictor fitted, the space stays as it was",
                         level="warning", progress=self.progress())]
        space, nxt = self.space(r), self._spaces[r + 1]
        ids = [c["id"] for c in train]
        for target, fit in fits.items():
            payload = {**fit.to_dict(), "round": r, "candidate_ids": ids,
                       "oof_by_candidate": {str(i): p for i, p in zip(ids, fit.oof,
                                                                      strict=True)},
                       "space": space.describe(),
                       "narrowed": self._narrowed[r] if target == LOG_PPL else [],
                       "next_space": nxt.describe() if target == LOG_PPL else None}
            out.append(PredictorFit(r, target, payload))
        main = fits[LOG_PPL] if LOG_PPL in fits else next(iter(fits.values()))
        top = sorted(main.importance.items(), key=lambda t: -t[1])[:3]
        narrowed = [f"{ch['feature']} {ch['before']} → {ch['after']}"
                    for ch in self._narrowed[r] if "after" in ch]
        out.append(Note(
            f"round {r}: predictors on {len(train)} architectures — "
            + "; ".join(f"{t}: {f.quality()}" for t, f in fits.items())
            + "; most important " + ", ".join(f"{n} ({g:.3g})" for n, g in top)
            + ("; narrowed " + ", ".join(narrowed) if narrowed else "; no range narrowed"),
            progress=self.progress()))
        return out

    def _selection_notes(self) -> list[Note | PredictorFit]:
        picks = self._select()
        if not picks:
            return [Note("no predictor could be fitted: the predictor's selection is skipped",
                         level="warning")]
        rows = []
        for c in self._in_stage("select"):
            info = ((c.get("info") or {}).get("predictor") or {})
            rows.append({"id": c["id"], "rank": info.get("rank"),
                         "predicted_log_ppl": info.get("predicted_log_ppl"),
                         "measured_log_ppl": (math.log(search_fitness(c)) if search_fitness(c) else None),
                         "predicted_accuracy": info.get("predicted_accuracy"),
                         "measured_accuracy": task_accuracy(c), "status": c["status"]})
        pairs = [(r["measured_log_ppl"], r["predicted_log_ppl"]) for r in rows
                 if r["measured_log_ppl"] is not None and r["predicted_log_ppl"] is not None]
        corr = (rank_correlations(np.array([a for a, _ in pairs]), np.array([b for _, b in pairs]))
                if len(pairs) >= 2 else {"spearman": None, "kendall": None})
        winner = self.winner()
        payload = {"predictor_round": self.settings.rounds - 1, "scored": picks[0]["scored"],
                   "top_k": rows, **corr,
                   "winner": None if winner is None else {
                       "id": winner["id"], "search_ppl": search_fitness(winner),
                       "origin": winner["origin"], "generation": winner["generation"]}}
        text = ", ".join(
            f"{r['id']}: predicted {math.exp(r['predicted_log_ppl']):.3f} / measured "
            + (f"{math.exp(r['measured_log_ppl']):.3f}" if r["measured_log_ppl"] is not None
               else "—") for r in rows if r["predicted_log_ppl"] is not None)
        return [PredictorFit(self.settings.rounds, "selection", payload),
                Note(f"predictor's top {len(rows)} of {picks[0]['scored']} scored (search PPL "
                     f"predicted / measured): {text}"
                     + (f"; winner so far candidate {winner['id']} search PPL "
                        f"{search_fitness(winner):.3f}" if winner else ""), progress=self.progress())]

    # -- events --------------------------------------------------------------------------------

    def _real(self) -> int:
        return sum(1 for c in self.candidates.values() if c.get("generation") is not None
                   and c["status"] == "done" and search_fitness(c) is not None)

    def progress(self) -> float:
        return min(1.0, self._real() / max(1, self.budget))

    def bar(self) -> tuple[str, int, int]:
        return "predictor search (real evaluations)", self._real(), self.budget

    def label(self, item: Item) -> str:
        c = item.candidate
        stage = self.stage_of(c)
        what = (f"round {c['generation']}" if stage.startswith("round") else
                "predictor's pick" if stage == "select" else f"baseline {stage}"
                if stage != "baselines" else "baseline")
        return f"{c['id']} ({what}) {CandidateSpec.model_validate(c['spec']).label}"

    def where(self, item: Item) -> str:
        return f"before candidate {item.id}"

    def done_notes(self, item: Item, result: CandidateResult) -> list[Note]:
        ppl = {m["role"]: m["value"] for m in result.metrics if m["name"] == "ppl"}
        acc = [m["value"] for m in result.metrics if m["role"] == TASK_ROLE
               and m["name"] == "acc"]
        pred = (result.info.get("predictor") or {}).get("predicted_log_ppl")
        text = ", ".join(
            [f"{role} PPL {v:.3f}" + (f" (predicted {math.exp(pred):.3f})"
                                      if role == SEARCH_ROLE and pred is not None else "")
             for role, v in ppl.items()] + ([f"acc {sum(acc) / len(acc):.3f}"] if acc else []))
        if item.mode == "remeasure":
            who = "winner" if item.rank == 1 else "best random architecture"
            return [Note(f"{who}: candidate {item.id} re-measured: {text}",
                         candidate_id=item.id),
                    Note(f"  {who}: candidate {item.id}  {text}", console=True)]
        label = self.label(item)
        realised = (result.info.get("label") or "")
        return [Note(f"candidate {label}: {text}", candidate_id=item.id,
                     progress=self.progress()),
                Note(f"  {item.id:>4} {realised[:60]:<60} {text}", console=True)]

    def failed_notes(self, item: Item, result: CandidateResult) -> list[Note]:
        return [Note(f"candidate {self.label(item)} failed: {result.error_summary}",
                     level="error", candidate_id=item.id, progress=self.progress())]

    def finish(self) -> list[Note]:
        winner, rnd = self.winner(), self.best_random()
        parts = [f"predictor search finished: {self._real()} real evaluations"]
        if winner is not None:
            parts.append(f"winner candidate {winner['id']} ({winner['origin']}) search PPL "
                         f"{search_fitness(winner):.3f}")
        for c in self._in_stage("baselines") + self._in_stage("reference"):
            if search_fitness(c) is not None:
                parts.append(f"{CandidateSpec.model_validate(c['spec']).label} "
                             f"{search_fitness(c):.3f}")
        if rnd is not None:
            parts.append(f"best of {len(self._in_stage('random'))} random "
                         f"{search_fitness(rnd):.3f} (candidate {rnd['id']})")
        return [Note("; ".join(parts), progress=1.0)]
