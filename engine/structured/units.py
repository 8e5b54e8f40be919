"""The data structured pruning cuts with: units, their members, and the sets of one block.

A *unit* is what structured pruning removes as a whole, with every weight that depends on it
(see `groups` for the unit kinds). Each `Member` is one linear layer's slice of the units:
`index[r]` lists the positions along `axis` (0 = output rows, 1 = input columns of the logical
(out, in) weight) that belong to unit `units[r]` (to unit `r` when `units` is None: the member
covers every unit). An `Extra` is a 1-D parameter sliced with the units that takes no part in
the scores (OLMo 2's q / k norm weights). Members are listed in execution order, so the last
member covering a unit is its input-side projection (o / down / fc2).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import torch
from prunestudio.engine.models.adapters import PrunableLinear
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
    index: torch.Tensor  # (covered units, width) positions along `axis`
    units: torch.Tensor | None = None  # unit id of each index row; None: row r is unit r

    @property
    def has_bias(self) -> bool:
        return self.axis == 0 and self.lin.bias is not None

    @property
    def n_covered(self) -> int:
        return self.index.shape[0]

    def params_per_unit(self) -> int:
        other = self.lin.weight.shape[1 - self.axis]
        return self.index.shape[1] * (other + (1 if self.has_bias else 0))

    def rows_of(self, ids: torch.Tensor) -> torch.Tensor:
        """The index rows (positions) of the unit ids in `ids` this member covers."""
        if self.units is None:
            return self.index[ids]
        return self.index[torch.isin(self.units, ids)]


@dataclass(frozen=True)
class Extra:
    """A 1-D parameter (`module.<param>`) whose entries `index[u]` go with unit `u`."""

    name: str  # for messages
    module: nn.Module
    param: str
    index: torch.Tensor  # (units, width)


@dataclass(frozen=True)
class GroupSet:
    """Every unit of one kind (attention or MLP) in one block.

    `partition` (parts, per part) of unit ids, when units must be removed equally from every
    part: query heads per KV group (`query_head`), channels per expert (mixture of experts).
    `refusal`: why this kind cannot be pruned on this model (None: it can); the groups are
    still described, so parameter counts and layouts can be read."""

    block: int
    kind: Literal["attention", "mlp"]
    unit: str  # kv_group, query_head, channel
    members: tuple[Member, ...]
    shape: AttentionShape | None = None  # attention only
    n_units: int = 0
    partition: torch.Tensor | None = None
    extras: tuple[Extra, ...] = field(default=())
    refusal: str | None = None

    def __post_init__(self) -> None:
        if not self.n_units:
            object.__setattr__(self, "n_units", int(self.members[0].index.shape[0]))

    @property
    def params_per_unit(self) -> int:
        """Parameters one unit holds (weights, output biases and extras)."""
        total = sum(m.params_per_unit() * m.n_covered for m in self.members)
        total += sum(e.index.shape[1] * e.index.shape[0] for e in self.extras)
        return total // self.n_units

    @property
    def kv_partition(self) -> torch.Tensor | None:
        """query_head units: (n_kv_heads, rep) unit ids per KV group; else None."""
        return self.partition if self.unit == "query_head" else None

    def steps(self) -> tuple[int, int]:
        """(removal steps available, parameters per step): with a partition one step removes
        one unit from every part, so parts stay equal."""
        if self.partition is not None:
            return int(self.partition.shape[1]), int(self.partition.shape[0]) * self.params_per_unit
        return self.n_units, self.params_per_unit


def idx(units: int, width: int, stride: int | None = None, offset: int = 0) -> torch.Tensor:
    """(units, width) positions: unit u covers offset + u·stride + [0, width)."""
    stride = width if stride is None else stride
    return offset + torch.arange(units).unsqueeze(1) * stride + torch.arange(width).unsqueeze(0)
