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


class InvalidModelConfigError(ValueError):
    """A model config whose shapes cannot work (e.g. heads not divisible by KV heads)."""


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
    # "learned": one trained embedding per position (a longer input cannot run);
    # "rotary": RoPE (runs past the trained context, but the numbers mean something else)
    positions: str = "rotary"
    grouped_kv: bool = False  # num_key_value_heads may be fewer than num_attention_heads

    def check_config(self, config) -> None:
        """Raise InvalidModelConfigError when the config's head structure cannot work."""
        heads = getattr(config, "num_attention_heads", None)
        hidden = getattr(config, "hidden_size", None)
        if not isinstance(heads, int) or heads < 1:
            raise InvalidModelConfigError(
                f"{self.family} config has num_attention_heads = {heads!r}; it must be a "
                "positive integer")
        if self.grouped_kv:
            kv = getattr(config, "num_key_value_heads", None) or heads
            if kv > heads or heads % kv:
                raise InvalidModelConfigError(
                    f"num_attention_heads ({heads}) is not divisible by num_key_value_heads "
                    f"({kv}): with grouped-query attention every key/value head serves the "
                    "same number of query heads, so num_attention_heads must be a multiple of "
                    "num_key_value_heads (fix config.json)")
        if getattr(config, "head_dim", None) is None and isinstance(hidden, int) and hidden % heads:
            raise InvalidModelConfigError(
                f"hidden_size ({hidden}) is not divisible by num_attention_heads ({heads}): "
                "each head needs hidden_size / num_attention_heads dimensions (fix config.json "
                "or give head_dim)")

    def context_length(self, config) -> int | None:
        """The longest input the model was built / trained for (None: not stated)."""
        n = getattr(config, "max_position_embeddings", None)
        return n if isinstance(n, int) and n > 0 else None

    def context_field(self) -> str:
        return "max_position_embeddings"

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
    grouped_kv = True
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
    positions = "learned"
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
    positions = "learned"

    def context_field(self) -> str:
        return "n_positions"
    linear_kinds = {
        "attn.c_attn": "qkv",
        "attn.c_proj": "o",
        "mlp.c_fc": "fc1",
        "mlp.c_proj": "fc2",
    }


ADAPTERS: tuple[type[ModelAdapter], ...] = (LlamaAdapter, OPTAdapter, GPTNeoXAdapter, GPT2Adapter)


def supported_model_types() -> list[str]:
    return sorted(t for a in ADAPTERS for t in a.model_types)


def supported_description() -> str:
    """'llama family (model types llama, mistral, ...); opt family (opt); ...'"""
    return "; ".join(f"{a.family} family (model types {', '.join(a.model_types)})"
                     for a in ADAPTERS)


def find_adapter(model_type: str | None) -> ModelAdapter | None:
    for cls in ADAPTERS:
        if model_type in cls.model_types:
            return cls()
    return None


def unsupported_error(model_type: str | None, architectures=None,
                      where: str = "") -> UnsupportedModelError:
    """The error for a model type without an adapter, naming its architecture class(es)."""
    archs = ", ".join(architectures or [])
    what = (f"{archs} (model_type {model_type!r})" if archs else f"model_type {model_type!r}")
    return UnsupportedModelError(
        f"unsupported architecture {what}{f' in {where}' if where else ''}: Prune Studio "
        f"prunes decoder-only causal LMs of these families: {supported_description()}"
    )


def adapter_for(model_or_type: nn.Module | str) -> ModelAdapter:
    """The adapter for a model (or a `config.model_type` string); a clear error otherwise."""
    if isinstance(model_or_type, str):
        model_type, archs = model_or_type, None
    else:
        config = getattr(model_or_type, "config", None)
        model_type = getattr(config, "model_type", None)
        archs = [type(model_or_type).__name__]
    adapter = find_adapter(model_type)
    if adapter is None:
        raise unsupported_error(model_type, archs)
    return adapter
