"""Per-family layout of attention units and MLP channels: one `FamilyLayout` entry per family.

A layout says where a block keeps its attention module and head size, how the query / key /
value rows of the heads are laid out (`qkv`), what kind of MLP it has (`mlp`), which config
field holds the MLP width, and the few module attributes a forward reads after heads are
removed (`fix_attention`). `groups` turns a layout into the coupled units of a block; adding
a family is one entry in `FAMILIES` (plus its branch in the shipped `modeling_prunestudio.py`).

q / k / v layouts (`hd` = head size, `nq` query heads, `nkv` KV heads, `rep = nq / nkv`):

- ``separate``: q, k, v are their own linears; head h is rows [h·hd, (h+1)·hd) of q, KV head g
  rows [g·hd, (g+1)·hd) of k and v (LLaMA, Gemma, OLMo 2, Mixtral, Phi-2, OPT);
- ``blocked``: one fused linear, rows [q of every head | k of every KV head | v of every KV
  head] (Phi-3 `qkv_proj`, GPT-2 `c_attn`, Falcon multi-query `query_key_value`);
- ``grouped``: one fused linear, per KV group its `rep` query heads, then its k, then its v
  (GPT-NeoX: rep = 1, i.e. [q | k | v] per head; Falcon's new decoder architecture and its
  classic multi-head layout);
- ``falcon``: ``blocked`` for multi-query configs, ``grouped`` otherwise.

MLP kinds: ``gated`` (gate / up rows, down column), ``gate_up`` (Phi-3's fused gate_up_proj:
channel c is rows c and I + c), ``fc`` (fc1 row, fc2 column, with biases where the model has
them), ``experts`` (transformers 5's stacked experts: every expert loses the same number of
channels, each expert ranked on its own, since the 3-D parameters need equal widths).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import torch
from prunestudio.engine.models.adapters import ModelAdapter, PrunableLinear, text_config

# the export's remote code carries the same per-layer config view (it cannot import Prune
# Studio); one definition serves both
from prunestudio.engine.structured.modeling_prunestudio import _LayerConfig as LayerConfig
from prunestudio.engine.structured.units import (
    AttentionShape,
    Extra,
    GroupSet,
    Member,
    StructureError,
    idx,
)
from torch import nn

# ------------------------------------------------------------------ per-layer config view


# ------------------------------------------------------------------ attention fix-ups


def fix_heads(att: nn.Module, s: AttentionShape, config) -> None:
    """The head-count attributes an attention module keeps (those it has)."""
    for attr, value in (("num_key_value_groups", s.rep), ("num_heads", s.n_heads),
                        ("num_attention_heads", s.n_heads), ("num_key_value_heads", s.n_kv_heads),
                        ("num_kv_heads", s.n_kv_heads)):
        if hasattr(att, attr):
            setattr(att, attr, value)


def _fix_gpt2(att: nn.Module, s: AttentionShape, config) -> None:
    fix_heads(att, s, config)
    att.split_size = s.n_heads * s.head_dim  # c_attn's output is split in three of this size


def _fix_phi3(att: nn.Module, s: AttentionShape, config) -> None:
    fix_heads(att, s, config)
    att.config = LayerConfig(config, num_attention_heads=s.n_heads,
                             num_key_value_heads=s.n_kv_heads)


def _falcon_refusal(config) -> str | None:
    if getattr(config, "alibi", False):
        return ("falcon with alibi positions: the alibi slopes are built for all "
                f"{config.num_attention_heads} heads at the model level, so heads cannot be "
                "removed from one block; allowed: MLP pruning only (attention = false)")
    return None


# ------------------------------------------------------------------ the layouts


@dataclass(frozen=True)
class FamilyLayout:
    attention: str  # the block's attention module
    head_dim_attr: str = "head_dim"
    qkv: str = "separate"  # separate | blocked | grouped | falcon
    mlp: str = "gated"  # gated | gate_up | fc | experts
    mlp_field: str = "intermediate_size"  # config field of the MLP width
    head_norms: bool = False  # q_norm / k_norm over the whole projection (OLMo 2)
    fix_attention: Callable[[nn.Module, AttentionShape, object], None] = fix_heads
    attention_refusal: Callable[[object], str | None] | None = None

    @property
    def exact_mask(self) -> bool:
        """Zeroing a unit computes what removing it computes (`plan.mask` is the reference).
        Not with OLMo 2's q / k norms: they normalise over the whole projection, so a zeroed
        head still counts in the mean square and a removed one does not."""
        return not self.head_norms


FAMILIES: dict[str, FamilyLayout] = {
    "llama": FamilyLayout("self_attn"),
    "gemma": FamilyLayout("self_attn"),  # explicit head_dim; per-head q / k norms (Gemma 3)
    "olmo2": FamilyLayout("self_attn", head_norms=True),
    "moe": FamilyLayout("self_attn", mlp="experts"),
    "phi3": FamilyLayout("self_attn", qkv="blocked", mlp="gate_up", fix_attention=_fix_phi3),
    "phi": FamilyLayout("self_attn", mlp="fc"),  # biases; partial rotary inside each head
    "falcon": FamilyLayout("self_attention", qkv="falcon", mlp="fc",
                           mlp_field="ffn_hidden_size", attention_refusal=_falcon_refusal),
    "opt": FamilyLayout("self_attn", mlp="fc", mlp_field="ffn_dim"),
    "gpt_neox": FamilyLayout("attention", head_dim_attr="head_size", qkv="grouped", mlp="fc"),
    "gpt2": FamilyLayout("attn", qkv="blocked", mlp="fc", mlp_field="n_inner",
                         fix_attention=_fix_gpt2),
}


def structured_families() -> str:
    """'llama (llama, mistral, ...); gemma (...); ...': the families structured pruning knows."""
    from prunestudio.engine.models.adapters import ADAPTERS

    return "; ".join(f"{a.family} ({', '.join(a.model_types)})" for a in ADAPTERS
                     if a.structured and a.family in FAMILIES)


def layout_for(adapter: ModelAdapter, model: nn.Module | None = None) -> FamilyLayout:
    """The family's layout; a clear StructureError for a model structured pruning cannot cut."""
    layout = FAMILIES.get(adapter.family)
    if layout is None or not adapter.structured:
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        what = f"model_type {model_type!r}" if model_type else "this model"
        how = ("it was found by generic discovery, which knows its linear layers but not how "
               "they form heads and MLP channels" if adapter.family == "generic" else
               f"the {adapter.family!r} family adapter does not describe its head layout")
        raise StructureError(
            f"structured pruning needs a family adapter that knows the model's attention heads "
            f"and MLP channels; {what}: {how}. Families that support structured pruning: "
            f"{structured_families()}. Unstructured and N:M pruning work on any model")
    return layout


# ------------------------------------------------------------------ reading a block


@dataclass
class BlockLinears:
    by_kind: dict[str, PrunableLinear]
    experts: list[PrunableLinear]


def block_linears(adapter: ModelAdapter, model: nn.Module, block: int) -> BlockLinears:
    lins = adapter.prunable_linears(model, block)
    return BlockLinears({lin.kind: lin for lin in lins if not lin.is_expert},
                        [lin for lin in lins if lin.is_expert])


def _need(lins: BlockLinears, *kinds: str) -> list[PrunableLinear]:
    missing = [k for k in kinds if k not in lins.by_kind]
    if missing:
        raise StructureError(f"the block has no {', '.join(missing)} layer (found "
                             f"{', '.join(sorted(lins.by_kind)) or 'none'}); its layout is not "
                             "the family's")
    return [lins.by_kind[k] for k in kinds]


def attention_module(layout: FamilyLayout, blk: nn.Module) -> nn.Module:
    return blk.get_submodule(layout.attention)


def attention_shape(layout: FamilyLayout, blk: nn.Module, lins: BlockLinears) -> AttentionShape:
    """Heads, KV heads and head size of a block, read from its current module shapes."""
    hd = int(getattr(attention_module(layout, blk), layout.head_dim_attr))
    if layout.qkv == "separate":
        q, k = _need(lins, "q", "k")
        return AttentionShape(q.out_features // hd, k.out_features // hd, hd)
    qkv, o = _need(lins, "qkv", "o")
    nq = o.in_features // hd
    return AttentionShape(nq, (qkv.out_features // hd - nq) // 2, hd)


def _qkv_pattern(layout: FamilyLayout, config) -> str:
    if layout.qkv != "falcon":
        return layout.qkv
    multi_query = getattr(config, "multi_query", False)
    return "grouped" if getattr(config, "new_decoder_architecture", False) or not multi_query \
        else "blocked"


def _head_starts(pattern: str, s: AttentionShape) -> tuple[torch.Tensor, ...]:
    """First row of each query head, KV head's k and KV head's v."""
    hd, nq, nkv, rep = s.head_dim, s.n_heads, s.n_kv_heads, s.rep
    h, g = torch.arange(nq), torch.arange(nkv)
    if pattern == "separate":
        return h * hd, g * hd, g * hd
    if pattern == "blocked":
        return h * hd, (nq + g) * hd, (nq + nkv + g) * hd
    stride = (rep + 2) * hd  # grouped
    return (h // rep) * stride + (h % rep) * hd, g * stride + rep * hd, g * stride + (rep + 1) * hd


def attention_members(layout: FamilyLayout, lins: BlockLinears, s: AttentionShape, unit: str,
                      config) -> tuple[Member, ...]:
    if layout.qkv == "separate":
        q, k, v, o = _need(lins, "q", "k", "v", "o")
    else:
        qkv, o = _need(lins, "qkv", "o")
        q = k = v = qkv
    q0, k0, v0 = _head_starts(_qkv_pattern(layout, config), s)
    span = torch.arange(s.head_dim)
    q_rows = q0.unsqueeze(1) + span  # (heads, hd)
    if unit == "kv_group":
        width = s.rep * s.head_dim
        return (Member(q, "q", 0, q_rows.reshape(s.n_kv_heads, width)),
                Member(k, "k", 0, k0.unsqueeze(1) + span),
                Member(v, "v", 0, v0.unsqueeze(1) + span),
                Member(o, "o", 1, idx(s.n_kv_heads, width)))
    return (Member(q, "q", 0, q_rows), Member(o, "o", 1, idx(s.n_heads, s.head_dim)))


def attention_extras(layout: FamilyLayout, blk: nn.Module, s: AttentionShape,
                     unit: str) -> tuple[Extra, ...]:
    """OLMo 2: q_norm / k_norm weights, one entry per q / k row."""
    if not layout.head_norms:
        return ()
    att = attention_module(layout, blk)
    hd = s.head_dim
    if unit == "kv_group":
        width = s.rep * hd
        return (Extra("q_norm", att.q_norm, "weight", idx(s.n_kv_heads, width)),
                Extra("k_norm", att.k_norm, "weight", idx(s.n_kv_heads, hd)))
    return (Extra("q_norm", att.q_norm, "weight", idx(s.n_heads, hd)),)


def mlp_width(layout: FamilyLayout, lins: BlockLinears) -> int:
    """Channels of the block's MLP (per expert for a mixture of experts)."""
    if layout.mlp == "experts":
        if not lins.experts:
            raise StructureError("the block has no experts; its layout is not the family's")
        return next(lin for lin in lins.experts if lin.kind == "expert_down").in_features
    if layout.mlp == "gated":
        return _need(lins, "gate")[0].out_features
    if layout.mlp == "gate_up":
        return _need(lins, "down")[0].in_features
    return _need(lins, "fc1")[0].out_features


def _expert_members(lins: BlockLinears, width: int) -> tuple[tuple[Member, ...], torch.Tensor]:
    n_experts = 1 + max(lin.expert for lin in lins.experts)
    partition = torch.arange(n_experts * width).view(n_experts, width)
    chan = idx(width, 1)
    members: list[Member] = []
    for lin in lins.experts:  # expert-major, execution order inside an expert
        units = partition[lin.expert]
        if lin.kind == "expert_down":
            members.append(Member(lin, "down", 1, chan, units))
        elif lin.kind == "expert_up":
            members.append(Member(lin, "up", 0, chan, units))
        elif getattr(lin.module, "is_concatenated", True):  # rows [gate | up]
            members += [Member(lin, "gate", 0, chan, units),
                        Member(lin, "up", 0, chan + width, units)]
        else:  # interleaved rows gate0, up0, gate1, up1, ...
            members += [Member(lin, "gate", 0, 2 * chan, units),
                        Member(lin, "up", 0, 2 * chan + 1, units)]
    return tuple(members), partition


def mlp_groups(layout: FamilyLayout, block: int, lins: BlockLinears) -> GroupSet:
    width = mlp_width(layout, lins)
    chan = idx(width, 1)
    if layout.mlp == "experts":
        members, partition = _expert_members(lins, width)
        others = sorted(lin.name.split(f".{block}.", 1)[-1] for k, lin in lins.by_kind.items()
                        if k not in ("q", "k", "v", "o"))
        refusal = None
        if others:
            refusal = (f"block {block} has a dense MLP or a shared expert ({', '.join(others)}) "
                       "beside its experts; structured MLP pruning knows blocks whose MLP is "
                       "only stacked experts (Mixtral); allowed here: attention pruning only "
                       "(mlp = false)")
        return GroupSet(block, "mlp", "channel", members, n_units=partition.numel(),
                        partition=partition, refusal=refusal)
    if layout.mlp == "gated":
        gate, up, down = _need(lins, "gate", "up", "down")
        members = (Member(gate, "gate", 0, chan), Member(up, "up", 0, chan),
                   Member(down, "down", 1, chan))
    elif layout.mlp == "gate_up":
        gate_up, down = _need(lins, "gate_up", "down")
        members = (Member(gate_up, "gate", 0, chan), Member(gate_up, "up", 0, chan + width),
                   Member(down, "down", 1, chan))
    else:
        fc1, fc2 = _need(lins, "fc1", "fc2")
        members = (Member(fc1, "fc1", 0, chan), Member(fc2, "fc2", 1, chan))
    return GroupSet(block, "mlp", "channel", members)


def fix_mlp(layout: FamilyLayout, blk: nn.Module, lins: BlockLinears, width: int) -> None:
    """MLP attributes a forward or a later export reads."""
    if layout.mlp == "experts":
        experts = lins.experts[0].module
        if hasattr(experts, "intermediate_dim"):
            experts.intermediate_dim = width
        return
    mlp = getattr(blk, "mlp", None)
    if mlp is not None and isinstance(getattr(mlp, "intermediate_size", None), int):
        mlp.intermediate_size = width


def num_experts(lins: BlockLinears) -> int:
    return 1 + max(lin.expert for lin in lins.experts) if lins.experts else 0


def config_declares(config, name: str) -> bool:
    """`name` is a declared field of the config class (not a derived property, not an extra
    key that only some loaders read)."""
    cls = type(text_config(config))
    if dataclasses.is_dataclass(cls):
        return any(f.name == name for f in dataclasses.fields(cls))
    return name in getattr(cls, "__annotations__", {})


def model_config(model: nn.Module):
    return text_config(model.config)
