"""Importance of coupled structures (LLM-Pruner, Ma et al. 2023; AdaPruner's coefficients).

As LLM-Pruner's `TaylorImportance` (LLMPruner/pruner/hf_llama_pruner.py) computes it: per member
(one linear layer's slice of a unit) a salience S is reduced to one value per *line* of the
slice — per output row (q / k / v / gate / up rows) or input column (o / down columns):

  l1              Σ_line |W|
  l2              Σ_line W²                          (torch-pruning's p = 2, no square root)
  taylor_vector   |Σ_line W⊙G|                       ("vectorize": the sum of each line, then |·|)
  taylor_first    Σ_line |W⊙G|                       ("param_first", LLM-Pruner's default)
  taylor_second   Σ_line W²⊙F                        ("param_second": W·acc_grad·W, no ½)
  taylor_mix      Σ_line |W⊙G − ½ W²⊙F|              ("param_mix")
  activation      Σ_line |W|·‖X_j‖                   (Wanda's score summed over the line)
  combined        α·taylor_vector + β·taylor_first + γ·taylor_second   (AdaPruner-style)
  random          uniform noise (a baseline), seeded

A member with more lines per unit than the group's narrowest member (a KV group's q rows and o
columns: rep·head_dim lines against head_dim k / v rows) is folded onto that width by summing its
lines position by position (LLM-Pruner aligns longer members the same way,
`imp.view(-1, min_len).sum(0)`); the members' values are then aggregated at each position —
sum, mean, max, prod, or last (the last executed member covering the unit: the o / down / fc2
slice) — and the unit's score is the sum over its positions, as LLM-Pruner's MetaPruner sums
the `head_dim` consecutive channels of a head (`imp.view(-1, consecutive_groups).sum(1)`).
An MLP channel has one position, so its score is the aggregation of its members' values.

G = ∂L/∂W of the mean calibration loss (mean over samples of each sample's mean token loss, as
LLM-Pruner's one batched backward over equal-length examples), F = (1/N) Σ_s (∂L_s/∂W)²
(LLM-Pruner's `acc_grad`, one backward per sample), both from the dense model in eval mode,
fp32. ‖X_j‖ = sqrt of Wanda's `scaler_row` from the dense model. Biases take no part in the
scores. See docs/reference-fidelity.md for what differs from LLM-Pruner's code and why.
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


def _lines(member: Member, s: torch.Tensor, absolute: bool = False) -> torch.Tensor:
    """Σ of the salience `s` along each line (row for axis 0, column for axis 1) of this
    member's slice, |·| of each line's sum with `absolute`: (covered units, lines per unit)."""
    line = s.sum(dim=1 - member.axis)
    if absolute:
        line = line.abs()
    return line[member.index.to(line.device)]


def _line_values(member: Member, importance: str, w: torch.Tensor, t: TaylorStats | None,
                 x: torch.Tensor | None) -> torch.Tensor:
    if importance == "l1":
        return _lines(member, w.abs())
    if importance == "l2":
        return _lines(member, w * w)
    if importance == "activation":
        return _lines(member, w.abs() * x.to(w.device).float().sqrt().reshape(1, -1))
    g = t.grad.to(w.device)
    if importance == "taylor_vector":
        return _lines(member, w * g, absolute=True)
    if importance == "taylor_first":
        return _lines(member, (w * g).abs())
    second = w * w * t.fisher.to(w.device)
    if importance == "taylor_second":
        return _lines(member, second)
    if importance == "taylor_mix":
        return _lines(member, (w * g - 0.5 * second).abs())
    raise ValueError(f"unknown importance {importance!r}; allowed: {', '.join(IMPORTANCES)}")


def member_lines(member: Member, importance: str, *, taylor: TaylorStats | None = None,
                 x_sqnorm: torch.Tensor | None = None,
                 coefficients: Coefficients = Coefficients()) -> torch.Tensor:
    """One value per line of this member's slice of each covered unit:
    (covered units, lines per unit), float64 on CPU."""
    w = member.lin.weight.detach().float()
    if importance in _NEEDS_GRAD and taylor is None:
        raise RuntimeError(f"importance {importance!r} needs gradient statistics")
    if importance == "activation" and x_sqnorm is None:
        raise RuntimeError("importance 'activation' needs activation statistics")
    if importance == "combined":
        c = coefficients
        out = c.alpha * _line_values(member, "taylor_vector", w, taylor, None).double()
        out = out + c.beta * _line_values(member, "taylor_first", w, taylor, None).double()
        out = out + c.gamma * _line_values(member, "taylor_second", w, taylor, None).double()
        return out.cpu()
    return _line_values(member, importance, w, taylor, x_sqnorm).double().cpu()


def member_scores(member: Member, importance: str, **kw) -> torch.Tensor:
    """One value per covered unit from this member's slice alone: the sum over its lines."""
    return member_lines(member, importance, **kw).sum(dim=1)


def _fold(values: torch.Tensor, width: int, where: str) -> torch.Tensor:
    """(units, k·width) line values folded onto `width` positions (line i → position i mod
    width, summed), as LLM-Pruner aligns a longer member with the group's shortest."""
    units, lines = values.shape
    if lines % width:
        raise RuntimeError(f"{where}: a member with {lines} lines per unit cannot be aligned "
                           f"with one of {width}")
    return values.view(units, lines // width, width).sum(dim=1)


def aggregate(table: torch.Tensor, how: str) -> torch.Tensor:
    """Reduce a (members, ...) table over its members (execution order): sum, mean, max, prod,
    last. Cells a member does not cover are NaN and take no part."""
    covered = ~table.isnan()
    if how == "sum":
        return table.nansum(0)
    if how == "mean":
        return table.nansum(0) / covered.sum(0)
    if how == "max":
        return table.masked_fill(~covered, float("-inf")).max(0).values
    if how == "prod":
        return table.masked_fill(~covered, 1.0).prod(0)
    if how == "last":
        shape = (-1,) + (1,) * (table.dim() - 1)
        order = torch.arange(table.shape[0]).view(shape) * covered
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
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"unknown aggregation {aggregation!r}; allowed: {', '.join(AGGREGATIONS)}")
    what = f"{importance}/{aggregation} importance of block {groups.block} {groups.kind} units"
    per_member = [
        member_lines(m, importance,
                     taylor=None if taylor is None else taylor[m.lin.name],
                     x_sqnorm=None if x_sqnorm is None else x_sqnorm[m.lin.name],
                     coefficients=coefficients)
        for m in groups.members
    ]
    for values in per_member:  # before the aggregation, which reads NaN as "not covered"
        check_finite(values, what)
    width = min(v.shape[1] for v in per_member)
    table = torch.full((len(per_member), groups.n_units, width), float("nan"),
                       dtype=torch.float64)
    for row, (m, values) in enumerate(zip(groups.members, per_member, strict=True)):
        units = torch.arange(groups.n_units) if m.units is None else m.units
        table[row, units] = _fold(values, width, what)
    if not bool((~table[:, :, 0].isnan()).any(0).all()):
        raise RuntimeError(f"block {groups.block}: some {groups.kind} units have no member")
    out = aggregate(table, aggregation).sum(dim=1)
    check_finite(out, what)
    return out
