"""Recovery after pruning: LoRA / QLoRA fine-tuning settings, torch-free.

`RecoverySettings` is the training recipe: it is what a recovered candidate's spec records
(``CandidateSpec.recovery``), so two recoveries with the same recipe on the same parent are one
candidate. `RecoverySection` is the study file's ``[recovery]`` table: the recipe plus which
candidates a study recovers when it has run. The engine (``prunestudio.engine.recovery``) trains.

Training text: `windows` (a `WindowSpec`), or by default `n_windows` × `seqlen` tokens of the
study's calibration source and split, cut where its calibration windows start — never
overlapping an evaluation set or a search split (checked when the windows are cut).
"""

from __future__ import annotations

import math
from typing import Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from .catalog import catalog_for
from .labels import recovery_label  # noqa: F401 - re-exported
from .window_spec import WindowSpec, refuse_generated, with_default_split

__all__ = ["RECOVERY_METHODS", "RECOVERY_ROLE", "DEFAULT_STEPS", "RecoverySection",
           "RecoverySettings", "recovery_label"]

RECOVERY_METHODS = ("lora", "qlora")
RECOVERY_ROLE = "recovery"  # the role of the training-loss metrics of a recovered candidate
DEFAULT_STEPS = 100


class RecoverySettings(BaseModel):
    """A LoRA (peft) or QLoRA (bitsandbytes 4-bit base) fine-tuning of a pruned candidate.

    The adapters are merged into the weights afterwards (the recovered model is a plain
    transformers model); with `keep_sparsity` the pruned weights' zeros are put back after the
    merge (a merged LoRA update is dense), so the recovered model keeps its sparsity.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: Literal["lora", "qlora"] = Field(
        "lora", description="lora: adapters on the full-precision pruned model; qlora: the "
        "pruned model's target layers quantized to 4-bit NF4 (bitsandbytes) during training, "
        "the adapters merged into the full-precision weights")
    r: int = Field(8, ge=1, le=4096, description="LoRA rank")
    alpha: float = Field(16.0, gt=0, description="LoRA alpha (the update is scaled by "
                         "alpha / r)")
    dropout: float = Field(0.05, ge=0, lt=1, description="dropout on the adapters' input")
    target_modules: list[str] | None = Field(
        None, description="which prunable linear layers get adapters: kinds (q, k, v, o, qkv, "
        "gate, up, down, fc1, fc2) or module names (q_proj, mlp.down_proj); None: every "
        "prunable linear layer")
    lr: float = Field(1e-4, gt=0, description="AdamW learning rate")
    weight_decay: float = Field(0.0, ge=0)
    schedule: Literal["constant", "linear", "cosine"] = Field(
        "constant", description="learning-rate schedule after the warm-up")
    warmup_steps: int = Field(0, ge=0)
    steps: int | None = Field(None, ge=1, description=f"optimizer steps (default "
                              f"{DEFAULT_STEPS} when epochs is not given)")
    epochs: float | None = Field(None, gt=0, description="passes over the training windows "
                                 "(instead of steps)")
    batch_size: int = Field(4, ge=1, description="windows per step")
    seqlen: int = Field(128, ge=2, description="tokens per training window (when windows is "
                        "not given)")
    n_windows: int = Field(64, ge=1, description="number of training windows (when windows "
                           "is not given)")
    windows: WindowSpec | None = Field(
        None, description="the training text; None: n_windows × seqlen tokens of the study's "
        "calibration source and split, from its calibration offset (disjoint from every "
        "evaluation set)")
    seed: int = Field(0, description="adapter initialisation, batch order and dropout")
    max_grad_norm: float | None = Field(1.0, gt=0, description="gradient clipping (None: off)")
    keep_sparsity: bool = Field(True, description="after merging, put the pruned weights' "
                                "zeros back (False: a dense recovered model)")

    @model_validator(mode="before")
    @classmethod
    def _training_split(cls, data: Any, info: ValidationInfo) -> Any:
        """Training windows that name a source but no split train on its calibration
        (training) split, never on its held-out one."""
        if isinstance(data, dict) and isinstance(data.get("windows"), dict):
            windows = with_default_split(data["windows"], "calibration", catalog_for(info))
            data = {**data, "windows": windows}
        return data

    @field_validator("windows")
    @classmethod
    def _windows_are_text(cls, v: WindowSpec | None, info: ValidationInfo
                          ) -> WindowSpec | None:
        if v is not None:
            refuse_generated(v, "recovery training windows ([recovery] windows; by default the "
                             "calibration source's text)", catalog_for(info))
        return v

    @field_validator("target_modules")
    @classmethod
    def _targets(cls, v: list[str] | None) -> list[str] | None:
        if v is None:
            return None
        names = [t.strip() for t in v]
        if not names or any(not t for t in names):
            raise ValueError("target_modules needs at least one non-empty name (or leave it "
                             "out: every prunable linear layer)")
        if len(set(names)) != len(names):
            raise ValueError(f"target_modules must be distinct; got {names}")
        return names

    @model_validator(mode="after")
    def _consistent(self) -> RecoverySettings:
        if self.steps is not None and self.epochs is not None:
            raise ValueError("give steps or epochs, not both")
        if self.steps is None and self.epochs is None:
            object.__setattr__(self, "steps", DEFAULT_STEPS)
        if self.windows is not None:
            w = self.windows
            if w.n is None:
                raise ValueError("recovery windows need n (the number of training windows)")
            given = self.model_fields_set
            for key, value in (("seqlen", w.seqlen), ("n_windows", w.n)):
                if key in given and getattr(self, key) != value:
                    raise ValueError(f"{key} ({getattr(self, key)}) disagrees with the "
                                     f"windows' {'n' if key == 'n_windows' else key} ({value}); "
                                     "give it in windows only")
                object.__setattr__(self, key, value)
        if self.warmup_steps and self.warmup_steps >= self.total_steps:
            raise ValueError(f"warmup_steps ({self.warmup_steps}) must be fewer than the "
                             f"training steps ({self.total_steps})")
        return self

    @property
    def total_steps(self) -> int:
        """Optimizer steps: `steps`, or `epochs` passes of `n_windows` in batches."""
        if self.steps is not None:
            return self.steps
        return max(1, math.ceil(self.epochs * self.n_windows / self.batch_size))

    @property
    def scaling(self) -> float:
        return self.alpha / self.r

    def recipe(self) -> dict[str, Any]:
        """The canonical (JSON) form recorded in a recovered candidate's spec."""
        return self.model_dump(mode="json")


class RecoverySection(RecoverySettings):
    """The study file's ``[recovery]``: the recipe, and which candidates a study recovers
    after it has run (each becomes a new candidate, origin ``recovered``, its parent linked)."""

    best: int = Field(1, ge=1, description="recover the N best candidates by the study's "
                      "primary role (references such as dense and baselines excluded)")

    def settings(self) -> RecoverySettings:
        """The training recipe alone (what a recovered spec records)."""
        return RecoverySettings.model_validate(self.model_dump(exclude={"best"}))
