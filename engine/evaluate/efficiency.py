"""Size and speed of a (pruned) model: parameters, MACs per token, peak memory, latency.

- parameters: unique tensors (a tied embedding counted once), total and per decoder block;
- MACs per token at sequence length L: every linear layer (in × out; the blocks, lm_head and any
  projection outside them) plus attention's two matmuls (QKᵀ and AV) at the causal average
  context of (L + 1) / 2 positions — heads × head_dim × (L + 1) per block. Norms, activations,
  softmax and rotary embeddings are not counted;
- latency: median wall time of `repeats` forwards of a (batch, L) batch of random token ids
  after `warmup` forwards, no grad, no KV cache; tokens/s = batch · L / median;
- peak memory: CUDA — `max_memory_allocated` during the timed forwards (weights included);
  CPU — parameter and buffer bytes plus the peak of the CPU allocator's live bytes during one
  forward, from torch.profiler's memory events (independent of what the process held before).
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Any

import torch
from prunestudio.engine.models.adapters import ModelAdapter
from torch import nn


def _unique(tensors) -> list[torch.Tensor]:
    seen: set[int] = set()
    out = []
    for t in tensors:
        if id(t) not in seen:
            seen.add(id(t))
            out.append(t)
    return out


@dataclass(frozen=True)
class ParamCounts:
    total: int
    blocks: list[int]
    outside_blocks: int

    @property
    def in_blocks(self) -> int:
        return sum(self.blocks)


def parameter_counts(model: nn.Module, adapter: ModelAdapter) -> ParamCounts:
    total = sum(p.numel() for p in _unique(model.parameters()))
    blocks = [sum(p.numel() for p in _unique(b.parameters())) for b in adapter.blocks(model)]
    return ParamCounts(total, blocks, total - sum(blocks))


def _linear_macs(module: nn.Module) -> int:
    if isinstance(module, nn.Linear):
        return module.in_features * module.out_features
    if type(module).__name__ == "Conv1D":  # transformers' GPT-2 layer, weight (in, out)
        return module.weight.shape[0] * module.weight.shape[1]
    return 0


def _expert_macs(model: nn.Module) -> int:
    """Stacked experts (3-D parameters): per token only the experts the router picks run —
    `num_experts_per_tok` of them — plus the router itself."""
    from prunestudio.engine.models.adapters import is_stacked_experts, text_config

    top_k = int(getattr(text_config(model.config), "num_experts_per_tok", 1) or 1)
    total = 0
    for module in model.modules():
        if is_stacked_experts(module):
            up = module.gate_up_proj if module.has_gate else module.up_proj
            n = module.down_proj.shape[0]
            total += top_k * (up.numel() + module.down_proj.numel()) // n
        elif "router" in type(module).__name__.lower() and hasattr(module, "weight"):
            total += module.weight.numel()
    return total


def macs_per_token(model: nn.Module, adapter: ModelAdapter, seqlen: int) -> dict[str, int]:
    """MACs per token (averaged over the L positions of a causal forward). Attention's
    QKᵀ / AV count reads the width of the attention output projection (kind `o`); a model of
    no known family has none named so, and its attention matmuls are left out (`attention`
    None in the protocol)."""
    linear = sum(_linear_macs(m) for m in model.modules()) + _expert_macs(model)
    attention: int | None = 0
    for i in range(adapter.num_blocks(model)):
        o = next((lin for lin in adapter.prunable_linears(model, i) if lin.kind == "o"), None)
        if o is None:
            attention = None
            break
        attention += o.in_features * (seqlen + 1)  # heads·head_dim · 2 matmuls · (L+1)/2
    return {"total": linear + (attention or 0), "linear": linear, "attention": attention}


@dataclass(frozen=True)
class Timing:
    latency_s: float  # median
    latency_min_s: float
    latency_mean_s: float
    tokens_per_s: float
    peak_memory_bytes: int
    weight_bytes: int
    activation_peak_bytes: int | None
    repeats: int
    warmup: int


def _weight_bytes(model: nn.Module) -> int:
    tensors = _unique([*model.parameters(), *model.buffers()])
    return sum(t.numel() * t.element_size() for t in tensors)


@contextlib.contextmanager
def _quiet_native_stderr():
    """Kineto prints 'profiler_start/stop' lines straight to file descriptor 2."""
    try:
        saved = os.dup(2)
    except OSError:
        yield
        return
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _cpu_activation_peak(model: nn.Module, ids: torch.Tensor) -> int:
    from torch.profiler import ProfilerActivity, profile

    with _quiet_native_stderr():
        prof = profile(activities=[ProfilerActivity.CPU], profile_memory=True)
        prof.start()
    try:
        with torch.no_grad():
            model(ids, use_cache=False)
    finally:
        with _quiet_native_stderr():
            prof.stop()
    events = [e for e in prof.profiler.kineto_results.events() if e.name() == "[memory]"]
    live = peak = 0
    for e in sorted(events, key=lambda e: e.start_ns()):
        live += e.nbytes()
        peak = max(peak, live)
    return peak


def measure_latency(model: nn.Module, *, batch: int = 1, seqlen: int = 128, repeats: int = 5,
                    warmup: int = 1, vocab: int | None = None, seed: int = 0) -> Timing:
    """Forward latency and peak memory on the model's own device."""
    if batch < 1 or seqlen < 1 or repeats < 1:
        raise ValueError("batch, seqlen and repeats must be ≥ 1")
    device = next(model.parameters()).device
    vocab = vocab or int(model.config.vocab_size)
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, vocab, (batch, seqlen), generator=gen).to(device)
    cuda = device.type == "cuda"
    was_training = model.training
    model.eval()
    try:
        with torch.no_grad():
            for _ in range(warmup):
                model(ids, use_cache=False)
            if cuda:
                torch.cuda.synchronize(device)
                torch.cuda.reset_peak_memory_stats(device)
            times = []
            for _ in range(repeats):
                t0 = time.perf_counter()
                model(ids, use_cache=False)
                if cuda:
                    torch.cuda.synchronize(device)
                times.append(time.perf_counter() - t0)
        weights = _weight_bytes(model)
        if cuda:
            peak, act = int(torch.cuda.max_memory_allocated(device)), None
        else:
            act = _cpu_activation_peak(model, ids)
            peak = weights + act
    finally:
        model.train(was_training)
    med = statistics.median(times)
    return Timing(med, min(times), statistics.fmean(times), batch * seqlen / med, peak, weights,
                  act, repeats, warmup)


def device_label(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({platform.processor() or platform.machine()}, {torch.get_num_threads()} threads)"


def efficiency_metrics(model: nn.Module, adapter: ModelAdapter, *, seqlen: int = 128,
                       batch: int = 1, repeats: int = 5, warmup: int = 1,
                       timing: bool = True) -> list[dict[str, Any]]:
    """Store metric records: params, MACs per token, and (with `timing`) latency, tokens/s and
    peak memory, each carrying its protocol."""
    counts = parameter_counts(model, adapter)
    macs = macs_per_token(model, adapter, seqlen)
    p0 = next(model.parameters())
    base = {"role": "efficiency"}
    out: list[dict[str, Any]] = [
        {"name": "params", "value": counts.total, **base, "protocol": {
            "per_block": counts.blocks, "in_blocks": counts.in_blocks,
            "outside_blocks": counts.outside_blocks,
            "scope": "unique parameters (tied embeddings once)"}},
        {"name": "macs_per_token", "value": macs["total"], "seqlen": seqlen, **base,
         "protocol": {**macs, "scope": "linear layers + attention QKᵀ/AV at causal average "
                                        "context (L+1)/2; norms, activations, softmax excluded"}},
    ]
    if timing:
        t = measure_latency(model, batch=batch, seqlen=seqlen, repeats=repeats, warmup=warmup)
        proto = {"device": device_label(p0.device), "dtype": str(p0.dtype).removeprefix("torch."),
                 "batch": batch, "repeats": t.repeats, "warmup": t.warmup,
                 "torch": torch.__version__}
        out += [
            {"name": "latency_ms", "value": t.latency_s * 1e3, "seqlen": seqlen,
             "n_samples": batch, **base, "protocol": {
                 **proto, "statistic": "median", "min_ms": t.latency_min_s * 1e3,
                 "mean_ms": t.latency_mean_s * 1e3}},
            {"name": "tokens_per_s", "value": t.tokens_per_s, "seqlen": seqlen,
             "n_samples": batch, **base, "protocol": {**proto, "statistic": "batch·L / median"}},
            {"name": "peak_memory_bytes", "value": t.peak_memory_bytes, "seqlen": seqlen,
             "n_samples": batch, **base, "protocol": {
                 **proto, "weight_bytes": t.weight_bytes,
                 "activation_peak_bytes": t.activation_peak_bytes,
                 "method": "cuda max_memory_allocated" if p0.device.type == "cuda" else
                 "weights + peak live CPU allocations in one forward (torch.profiler)"}},
        ]
    return out
