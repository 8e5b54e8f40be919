"""`prune_structured`: one candidate of the `structured` method, leaving the original intact.

Structured pruning changes shapes, so the runner's `WeightSnapshot` cannot undo it. Instead the
pruned model is a *copy*: the module tree is deep-copied while the tensors are shared (no memory
doubled), and shrinking replaces the pruned layers' parameters with new, smaller ones. The
original model never changes; the copy's untouched tensors (embeddings, norms, lm_head, the
output biases of o / down projections) are the original's, so treat them as read-only (no
in-place edits, no `.to(dtype)` on the copy) or pass `share_weights=False` for a full copy.

Importance is computed on the dense model in one shot (LLM-Pruner): the spec's
`calibration.mode` does not apply.
"""

from __future__ import annotations

import copy
import hashlib
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
from prunestudio.engine.calibration import StatsCache
from prunestudio.engine.methods import get_method
from prunestudio.engine.models.loading import LoadedModel
from prunestudio.engine.spec import CandidateSpec
from prunestudio.engine.structured.groups import block_groups
from prunestudio.engine.structured.importance import (
    Coefficients,
    group_scores,
    needs,
    taylor_stats,
)
from prunestudio.engine.structured.options import StructuredOptions
from prunestudio.engine.structured.prune import (
    StructuredPlan,
    check_plan,
    count_params,
    layer_widths,
    plan_counts,
    pruned_blocks,
    select_units,
    shrink,
    sync_config,
)
from torch import nn


@dataclass
class StructuredInfo:
    """What a structured candidate removed, with both ratios (parameters and groups)."""

    params_before: int
    params_after: int
    target: dict[str, Any]
    blocks: list[int]
    heads_before: int  # query heads in the pruned blocks
    heads_removed: int
    channels_before: int  # MLP channels in the pruned blocks
    channels_removed: int
    layers: list[dict[str, int]]
    plain_from_pretrained: bool
    options: dict[str, Any]
    seconds: dict[str, float] = field(default_factory=dict)

    @property
    def param_ratio(self) -> float:
        return 1.0 - self.params_after / self.params_before

    @property
    def attention_group_ratio(self) -> float:
        return self.heads_removed / self.heads_before if self.heads_before else 0.0

    @property
    def mlp_group_ratio(self) -> float:
        return self.channels_removed / self.channels_before if self.channels_before else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "param_ratio": self.param_ratio,
                "attention_group_ratio": self.attention_group_ratio,
                "mlp_group_ratio": self.mlp_group_ratio}

    def metrics(self) -> list[dict[str, Any]]:
        """Store records: the parameter ratio (with the group ratios in its protocol)."""
        protocol = {
            "target": self.target, "params_before": self.params_before,
            "params_after": self.params_after, "blocks": [self.blocks[0], self.blocks[-1] + 1]
            if self.blocks else [], "attention_group_ratio": self.attention_group_ratio,
            "mlp_group_ratio": self.mlp_group_ratio,
            "scope": "all unique parameters (embeddings included, tied once)",
            "group_ratio_scope": "query heads / MLP channels of the pruned blocks",
        }
        return [
            {"name": "param_ratio", "value": self.param_ratio, "role": "structure",
             "protocol": protocol},
            {"name": "group_ratio_attention", "value": self.attention_group_ratio,
             "role": "structure", "protocol": {"unit": self.options["attention_unit"]}},
            {"name": "group_ratio_mlp", "value": self.mlp_group_ratio, "role": "structure",
             "protocol": {"unit": "channel"}},
        ]


def copy_model(model: nn.Module, share_weights: bool = True) -> nn.Module:
    """A copy of the module tree; with `share_weights` its tensors are the original's."""
    if not share_weights:
        return copy.deepcopy(model)
    memo: dict[int, Any] = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return copy.deepcopy(model, memo)


def is_structured(spec: CandidateSpec) -> bool:
    """True for specs whose method shrinks the model (run them with `prune_structured`)."""
    return bool(getattr(get_method(spec.method), "structured", False))


def structured_options(spec: CandidateSpec) -> StructuredOptions:
    method = get_method(spec.method)
    if not getattr(method, "structured", False):
        raise ValueError(f"method {spec.method!r} is not structured; prune it with prune_model")
    return method.validate_options(spec.options)  # type: ignore[return-value]


def plan_structured(lm: LoadedModel, spec: CandidateSpec, stats: StatsCache | None,
                    progress: Callable[[int, int], None] | None = None,
                    ) -> tuple[StructuredPlan, dict[str, Any], dict[str, float]]:
    """Score every unit on the (unchanged) model and choose what to remove."""
    opts = structured_options(spec)
    model, adapter = lm.model, lm.adapter
    n = adapter.num_blocks(model)
    blocks = range(n) if opts.per_layer else pruned_blocks(n, opts)
    groups = {b: block_groups(adapter, model, b, opts.attention_unit) for b in blocks}
    counts = plan_counts(groups, opts, spec.sparsity, count_params(model), n)
    seconds: dict[str, float] = {}
    t0 = time.perf_counter()
    need = needs(opts.importance)
    if need and stats is None:
        raise ValueError(f"importance {opts.importance!r} needs calibration data")
    taylor = taylor_stats(stats) if "grad" in need else None
    x = ({k: v.x_sqnorm for k, v in stats.dense_layer_stats().items()} if "x" in need else None)
    seconds["statistics"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    gen = torch.Generator().manual_seed(opts.seed)
    coeffs = Coefficients(opts.alpha, opts.beta, opts.gamma)
    plan = StructuredPlan(opts.attention_unit)
    for i, b in enumerate(blocks):
        att, mlp = groups[b]
        ka, km = counts.attention[b], counts.mlp[b]
        kw = dict(taylor=taylor, x_sqnorm=x, coefficients=coeffs, generator=gen)
        sa = group_scores(att, opts.importance, opts.aggregation, **kw) if ka else None
        sm = group_scores(mlp, opts.importance, opts.aggregation, **kw) if km else None
        bp = select_units(att, mlp, sa, sm, ka, km)
        check_plan(att, mlp, bp)
        if bp.attention or bp.mlp:
            plan.blocks[b] = bp
        if progress:
            progress(i + 1, len(blocks))
    seconds["scores"] = time.perf_counter() - t0
    return plan, counts.target, seconds


def prune_structured(lm: LoadedModel, spec: CandidateSpec, stats: StatsCache | None, *,
                     share_weights: bool = True,
                     progress: Callable[[int, int], None] | None = None,
                     ) -> tuple[LoadedModel, StructuredInfo]:
    """Prune a copy of `lm.model` as `spec` (method 'structured') says; `lm` is left intact.

    Returns the pruned model wrapped as a `LoadedModel` (same tokenizer, adapter, device) and
    what was removed. Raises `StructureError` for impossible requests (a layer emptied, GQA
    broken, a target larger than the prunable blocks hold).
    """
    opts = structured_options(spec)
    plan, target, seconds = plan_structured(lm, spec, stats, progress)
    model, adapter = lm.model, lm.adapter
    original = layer_widths(model, adapter)
    t0 = time.perf_counter()
    pruned = copy_model(model, share_weights)
    shrink(pruned, adapter, plan)
    entry = sync_config(pruned, adapter, original)
    pruned.eval()
    seconds["shrink"] = time.perf_counter() - t0
    n = adapter.num_blocks(model)
    blocks = list(range(n) if opts.per_layer else pruned_blocks(n, opts))
    after = entry["layers"]
    info = StructuredInfo(
        params_before=count_params(model), params_after=count_params(pruned), target=target,
        blocks=blocks,
        heads_before=sum(original[b]["heads"] for b in blocks),
        heads_removed=sum(original[b]["heads"] - after[b]["heads"] for b in blocks),
        channels_before=sum(original[b]["mlp"] for b in blocks),
        channels_removed=sum(original[b]["mlp"] - after[b]["mlp"] for b in blocks),
        layers=after, plain_from_pretrained=entry["plain_from_pretrained"],
        options=opts.model_dump(mode="json"), seconds=seconds,
    )
    key = f"{lm.fingerprint}|{spec.hash()}|{stats.calib_hash if stats else ''}"
    out = LoadedModel(
        model=pruned, tokenizer=lm.tokenizer, adapter=adapter, source=lm.source,
        description=f"{lm.description}, structured {spec.label}",
        fingerprint=hashlib.sha256(key.encode()).hexdigest()[:16], device=lm.device,
        dtype=lm.dtype, extra={"structured": info},
    )
    return out, info
