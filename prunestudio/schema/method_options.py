"""Method options: the typed, torch-free settings of each pruning method.

A candidate spec's ``options`` are validated by its method's options model (unknown keys are
errors) and stored with every default filled in, so ``{}`` and ``{"scope": "matrix"}`` are one
candidate. The models live here, not beside the methods' torch code, so a reader (the web app's
candidate page, ``prunestudio methods``) can show them without importing the engine. A method
module names its model in ``options_model``; a new method with options adds its model here.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator, model_validator

from .catalog import catalog_for

__all__ = ["AGGREGATIONS", "IMPORTANCES", "Aggregation", "Importance", "MagnitudeOptions",
           "MethodOptions", "SparseGPTOptions", "StructuredOptions", "SymbolicOptions"]


class MethodOptions(BaseModel):
    """Method-specific options; unknown keys are errors."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class MagnitudeOptions(MethodOptions):
    scope: Literal["matrix", "row"] = "matrix"
    # Quantized weights (the default model is Q4_1) have many equal |W| in a row; which of them
    # is pruned changes PPL by several % (see engine.masks.lowest). "topk" reproduces the
    # reference code's choice on CPU.
    ties: Literal["index", "topk"] = "index"


class SparseGPTOptions(MethodOptions):
    blocksize: int = Field(128, ge=1)
    damp: float = Field(0.01, gt=0, description="fraction of mean(diag H) added to the diagonal")


class SymbolicOptions(MethodOptions):
    expression: str = Field(
        description="metric over W (=|W|), G (gradient l2), X (input sq-norms), "
        "e.g. mul(W,sqrt(X)); see prunestudio.engine.symbolic.ops for the ops"
    )
    scope: Literal["row", "matrix"] = "row"

    @field_validator("expression")
    @classmethod
    def _canonical(cls, text: str, info: ValidationInfo) -> str:
        catalog = catalog_for(info)
        # a malformed expression is a ValueError naming the position: pydantic reports it
        return text if catalog is None else catalog.expression(text)[0]


Importance = Literal["l1", "l2", "taylor_vector", "taylor_first", "taylor_second", "taylor_mix",
                     "activation", "combined", "random"]
Aggregation = Literal["sum", "mean", "max", "prod", "last"]
IMPORTANCES: tuple[str, ...] = Importance.__args__
AGGREGATIONS: tuple[str, ...] = Aggregation.__args__


class StructuredOptions(MethodOptions):
    """Options of the `structured` method (LLM-Pruner-style pruning that shrinks the model).

    How much is pruned comes from the candidate spec's `sparsity` read as `ratio`:
      ratio = "params" (default) - the fraction of the model's *parameters* to remove (all
              unique parameters, embeddings included, tied ones once); the group ratios that
              achieve it are solved for and recorded;
      ratio = "groups"           - LLM-Pruner's `--pruning_ratio`: the fraction of attention
              units and of MLP channels removed in every pruned block;
    or, with `sparsity = 0`, from per-block group ratios `attention_ratios` / `mlp_ratios` (one
    value per block; the form the accuracy-predictor search produces).
    """

    importance: Importance = Field(
        "taylor_first", description="l1, l2, taylor_vector, taylor_first, taylor_second, "
        "taylor_mix, activation, combined, random")
    aggregation: Aggregation = Field("sum", description="over a group: sum, mean, max, prod, last")
    ratio: Literal["params", "groups"] = Field(
        "params", description="what the spec's sparsity is a fraction of")
    attention_unit: Literal["kv_group", "query_head"] = Field(
        "kv_group", description="whole KV groups, or equal query heads per KV group (GQA)")
    attention: bool = Field(True, description="prune attention units")
    mlp: bool = Field(True, description="prune MLP channels")
    block_start: int = Field(0, description="first pruned block (LLM-Pruner keeps a few first)")
    block_end: int | None = Field(
        None, description="end of the pruned blocks, exclusive; negative counts from the end")
    attention_ratios: list[float] | None = Field(
        None, description="per-block attention group ratio (with sparsity 0)")
    mlp_ratios: list[float] | None = Field(
        None, description="per-block MLP group ratio (with sparsity 0)")
    alpha: float = Field(1.0, description="combined: weight of the vector-wise Taylor term")
    beta: float = Field(1.0, description="combined: weight of the element-wise first-order term")
    gamma: float = Field(1.0, description="combined: weight of the element-wise second-order term")
    seed: int = Field(0, description="random importance only")

    @model_validator(mode="after")
    def _check(self) -> StructuredOptions:
        if not (self.attention or self.mlp):
            raise ValueError("attention and mlp are both off: nothing to prune")
        for name in ("attention_ratios", "mlp_ratios"):
            values = getattr(self, name)
            if values is not None:
                bad = [v for v in values if not (0.0 <= v < 1.0)]
                if bad:
                    raise ValueError(f"{name} must lie in [0, 1); got {bad[0]}")
        return self

    @property
    def per_layer(self) -> bool:
        return self.attention_ratios is not None or self.mlp_ratios is not None
