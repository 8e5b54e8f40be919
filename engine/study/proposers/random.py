"""Random search over symbolic metrics (study kind ``random``): the baseline GP must beat.

The whole search is this module: a `SymbolicSearch` (baselines, generation 0, budget, mask
equivalence, finalists and summary are shared) whose later generations draw `offspring` fresh
random trees from the initial population's depth distribution (ramped half-and-half over
`init_depth`), origin ``random``, no parents; with `[search] allocation` by_kind each with
random per-kind offsets. Same seed as a GP study → same generation 0.
Its proposals never read a fitness; the noise-aware fitness (successive halving, ties within
the noise) decides which metrics are re-measured, the finalists and the best, as in GP, so the
two are compared on the same footing.
"""

from __future__ import annotations

from prunestudio.engine.search.allocation import random_offsets
from prunestudio.engine.search.base import _Batch
from prunestudio.engine.search.state import SearchHistory
from prunestudio.engine.study.proposers.symbolic_search import (
    MAX_TRIES_PER_PROPOSAL,
    SymbolicSearch,
    generation_rng,
    ramped_tree,
)


class RandomSearch(SymbolicSearch):
    kind = "random"

    def _propose(self, history: SearchHistory, generation: int, batch: _Batch) -> None:
        rng = generation_rng(self.seed, generation, "random")
        allocation = self.settings.allocation
        alloc_rng = generation_rng(self.seed, generation, "allocation")
        # continue the ramp where the initial population left it, so depths keep cycling
        start = generation * batch.limit
        for i in range(MAX_TRIES_PER_PROPOSAL * batch.limit):
            if batch.full:
                return
            offsets = (random_offsets(alloc_rng, allocation)
                       if allocation.mode == "by_kind" else ())
            batch.add(ramped_tree(rng, start + i, self.settings), "random", offsets=offsets)
