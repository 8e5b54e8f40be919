"""What searches over symbolic metrics share: proposals, random streams, deduplication.

The proposers (`prunestudio.engine.study.proposers`: `gp`, `random`, on `symbolic`) propose
the candidates of one generation at a time::

    proposals = proposer.proposals(history, generation)   # -> list[Proposal]

`proposals` is a pure function of (settings, seed, generation, the history of *earlier* generations):
its random numbers come from `generation_rng(seed, generation)`, never from a stream that
carries over between generations. So a search killed anywhere resumes deterministically: the
runner rebuilds the history from the store and asks the unfinished generation again, which gives
the same proposals (already recorded, hence not duplicated).

Generation 0 is the same for every kind: the seed metrics (origin ``seed``) then random trees
of depth `init_depth` (ramped half-and-half, origin ``init``) up to `population` distinct
metrics. GP and random search with one seed therefore start from the same population and differ
only in how they go on.

Every proposal is simplified (exact Opposing Operation Simplification: the stored expression
computes the same values) and deduplicated by `canonical_key` against everything proposed in
earlier generations and in its own, so no metric is recorded twice.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass, field

from prunestudio.engine.search.allocation import Offsets, genome_suffix
from prunestudio.engine.symbolic import (
    Node,
    canonical_key,
    depth,
    random_tree,
    simplify,
    to_text,
)

from prunestudio.schema.study_file import SearchSection

MAX_TRIES_PER_PROPOSAL = 200


def generation_rng(seed: int, generation: int, stream: str) -> random.Random:
    """The random stream of one generation of one strategy (string seeds are hashed with
    SHA-512 by `random.Random`: stable across processes and Python runs)."""
    return random.Random(f"prunestudio-search|{seed}|{generation}|{stream}")


@dataclass(frozen=True)
class Proposal:
    """A candidate metric to record: simplified canonical text, where it came from."""

    expression: str
    origin: str  # seed | init | crossover | mutation | random
    parents: tuple[int, ...] = ()  # candidate ids
    raw: str = ""  # the tree before simplification
    key: str = ""  # canonical_key (+ the offsets' suffix)
    offsets: Offsets = ()  # per-kind sparsity offsets (allocation by_kind; () = uniform)

    @property
    def genome(self) -> str:
        return f"{self.expression}{genome_suffix(self.offsets)}"


@dataclass
class _Batch:
    """Proposals of one generation with structural deduplication and the depth limit (moving a
    ``neg`` outwards can deepen a simplified tree by one level: such a tree is not proposed, so
    every recorded metric can be a crossover parent)."""

    seen: set[str]
    limit: int
    max_depth: int
    out: list[Proposal] = field(default_factory=list)
    rejected: int = 0

    @property
    def full(self) -> bool:
        return len(self.out) >= self.limit

    def add(self, tree: Node, origin: str, parents: Sequence[int] = (),
            offsets: Offsets = ()) -> bool:
        simple = simplify(tree)
        suffix = genome_suffix(offsets)
        text, key = to_text(simple) + suffix, canonical_key(simple) + suffix
        if key in self.seen or text in self.seen or depth(simple) > self.max_depth:
            self.rejected += 1
            return False
        self.seen.update((key, text))
        self.out.append(Proposal(to_text(simple), origin, tuple(parents), to_text(tree), key,
                                 offsets))
        return True


def ramped_tree(rng: random.Random, i: int, settings: SearchSection) -> Node:
    """The i-th tree of a ramped half-and-half sequence over `init_depth`: depth limit d cycles
    over the range, alternating ``full`` (depth exactly d) and ``grow`` (depth in [min, d])."""
    lo, hi = settings.init_depth
    depths = range(lo, hi + 1)
    d = depths[(i // 2) % len(depths)]
    if i % 2:
        return random_tree(rng, d, d, "full", leaves=terminals(settings))
    return random_tree(rng, lo, d, "grow", leaves=terminals(settings))


def terminals(settings: SearchSection) -> tuple[str, ...]:
    """The search's terminal pool: its leaves, plus the constants when `constants` is on (the
    paper's space: W, G, X and no constants)."""
    from prunestudio.engine.symbolic.grammar import CONSTANTS

    return (*settings.leaves, *(CONSTANTS if settings.constants else ()))
