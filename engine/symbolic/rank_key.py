"""Mask equivalence, symbolically: strip rank-preserving outer transforms.

Every pattern (per row, per matrix, N:M) keeps the highest scores of a comparison group, so a
transform f applied to the *whole* score that is strictly increasing leaves every mask unchanged:
``sqrt(mul(W,sqrt(X)))`` prunes exactly what Wanda prunes. `strip_rank_preserving` removes such
outer ops; `rank_key` is the dedup key of the result, equal for metrics that give the same masks
for every input (in exact arithmetic).

Rank-preserving outer transforms (x is the rest of the score):

=========================  ========================================================
op                         condition
=========================  ========================================================
skip, pow (x³)             always
mms, zsn, norm1, norm2     always: a positive affine map of the whole tensor
sqrt, sqr, log             x ≥ 0 (static sign analysis): increasing on [0, ∞)
tanh, exp                  x bounded in [−1, 1] (an mms / tanh / norm1 / norm2 root):
                           tanh saturates in fp32 beyond ~9 and exp is clamped at ±50,
                           so on unbounded scores they would merge many into ties
=========================  ========================================================

In fp32 a compressing transform can still merge two scores within one ulp into a tie (broken by
column index), and sqr/pow can overflow: the cheap mask hash (`maskhash.py`) is the arbiter when
it matters.
"""

from __future__ import annotations

from prunestudio.engine.symbolic.simplify import canonical_key, is_nonneg, simplify
from prunestudio.engine.symbolic.tree import Node

_ALWAYS = frozenset({"skip", "pow", "mms", "zsn", "norm1", "norm2"})
_ON_NONNEG = frozenset({"sqrt", "sqr", "log"})
_ON_BOUNDED = frozenset({"tanh", "exp"})
_BOUNDED_ROOTS = frozenset({"mms", "tanh", "norm1", "norm2"})  # values within [−1, 1]


def _rank_preserving(root: Node) -> bool:
    if root.is_leaf or len(root.children) != 1:
        return False
    (x,) = root.children
    if root.op in _ALWAYS:
        return True
    if root.op in _ON_NONNEG:
        return is_nonneg(x)
    if root.op in _ON_BOUNDED:
        return x.op in _BOUNDED_ROOTS
    return False


def strip_rank_preserving(tree: Node) -> Node:
    """Remove outer strictly increasing transforms; the masks of the result equal the tree's."""
    tree = simplify(tree)
    while _rank_preserving(tree):
        tree = simplify(tree.children[0])
    return tree


def rank_key(tree: Node) -> str:
    """Dedup key for mask equivalence: the canonical key of the stripped tree."""
    return canonical_key(strip_rank_preserving(tree))
