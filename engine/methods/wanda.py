"""Wanda (Sun et al., 2023): score |W| · ‖X_j‖₂, compared within each output row.

N:M: within each group of M consecutive input columns of a row, the N lowest are pruned.
"""

import torch
from prunestudio.engine.methods.base import LayerInputs, ScoreMethod, x_scale


class Wanda(ScoreMethod):
    name = "wanda"
    description = "|W|·‖X‖ per output row (Sun et al. 2023)"
    needs_x = True

    def score(self, weight: torch.Tensor, inputs: LayerInputs, options) -> torch.Tensor:
        return weight.abs() * x_scale(inputs, self.name)
