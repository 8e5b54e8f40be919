"""Coupled structures of a decoder block: attention units and MLP channels.

A *unit* is what structured pruning removes as a whole, with every weight that depends on it:

- attention, `kv_group`: one key/value head with the query heads that read it (its q rows, its
  k and v rows, and the matching o columns; OLMo 2: the matching q_norm / k_norm entries).
  Without GQA (as many KV heads as query heads) this is one attention head.
- attention, `query_head` (GQA only): one query head (its q rows and o columns); the KV heads
  stay, and every KV group must keep the same number of query heads (checked in `prune`).
  With multi-query attention (one KV head, e.g. Falcon-7B) this is the only attention unit.
- MLP `channel`: one hidden unit of the MLP (gate / up rows and the down column for LLaMA;
  Phi-3's fused gate_up_proj rows c and I + c; fc1 row and fc2 column for OPT, GPT-NeoX, GPT-2,
  Phi-2, Falcon; for a mixture of experts one channel of one expert, and every expert loses
  equally many, each ranked on its own).

Units never cut inside a head, so a head's rotary dimensions stay whole. Where each family
keeps these weights is one entry of `families.FAMILIES`; the data (Member, GroupSet, ...) is
in `units`.
"""

from __future__ import annotations

import torch
from prunestudio.engine.models.adapters import ModelAdapter
from prunestudio.engine.structured import families as fam
from prunestudio.engine.structured.units import (
    ATTENTION_UNITS,
    AttentionShape,
    AttentionUnit,
    Extra,
    GroupSet,
    Member,
    StructureError,
)
from torch import nn

__all__ = ["ATTENTION_UNITS", "AttentionShape", "AttentionUnit", "Extra", "GroupSet", "Member",
           "StructureError", "attention_groups", "attention_shape", "block_groups",
           "mlp_groups", "mlp_width"]


def _block(adapter: ModelAdapter, model: nn.Module, block: int):
    layout = fam.layout_for(adapter, model)
    return layout, adapter.blocks(model)[block], fam.block_linears(adapter, model, block)


def attention_shape(adapter: ModelAdapter, model: nn.Module, block: int) -> AttentionShape:
    """Heads, KV heads and head size of a block, read from its current module shapes."""
    layout, blk, lins = _block(adapter, model, block)
    return fam.attention_shape(layout, blk, lins)


def mlp_width(adapter: ModelAdapter, model: nn.Module, block: int) -> int:
    """MLP channels of a block (per expert for a mixture of experts)."""
    layout, _, lins = _block(adapter, model, block)
    return fam.mlp_width(layout, lins)


def attention_groups(adapter: ModelAdapter, model: nn.Module, block: int,
                     unit: AttentionUnit = "kv_group") -> GroupSet:
    if unit not in ATTENTION_UNITS:
        raise StructureError(f"attention_unit {unit!r} is not valid; allowed: "
                             f"{', '.join(ATTENTION_UNITS)}")
    layout, blk, lins = _block(adapter, model, block)
    s = fam.attention_shape(layout, blk, lins)
    nq, nkv = s.n_heads, s.n_kv_heads
    if nq == 0 or nkv == 0 or nq % nkv:
        raise StructureError(
            f"block {block}: {nq} query heads over {nkv} KV heads is not a grouped-query layout "
            "structured pruning can cut (every KV head must serve the same number of query heads)")
    if unit == "query_head" and s.rep == 1:
        unit = "kv_group"  # no GQA: a query head is a whole head
    config = fam.model_config(model)
    members = fam.attention_members(layout, lins, s, unit, config)
    extras = fam.attention_extras(layout, blk, s, unit)
    refusal = layout.attention_refusal(config) if layout.attention_refusal else None
    partition = None
    if unit == "query_head":
        partition = torch.arange(nq).view(nkv, s.rep)
    return GroupSet(block, "attention", unit, members, s, partition=partition, extras=extras,
                    refusal=refusal)


def mlp_groups(adapter: ModelAdapter, model: nn.Module, block: int) -> GroupSet:
    layout, _, lins = _block(adapter, model, block)
    return fam.mlp_groups(layout, block, lins)


def block_groups(adapter: ModelAdapter, model: nn.Module, block: int,
                 unit: AttentionUnit = "kv_group") -> tuple[GroupSet, GroupSet]:
    """(attention units, MLP channels) of one block."""
    return attention_groups(adapter, model, block, unit), mlp_groups(adapter, model, block)
