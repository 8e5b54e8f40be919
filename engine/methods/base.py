"""The seams pruning methods plug into: two kinds, one registry.

- `PruningMethod` (mask / weight-update methods): declares which calibration statistics it
  needs and prunes one linear layer at a time, in place (a `WeightSnapshot` undoes it).
  Score-based methods (magnitude, Wanda, GBLM, symbolic metrics) only define a score; the shared
  `ScoreMethod.prune_layer` turns it into a mask for the requested pattern.
- `ShapeChangingMethod` (structured pruning, later anything that rebuilds the model): prunes a
  whole model at once and returns a *new* model (`prune(lm, spec, stats)`), leaving the original
  intact, with an info object that reports what it really removed.

Both share `MethodBase` (name, description, options model, needed statistics, labels), which is
what the registry, the spec validation and `prunestudio methods` read.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import wait
from dataclasses import dataclass
from typing import Any, ClassVar, Protocol

import torch
from prunestudio.engine.calibration import LayerStats
from prunestudio.engine.masks import (
    apply_mask_,
    check_finite,
    core_for_selection,
    lowest_mask_async,
    mask_n_m,
    mask_per_matrix,
    mask_per_row,
    n_to_prune,
    pipelined_selection,
)
from prunestudio.engine.models.adapters import PrunableLinear
from prunestudio.engine.phases import lap, restart_clock
from pydantic import ValidationError

from prunestudio.schema.method_options import MethodOptions


@dataclass(frozen=True)
class LayerTarget:
    sparsity: float
    nm: tuple[int, int] | None = None  # (n, m) for N:M, else unstructured


@dataclass
class LayerInputs:
    """What a method may read for one layer; fields it did not ask for are None."""

    stats: LayerStats | None = None
    grad: torch.Tensor | None = None  # GBLM's G, (out, in) fp32


class MethodBase:
    """What every method of either kind declares."""

    name: ClassVar[str] = ""
    description: ClassVar[str] = ""
    needs_x: ClassVar[bool] = False
    needs_hessian: ClassVar[bool] = False
    needs_grad: ClassVar[bool] = False
    options_model: ClassVar[type[MethodOptions]] = MethodOptions
    # True for shape-changing methods (`ShapeChangingMethod`): they return a new model instead
    # of pruning in place through prune_model / WeightSnapshot.
    structured: ClassVar[bool] = False

    @property
    def needs_calibration(self) -> bool:
        return self.needs_x or self.needs_hessian

    def needs(self, options: MethodOptions) -> frozenset[str]:
        """Statistics needed with these options: a subset of {"x", "hessian", "grad"}.

        The class flags by default; a method whose needs depend on its options (a symbolic
        expression without G needs no gradients) overrides this.
        """
        flags = (("x", self.needs_x), ("hessian", self.needs_hessian), ("grad", self.needs_grad))
        return frozenset(name for name, flag in flags if flag)

    def sparsity_from_options(self, options: MethodOptions) -> bool:
        """True when these options fix the amount pruned themselves (per-layer ratios), so
        the spec's sparsity must be 0."""
        return False

    def validate_options(self, options: dict) -> MethodOptions:
        try:
            return self.options_model(**options)
        except ValidationError as exc:
            fields = ", ".join(self.options_model.model_fields) or "none"
            raise ValueError(
                f"invalid options for method {self.name!r}: {exc.errors()[0]['msg']} "
                f"(at {'.'.join(map(str, exc.errors()[0]['loc']))}); allowed options: {fields}"
            ) from exc


# one layer to prune: the layer, its target, its statistics
LayerJob = tuple[PrunableLinear, LayerTarget, LayerInputs]


class PruningMethod(MethodBase):
    """Prunes one linear layer at a time, in place (masks, optionally a weight update)."""

    def prune_layer(self, lin: PrunableLinear, target: LayerTarget, inputs: LayerInputs,
                    options: MethodOptions) -> None:
        raise NotImplementedError

    def prune_layers(self, layers: Sequence[LayerJob], options: MethodOptions,
                     done: Callable[[int], None] | None = None) -> None:
        """Prune `layers` (each independent of the others: its statistics are given), each
        exactly as `prune_layer` would; `done(j)` after layer j is pruned, in order. A method
        may overlap their work."""
        for j, (lin, target, inputs) in enumerate(layers):
            self.prune_layer(lin, target, inputs, options)
            if done:
                done(j)


class ShapeInfo(Protocol):
    """What a shape-changing method reports about one pruned model."""

    structure_key: str  # equal for two candidates that keep the same units

    @property
    def realised_label(self) -> str: ...  # appended to the candidate's label

    def metrics(self) -> list[dict[str, Any]]: ...  # store metric records (realised ratios)

    def to_dict(self) -> dict[str, Any]: ...  # JSON, recorded in the candidate's info


class ShapeChangingMethod(MethodBase):
    """Prunes a whole model into a new, smaller one; the original model stays intact."""

    structured: ClassVar[bool] = True
    info_key: ClassVar[str] = "structured"  # where the candidate's info records `ShapeInfo`

    def check(self, lm, spec) -> None:
        """Raise ValueError when `spec` cannot run on `lm` (before any candidate runs)."""

    def prune(self, lm, spec, stats, *, progress: Callable[[int, int], None] | None = None,
              ) -> tuple[Any, ShapeInfo]:
        """(the pruned model as a LoadedModel, what was removed). `lm` is left as it was."""
        raise NotImplementedError


_SELECTIONS_AHEAD = 2  # masks queued on the selection thread (scores held: this + 1)


class ScoreMethod(PruningMethod):
    """A method defined by a per-weight importance score (higher = keep)."""

    default_scope: ClassVar[str] = "row"

    def score(self, weight: torch.Tensor, inputs: LayerInputs, options: MethodOptions) -> torch.Tensor:
        raise NotImplementedError

    def scope(self, options: MethodOptions) -> str:
        return getattr(options, "scope", self.default_scope)

    @torch.no_grad()
    def mask(self, lin: PrunableLinear, target: LayerTarget, inputs: LayerInputs,
             options: MethodOptions) -> torch.Tensor:
        return self.select(self.checked_score(lin, inputs, options), target, options)

    def checked_score(self, lin: PrunableLinear, inputs: LayerInputs,
                      options: MethodOptions) -> torch.Tensor:
        """The layer's fp32 score, rejected when not finite (`NonFiniteScoreError`)."""
        score = self.score(lin.weight.float(), inputs, options)
        check_finite(score, f"{self.name} score of {lin.name}")
        return score

    def select(self, score: torch.Tensor, target: LayerTarget,
               options: MethodOptions) -> torch.Tensor:
        """The prune mask (True = pruned) of a score for the target's pattern."""
        ties = getattr(options, "ties", "index")
        if target.nm is not None:
            return mask_n_m(score, *target.nm, ties=ties)
        if self.scope(options) == "matrix":
            return mask_per_matrix(score, target.sparsity, ties=ties)
        return mask_per_row(score, target.sparsity, ties=ties)

    @torch.no_grad()
    def prune_layer(self, lin: PrunableLinear, target: LayerTarget, inputs: LayerInputs,
                    options: MethodOptions) -> None:
        restart_clock()
        score = self.checked_score(lin, inputs, options)
        lap("score")
        mask = self.select(score, target, options)
        del score
        lap("select")
        apply_mask_(lin.weight, mask)
        lap("apply")

    def _pipelines(self, layers: Sequence[LayerJob], options: MethodOptions) -> bool:
        # scores are fp32 (`checked_score`) on the weight's device
        return (len(layers) > 1 and getattr(options, "ties", "index") == "index"
                and self.scope(options) == "row" and all(
                    target.nm is None and pipelined_selection(lin.weight.device)
                    for lin, target, _ in layers))

    @torch.no_grad()
    def prune_layers(self, layers: Sequence[LayerJob], options: MethodOptions,
                     done: Callable[[int], None] | None = None) -> None:
        """Per-row masks on CPU: layer j's mask is selected on the selection thread (numpy, on a
        core of its own) while this thread scores the next layers and applies finished masks
        with torch — the same masks as `prune_layer` (the same `lowest_mask`), in about the
        time of the longer of the two instead of their sum. The clock's "select" is then the
        wait for the selection thread: the part not hidden."""
        if not self._pipelines(layers, options):
            super().prune_layers(layers, options, done)
            return
        pending: deque = deque()

        def finish() -> None:
            j, lin, mask = pending.popleft()
            restart_clock()
            mask = mask.result()
            lap("select")
            apply_mask_(lin.weight, mask)
            lap("apply")
            if done:
                done(j)

        with core_for_selection():
            try:
                for j, (lin, target, inputs) in enumerate(layers):
                    restart_clock()
                    score = self.checked_score(lin, inputs, options)
                    lap("score")
                    mask = lowest_mask_async(score, n_to_prune(score.shape[1], target.sparsity))
                    del score
                    pending.append((j, lin, mask))
                    if len(pending) > _SELECTIONS_AHEAD:
                        finish()
                while pending:
                    finish()
            finally:  # a failing score: no selection left running behind the error
                for *_, mask in pending:
                    mask.cancel()
                wait([mask for *_, mask in pending])


def x_scale(inputs: LayerInputs, where: str) -> torch.Tensor:
    """sqrt of Wanda's scaler_row as a (1, in) row."""
    if inputs.stats is None or inputs.stats.x_sqnorm is None:
        raise RuntimeError(f"{where}: activation statistics were not collected")
    return inputs.stats.x_sqnorm.float().sqrt().reshape(1, -1)
