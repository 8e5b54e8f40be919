"""Published pruning metrics written as expressions over W, G, X (and D)."""

from __future__ import annotations

from prunestudio.engine.symbolic.parse import parse
from prunestudio.engine.symbolic.tree import Node

KNOWN_METRICS: dict[str, str] = {
    "magnitude": "W",  # |W|
    "wanda": "mul(W,sqrt(X))",  # |W|·‖X‖ (Sun et al. 2023)
    "gblm": "add(mul(W,sqrt(X)),mul(W,G))",  # |W|·‖X‖ + |W|·G (Das et al. 2023)
    "pruner_zero": "mul(sqr(W),mms(G))",  # the paper's reported best, |W|²·mms(G)
    # the same metric as the authors' released best tree (data/best_tree.json)
    "pruner_zero_released": "mul(abs(mul(W,W)),mms(G))",
    # SparseGPT's mask score w² / d² (d: inverse-Hessian Cholesky diagonal), without its OBS
    # weight update and without its 128-column blocks: the mask score alone, per row
    "sparsegpt_score": "div(sqr(W),sqr(D))",
}


def known_metric(name: str) -> Node:
    """The expression tree of a published metric, by name."""
    if name not in KNOWN_METRICS:
        raise ValueError(f"unknown metric {name!r}; known: {', '.join(KNOWN_METRICS)}")
    return parse(KNOWN_METRICS[name])
