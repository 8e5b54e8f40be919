"""A structurally pruned causal LM whose decoder blocks each have their own widths.

Written by Prune Studio into an export folder as `modeling_prunestudio.py`, next to a
`config.json` that names it in `auto_map`, so that plain transformers loads the folder:

    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)

Self-contained: it needs torch and transformers only (not Prune Studio). The classes extend the
model's own transformers classes (`BASE_CONFIG`, `BASE_MODEL` below, filled in by the export).
The config's `pruned_widths` holds one value per decoder block for `num_attention_heads`,
`num_key_value_heads`, `head_dim` and `intermediate_size` (the MLP width, whatever the family
calls it); its top-level fields keep the unpruned widths. The model is built as the family
builds it, then every block's linear layers are replaced by ones of the recorded widths (and
the attention's head counts set) *before* the weights load, so `from_pretrained` loads the
safetensors as saved. Nothing is pickled and no weight is changed.
"""

from __future__ import annotations

import transformers
from torch import nn
from transformers.pytorch_utils import Conv1D

# Filled in by the export: the family and the transformers classes this model extends.
FAMILY = "llama"
BASE_CONFIG = "LlamaConfig"
BASE_MODEL = "LlamaForCausalLM"

WIDTHS_KEY = "pruned_widths"
WIDTH_FIELDS = ("num_attention_heads", "num_key_value_heads", "head_dim", "intermediate_size")

_BaseConfig = getattr(transformers, BASE_CONFIG)
_BaseModel = getattr(transformers, BASE_MODEL)


class PruneStudioConfig(_BaseConfig):
    """The family's config plus `pruned_widths` (per-block widths, see the module docstring)."""

    model_type = _BaseConfig.model_type


def block_widths(config) -> list[dict[str, int]]:
    """Per block: {num_attention_heads, num_key_value_heads, head_dim, intermediate_size}."""
    widths = getattr(config, WIDTHS_KEY, None)
    n = config.num_hidden_layers
    if not isinstance(widths, dict) or any(
            not isinstance(widths.get(k), list) or len(widths[k]) != n for k in WIDTH_FIELDS):
        raise ValueError(f"config.{WIDTHS_KEY} must give {', '.join(WIDTH_FIELDS)} as lists of "
                         f"{n} values (one per decoder block); got {widths!r}")
    out = []
    for b in range(n):
        w = {k: int(widths[k][b]) for k in WIDTH_FIELDS}
        heads, kv = w["num_attention_heads"], w["num_key_value_heads"]
        if min(w.values()) < 1 or heads % kv:
            raise ValueError(f"block {b}: {w} is not a valid layout (every width at least 1, "
                             "num_attention_heads a multiple of num_key_value_heads)")
        out.append(w)
    return out


def _resized(old: nn.Module, out_features: int, in_features: int) -> nn.Module:
    """A layer like `old` (same kind, bias, dtype, device) with other widths; unfilled."""
    weight = old.weight
    if isinstance(old, Conv1D):  # GPT-2: weight is (in, out)
        new = Conv1D(out_features, in_features)
    elif isinstance(old, nn.Linear):
        new = nn.Linear(in_features, out_features, bias=old.bias is not None)
    else:
        raise TypeError(f"cannot resize a {type(old).__name__}")
    return new.to(device=weight.device, dtype=weight.dtype)


def _set(parent: nn.Module, name: str, out_features: int | None = None,
         in_features: int | None = None) -> None:
    old = getattr(parent, name)
    shape = old.weight.shape
    cur_out, cur_in = (shape[1], shape[0]) if isinstance(old, Conv1D) else (shape[0], shape[1])
    out_f = cur_out if out_features is None else out_features
    in_f = cur_in if in_features is None else in_features
    if (out_f, in_f) != (cur_out, cur_in):
        setattr(parent, name, _resized(old, out_f, in_f))


def _shrink_block(block: nn.Module, w: dict[str, int]) -> None:
    heads, kv, hd, mlp = (w["num_attention_heads"], w["num_key_value_heads"], w["head_dim"],
                          w["intermediate_size"])
    if FAMILY == "llama":  # LLaMA, Mistral, Qwen2/3, Granite, SmolLM: q/k/v/o, gate/up/down
        att = block.self_attn
        _set(att, "q_proj", out_features=heads * hd)
        _set(att, "k_proj", out_features=kv * hd)
        _set(att, "v_proj", out_features=kv * hd)
        _set(att, "o_proj", in_features=heads * hd)
        att.num_key_value_groups = heads // kv
        for field, value in (("num_heads", heads), ("num_attention_heads", heads),
                             ("num_key_value_heads", kv)):
            if hasattr(att, field):
                setattr(att, field, value)
        _set(block.mlp, "gate_proj", out_features=mlp)
        _set(block.mlp, "up_proj", out_features=mlp)
        _set(block.mlp, "down_proj", in_features=mlp)
        if hasattr(block.mlp, "intermediate_size"):
            block.mlp.intermediate_size = mlp
    elif FAMILY == "opt":
        att = block.self_attn
        for name in ("q_proj", "k_proj", "v_proj"):
            _set(att, name, out_features=heads * hd)
        _set(att, "out_proj", in_features=heads * hd)
        att.num_heads = heads
        _set(block, "fc1", out_features=mlp)
        _set(block, "fc2", in_features=mlp)
    elif FAMILY == "gpt_neox":  # fused query_key_value, per head [q | k | v]
        _set(block.attention, "query_key_value", out_features=3 * heads * hd)
        _set(block.attention, "dense", in_features=heads * hd)
        _set(block.mlp, "dense_h_to_4h", out_features=mlp)
        _set(block.mlp, "dense_4h_to_h", in_features=mlp)
    elif FAMILY == "gpt2":  # Conv1D; fused c_attn [q all heads | k all heads | v all heads]
        _set(block.attn, "c_attn", out_features=3 * heads * hd)
        _set(block.attn, "c_proj", in_features=heads * hd)
        block.attn.num_heads = heads
        block.attn.split_size = heads * hd
        _set(block.mlp, "c_fc", out_features=mlp)
        _set(block.mlp, "c_proj", in_features=mlp)
    else:
        raise ValueError(f"unknown family {FAMILY!r}")


_BLOCKS = {"llama": "model.layers", "opt": "model.decoder.layers", "gpt_neox": "gpt_neox.layers",
           "gpt2": "transformer.h"}


def shrink_to_widths(model: nn.Module, config) -> None:
    """Give every decoder block of `model` the widths `config.pruned_widths` records."""
    blocks = model.get_submodule(_BLOCKS[FAMILY])
    widths = block_widths(config)
    if len(blocks) != len(widths):
        raise ValueError(f"config.{WIDTHS_KEY} describes {len(widths)} blocks; the model has "
                         f"{len(blocks)}")
    for block, w in zip(blocks, widths, strict=True):
        _shrink_block(block, w)


class PruneStudioForCausalLM(_BaseModel):
    """The family's causal LM with per-block widths (`config.pruned_widths`)."""

    config_class = PruneStudioConfig

    def __init__(self, config):
        super().__init__(config)
        shrink_to_widths(self, config)
