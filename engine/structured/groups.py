"""Coupled structures of a decoder block: attention units and MLP channels.

A *unit* is what structured pruning removes as a whole, with every weight that depends on it:

- attention, `kv_group`: one key/value head with the query heads that read it (its q rows, its
  k and v rows, and the matching o columns). Without GQA (as many KV heads as query heads) this
  is one attention head.
- attention, `query_head` (GQA only): one query head (its q rows and o columns); the KV heads
  stay, and every KV group must keep the same number of query heads (checked in `prune`).
- MLP `channel`: one hidden unit of the MLP (gate / up rows and the down column for LLaMA;
  fc1 row and fc2 column for OPT, GPT-NeoX and GPT-2).

Units never cut inside a head, so a head's rotary dimensions stay whole. Each `Member` is one
linear layer's slice of the units: `index[u]` lists the positions along `axis` (0 = output rows,
1 = input columns of the logical (out, in) weight) that belong to unit `u`. Members are listed
in execution order, so the last one is the input-side projection (o / down / fc2).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
from prunestudio.engine.models.adapters import ModelAdapter, PrunableLinear
from torch import nn

AttentionUnit = Literal["kv_group", "query_head"]
ATTENTION_UNITS: tuple[str, ...] = ("kv_group", "query_head")


class StructureError(ValueError):
    """A structured-pruning request the model's structure cannot satisfy."""


@dataclass(frozen=True)
class AttentionShape:
    n_heads: int
    n_kv_heads: int
    head_dim: int

    @property
    def rep(self) -> int:
        """Query heads per KV head."""
        return self.n_heads // self.n_kv_heads


@dataclass(frozen=True)
class Member:
    lin: PrunableLinear
    role: str  # q, k, v, o, gate, up, down, fc1, fc2
    axis: int  # 0: output rows, 1: input columns (logical weight)
    index: torch.Tensor  # (units, width) positions along `axis`

    @property
    def has_bias(self) -> bool:
        return self.axis == 0 and getattr(self.lin.module, "bias", None) is not None

    def params_per_unit(self) -> int:
        other = self.lin.weight.shape[1 - self.axis]
        return self.index.shape[1] * (other + (1 if self.has_bias else 0))


@dataclass(frozen=True)
class GroupSet:
    """Every unit of one kind (attention or MLP) in one block."""

    block: int
    kind: Literal["attention", "mlp"]
    unit: str  # kv_group, query_head, channel
    members: tuple[Member, ...]
    shape: AttentionShape | None = None  # attention only

    @property
    def n_units(self) -> int:
        return self.members[0].index.shape[0]

    @property
    def params_per_unit(self) -> int:
        return sum(m.params_per_unit() for m in self.members)

    @property
    def kv_partition(self) -> torch.Tensor | None:
        """query_head units: (n_kv_heads, rep) unit ids per KV group; else None."""
        if self.unit != "query_head" or self.shape is None:
            return None
        return torch.arange(self.shape.n_heads).view(self.shape.n_kv_heads, self.shape.rep)


def _idx(units: int, width: int, stride: int | None = None, offset: int = 0) -> torch.Tensor:
    stride = width if stride is None else stride
    return offset + torch.arange(units).unsqueeze(1) * stride + torch.arange(width).unsqueeze(0)


def _lins(adapter: ModelAdapter, model: nn.Module, block: int) -> dict[str, PrunableLinear]:
    return {lin.kind: lin for lin in adapter.prunable_linears(model, block)}


def attention_shape(adapter: ModelAdapter, model: nn.Module, block: int) -> AttentionShape:
    """Heads, KV heads and head size of a block, read from its current module shapes."""
    lins = _lins(adapter, model, block)
    blk = adapter.blocks(model)[block]
    fam = adapter.family
    if fam == "llama":
        hd = int(blk.self_attn.head_dim)
        return AttentionShape(lins["q"].out_features // hd, lins["k"].out_features // hd, hd)
    if fam == "opt":
        hd = int(blk.self_attn.head_dim)
        n = lins["q"].out_features // hd
        return AttentionShape(n, n, hd)
    if fam == "gpt_neox":
        hd = int(blk.attention.head_size)
        n = lins["o"].in_features // hd
        return AttentionShape(n, n, hd)
    if fam == "gpt2":
        hd = int(blk.attn.head_dim)
        n = lins["o"].in_features // hd
        return AttentionShape(n, n, hd)
    raise StructureError(f"structured pruning does not know the family {fam!r}")


def mlp_width(adapter: ModelAdapter, model: nn.Module, block: int) -> int:
    lins = _lins(adapter, model, block)
    return (lins["gate"] if "gate" in lins else lins["fc1"]).out_features


def attention_groups(adapter: ModelAdapter, model: nn.Module, block: int,
                     unit: AttentionUnit = "kv_group") -> GroupSet:
    if unit not in ATTENTION_UNITS:
        raise StructureError(f"attention_unit {unit!r} is not valid; allowed: "
                             f"{', '.join(ATTENTION_UNITS)}")
    lins = _lins(adapter, model, block)
    s = attention_shape(adapter, model, block)
    hd, nq, nkv = s.head_dim, s.n_heads, s.n_kv_heads
    if nq == 0 or nkv == 0 or nq % nkv:
        raise StructureError(
            f"block {block}: {nq} query heads over {nkv} KV heads is not a grouped-query layout "
            "structured pruning can cut (every KV head must serve the same number of query heads)")
    if unit == "query_head" and s.rep == 1:
        unit = "kv_group"  # no GQA: a query head is a whole head
    if adapter.family == "llama":
        if unit == "kv_group":
            w = s.rep * hd
            members = (Member(lins["q"], "q", 0, _idx(nkv, w)), Member(lins["k"], "k", 0, _idx(nkv, hd)),
                       Member(lins["v"], "v", 0, _idx(nkv, hd)), Member(lins["o"], "o", 1, _idx(nkv, w)))
        else:
            members = (Member(lins["q"], "q", 0, _idx(nq, hd)), Member(lins["o"], "o", 1, _idx(nq, hd)))
    elif adapter.family == "opt":
        members = tuple(Member(lins[r], r, 0, _idx(nq, hd)) for r in ("q", "k", "v"))
        members += (Member(lins["o"], "o", 1, _idx(nq, hd)),)
    elif adapter.family == "gpt_neox":  # fused rows, per head [q | k | v]
        qkv = lins["qkv"]
        members = tuple(Member(qkv, r, 0, _idx(nq, hd, 3 * hd, j * hd))
                        for j, r in enumerate(("q", "k", "v")))
        members += (Member(lins["o"], "o", 1, _idx(nq, hd)),)
    elif adapter.family == "gpt2":  # fused rows [q all heads | k all heads | v all heads]
        qkv = lins["qkv"]
        members = tuple(Member(qkv, r, 0, _idx(nq, hd, hd, j * nq * hd))
                        for j, r in enumerate(("q", "k", "v")))
        members += (Member(lins["o"], "o", 1, _idx(nq, hd)),)
    else:
        raise StructureError(f"structured pruning does not know the family {adapter.family!r}")
    return GroupSet(block, "attention", unit, members, s)


def mlp_groups(adapter: ModelAdapter, model: nn.Module, block: int) -> GroupSet:
    lins = _lins(adapter, model, block)
    width = mlp_width(adapter, model, block)
    idx = _idx(width, 1)
    if "gate" in lins:
        members = (Member(lins["gate"], "gate", 0, idx), Member(lins["up"], "up", 0, idx),
                   Member(lins["down"], "down", 1, idx))
    else:
        members = (Member(lins["fc1"], "fc1", 0, idx), Member(lins["fc2"], "fc2", 1, idx))
    return GroupSet(block, "mlp", "channel", members)


def block_groups(adapter: ModelAdapter, model: nn.Module, block: int,
                 unit: AttentionUnit = "kv_group") -> tuple[GroupSet, GroupSet]:
    """(attention units, MLP channels) of one block."""
    return attention_groups(adapter, model, block, unit), mlp_groups(adapter, model, block)
