"""Importance of coupled structures (LLM-Pruner, Ma et al. 2023; AdaPruner's coefficients).

Per member (one linear layer's slice of a unit) an element-wise salience S is summed over the
slice; the members' values are then aggregated over the unit's group:

  l1              Σ |W|
  l2              Σ W²                               (torch-pruning's p = 2, no square root)
  taylor_vector   |Σ W⊙G|                            (vector-wise, first order)
  taylor_first    Σ |W⊙G|                            (element-wise first order, "param_first")
  taylor_second   Σ ½ W²⊙F                           (element-wise second order, diagonal Fisher)
  taylor_mix      Σ |W⊙G − ½ W²⊙F|                   (element-wise, both orders, "param_mix")
  activation      Σ |W|·‖X_j‖                        (Wanda's score summed over the slice)
  combined        α·taylor_vector + β·taylor_first + γ·taylor_second   (AdaPruner-style)
  random          uniform noise (a baseline), seeded

G = ∂L/∂W of the mean calibration loss (mean over samples of each sample's mean token loss, as
LLM-Pruner's one batched backward), F = (1/N) Σ_s (∂L_s/∂W)² (LLM-Pruner's `acc_grad`), both
from the dense model in eval mode, one backward per sample, fp32. ‖X_j‖ = sqrt of Wanda's
`scaler_row` from the dense model. Biases take no part in the scores.

Aggregation over the group's members: sum, mean, max, prod, or last (the last executed member:
the o / down / fc2 slice).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
from prunestudio.engine.calibration import StatsCache, weight_gradients
from prunestudio.engine.masks import check_finite
from prunestudio.engine.models.loading import LoadedModel
from prunestudio.engine.structured.groups import GroupSet, Member

from prunestudio.schema.method_options import AGGREGATIONS, IMPORTANCES

log = logging.getLogger(__name__)

_NEEDS_GRAD = {"taylor_vector", "taylor_first", "taylor_second", "taylor_mix", "combined"}


@dataclass(frozen=True)
class Coefficients:
    """`combined`: α·vector + β·element-first + γ·element-second."""

    alpha: float = 1.0
    beta: float = 1.0
    gamma: float = 1.0


@dataclass
class TaylorStats:
    grad: torch.Tensor  # G, (out, in) fp32
    fisher: torch.Tensor  # F, (out, in) fp32


def needs(importance: str) -> frozenset[str]:
    """Statistics an importance reads: subset of {"grad", "x"}."""
    if importance in _NEEDS_GRAD:
        return frozenset({"grad"})
    if importance == "activation":
        return frozenset({"x"})
    return frozenset()


def compute_taylor_stats(lm: LoadedModel, ids: torch.Tensor,
                         progress: Callable[[int, int], None] | None = None,
                         ) -> dict[str, TaylorStats]:
    """G and F per prunable linear, one backward per calibration sample, model untouched."""
    n = ids.shape[0]
    grad: dict[str, torch.Tensor] = {}
    fisher: dict[str, torch.Tensor] = {}
    for s, grads in enumerate(weight_gradients(lm, ids)):
        for name, g in grads.items():
            grad[name] = grad[name] + g if name in grad else g
            fisher[name] = fisher[name] + g * g if name in fisher else g * g
        if progress:
            progress(s + 1, n)
    return {k: TaylorStats(grad[k] / n, fisher[k] / n) for k in grad}


def taylor_stats(stats: StatsCache) -> dict[str, TaylorStats]:
    """G and F for the study's calibration set, computed once and kept with the StatsCache."""
    cached = getattr(stats, "_structured_taylor", None)
    if cached is None:
        stats.computed.append("taylor")
        cached = compute_taylor_stats(stats.lm, stats.calib_ids)
        stats._structured_taylor = cached  # type: ignore[attr-defined]
    return cached


def _salience(importance: str, w: torch.Tensor, t: TaylorStats | None,
              x: torch.Tensor | None) -> torch.Tensor:
    if importance == "l1":
        return w.abs()
    if importance == "l2":
        return w * w
    if importance == "activation":
        return w.abs() * x.to(w.device).float().sqrt().reshape(1, -1)
    g = t.grad.to(w.device)
    if importance in ("taylor_vector", "taylor_first"):
        s = w * g
        return s if importance == "taylor_vector" else s.abs()
    second = 0.5 * w * w * t.fisher.to(w.device)
    if importance == "taylor_second":
        return second
    if importance == "taylor_mix":
        return (w * g - second).abs()
    raise ValueError(f"unknown importance {importance!r}; allowed: {', '.join(IMPORTANCES)}")


def _gather(member: Member, s: torch.Tensor) -> torch.Tensor:
    """Σ of the salience `s` over each covered unit's slice of this member: (covered units,)."""
    line = s.sum(dim=1 - member.axis)  # one value per row (axis 0) or column (axis 1)
    return line[member.index.to(line.device)].sum(dim=1)


def member_scores(member: Member, importance: str, *, taylor: TaylorStats | None = None,
                  x_sqnorm: torch.Tensor | None = None,
                  coefficients: Coefficients = Coefficients()) -> torch.Tensor:
    """One score per unit from this member's slice (float64, on CPU)."""
    w = member.lin.weight.detach().float()
    if importance in _NEEDS_GRAD and taylor is None:
        raise RuntimeError(f"importance {importance!r} needs gradient statistics")
    if importance == "activation" and x_sqnorm is None:
        raise RuntimeError("importance 'activation' needs activation statistics")
    if importance == "combined":
        c = coefficients
        out = c.alpha * _gather(member, _salience("taylor_vector", w, taylor, None)).abs()
        out = out + c.beta * _gather(member, _salience("taylor_first", w, taylor, None))
        out = out + c.gamma * _gather(member, _salience("taylor_second", w, taylor, None))
    else:
        out = _gather(member, _salience(importance, w, taylor, x_sqnorm))
        if importance == "taylor_vector":
            out = out.abs()
    return out.double().cpu()


def aggregate(scores: list[torch.Tensor], how: str) -> torch.Tensor:
    stacked = torch.stack(scores)  # (members, units), execution order
    if how == "sum":
        return stacked.sum(0)
    if how == "mean":
        return stacked.mean(0)
    if how == "max":
        return stacked.max(0).values
    if how == "prod":
        return stacked.prod(0)
    if how == "last":
        return stacked[-1]
    raise ValueError(f"unknown aggregation {how!r}; allowed: {', '.join(AGGREGATIONS)}")


def _aggregate_covered(groups: GroupSet, per_member: list[torch.Tensor], how: str
                       ) -> torch.Tensor:
    """`aggregate` over the members that cover each unit (mixture of experts: a channel is in
    its own expert's members only), in execution order."""
    table = torch.full((len(per_member), groups.n_units), float("nan"), dtype=torch.float64)
    for row, (m, s) in enumerate(zip(groups.members, per_member, strict=True)):
        table[row, torch.arange(groups.n_units) if m.units is None else m.units] = s
    covered = ~table.isnan()
    if not bool(covered.any(0).all()):
        raise RuntimeError(f"block {groups.block}: some {groups.kind} units have no member")
    if how == "sum":
        return table.nansum(0)
    if how == "mean":
        return table.nansum(0) / covered.sum(0)
    if how == "max":
        return table.masked_fill(~covered, float("-inf")).max(0).values
    if how == "prod":
        return table.masked_fill(~covered, 1.0).prod(0)
    if how == "last":
        order = torch.arange(len(per_member)).unsqueeze(1) * covered
        return table.gather(0, order.max(0).values.unsqueeze(0))[0]
    raise ValueError(f"unknown aggregation {how!r}; allowed: {', '.join(AGGREGATIONS)}")


def group_scores(groups: GroupSet, importance: str, aggregation: str = "sum", *,
                 taylor: dict[str, TaylorStats] | None = None,
                 x_sqnorm: dict[str, torch.Tensor] | None = None,
                 coefficients: Coefficients = Coefficients(),
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """Importance of every unit of `groups` (float64, higher = keep)."""
    if importance == "random":
        return torch.rand(groups.n_units, generator=generator, dtype=torch.float64)
    per_member = [
        member_scores(m, importance,
                      taylor=None if taylor is None else taylor[m.lin.name],
                      x_sqnorm=None if x_sqnorm is None else x_sqnorm[m.lin.name],
                      coefficients=coefficients)
        for m in groups.members
    ]
    what = f"{importance}/{aggregation} importance of block {groups.block} {groups.kind} units"
    if all(m.units is None for m in groups.members):
        out = aggregate(per_member, aggregation)
    else:  # checked before the aggregation skips uncovered (NaN) cells
        for s in per_member:
            check_finite(s, what)
        out = _aggregate_covered(groups, per_member, aggregation)
    check_finite(out, what)
    return out
