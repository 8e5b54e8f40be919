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

import copy
import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from prunestudio.engine.models.adapters import ModelAdapter, PrunableLinear
from prunestudio.engine.structured import families as fam
from prunestudio.engine.structured.groups import (
    Extra,
    GroupSet,
    StructureError,
    block_groups,
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


def _steps(groups: GroupSet) -> tuple[int, int]:
    """(removal steps available, parameters per step): query_head mode removes one head from
    every KV group per step, so GQA stays consistent; a mixture of experts one channel from
    every expert."""
    return groups.steps()


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


def _check_allowed(groups: GroupSet, ratio: float, source: str) -> None:
    """Refuse a nonzero ratio for a kind the model's layout cannot prune (saying why and what
    is allowed)."""
    if ratio > 0 and groups.refusal:
        what = "attention" if groups.kind == "attention" else "MLP"
        raise StructureError(f"{what} pruning ({source}) is not possible: {groups.refusal}")


def _is_multi_query(att: GroupSet) -> bool:
    s = att.shape
    return att.unit == "kv_group" and s is not None and s.n_kv_heads == 1 and s.rep > 1


def _check_multi_query(att: GroupSet, ratio: float, source: str, off: str, every: bool) -> None:
    """KV groups of a multi-query model (`every` pruned block has one KV head serving several
    query heads): that head is all of the attention, so a nonzero ratio (that did not already
    fail as removing every unit) would remove nothing in any block; say which unit can be
    pruned instead. (One block left with a single KV group by an earlier pruning just realises
    0, as any ratio that rounds to no unit.)"""
    if every and ratio > 0 and _is_multi_query(att):
        s = att.shape
        raise StructureError(
            f"block {att.block}: its {s.n_heads} query heads share one KV head (multi-query "
            f"attention), so attention_unit = 'kv_group' ({source}) can only keep that head or "
            "remove the whole attention; allowed: attention_unit = 'query_head' (removes query "
            f"heads, the shared KV head stays) or {off}")


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
    hint_mlp = {b: "channels per expert" if m.partition is not None else "channels"
                for b, (_, m) in groups.items()}
    first = next(iter(groups.values()))[0] if groups else None
    mqa = bool(groups) and all(_is_multi_query(a) for a, _ in groups.values())
    counts = Counts(att_k, mlp_k, {}, att_r, mlp_r,
                    {b: math.prod(_steps(a)) for b, (a, _) in groups.items()},
                    {b: math.prod(_steps(m)) for b, (_, m) in groups.items()},
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
            channels, _ = _steps(mlp)
            ra, rm = ratios["attention_ratios"][b], ratios["mlp_ratios"][b]
            att_r[b] = ra if opts.attention else 0.0
            mlp_r[b] = rm if opts.mlp else 0.0
            _check_allowed(att, att_r[b], f"attention_ratios[{b}] = {ra:g}")
            _check_allowed(mlp, mlp_r[b], f"mlp_ratios[{b}] = {rm:g}")
            att_k[b] = unit_count(att_r[b], steps)
            mlp_k[b] = unit_count(mlp_r[b], channels)
            _check_count(b, "attention", att_k[b], steps, ra, hint_att[b],
                         f"option attention_ratios[{b}] = {ra:g}",
                         f"Allowed: attention_ratios[{b}] ≤ {max_ratio(steps):.4g} "
                         "(0 leaves the block's attention whole)")
            _check_multi_query(att, att_r[b], f"attention_ratios[{b}] = {ra:g}",
                               f"attention_ratios[{b}] = 0", mqa)
            _check_count(b, "MLP", mlp_k[b], channels, rm, hint_mlp[b],
                         f"option mlp_ratios[{b}] = {rm:g}",
                         f"Allowed: mlp_ratios[{b}] ≤ {max_ratio(channels):.4g} "
                         "(0 leaves the block's MLP whole)")
        counts.target = {"kind": "per_layer"}
        return counts
    if opts.ratio == "groups":
        for b, (att, mlp) in groups.items():
            steps, _ = _steps(att)
            channels, _ = _steps(mlp)
            att_r[b] = sparsity if opts.attention else 0.0
            mlp_r[b] = sparsity if opts.mlp else 0.0
            _check_allowed(att, att_r[b], f"sparsity = {sparsity:g}")
            _check_allowed(mlp, mlp_r[b], f"sparsity = {sparsity:g}")
            att_k[b] = unit_count(att_r[b], steps)
            mlp_k[b] = unit_count(mlp_r[b], channels)
            src = f"sparsity = {sparsity:g} read as a group ratio (ratio = 'groups')"
            _check_count(b, "attention", att_k[b], steps, sparsity, hint_att[b], src,
                         f"Allowed: sparsity ≤ {max_ratio(steps):.4g} for this block, "
                         "attention = false, or a pruned range without it (block_start / "
                         "block_end)")
            _check_multi_query(att, att_r[b], f"sparsity = {sparsity:g}", "attention = false",
                               mqa)
            _check_count(b, "MLP", mlp_k[b], channels, sparsity, hint_mlp[b], src,
                         f"Allowed: sparsity ≤ {max_ratio(channels):.4g} for this block, "
                         "mlp = false, or a pruned range without it (block_start / block_end)")
        counts.target = {"kind": "groups", "group_ratio": sparsity}
        return counts
    # ratio = params: solve for the group ratios that remove `sparsity` of all parameters
    target = sparsity * total_params
    for att, mlp in groups.values():
        src = f"sparsity = {sparsity:g} (ratio = 'params')"
        _check_allowed(att, 1.0 if opts.attention else 0.0, src)
        _check_allowed(mlp, 1.0 if opts.mlp else 0.0, src)
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
        _check_multi_query(att, att_r[b], f"sparsity = {sparsity:g}", "attention = false", mqa)
        removed += att_k[b] * per
    gm = max(0.0, (target - removed) / mlp_avail) if opts.mlp else 0.0
    for b, (_, mlp) in groups.items():
        channels, _ = _steps(mlp)
        mlp_r[b] = gm
        mlp_k[b] = unit_count(gm, channels)
        _check_count(b, "MLP", mlp_k[b], channels, gm, hint_mlp[b], src, fix)
    counts.target = {"kind": "params", "param_ratio": sparsity, "solved_group_ratio": g0,
                     "solved_mlp_ratio": gm}
    return counts


def _lowest(scores: torch.Tensor, k: int) -> list[int]:
    return sorted(torch.sort(scores, stable=True).indices[:k].tolist()) if k else []


def _lowest_per_part(groups: GroupSet, scores: torch.Tensor, k: int) -> list[int]:
    """The k lowest-scoring units (stable: ties go to the lower index); with a partition, the k
    lowest inside every part."""
    if not k:
        return []
    if groups.partition is None:
        return _lowest(scores, k)
    out: list[int] = []
    for row in groups.partition:
        out += [int(row[i]) for i in _lowest(scores[row], k)]
    return sorted(out)


def select_units(att: GroupSet, mlp: GroupSet, att_scores: torch.Tensor | None,
                 mlp_scores: torch.Tensor | None, k_att: int, k_mlp: int) -> BlockPlan:
    """The lowest-scoring units (stable: ties go to the lower index); `k_att` / `k_mlp` count
    removal steps (`GroupSet.steps`): with a partition, k units out of every part."""
    return BlockPlan(att.block, tuple(_lowest_per_part(att, att_scores, k_att)),
                     tuple(_lowest_per_part(mlp, mlp_scores, k_mlp)))


def check_plan(att: GroupSet, mlp: GroupSet, plan: BlockPlan) -> None:
    """Reject removals that empty a layer, leave KV groups with unequal query heads (or experts
    with unequal widths), or prune a kind the layout cannot."""
    b = plan.block
    for what, groups, units in (("attention", att, plan.attention), ("MLP", mlp, plan.mlp)):
        n = groups.n_units
        bad = [u for u in units if not (0 <= u < n)]
        if bad or len(set(units)) != len(units):
            raise StructureError(f"block {b}: {what} units {list(units)} must be distinct ids "
                                 f"in [0, {n})")
        if units and groups.refusal:
            raise StructureError(f"block {b}: {what} pruning is not possible: {groups.refusal}")
        if units and len(set(units)) >= n:
            raise StructureError(
                f"block {b}: removing all {n} {what} {groups.unit}s would leave the layer "
                "empty; at least one must stay")
        part = groups.partition
        if part is not None and units:
            removed = set(units)
            left = [sum(int(u) not in removed for u in row) for row in part]
            if len(set(left)) != 1:
                if groups.kind == "attention":
                    raise StructureError(
                        f"block {b}: removing query heads {sorted(removed)} leaves {left} query "
                        f"heads in its {len(left)} KV groups; grouped-query attention needs the "
                        "same number of query heads in every KV group — remove equally many per "
                        "KV group, or whole KV groups (attention_unit='kv_group')")
                raise StructureError(
                    f"block {b}: removing MLP channels {sorted(removed)} leaves {left} channels "
                    f"in its {len(left)} experts; the experts' stacked weights need the same "
                    "width in every expert — remove equally many channels per expert")


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


def _slice_experts(module: nn.Module, param: str, axis: int,
                   keep: dict[int, torch.Tensor]) -> None:
    """Replace a stacked (experts, ...) parameter by every expert's kept rows / columns of its
    logical (out, in) weight (and output bias); every expert must keep equally many."""
    old = getattr(module, param)
    n = old.shape[0]
    size = old.shape[1 + ((1 - axis) if module.is_transposed else axis)]
    keeps = [keep.get(e, torch.arange(size)) for e in range(n)]
    if len({len(k) for k in keeps}) != 1:
        raise StructureError(f"experts would keep {[len(k) for k in keeps]} channels; stacked "
                             "experts need the same width in every expert")
    dim = (1 - axis) if module.is_transposed else axis
    new = torch.stack([old.detach()[e].index_select(dim, k.to(old.device))
                       for e, k in enumerate(keeps)])
    setattr(module, param, nn.Parameter(new.clone(), requires_grad=old.requires_grad))
    if axis == 0 and getattr(module, "has_bias", False):
        ob = getattr(module, f"{param}_bias")
        nb = torch.stack([ob.detach()[e].index_select(0, k.to(ob.device))
                          for e, k in enumerate(keeps)])
        setattr(module, f"{param}_bias", nn.Parameter(nb.clone(), requires_grad=ob.requires_grad))


def _slice_extra(extra: Extra, keep: torch.Tensor) -> None:
    old = getattr(extra.module, extra.param)
    setattr(extra.module, extra.param, nn.Parameter(
        old.detach().index_select(0, keep.to(old.device)).clone(),
        requires_grad=old.requires_grad))


def _removed_positions(groups: GroupSet, units: Sequence[int]) -> dict[tuple[str, int], tuple]:
    out: dict[tuple[str, int], tuple] = {}
    if not units:
        return out
    ids = torch.tensor(list(units), dtype=torch.long)
    for m in groups.members:
        key = (m.lin.name, m.axis)
        lin, pos = out.get(key, (m.lin, set()))
        pos |= set(m.rows_of(ids).reshape(-1).tolist())
        out[key] = (lin, pos)
    return out


def _removed_extras(groups: GroupSet, units: Sequence[int]) -> list[tuple[Extra, set[int]]]:
    if not units:
        return []
    ids = torch.tensor(list(units), dtype=torch.long)
    return [(e, set(e.index[ids].reshape(-1).tolist())) for e in groups.extras]


def _keep(size: int, pos: set[int]) -> torch.Tensor:
    return torch.tensor([i for i in range(size) if i not in pos], dtype=torch.long)


def _check_shapes(s_heads: int, s_kv: int, block: int) -> None:
    if s_heads == 0 or s_kv == 0 or s_heads % s_kv:
        raise StructureError(f"block {block}: {s_heads} query heads over {s_kv} KV heads is not "
                             "a valid attention layout")


def _fix_block(adapter: ModelAdapter, model: nn.Module, block: int, attention: bool,
               mlp: bool) -> None:
    """Module attributes the forward reads after a shrink (head counts, split sizes, widths)."""
    layout = fam.layout_for(adapter, model)
    blk = adapter.blocks(model)[block]
    lins = fam.block_linears(adapter, model, block)
    if attention:
        s = fam.attention_shape(layout, blk, lins)
        _check_shapes(s.n_heads, s.n_kv_heads, block)
        layout.fix_attention(fam.attention_module(layout, blk), s, fam.model_config(model))
    if mlp:
        fam.fix_mlp(layout, blk, lins, fam.mlp_width(layout, lins))


@torch.no_grad()
def shrink(model: nn.Module, adapter: ModelAdapter, plan: StructuredPlan) -> None:
    """Remove the planned units from `model` in place (new, smaller parameters)."""
    for b, bp in sorted(plan.blocks.items()):
        att, mlp = block_groups(adapter, model, b, plan.attention_unit)
        check_plan(att, mlp, bp)
        for groups, units in ((att, bp.attention), (mlp, bp.mlp)):
            stacked: dict[tuple[int, str, int], tuple[nn.Module, dict[int, torch.Tensor]]] = {}
            for (_, axis), (lin, pos) in _removed_positions(groups, units).items():
                keep = _keep(lin.weight.shape[axis], pos)
                if lin.is_expert:  # every expert's slice first, then one new 3-D parameter
                    key = (id(lin.module), lin.param, axis)
                    stacked.setdefault(key, (lin.module, {}))[1][lin.expert] = keep
                else:
                    _slice(lin, axis, keep)
            for (_, param, axis), (module, keeps) in stacked.items():
                _slice_experts(module, param, axis, keeps)
            for extra, pos in _removed_extras(groups, units):
                _slice_extra(extra, _keep(getattr(extra.module, extra.param).shape[0], pos))
        _fix_block(adapter, model, b, bool(bp.attention), bool(bp.mlp))


@torch.no_grad()
def mask(model: nn.Module, adapter: ModelAdapter, plan: StructuredPlan) -> None:
    """Zero the planned units in place (weights, output biases, extras), shapes unchanged: the
    reference the shrunk model must match — for every family whose layout says so
    (`FamilyLayout.exact_mask`). OLMo 2 is refused: its q / k RMS norms average over the whole
    projection, so a zeroed head still counts in the mean square while a removed one does not;
    its shrunk model is the model built without those heads (norms over the kept width)."""
    layout = fam.layout_for(adapter, model)
    if not layout.exact_mask and any(bp.attention for bp in plan.blocks.values()):
        raise StructureError(
            f"{adapter.family}: zeroing attention heads is not what removing them computes (the "
            "q / k norms average over the whole projection); compare a shrunk model with one "
            "built without those heads instead")
    for b, bp in sorted(plan.blocks.items()):
        att, mlp = block_groups(adapter, model, b, plan.attention_unit)
        check_plan(att, mlp, bp)
        for groups, units in ((att, bp.attention), (mlp, bp.mlp)):
            for (_, axis), (lin, pos) in _removed_positions(groups, units).items():
                idx = torch.tensor(sorted(pos), dtype=torch.long, device=lin.weight.device)
                lin.weight.index_fill_(axis, idx, 0.0)
                if axis == 0 and lin.bias is not None:
                    lin.bias.index_fill_(0, idx, 0.0)
            for extra, pos in _removed_extras(groups, units):
                p = getattr(extra.module, extra.param)
                p.data.index_fill_(0, torch.tensor(sorted(pos), device=p.device), 0.0)


# ------------------------------------------------------------------ config


def layer_widths(model: nn.Module, adapter: ModelAdapter) -> list[dict[str, int]]:
    """Per block: heads, kv_heads, head_dim, mlp (channels; per expert for a mixture of
    experts, whose entries also give `experts`)."""
    layout = fam.layout_for(adapter, model)
    out = []
    for b in range(adapter.num_blocks(model)):
        blk = adapter.blocks(model)[b]
        lins = fam.block_linears(adapter, model, b)
        s = fam.attention_shape(layout, blk, lins)
        widths = {"heads": s.n_heads, "kv_heads": s.n_kv_heads, "head_dim": s.head_dim,
                  "mlp": fam.mlp_width(layout, lins)}
        if layout.mlp == "experts":
            widths["experts"] = fam.num_experts(lins)
        out.append(widths)
    return out


def plain_config_fields(model: nn.Module, adapter: ModelAdapter, layers: list[dict[str, int]],
                        original: list[dict[str, int]]) -> dict[str, int] | None:
    """The config fields that make plain `from_pretrained` rebuild a model of these widths, or
    None when the config cannot express them: widths that differ per layer; fewer heads where
    the config class declares no `head_dim` field (Phi-3, Phi-2, Falcon, Qwen2, OLMo 2, OPT,
    GPT-NeoX, GPT-2 derive it as hidden_size / heads — an extra key only some loaders read would
    be silently wrong elsewhere); or fields the config's own validation rejects (Gemma 2 / 3
    want hidden_size divisible by the heads)."""
    if not all(layer == layers[0] for layer in layers):
        return None
    layout = fam.layout_for(adapter, model)
    config = model.config
    first = layers[0]
    fields = {layout.mlp_field: first["mlp"]}
    heads_same = all(layer["heads"] == o["heads"] and layer["kv_heads"] == o["kv_heads"]
                     for layer, o in zip(layers, original, strict=True))
    if not heads_same:
        if not all(fam.config_declares(config, f) for f in
                   ("num_attention_heads", "num_key_value_heads", "head_dim")):
            return None
        fields.update(num_attention_heads=first["heads"], num_key_value_heads=first["kv_heads"],
                      head_dim=first["head_dim"])
    if not fam.config_declares(config, layout.mlp_field):
        return None
    trial = copy.deepcopy(fam.model_config(model))
    for name, value in fields.items():
        setattr(trial, name, value)
    try:  # the config class's own validation, as from_pretrained will run it
        rebuilt = type(trial).from_dict(trial.to_dict())
    except Exception:  # noqa: BLE001 - any rejection means "not expressible"
        return None
    if any(getattr(rebuilt, name, None) != value for name, value in fields.items()):
        return None
    return fields


def sync_config(model: nn.Module, adapter: ModelAdapter, original: list[dict[str, int]]) -> dict:
    """Record the per-layer widths in `model.config[CONFIG_KEY]`; when every layer has the same
    widths and the family's config can express them (`plain_config_fields`), update the config
    fields too so plain `from_pretrained` rebuilds the model. Returns the recorded entry."""
    config = model.config
    layers = layer_widths(model, adapter)
    fields = plain_config_fields(model, adapter, layers, original)
    if fields is not None:
        target = fam.model_config(model)
        for name, value in fields.items():
            setattr(target, name, value)
    entry = {"format": FORMAT, "family": adapter.family, "plain_from_pretrained": fields is not None,
             "layers": layers, "original_layers": original}
    setattr(config, CONFIG_KEY, entry)
    return entry


# ------------------------------------------------------------------ what a plan realises


def kept_units(plan: StructuredPlan, original: list[dict[str, int]]) -> list[dict[str, list[int]]]:
    """Per block, in the original numbering: the query heads, KV heads and MLP channels that
    `plan` keeps (for experts: expert e's channel c is e · width + c). `original` is
    `layer_widths` of the model the plan was made on."""
    out = []
    for b, w in enumerate(original):
        heads, kv = set(range(w["heads"])), set(range(w["kv_heads"]))
        mlp = set(range(w["mlp"] * w.get("experts", 1)))
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
