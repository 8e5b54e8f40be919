"""Hand-written structure of the tiny test models, independent of prunestudio's groups module:
which weight slices make up each attention unit and MLP channel, read straight from the
modules (GPT-2's Conv1D transposed by hand)."""

from __future__ import annotations

import torch
from engine_testlib import logical_weight
from torch import nn


def block(model: nn.Module, arch: str, b: int) -> nn.Module:
    return {"llama": lambda: model.model.layers, "opt": lambda: model.model.decoder.layers,
            "gpt_neox": lambda: model.gpt_neox.layers, "gpt2": lambda: model.transformer.h}[arch]()[b]


def modules(model: nn.Module, arch: str, b: int) -> dict[str, nn.Module]:
    blk = block(model, arch, b)
    if arch == "llama":
        a, m = blk.self_attn, blk.mlp
        return {"q": a.q_proj, "k": a.k_proj, "v": a.v_proj, "o": a.o_proj, "gate": m.gate_proj,
                "up": m.up_proj, "down": m.down_proj}
    if arch == "opt":
        a = blk.self_attn
        return {"q": a.q_proj, "k": a.k_proj, "v": a.v_proj, "o": a.out_proj, "fc1": blk.fc1,
                "fc2": blk.fc2}
    if arch == "gpt_neox":
        return {"qkv": blk.attention.query_key_value, "o": blk.attention.dense,
                "fc1": blk.mlp.dense_h_to_4h, "fc2": blk.mlp.dense_4h_to_h}
    return {"qkv": blk.attn.c_attn, "o": blk.attn.c_proj, "fc1": blk.mlp.c_fc,
            "fc2": blk.mlp.c_proj}


def unit_slices(model: nn.Module, arch: str, b: int, kind: str, unit: int,
                attention_unit: str = "kv_group", heads: int = 4, kv: int = 2,
                hd: int = 16) -> list[tuple[str, str, object, object]]:
    """[(module key, role, row selector, column selector)] in execution order, for one unit
    of the *unpruned* tiny model (hidden 64, 4 heads of 16; LLaMA: 2 KV heads)."""
    full = slice(None)
    if kind == "mlp":
        rows = slice(unit, unit + 1)
        if arch == "llama":
            return [("gate", "gate", rows, full), ("up", "up", rows, full),
                    ("down", "down", full, rows)]
        return [("fc1", "fc1", rows, full), ("fc2", "fc2", full, rows)]
    if arch == "llama":
        rep = heads // kv
        if attention_unit == "kv_group":
            q = slice(unit * rep * hd, (unit + 1) * rep * hd)
            k = slice(unit * hd, (unit + 1) * hd)
            return [("q", "q", q, full), ("k", "k", k, full), ("v", "v", k, full),
                    ("o", "o", full, q)]
        q = slice(unit * hd, (unit + 1) * hd)
        return [("q", "q", q, full), ("o", "o", full, q)]
    h = slice(unit * hd, (unit + 1) * hd)
    if arch == "opt":
        return [("q", "q", h, full), ("k", "k", h, full), ("v", "v", h, full), ("o", "o", full, h)]
    if arch == "gpt_neox":  # rows per head: [q | k | v] of 16 each
        base = unit * 3 * hd
        return [("qkv", r, slice(base + j * hd, base + (j + 1) * hd), full)
                for j, r in enumerate("qkv")] + [("o", "o", full, h)]
    hidden = heads * hd  # gpt2: [q all | k all | v all]
    return [("qkv", r, slice(j * hidden + unit * hd, j * hidden + (unit + 1) * hd), full)
            for j, r in enumerate("qkv")] + [("o", "o", full, h)]


def slice_weight(module: nn.Module, rows, cols) -> torch.Tensor:
    return logical_weight(module)[rows, cols]


def unit_param_count(model: nn.Module, arch: str, b: int, kind: str, unit: int,
                     attention_unit: str = "kv_group") -> int:
    """Weights of every slice plus the output biases of row slices."""
    mods = modules(model, arch, b)
    total = 0
    for key, _, rows, cols in unit_slices(model, arch, b, kind, unit, attention_unit):
        w = slice_weight(mods[key], rows, cols)
        total += w.numel()
        bias = getattr(mods[key], "bias", None)
        if cols == slice(None) and bias is not None:
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
