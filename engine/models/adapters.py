"""Model adapters: where a model keeps its decoder blocks and the linear layers inside them.

Discovery is generic (the reference code's approach): the decoder blocks are the model's one
`nn.ModuleList` of `num_hidden_layers` identical blocks, and the prunable layers of a block are
every `nn.Linear` / transformers `Conv1D` inside it, plus every expert of a mixture-of-experts
layer however transformers stores it (per-expert modules are plain linears; transformers 5's
stacked experts keep all experts in 3-D parameters, and each expert's slice is one layer here).
Routers are never prunable. Everything else (calibration, pruning, evaluation) works on
`PrunableLinear` views whose `weight` is always (out_features, in_features) — GPT-2's `Conv1D`
stores its weight transposed (in × out) and is handled here, not skipped.

A family adapter adds only what a family needs beyond that: role names (`kind`: q, k, v, o,
qkv, gate, up, gate_up, down, fc1, fc2) for structured pruning and for targeting layers by role,
head-layout facts, and config fields. A model of no known family gets the `GenericAdapter`:
unstructured and N:M pruning work on it; structured pruning needs a family.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn


class UnsupportedModelError(ValueError):
    """The model is not a decoder-only causal LM whose blocks Prune Studio can find."""


class InvalidModelConfigError(ValueError):
    """A model config whose shapes cannot work (e.g. heads not divisible by KV heads)."""


InputHook = Callable[[torch.Tensor], None]


@dataclass(frozen=True)
class PrunableLinear:
    """One prunable linear layer of a decoder block.

    `name` is the layer's path inside the whole model (e.g. ``model.layers.3.mlp.down_proj``;
    an expert slice of a stacked 3-D parameter is ``model.layers.0.mlp.experts.down_proj[5]``),
    `kind` its role in the block (q, k, v, o, qkv, gate, up, gate_up, down, fc1, fc2,
    expert_gate_up, expert_up, expert_down; the module's own name where no role is known).
    `module` owns the parameter `param`; `expert` indexes its first dimension for stacked experts.
    """

    name: str
    block: int
    kind: str
    module: nn.Module
    transposed: bool = False
    param: str = "weight"
    expert: int | None = None

    @property
    def parameter(self) -> nn.Parameter:
        """The whole parameter holding this layer (for a stacked expert: every expert's)."""
        return getattr(self.module, self.param)

    def logical(self, tensor: torch.Tensor) -> torch.Tensor:
        """A tensor shaped like `parameter` (its data, its gradient) as this layer's
        (out, in) view."""
        t = tensor if self.expert is None else tensor[self.expert]
        return t.t() if self.transposed else t

    @property
    def weight(self) -> torch.Tensor:
        """The weight as (out_features, in_features); a view, so in-place edits reach the model."""
        return self.logical(self.parameter.data)

    @property
    def bias(self) -> torch.Tensor | None:
        """The output bias (a view) or None."""
        if self.expert is None:
            b = getattr(self.module, "bias", None)
            return None if b is None else b.data
        if not getattr(self.module, "has_bias", False):
            return None
        return getattr(self.module, f"{self.param}_bias").data[self.expert]

    @property
    def in_features(self) -> int:
        return self.weight.shape[1]

    @property
    def out_features(self) -> int:
        return self.weight.shape[0]

    @property
    def is_expert(self) -> bool:
        return self.expert is not None

    def register_input_hook(self, fn: InputHook):
        """Call `fn(x)` with this layer's input rows (…, in) on every forward of the model;
        for an expert, only the tokens routed to it (none: `fn` is called with zero rows).
        Returns the handle to remove."""
        if self.expert is None:
            def hook(module, args, output):  # must return None: never replace the output
                fn(args[0].detach())

            return self.module.register_forward_hook(hook)
        expert, up_side = self.expert, self.param != "down_proj"

        def pre_hook(module, args, kwargs):
            hidden, index = _experts_call(args, kwargs)
            x = hidden[(index == expert).any(-1)].detach()
            with torch.no_grad():
                fn(x if up_side else expert_intermediate(module, expert, x))

        return self.module.register_forward_pre_hook(pre_hook, with_kwargs=True)


# ---------------------------------------------------------------- stacked experts (transformers 5)


def is_stacked_experts(module: nn.Module) -> bool:
    """transformers 5's experts layout: every expert in 3-D parameters (`gate_up_proj` or
    `up_proj`, and `down_proj`), called as experts(hidden (tokens, h), top_k_index,
    top_k_weights)."""
    down = getattr(module, "down_proj", None)
    return (isinstance(down, nn.Parameter) and down.dim() == 3
            and hasattr(module, "has_gate") and hasattr(module, "is_transposed"))


def _experts_call(args: tuple, kwargs: dict) -> tuple[torch.Tensor, torch.Tensor]:
    hidden = args[0] if args else kwargs["hidden_states"]
    index = args[1] if len(args) > 1 else kwargs["top_k_index"]
    hidden = hidden.reshape(-1, hidden.shape[-1])
    return hidden, index.reshape(hidden.shape[0], -1)


def _expert_linear(module: nn.Module, name: str, expert: int, x: torch.Tensor) -> torch.Tensor:
    w = getattr(module, name)[expert]
    y = x @ w if module.is_transposed else nn.functional.linear(x, w)
    if getattr(module, "has_bias", False):
        y = y + getattr(module, f"{name}_bias")[expert]
    return y


def expert_intermediate(module: nn.Module, expert: int, x: torch.Tensor) -> torch.Tensor:
    """What the expert's down projection receives for input rows `x`: the up (gate_up)
    projection, then the experts' own gate / activation (`_apply_gate` knows the layout)."""
    if module.has_gate:
        return module._apply_gate(_expert_linear(module, "gate_up_proj", expert, x))
    return module.act_fn(_expert_linear(module, "up_proj", expert, x))


def _expert_linears(prefix: str, block: int, rel: str, module: nn.Module) -> list[PrunableLinear]:
    up = "gate_up_proj" if module.has_gate else "up_proj"
    kinds = {up: "expert_gate_up" if module.has_gate else "expert_up",
             "down_proj": "expert_down"}
    return [PrunableLinear(f"{prefix}.{rel}.{param}[{e}]", block, kinds[param], module,
                           bool(module.is_transposed), param, e)
            for e in range(module.down_proj.shape[0]) for param in (up, "down_proj")]


# ---------------------------------------------------------------- generic discovery


def is_linear(module: nn.Module) -> bool:
    """nn.Linear or transformers' Conv1D (GPT-2: weight stored in × out)."""
    return isinstance(module, nn.Linear) or type(module).__name__ == "Conv1D"


def _is_router(rel: str, module: nn.Module, moe: bool) -> bool:
    """A mixture-of-experts router (or a shared expert's scalar gate): never pruned."""
    last = rel.rsplit(".", 1)[-1]
    return "router" in type(module).__name__.lower() or (
        moe and (last in ("gate", "router") or last.endswith("_gate")))


def _has_experts(block: nn.Module) -> bool:
    return any(is_stacked_experts(m) or n.rsplit(".", 1)[-1] == "experts"
               for n, m in block.named_modules())


def block_linears(block: nn.Module) -> list[tuple[str, nn.Module]]:
    """(relative name, module) of every prunable linear module and stacked-experts module in
    a block, in module-tree order; routers left out."""
    moe = _has_experts(block)
    out: list[tuple[str, nn.Module]] = []
    skip: tuple[str, ...] = ()
    for rel, module in block.named_modules():
        if not rel or (skip and rel.startswith(skip)):
            continue
        if is_stacked_experts(module):
            out.append((rel, module))
            skip = (*skip, rel + ".")
        elif is_linear(module) and not _is_router(rel, module, moe):
            out.append((rel, module))
    return out


def text_config(config):
    get = getattr(config, "get_text_config", None)
    return get() if callable(get) else config


def find_blocks_path(model: nn.Module) -> str | None:
    """The path of the model's decoder blocks: the ModuleList of `num_hidden_layers` blocks
    of one class that hold linear layers (None when there is not exactly one)."""
    n = getattr(text_config(model.config), "num_hidden_layers", None)
    found = []
    for name, module in model.named_modules():
        if not isinstance(module, nn.ModuleList) or not len(module):
            continue
        if n is not None and len(module) != n:
            continue
        if len({type(b) for b in module}) != 1 or not block_linears(module[0]):
            continue
        if any(name.startswith(f + ".") for f in found):
            continue
        found.append(name)
    return found[0] if len(found) == 1 else None


GENERIC_KINDS = {
    "q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o", "out_proj": "o",
    "gate_proj": "gate", "up_proj": "up", "down_proj": "down", "fc1": "fc1", "fc2": "fc2",
    "qkv_proj": "qkv", "gate_up_proj": "gate_up", "query_key_value": "qkv", "c_attn": "qkv",
    "dense_h_to_4h": "fc1", "dense_4h_to_h": "fc2", "c_fc": "fc1",
}


class ModelAdapter:
    """Generic discovery of blocks and linears; a family subclass sets `family`,
    `model_types`, `blocks_path` and the role of each linear (`linear_kinds`)."""

    family: str = ""
    model_types: tuple[str, ...] = ()
    blocks_path: str = ""
    # relative module name inside a block -> kind (its role), in the block's execution order
    linear_kinds: dict[str, str] = {}
    # "learned": one trained embedding per position (a longer input cannot run);
    # "rotary": RoPE (runs past the trained context, but the numbers mean something else);
    # "unknown": a generic model
    positions: str = "rotary"
    grouped_kv: bool = False  # num_key_value_heads may be fewer than num_attention_heads
    structured: bool = True  # structured pruning knows the family's head / channel layout

    def check_config(self, config) -> None:
        """Raise InvalidModelConfigError when the config's head structure cannot work."""
        config = text_config(config)
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
        n = getattr(text_config(config), "max_position_embeddings", None)
        return n if isinstance(n, int) and n > 0 else None

    def context_field(self) -> str:
        return "max_position_embeddings"

    def blocks(self, model: nn.Module) -> nn.ModuleList:
        return model.get_submodule(self.blocks_path)  # type: ignore[return-value]

    def kind_of(self, rel: str) -> str:
        """The role of a block's linear module from its relative name."""
        if rel in self.linear_kinds:
            return self.linear_kinds[rel]
        return GENERIC_KINDS.get(rel.rsplit(".", 1)[-1], rel)

    def prunable_linears(self, model: nn.Module, block_index: int) -> list[PrunableLinear]:
        block = self.blocks(model)[block_index]
        found = dict(block_linears(block))
        order = [rel for rel in self.linear_kinds if rel in found]
        order += [rel for rel in found if rel not in self.linear_kinds]
        prefix = f"{self.blocks_path}.{block_index}"
        out: list[PrunableLinear] = []
        for rel in order:
            module = found[rel]
            if is_stacked_experts(module):
                out += _expert_linears(prefix, block_index, rel, module)
            else:
                out.append(PrunableLinear(f"{prefix}.{rel}", block_index, self.kind_of(rel),
                                          module, type(module).__name__ == "Conv1D"))
        return out

    def all_prunable_linears(self, model: nn.Module) -> list[PrunableLinear]:
        return [
            lin
            for i in range(len(self.blocks(model)))
            for lin in self.prunable_linears(model, i)
        ]

    def num_blocks(self, model: nn.Module) -> int:
        return len(self.blocks(model))


class GenericAdapter(ModelAdapter):
    """Any decoder-only causal LM transformers loads: blocks and linears found by walking the
    module tree; roles from common module names. Unstructured and N:M pruning only."""

    family = "generic"
    structured = False
    positions = "unknown"  # learned or rotary: the module tree does not say

    def __init__(self, blocks_path: str = "") -> None:
        self.blocks_path = blocks_path

    def check_config(self, config) -> None:
        if isinstance(getattr(text_config(config), "num_attention_heads", None), int):
            super().check_config(config)

    @classmethod
    def for_model(cls, model: nn.Module) -> GenericAdapter:
        path = find_blocks_path(model)
        if path is None:
            config = getattr(model, "config", None)
            raise UnsupportedModelError(
                f"{type(model).__name__} (model_type "
                f"{getattr(config, 'model_type', None)!r}) has no single list of "
                f"num_hidden_layers decoder blocks holding linear layers; "
                + _supported_sentence())
        return cls(path)


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


class GemmaAdapter(LlamaAdapter):
    """Gemma 1 / 2 / 3 (text): LLaMA-shaped blocks with an explicit head_dim, extra norms
    around attention and MLP, soft-capping and scaled, tied embeddings — none of which changes
    which weights are pruned; Gemma 2 / 3 alternate sliding-window and global attention, so
    every block is called with its own masks (calibration captures them per block)."""

    family = "gemma"
    model_types = ("gemma", "gemma2", "gemma3_text")


class Olmo2Adapter(LlamaAdapter):
    """OLMo 2: LLaMA-shaped, with q / k RMS norms over the whole projection width (heads ×
    head_dim), so structured head pruning slices the norms too."""

    family = "olmo2"
    model_types = ("olmo2",)


class MixtralAdapter(LlamaAdapter):
    """Mixtral / Qwen2-MoE: LLaMA attention, a router (never pruned) and experts stored as
    3-D parameters (each expert's slice a prunable layer); Qwen2-MoE's shared expert is a
    plain gated MLP."""

    family = "moe"
    model_types = ("mixtral", "qwen2_moe")
    # attention units as LLaMA; MLP channels of stacked experts (every expert equally many);
    # a dense MLP or shared expert beside the experts (Qwen2-MoE) refuses MLP pruning
    structured = True
    linear_kinds = {k: v for k, v in LlamaAdapter.linear_kinds.items()
                    if k.startswith("self_attn.")}


class Phi3Adapter(ModelAdapter):
    """Phi-3: fused q|k|v rows in `qkv_proj`, fused gate|up rows in `gate_up_proj`."""

    family = "phi3"
    model_types = ("phi3",)
    grouped_kv = True
    blocks_path = "model.layers"
    linear_kinds = {
        "self_attn.qkv_proj": "qkv",
        "self_attn.o_proj": "o",
        "mlp.gate_up_proj": "gate_up",
        "mlp.down_proj": "down",
    }


class PhiAdapter(ModelAdapter):
    """Phi-1 / Phi-2: parallel attention and MLP with biases; attention output `dense`."""

    family = "phi"
    model_types = ("phi",)
    blocks_path = "model.layers"
    linear_kinds = {
        "self_attn.q_proj": "q",
        "self_attn.k_proj": "k",
        "self_attn.v_proj": "v",
        "self_attn.dense": "o",
        "mlp.fc1": "fc1",
        "mlp.fc2": "fc2",
    }


class FalconAdapter(ModelAdapter):
    """Falcon: fused `query_key_value` (multi-query: all query heads, then one k and one v
    head; new decoder architecture: per KV group, its query heads then k and v)."""

    family = "falcon"
    model_types = ("falcon",)
    blocks_path = "transformer.h"
    linear_kinds = {
        "self_attention.query_key_value": "qkv",
        "self_attention.dense": "o",
        "mlp.dense_h_to_4h": "fc1",
        "mlp.dense_4h_to_h": "fc2",
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
    positions = "learned"
    linear_kinds = {
        "attn.c_attn": "qkv",
        "attn.c_proj": "o",
        "mlp.c_fc": "fc1",
        "mlp.c_proj": "fc2",
    }

    def context_field(self) -> str:
        return "n_positions"


ADAPTERS: tuple[type[ModelAdapter], ...] = (
    LlamaAdapter, GemmaAdapter, Olmo2Adapter, MixtralAdapter, Phi3Adapter, PhiAdapter,
    FalconAdapter, OPTAdapter, GPTNeoXAdapter, GPT2Adapter)


def supported_model_types() -> list[str]:
    return sorted(t for a in ADAPTERS for t in a.model_types)


def supported_description() -> str:
    """'llama family (model types llama, mistral, ...); opt family (opt); ...'"""
    return "; ".join(f"{a.family} family (model types {', '.join(a.model_types)})"
                     for a in ADAPTERS)


def _supported_sentence() -> str:
    return ("Prune Studio prunes decoder-only causal LMs: any model_type transformers' "
            "AutoModelForCausalLM loads (generic discovery: unstructured and N:M), with "
            f"family knowledge for {supported_description()}")


def is_causal_lm_type(model_type: str | None) -> bool:
    """transformers maps this model_type to a decoder-only causal-LM class."""
    if not model_type:
        return False
    try:
        from transformers import AutoConfig
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    except ImportError:  # pragma: no cover - transformers is a dependency
        return False
    if model_type not in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES or _is_encoder_type(model_type):
        return False
    try:
        config = AutoConfig.for_model(model_type)
    except (ValueError, KeyError, TypeError):
        return False
    return not getattr(config, "is_encoder_decoder", False)


def find_adapter(model_type: str | None) -> ModelAdapter | None:
    """The family adapter of a model_type; a GenericAdapter (blocks found when the model is
    loaded) for any other causal-LM type transformers knows; None otherwise."""
    for cls in ADAPTERS:
        if model_type in cls.model_types:
            return cls()
    return GenericAdapter() if is_causal_lm_type(model_type) else None


def unsupported_error(model_type: str | None, architectures=None,
                      where: str = "") -> UnsupportedModelError:
    """The error for a model type without an adapter, naming its architecture class(es)."""
    archs = ", ".join(architectures or [])
    what = (f"{archs} (model_type {model_type!r})" if archs else f"model_type {model_type!r}")
    return UnsupportedModelError(
        f"unsupported architecture {what}{f' in {where}' if where else ''}: "
        + _supported_sentence())


def _is_encoder_type(model_type: str | None) -> bool:
    """BERT, RoBERTa, BART, …: encoders (or encoder-decoders) that also have a causal-LM head
    class; their blocks attend both ways, so they are not decoder-only LMs."""
    from transformers.models.auto.modeling_auto import MODEL_FOR_MASKED_LM_MAPPING_NAMES

    return model_type in MODEL_FOR_MASKED_LM_MAPPING_NAMES


def _is_causal_lm_instance(model: nn.Module) -> bool:
    try:
        from transformers.models.auto.modeling_auto import MODEL_FOR_CAUSAL_LM_MAPPING_NAMES
    except ImportError:  # pragma: no cover
        return False
    if _is_encoder_type(getattr(getattr(model, "config", None), "model_type", None)):
        return False
    names = {n for v in MODEL_FOR_CAUSAL_LM_MAPPING_NAMES.values()
             for n in ((v,) if isinstance(v, str) else v)}
    config = getattr(model, "config", None)
    return (any(c.__name__ in names for c in type(model).__mro__)
            and not getattr(config, "is_encoder_decoder", False))


def adapter_for(model_or_type: nn.Module | str) -> ModelAdapter:
    """The adapter for a model (or a `config.model_type` string); a clear error otherwise.
    A loaded model of no known family gets a GenericAdapter bound to its blocks."""
    if isinstance(model_or_type, str):
        adapter = find_adapter(model_or_type)
        if adapter is None:
            raise unsupported_error(model_or_type)
        return adapter
    config = getattr(model_or_type, "config", None)
    model_type = getattr(config, "model_type", None)
    for cls in ADAPTERS:
        if model_type in cls.model_types:
            return cls()
    if not _is_causal_lm_instance(model_or_type):
        raise unsupported_error(model_type, [type(model_or_type).__name__])
    return GenericAdapter.for_model(model_or_type)


def layout_summary(adapter: ModelAdapter, model: nn.Module) -> str | None:
    """What a study should record about how the model's layers were found: generic discovery
    (which layers it prunes) and mixtures of experts (how experts and routers are treated);
    None for a family model without experts."""
    lins = adapter.prunable_linears(model, 0)
    parts = []
    if isinstance(adapter, GenericAdapter):
        names = [lin.name.removeprefix(f"{adapter.blocks_path}.0.") for lin in lins]
        model_type = getattr(getattr(model, "config", None), "model_type", None)
        parts.append(
            f"generic discovery (no family adapter for model_type {model_type!r}): "
            f"{adapter.num_blocks(model)} decoder blocks at {adapter.blocks_path}, "
            f"{len(lins)} prunable linear layers in each: {', '.join(names)}; structured "
            "pruning needs a family adapter")
    experts = [lin for lin in lins if lin.is_expert]
    if experts:
        n = len({lin.expert for lin in experts})
        parts.append(
            f"mixture of experts: {n} experts per block stored as 3-D parameters, each "
            "expert's layers pruned on their own with calibration statistics from the tokens "
            "routed to them; routers are never pruned")
    return "; ".join(parts) or None
