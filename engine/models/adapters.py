"""Model adapters: where each architecture family keeps its decoder blocks and linear layers.

An adapter is the only place that knows module names. Everything else (calibration, pruning,
evaluation) asks the adapter for the blocks and for the prunable linear layers of a block, and
works on `PrunableLinear` views whose `weight` is always (out_features, in_features) — GPT-2's
`Conv1D` stores its weight transposed (in × out) and is handled here, not skipped.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn


class UnsupportedModelError(ValueError):
    """The model's architecture has no adapter."""


@dataclass(frozen=True)
class PrunableLinear:
    """One prunable linear layer of a decoder block.

    `name` is the module path inside the whole model (e.g. ``model.layers.3.mlp.down_proj``),
    `kind` its role in the block (q, k, v, o, qkv, gate, up, down, fc1, fc2).
    """

    name: str
    block: int
    kind: str
    module: nn.Module
    transposed: bool = False

    @property
    def weight(self) -> torch.Tensor:
        """The weight as (out_features, in_features); a view, so in-place edits reach the model."""
        w = self.module.weight.data
        return w.t() if self.transposed else w

    @property
    def in_features(self) -> int:
        return self.weight.shape[1]

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]


class ModelAdapter:
    """Base adapter: subclasses set `family`, `model_types`, `blocks_path` and `linear_kinds`."""

    family: str = ""
    model_types: tuple[str, ...] = ()
    blocks_path: str = ""
    # relative module name inside a block -> kind
    linear_kinds: dict[str, str] = {}
    transposed: bool = False

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        obj: nn.Module = model
        for part in self.blocks_path.split("."):
            obj = getattr(obj, part)
        return obj  # type: ignore[return-value]

    def prunable_linears(self, model: nn.Module, block_index: int) -> list[PrunableLinear]:
        block = self.blocks(model)[block_index]
        out = []
        for rel, kind in self.linear_kinds.items():
            module = block.get_submodule(rel)
            out.append(
                PrunableLinear(
                    name=f"{self.blocks_path}.{block_index}.{rel}",
                    block=block_index,
                    kind=kind,
                    module=module,
                    transposed=self.transposed,
                )
            )
        return out

    def all_prunable_linears(self, model: nn.Module) -> list[PrunableLinear]:
        return [
            lin
            for i in range(len(self.blocks(model)))
            for lin in self.prunable_linears(model, i)
        ]

    def num_blocks(self, model: nn.Module) -> int:
        return len(self.blocks(model))


class LlamaAdapter(ModelAdapter):
    family = "llama"
    model_types = ("llama", "mistral", "qwen2", "qwen3", "smollm3", "granite")
    blocks_path = "model.layers"
    linear_kinds = {
        "self_attn.q_proj": "q",
        "self_attn.k_proj": "k",
        "self_attn.v_proj": "v",
        "self_attn.o_proj": "o",
        "mlp.gate_proj": "gate",
        "mlp.up_proj": "up",
        "mlp.down_proj": "down",
    }


class OPTAdapter(ModelAdapter):
    family = "opt"
    model_types = ("opt",)
    blocks_path = "model.decoder.layers"
    linear_kinds = {
        "self_attn.q_proj": "q",
        "self_attn.k_proj": "k",
        "self_attn.v_proj": "v",
        "self_attn.out_proj": "o",
        "fc1": "fc1",
        "fc2": "fc2",
    }


class GPTNeoXAdapter(ModelAdapter):
    family = "gpt_neox"
    model_types = ("gpt_neox",)
    blocks_path = "gpt_neox.layers"
    linear_kinds = {
        "attention.query_key_value": "qkv",
        "attention.dense": "o",
        "mlp.dense_h_to_4h": "fc1",
        "mlp.dense_4h_to_h": "fc2",
    }


class GPT2Adapter(ModelAdapter):
    family = "gpt2"
    model_types = ("gpt2",)
    blocks_path = "transformer.h"
    transposed = True  # transformers.Conv1D: weight is (in, out)
    linear_kinds = {
        "attn.c_attn": "qkv",
        "attn.c_proj": "o",
        "mlp.c_fc": "fc1",
        "mlp.c_proj": "fc2",
    }


ADAPTERS: tuple[type[ModelAdapter], ...] = (LlamaAdapter, OPTAdapter, GPTNeoXAdapter, GPT2Adapter)


def supported_model_types() -> list[str]:
    return sorted(t for a in ADAPTERS for t in a.model_types)


def adapter_for(model_or_type: nn.Module | str) -> ModelAdapter:
    """The adapter for a model (or a `config.model_type` string); a clear error otherwise."""
    if isinstance(model_or_type, str):
        model_type = model_or_type
    else:
        model_type = getattr(getattr(model_or_type, "config", None), "model_type", None) or type(
            model_or_type
        ).__name__
    for cls in ADAPTERS:
        if model_type in cls.model_types:
            return cls()
    raise UnsupportedModelError(
        f"unsupported architecture {model_type!r}: Prune Studio supports the model types "
        f"{', '.join(supported_model_types())} (families: "
        f"{', '.join(a.family for a in ADAPTERS)})"
    )
