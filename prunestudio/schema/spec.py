"""Candidate specs: what to prune and how, as validated, canonical data.

A spec is a pydantic model with `extra="forbid"` (a typo is an error, not an ignored key). Its
canonical JSON and hash identify the candidate, so duplicates are recognised. Full validation
(the default) checks the method name and fills in its options' defaults through the engine's
catalog (`prunestudio.schema.catalog`); ``context=SHAPE_ONLY`` reads a recorded spec back
without the engine.
"""

from __future__ import annotations

from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializationInfo,
    SerializerFunctionWrapHandler,
    ValidationInfo,
    field_validator,
    model_serializer,
    model_validator,
)

from .canonical import canonical_json, spec_hash
from .catalog import catalog_for
from .labels import spec_label
from .reconstruction import ReconstructionSettings
from .recovery import RecoverySettings


class Pattern(BaseModel):
    """Sparsity pattern: `unstructured` or N:M (`2:4`, `4:8`, any N < M)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    kind: Literal["unstructured", "nm"] = "unstructured"
    n: int | None = None
    m: int | None = None

    @model_validator(mode="after")
    def _check(self) -> Pattern:
        if self.kind == "nm":
            if self.n is None or self.m is None:
                raise ValueError("an N:M pattern needs n and m")
            if not (0 < self.n < self.m):
                raise ValueError(f"N:M pattern needs 0 < N < M, got {self.n}:{self.m}")
        elif self.n is not None or self.m is not None:
            raise ValueError("n and m are only for kind='nm'")
        return self

    @classmethod
    def parse(cls, text: str) -> Pattern:
        """'unstructured' or 'N:M'."""
        text = text.strip().lower()
        if text in ("unstructured", "u"):
            return cls()
        if ":" in text:
            a, _, b = text.partition(":")
            try:
                n, m = int(a), int(b)
            except ValueError:
                pass
            else:
                return cls(kind="nm", n=n, m=m)
        raise ValueError(f"pattern {text!r} is not valid: use 'unstructured' or 'N:M' like 2:4")

    @property
    def label(self) -> str:
        return "unstructured" if self.kind == "unstructured" else f"{self.n}:{self.m}"

    @property
    def sparsity(self) -> float | None:
        return None if self.kind == "unstructured" else self.n / self.m


class OWLConfig(BaseModel):
    """OWL's two hyper-parameters (Yin et al., 2024; code luuyin/OWL ``lib/prune_all.py``).

    M = 5 and λ = 0.08 are what the OWL README's LLaMA commands pass (``--Hyper_m 5 --Lamda
    0.08``); the argparse default of its ``main.py`` is M = 3 (λ = 0.08)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    M: float = Field(5.0, gt=0, description="outlier threshold: a block's outlier ratio is the "
                     "share of its |W|·‖X‖ entries above M × their mean; default 5 as the OWL "
                     "README's LLaMA commands (--Hyper_m 5; the argparse default in its main.py "
                     "is 3)")
    lam: float = Field(0.08, ge=0, lt=1, description="λ: layer_ratios 'owl' spreads the block "
                       "sparsities over exactly 2λ around s (s − 2λ (r_i − mean r) / (max r − "
                       "min r), as the OWL code); 'owl_band' keeps them in [s − λ, s + λ]; "
                       "default 0.08 as the OWL README (--Lamda 0.08)")


class CalibrationConfig(BaseModel):
    """How statistics reach each block: `sequential` (the papers' protocol: block i's inputs
    come from the already-pruned blocks before it) or `dense` (all blocks from the cached dense
    statistics — faster, for searches)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    mode: Literal["sequential", "dense"] = "sequential"


class CandidateSpec(BaseModel):
    """One pruning job on the study's model and calibration set."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    method: str = Field(description="registered method name, e.g. wanda, sparsegpt, dense")
    sparsity: float = Field(0.0, description="target fraction of pruned weights, in [0, 1)")
    pattern: Pattern = Pattern()
    layer_ratios: Literal["uniform", "owl", "owl_band", "by_kind"] = Field(
        "uniform", description="per-block sparsity: uniform; owl (OWL's outlier-weighted "
        "ratios as its code maps them: spread 2λ); owl_band (the same outlier ratios mapped "
        "into [s − λ, s + λ]: what 'owl' meant before store schema 4); by_kind (kind_offsets)")
    owl: OWLConfig | None = None
    kind_offsets: dict[str, float] | None = Field(
        None, description="layer_ratios by_kind: a sparsity offset per layer kind (q, k, v, o, "
        "gate, up, down, ...); the engine re-centres them on the model's parameter counts, so "
        "kind k is pruned to sparsity + offset_k − (parameter-weighted mean offset) and the "
        "whole model to `sparsity`; kinds not named get offset 0. None: not by kind (left out "
        "of the canonical form)")
    calibration: CalibrationConfig = CalibrationConfig()
    options: dict = Field(default_factory=dict, description="method-specific options")
    recovery: RecoverySettings | None = Field(
        None, description="LoRA / QLoRA fine-tuning after pruning (a recovered candidate); "
        "None: not recovered (left out of the canonical form, so hashes stay as they were)")
    calibration_samples: tuple[int, ...] | None = Field(
        None, description="prune with these windows of the study's calibration set only "
        "(indices into it, ascending, distinct: the calibration pool of an AdaPruner search); "
        "None: every window (left out of the canonical form)")
    reconstruction: ReconstructionSettings | None = Field(
        None, description="fit each block's remaining weights to a dense target after its "
        "mask is chosen (layer-wise, block-wise or global propagation; the mask is fixed); "
        "None: not reconstructed (left out of the canonical form)")

    @model_serializer(mode="wrap")
    def _drop_unset_optionals(self, handler: SerializerFunctionWrapHandler,
                              info: SerializationInfo) -> dict:
        data = handler(self)
        if isinstance(data, dict):
            for key in ("recovery", "calibration_samples", "reconstruction", "kind_offsets"):
                if data.get(key, ...) is None:
                    del data[key]
        return data

    @field_validator("calibration_samples")
    @classmethod
    def _samples(cls, v: tuple[int, ...] | None) -> tuple[int, ...] | None:
        if v is None:
            return v
        if not v:
            raise ValueError("calibration_samples is empty: give at least one window index "
                             "(or leave it out for every window)")
        if any(i < 0 for i in v):
            raise ValueError(f"calibration_samples are window indices (>= 0); got {list(v)}")
        return tuple(sorted(set(v)))

    @field_validator("sparsity")
    @classmethod
    def _sparsity_range(cls, v: float) -> float:
        if not (0.0 <= v < 1.0):
            raise ValueError(f"sparsity must be in [0, 1), got {v}")
        return v

    @model_validator(mode="after")
    def _consistent(self, info: ValidationInfo) -> CandidateSpec:
        if (self.layer_ratios == "by_kind") != (self.kind_offsets is not None):
            raise ValueError("layer_ratios = 'by_kind' and kind_offsets go together: give both "
                             f"or neither (got layer_ratios={self.layer_ratios!r}, kind_offsets="
                             f"{self.kind_offsets})")
        if self.kind_offsets is not None:
            bad = {k: v for k, v in self.kind_offsets.items() if not -1 < v < 1}
            if bad or not self.kind_offsets:
                raise ValueError("kind_offsets: one offset in (-1, 1) per named layer kind, at "
                                 f"least one; got {self.kind_offsets}")
            object.__setattr__(self, "kind_offsets", dict(sorted(self.kind_offsets.items())))
        catalog = catalog_for(info)
        if catalog is None:  # shape only: a recorded spec, checked in full when recorded
            return self
        method = catalog.method(self.method)  # unknown method -> error listing the registry
        # stored validated, defaults filled in: {} and {'scope': 'matrix'} are one candidate
        opts = method.validate_options(self.options)
        object.__setattr__(self, "options", opts.model_dump(mode="json"))
        if self.reconstruction is not None and (method.structured or self.method == "dense"):
            raise ValueError(
                f"method {self.method!r}: reconstruction fits the remaining weights of an "
                "unstructured or N:M pruned model (magnitude, wanda, sparsegpt, ...); it takes "
                "no dense or structured candidate")
        if method.structured:
            if self.pattern.kind != "unstructured" or self.layer_ratios != "uniform":
                raise ValueError(
                    f"method {self.method!r} removes whole heads and channels: it takes no N:M "
                    "pattern and no layer_ratios (give per-block ratios in its options)"
                )
            if method.sparsity_from_options(opts):
                if self.sparsity != 0:
                    raise ValueError(
                        f"method {self.method!r}: give either sparsity or per-block ratios "
                        "(attention_ratios / mlp_ratios) in options, not both"
                    )
                return self
        if self.method == "dense":
            if self.sparsity != 0 or self.pattern.kind != "unstructured":
                raise ValueError("method 'dense' takes no sparsity or pattern")
            return self
        if self.pattern.kind == "nm":
            if self.sparsity not in (0.0, self.pattern.sparsity):
                raise ValueError(
                    f"pattern {self.pattern.label} fixes sparsity at {self.pattern.sparsity}; "
                    f"got sparsity={self.sparsity}"
                )
            if self.layer_ratios != "uniform":
                raise ValueError("N:M patterns take uniform layer ratios only")
            object.__setattr__(self, "sparsity", self.pattern.sparsity)
        elif self.sparsity == 0:
            raise ValueError(f"method {self.method!r} needs a sparsity in (0, 1)")
        if self.layer_ratios in ("owl", "owl_band") and self.owl is None:
            object.__setattr__(self, "owl", OWLConfig())
        return self

    def canonical(self) -> dict:
        return self.model_dump(mode="json")

    def canonical_json(self) -> str:
        return canonical_json(self.canonical())

    def hash(self) -> str:
        return spec_hash(self.canonical())

    @property
    def label(self) -> str:
        """The candidate label (the schema's one label function, on the canonical form)."""
        return spec_label(self.canonical())
