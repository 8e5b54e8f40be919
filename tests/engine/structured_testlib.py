"""Hand-written structure of the tiny test models, independent of prunestudio's groups module:
which weight slices make up each attention unit and MLP channel, read straight from the
modules (GPT-2's Conv1D transposed by hand, a mixture of experts' 3-D weights sliced per
expert), for every family structured pruning supports."""

from __future__ import annotations

from types import SimpleNamespace

import torch
from engine_testlib import logical_weight
from torch import nn

# LLaMA-shaped blocks: q / k / v / o and gate / up / down linears
LLAMA_LIKE = ("llama", "mistral", "qwen2", "qwen3", "gemma2", "gemma3_text", "olmo2")


def block(model: nn.Module, arch: str, b: int) -> nn.Module:
    if arch == "opt":
        return model.model.decoder.layers[b]
    if arch == "gpt_neox":
        return model.gpt_neox.layers[b]
    if arch in ("gpt2", "falcon"):
        return model.transformer.h[b]
    return model.model.layers[b]


def dims(model: nn.Module, arch: str) -> tuple[int, int, int]:
    """(query heads, KV heads, head size) of the unpruned model, from its config."""
    c = model.config
    if arch == "gpt2":
        return c.n_head, c.n_head, c.n_embd // c.n_head
    heads = c.num_attention_heads
    if arch == "falcon":
        kv = c.num_kv_heads if c.new_decoder_architecture or not c.multi_query else 1
        return heads, kv, c.hidden_size // heads
    kv = getattr(c, "num_key_value_heads", None) or heads
    return heads, kv, getattr(c, "head_dim", None) or c.hidden_size // heads


def modules(model: nn.Module, arch: str, b: int) -> dict[str, nn.Module]:
    blk = block(model, arch, b)
    if arch in LLAMA_LIKE or arch == "mixtral":
        a = blk.self_attn
        out = {"q": a.q_proj, "k": a.k_proj, "v": a.v_proj, "o": a.o_proj}
        if arch == "mixtral":  # stacked experts: expert e's (out, in) slice of each 3-D weight
            ex = blk.mlp.experts
            for e in range(ex.down_proj.shape[0]):
                out[f"gate_up{e}"] = SimpleNamespace(weight=ex.gate_up_proj[e], bias=None)
                out[f"down{e}"] = SimpleNamespace(weight=ex.down_proj[e], bias=None)
            return out
        m = blk.mlp
        return {**out, "gate": m.gate_proj, "up": m.up_proj, "down": m.down_proj}
    if arch == "phi":
        a = blk.self_attn
        return {"q": a.q_proj, "k": a.k_proj, "v": a.v_proj, "o": a.dense, "fc1": blk.mlp.fc1,
                "fc2": blk.mlp.fc2}
    if arch == "phi3":
        return {"qkv": blk.self_attn.qkv_proj, "o": blk.self_attn.o_proj,
                "gate_up": blk.mlp.gate_up_proj, "down": blk.mlp.down_proj}
    if arch == "falcon":
        return {"qkv": blk.self_attention.query_key_value, "o": blk.self_attention.dense,
                "fc1": blk.mlp.dense_h_to_4h, "fc2": blk.mlp.dense_4h_to_h}
    if arch == "opt":
        a = blk.self_attn
        return {"q": a.q_proj, "k": a.k_proj, "v": a.v_proj, "o": a.out_proj, "fc1": blk.fc1,
                "fc2": blk.fc2}
    if arch == "gpt_neox":
        return {"qkv": blk.attention.query_key_value, "o": blk.attention.dense,
                "fc1": blk.mlp.dense_h_to_4h, "fc2": blk.mlp.dense_4h_to_h}
    return {"qkv": blk.attn.c_attn, "o": blk.attn.c_proj, "fc1": blk.mlp.c_fc,
            "fc2": blk.mlp.c_proj}


def _rows(start: int, n: int) -> slice:
    return slice(start, start + n)


def unit_slices(model: nn.Module, arch: str, b: int, kind: str, unit: int,
                attention_unit: str = "kv_group") -> list[tuple[str, str, object, object]]:
    """[(module key, role, row selector, column selector)] in execution order, for one unit
    of the *unpruned* tiny model. Attention units: KV group `unit` (a head without GQA) or
    query head `unit`; MLP: channel `unit` (a mixture of experts numbers expert e's channel c
    as e · width + c)."""
    full = slice(None)
    heads, kv, hd = dims(model, arch)
    rep = heads // kv
    if kind == "mlp":
        if arch == "mixtral":
            width = block(model, arch, b).mlp.experts.down_proj.shape[2]
            e, c = divmod(unit, width)
            return [(f"gate_up{e}", "gate", _rows(c, 1), full),
                    (f"gate_up{e}", "up", _rows(width + c, 1), full),
                    (f"down{e}", "down", full, _rows(c, 1))]
        rows = _rows(unit, 1)
        if arch in LLAMA_LIKE:
            return [("gate", "gate", rows, full), ("up", "up", rows, full),
                    ("down", "down", full, rows)]
        if arch == "phi3":  # gate_up rows [gate | up]
            width = modules(model, arch, b)["down"].weight.shape[1]
            return [("gate_up", "gate", rows, full), ("gate_up", "up", _rows(width + unit, 1), full),
                    ("down", "down", full, rows)]
        return [("fc1", "fc1", rows, full), ("fc2", "fc2", full, rows)]
    falcon_grouped = arch == "falcon" and (model.config.new_decoder_architecture
                                           or not model.config.multi_query)
    if attention_unit == "query_head" and rep > 1:
        q = _rows(unit * hd, hd)
        if falcon_grouped:  # query head h = g · rep + j sits inside KV group g's rows
            g, j = divmod(unit, rep)
            return [("qkv", "q", _rows((g * (rep + 2) + j) * hd, hd), full), ("o", "o", full, q)]
        key = "qkv" if arch in ("phi3", "falcon") else "q"
        return [(key, "q", q, full), ("o", "o", full, q)]
    if arch in LLAMA_LIKE or arch in ("mixtral", "phi", "opt"):
        q = _rows(unit * rep * hd, rep * hd)
        k = _rows(unit * hd, hd)
        return [("q", "q", q, full), ("k", "k", k, full), ("v", "v", k, full),
                ("o", "o", full, q)]
    if arch in ("phi3", "gpt2") or arch == "falcon" and not falcon_grouped:
        # rows [q all heads | k all KV heads | v all KV heads]
        q = _rows(unit * rep * hd, rep * hd)
        return [("qkv", "q", q, full), ("qkv", "k", _rows(heads * hd + unit * hd, hd), full),
                ("qkv", "v", _rows((heads + kv) * hd + unit * hd, hd), full),
                ("o", "o", full, q)]
    if falcon_grouped or arch == "gpt_neox":
        # rows per KV group: its rep query heads, then k, then v
        base = unit * (rep + 2) * hd
        return [("qkv", "q", _rows(base, rep * hd), full),
                ("qkv", "k", _rows(base + rep * hd, hd), full),
                ("qkv", "v", _rows(base + (rep + 1) * hd, hd), full),
                ("o", "o", full, _rows(unit * rep * hd, rep * hd))]
    raise ValueError(f"{arch}: no hand-written {attention_unit} slices")


def slice_weight(module: nn.Module, rows, cols) -> torch.Tensor:
    return logical_weight(module)[rows, cols]


def unit_param_count(model: nn.Module, arch: str, b: int, kind: str, unit: int,
                     attention_unit: str = "kv_group") -> int:
    """Weights of every slice plus the output biases of row slices (and OLMo 2's q / k norm
    entries, one per q / k row)."""
    mods = modules(model, arch, b)
    total = 0
    for key, role, rows, cols in unit_slices(model, arch, b, kind, unit, attention_unit):
        w = slice_weight(mods[key], rows, cols)
        total += w.numel()
        bias = getattr(mods[key], "bias", None)
        if cols == slice(None) and bias is not None:
            total += w.shape[0]
        if arch == "olmo2" and role in ("q", "k"):
            total += w.shape[0]
    return total


def per_sample_gradients(model: nn.Module, ids: torch.Tensor,
                         names: list[str]) -> list[dict[str, torch.Tensor]]:
    """∂L_s/∂W (logical orientation, float64) for each sample s, by torch.autograd.grad."""
    mods = dict(model.named_modules())
    params = [mods[n].weight for n in names]
    model.eval()
    out = []
    for s in range(ids.shape[0]):
        x = ids[s : s + 1]
        for p in model.parameters():
            p.requires_grad_(False)
        for p in params:
            p.requires_grad_(True)
        loss = model(x, labels=x, use_cache=False).loss
        grads = torch.autograd.grad(loss, params)
        for p in params:
            p.requires_grad_(False)
        sample = {}
        for n, g in zip(names, grads, strict=True):
            g = g.t() if type(mods[n]).__name__ == "Conv1D" else g
            sample[n] = g.detach().double()
        out.append(sample)
    return out
