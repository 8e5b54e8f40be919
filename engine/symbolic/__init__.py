"""Symbolic pruning metrics (Pruner-Zero): expression trees over W, G, X and their tooling.

- `grammar`: leaf and op names, arities (no torch).
- `ops`: each op's precise, numerically safe fp32 definition (the table is there).
- `tree`: the immutable `Node`, canonical text / JSON forms, depth / size / paths.
- `parse`: text → tree with positioned error messages (never ``eval``).
- `interpret`: the vectorised fp32 evaluator on tensors.
- `simplify`: exact Opposing Operation Simplification and the structural dedup key.
- `equivalence`: rank-preserving outer transforms (symbolic mask equivalence).
- `maskhash`: a cheap hash of the masks on a probe set (numeric mask equivalence).
- `variation`: random trees, subtree crossover, same-arity mutation, depth limits.
- `known`: published metrics as expressions.

Everything but `ops`, `interpret` and `maskhash` is torch-free; those names are imported on
first use, so ``from prunestudio.engine.symbolic import parse`` stays light.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from prunestudio.engine.symbolic.grammar import BINARY, COMMUTATIVE, LEAVES, UNARY
from prunestudio.engine.symbolic.known import KNOWN_METRICS, known_metric
from prunestudio.engine.symbolic.parse import parse
from prunestudio.engine.symbolic.rank_key import rank_key, strip_rank_preserving
from prunestudio.engine.symbolic.simplify import canonical_key, is_nonneg, simplify
from prunestudio.engine.symbolic.tree import (
    ExpressionError,
    Node,
    depth,
    from_json,
    leaf,
    leaves_used,
    op,
    replace,
    size,
    subtree,
    to_json,
    to_text,
    walk,
)
from prunestudio.engine.symbolic.variation import (
    DEFAULT_MAX_DEPTH,
    INIT_DEPTH,
    crossover,
    point_mutation,
    ramped_half_and_half,
    random_tree,
    subtree_mutation,
)

if TYPE_CHECKING:
    from prunestudio.engine.symbolic.interpret import evaluate
    from prunestudio.engine.symbolic.maskhash import (
        ProbeLayer,
        layer_mask,
        mask_hash,
        probe_layers,
    )
    from prunestudio.engine.symbolic.ops import EPS, EXP_CLAMP, OPS

_LAZY = {
    "evaluate": "interpret", "ProbeLayer": "maskhash", "layer_mask": "maskhash",
    "mask_hash": "maskhash", "probe_layers": "maskhash", "EPS": "ops", "EXP_CLAMP": "ops",
    "OPS": "ops",
}


def __getattr__(name: str):
    if name in _LAZY:
        return getattr(importlib.import_module(f"{__name__}.{_LAZY[name]}"), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = [
    "BINARY", "COMMUTATIVE", "DEFAULT_MAX_DEPTH", "EPS", "EXP_CLAMP", "INIT_DEPTH",
    "KNOWN_METRICS", "LEAVES", "OPS", "UNARY", "ExpressionError", "Node", "ProbeLayer",
    "canonical_key", "crossover", "depth", "evaluate", "from_json", "is_nonneg", "known_metric",
    "layer_mask", "leaf", "leaves_used", "mask_hash", "op", "parse", "point_mutation",
    "probe_layers", "ramped_half_and_half", "random_tree", "rank_key", "replace", "simplify",
    "size", "strip_rank_preserving", "subtree", "subtree_mutation", "to_json", "to_text", "walk",
]
