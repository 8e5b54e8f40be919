"""The overfitting rule of reconstruction sweeps (Shin et al. 2024), plain Python.

Along a sweep (the same spec and recipe but for `epochs` or `samples`), more reconstruction
that lowers the calibration error while a held-out perplexity rises is overfitting. The one rule
every reader applies — the study loop's warning events, ``prunestudio show``, the TUI, the web
app — on schema `Candidate` records; no pydantic, no torch (the CLI's read-only commands and
the TUI import it).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from .canonical import canonical_json
from .labels import RECONSTRUCTION_TITLES, spec_label

__all__ = ["RECONSTRUCTION_ROLE", "CALIBRATION_ERROR", "OverfitWarning", "overfitting_warnings",
           "sweep_points"]

RECONSTRUCTION_ROLE = "reconstruction"  # the role of the calibration-error metrics
#: the metric the overfitting rule reads: normalised error of the pruned model's hidden states
#: against the dense model's, mean over blocks, on the calibration windows (any mode, any epoch)
CALIBRATION_ERROR = "calib_error"


@dataclass(frozen=True)
class OverfitWarning:
    """Along a sweep, more reconstruction lowered calibration error but raised held-out PPL."""

    role: str  # the held-out evaluation role whose PPL rose
    variable: str  # epochs | samples
    low: Any  # the sweep value before ...
    high: Any  # ... and after
    low_candidate: int
    high_candidate: int
    calib_before: float
    calib_after: float
    ppl_before: float
    ppl_after: float
    label: str  # the sweep's candidates without the swept value, e.g. "wanda 50% +BR"

    @property
    def text(self) -> str:
        return (f"overfitting: {self.label}: {self.variable} {self.low} → {self.high} lowered "
                f"calibration error {self.calib_before:.4g} → {self.calib_after:.4g} but raised "
                f"{self.role} PPL {self.ppl_before:.3f} → {self.ppl_after:.3f} (candidates "
                f"{self.low_candidate} → {self.high_candidate})")


def sweep_points(candidates: Iterable[Any], variable: str) -> dict[str, list[tuple[Any, Any]]]:
    """Reconstructed candidates (schema `Candidate` records, status done) grouped by their spec
    without `variable` (``epochs`` or ``samples``, None counting as every window), each group
    sorted by that value: {group label: [(value, candidate), ...]} for groups of 2 or more."""
    groups: dict[str, list[tuple[Any, Any]]] = {}
    titles: dict[str, str] = {}
    for c in candidates:
        recipe = c.spec.get("reconstruction") if isinstance(c.spec, Mapping) else None
        if c.status != "done" or not isinstance(recipe, Mapping):
            continue
        rest = {k: v for k, v in recipe.items() if k != variable}
        key = canonical_json({**dict(c.spec), "reconstruction": rest})
        groups.setdefault(key, []).append((recipe.get(variable), c))
        label = spec_label({**dict(c.spec), "reconstruction": None})
        title = RECONSTRUCTION_TITLES.get(str(recipe.get("mode")), str(recipe.get("mode")))
        titles[key] = f"{label} +{title}" + (
            f" {recipe.get('epochs')}ep" if variable == "samples" else
            (f" n{recipe['samples']}" if recipe.get("samples") is not None else ""))
    out = {}
    for key, points in groups.items():
        if len(points) < 2:
            continue
        points.sort(key=lambda p: math.inf if p[0] is None else p[0])
        out[titles[key]] = points
    return out


def overfitting_warnings(candidates: Iterable[Any], roles: Iterable[str]) -> list[OverfitWarning]:
    """Consecutive sweep points (more epochs, or more windows) where the calibration error
    (`CALIBRATION_ERROR`, role ``reconstruction``) fell while the held-out PPL of one of
    `roles` rose. More windows are expected to *lower* held-out PPL; an epochs sweep is the
    paper's overfitting picture."""
    candidates = list(candidates)
    roles = list(roles)
    out = []
    for variable in ("epochs", "samples"):
        for label, points in sweep_points(candidates, variable).items():
            for (lo, a), (hi, b) in zip(points, points[1:], strict=False):
                ca = a.value(CALIBRATION_ERROR, RECONSTRUCTION_ROLE)
                cb = b.value(CALIBRATION_ERROR, RECONSTRUCTION_ROLE)
                if ca is None or cb is None or not cb < ca:
                    continue
                for role in roles:
                    pa, pb = a.value("ppl", role), b.value("ppl", role)
                    if pa is not None and pb is not None and pb > pa:
                        out.append(OverfitWarning(
                            role, variable, "all" if lo is None else lo,
                            "all" if hi is None else hi, a.id, b.id, ca, cb, pa, pb, label))
    return out
