"""Search machinery shared by the symbolic-metric proposers (Pruner-Zero GP, random search).

- `base`: proposals, per-generation random streams, deduplication, the ramped initial trees.
- `state`: the search state rebuilt from the store (`SearchHistory`, `Individual`).
- `fitness`: search-split fitness checks and mask-equivalence hashing (`zero_pattern_hash`).

The searches themselves are proposers in `prunestudio.engine.study.proposers` (`gp`, `random`)
driven by the one study loop, `prunestudio.engine.study.loop.run_study`.
"""

from __future__ import annotations

from prunestudio.engine.search.base import Proposal, generation_rng
from prunestudio.engine.search.state import Individual, SearchHistory, saved_fraction

__all__ = ["Individual", "Proposal", "SearchHistory", "generation_rng", "saved_fraction"]
