"""Random search over symbolic metrics: the baseline GP must beat.

Same initial population as GP with the same seed, same budget of real evaluations, same
simplification, deduplication, mask-equivalence reuse and evaluation. Each later generation
draws `offspring` fresh random trees from the initial population's depth distribution
(ramped half-and-half over `init_depth`), origin ``random``, no parents.
"""

from __future__ import annotations

from prunestudio.engine.search.base import (
    MAX_TRIES_PER_PROPOSAL,
    SearchStrategy,
    _Batch,
    generation_rng,
    ramped_tree,
)
from prunestudio.engine.search.state import SearchHistory


class RandomSearch(SearchStrategy):
    kind = "random"

    def _propose(self, history: SearchHistory, generation: int, batch: _Batch) -> None:
        rng = generation_rng(self.seed, generation, "random")
        # continue the ramp where the initial population left it, so depths keep cycling
        start = generation * batch.limit
        for i in range(MAX_TRIES_PER_PROPOSAL * batch.limit):
            if batch.full:
                return
            batch.add(ramped_tree(rng, start + i, self.settings), "random")
