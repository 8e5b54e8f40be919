"""Symbolic metrics (Pruner-Zero): score = an expression over W = |weight|, X, G.

The expression is parsed and checked when the spec is validated (a malformed one is a clear
error naming the position), stored in canonical text, and evaluated by the engine's own
interpreter (`prunestudio.engine.symbolic`) — never Python ``eval``. Scope ``row`` (default)
compares within each output row like Wanda, ``matrix`` uses one threshold per matrix; N:M
patterns compare within groups of M columns.

Which statistics it needs depends on the expression: `needs(options)` reads them off the tree.
The class flags stay conservative (X and G) for callers that only read the flags.
"""

from __future__ import annotations

import torch
from prunestudio.engine.methods.base import LayerInputs, ScoreMethod
from prunestudio.engine.symbolic.interpret import evaluate
from prunestudio.engine.symbolic.parse import parse
from prunestudio.engine.symbolic.tree import leaves_used

from prunestudio.schema.method_options import SymbolicOptions


class Symbolic(ScoreMethod):
    name = "symbolic"
    description = "an expression over W, G, X (Pruner-Zero), e.g. mul(sqr(W),mms(G))"
    options_model = SymbolicOptions
    needs_x = True  # conservative class flags; `needs(options)` is exact
    needs_grad = True

    def needs(self, options: SymbolicOptions) -> frozenset[str]:
        used = leaves_used(parse(options.expression))
        return frozenset(need for leaf, need in (("X", "x"), ("G", "grad")) if leaf in used)

    def score(self, weight: torch.Tensor, inputs: LayerInputs,
              options: SymbolicOptions) -> torch.Tensor:
        tree = parse(options.expression)
        used = leaves_used(tree)
        x = g = None
        if "X" in used:
            if inputs.stats is None or inputs.stats.x_sqnorm is None:
                raise RuntimeError(f"symbolic {tree}: activation statistics were not collected")
            x = inputs.stats.x_sqnorm
        if "G" in used:
            if inputs.grad is None:
                raise RuntimeError(f"symbolic {tree}: gradient statistics were not computed")
            g = inputs.grad
        return evaluate(tree, W=weight.abs(), X=x, G=g)
