"""GBLM-Pruner (Das et al., 2023): |W|·‖X‖ + |W|·G, per output row.

As the authors' code computes it (VILA-Lab/GBLM-Pruner, `lib/prune.py` `prune_gblm`):
score = |W| · sqrt(scaler_row) + |W| · G, compared within each output row (unstructured: the
lowest fraction of the row; N:M: the N lowest of every M consecutive inputs), layer by layer
with each block's X from the already-pruned blocks before it.
  G          = sqrt(Σ_s (100 · ∂L_s/∂W)²) over the calibration samples, one backward of the
               mean token loss per sample on the dense model (`gradient_computation.py`'s l2
               aggregate, scale 100), cached; `StatsCache.gradients`.
  scaler_row = Σ over the tokens of x², divided by the number of samples (`WrappedGPT`).
What differs from that code (dtype, eval mode, rounding of the per-row count) and why:
docs/reference-fidelity.md.
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
