"""GBLM-Pruner (Das et al., 2023): |W|·‖X‖ + |W|·G, per output row.

G = sqrt(Σ_s (100 · ∂L_s/∂W)²) over the calibration samples, from the dense model (cached);
‖X‖ is Wanda's scaler_row from the sequential pass — as in the authors' code.
"""

import torch
from prunestudio.engine.methods.base import LayerInputs, ScoreMethod, x_scale


class GBLM(ScoreMethod):
    name = "gblm"
    description = "|W|·‖X‖ + |W|·G (gradient-based, Das et al. 2023)"
    needs_x = True
    needs_grad = True

    def score(self, weight: torch.Tensor, inputs: LayerInputs, options) -> torch.Tensor:
        if inputs.grad is None:
            raise RuntimeError("gblm: gradient statistics were not computed")
        w = weight.abs()
        return w * x_scale(inputs, self.name) + w * inputs.grad.to(w.device).float()
