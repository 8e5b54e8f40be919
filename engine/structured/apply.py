"""`prune_structured`: one candidate of the `structured` method, leaving the original intact.

Structured pruning changes shapes, so the runner's `WeightSnapshot` cannot undo it. Instead the
pruned model is a *copy*: the module tree is deep-copied while the tensors are shared (no memory
doubled), and shrinking replaces the pruned layers' parameters with new, smaller ones. The
original model never changes; the copy's untouched tensors (embeddings, norms, lm_head, the
output biases of o / down projections) are the original's, so treat them as read-only (no
in-place edits, no `.to(dtype)` on the copy) or pass `share_weights=False` for a full copy.

Importance is computed on the dense model in one shot (LLM-Pruner): the spec's
`calibration.mode` does not apply.

Ratios become whole units by `prune.unit_count` (nearest, a tie rounds down); what each
candidate really removed is in `StructuredInfo.realised` (target and realised group ratios per
unit kind and overall, also among its `metrics()`), `StructuredInfo.realised_label` (a short
text for the candidate's label) and `StructuredInfo.structure_key` (equal for candidates that
keep the same units). `checks.check_structured_spec` rejects impossible structured specs
before any candidate runs.
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
from prunestudio.engine.methods import get_method, is_shape_changing
from prunestudio.engine.models.loading import LoadedModel
from prunestudio.engine.structured.groups import block_groups
from prunestudio.engine.structured.importance import (
    Coefficients,
    group_scores,
    needs,
    taylor_stats,
)
from prunestudio.engine.structured.plan import (
    UNIT_NOUNS,
    Counts,
    StructuredPlan,
    check_plan,
    count_params,
    kept_units,
    layer_widths,
    plan_counts,
    pruned_blocks,
    realised_ratios,
    select_units,
    shrink,
    structure_key,
    sync_config,
)
from torch import nn

from prunestudio.schema.method_options import StructuredOptions
from prunestudio.schema.spec import CandidateSpec


def _pct(x: float) -> str:
    """A ratio as a short percentage: whole percents when exact, one decimal otherwise; never
    "0%" for a nonzero ratio nor "100%" for one below 1."""
    p = 100.0 * x
    if p in (0.0, 100.0):
        return f"{p:.0f}%"
    if abs(p - round(p)) < 0.05 and 0 < round(p) < 100:
        return f"{round(p)}%"
    if 0.05 <= p <= 99.95:
        return f"{p:.1f}%"
    return f"{p:.1g}%" if p < 0.05 else ">99.9%"


@dataclass
class StructuredInfo:
    """What a structured candidate removed, with both ratios (parameters and groups).

    `realised` (see `prune.realised_ratios`): target and realised group ratio per unit kind
    ("attention", "mlp": unit, enabled, target, realised, removed, of, per-block lists) and
    overall ("group_ratio": target, realised), and the rounding rule. `structure_key`: sha256 of
    the kept heads / KV heads / channels of every block (`prune.structure_key`)."""

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
    realised: dict[str, Any] = field(default_factory=dict)
    structure_key: str = ""

    @property
    def param_ratio(self) -> float:
        return 1.0 - self.params_after / self.params_before

    @property
    def attention_group_ratio(self) -> float:
        return self.heads_removed / self.heads_before if self.heads_before else 0.0

    @property
    def mlp_group_ratio(self) -> float:
        return self.channels_removed / self.channels_before if self.channels_before else 0.0

    @property
    def realised_group_ratio(self) -> float:
        """Both kinds together, parameter-weighted (`realised["group_ratio"]["realised"]`)."""
        return float(self.realised.get("group_ratio", {}).get("realised", 0.0))

    @property
    def realised_label(self) -> str:
        """What the candidate really removed, to append to its label: the realised ratio of
        every pruned unit kind (with ratio = 'params' the parameter ratio first), e.g.
        "realised 0% query heads, 25% channels" or "realised 20.1% params (50% KV groups,
        12.5% channels)"."""
        parts = [f"{_pct(r['realised'])} {UNIT_NOUNS.get(r['unit'], r['unit'])}"
                 for r in (self.realised.get(k) for k in ("attention", "mlp"))
                 if r is not None and r["enabled"]]
        if self.target.get("kind") == "params":
            return f"realised {_pct(self.param_ratio)} params ({', '.join(parts)})"
        return "realised " + ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "param_ratio": self.param_ratio,
                "attention_group_ratio": self.attention_group_ratio,
                "mlp_group_ratio": self.mlp_group_ratio,
                "realised_group_ratio": self.realised_group_ratio,
                "realised_label": self.realised_label}

    def metrics(self) -> list[dict[str, Any]]:
        """Store records: the parameter ratio (with the group ratios in its protocol), the
        realised group ratio of each unit kind (target and realised in its protocol) and of
        both kinds together (`realised_group_ratio`)."""
        protocol = {
            "target": self.target, "params_before": self.params_before,
            "params_after": self.params_after, "blocks": [self.blocks[0], self.blocks[-1] + 1]
            if self.blocks else [], "attention_group_ratio": self.attention_group_ratio,
            "mlp_group_ratio": self.mlp_group_ratio,
            "scope": "all unique parameters (embeddings included, tied once)",
            "group_ratio_scope": "query heads / MLP channels of the pruned blocks",
            "structure_key": self.structure_key,
        }
        rounding = self.realised.get("rounding")

        def kind_protocol(kind: str, unit: str) -> dict[str, Any]:
            r = self.realised.get(kind, {})
            return {"unit": unit, "counted_in": r.get("unit"), "enabled": r.get("enabled"),
                    "target": r.get("target"), "realised": r.get("realised"),
                    "removed": r.get("removed"), "of": r.get("of"), "blocks": r.get("blocks"),
                    "target_per_block": r.get("target_per_block"),
                    "realised_per_block": r.get("realised_per_block"), "rounding": rounding}

        overall = self.realised.get("group_ratio", {})
        return [
            {"name": "param_ratio", "value": self.param_ratio, "role": "structure",
             "protocol": protocol},
            {"name": "group_ratio_attention", "value": self.attention_group_ratio,
             "role": "structure",
             "protocol": kind_protocol("attention", self.options["attention_unit"])},
            {"name": "group_ratio_mlp", "value": self.mlp_group_ratio, "role": "structure",
             "protocol": kind_protocol("mlp", "channel")},
            {"name": "realised_group_ratio", "value": self.realised_group_ratio,
             "role": "structure",
             "protocol": {"target": overall.get("target"), "realised": overall.get("realised"),
                          "weights": overall.get("weights"),
                          "attention": {k: self.realised.get("attention", {}).get(k)
                                        for k in ("unit", "enabled", "target", "realised")},
                          "mlp": {k: self.realised.get("mlp", {}).get(k)
                                  for k in ("unit", "enabled", "target", "realised")},
                          "label": self.realised_label, "rounding": rounding,
                          "structure_key": self.structure_key}},
        ]


def copy_model(model: nn.Module, share_weights: bool = True) -> nn.Module:
    """A copy of the module tree; with `share_weights` its tensors are the original's."""
    if not share_weights:
        return copy.deepcopy(model)
    memo: dict[int, Any] = {id(t): t for t in (*model.parameters(), *model.buffers())}
    return copy.deepcopy(model, memo)


def is_structured(spec: CandidateSpec) -> bool:
    """True for specs whose method shrinks the model (a `ShapeChangingMethod`)."""
    return is_shape_changing(spec.method)


def structured_options(spec: CandidateSpec) -> StructuredOptions:
    method = get_method(spec.method)
    if not issubclass(method.options_model, StructuredOptions):
        raise ValueError(f"method {spec.method!r} is not structured; prune it with prune_model")
    return method.validate_options(spec.options)  # type: ignore[return-value]


def plan_structured(lm: LoadedModel, spec: CandidateSpec, stats: StatsCache | None,
                    progress: Callable[[int, int], None] | None = None,
                    ) -> tuple[StructuredPlan, Counts, dict[str, float]]:
    """Score every unit on the (unchanged) model and choose what to remove: (plan, the unit
    counts with their target ratios, seconds)."""
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
    return plan, counts, seconds


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
    plan, counts, seconds = plan_structured(lm, spec, stats, progress)
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
        params_before=count_params(model), params_after=count_params(pruned),
        target=counts.target,
        blocks=blocks,
        heads_before=sum(original[b]["heads"] for b in blocks),
        heads_removed=sum(original[b]["heads"] - after[b]["heads"] for b in blocks),
        channels_before=sum(original[b]["mlp"] for b in blocks),
        channels_removed=sum(original[b]["mlp"] - after[b]["mlp"] for b in blocks),
        layers=after, plain_from_pretrained=entry["plain_from_pretrained"],
        options=opts.model_dump(mode="json"), seconds=seconds,
        realised=realised_ratios(original, after, counts, blocks, opts),
        structure_key=structure_key(kept_units(plan, original)),
    )
    key = f"{lm.fingerprint}|{spec.hash()}|{stats.calib_hash if stats else ''}"
    out = LoadedModel(
        model=pruned, tokenizer=lm.tokenizer, adapter=adapter, source=lm.source,
        description=f"{lm.description}, structured {spec.label}",
        fingerprint=hashlib.sha256(key.encode()).hexdigest()[:16], device=lm.device,
        dtype=lm.dtype, extra={"structured": info},
    )
    return out, info

