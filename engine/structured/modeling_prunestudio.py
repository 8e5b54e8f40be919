"""A structurally pruned causal LM whose decoder blocks each have their own widths.

Written by Prune Studio into an export folder as `modeling_prunestudio.py`, next to a
`config.json` that names it in `auto_map`, so that plain transformers loads the folder:

    from transformers import AutoModelForCausalLM
    model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True)

Self-contained: it needs torch and transformers only (not Prune Studio). The classes extend the
model's own transformers classes (`BASE_CONFIG`, `BASE_MODEL` below, filled in by the export).
The config's `pruned_widths` holds one value per decoder block for `num_attention_heads`,
`num_key_value_heads`, `head_dim` and `intermediate_size` (the MLP width, whatever the family
calls it; per expert for a mixture of experts); its top-level fields keep the unpruned widths.
The model is built as the family builds it, then every block's linear layers (and stacked
experts, OLMo 2's q / k norms) are replaced by ones of the recorded widths, and the attention's
head counts set, *before* the weights load, so `from_pretrained` loads the safetensors as
saved. Nothing is pickled and no weight is changed.
"""

from __future__ import annotations

import torch
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


class _LayerConfig:
    """The model's config with a few per-layer fields (Phi-3's attention reads its head count
    from the config); every other field is the model's config's."""

    def __init__(self, base, **overrides) -> None:
        base = getattr(base, "_prunestudio_base", base)
        object.__setattr__(self, "_prunestudio_base", base)
        object.__setattr__(self, "_prunestudio_overrides", dict(overrides))

    def __getattr__(self, name: str):
        if name.startswith("__") or name.startswith("_prunestudio_"):
            raise AttributeError(name)
        overrides = object.__getattribute__(self, "_prunestudio_overrides")
        if name in overrides:
            return overrides[name]
        return getattr(object.__getattribute__(self, "_prunestudio_base"), name)

    def __setattr__(self, name: str, value) -> None:
        overrides = object.__getattribute__(self, "_prunestudio_overrides")
        if name in overrides:
            overrides[name] = value
        else:
            setattr(object.__getattribute__(self, "_prunestudio_base"), name, value)


def _resized(old: nn.Module, out_features: int, in_features: int) -> nn.Module:
    """A layer like `old` (same class, bias, dtype, device) with other widths; unfilled."""
    weight = old.weight
    if isinstance(old, Conv1D):  # GPT-2: weight is (in, out)
        new = Conv1D(out_features, in_features)
    elif isinstance(old, nn.Linear):  # nn.Linear or a subclass (Falcon's FalconLinear)
        new = type(old)(in_features, out_features, bias=old.bias is not None)
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


def _set_param(module: nn.Module, name: str, shape: tuple[int, ...]) -> None:
    """Replace a parameter by an unfilled one of `shape` (same dtype and device)."""
    old = getattr(module, name)
    if tuple(old.shape) != tuple(shape):
        setattr(module, name, nn.Parameter(torch.empty(shape, dtype=old.dtype, device=old.device),
                                           requires_grad=old.requires_grad))


def _set_heads(att: nn.Module, heads: int, kv: int) -> None:
    for field, value in (("num_key_value_groups", heads // kv), ("num_heads", heads),
                         ("num_attention_heads", heads), ("num_key_value_heads", kv),
                         ("num_kv_heads", kv)):
        if hasattr(att, field):
            setattr(att, field, value)


def _gated_mlp(mlp: nn.Module, width: int) -> None:
    _set(mlp, "gate_proj", out_features=width)
    _set(mlp, "up_proj", out_features=width)
    _set(mlp, "down_proj", in_features=width)
    if isinstance(getattr(mlp, "intermediate_size", None), int):
        mlp.intermediate_size = width


def _experts(experts: nn.Module, width: int) -> None:
    """Stacked experts (transformers 5): (experts, 2·width | width, hidden) and (experts,
    hidden, width), transposed when the experts say so."""
    n, hidden = experts.down_proj.shape[0], experts.hidden_dim
    up = "gate_up_proj" if experts.has_gate else "up_proj"
    up_rows = 2 * width if experts.has_gate else width
    if experts.is_transposed:
        _set_param(experts, up, (n, hidden, up_rows))
        _set_param(experts, "down_proj", (n, width, hidden))
    else:
        _set_param(experts, up, (n, up_rows, hidden))
        _set_param(experts, "down_proj", (n, hidden, width))
    if getattr(experts, "has_bias", False):
        _set_param(experts, f"{up}_bias", (n, up_rows))
    if hasattr(experts, "intermediate_dim"):
        experts.intermediate_dim = width


def _shrink_block(block: nn.Module, w: dict[str, int], config) -> None:
    heads, kv, hd, mlp = (w["num_attention_heads"], w["num_key_value_heads"], w["head_dim"],
                          w["intermediate_size"])
    if FAMILY in ("llama", "gemma", "olmo2", "moe", "phi"):  # q / k / v / o linears
        att = block.self_attn
        _set(att, "q_proj", out_features=heads * hd)
        _set(att, "k_proj", out_features=kv * hd)
        _set(att, "v_proj", out_features=kv * hd)
        _set(att, "dense" if FAMILY == "phi" else "o_proj", in_features=heads * hd)
        _set_heads(att, heads, kv)
        if FAMILY == "olmo2":  # q / k RMS norms over the whole projection
            _set_param(att.q_norm, "weight", (heads * hd,))
            _set_param(att.k_norm, "weight", (kv * hd,))
        if FAMILY == "moe":
            _experts(block.mlp.experts, mlp)
        elif FAMILY == "phi":
            _set(block.mlp, "fc1", out_features=mlp)
            _set(block.mlp, "fc2", in_features=mlp)
        else:
            _gated_mlp(block.mlp, mlp)
    elif FAMILY == "phi3":  # fused qkv_proj [q all | k all | v all], gate_up_proj [gate | up]
        att = block.self_attn
        _set(att, "qkv_proj", out_features=(heads + 2 * kv) * hd)
        _set(att, "o_proj", in_features=heads * hd)
        _set_heads(att, heads, kv)
        att.config = _LayerConfig(config, num_attention_heads=heads, num_key_value_heads=kv)
        _set(block.mlp, "gate_up_proj", out_features=2 * mlp)
        _set(block.mlp, "down_proj", in_features=mlp)
    elif FAMILY == "falcon":  # fused query_key_value: (heads + 2 · KV heads) · head_dim rows
        att = block.self_attention
        _set(att, "query_key_value", out_features=(heads + 2 * kv) * hd)
        _set(att, "dense", in_features=heads * hd)
        _set_heads(att, heads, kv)
        _set(block.mlp, "dense_h_to_4h", out_features=mlp)
        _set(block.mlp, "dense_4h_to_h", in_features=mlp)
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


_BLOCKS = {"opt": "model.decoder.layers", "gpt_neox": "gpt_neox.layers", "gpt2": "transformer.h",
           "falcon": "transformer.h"}  # every other family: model.layers


def shrink_to_widths(model: nn.Module, config) -> None:
    """Give every decoder block of `model` the widths `config.pruned_widths` records."""
    blocks = model.get_submodule(_BLOCKS.get(FAMILY, "model.layers"))
    widths = block_widths(config)
    if len(blocks) != len(widths):
        raise ValueError(f"config.{WIDTHS_KEY} describes {len(widths)} blocks; the model has "
                         f"{len(blocks)}")
    for block, w in zip(blocks, widths, strict=True):
        _shrink_block(block, w, config)


class PruneStudioForCausalLM(_BaseModel):
    """The family's causal LM with per-block widths (`config.pruned_widths`)."""

    config_class = PruneStudioConfig

    def __init__(self, config):
        super().__init__(config)
        shrink_to_widths(self, config)
