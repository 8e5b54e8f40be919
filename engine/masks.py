"""Sparsity patterns: turn a score (higher = more important) into a prune mask (True = pruned).

All selection is vectorised (sort / top-k on reshaped tensors) with stable sorts on fp32 scores,
so ties break by position, never by bf16 rounding or thread order.
"""

from __future__ import annotations

import torch


class NonFiniteScoreError(ValueError):
    """A pruning score with NaN or inf entries: an error for the candidate, never a silent mask."""


def n_to_prune(width: int, sparsity: float) -> int:
    # round, not floor: keeps the realised sparsity within 0.5/width of the target
    return int(round(width * sparsity))


def check_finite(score: torch.Tensor, where: str) -> None:
    finite = torch.isfinite(score)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise NonFiniteScoreError(
            f"{where}: score has {bad} non-finite value(s) (NaN or inf) out of {score.numel()}"
        )


TIES = ("index", "topk")


def lowest(score: torch.Tensor, k: int, dim: int, ties: str = "index") -> torch.Tensor:
    """Indices of the k lowest scores along `dim`.

    ties="index": a stable sort, equal scores pruned lowest index first — the same mask on
    every device. ties="topk": `torch.topk(largest=False)` as the reference Wanda code does;
    its order among equal scores is the kernel's (device-dependent). Scores with many exact
    ties (magnitude of quantized weights) give measurably different masks under the two.
    """
    if ties == "topk":
        return torch.topk(score, k, dim=dim, largest=False).indices
    if ties != "index":
        raise ValueError(f"ties must be one of {', '.join(TIES)}; got {ties!r}")
    return torch.sort(score, dim=dim, stable=True).indices.narrow(dim, 0, k)


def mask_per_row(score: torch.Tensor, sparsity: float, ties: str = "index") -> torch.Tensor:
    """Prune the lowest `sparsity` fraction of each output row (Wanda's comparison group)."""
    k = n_to_prune(score.shape[1], sparsity)
    mask = torch.zeros_like(score, dtype=torch.bool)
    if k > 0:
        mask.scatter_(1, lowest(score, k, 1, ties), True)
    return mask


def mask_per_matrix(score: torch.Tensor, sparsity: float, ties: str = "index") -> torch.Tensor:
    """Prune the lowest `sparsity` fraction of the whole matrix (one threshold per matrix)."""
    k = n_to_prune(score.numel(), sparsity)
    mask = torch.zeros(score.numel(), dtype=torch.bool, device=score.device)
    if k > 0:
        mask[lowest(score.reshape(-1), k, 0, ties)] = True
    return mask.reshape(score.shape)


def mask_n_m(score: torch.Tensor, n: int, m: int, ties: str = "index") -> torch.Tensor:
    """N:M: in every group of M consecutive input columns of a row, prune the N lowest."""
    out_f, in_f = score.shape
    if in_f % m:
        raise ValueError(f"N:M pattern {n}:{m}: M={m} does not divide the input width {in_f}")
    groups = score.reshape(out_f, in_f // m, m)
    mask = torch.zeros_like(groups, dtype=torch.bool)
    mask.scatter_(2, lowest(groups, n, 2, ties), True)
    return mask.reshape(out_f, in_f)


def realised_sparsity(weight: torch.Tensor) -> float:
    return float((weight == 0).sum()) / weight.numel()
