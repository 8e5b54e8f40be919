"""Noise-aware ranking of a search's candidates: no choice rests on a difference smaller than
the fitness's noise.

Every fitness records its standard error and its per-window mean losses
(`evaluate.perplexity`). Two fitness values *a*, *b* are **tied** when

    |log a − log b| < k · SE(log a − log b)

with SE the *paired* standard error over the windows both were measured on (the spread of the
per-window differences: what one pruned model does better than the other, free of how hard
each window is), or √(SE_a² + SE_b²) when the windows are not the same, and k = `noise_k`
(0: never tied — exact comparisons, the paper's search).

`rank(members, ranking)` orders a search's population:

1. **fidelity first** (successive halving): metrics re-measured at the higher fidelity rank
   before those measured only on the proxy — in successive halving a promoted candidate is
   compared with the other promoted ones, on the figure that has more text behind it;
2. within a fidelity, greedily: among the candidates left, take the best by value; every
   candidate tied with it is a contender; the **simplest** contender (fewest nodes) is placed
   next, then the lower value, then the earlier record. Without ties this is the exact order
   by (value, recording order).

The result says how many places were decided among tied contenders (`ties`) and how many of
those moved a candidate ahead of a better value (`moved`): the events show both. A tournament
takes the drawn individual placed first (`Ranked.position`), so its choice follows the same
rule.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from prunestudio.engine.evaluate.perplexity import log_se, paired_log_se


@dataclass(frozen=True)
class Measured:
    """One recorded fitness figure: PPL, SE of its log, per-window mean losses and which
    windows (tokens hash) they are."""

    value: float
    log_se: float | None = None
    windows: tuple[float, ...] = ()
    key: str | None = None  # tokens_hash: equal keys = the same windows
    n: int | None = None

    def __post_init__(self) -> None:
        if self.log_se is None and len(self.windows) >= 2:  # what the protocol would say
            object.__setattr__(self, "log_se", log_se(self.windows))
        if self.n is None and self.windows:
            object.__setattr__(self, "n", len(self.windows))

    @classmethod
    def of(cls, metric: dict[str, Any] | None) -> Measured | None:
        if metric is None:
            return None
        value = metric.get("value")
        if value is None or not math.isfinite(value) or value <= 0:
            return None
        p = metric.get("protocol") or {}
        se = p.get("log_ppl_se")
        return cls(float(value), float(se) if isinstance(se, int | float) else None,
                   tuple(p.get("window_mean_nll") or ()), p.get("tokens_hash"),
                   metric.get("n_samples"))

    @property
    def log(self) -> float:
        return math.log(self.value)

    @property
    def ppl_se(self) -> float | None:
        return None if self.log_se is None else self.value * self.log_se


def diff_se(a: Measured, b: Measured) -> tuple[float | None, bool]:
    """SE of log a − log b, and whether it is paired (same windows)."""
    if a.windows and b.windows and a.key is not None and a.key == b.key \
            and len(a.windows) == len(b.windows):
        return paired_log_se(a.windows, b.windows), True
    if a.log_se is not None and b.log_se is not None:
        return math.hypot(a.log_se, b.log_se), False
    return None, False


def within_noise(a: Measured, b: Measured, k: float) -> bool:
    """Whether `a` and `b` differ by less than k standard errors of their difference."""
    if k <= 0:
        return False
    se, _ = diff_se(a, b)
    return se is not None and abs(a.log - b.log) < k * se


def compare(a: Measured, b: Measured, k: float) -> dict[str, Any]:
    """a against b: relative difference, its SE, z and the verdict (for events)."""
    se, paired = diff_se(a, b)
    d = a.log - b.log
    z = d / se if se else None
    return {"ratio": math.exp(d) - 1.0, "log_diff": d, "se": se, "paired": paired, "z": z,
            "beyond_noise": z is not None and abs(z) >= k,
            "windows": a.n if paired else None}


@dataclass(frozen=True)
class Ranking:
    """How a noise-aware search ranks: `k` (noise_k) and whether re-measured metrics rank
    first (halving)."""

    k: float = 2.0
    fidelity_first: bool = True

    def measure(self, ind) -> Measured | None:
        """The figure `ind` is ranked by: its higher-fidelity fitness where it has one."""
        if self.fidelity_first and ind.full is not None:
            return ind.full
        return ind.proxy

    def rung(self, ind) -> int:
        return 1 if self.fidelity_first and ind.full is not None else 0

    def tied(self, a, b) -> bool:
        """Same rung, and their figures within noise of each other."""
        if self.rung(a) != self.rung(b):
            return False
        ma, mb = self.measure(a), self.measure(b)
        return ma is not None and mb is not None and within_noise(ma, mb, self.k)


@dataclass
class Ranked:
    order: list[Any] = field(default_factory=list)
    ties: int = 0  # places decided among contenders tied within noise
    moved: int = 0  # of those, places where a simpler / earlier one passed a better value

    @property
    def position(self) -> dict[int, int]:
        return {ind.id: i for i, ind in enumerate(self.order)}


def _exact(ranking: Ranking, ind) -> tuple[float, int]:
    m = ranking.measure(ind)
    return (m.value if m is not None else math.inf, ind.idx)


def rank(members: Sequence[Any], ranking: Ranking, size: int | None = None) -> Ranked:
    """The first `size` (all: None) of `members` in the noise-aware order (module docstring).
    Members need `id`, `idx`, `size` (nodes), `proxy` and `full` (`Measured` or None)."""
    out = Ranked()
    for rung in (1, 0):
        left = sorted((m for m in members if ranking.rung(m) == rung),
                      key=lambda m: _exact(ranking, m))
        # a tie needs |Δ log| < k·SE(Δ) ≤ k·(SE_a + SE_b): past that bound (the list is sorted
        # by value) nothing is tied with the best, so the scan stops there
        cap = max((m.log_se for m in map(ranking.measure, left)
                   if m is not None and m.log_se is not None), default=0.0)
        while left and (size is None or len(out.order) < size):
            best, contenders = left[0], [left[0]]
            mb = ranking.measure(best)
            if mb is not None and mb.log_se is not None and ranking.k > 0:
                limit = mb.log + ranking.k * (mb.log_se + cap)
                for m in left[1:]:
                    if ranking.measure(m).log >= limit:
                        break
                    if ranking.tied(m, best):
                        contenders.append(m)
            pick = min(contenders, key=lambda m: (m.size, *_exact(ranking, m)))
            if len(contenders) > 1:
                out.ties += 1
                out.moved += pick is not best
            out.order.append(pick)
            left.remove(pick)
    return out
