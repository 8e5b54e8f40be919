"""Magnitude pruning: score |W|.

The Wanda repository's magnitude baseline thresholds once per *matrix*; per *row* is offered too,
and the scope is part of the spec so every figure says which one it is.
"""


import torch
from prunestudio.engine.methods.base import LayerInputs, ScoreMethod

from prunestudio.schema.method_options import MagnitudeOptions


class Magnitude(ScoreMethod):
    name = "magnitude"
    description = "|W|; one threshold per matrix (scope=matrix, the reference) or per row"
    options_model = MagnitudeOptions
    default_scope = "matrix"

    def score(self, weight: torch.Tensor, inputs: LayerInputs, options) -> torch.Tensor:
        return weight.abs()
