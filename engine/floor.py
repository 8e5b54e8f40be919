"""The floor of one search candidate on this machine: its unavoidable arithmetic at the measured
matmul peak plus its unavoidable memory traffic at the measured bandwidth.

    floor = evaluation FLOPs / matmul peak + candidate bytes / memory bandwidth

* matmul peak — the best of a few large square matmuls in the model's dtype with the thread
  count in use (`torch.get_num_threads()` on CPU);
* memory bandwidth — the best of a few copies of a large tensor, read + write bytes counted;
* evaluation FLOPs — the fitness forward over `n_windows × seqlen` tokens: 2 × (prunable block
  linear weights + output-embedding weights) per token (lm_head computes every position's
  logits) + causal attention 2 × 2 × (T² / 2) × (heads × head_dim) per block and window;
* candidate bytes — per prunable weight: W read to score (4 B), the score written (4 B) and read
  to select (4 B), W read and written to apply the mask (8 B), read to hash the zero pattern
  (4 B) and written back from the snapshot to restore (8 B: read + write): 32 B, plus 4 B for
  each (out, in) statistic the expression reads (G). Selection itself is linear (a k-th value
  per row), so the score is read once.

The ratio seconds / floor says how far a candidate is from what this machine could do.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass
from typing import Any

import torch

BYTES_PER_WEIGHT = 32  # W read, score write + read, apply read + write, hash read, restore 8
BYTES_PER_EXTRA_LEAF = 4  # an (out, in) statistic read by the score (G)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def matmul_peak(device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32,
                size: int = 2048, repeats: int = 5) -> float:
    """Best achieved GFLOP/s of a `size`³ matmul (2·size³ FLOPs) over `repeats` runs."""
    device = torch.device(device)
    a = torch.randn(size, size, device=device, dtype=dtype)
    b = torch.randn(size, size, device=device, dtype=dtype)
    out = torch.empty(size, size, device=device, dtype=dtype)
    torch.matmul(a, b, out=out)  # warm up
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.matmul(a, b, out=out)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * size**3 / best / 1e9


def memory_bandwidth(device: torch.device | str = "cpu", mbytes: int = 256,
                     repeats: int = 5) -> float:
    """Best achieved GB/s of copying `mbytes` MB (read + write bytes counted)."""
    device = torch.device(device)
    n = mbytes * 2**20 // 4
    src = torch.ones(n, device=device)
    dst = torch.empty_like(src)
    dst.copy_(src)
    _sync(device)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        dst.copy_(src)
        _sync(device)
        best = min(best, time.perf_counter() - t0)
    return 2 * n * 4 / best / 1e9


@dataclass(frozen=True)
class Machine:
    device: str
    dtype: str
    threads: int
    matmul_gflops: float  # measured peak
    bandwidth_gbs: float  # measured copy bandwidth (read + write)


def measure_machine(device: torch.device | str, dtype: torch.dtype, *,
                    size: int = 2048, mbytes: int = 256, repeats: int = 5) -> Machine:
    device = torch.device(device)
    return Machine(str(device), str(dtype).removeprefix("torch."), torch.get_num_threads(),
                   matmul_peak(device, dtype, size, repeats),
                   memory_bandwidth(device, mbytes, repeats))


@dataclass(frozen=True)
class Workload:
    """What one search candidate must compute and move."""

    tokens: int
    linear_flops: float  # block linears + lm_head, 2 × weights × tokens
    attention_flops: float
    prunable_weights: int
    extra_leaves: int  # (out, in) statistics read by the score (G)

    @property
    def eval_flops(self) -> float:
        return self.linear_flops + self.attention_flops

    @property
    def bytes(self) -> float:
        return self.prunable_weights * (BYTES_PER_WEIGHT + BYTES_PER_EXTRA_LEAF * self.extra_leaves)


def workload(lm, n_windows: int, seqlen: int, extra_leaves: int = 0) -> Workload:
    """The fitness forward of `n_windows × seqlen` tokens and the pruning traffic of `lm`."""
    linears = lm.adapter.all_prunable_linears(lm.model)
    prunable = sum(lin.weight.numel() for lin in linears)
    head = lm.model.get_output_embeddings()
    head_weights = head.weight.numel() if head is not None else 0
    tokens = n_windows * seqlen
    cfg = lm.model.config
    cfg = getattr(cfg, "text_config", None) or cfg
    heads = getattr(cfg, "num_attention_heads", 0) or 0
    head_dim = getattr(cfg, "head_dim", None) or (cfg.hidden_size // heads if heads else 0)
    blocks = lm.adapter.num_blocks(lm.model)
    # QKᵀ and AV over the causal half of each window: 2 matmuls × 2 FLOPs × T²/2 × width
    attention = 2 * 2 * (seqlen * seqlen / 2) * heads * head_dim * blocks * n_windows
    return Workload(tokens, 2.0 * (prunable + head_weights) * tokens, attention, prunable,
                    extra_leaves)


@dataclass(frozen=True)
class Floor:
    compute_s: float
    memory_s: float

    @property
    def seconds(self) -> float:
        return self.compute_s + self.memory_s

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "seconds": self.seconds}


def floor(work: Workload, machine: Machine) -> Floor:
    return Floor(work.eval_flops / (machine.matmul_gflops * 1e9),
                 work.bytes / (machine.bandwidth_gbs * 1e9))
