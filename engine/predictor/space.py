"""The search space of the accuracy-predictor search (Pruning LLMs via Accuracy Predictor,
arXiv 2309.09507): per decoder block and layer type, how many whole units structured pruning
removes, under an exact global parameter budget. Torch-free (numpy only).

An architecture is one integer per *variable* — (block, kind) with kind ``att`` (attention
units: KV groups, heads or query-head steps, as `engine.structured` counts them) or ``mlp``
(MLP channels) — the number of units removed. Its spec carries the ratios ``k / n``, which
structured pruning's rounding (`unit_count`, mirrored here) maps back to exactly ``k`` units, so
the parameters an architecture removes are known before it is pruned:
``Σ k_v · params_per_unit_v`` (the same counts `engine.structured.plan` uses).

- **grid**: a variable may take the unit counts that the ratios ``lo, lo + step, ... ≤ hi`` of
  its kind's range round to (never every unit of a block);
- **fixed blocks**: the first `keep_first` and last `keep_last` blocks are never pruned;
- **budget**: every sampled architecture removes a fraction of *all* parameters (embeddings
  included, tied once) within ``[budget − tolerance, budget + tolerance]`` — exactly, since
  whole units are counted, not estimated;
- **window**: each variable's current range, indices into its grid values; `narrow` only ever
  shrinks windows (a new window is intersected with the old one).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

KINDS = ("att", "mlp")
_TIE_EPS = 1e-9


class SpaceError(ValueError):
    """A search space that cannot be built or sampled (budget unreachable, nothing free)."""


def unit_count(ratio: float, n: int) -> int:
    """Units removed when `ratio` of `n` is asked for: the nearest whole number, an exact tie
    rounded down — `engine.structured.plan.unit_count`, without torch (a test checks both
    agree)."""
    x = ratio * n
    k = math.floor(x)
    if x - k > 0.5 + _TIE_EPS:
        k += 1
    return max(0, min(int(k), n))


def ratio_of(k: int, n: int) -> float:
    """The ratio written into a spec for `k` of `n` units (rounds back to exactly `k`)."""
    return round(k / n, 9) if n else 0.0


# -- the model's layout -------------------------------------------------------------------------


@dataclass(frozen=True)
class BlockLayout:
    """One decoder block as structured pruning sees it."""

    att_units: int  # removal steps of attention (KV groups / heads / query heads per KV group)
    att_params: int  # parameters one step removes
    mlp_units: int  # MLP channels
    mlp_params: int  # parameters one channel removes


@dataclass(frozen=True)
class Layout:
    """The prunable structure of a model (`engine.predictor.layout.model_layout`)."""

    blocks: tuple[BlockLayout, ...]
    total_params: int  # all unique parameters (embeddings included, tied once)
    attention_unit: str = "kv_group"

    @property
    def n_blocks(self) -> int:
        return len(self.blocks)

    def to_dict(self) -> dict[str, Any]:
        return {"total_params": self.total_params, "attention_unit": self.attention_unit,
                "blocks": [vars(b).copy() for b in self.blocks]}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Layout:
        return cls(tuple(BlockLayout(**b) for b in data["blocks"]), int(data["total_params"]),
                   str(data.get("attention_unit", "kv_group")))


# -- the space ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Variable:
    block: int
    kind: str  # att | mlp
    units: int  # n: units in the block
    params: int  # parameters per unit
    choices: tuple[int, ...]  # unit counts on the grid, ascending

    @property
    def name(self) -> str:
        return f"{self.kind}.b{self.block}"

    def ratio(self, k: int) -> float:
        return k / self.units


def grid_choices(units: int, lo: float, hi: float, step: float) -> tuple[int, ...]:
    """Unit counts the grid ratios lo, lo + step, ... ≤ hi round to (`unit_count`), never
    every unit."""
    n_steps = int(math.floor((hi - lo) / step + 1e-9))
    ks = {min(unit_count(lo + i * step, units), units - 1) for i in range(n_steps + 1)}
    return tuple(sorted(k for k in ks if k >= 0))


@dataclass(frozen=True)
class SearchSpace:
    """Variables with their grid values and current windows, fixed blocks, the budget."""

    layout: Layout
    variables: tuple[Variable, ...]
    windows: tuple[tuple[int, int], ...]  # per variable: [lo, hi] indices into its choices
    budget: float  # fraction of all parameters to remove
    tolerance: float
    fixed: tuple[int, ...] = ()  # blocks never pruned
    derived: tuple[str, ...] = field(default=(
        "param_ratio", "att_ratio", "mlp_ratio", "att_share", "depth_centroid",
        "cum_first_half", "max_block_ratio"))

    # -- construction ------------------------------------------------------------------------

    @classmethod
    def create(cls, layout: Layout, *, budget: float, tolerance: float, step: float,
               attention_range: Sequence[float] = (0.0, 0.5),
               mlp_range: Sequence[float] = (0.0, 0.5), keep_first: int = 0,
               keep_last: int = 0, attention: bool = True, mlp: bool = True) -> SearchSpace:
        n = layout.n_blocks
        if keep_first < 0 or keep_last < 0 or keep_first + keep_last >= n:
            raise SpaceError(f"keep_first = {keep_first} and keep_last = {keep_last} leave no "
                             f"block of the model's {n} free (need keep_first + keep_last < {n})")
        if not 0 < budget < 1 or not 0 <= tolerance < budget:
            raise SpaceError(f"budget must lie in (0, 1) and tolerance in [0, budget); got "
                             f"budget {budget}, tolerance {tolerance}")
        fixed = tuple(sorted({*range(keep_first), *range(n - keep_last, n)}))
        variables = []
        for b, bl in enumerate(layout.blocks):
            if b in fixed:
                continue
            for kind, on, units, params, (lo, hi) in (
                    ("att", attention, bl.att_units, bl.att_params, attention_range),
                    ("mlp", mlp, bl.mlp_units, bl.mlp_params, mlp_range)):
                if not on or units < 2:
                    continue
                choices = grid_choices(units, lo, hi, step)
                if len(choices) > 1 or choices[0] > 0:
                    variables.append(Variable(b, kind, units, params, choices))
        if not variables:
            raise SpaceError("no free variable: every free block's ranges round to zero units "
                             "(widen the ranges, refine the step or free more blocks)")
        space = cls(layout, tuple(variables), tuple((0, len(v.choices) - 1) for v in variables),
                    budget, tolerance, fixed)
        space.check_feasible()
        return space

    # -- accounting --------------------------------------------------------------------------

    @property
    def target(self) -> tuple[float, float]:
        """The window of removed parameters every architecture must hit."""
        total = self.layout.total_params
        return ((self.budget - self.tolerance) * total, (self.budget + self.tolerance) * total)

    def removed(self, k: Sequence[int]) -> int:
        return int(sum(int(u) * v.params for u, v in zip(k, self.variables, strict=True)))

    def param_ratio(self, k: Sequence[int]) -> float:
        return self.removed(k) / self.layout.total_params

    def in_budget(self, k: Sequence[int]) -> bool:
        lo, hi = self.target
        return lo <= self.removed(k) <= hi

    def in_windows(self, k: Sequence[int]) -> bool:
        return all(v.choices[lo] <= u <= v.choices[hi] and u in v.choices
                   for u, v, (lo, hi) in zip(k, self.variables, self.windows, strict=True))

    def bounds(self) -> tuple[int, int]:
        """Fewest and most parameters the windows can remove."""
        lo = sum(v.choices[a] * v.params for v, (a, _) in zip(self.variables, self.windows,
                                                              strict=True))
        hi = sum(v.choices[b] * v.params for v, (_, b) in zip(self.variables, self.windows,
                                                              strict=True))
        return lo, hi

    def feasible(self) -> bool:
        (lo, hi), (t_lo, t_hi) = self.bounds(), self.target
        return lo <= t_hi and hi >= t_lo

    def check_feasible(self) -> None:
        if not self.feasible():
            lo, hi = self.bounds()
            total = self.layout.total_params
            raise SpaceError(
                f"the budget {self.budget:.1%} ± {self.tolerance:.1%} of {total:,} parameters "
                f"is out of reach: the ranges remove between {lo / total:.1%} and "
                f"{hi / total:.1%} (widen the ranges, free more blocks or change the budget)")

    # -- architectures as specs --------------------------------------------------------------

    def ratios(self, k: Sequence[int]) -> tuple[list[float], list[float]]:
        """Per-block (attention_ratios, mlp_ratios) for a structured spec (0 for fixed blocks
        and kinds that are not searched)."""
        att = [0.0] * self.layout.n_blocks
        mlp = [0.0] * self.layout.n_blocks
        for u, v in zip(k, self.variables, strict=True):
            (att if v.kind == "att" else mlp)[v.block] = ratio_of(int(u), v.units)
        return att, mlp

    def from_ratios(self, attention_ratios: Sequence[float], mlp_ratios: Sequence[float]
                    ) -> tuple[int, ...]:
        """The unit counts a spec's per-block ratios realise (`unit_count`)."""
        return tuple(unit_count((attention_ratios if v.kind == "att" else mlp_ratios)[v.block],
                                v.units) for v in self.variables)

    # -- sampling ----------------------------------------------------------------------------

    def sample(self, rng: np.random.Generator, n: int, exclude: Iterable[tuple[int, ...]] = (),
               max_tries: int | None = None) -> list[tuple[int, ...]]:
        """`n` distinct architectures inside the windows and the budget, none in `exclude`:
        uniform draws per variable, then repaired toward the budget one grid step at a time.
        Fewer than `n` when the space runs out of distinct architectures."""
        seen = set(exclude)
        out: list[tuple[int, ...]] = []
        tries = max_tries if max_tries is not None else 50 * n + 200
        for _ in range(tries):
            if len(out) >= n:
                break
            k = self._draw(rng)
            if k is not None and k not in seen:
                seen.add(k)
                out.append(k)
        if not out and n > 0:
            raise SpaceError(f"no architecture within {self.budget:.1%} ± {self.tolerance:.1%} "
                             f"of the parameters found in {tries} tries (the whole units are "
                             "too coarse for the tolerance: raise it or refine the step)")
        return out

    def _draw(self, rng: np.random.Generator) -> tuple[int, ...] | None:
        idx = np.array([rng.integers(lo, hi + 1) for lo, hi in self.windows], dtype=np.int64)
        return self._repair(idx, rng)

    def _repair(self, idx: np.ndarray, rng: np.random.Generator) -> tuple[int, ...] | None:
        t_lo, t_hi = self.target
        choices = [np.asarray(v.choices, dtype=np.int64) for v in self.variables]
        params = np.array([v.params for v in self.variables], dtype=np.int64)
        los = np.array([w[0] for w in self.windows])
        his = np.array([w[1] for w in self.windows])

        def removed() -> int:
            return int(sum(c[i] * p for c, i, p in zip(choices, idx, params, strict=True)))

        limit = 4 * int(sum(his - los)) + 50
        r = removed()
        for _ in range(limit):
            if t_lo <= r <= t_hi:
                return tuple(int(c[i]) for c, i in zip(choices, idx, strict=True))
            d = 1 if r < t_lo else -1
            movable = np.nonzero((idx + d >= los) & (idx + d <= his))[0]
            if movable.size == 0:
                return None
            new = np.array([r + (choices[v][idx[v] + d] - choices[v][idx[v]]) * params[v]
                            for v in movable])
            land = movable[(new >= t_lo) & (new <= t_hi)]
            same = movable[(new < t_lo) if d > 0 else (new > t_hi)]
            if land.size:
                v = int(rng.choice(land))
            elif same.size:
                v = int(rng.choice(same))
            else:  # every step jumps over the window: the smallest jump, then come back
                v = int(movable[np.argmin(np.abs(new - (t_lo + t_hi) / 2))])
            r += int((choices[v][idx[v] + d] - choices[v][idx[v]]) * params[v])
            idx[v] += d
        return None

    # -- features ----------------------------------------------------------------------------

    @property
    def feature_names(self) -> list[str]:
        return [v.name for v in self.variables] + list(self.derived)

    def features(self, ks: Sequence[Sequence[int]]) -> np.ndarray:
        """(architectures × features): the realised per-variable ratios, then derived ones —
        param_ratio (all parameters removed), att_ratio / mlp_ratio (parameter-weighted ratio
        of each kind over the free blocks), att_share (attention's share of what is removed),
        depth_centroid (mean depth of the removed parameters, 0 = first block, 1 = last),
        cum_first_half (cumulative share removed in the first half of the blocks),
        max_block_ratio (largest share of one block's prunable parameters removed)."""
        k = np.asarray(ks, dtype=np.float64).reshape(-1, len(self.variables))
        units = np.array([v.units for v in self.variables], dtype=np.float64)
        params = np.array([v.params for v in self.variables], dtype=np.float64)
        removed = k * params  # parameters removed per variable
        n = self.layout.n_blocks
        blocks = np.array([v.block for v in self.variables])
        is_att = np.array([v.kind == "att" for v in self.variables])
        total = removed.sum(axis=1)
        safe = np.where(total > 0, total, 1.0)
        att_cap = (units * params)[is_att].sum() or 1.0
        mlp_cap = (units * params)[~is_att].sum() or 1.0
        depth = blocks / max(1, n - 1)
        block_cap = np.array([self.layout.blocks[b].att_units * self.layout.blocks[b].att_params
                              + self.layout.blocks[b].mlp_units * self.layout.blocks[b].mlp_params
                              for b in range(n)], dtype=np.float64)
        per_block = np.zeros((k.shape[0], n))
        for j, b in enumerate(blocks):
            per_block[:, b] += removed[:, j]
        derived = {
            "param_ratio": total / self.layout.total_params,
            "att_ratio": removed[:, is_att].sum(axis=1) / att_cap,
            "mlp_ratio": removed[:, ~is_att].sum(axis=1) / mlp_cap,
            "att_share": removed[:, is_att].sum(axis=1) / safe,
            "depth_centroid": (removed * depth).sum(axis=1) / safe,
            "cum_first_half": removed[:, blocks < n / 2].sum(axis=1) / safe,
            "max_block_ratio": (per_block / np.where(block_cap > 0, block_cap, 1.0)).max(axis=1),
        }
        return np.column_stack([k / units] + [derived[name] for name in self.derived])

    # -- narrowing ---------------------------------------------------------------------------

    def window_ratios(self) -> dict[str, list[float]]:
        """Each variable's current range as realised ratios [lo, hi]."""
        return {v.name: [v.ratio(v.choices[a]), v.ratio(v.choices[b])]
                for v, (a, b) in zip(self.variables, self.windows, strict=True)}

    def narrow(self, importance: dict[str, float], ranked: Sequence[Sequence[int]], *,
               top: int, elite: float = 0.1, min_choices: int = 2
               ) -> tuple[SearchSpace, list[dict[str, Any]]]:
        """Narrow the windows of the `top` most important per-block variables (gain > 0) to the
        values the best `elite` fraction of `ranked` (architectures, best first, e.g. by the
        predictor) take, kept at least `min_choices` grid values wide where the window was.
        Each new window is intersected with the old one (so the space only narrows), and a
        narrowing that would put the budget out of reach is not applied. Returns the new space
        and what changed."""
        names = {v.name: i for i, v in enumerate(self.variables)}
        order = sorted((name for name, g in importance.items() if name in names and g > 0),
                       key=lambda name: (-importance[name], names[name]))
        ranked = [tuple(int(u) for u in k) for k in ranked]
        n_elite = max(2, math.ceil(elite * len(ranked))) if ranked else 0
        best = ranked[:n_elite]
        windows = list(self.windows)
        changes: list[dict[str, Any]] = []
        for name in order[:max(0, top)] if best else ():
            i = names[name]
            v, (lo, hi) = self.variables[i], windows[i]
            if hi == lo:
                continue
            pos = [v.choices.index(k[i]) for k in best if k[i] in v.choices]
            if not pos:
                continue
            a, b = max(lo, min(pos)), min(hi, max(pos))
            while b - a + 1 < min(min_choices, hi - lo + 1):  # keep a few grid values
                centre = sum(pos) / len(pos)
                if a > lo and (b >= hi or centre - a <= b - centre):
                    a -= 1
                else:
                    b += 1
            if (a, b) == (lo, hi):
                continue
            trial = replace(self, windows=tuple(windows[:i] + [(a, b)] + windows[i + 1:]))
            if not trial.feasible():
                changes.append({"feature": name, "skipped": "the budget would be out of reach",
                                "before": [v.ratio(v.choices[lo]), v.ratio(v.choices[hi])]})
                continue
            windows[i] = (a, b)
            changes.append({"feature": name, "gain": importance[name],
                            "before": [v.ratio(v.choices[lo]), v.ratio(v.choices[hi])],
                            "after": [v.ratio(v.choices[a]), v.ratio(v.choices[b])]})
        return replace(self, windows=tuple(windows)), changes

    def contains(self, other: SearchSpace) -> bool:
        """Every window of `other` lies inside this space's (same variables)."""
        return all(v.name == w.name and a <= c and d <= b for v, w, (a, b), (c, d) in zip(
            self.variables, other.variables, self.windows, other.windows, strict=True))

    def describe(self) -> dict[str, Any]:
        return {"budget": self.budget, "tolerance": self.tolerance, "fixed_blocks": list(
            self.fixed), "variables": len(self.variables), "windows": self.window_ratios()}
