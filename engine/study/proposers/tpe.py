"""AdaPruner (kind ``tpe``; Sample-aware Adaptive Structured Pruning for LLMs): Optuna's TPE
sampler — or its random sampler, the baseline — over which calibration windows × the
coefficients of the combined Taylor importance, for structured pruning at a parameter budget.

Stages, each one round of the loop (settings: `[tpe]`, `schema.study_file.TpeSection`):

1. **reference**: the dense model (origin ``baseline``): the objective, the [[evaluation]] sets,
   task accuracy with [tasks];
2. **baselines** (origin ``baseline``): ``llm_pruner`` — first-order element-wise Taylor
   (LLM-Pruner's default) on a seeded random draw of `samples` calibration windows, same budget
   and blocks — measured like the reference;
3. **trials** 0..T-1, in batches of B = `batch` per round (round r: trials [r·B, (r+1)·B),
   evaluated in parallel by the run's workers; generation = trial number, origin = the
   sampler): the sampler proposes windows (`samples` slots over the pool, duplicates dropped) and α, β, the
   alignment factor f (γ = β·f); the candidate is method ``structured``, importance
   ``combined`` (α, β, γ), pruned with those windows only (`CandidateSpec.calibration_samples`)
   and measured on the objective: the mean PPL of the search splits (`search_mean`);
4. **final**: the winner (best objective) re-measured on the [[evaluation]] sets and the tasks.

The store is the one source of truth: before every trial the Optuna study is rebuilt from the
recorded trials of the earlier batches (`create_trial` / `add_trial`, in trial order: params,
distributions, value or FAIL), then the earlier trials of its own batch are added as RUNNING
(their parameters only: the TPE sampler's constant liar counts them among the worse trials, so
a batch's trials keep apart instead of piling onto one optimum), and its sampler is seeded with
(seed, trial number). A trial is thus a pure function of the seed, its number and the trials
before it, whatever the order in which a batch's results came in: a resumed study — even one
killed while a batch was being recorded — proposes exactly what an uninterrupted one would, and
nothing is evaluated twice. With B = 1 no trial is ever RUNNING: the search is the sequential
one. Every trial's parameters and distributions are in its candidate's info (``info.tpe``),
which the web app's view reads.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from prunestudio.engine.study.executor import CandidateResult, Job
from prunestudio.engine.study.proposers.base import (
    Item,
    Note,
    Proposal,
    Proposer,
    Round,
    model_loaded,
    proposed,
    search_fitness,
    task_accuracy,
)
from prunestudio.engine.study.proposers.predictor import llm_pruner_blocks

from prunestudio.schema import SEARCH_ROLE, TASK_ROLE, is_search_part
from prunestudio.schema.spec import CandidateSpec
from prunestudio.schema.study_file import TpeSection

BASELINE = "baseline"
MAX_REDRAWS = 20  # a sampler that keeps proposing recorded specs: the search ends


def fixed_samples(seed: int, pool: int, k: int) -> tuple[int, ...]:
    """A seeded random draw of k distinct windows of the pool (the baseline's and the
    importance-only search's calibration)."""
    rng = np.random.default_rng([seed, 14])
    return tuple(sorted(int(i) for i in rng.choice(pool, size=min(k, pool), replace=False)))


class TpeSearch(Proposer):
    """See the module docstring."""

    kind = "tpe"

    def __init__(self, settings: TpeSection, seed: int, pool: int, tasks: bool = False,
                 measurements: list[str] | None = None) -> None:
        self.settings, self.seed, self.pool, self.tasks = settings, seed, pool, tasks
        self.extra = [{"name": name} for name in measurements or ()]
        self.stages = (["reference"] + (["baselines"] if settings.baselines else [])
                       + ["trials", "final"])
        self.candidates: dict[int, dict[str, Any]] = {}
        self.description: dict[str, Any] = {}
        self._pos = 0
        self._exhausted = False
        self._asked: dict[int, tuple[dict[str, Any], dict[str, Any]] | None] = {}

    @classmethod
    def from_config(cls, config) -> TpeSearch:
        return cls(config.tpe, config.study.seed, config.calibration.n,
                   tasks=config.tasks is not None, measurements=config.study.measurements)

    # -- the space -----------------------------------------------------------------------------

    @property
    def origin(self) -> str:
        return self.settings.sampler  # tpe | random

    def distributions(self) -> dict[str, Any]:
        """The Optuna search space of this study's settings (the ablations drop parts)."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution

        s = self.settings
        out: dict[str, Any] = {}
        if s.search in ("joint", "calibration"):
            choices = tuple(range(self.pool))
            out.update({f"sample_{i}": CategoricalDistribution(choices)
                        for i in range(s.samples)})
        if s.search in ("joint", "importance"):
            if s.orders in ("both", "first"):
                out["alpha"] = FloatDistribution(0.0, 1.0)
                out["beta"] = FloatDistribution(0.0, 1.0)
            if s.orders == "both":
                out["factor"] = CategoricalDistribution(tuple(float(f) for f in s.factors))
        if len(s.aggregations) > 1:
            out["aggregation"] = CategoricalDistribution(tuple(s.aggregations))
        return out

    def coefficients(self, params: dict[str, Any]) -> tuple[float, float, float]:
        """(α, β, γ) of the combined importance for a trial's parameters."""
        s = self.settings
        if s.orders == "second":
            return 0.0, 0.0, 1.0
        if "alpha" not in params:  # importance fixed: LLM-Pruner's element-wise first order
            return 0.0, 1.0, 0.0
        alpha, beta = float(params["alpha"]), float(params["beta"])
        gamma = beta * float(params["factor"]) if s.orders == "both" else 0.0
        return alpha, beta, gamma

    def samples_of(self, params: dict[str, Any]) -> tuple[int, ...]:
        keys = [k for k in params if k.startswith("sample_")]
        if not keys:
            return fixed_samples(self.seed, self.pool, self.settings.samples)
        return tuple(sorted({int(params[k]) for k in keys}))

    def n_blocks(self) -> int | None:
        """The model's decoder blocks, from the dense candidate's measured structure."""
        dense = self._dense()
        return next((len(m["protocol"]["layout"]["blocks"])
                     for m in (dense or {}).get("metrics") or ()
                     if m["name"] == "prunable_params" and m["role"] == "structure"), None)

    def _blocks(self) -> dict[str, Any]:
        s = self.settings
        if s.block_start is not None or s.block_end is not None:
            return {"block_start": s.block_start or 0, "block_end": s.block_end}
        n = self.n_blocks()
        if n is None:
            raise RuntimeError("the number of blocks is not known before the dense model is "
                               "measured")
        start, end = llm_pruner_blocks(int(n))
        return {"block_start": start, "block_end": end}

    def trial_spec(self, params: dict[str, Any]) -> dict[str, Any]:
        alpha, beta, gamma = self.coefficients(params)
        return CandidateSpec(
            method="structured", sparsity=self.settings.sparsity,
            calibration_samples=self.samples_of(params),
            options={"importance": "combined", "alpha": alpha, "beta": beta, "gamma": gamma,
                     "aggregation": params.get("aggregation", self.settings.aggregations[0]),
                     "ratio": "params", **self._blocks()}).canonical()

    def baseline_spec(self) -> dict[str, Any]:
        return CandidateSpec(
            method="structured", sparsity=self.settings.sparsity,
            calibration_samples=fixed_samples(self.seed, self.pool, self.settings.samples),
            options={"importance": "taylor_first", "ratio": "params",
                     **self._blocks()}).canonical()

    # -- the Optuna study, rebuilt from the store ----------------------------------------------

    @property
    def batch(self) -> int:
        """Trials asked per round (`[tpe] batch`). A recorded config always holds a number (the
        launcher fills in its worker count); None — a config from before the key — is 1."""
        return self.settings.batch or 1

    def batch_of(self, number: int) -> range:
        """The trial numbers of trial `number`'s batch (the last one capped by `trials`)."""
        start = number - number % self.batch
        return range(start, min(start + self.batch, self.settings.trials))

    def trials(self) -> list[dict[str, Any]]:
        """Recorded trial candidates, by trial number."""
        return sorted((c for c in self.candidates.values() if c.get("generation") is not None),
                      key=lambda c: c["generation"])

    def sampler(self, number: int, redraw: int = 0):
        import optuna

        seed = int(np.random.default_rng([self.seed, number, redraw]).integers(2**31 - 1))
        if self.settings.sampler == "random":
            return optuna.samplers.RandomSampler(seed=seed)
        # constant_liar (Optuna 5's default, explicit here): the RUNNING trials of a batch go
        # to the sampler's "bad" group, so a batch does not ask one point B times
        return optuna.samplers.TPESampler(seed=seed,
                                          n_startup_trials=self.settings.n_startup_trials,
                                          constant_liar=True)

    def optuna_study(self, number: int | None = None, redraw: int = 0):
        """An in-memory Optuna study for trial `number` (its sampler seeded for it): every
        finished recorded trial of the earlier batches, in trial order, then the earlier trials
        of its own batch as RUNNING. Without a number: every finished recorded trial (the
        history as recorded; its sampler seeded for the next trial)."""
        import optuna
        from optuna.trial import TrialState

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        finished = [c for c in self.trials() if c["status"] in ("done", "failed")]
        if number is None:
            number = start = len(finished)
        else:
            start = self.batch_of(number).start
            finished = [c for c in finished if c["generation"] < start]
        study = optuna.create_study(direction="minimize",
                                    sampler=self.sampler(number, redraw))
        dists = self.distributions()
        for c in finished:
            params = (c.get("info") or {}).get("tpe", {}).get("params")
            if params is None:
                continue
            value = search_fitness(c) if c["status"] == "done" else None
            study.add_trial(optuna.trial.create_trial(
                params=params, distributions=dists,
                value=value, state=TrialState.COMPLETE if value is not None
                else TrialState.FAIL))
        for earlier in range(start, number):
            asked = self.ask_trial(earlier)
            if asked is None:
                raise RuntimeError(f"trial {number} asked after trial {earlier}, which the "
                                   "sampler could not propose")
            study.add_trial(optuna.trial.create_trial(
                params=asked[0], distributions=dists, state=TrialState.RUNNING))
        return study

    def _taken(self, number: int) -> set[str]:
        """The spec hashes trial `number` must not propose: the reference's and the baselines',
        the recorded trials of the earlier batches and the earlier trials of its own batch
        (recorded or not yet: derived from the trials before it only, never from what was
        recorded after it)."""
        start = self.batch_of(number).start
        taken = {c["spec_hash"] for c in self.candidates.values()
                 if c.get("generation") is None or c["generation"] < start}
        for earlier in range(start, number):
            asked = self.ask_trial(earlier)
            if asked is not None:
                taken.add(CandidateSpec.model_validate(asked[1]).hash())
        return taken

    def ask_trial(self, number: int) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """Trial `number`'s (params, spec), a pure function of (seed, number), the recorded
        trials of the earlier batches and the earlier trials of its batch (re-derived, so the
        same before and after they are recorded or measured): a proposal equal to a spec
        before it is redrawn; None when `MAX_REDRAWS` draws all were."""
        if number in self._asked:
            return self._asked[number]
        taken = self._taken(number)
        for redraw in range(MAX_REDRAWS):
            study = self.optuna_study(number, redraw)
            trial = study.ask(self.distributions())
            params = dict(trial.params)
            spec = self.trial_spec(params)
            if CandidateSpec.model_validate(spec).hash() not in taken:
                self._asked[number] = (params, spec)
                return params, spec
        self._asked[number] = None
        return None

    # -- state ---------------------------------------------------------------------------------

    def stage_of(self, c: dict[str, Any]) -> str:
        if c.get("generation") is not None:
            return "trials"
        return "reference" if c["spec"].get("method") == "dense" else "baselines"

    def restore(self, candidates, description) -> list[Note]:
        self.description = description
        self.candidates = {}
        self._exhausted = False
        self._asked = {}
        for c in proposed(candidates):
            self.tell(c)
        recorded = {self.stage_of(c) for c in self.candidates.values()}
        self._pos = max((i for i, st in enumerate(self.stages) if st in recorded), default=0)
        s = self.settings
        w = description.get("search_split") or {}
        space = ", ".join(self.distributions()) or "nothing"
        return [Note(f"{model_loaded(description)} ({description.get('dtype')})"),
                Note(f"AdaPruner search ({s.sampler}, seed {self.seed}): remove "
                     f"{s.sparsity:.0%} of the parameters; {s.trials} trials"
                     + (f" in batches of {self.batch}"
                        + (" (constant liar)" if s.sampler == "tpe" else "")
                        if self.batch > 1 else "")
                     + f" over {space} "
                     f"(pool {self.pool} windows, {s.samples} per trial; search {s.search}, "
                     f"orders {s.orders}); objective = mean PPL of "
                     + " and ".join(sp.label() for sp in s.splits)
                     + f" (first: {w.get('n')} × {w.get('seqlen')}); baselines "
                     + (", ".join(s.baselines) or "none"))]

    def _dense(self) -> dict[str, Any] | None:
        return next((c for c in self.candidates.values()
                     if c["spec"].get("method") == "dense"), None)

    def _finished(self) -> int:
        return sum(1 for c in self.trials() if c["status"] in ("done", "failed"))

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
            return Round([Proposal(self.baseline_spec(), BASELINE)], name=stage)
        if stage == "trials":
            return self._ask_batch()
        return Round(name="final")

    def _ask_batch(self) -> Round:
        """The next batch of trials: the one holding a trial recorded but not finished (killed
        mid-batch: its recorded trials are proposed again — the loop finds them by their spec
        — and the ones not recorded yet are asked as an uninterrupted run asked them), else the
        one after the last recorded trial. Proposals in trial order; a sampler out of new specs
        ends the batch there and the search after it (round ``exhausted``)."""
        trials = self.trials()
        by_number = {c["generation"]: c for c in trials}
        pending = [c["generation"] for c in trials if c["status"] in ("pending", "running")]
        if pending:
            number = pending[0]
        else:
            number = trials[-1]["generation"] + 1 if trials else 0
            if number >= self.settings.trials or self._exhausted:
                self._pos += 1
                return self.ask()
        numbers = self.batch_of(number)
        proposals: list[Proposal] = []
        for k in numbers:
            c = by_number.get(k)
            if c is not None:
                if c["status"] in ("pending", "running"):
                    proposals.append(Proposal(c["spec"], c["origin"], generation=k))
                continue
            asked = self.ask_trial(k)
            if asked is None:
                self._exhausted = True
                break
            proposals.append(Proposal(asked[1], self.origin, generation=k))
        return Round(proposals, generation=numbers.start // self.batch,
                     n_proposed=len(proposals),
                     name="exhausted" if self._exhausted else "trials")

    def todo(self, round: Round) -> list[Item]:
        if round.name != "final":
            return super().todo(round)
        winner = self.winner()
        if winner is None:
            return []
        have = {(m["role"], m["fidelity"]) for m in winner.get("metrics") or ()
                if m["name"] == "ppl"}
        wanted = {(ev["role"], ev["fidelity"]) for ev in self.description.get("evaluations", [])}
        if wanted <= have and (not self.tasks or task_accuracy(winner) is not None):
            return []
        return [Item(winner, mode="remeasure", rank=1)]

    def winner(self) -> dict[str, Any] | None:
        """The trial with the best objective (ties: the earlier)."""
        found = [(search_fitness(c), c["generation"], c) for c in self.trials()
                 if c["status"] == "done" and search_fitness(c) is not None]
        return min(found, key=lambda t: t[:2])[2] if found else None

    # -- one candidate -------------------------------------------------------------------------

    def _objective(self, check_finite: bool = True) -> dict[str, Any]:
        s = self.settings
        return {"name": "search_mean", "settings": {
            "splits": [w.model_dump(mode="json") for w in s.splits],
            "batch_size": s.batch_size, "check_finite": check_finite}}

    def plan(self, item: Item) -> Job:
        c = item.candidate
        if item.mode == "remeasure":
            return Job(c["id"], c["spec"], [
                {"name": "perplexity", "settings": {"protocol": {
                    "stage": "finalist", "finalist_rank": 1,
                    "selected_by": "mean search-split PPL (measured)"}}}, {"name": "tasks"}])
        stage = self.stage_of(c)
        if stage in ("reference", "baselines"):
            measurements = [{"name": "sparsity"}, self._objective(check_finite=False),
                            {"name": "perplexity", "settings": {"protocol": {
                                "stage": "baseline"}}}, {"name": "tasks"}, *self.extra]
            if stage == "reference":
                measurements.insert(0, {"name": "structure_layout"})
            name = "dense" if stage == "reference" else "llm_pruner"
            return Job(c["id"], c["spec"], measurements, info={"baseline": name})
        params = self._trial_params(c)
        alpha, beta, gamma = self.coefficients(params)
        from optuna.distributions import distribution_to_json

        info = {"tpe": {
            "trial": c["generation"], "sampler": self.settings.sampler, "params": params,
            "distributions": {k: distribution_to_json(d)
                              for k, d in self.distributions().items()},
            "samples": list(self.samples_of(params)), "alpha": alpha, "beta": beta,
            "gamma": gamma}}
        return Job(c["id"], c["spec"], [{"name": "sparsity"}, self._objective(), *self.extra],
                   info=info)

    def _trial_params(self, c: dict[str, Any]) -> dict[str, Any]:
        """The sampler's parameters of a trial candidate: recorded in its info once measured;
        before that re-derived (`ask_trial` is deterministic), which for a trial recorded
        before a kill gives back exactly what was asked then, whichever trials of its batch
        have finished since."""
        recorded = (c.get("info") or {}).get("tpe", {}).get("params")
        if recorded is not None:
            return recorded
        asked = self.ask_trial(c["generation"])
        if asked is None or asked[1] != c["spec"]:
            raise RuntimeError(f"trial {c['generation']} (candidate {c['id']}) cannot be "
                               "re-derived from the recorded trials before it: was the study "
                               "file changed? (its spec differs from what the sampler asks "
                               "now)")
        return asked[0]

    # -- events --------------------------------------------------------------------------------

    def end_round(self, round: Round, items: list[Item]) -> list[Note]:
        stage = self.stage
        if stage in ("reference", "baselines", "final"):
            if stage == "reference" and self.n_blocks() is None:
                raise RuntimeError("the dense model could not be measured (see its "
                                   "candidate's error): the search needs its structure")
            self._pos += 1
        if round.name == "exhausted":
            return [Note(f"the {self.settings.sampler} sampler proposed only recorded "
                         f"candidates {MAX_REDRAWS} times: the search ends after "
                         f"{self._finished()} trials", level="warning")]
        return []

    def progress(self) -> float:
        return min(1.0, self._finished() / max(1, self.settings.trials))

    def bar(self) -> tuple[str, int, int]:
        return f"AdaPruner {self.settings.sampler} (trials)", self._finished(), \
            self.settings.trials

    def label(self, item: Item) -> str:
        c = item.candidate
        what = (f"trial {c['generation']}" if c.get("generation") is not None
                else f"baseline {self.stage_of(c)}")
        return f"{c['id']} ({what}) {CandidateSpec.model_validate(c['spec']).label}"

    def done_notes(self, item: Item, result: CandidateResult) -> list[Note]:
        ppl = [m for m in result.metrics if m["name"] == "ppl"]
        acc = [m["value"] for m in result.metrics if m["role"] == TASK_ROLE
               and m["name"] == "acc"]
        parts = ", ".join(f"{m['dataset']} {m['value']:.2f}" for m in ppl
                          if is_search_part(m["role"]))
        text = ", ".join(
            [f"objective {m['value']:.3f} ({parts})" for m in ppl if m["role"] == SEARCH_ROLE]
            + [f"{m['role']} PPL {m['value']:.3f}" for m in ppl
               if m["role"] != SEARCH_ROLE and not is_search_part(m["role"])]
            + ([f"acc {sum(acc) / len(acc):.3f}"] if acc else []))
        if item.mode == "remeasure":
            return [Note(f"winner: candidate {item.id} re-measured: {text}",
                         candidate_id=item.id),
                    Note(f"  winner: candidate {item.id}  {text}", console=True)]
        best = self.winner()
        tail = (f" (best so far {search_fitness(best):.3f}, trial {best['generation']})"
                if best is not None and item.candidate.get("generation") is not None else "")
        return [Note(f"candidate {self.label(item)}: {text}{tail}", candidate_id=item.id,
                     progress=self.progress()),
                Note(f"  {item.id:>4} {self.label(item).split(' ', 1)[1][:60]:<60} {text}",
                     console=True)]

    def finish(self) -> list[Note]:
        winner = self.winner()
        parts = [f"AdaPruner search finished: {self._finished()} trials ({self.settings.sampler})"]
        if winner is not None:
            info = (winner.get("info") or {}).get("tpe", {})
            parts.append(f"winner trial {winner['generation']} (candidate {winner['id']}) "
                         f"objective {search_fitness(winner):.3f}: α {info.get('alpha', 0):.3g}, "
                         f"β {info.get('beta', 0):.3g}, γ {info.get('gamma', 0):.3g}, "
                         f"windows {info.get('samples')}")
        for c in self.candidates.values():
            if c.get("generation") is None and search_fitness(c) is not None:
                parts.append(f"{CandidateSpec.model_validate(c['spec']).label} "
                             f"{search_fitness(c):.3f}")
        return [Note("; ".join(parts), progress=1.0)]
