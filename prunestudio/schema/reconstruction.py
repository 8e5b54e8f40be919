"""Reconstruction-error minimisation after pruning (Shin et al., 2024), torch-free.

After a block's mask is chosen (magnitude, Wanda, SparseGPT, any unstructured / N:M method),
its remaining weights are fitted with Adam so that its output matches a dense target; the
mask never changes. Three modes, one per target:

- ``lr`` (layer-wise): each linear layer alone; target = the dense layer on the same input
  (the input it sees in the pruned model);
- ``br`` (block-wise): the whole block; target = the *dense* block applied to the block's
  pruned-model input;
- ``gp`` (block-wise with global propagation, the paper's BR+GP): the whole block; target =
  the dense model's own hidden states after this block.

`ReconstructionSettings` is the recipe a reconstructed candidate's spec records
(``CandidateSpec.reconstruction``; the paper's defaults: Adam β = (0.9, 0.95), lr 2e-4, 10
epochs, batches of 8 windows, linear decay). `ReconstructionSection` is the study file's
``[reconstruction]``: which modes a grid crosses its methods with and the sweep (epochs, window
counts) the overfitting report reads. `overfitting_warnings` is the one rule every reader
(the study loop's events, ``show``, the TUI, the web app) uses: along a sweep, calibration
error fell but held-out perplexity rose.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from .labels import RECONSTRUCTION_TITLES, reconstruction_label
from .overfitting import (
    CALIBRATION_ERROR,
    RECONSTRUCTION_ROLE,
    OverfitWarning,
    overfitting_warnings,
    sweep_points,
)

__all__ = ["RECONSTRUCTION_MODES", "RECONSTRUCTION_ROLE", "CALIBRATION_ERROR",
           "ReconstructionSettings", "ReconstructionSection", "OverfitWarning",
           "overfitting_warnings", "sweep_points", "reconstruction_label",
           "RECONSTRUCTION_TITLES"]

RECONSTRUCTION_MODES = ("lr", "br", "gp")


class ReconstructionSettings(BaseModel):
    """One reconstruction recipe (what a reconstructed spec records)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["lr", "br", "gp"] = Field(
        "br", description="lr: each linear layer to the dense layer on its input; br: each "
        "block to the dense block on the pruned model's input; gp: each block to the dense "
        "model's own hidden states (global propagation)")
    epochs: int = Field(10, ge=0, description="passes over the reconstruction windows per "
                        "block (0: measure the errors only, fit nothing)")
    lr: float = Field(2e-4, gt=0, description="Adam learning rate")
    batch_size: int = Field(8, ge=1, description="windows per optimizer step")
    micro_batch_size: int | None = Field(
        None, ge=1, description="windows per forward / backward (gradients accumulated to "
        "batch_size; bounds activation memory, the result is the same); None: batch_size")
    betas: tuple[float, float] = Field((0.9, 0.95), description="Adam β1, β2")
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["linear", "constant"] = Field("linear", description="learning rate "
                                                    "decayed linearly to 0 over the block's "
                                                    "steps, or constant")
    max_grad_norm: float | None = Field(1000.0, gt=0, description="gradient clipping (the "
                                        "reference's 1000 rarely bites); None: off")
    samples: int | None = Field(None, ge=1, description="reconstruct on the first N windows "
                                "of the calibration set (masks still use all of them); None: "
                                "every window")
    seed: int = Field(0, description="batch order")

    @field_validator("betas")
    @classmethod
    def _betas(cls, v: tuple[float, float]) -> tuple[float, float]:
        if not all(0.0 <= b < 1.0 for b in v):
            raise ValueError(f"Adam betas must lie in [0, 1); got {list(v)}")
        return v

    @model_validator(mode="after")
    def _micro(self) -> ReconstructionSettings:
        m = self.micro_batch_size
        if m is not None and (m > self.batch_size or self.batch_size % m):
            raise ValueError(f"micro_batch_size ({m}) must divide batch_size "
                             f"({self.batch_size})")
        return self

    def recipe(self) -> dict[str, Any]:
        return self.model_dump(mode="json")


class ReconstructionSection(BaseModel):
    """The study file's ``[reconstruction]``: every in-place grid candidate (unstructured or
    N:M; not dense, not structured) is run once per mode × epochs × samples.

    ``modes`` may include ``none`` (the candidate as pruned). Several ``epochs`` or ``samples``
    values make a sweep: the overfitting report compares its points.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    modes: list[Literal["none", "lr", "br", "gp"]] = Field(
        default_factory=lambda: ["none", "br"])
    epochs: list[int] = Field(default_factory=lambda: [10], description="one candidate per "
                              "value (a sweep when several)")
    samples: list[int | None] = Field(default_factory=lambda: [None], description="windows "
                                      "reconstructed on, one candidate per value (None: all)")
    lr: float = Field(2e-4, gt=0)
    batch_size: int = Field(8, ge=1)
    micro_batch_size: int | None = Field(None, ge=1)
    betas: tuple[float, float] = (0.9, 0.95)
    eps: float = Field(1e-8, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["linear", "constant"] = "linear"
    max_grad_norm: float | None = Field(1000.0, gt=0)
    seed: int = 0

    @field_validator("modes", "epochs", "samples")
    @classmethod
    def _distinct(cls, v: list) -> list:
        if not v:
            raise ValueError("give at least one value")
        if len(set(v)) != len(v):
            raise ValueError(f"values must be distinct; got {v}")
        return v

    @field_validator("epochs")
    @classmethod
    def _epochs(cls, v: list[int]) -> list[int]:
        if any(e < 0 for e in v):
            raise ValueError(f"epochs must be >= 0; got {v}")
        return v

    @field_validator("samples")
    @classmethod
    def _samples(cls, v: list[int | None]) -> list[int | None]:
        if any(s is not None and s < 1 for s in v):
            raise ValueError(f"samples must be >= 1 (or null for every window); got {v}")
        return v

    @model_validator(mode="after")
    def _recipe_valid(self) -> ReconstructionSection:
        for mode in self.modes:
            if mode != "none":
                self.settings(mode, self.epochs[0], self.samples[0])  # raises what is wrong
        return self

    def settings(self, mode: str, epochs: int, samples: int | None) -> ReconstructionSettings:
        recipe = self.model_dump(exclude={"modes", "epochs", "samples"})
        return ReconstructionSettings(mode=mode, epochs=epochs, samples=samples, **recipe)

    def variants(self) -> list[ReconstructionSettings | None]:
        """Every recipe a candidate is crossed with (None: not reconstructed), in order."""
        out: list[ReconstructionSettings | None] = []
        for mode in self.modes:
            if mode == "none":
                out.append(None)
                continue
            for samples in self.samples:
                for epochs in self.epochs:
                    out.append(self.settings(mode, epochs, samples))
        return out
