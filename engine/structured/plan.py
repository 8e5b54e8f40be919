"""Select units per block and physically shrink the model (weights, module shapes, config).

`plan_counts` turns the requested ratio into how many units each block loses, `select_units`
picks the lowest-importance ones, `check_plan` rejects plans that would empty a layer or break
grouped-query attention, `shrink` slices the weights (replacing parameters, never writing into
the old ones) and `sync_config` records the per-layer widths in the config. `realised_ratios`
and `structure_key` describe what a plan really removed.

Rounding (`unit_count`): a ratio r of n units removes the *nearest* whole number of units,
round(r·n); an exact tie (r·n = k + ½, within 1e-9) goes *down* to k, toward removing fewer
units. So a count is never more than half a unit above its target, and a tie never inflates a
ratio: 25 % of the 2 query heads of a KV group is 0.5 head → 0 heads (realised 0 %), never 1
(50 %). A nonzero ratio may legitimately realise 0 units; the realised ratios are recorded
with every candidate (`realised_ratios`), so that is always visible.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from prunestudio.engine.models.adapters import ModelAdapter, PrunableLinear
from prunestudio.engine.structured.groups import (
    GroupSet,
    StructureError,
    attention_shape,
    block_groups,
    mlp_width,
)
from torch import nn

from prunestudio.schema.method_options import StructuredOptions

CONFIG_KEY = "prunestudio_structured"
FORMAT = 1


@dataclass(frozen=True)
class BlockPlan:
    """Units removed from one block (ids as numbered by its GroupSets)."""

    block: int
    attention: tuple[int, ...] = ()
    mlp: tuple[int, ...] = ()


@dataclass
class StructuredPlan:
    attention_unit: str
    blocks: dict[int, BlockPlan] = field(default_factory=dict)


def count_params(model: nn.Module) -> int:
    """Unique parameters (a tied embedding counted once)."""
    seen: set[int] = set()
    total = 0
    for p in model.parameters():
        if id(p) not in seen:
            seen.add(id(p))
            total += p.numel()
    return total


ROUNDING = ("nearest whole unit; an exact tie (k + 1/2 units) rounds down, toward removing "
            "fewer units")
_TIE_EPS = 1e-9


def unit_count(ratio: float, n: int) -> int:
    """Units removed when `ratio` of `n` is asked for: the nearest whole number, an exact tie
    rounded down (see the module docstring). Floating-point noise around a tie (0.15 · 10 =
    1.5000000000000002) counts as the tie."""
    x = ratio * n
    k = math.floor(x)
    if x - k > 0.5 + _TIE_EPS:
        k += 1
    return max(0, min(int(k), n))


def max_ratio(n: int) -> float:
    """The largest ratio of `n` units that still keeps one: (n − ½) / n (its tie rounds down)."""
    return (n - 0.5) / n


def pruned_blocks(n_blocks: int, opts: StructuredOptions) -> range:
    end = n_blocks if opts.block_end is None else opts.block_end
    if end < 0:
        end += n_blocks
    if not (0 <= opts.block_start < end <= n_blocks):
        raise StructureError(
            f"block range [{opts.block_start}, {opts.block_end}) is empty or outside the "
            f"model's {n_blocks} blocks: need 0 ≤ block_start < block_end ≤ {n_blocks} "
            "(block_end may be negative, counted from the end)"
        )
    return range(opts.block_start, end)


def _steps(att: GroupSet) -> tuple[int, int]:
    """(removal steps available, parameters per step): query_head mode removes one head from
    every KV group per step, so GQA stays consistent."""
    if att.unit == "query_head":
        return att.shape.rep, att.shape.n_kv_heads * att.params_per_unit
    return att.n_units, att.params_per_unit


UNIT_NOUNS = {"kv_group": "KV groups", "query_head": "query heads", "head": "heads",
              "channel": "channels"}


def attention_unit_name(att: GroupSet) -> str:
    """The unit an attention GroupSet really removes: kv_group, query_head, or head (a KV group
    of one query head, i.e. no GQA)."""
    if att.unit == "kv_group" and att.shape is not None and att.shape.rep == 1:
        return "head"
    return att.unit


@dataclass
class Counts:
    """Per block: attention steps and MLP channels to remove, and how they were chosen.

    `attention_ratio` / `mlp_ratio`: the target group ratio of each block (0 for a kind that is
    not pruned); `attention_params` / `mlp_params`: the parameters all of the block's attention
    units / MLP channels hold (the weights of the overall group ratio)."""

    attention: dict[int, int]
    mlp: dict[int, int]
    target: dict
    attention_ratio: dict[int, float] = field(default_factory=dict)
    mlp_ratio: dict[int, float] = field(default_factory=dict)
    attention_params: dict[int, int] = field(default_factory=dict)
    mlp_params: dict[int, int] = field(default_factory=dict)
    attention_unit: str = "kv_group"  # kv_group, query_head or head


def _check_count(block: int, what: str, k: int, avail: int, ratio: float, hint: str,
                 source: str, fix: str) -> None:
    if k >= avail:
        raise StructureError(
            f"block {block}: {what} ratio {ratio:.3f} ({source}) removes {k} of its {avail} "
            f"{hint} — every one; at least one must stay (counts round to the nearest whole "
            f"unit, a tie down). {fix}"
        )


def plan_counts(groups: dict[int, tuple[GroupSet, GroupSet]], opts: StructuredOptions,
                sparsity: float, total_params: int, n_blocks: int) -> Counts:
    """How many attention steps and MLP channels each block loses (`unit_count` rounding).

    Raises `StructureError` naming the option, its value and the allowed range when a ratio
    would empty a block's attention or MLP, or a parameter target exceeds what the pruned
    blocks hold."""
    att_k: dict[int, int] = {}
    mlp_k: dict[int, int] = {}
    att_r: dict[int, float] = {}
    mlp_r: dict[int, float] = {}
    hint_att = {b: ("query heads per KV group" if a.unit == "query_head" else
                    "KV groups" if a.shape.rep > 1 else "heads") for b, (a, _) in groups.items()}
    first = next(iter(groups.values()))[0] if groups else None
    counts = Counts(att_k, mlp_k, {}, att_r, mlp_r,
                    {b: math.prod(_steps(a)) for b, (a, _) in groups.items()},
                    {b: m.n_units * m.params_per_unit for b, (_, m) in groups.items()},
                    attention_unit_name(first) if first is not None else opts.attention_unit)
    if opts.per_layer:
        ratios = {}
        for name in ("attention_ratios", "mlp_ratios"):
            values = getattr(opts, name)
            if values is not None and len(values) != n_blocks:
                raise StructureError(f"{name} has {len(values)} values; the model has "
                                     f"{n_blocks} blocks (give one per block)")
            ratios[name] = values or [0.0] * n_blocks
        for b, (att, mlp) in groups.items():
            steps, _ = _steps(att)
            ra, rm = ratios["attention_ratios"][b], ratios["mlp_ratios"][b]
            att_r[b] = ra if opts.attention else 0.0
            mlp_r[b] = rm if opts.mlp else 0.0
            att_k[b] = unit_count(att_r[b], steps)
            mlp_k[b] = unit_count(mlp_r[b], mlp.n_units)
            _check_count(b, "attention", att_k[b], steps, ra, hint_att[b],
                         f"option attention_ratios[{b}] = {ra:g}",
                         f"Allowed: attention_ratios[{b}] ≤ {max_ratio(steps):.4g} "
                         "(0 leaves the block's attention whole)")
            _check_count(b, "MLP", mlp_k[b], mlp.n_units, rm, "channels",
                         f"option mlp_ratios[{b}] = {rm:g}",
                         f"Allowed: mlp_ratios[{b}] ≤ {max_ratio(mlp.n_units):.4g} "
                         "(0 leaves the block's MLP whole)")
        counts.target = {"kind": "per_layer"}
        return counts
    if opts.ratio == "groups":
        for b, (att, mlp) in groups.items():
            steps, _ = _steps(att)
            att_r[b] = sparsity if opts.attention else 0.0
            mlp_r[b] = sparsity if opts.mlp else 0.0
            att_k[b] = unit_count(att_r[b], steps)
            mlp_k[b] = unit_count(mlp_r[b], mlp.n_units)
            src = f"sparsity = {sparsity:g} read as a group ratio (ratio = 'groups')"
            _check_count(b, "attention", att_k[b], steps, sparsity, hint_att[b], src,
                         f"Allowed: sparsity ≤ {max_ratio(steps):.4g} for this block, "
                         "attention = false, or a pruned range without it (block_start / "
                         "block_end)")
            _check_count(b, "MLP", mlp_k[b], mlp.n_units, sparsity, "channels", src,
                         f"Allowed: sparsity ≤ {max_ratio(mlp.n_units):.4g} for this block, "
                         "mlp = false, or a pruned range without it (block_start / block_end)")
        counts.target = {"kind": "groups", "group_ratio": sparsity}
        return counts
    # ratio = params: solve for the group ratios that remove `sparsity` of all parameters
    target = sparsity * total_params
    att_avail = sum(counts.attention_params.values()) if opts.attention else 0
    mlp_avail = sum(counts.mlp_params.values()) if opts.mlp else 0
    if target >= att_avail + mlp_avail:
        raise StructureError(
            f"cannot remove {sparsity:.1%} of the {total_params:,} parameters: the pruned blocks "
            f"hold only {(att_avail + mlp_avail) / total_params:.1%} in prunable units; widen "
            "the block range or lower the ratio (option sparsity with ratio = 'params': allowed "
            f"< {(att_avail + mlp_avail) / total_params:.4g} for these blocks and options)"
        )
    g0 = target / (att_avail + mlp_avail)
    ga = g0 if opts.mlp else target / att_avail  # attention alone must carry the whole target
    src = f"solved from sparsity = {sparsity:g} read as a parameter ratio (ratio = 'params')"
    fix = ("Lower sparsity, widen the pruned range (block_start / block_end), or prune "
           "attention and MLP both")
    removed = 0
    for b, (att, _) in groups.items():
        steps, per = _steps(att)
        att_r[b] = ga if opts.attention else 0.0
        att_k[b] = unit_count(att_r[b], steps)
        _check_count(b, "attention", att_k[b], steps, ga, hint_att[b], src, fix)
        removed += att_k[b] * per
    gm = max(0.0, (target - removed) / mlp_avail) if opts.mlp else 0.0
    for b, (_, mlp) in groups.items():
        mlp_r[b] = gm
        mlp_k[b] = unit_count(gm, mlp.n_units)
        _check_count(b, "MLP", mlp_k[b], mlp.n_units, gm, "channels", src, fix)
    counts.target = {"kind": "params", "param_ratio": sparsity, "solved_group_ratio": g0,
                     "solved_mlp_ratio": gm}
    return counts


def select_units(att: GroupSet, mlp: GroupSet, att_scores: torch.Tensor | None,
                 mlp_scores: torch.Tensor | None, k_att: int, k_mlp: int) -> BlockPlan:
    """The lowest-scoring units (stable: ties go to the lower index)."""
    def lowest(scores: torch.Tensor, k: int) -> list[int]:
        return sorted(torch.sort(scores, stable=True).indices[:k].tolist()) if k else []

    attention: list[int] = []
    if k_att:
        part = att.kv_partition
        if part is None:
            attention = lowest(att_scores, k_att)
        else:  # the k lowest query heads inside every KV group
            for row in part:
                attention += [int(row[i]) for i in lowest(att_scores[row], k_att)]
    mlp_units = lowest(mlp_scores, k_mlp) if k_mlp else []
    return BlockPlan(att.block, tuple(sorted(attention)), tuple(mlp_units))


def check_plan(att: GroupSet, mlp: GroupSet, plan: BlockPlan) -> None:
    """Reject removals that empty a layer or leave KV groups with unequal query heads."""
    b = plan.block
    for what, units, n in (("attention", plan.attention, att.n_units),
                           ("MLP", plan.mlp, mlp.n_units)):
        bad = [u for u in units if not (0 <= u < n)]
        if bad or len(set(units)) != len(units):
            raise StructureError(f"block {b}: {what} units {list(units)} must be distinct ids "
                                 f"in [0, {n})")
        if units and len(set(units)) >= n:
            raise StructureError(
                f"block {b}: removing all {n} {what} {att.unit if what == 'attention' else 'channel'}"
                "s would leave the layer empty; at least one must stay"
            )
    part = att.kv_partition
    if part is not None and plan.attention:
        removed = set(plan.attention)
        left = [sum(int(h) not in removed for h in row) for row in part]
        if len(set(left)) != 1:
            raise StructureError(
                f"block {b}: removing query heads {sorted(removed)} leaves {left} query heads in "
                f"its {len(left)} KV groups; grouped-query attention needs the same number of "
                "query heads in every KV group — remove equally many per KV group, or whole KV "
                "groups (attention_unit='kv_group')"
            )


# ------------------------------------------------------------------ physical shrink


def _slice(lin: PrunableLinear, axis: int, keep: torch.Tensor) -> None:
    """Replace the weight (and output bias) by the kept rows / columns: new parameters."""
    module = lin.module
    phys = (1 - axis) if lin.transposed else axis
    old = module.weight
    module.weight = nn.Parameter(old.detach().index_select(phys, keep.to(old.device)).clone(),
                                 requires_grad=old.requires_grad)
    if axis == 0 and getattr(module, "bias", None) is not None:
        ob = module.bias
        module.bias = nn.Parameter(ob.detach().index_select(0, keep.to(ob.device)).clone(),
                                   requires_grad=ob.requires_grad)
    out_f, in_f = lin.weight.shape  # PrunableLinear.weight reads the new (out, in) view
    if lin.transposed:  # transformers.Conv1D
        module.nf, module.nx = out_f, in_f
    else:
        module.out_features, module.in_features = out_f, in_f


def _removed_positions(groups: GroupSet, units: Sequence[int]) -> dict[tuple[str, int], tuple]:
    out: dict[tuple[str, int], tuple] = {}
    if not units:
        return out
    ids = torch.tensor(list(units), dtype=torch.long)
    for m in groups.members:
        key = (m.lin.name, m.axis)
        lin, pos = out.get(key, (m.lin, set()))
        pos |= set(m.index[ids].reshape(-1).tolist())
        out[key] = (lin, pos)
    return out


def _fix_attention(adapter: ModelAdapter, model: nn.Module, block: int) -> None:
    """Module attributes the attention forward reads (head counts, split size)."""
    s = attention_shape(adapter, model, block)
    blk = adapter.blocks(model)[block]
    if adapter.family == "llama":
        blk.self_attn.num_key_value_groups = s.rep
    elif adapter.family == "opt":
        blk.self_attn.num_heads = s.n_heads
    elif adapter.family == "gpt2":
        blk.attn.num_heads = s.n_heads
        blk.attn.split_size = s.n_heads * s.head_dim


def _check_shapes(s_heads: int, s_kv: int, block: int) -> None:
    if s_heads == 0 or s_kv == 0 or s_heads % s_kv:
        raise StructureError(f"block {block}: {s_heads} query heads over {s_kv} KV heads is not "
                             "a valid attention layout")


@torch.no_grad()
def shrink(model: nn.Module, adapter: ModelAdapter, plan: StructuredPlan) -> None:
    """Remove the planned units from `model` in place (new, smaller parameters)."""
    for b, bp in sorted(plan.blocks.items()):
        att, mlp = block_groups(adapter, model, b, plan.attention_unit)
        check_plan(att, mlp, bp)
        for groups, units in ((att, bp.attention), (mlp, bp.mlp)):
            for (_, axis), (lin, pos) in _removed_positions(groups, units).items():
                size = lin.weight.shape[axis]
                keep = torch.tensor([i for i in range(size) if i not in pos], dtype=torch.long)
                _slice(lin, axis, keep)
        if bp.attention:
            _fix_attention(adapter, model, b)
            s = attention_shape(adapter, model, b)
            _check_shapes(s.n_heads, s.n_kv_heads, b)
        if bp.mlp and adapter.family == "llama":
            mlp_mod = adapter.blocks(model)[b].mlp
            if hasattr(mlp_mod, "intermediate_size"):
                mlp_mod.intermediate_size = mlp_width(adapter, model, b)


@torch.no_grad()
def mask(model: nn.Module, adapter: ModelAdapter, plan: StructuredPlan) -> None:
    """Zero the planned units in place (weights and output biases), shapes unchanged: the
    reference the shrunk model must match."""
    for b, bp in sorted(plan.blocks.items()):
        att, mlp = block_groups(adapter, model, b, plan.attention_unit)
        check_plan(att, mlp, bp)
        for groups, units in ((att, bp.attention), (mlp, bp.mlp)):
            for (_, axis), (lin, pos) in _removed_positions(groups, units).items():
                idx = torch.tensor(sorted(pos), dtype=torch.long, device=lin.weight.device)
                lin.weight.index_fill_(axis, idx, 0.0)
                if axis == 0 and getattr(lin.module, "bias", None) is not None:
                    lin.module.bias.index_fill_(0, idx, 0.0)


# ------------------------------------------------------------------ config


_MLP_FIELD = {"llama": "intermediate_size", "opt": "ffn_dim", "gpt_neox": "intermediate_size",
              "gpt2": "n_inner"}


def layer_widths(model: nn.Module, adapter: ModelAdapter) -> list[dict[str, int]]:
    out = []
    for b in range(adapter.num_blocks(model)):
        s = attention_shape(adapter, model, b)
        out.append({"heads": s.n_heads, "kv_heads": s.n_kv_heads, "head_dim": s.head_dim,
                    "mlp": mlp_width(adapter, model, b)})
    return out


def sync_config(model: nn.Module, adapter: ModelAdapter, original: list[dict[str, int]]) -> dict:
    """Record the per-layer widths in `model.config[CONFIG_KEY]`; when every layer has the same
    widths and the family's config can express them, update the config fields too so plain
    `from_pretrained` rebuilds the model. Returns the recorded entry."""
    config = model.config
    layers = layer_widths(model, adapter)
    fam = adapter.family
    uniform = all(layer == layers[0] for layer in layers)
    heads_same = all(layer["heads"] == o["heads"] and layer["kv_heads"] == o["kv_heads"]
                     for layer, o in zip(layers, original, strict=True))
    plain = uniform and (fam == "llama" or heads_same)
    if plain:
        first = layers[0]
        setattr(config, _MLP_FIELD[fam], first["mlp"])
        if fam == "llama":
            config.num_attention_heads = first["heads"]
            config.num_key_value_heads = first["kv_heads"]
            config.head_dim = first["head_dim"]
    entry = {"format": FORMAT, "family": fam, "plain_from_pretrained": plain,
             "layers": layers, "original_layers": original}
    setattr(config, CONFIG_KEY, entry)
    return entry


# ------------------------------------------------------------------ what a plan realises


def kept_units(plan: StructuredPlan, original: list[dict[str, int]]) -> list[dict[str, list[int]]]:
    """Per block, in the original numbering: the query heads, KV heads and MLP channels that
    `plan` keeps. `original` is `layer_widths` of the model the plan was made on."""
    out = []
    for b, w in enumerate(original):
        heads, kv, mlp = set(range(w["heads"])), set(range(w["kv_heads"])), set(range(w["mlp"]))
        bp = plan.blocks.get(b)
        if bp is not None:
            rep = w["heads"] // w["kv_heads"]
            if plan.attention_unit == "query_head" and rep > 1:
                heads -= set(bp.attention)
            else:  # whole KV groups (a head each without GQA)
                kv -= set(bp.attention)
                heads -= {u * rep + j for u in bp.attention for j in range(rep)}
            mlp -= set(bp.mlp)
        out.append({"heads": sorted(heads), "kv_heads": sorted(kv), "mlp": sorted(mlp)})
    return out


def structure_key(kept: list[dict[str, list[int]]]) -> str:
    """sha256 (hex) of the kept query heads, KV heads and MLP channels of every block: equal
    for two candidates exactly when they keep the same units of the same model, whatever
    their specs (structured pruning changes no kept weight, so the models are identical)."""
    h = hashlib.sha256()
    for b, k in enumerate(kept):
        h.update(f"{b}|q:{','.join(map(str, k['heads']))}|kv:{','.join(map(str, k['kv_heads']))}"
                 f"|mlp:{','.join(map(str, k['mlp']))};".encode())
    return h.hexdigest()


def realised_ratios(original: list[dict[str, int]], after: list[dict[str, int]],
                    counts: Counts, blocks: Sequence[int], opts: StructuredOptions,
                    ) -> dict[str, Any]:
    """Target and realised group ratios per unit kind and overall, from the widths before and
    after the shrink (`layer_widths`), so they state what the model really lost.

    Per kind (attention: KV groups, query heads or heads as `unit` says; mlp: channels):
    `target` / `realised` over the pruned blocks (units removed / units there), `removed`,
    `of`, and per block (`blocks`, `target_per_block`, `realised_per_block`). `group_ratio`:
    both kinds together, each block's ratio weighted by the parameters its units hold (for
    ratio = 'groups' its target is the spec's group ratio); only kinds that are pruned count."""
    blocks = list(blocks)
    out: dict[str, Any] = {"rounding": ROUNDING}
    num = {"target": 0.0, "realised": 0.0}
    den = 0
    for kind, enabled in (("attention", opts.attention), ("mlp", opts.mlp)):
        unit = counts.attention_unit if kind == "attention" else "channel"
        field_ = {"kv_group": "kv_heads", "channel": "mlp"}.get(unit, "heads")
        ratios = counts.attention_ratio if kind == "attention" else counts.mlp_ratio
        weights = counts.attention_params if kind == "attention" else counts.mlp_params
        tgt, real, removed, of = [], [], 0, 0
        for b in blocks:
            n, left = original[b][field_], after[b][field_]
            tgt.append(float(ratios.get(b, 0.0)))
            real.append((n - left) / n)
            removed += n - left
            of += n
            if enabled:
                num["target"] += tgt[-1] * weights[b]
                num["realised"] += real[-1] * weights[b]
                den += weights[b]
        units = [original[b][field_] for b in blocks]
        out[kind] = {
            "unit": unit, "enabled": enabled,
            "target": sum(t * n for t, n in zip(tgt, units, strict=True)) / of if of else 0.0,
            "realised": removed / of if of else 0.0, "removed": removed, "of": of,
            "blocks": blocks, "target_per_block": tgt, "realised_per_block": real,
        }
    out["group_ratio"] = {
        "target": num["target"] / den if den else 0.0,
        "realised": num["realised"] / den if den else 0.0,
        "weights": "parameters of each pruned block's attention units / MLP channels",
    }
    return out
