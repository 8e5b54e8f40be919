"""SparseGPT (Frantar & Alistarh, 2023): mask selection with an OBS weight update.

H = 2/n Σ x xᵀ (fp32). Dead inputs (H_jj = 0) get H_jj = 1 and their weights zeroed. Damping
adds `damp` × mean(diag H) to the diagonal. The upper Cholesky factor of H⁻¹ drives column-by-
column updates inside lazy blocks of `blocksize` columns; the unstructured mask is chosen per
block over all rows by w² / [H⁻¹]_jj², N:M masks per group of M columns by the same score.
A Cholesky failure is an error naming the layer — never a silent identity fallback.
"""

from __future__ import annotations

import torch
from prunestudio.engine.masks import check_finite, n_to_prune
from prunestudio.engine.methods.base import LayerInputs, LayerTarget, PruningMethod
from prunestudio.engine.models.adapters import PrunableLinear

from prunestudio.schema.method_options import SparseGPTOptions


class CholeskyError(RuntimeError):
    """H (or its inverse) is not positive definite even after damping."""


def inverse_hessian_factor(H: torch.Tensor, damp: float = 0.01, where: str = "layer",
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """(U, dead): the upper Cholesky factor of the damped H⁻¹ and the dead inputs (H_jj = 0,
    given H_jj = 1 first). `H` (fp32) is changed in place: dead diagonal entries and damping."""
    dead = torch.diag(H) == 0
    H[dead, dead] = 1
    H.diagonal().add_(damp * torch.mean(torch.diag(H)))
    L, info = torch.linalg.cholesky_ex(H)
    if info.item() != 0:
        raise CholeskyError(
            f"sparsegpt: Cholesky of the Hessian of {where} failed (not positive definite at "
            f"column {info.item()}); raise `damp` (now {damp}) or use more calibration samples"
        )
    Hinv = torch.cholesky_inverse(L)
    U, info = torch.linalg.cholesky_ex(Hinv, upper=True)
    if info.item() != 0:
        raise CholeskyError(f"sparsegpt: Cholesky of H⁻¹ of {where} failed; raise `damp`")
    return U, dead


def sparsegpt_update(weight: torch.Tensor, hessian: torch.Tensor, target: LayerTarget,
                     blocksize: int = 128, damp: float = 0.01,
                     where: str = "layer") -> tuple[torch.Tensor, torch.Tensor]:
    """Return (new weight, prune mask) for a (out, in) weight; inputs are not modified."""
    W = weight.detach().float().clone(memory_format=torch.contiguous_format)  # GPT-2: a .t() view
    H = hessian.detach().float().clone().to(W.device)
    rows, cols = W.shape
    # NaN / inf statistics are a candidate error of their own, not a "raise damp" Cholesky hint
    check_finite(H, f"sparsegpt Hessian of {where}")
    check_finite(W, f"sparsegpt weight of {where}")
    if target.nm is not None and blocksize % target.nm[1] and cols > blocksize:
        raise ValueError(
            f"sparsegpt: blocksize {blocksize} must be a multiple of M={target.nm[1]} for the "
            f"N:M pattern {target.nm[0]}:{target.nm[1]} (groups may not straddle blocks)"
        )
    U, dead = inverse_hessian_factor(H, damp, where)
    W[:, dead] = 0
    mask = torch.zeros_like(W, dtype=torch.bool)
    nm = target.nm
    for i1 in range(0, cols, blocksize):
        i2 = min(i1 + blocksize, cols)
        count = i2 - i1
        W1 = W[:, i1:i2].clone()
        Q1 = torch.zeros_like(W1)
        Err1 = torch.zeros_like(W1)
        U1 = U[i1:i2, i1:i2]
        d1 = torch.diag(U1)
        mask1 = torch.zeros_like(W1, dtype=torch.bool)
        if nm is None:
            score = (W1**2) / (d1.reshape(1, -1) ** 2)
            k = n_to_prune(score.numel(), target.sparsity)
            if k:
                idx = torch.sort(score.reshape(-1), stable=True).indices[:k]
                mask1.view(-1)[idx] = True
        for i in range(count):
            w = W1[:, i]
            d = U1[i, i]
            if nm is not None and i % nm[1] == 0:
                n, m = nm
                score = (W1[:, i : i + m] ** 2) / (d1[i : i + m].reshape(1, -1) ** 2)
                idx = torch.sort(score, dim=1, stable=True).indices[:, :n]
                mask1.scatter_(1, i + idx, True)
            q = w.clone()
            q[mask1[:, i]] = 0
            Q1[:, i] = q
            err = (w - q) / d
            W1[:, i:] -= err.unsqueeze(1) @ U1[i, i:].unsqueeze(0)
            Err1[:, i] = err
        W[:, i1:i2] = Q1
        mask[:, i1:i2] = mask1
        W[:, i2:] -= Err1 @ U[i1:i2, i2:]
    if not bool(torch.isfinite(W).all()):
        raise CholeskyError(f"sparsegpt: non-finite weights after the update of {where}")
    return W, mask


class SparseGPT(PruningMethod):
    name = "sparsegpt"
    description = "OBS mask + weight update, blocks of 128 columns, 1% damping (Frantar 2023)"
    needs_hessian = True
    options_model = SparseGPTOptions

    @torch.no_grad()
    def prune_layer(self, lin: PrunableLinear, target: LayerTarget, inputs: LayerInputs,
                    options: SparseGPTOptions) -> None:
        if target.nm is not None and lin.in_features % target.nm[1]:
            raise ValueError(
                f"N:M pattern {target.nm[0]}:{target.nm[1]}: M={target.nm[1]} does not divide "
                f"the input width {lin.in_features} of {lin.name}"
            )
        if inputs.stats is None or inputs.stats.hessian is None:
            raise RuntimeError("sparsegpt: the Hessian was not collected")
        new_w, _ = sparsegpt_update(lin.weight, inputs.stats.hessian, target,
                                    options.blocksize, options.damp, where=lin.name)
        lin.weight.copy_(new_w.to(lin.weight.dtype))
