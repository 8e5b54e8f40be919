"""Pruner-Zero's genetic programming over symbolic pruning metrics (study kind ``gp``).

One iteration (generation g ≥ 1) proposes `offspring` children:

1. the population is the `population` best distinct metrics recorded so far (elitist μ + λ:
   a child enters only by beating the worst; mask-equivalent metrics count once);
2. each parent wins a tournament of `tournament_size` individuals drawn from the `top_k` best
   (the second tournament excludes the first winner when the top holds two or more);
3. subtree crossover swaps one random subtree of each parent (an internal node with
   probability 0.9; children deeper than `max_depth` are redrawn);
4. each child is mutated with probability `p_mutation` (paper: 0.5): one node replaced by
   another of the same arity (leaf → leaf, unary → unary, binary → binary);
5. with `[search] allocation` by_kind (beyond the paper), the children's per-kind offsets are
   a kind-by-kind uniform crossover of the parents', and each child's offsets are mutated with
   probability `p_mutation` (one kind ± one step), from a random stream of their own;
6. Opposing Operation Simplification, then structural deduplication: a child already proposed
   in this search is dropped and the loop draws again.

Origin of a child: ``mutation`` if it was mutated after crossover, else ``crossover``; its
parents are the two candidate ids.

Noise-aware (`[search] noise_aware`, the default): the population is ordered by
`search.noise.rank` (re-measured metrics first; fitness values within `noise_k` standard errors
are ties, won by the simpler metric) and a tournament's winner is the drawn individual placed
first in that order, so no parent is chosen on a difference smaller than the noise. The random
draws are the same as the paper's; with `noise_aware = false` the order is the exact one by
(fitness, recording order) and the proposals are the paper's search's.
"""

from __future__ import annotations

import random

from prunestudio.engine.search.allocation import cross_offsets, mutate_offsets
from prunestudio.engine.search.base import _Batch, terminals
from prunestudio.engine.search.state import Individual, SearchHistory
from prunestudio.engine.study.proposers.symbolic_search import (
    MAX_TRIES_PER_PROPOSAL,
    SymbolicSearch,
    generation_rng,
    ramped_tree,
)
from prunestudio.engine.symbolic import crossover, point_mutation


def tournament(rng: random.Random, pool: list[Individual], size: int,
               exclude: Individual | None = None,
               position: dict[int, int] | None = None) -> Individual:
    """The fittest of `size` individuals drawn without replacement from `pool`: the lowest
    (fitness, recording order), or with `position` (noise-aware) the one placed first."""
    return draw(rng, pool, size, exclude, position)[0]


def draw(rng: random.Random, pool: list[Individual], size: int,
         exclude: Individual | None = None, position: dict[int, int] | None = None
         ) -> tuple[Individual, list[Individual]]:
    """A tournament's winner and the individuals drawn (`tournament`)."""
    choices = [p for p in pool if p is not exclude] if exclude is not None and len(pool) > 1 \
        else pool
    drawn = rng.sample(choices, min(size, len(choices)))
    if position is None:
        return min(drawn, key=lambda i: (i.fitness, i.idx)), drawn
    return min(drawn, key=lambda i: position[i.id]), drawn


class GPSearch(SymbolicSearch):
    kind = "gp"

    def _propose(self, history: SearchHistory, generation: int, batch: _Batch) -> None:
        s = self.settings
        rng = generation_rng(self.seed, generation, "gp")
        by_kind = s.allocation.mode == "by_kind"
        # the allocation's own stream: with allocation uniform the trees are the paper's search's
        alloc_rng = generation_rng(self.seed, generation, "allocation")
        top = history.population(before=generation, size=s.population,
                                 ranking=self.ranking)[: s.top_k]
        position = {ind.id: i for i, ind in enumerate(top)} if self.ranking else None
        if not top:  # nothing survived (every candidate failed): start again at random
            for i in range(MAX_TRIES_PER_PROPOSAL * batch.limit):
                if batch.full:
                    return
                batch.add(ramped_tree(rng, i, s), "random")
            return
        for _ in range(MAX_TRIES_PER_PROPOSAL * batch.limit):
            if batch.full:
                return
            a, drawn_a = draw(rng, top, s.tournament_size, position=position)
            b, drawn_b = draw(rng, top, s.tournament_size, exclude=a, position=position)
            try:
                children = crossover(a.tree, b.tree, rng, max_depth=s.max_depth)
            except ValueError:  # a parent deeper than max_depth (recorded by an older run)
                batch.rejected += 1
                continue
            selection = [self._tournament_record(w, d) for w, d in ((a, drawn_a), (b, drawn_b))]
            allocations = (cross_offsets(a.offsets, b.offsets, alloc_rng, s.allocation)
                           if by_kind else ((), ()))
            for child, offsets in zip(children, allocations, strict=True):
                origin = "crossover"
                if rng.random() < s.p_mutation:
                    child = point_mutation(child, rng, leaves=terminals(s))
                    origin = "mutation"
                if by_kind and alloc_rng.random() < s.p_mutation:
                    offsets = mutate_offsets(offsets, alloc_rng, s.allocation)
                    origin = "mutation"
                if batch.add(child, origin, (a.id, b.id), offsets):
                    self.record_selection(batch.out[-1].genome, selection)
                if batch.full:
                    return
