"""A search's second pass: the `finalists` best distinct metrics by search fitness are measured
again on the [[evaluation]] sets (held-out text, fidelity full), metrics added to the same
candidates. A finalist whose pruned model equals one already measured there takes its figures
(`equivalence.held_out_from`). A noise-aware search picks them in its own order
(`search.noise`: re-measured metrics first, ties within the noise to the simpler metric)."""

from __future__ import annotations

from prunestudio.engine.study.equivalence import held_out_from
from prunestudio.engine.study.executor import CandidateResult, Job
from prunestudio.engine.study.proposers.base import Item, Note, Proposer, Reuse, Round


class Finalists(Proposer):
    def __init__(self, search) -> None:
        self.search = search  # the SymbolicSearch whose state (history, metrics) this reads
        self._asked = False

    def _extra(self, rank: int) -> dict:
        by = "search-split PPL"
        if self.search.ranking is not None:
            by += (f" (noise-aware: re-measured first, ties within {self.search.ranking.k:g} "
                   "SE to the simpler metric)")
        return {"stage": "finalist", "finalist_rank": rank, "selected_by": by}

    def restore(self, candidates, description) -> list[Note]:
        self.description = description
        self.search.restore(candidates, description)  # fresh state, its events not repeated
        return []

    @property
    def candidates(self):
        return self.search.candidates

    def tell(self, candidate) -> None:
        self.search.tell(candidate)

    def ask(self) -> Round | None:
        if self._asked:
            return None
        self._asked = True
        return Round(name="finalists")

    def _wanted(self) -> set[tuple[str, str]]:
        return {(ev["role"], ev["fidelity"]) for ev in self.description["evaluations"]}

    def todo(self, round: Round) -> list[Item]:
        wanted, out = self._wanted(), []
        finals = self.search.history.population(size=self.search.settings.finalists,
                                                ranking=self.search.ranking)
        for rank, ind in enumerate(finals, 1):
            have = {(m["role"], m["fidelity"]) for m in self.search.metrics[ind.id]
                    if m["name"] == "ppl"}
            if not wanted <= have:
                out.append(Item(self.candidates[ind.id], mode="remeasure", rank=rank))
        return out

    def plan(self, item: Item) -> Job | Reuse:
        ind = self.search.history.get(item.id)
        reuse = held_out_from(ind, self.search.history, self.search.metrics, self._wanted(),
                              self._extra(item.rank))
        if reuse is not None:
            reuse.notes = [Note(
                f"finalist {item.rank}: candidate {ind.id} {ind.expression}: same pruned model "
                f"as candidate {reuse.ref_id}, its held-out figures reused: " + ", ".join(
                    f"{m['role']} {m['value']:.3f}" for m in reuse.metrics), candidate_id=ind.id)]
            return reuse
        return Job(ind.id, item.candidate["spec"],
                   [{"name": "perplexity", "settings": {"protocol": self._extra(item.rank)}}])

    def where(self, item: Item) -> str:
        return f"before finalist {item.rank}"

    def progress(self) -> float:
        return self.search.progress()

    def bar(self) -> tuple[str, int, int]:
        return "finalists", 0, self.search.settings.finalists

    def done_notes(self, item: Item, result: CandidateResult) -> list[Note]:
        ind = self.search.history.get(item.id)
        search = (f"{ind.fitness:.3f} (proxy)" if self.search.ranking is None
                  else self.search.rank_text(ind))
        return [Note(f"finalist {item.rank}: candidate {ind.id} {ind.expression}: search PPL "
                     f"{search} → " + ", ".join(
                         f"{m['role']} {m['value']:.3f}" for m in result.metrics),
                     candidate_id=ind.id),
                Note(f"finalist {item.rank}: {ind.expression}  search {ind.fitness:.3f}"
                     + "".join(f"  {m['role']} {m['value']:.3f}" for m in result.metrics),
                     console=True)]

    def failed_notes(self, item: Item, result: CandidateResult) -> list[Note]:
        return [Note(f"finalist {item.rank} (candidate {item.id}) failed on the evaluation sets: "
                     f"{result.error_summary}", level="error", candidate_id=item.id)]
