"""Searches over symbolic pruning metrics (Pruner-Zero): GP and its random-search baseline.

- `base`: the ask/tell seam (`SearchStrategy`, `Proposal`), per-generation random streams, the
  shared initial population.
- `gp`: tournament among the top-k, subtree crossover, same-arity mutation (`GPSearch`).
- `random_search`: fresh random trees of the same depth distribution (`RandomSearch`).
- `state`: the search state rebuilt from the store (`SearchHistory`, `Individual`).
- `fitness`: search-split fitness and mask-equivalence reuse (`zero_pattern_hash`).
- `runner`: `SearchRunner`, which runs a gp / random study to its budget, resumably.
"""

from __future__ import annotations

from prunestudio.engine.search.base import Proposal, SearchStrategy, generation_rng
from prunestudio.engine.search.gp import GPSearch
from prunestudio.engine.search.random_search import RandomSearch
from prunestudio.engine.search.state import Individual, SearchHistory, saved_fraction

STRATEGIES: dict[str, type[SearchStrategy]] = {"gp": GPSearch, "random": RandomSearch}


def make_strategy(kind: str, settings, seed: int) -> SearchStrategy:
    """The strategy of a study kind ('gp' or 'random')."""
    if kind not in STRATEGIES:
        raise ValueError(f"unknown search kind {kind!r}; allowed: {', '.join(STRATEGIES)}")
    return STRATEGIES[kind](settings, seed)


__all__ = [
    "STRATEGIES", "GPSearch", "Individual", "Proposal", "RandomSearch", "SearchHistory",
    "SearchStrategy", "generation_rng", "make_strategy", "saved_fraction",
]
