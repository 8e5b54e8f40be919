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
4. stop at the budget, after `iterations` generations or at the candidate cap;
5. **finalists** (`search.finalists`): a second pass of the loop (`proposers.finalists`);
6. **summary**: real evaluations, reused fitness, failures, evaluations per minute.

Calibration of search candidates defaults to ``dense``: every candidate prunes from the dense
model's statistics, computed once (`warm`), instead of a forward pass per candidate.
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any

from prunestudio.engine.search.base import (
    MAX_TRIES_PER_PROPOSAL,
    _Batch,
    generation_rng,
    ramped_tree,
)
from prunestudio.engine.search.base import Proposal as MetricProposal
from prunestudio.engine.search.state import BASELINE, Individual, SearchHistory, saved_fraction
from prunestudio.engine.study.equivalence import by_rank_key, fitness_reuse, known_masks
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
from prunestudio.engine.symbolic import parse, rank_key

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

    @classmethod
    def from_config(cls, config) -> SymbolicSearch:
        return cls(config.search, config.study.seed, config.study.measurements)

    # -- the pure proposal function ------------------------------------------------------------

    def proposals(self, history: SearchHistory, generation: int) -> list[MetricProposal]:
        """The proposals of `generation` (0: the initial population)."""
        batch = _Batch(history.seen(generation), self.batch_size(generation),
                       self.settings.max_depth)
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
        for i in range(MAX_TRIES_PER_PROPOSAL * batch.limit):
            if batch.full:
                break
            batch.add(ramped_tree(rng, i, self.settings), "init")

    @abstractmethod
    def _propose(self, history: SearchHistory, generation: int, batch: _Batch) -> None:
        """Fill `batch` with the proposals of a generation ≥ 1."""

    # -- state ---------------------------------------------------------------------------------

    def restore(self, candidates, description) -> list[Note]:
        self.description = description
        self.history = SearchHistory()
        for c in proposed(candidates):
            self.tell(c)
        last = self.history.last_generation()
        self._generation = 0 if last is None else last
        return self._describe()

    def tell(self, candidate: dict[str, Any]) -> None:
        self.candidates[candidate["id"]] = candidate
        self.metrics[candidate["id"]] = candidate.get("metrics") or []
        self.history.tell(Individual.from_candidate(candidate))

    def warm(self) -> list[str]:
        s, out = self.settings, []
        if "X" in s.leaves or s.baselines:
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
        if self._stopped:
            return None
        g = self._generation
        proposals = self.proposals(self.history, g)
        room = self.settings.candidate_cap - len(self.history.search(before=g))
        return Round([Proposal(self.settings.candidate_spec(p.expression).canonical(), p.origin,
                               p.parents, g) for p in proposals[:max(0, room)]],
                     generation=g, n_proposed=len(proposals))

    def todo(self, round: Round) -> list[Item]:
        if round.generation is None:
            return super().todo(round)
        return [Item(self.candidates[i.id]) for i in self.history.generation(round.generation)
                if i.status == "pending"]

    def end_round(self, round: Round, items: list[Item]) -> list[Note]:
        g = round.generation
        if g is None:
            return []
        if not items and round.n_proposed == 0 and not self.history.generation(g):
            self._stopped = True
            return [Note(f"generation {g}: no new distinct metric could be proposed; the "
                         "search stops", level="warning")]
        notes = [self._generation_note(g)] if items else []
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
        if not ind.is_search:  # a baseline: search split and the full evaluation sets
            return Job(ind.id, item.candidate["spec"], [
                {"name": "sparsity"}, {"name": "fitness", "settings": {"check_finite": False}},
                {"name": "perplexity", "settings": {"protocol": {"stage": "baseline"}}},
                *self.extra], hash_masks=True)
        if self.history.real_evaluations >= self.budget:
            return Skip(f"not evaluated: the budget of {self.budget} real evaluations was "
                        "reached", {"budget": self.budget})
        mode = self.settings.equivalence
        spec = self.settings.candidate_spec(ind.expression)
        info = {"expression": ind.expression, "canonical_key": ind.key,
                "rank_key": rank_key(parse(ind.expression)),
                "calibration": self.settings.calibration}
        ref = by_rank_key(self.history, mode, info["rank_key"])
        if ref is not None:
            info = {**info, **self.description.get("identity", {}), "label": spec.label}
            return self._reuse(ind, ref, "rank_key", ref.mask_hash, info)
        return Job(ind.id, spec.canonical(), [{"name": "sparsity"}, {"name": "fitness"},
                                              *self.extra],
                   hash_masks=True, equivalent_masks=known_masks(self.history, mode), info=info,
                   done_info={"evaluation": "real"})

    def reuse(self, item: Item, result: CandidateResult) -> Reuse:
        ref = self.history.get(result.equivalent_to)
        return self._reuse(self._ind(item), ref, "mask", result.info["mask_hash"], result.info)

    def _reuse(self, ind: Individual, ref: Individual, how: str, mask_hash: str | None,
               info: dict[str, Any]) -> Reuse:
        reuse = fitness_reuse(ind.id, ref, self.metrics[ref.id], how, mask_hash, info)
        reuse.notes = [
            Note(f"candidate {self._label(ind)}: ≡ candidate {ref.id} by {how}, search PPL "
                 f"{ref.fitness:.3f} reused", candidate_id=ind.id, progress=self.progress()),
            Note(f"  g{ind.generation:<3} {ind.origin:<9} {'≡ ' + str(ref.id):>10}  "
                 f"{ind.expression}", console=True)]
        return reuse

    # -- events --------------------------------------------------------------------------------

    def progress(self) -> float:
        return min(1.0, self.history.real_evaluations / max(1, self.budget))

    def bar(self) -> tuple[str, int, int]:
        return f"{self.kind} search (real evaluations)", self.history.real_evaluations, self.budget

    @staticmethod
    def _label(ind: Individual) -> str:
        return f"{ind.id} (gen {ind.generation}, {ind.origin}) {ind.expression}"

    def label(self, item: Item) -> str:
        ind = self._ind(item)
        if not ind.is_search:
            return f"{ind.id} (baseline {CandidateSpec.model_validate(item.candidate['spec']).label})"
        return self._label(ind)

    def where(self, item: Item) -> str:
        ind = self._ind(item)
        if not ind.is_search:
            return f"before baseline {CandidateSpec.model_validate(item.candidate['spec']).label}"
        return f"before candidate {ind.id}"

    def done_notes(self, item: Item, result: CandidateResult) -> list[Note]:
        ind = self._ind(item)
        if not ind.is_search:
            return [Note(f"candidate {self.label(item)}: " + ", ".join(
                f"{m['role']} {m['value']:.3f}" for m in result.metrics if m["name"] == "ppl"),
                candidate_id=ind.id)]
        return [Note(f"candidate {self._label(ind)}: search PPL {ind.fitness:.3f}",
                     candidate_id=ind.id, progress=self.progress()),
                Note(f"  g{ind.generation:<3} {ind.origin:<9} {ind.fitness:>10.3f}  "
                     f"{ind.expression}", console=True)]

    def failed_notes(self, item: Item, result: CandidateResult) -> list[Note]:
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
                 + f"; fitness = PPL on {w['label']} tokens from {w['offset']} ({w['n']} × "
                 f"{w['seqlen']}, proxy) at {s.sparsity:.0%} {s.pattern}; calibration "
                 f"{s.calibration}"
                 + (" (dense-model statistics computed once; no forward pass per candidate)"
                    if s.calibration == "dense" else " (a layer-by-layer forward per candidate)")
                 + f"; equivalence {s.equivalence}")]

    def _generation_note(self, generation: int) -> Note:
        counts = self.history.counts()
        best = self.history.best()
        pop = self.history.population(before=generation + 1, size=self.settings.population)
        best_text = (f"best search PPL {best.fitness:.3f} {best.expression} (candidate {best.id})"
                     if best else "no fitness yet")
        return Note(
            f"generation {generation}: {best_text}; population {len(pop)}; real evaluations "
            f"{counts['evaluated']}/{self.budget}, reused {counts['reused']} "
            f"({saved_fraction(counts):.0%} saved), failed {counts['failed']}, duplicates "
            f"rejected {self.last_rejected}", progress=self.progress())

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
        best = self.history.best()
        return [Note(
            f"search finished: {counts['candidates']} candidates, {counts['evaluated']} real "
            f"evaluations, {counts['reused']} fitness value(s) reused by mask equivalence "
            f"({saved_fraction(counts):.1%} of evaluations saved), {counts['failed']} failed, "
            f"{counts['skipped']} not evaluated; {rate:.2f} real evaluations per minute of "
            f"candidate time ({seconds / 60:.1f} min)"
            + (f"; best {best.expression} search PPL {best.fitness:.3f}" if best else ""),
            progress=1.0)]
