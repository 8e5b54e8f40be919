"""Magnitude pruning: score |W|.

The Wanda repository's magnitude baseline thresholds once per *matrix*; per *row* is offered too,
and the scope is part of the spec so every figure says which one it is.
"""

from typing import Literal

import torch
from prunestudio.engine.methods.base import LayerInputs, MethodOptions, ScoreMethod


class MagnitudeOptions(MethodOptions):
    scope: Literal["matrix", "row"] = "matrix"
    # Quantized weights (the default model is Q4_1) have many equal |W| in a row; which of them
    # is pruned changes PPL by several % (see engine.masks.lowest). "topk" reproduces the
    # reference code's choice on CPU.
    ties: Literal["index", "topk"] = "index"


class Magnitude(ScoreMethod):
    name = "magnitude"
    description = "|W|; one threshold per matrix (scope=matrix, the reference) or per row"
    options_model = MagnitudeOptions
    default_scope = "matrix"

    def score(self, weight: torch.Tensor, inputs: LayerInputs, options) -> torch.Tensor:
        return weight.abs()
