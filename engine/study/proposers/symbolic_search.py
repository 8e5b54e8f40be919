"""What every search over symbolic pruning metrics shares (GP, random search, ...).

A subclass is one module: a `kind` and `_propose(history, generation, batch)`, which fills a
generation ≥ 1 with proposals (see `proposers/random.py`). This base does the rest:

1. **baselines** (`search.baselines`, origin ``baseline``): measured on the search split and
   the full evaluation sets;
2. **generations**: `proposals(history, g)` is a pure function of (settings, seed, g, the
   history of earlier generations), its random numbers from `generation_rng(seed, g, ...)`, so
   a resumed search asks the unfinished generation again and gets the same, already recorded,
   proposals. Generation 0 is shared: the seed metrics, then ramped half-and-half random
   trees. Every proposal is simplified and deduplicated (`search.base._Batch`);
3. each candidate: the budget (real evaluations) is checked, then mask equivalence by rank key
   (no pruning), then the executor prunes, hashes the zero pattern (a known hash → fitness
   reused) and measures the fitness (search-split PPL);
4. **successive halving** (`[search] noise_aware`, `halving`): after each generation a round
   with no proposals re-measures the best `halving.top` distinct metrics by proxy fitness that
   lack a higher-fidelity fitness — items of mode ``remeasure`` on the recorded candidates, a
   ``fitness`` job at fidelity ``full`` (every window of the extended search split), recorded as
   a metric added to the candidate (as finalists are). Which items is a function of the
   records, so a killed study resumes that round with what is missing, nothing twice. A
   metric whose pruned model equals one already re-measured (e.g. the Wanda baseline) takes
   that figure. The ranking (`search.noise`) puts re-measured metrics first and treats
   differences below `noise_k` standard errors as ties (the simpler metric wins);
5. stop at the budget, after `iterations` generations or at the candidate cap;
6. **finalists** (`search.finalists`): a second pass of the loop (`proposers.finalists`);
7. **summary**: real evaluations, reused fitness, failures, evaluations per minute, the best
   metric's fitness ± its standard error and whether it beats each baseline beyond the noise.

Calibration of search candidates defaults to ``dense``: every candidate prunes from the dense
model's statistics, computed once (`warm`), instead of a forward pass per candidate.
"""

from __future__ import annotations

import math
from abc import abstractmethod
from typing import Any

from prunestudio.engine.search.allocation import random_offsets
from prunestudio.engine.search.base import (
    MAX_TRIES_PER_PROPOSAL,
    _Batch,
    generation_rng,
    ramped_tree,
    terminals,
)
from prunestudio.engine.search.base import Proposal as MetricProposal
from prunestudio.engine.search.fitness_reuse import reused_metric
from prunestudio.engine.search.noise import Measured, Ranking, compare
from prunestudio.engine.search.state import (
    BASELINE,
    Individual,
    SearchHistory,
    fitness_metrics,
    saved_fraction,
)
from prunestudio.engine.study.equivalence import (
    by_rank_key,
    fitness_reuse,
    known_masks,
    metric_fields,
)
from prunestudio.engine.study.executor import CandidateResult, Job
from prunestudio.engine.study.proposers.base import (
    Item,
    Note,
    Proposal,
    Proposer,
    Reuse,
    Round,
    Skip,
    model_loaded,
    proposed,
)
from prunestudio.engine.symbolic import parse

from prunestudio.schema.spec import CandidateSpec
from prunestudio.schema.study_file import SearchSection

__all__ = ["MAX_TRIES_PER_PROPOSAL", "SymbolicSearch", "generation_rng", "ramped_tree"]


class SymbolicSearch(Proposer):
    """Proposes symbolic metrics generation by generation (see the module docstring)."""

    def __init__(self, settings: SearchSection, seed: int,
                 measurements: list[str] | None = None) -> None:
        self.settings, self.seed = settings, seed
        # the study's extra measurements ([study] measurements), after the fitness
        self.extra = [{"name": name} for name in measurements or ()]
        self.budget = settings.real_budget
        self.last_rejected = 0  # duplicates rejected by the last `proposals`
        self.history = SearchHistory()
        self.metrics: dict[int, list[dict[str, Any]]] = {}
        self.candidates: dict[int, dict[str, Any]] = {}
        self.description: dict[str, Any] = {}
        self._baselines_asked = False
        self._generation: int | None = None
        self._stopped = False
        # noise-aware search: the ranking, successive halving (top, windows)
        self.ranking = (Ranking(settings.noise_k, settings.halving_top > 0)
                        if settings.noise_aware else None)
        self.halving_top = settings.halving_top
        self.full_n = settings.full_windows
        self._halving: int | None = None  # the generation whose halving round is due
        self._generation_items = 0  # candidates handled in this run by that generation's round
        self._failed_remeasure: set[int] = set()  # re-measurements that failed in this run
        # by-products of the last `proposals` (pure): tournaments held / decided within noise,
        # and each child's tournaments (recorded in its info)
        self.last_tournaments = [0, 0]
        self.selection: dict[str, list[dict[str, Any]]] = {}

    @classmethod
    def from_config(cls, config) -> SymbolicSearch:
        return cls(config.search, config.study.seed, config.study.measurements)

    # -- the pure proposal function ------------------------------------------------------------

    def proposals(self, history: SearchHistory, generation: int) -> list[MetricProposal]:
        """The proposals of `generation` (0: the initial population)."""
        batch = _Batch(history.seen(generation), self.batch_size(generation),
                       self.settings.max_depth)
        self.last_tournaments = [0, 0]
        self.selection = {}
        if generation == 0:
            self._initial(batch)
        else:
            self._propose(history, generation, batch)
        self.last_rejected = batch.rejected
        return batch.out

    def batch_size(self, generation: int) -> int:
        if generation == 0:
            return max(self.settings.population, len(self.settings.seed_metrics))
        return self.settings.offspring

    def _initial(self, batch: _Batch) -> None:
        for text in self.settings.seed_metrics:
            batch.add(parse(text), "seed")
        rng = generation_rng(self.seed, 0, "init")
        allocation = self.settings.allocation
        by_kind = allocation.mode == "by_kind"
        alloc_rng = generation_rng(self.seed, 0, "allocation")  # its own stream: trees unchanged
        for i in range(MAX_TRIES_PER_PROPOSAL * batch.limit):
            if batch.full:
                break
            # allocation by_kind: uniform and random allocations alternate
            offsets = random_offsets(alloc_rng, allocation) if by_kind and i % 2 else ()
            batch.add(ramped_tree(rng, i, self.settings), "init", offsets=offsets)

    @abstractmethod
    def _propose(self, history: SearchHistory, generation: int, batch: _Batch) -> None:
        """Fill `batch` with the proposals of a generation ≥ 1."""

    def _tournament_record(self, winner: Individual, drawn: list[Individual]) -> dict[str, Any]:
        """One tournament for the events and the child's info: who was drawn, who won and
        whether the winner was tied within the noise with another drawn individual (the choice
        then rests on fidelity / simplicity / order, not on the fitness)."""
        tied = self.ranking is not None and any(
            self.ranking.tied(winner, d) for d in drawn if d is not winner)
        self.last_tournaments[0] += 1
        self.last_tournaments[1] += tied
        return {"drawn": [d.id for d in drawn], "winner": winner.id, "within_noise": tied}

    def record_selection(self, genome: str, tournaments: list[dict[str, Any]]) -> None:
        if self.ranking is not None:
            self.selection[genome] = tournaments

    # -- state ---------------------------------------------------------------------------------

    def restore(self, candidates, description) -> list[Note]:
        self.description = description
        self.history = SearchHistory()
        for c in proposed(candidates):
            self.tell(c)
        last = self.history.last_generation()
        self._generation = 0 if last is None else last
        self._halving = None
        return self._describe()

    def tell(self, candidate: dict[str, Any]) -> None:
        self.candidates[candidate["id"]] = candidate
        self.metrics[candidate["id"]] = candidate.get("metrics") or []
        self.history.tell(Individual.from_candidate(candidate))

    def warm(self) -> list[str]:
        s, out = self.settings, []
        if "D" in s.leaves and s.calibration == "dense":
            out.append("dense_hessians")
        elif "X" in s.leaves or "D" in s.leaves or s.baselines:
            out.append("dense_layer_stats" if s.calibration == "dense" else "block_inputs")
        if "G" in s.leaves:
            out.append("gradients")
        return out

    # -- rounds --------------------------------------------------------------------------------

    def ask(self) -> Round | None:
        if not self._baselines_asked:
            self._baselines_asked = True
            if self.settings.baselines:
                return Round([Proposal(self.settings.baseline_spec(m).canonical(), BASELINE)
                              for m in self.settings.baselines], name="baselines")
        if self._halving is not None:
            return Round(generation=self._halving, name="halving")
        if self._stopped:
            return None
        g = self._generation
        proposals = self.proposals(self.history, g)
        room = self.settings.candidate_cap - len(self.history.search(before=g))
        return Round([Proposal(self.settings.candidate_spec(p.expression, dict(p.offsets))
                               .canonical(), p.origin, p.parents, g)
                      for p in proposals[:max(0, room)]],
                     generation=g, n_proposed=len(proposals))

    def todo(self, round: Round) -> list[Item]:
        if round.generation is None:
            return super().todo(round)
        if round.name == "halving":
            return self._halving_todo(round.generation)
        return [Item(self.candidates[i.id]) for i in self.history.generation(round.generation)
                if i.status == "pending"]

    def promotion(self, before: int) -> list[Individual]:
        """The best `halving.top` distinct metrics by proxy fitness among generations <
        `before` (noise-aware: ties within the noise go to the simpler metric)."""
        proxy = None if self.ranking is None else Ranking(self.ranking.k, False)
        return self.history.population(before=before, size=self.halving_top, ranking=proxy)

    def _halving_todo(self, generation: int) -> list[Item]:
        """Successive halving after `generation`: the promoted metrics without a
        higher-fidelity fitness (one whose re-measurement failed in this run is not retried
        until a resume)."""
        return [Item(self.candidates[ind.id], mode="remeasure", rank=rank)
                for rank, ind in enumerate(self.promotion(generation + 1), 1)
                if ind.full is None and ind.id not in self._failed_remeasure]

    def end_round(self, round: Round, items: list[Item]) -> list[Note]:
        g = round.generation
        if g is None:
            return []
        if round.name == "halving":
            self._halving = None
            return self._end_generation(g, bool(items) or self._generation_items > 0,
                                        len(items))
        if not items and round.n_proposed == 0 and not self.history.generation(g):
            self._stopped = True
            return [Note(f"generation {g}: no new distinct metric could be proposed; the "
                         "search stops", level="warning")]
        if self.halving_top:  # its halving round first; the generation's note after it
            self._halving, self._generation_items = g, len(items)
            return []
        return self._end_generation(g, bool(items))

    def _end_generation(self, g: int, note: bool, remeasured: int = 0) -> list[Note]:
        notes = [self._generation_note(g, remeasured)] if note else []
        reason = self._stop_reason(g)
        if reason:
            self._stopped = True
            notes.append(Note(f"search stops: {reason}", progress=self.progress()))
        else:
            self._generation = g + 1
        return notes

    def _stop_reason(self, generation: int) -> str | None:
        if self.history.real_evaluations >= self.budget:
            return f"budget of {self.budget} real evaluations reached"
        if generation >= self.settings.iterations:
            return f"{self.settings.iterations} iterations done"
        if len(self.history.search()) >= self.settings.candidate_cap:
            return f"candidate cap {self.settings.candidate_cap} reached"
        return None

    # -- one candidate -------------------------------------------------------------------------

    def _ind(self, item: Item) -> Individual:
        return self.history.get(item.id)

    def plan(self, item: Item) -> Job | Skip | Reuse:
        ind = self._ind(item)
        if item.mode == "remeasure":
            return self._plan_remeasure(item, ind)
        if not ind.is_search:  # a baseline: search split and the full evaluation sets
            fitness = {"check_finite": False}
            if self.full_n:  # and the higher-fidelity fitness, from the same forward
                fitness["fidelity"] = "both"
            return Job(ind.id, item.candidate["spec"], [
                {"name": "sparsity"}, {"name": "fitness", "settings": fitness},
                {"name": "perplexity", "settings": {"protocol": {"stage": "baseline"}}},
                *self.extra], hash_masks=True)
        if self.history.real_evaluations >= self.budget:
            return Skip(f"not evaluated: the budget of {self.budget} real evaluations was "
                        "reached", {"budget": self.budget})
        mode = self.settings.equivalence
        spec = self.settings.candidate_spec(ind.expression, dict(ind.offsets))
        info = {"expression": ind.expression, "canonical_key": ind.key,
                "rank_key": ind.rank, "calibration": self.settings.calibration}
        if ind.genome in self.selection:  # noise-aware GP: how its parents were chosen
            info["tournaments"] = self.selection[ind.genome]
        ref = by_rank_key(self.history, mode, info["rank_key"])
        if ref is not None:
            info = {**info, **self.description.get("identity", {}), "label": spec.label}
            return self._reuse(ind, ref, "rank_key", ref.mask_hash, info)
        return Job(ind.id, spec.canonical(), [{"name": "sparsity"}, {"name": "fitness"},
                                              *self.extra],
                   hash_masks=True, equivalent_masks=known_masks(self.history, mode), info=info,
                   done_info={"evaluation": "real"})

    def _halving_protocol(self, item: Item) -> dict[str, Any]:
        """Recorded with a re-measured fitness: which halving round promoted it, and how."""
        return {"stage": "halving", "after_generation": self._halving,
                "proxy_rank": item.rank, "halving_top": self.halving_top}

    def _plan_remeasure(self, item: Item, ind: Individual) -> Job | Reuse:
        """Successive halving: the higher-fidelity fitness of a promoted metric, measured, or
        taken from a candidate with the same pruned model that has it (e.g. a baseline)."""
        extra = self._halving_protocol(item)
        twin = self._full_twin(ind)
        if twin is not None:
            source = fitness_metrics(self.metrics[twin.id])[1]
            metric = reused_metric(metric_fields(source), twin.id, "mask", ind.mask_hash)
            metric["protocol"].update(extra)
            m = Measured.of(metric)
            return Reuse(twin.id, [metric], notes=[Note(
                f"halving after generation {extra['after_generation']}: candidate "
                f"{self._label(ind)}: same pruned model as candidate {twin.id}, its "
                f"{source['n_samples']}-window search PPL {_pm(m)} reused", candidate_id=ind.id)])
        return Job(ind.id, item.candidate["spec"], [
            {"name": "fitness", "settings": {"fidelity": "full", "protocol": extra}}],
            info={"expression": ind.expression, "stage": "halving"})

    def _full_twin(self, ind: Individual) -> Individual | None:
        if not ind.mask_hash:
            return None
        return next((o for o in self.history.individuals if o.id != ind.id
                     and o.mask_hash == ind.mask_hash and o.full is not None), None)

    def reuse(self, item: Item, result: CandidateResult) -> Reuse:
        ref = self.history.get(result.equivalent_to)
        return self._reuse(self._ind(item), ref, "mask", result.info["mask_hash"], result.info)

    def _reuse(self, ind: Individual, ref: Individual, how: str, mask_hash: str | None,
               info: dict[str, Any]) -> Reuse:
        proxy = fitness_metrics(self.metrics[ref.id])[0]  # the proxy figure, never the full
        reuse = fitness_reuse(ind.id, ref, [proxy], how, mask_hash, info)
        reuse.notes = [
            Note(f"candidate {self._label(ind)}: ≡ candidate {ref.id} by {how}, search PPL "
                 f"{ref.fitness:.3f} reused", candidate_id=ind.id, progress=self.progress()),
            Note(f"  g{ind.generation:<3} {ind.origin:<9} {'≡ ' + str(ref.id):>10}  "
                 f"{ind.genome}", console=True)]
        return reuse

    # -- events --------------------------------------------------------------------------------

    def progress(self) -> float:
        return min(1.0, self.history.real_evaluations / max(1, self.budget))

    def bar(self) -> tuple[str, int, int]:
        return f"{self.kind} search (real evaluations)", self.history.real_evaluations, self.budget

    @staticmethod
    def _label(ind: Individual) -> str:
        return f"{ind.id} (gen {ind.generation}, {ind.origin}) {ind.genome}"

    def label(self, item: Item) -> str:
        ind = self._ind(item)
        if not ind.is_search:
            return f"{ind.id} (baseline {CandidateSpec.model_validate(item.candidate['spec']).label})"
        return self._label(ind)

    def where(self, item: Item) -> str:
        ind = self._ind(item)
        if item.mode == "remeasure":
            return f"before re-measuring candidate {ind.id} (halving)"
        if not ind.is_search:
            return f"before baseline {CandidateSpec.model_validate(item.candidate['spec']).label}"
        return f"before candidate {ind.id}"

    def done_notes(self, item: Item, result: CandidateResult) -> list[Note]:
        ind = self._ind(item)
        if item.mode == "remeasure":
            full = ind.full
            return [Note(f"halving after generation {self._halving}: candidate "
                         f"{self._label(ind)} (proxy rank {item.rank} of {self.halving_top}) "
                         f"re-measured on {full.n} windows: search PPL {_pm(full)} (proxy "
                         f"{_pm(ind.proxy)} on {ind.proxy.n} windows)", candidate_id=ind.id),
                    Note(f"  g{ind.generation:<3} {'halving':<9} {full.value:>10.3f}  "
                         f"{ind.genome}  ({full.n} windows)", console=True)]
        if not ind.is_search:
            return [Note(f"candidate {self.label(item)}: " + ", ".join(
                f"{m['role']} {_pm(Measured.of(m)) if Measured.of(m) else m['value']}"
                for m in result.metrics if m["name"] == "ppl"), candidate_id=ind.id)]
        fitness = f"{ind.fitness:.3f}" if self.ranking is None else _pm(ind.proxy)
        return [Note(f"candidate {self._label(ind)}: search PPL {fitness}",
                     candidate_id=ind.id, progress=self.progress()),
                Note(f"  g{ind.generation:<3} {ind.origin:<9} {ind.fitness:>10.3f}  "
                     f"{ind.genome}", console=True)]

    def failed_notes(self, item: Item, result: CandidateResult) -> list[Note]:
        if item.mode == "remeasure":
            self._failed_remeasure.add(item.id)  # not retried in this run
            return [Note(f"halving after generation {self._halving}: re-measuring candidate "
                         f"{self.label(item)} failed: {result.error_summary}; it keeps its "
                         "proxy fitness and ranks after the re-measured metrics",
                         level="warning", candidate_id=item.id)]
        return [Note(f"candidate {self.label(item)} failed: {result.error_summary}",
                     level="error", candidate_id=item.id, progress=self.progress())]

    def _describe(self) -> list[Note]:
        s, d = self.settings, self.description
        w, t = d["search_split"], d["timings"]
        gp = self.kind == "gp"
        return [
            Note(f"{model_loaded(d)}; statistics ready in {t.get('statistics', 0.0):.1f}s "
                 f"({'computed' if t.get('statistics_computed') else 'from cache'})"),
            Note(f"{self.kind} search, seed {self.seed}: budget {self.budget} real "
                 f"evaluations, population {s.population}, {s.iterations} iterations × "
                 f"{s.offspring} offspring" + (f", top-k {s.top_k}, tournament "
                                               f"{s.tournament_size}, p_mutation {s.p_mutation}"
                                               if gp else "")
                 + f"; fitness = PPL on {w['label']} tokens from {w['offset']} "
                 f"({s.split.n or w['n']} × {w['seqlen']}, proxy) at {s.sparsity:.0%} "
                 f"{s.pattern}; calibration {s.calibration}"
                 + (" (dense-model statistics computed once; no forward pass per candidate)"
                    if s.calibration == "dense" else " (a layer-by-layer forward per candidate)")
                 + f"; equivalence {s.equivalence}; terminals {', '.join(terminals(s))}"
                 + ("" if set(terminals(s)) <= {"W", "G", "X"} else " (beyond the paper's "
                    "W, G, X)") + "; " + self._allocation_text() + self._noise_text())]

    def _allocation_text(self) -> str:
        a = self.settings.allocation
        if a.mode != "by_kind":
            return ""
        return (f"allocation by kind (beyond the paper): offsets of {', '.join(a.kinds)} on a "
                f"grid of {a.step:g} within ± {a.span:g}, re-centred on the model's parameter "
                f"counts so the whole model stays at {self.settings.sparsity:.0%}; ")

    def _noise_text(self) -> str:
        s = self.settings
        if self.ranking is None:
            return ("noise-aware ranking off (the paper's search: one proxy fitness, exact "
                    "comparisons; standard errors are recorded)")
        halving = (f"the best {self.halving_top} by proxy fitness re-measured on {self.full_n} "
                   f"windows of the same text before they rank as elites (successive halving)"
                   if self.halving_top else "no re-measurement (halving.top = 0)")
        ties = (f"fitness values within {s.noise_k:g} standard errors (paired over the same "
                "windows) are ties, won by the simpler metric" if s.noise_k > 0
                else "exact comparisons (noise_k = 0)")
        return f"noise-aware: {halving}; {ties}"

    def rank_text(self, ind: Individual) -> str:
        """`ind`'s fitness as the search ranks it: value ± SE (windows)."""
        m = self.ranking.measure(ind) if self.ranking is not None else ind.proxy
        if m is None:
            return "—"
        return f"{_pm(m)} ({m.n or '?'} windows{', re-measured' if m is ind.full else ''})"

    def _generation_note(self, generation: int, remeasured: int = 0) -> Note:
        counts = self.history.counts()
        best = self.history.best(self.ranking)
        pop = self.history.population(before=generation + 1, size=self.settings.population)
        tail = (f"real evaluations {counts['evaluated']}/{self.budget}, reused "
                f"{counts['reused']} ({saved_fraction(counts):.0%} saved), failed "
                f"{counts['failed']}, duplicates rejected {self.last_rejected}")
        if self.ranking is None:
            best_text = (f"best search PPL {best.fitness:.3f} {best.genome} (candidate "
                         f"{best.id})" if best else "no fitness yet")
            return Note(f"generation {generation}: {best_text}; population {len(pop)}; {tail}",
                        progress=self.progress())
        best_text = (f"best search PPL {self.rank_text(best)} {best.genome} (candidate "
                     f"{best.id})" if best else "no fitness yet")
        k = self.settings.top_k
        elites = self.history.ranked(before=generation + 1, size=k, ranking=self.ranking)
        n_t, tied_t = self.last_tournaments
        halving = (f"halving: {remeasured} re-measured on {self.full_n} windows (top "
                   f"{self.halving_top} by proxy), {sum(i.remeasured for i in pop)} in the "
                   "population; " if self.halving_top else "")
        noise = (f"within the noise (k = {self.settings.noise_k:g}): {elites.ties} of "
                 f"{len(elites.order)} elite places ({elites.moved} went to a simpler or "
                 f"earlier metric over a better value)"
                 + (f", {tied_t} of {n_t} tournaments" if n_t else ""))
        return Note(f"generation {generation}: {best_text}; population {len(pop)}; {halving}"
                    f"{noise}; {tail}", progress=self.progress())

    # -- passes --------------------------------------------------------------------------------

    def next_pass(self) -> Proposer | None:
        if self.settings.finalists == 0:
            return None
        from prunestudio.engine.study.proposers.finalists import Finalists

        return Finalists(self)

    def finish(self) -> list[Note]:
        counts = self.history.counts()
        search_ids = {i.id for i in self.history.search()}
        seconds = sum((c["finished_at"] or 0) - (c["started_at"] or 0)
                      for c in self.candidates.values()
                      if c["id"] in search_ids and c["started_at"] and c["finished_at"])
        rate = counts["evaluated"] / (seconds / 60) if seconds > 0 else 0.0
        best = self.history.best(self.ranking)
        remeasured = sum(i.remeasured for i in self.history.search())
        return [Note(
            f"search finished: {counts['candidates']} candidates, {counts['evaluated']} real "
            f"evaluations, {counts['reused']} fitness value(s) reused by mask equivalence "
            f"({saved_fraction(counts):.1%} of evaluations saved), {counts['failed']} failed, "
            f"{counts['skipped']} not evaluated; {rate:.2f} real evaluations per minute of "
            f"candidate time ({seconds / 60:.1f} min)"
            + (f"; {remeasured} re-measured on {self.full_n} windows (halving)"
               if self.halving_top else "")
            + (f"; best {best.genome} search PPL {self.rank_text(best)}" if best else "")
            + "".join(f"; {t}" for t in self.against_baselines(best)),
            progress=1.0)]

    def against_baselines(self, best: Individual | None) -> list[str]:
        """The best metric against each pruning baseline on the same windows: the relative
        difference, its standard error and whether it is beyond the noise (|z| ≥ k; k =
        noise_k, or 2 where comparisons are exact)."""
        if best is None:
            return []
        k = self.settings.noise_k if self.settings.noise_k > 0 else 2.0
        out = []
        for b in self.history.individuals:
            if b.is_search or b.method == "dense" or b.proxy is None:
                continue
            label = CandidateSpec.model_validate(self.candidates[b.id]["spec"]).label
            if best.mask_hash is not None and best.mask_hash == b.mask_hash:
                out.append(f"vs {label}: the same pruned model (identical masks)")
                continue
            mine, theirs = best.proxy, b.proxy
            if self.ranking is not None and best.full is not None and b.full is not None:
                mine, theirs = best.full, b.full
            c = compare(mine, theirs, k)
            if c["z"] is None:  # fewer than two windows, or no spread at all
                out.append(f"vs {label} {_pm(theirs)}: {c['ratio']:+.2%} (no standard error)")
                continue
            verdict = (("better beyond the noise" if c["ratio"] < 0 else
                        "worse beyond the noise") if c["beyond_noise"]
                       else "within the noise: not distinguishable")
            pairing = (f"paired over {c['windows']} windows" if c["paired"]
                       else "unpaired")
            out.append(f"vs {label} {_pm(theirs)}: {c['ratio']:+.2%} ± {c['se']:.2%} "
                       f"({pairing}, z = {c['z']:+.1f}): {verdict} (k = {k:g})")
        return out


def _pm(m: Measured | None) -> str:
    """PPL ± its standard error."""
    if m is None:
        return "—"
    se = m.ppl_se
    return f"{m.value:.3f}" + (f" ± {se:.3f}" if se is not None and math.isfinite(se) else "")
