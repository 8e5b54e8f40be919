"""Symbolic metrics (Pruner-Zero): score = an expression over W = |weight|, X, G.

The expression is parsed and checked when the spec is validated (a malformed one is a clear
error naming the position), stored in canonical text, and evaluated by the engine's own
interpreter (`prunestudio.engine.symbolic`) — never Python ``eval``. Scope ``row`` (default)
compares within each output row like Wanda, ``matrix`` uses one threshold per matrix; N:M
patterns compare within groups of M columns.

Which statistics it needs depends on the expression: `needs(options)` reads them off the tree.
The class flags stay conservative (X and G) for callers that only read the flags. The leaf D
(beyond the paper's W, G, X) is the diagonal of the upper Cholesky factor of the damped inverse
Hessian, computed from H as SparseGPT does (1 % damping, dead inputs given H_jj = 1) and kept
per Hessian tensor, so a search computes it once per layer.
"""

from __future__ import annotations

import weakref
from functools import lru_cache

import torch
from prunestudio.engine.methods.base import LayerInputs, ScoreMethod
from prunestudio.engine.methods.sparsegpt import inverse_hessian_factor
from prunestudio.engine.symbolic.interpret import evaluate
from prunestudio.engine.symbolic.parse import parse
from prunestudio.engine.symbolic.tree import leaves_used

from prunestudio.schema.method_options import SymbolicOptions

D_DAMP = 0.01  # SparseGPT's default damping (percdamp)
# id(Hessian) -> (a weak reference to it, its D); an entry leaves with its Hessian (tensors
# compare elementwise, so a WeakKeyDictionary cannot hold them)
_D_CACHE: dict[int, tuple[weakref.ref, torch.Tensor]] = {}


def inverse_hessian_diagonal(hessian: torch.Tensor, where: str = "layer") -> torch.Tensor:
    """Leaf D of one layer, (in,) fp32: diag(U) with U the upper Cholesky factor of the damped
    H⁻¹ — the d in SparseGPT's mask score w² / d²."""
    key = id(hessian)
    entry = _D_CACHE.get(key)
    if entry is not None and entry[0]() is hessian:
        return entry[1]
    U, _ = inverse_hessian_factor(hessian.detach().float().clone(), D_DAMP, where)
    d = torch.diagonal(U).clone()
    _D_CACHE[key] = (weakref.ref(hessian, lambda _, key=key: _D_CACHE.pop(key, None)), d)
    return d


@lru_cache(maxsize=256)
def _parsed(expression: str):
    """The tree of an expression and its leaves, parsed once per expression (a candidate
    scores every layer with one expression; trees are never mutated)."""
    tree = parse(expression)
    return tree, leaves_used(tree)


class Symbolic(ScoreMethod):
    name = "symbolic"
    description = ("an expression over W, G, X (Pruner-Zero; D: inverse-Hessian diagonal), "
                   "e.g. mul(sqr(W),mms(G))")
    options_model = SymbolicOptions
    needs_x = True  # conservative class flags; `needs(options)` is exact
    needs_grad = True

    def needs(self, options: SymbolicOptions) -> frozenset[str]:
        used = _parsed(options.expression)[1]
        return frozenset(need for leaf, need in (("X", "x"), ("G", "grad"), ("D", "hessian"))
                         if leaf in used)

    def score(self, weight: torch.Tensor, inputs: LayerInputs,
              options: SymbolicOptions) -> torch.Tensor:
        tree, used = _parsed(options.expression)
        x = g = d = None
        if "X" in used:
            if inputs.stats is None or inputs.stats.x_sqnorm is None:
                raise RuntimeError(f"symbolic {tree}: activation statistics were not collected")
            x = inputs.stats.x_sqnorm
        if "G" in used:
            if inputs.grad is None:
                raise RuntimeError(f"symbolic {tree}: gradient statistics were not computed")
            g = inputs.grad
        if "D" in used:
            if inputs.stats is None or inputs.stats.hessian is None:
                raise RuntimeError(f"symbolic {tree}: Hessian statistics were not collected")
            d = inverse_hessian_diagonal(inputs.stats.hessian, str(tree))
        # W = |weight|; X, G, D are the engine's statistics: non-negative by construction
        return evaluate(tree, W=weight.abs(), X=x, G=g, D=d, check_sign=False)
