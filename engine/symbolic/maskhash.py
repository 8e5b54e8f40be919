"""Mask equivalence, numerically: a hash of the masks an expression gives on a probe set.

Two metrics that rank every comparison group's weights the same way give the same mask and the
same pruned model, so a search can skip a candidate whose mask hash it has already evaluated.
The hash costs one expression evaluation and one sort per probe layer — far less than pruning
the model and measuring perplexity.

The probe layers carry dense-model statistics. Equal hashes over *all* layers mean identical
pruning when the candidate prunes from dense statistics (``calibration.mode = "dense"``); over
a subset, or with the sequential protocol (each block's X comes from the pruned blocks before
it), equal hashes are strong evidence, not proof. `rank_key` in `equivalence.py` is the
input-independent symbolic shortcut.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from prunestudio.engine.masks import check_finite, mask_n_m, mask_per_matrix, mask_per_row
from prunestudio.engine.symbolic.interpret import evaluate
from prunestudio.engine.symbolic.tree import Node, leaves_used


@dataclass(frozen=True)
class ProbeLayer:
    """One linear layer's inputs to a symbolic score (raw weight; |·| is taken when scoring)."""

    name: str
    weight: torch.Tensor  # (out, in)
    x_sqnorm: torch.Tensor | None = None  # (in,)
    grad: torch.Tensor | None = None  # (out, in)
    hinv_diag: torch.Tensor | None = None  # (in,) leaf D


def probe_layers(lm, stats, *, count: int | None = 4, names: Sequence[str] | None = None,
                 with_x: bool = True, with_grad: bool = True,
                 with_hessian: bool = False) -> list[ProbeLayer]:
    """Probe set from a loaded model and its `StatsCache` (dense statistics, cached).

    `names` picks layers explicitly; otherwise `count` layers evenly spaced over the model's
    prunable linears (None: all of them). Weights are copied, so later pruning does not change
    the probes.
    """
    linears = lm.adapter.all_prunable_linears(lm.model)
    if names is not None:
        by_name = {lin.name: lin for lin in linears}
        unknown = [n for n in names if n not in by_name]
        if unknown:
            raise ValueError(f"unknown probe layer(s) {unknown}; e.g. {linears[0].name}")
        chosen = [by_name[n] for n in names]
    elif count is None or count >= len(linears):
        chosen = linears
    else:
        if count < 1:
            raise ValueError(f"probe count must be ≥ 1, got {count}")
        step = (len(linears) - 1) / max(count - 1, 1)
        chosen = [linears[round(i * step)] for i in range(count)]
    from prunestudio.engine.methods.symbolic import inverse_hessian_diagonal

    xs = (stats.dense_layer_stats(want_hessian=with_hessian) if with_x or with_hessian
          else {})
    grads = stats.gradients() if with_grad else {}
    return [
        ProbeLayer(
            lin.name,
            lin.weight.detach().float().clone(),
            xs[lin.name].x_sqnorm if with_x and lin.name in xs else None,
            grads.get(lin.name),
            inverse_hessian_diagonal(xs[lin.name].hessian, lin.name)
            if with_hessian and lin.name in xs else None,
        )
        for lin in chosen
    ]


def layer_mask(tree: Node, probe: ProbeLayer, sparsity: float, *,
               scope: Literal["row", "matrix"] = "row",
               nm: tuple[int, int] | None = None) -> torch.Tensor:
    """The prune mask (True = pruned) the symbolic method would give this layer."""
    score = evaluate(tree, W=probe.weight.float().abs(), X=probe.x_sqnorm, G=probe.grad,
                     D=probe.hinv_diag)
    check_finite(score, f"symbolic score {tree} of {probe.name}")
    if nm is not None:
        return mask_n_m(score, *nm)
    if scope == "matrix":
        return mask_per_matrix(score, sparsity)
    return mask_per_row(score, sparsity)


def mask_hash(tree: Node, probes: Sequence[ProbeLayer], sparsity: float, *,
              scope: Literal["row", "matrix"] = "row",
              nm: tuple[int, int] | None = None) -> str:
    """Hex digest of the masks over the probe set (settings are part of the hashed data).

    Raises `NonFiniteScoreError` when the score is NaN / inf on a probe layer, as pruning would.
    """
    missing = leaves_used(tree) - {"W"} - {
        leaf for leaf, attr in (("X", "x_sqnorm"), ("G", "grad"), ("D", "hinv_diag"))
        if all(getattr(p, attr) is not None for p in probes)
    }
    if missing:
        raise ValueError(f"expression {tree} reads {sorted(missing)}, absent from the probe set")
    h = hashlib.blake2b(digest_size=16)
    h.update((f"nm{nm}" if nm is not None else f"{sparsity!r}|{scope}").encode())
    for p in probes:
        mask = layer_mask(tree, p, sparsity, scope=scope, nm=nm)
        h.update(f"|{p.name}|{tuple(mask.shape)}|".encode())
        h.update(np.packbits(mask.cpu().numpy()).tobytes())
    return h.hexdigest()
