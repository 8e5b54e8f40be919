"""Reconstruction-error minimisation after pruning (Shin et al., 2024), every block.

The sequential walk of Wanda / SparseGPT, with a fit after each block's mask:

    for block i:                      (x_s: the pruned model's input to block i,
        y_d = dense block(x_d)         x_d: the dense model's input to block i)
        target = {lr: dense linear on its input, br: dense block(x_s), gp: y_d}
        choose the mask (the method, on statistics of x_s)
        fit the remaining weights with Adam (mask fixed) so the block's output meets target
        x_s, x_d = block(x_s), y_d

Unlike the paper's public LLaMA path (which reconstructs block 0 only), every block is fitted.
Only the prunable linear weights train (the reference also trains norms and biases, which the
weight snapshot does not restore); pruned weights stay exactly zero: their gradients are masked
(Adam's moments stay zero) and the mask is re-applied after every step. Training is fp32
whatever the model dtype (the block is cast up for its fit, then back).

Errors are normalised, sum((ŷ − y)²) / sum(y²) over the windows fitted on: against the mode's
own target (`recon_error_*`) and against the dense model's hidden states (`calib_error*`, the
same yardstick for every mode and epoch count: what the overfitting report compares with
held-out perplexity).

Memory: the hidden-state streams (pruned input, dense input, target, outputs) live on the CPU
when the model is on a GPU and they would take more than a third of its free memory; each
minibatch is moved to the GPU for its step. `memory_estimate` is the arithmetic (see
docs/reconstruction.md).
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from prunestudio.engine.calibration import (
    BlockInputs,
    LayerStats,
    block_output,
    collect_block_stats,
)
from prunestudio.engine.models.adapters import PrunableLinear
from prunestudio.engine.models.loading import LoadedModel
from torch import nn

from prunestudio.schema.reconstruction import (
    CALIBRATION_ERROR,
    RECONSTRUCTION_ROLE,
    ReconstructionSettings,
)

log = logging.getLogger(__name__)

#: blocks' statistics for the mask: (block index, its linears, the pruned model's inputs)
StatsFn = Callable[[int, list[PrunableLinear], BlockInputs], dict[str, LayerStats]]
PruneBlockFn = Callable[[int, list[PrunableLinear], dict[str, LayerStats]], None]
STREAM_SHARE = 1 / 3  # streams stay on the GPU only below this share of its free memory


@dataclass
class BlockFit:
    """What one block's reconstruction did (errors normalised, on the windows fitted on)."""

    index: int
    error_before: float  # against the mode's target, right after the mask
    error_after: float
    calib_before: float  # against the dense model's hidden states
    calib_after: float
    curve: list[float] = field(default_factory=list)  # per epoch: the training error
    steps: int = 0


@dataclass
class ReconstructionResult:
    settings: ReconstructionSettings
    n_windows: int
    seqlen: int
    blocks: list[BlockFit]
    seconds: float = 0.0
    placement: str = "device"  # where the hidden-state streams lived: device | cpu
    peak_memory_bytes: int | None = None  # CUDA peak during the walk (None on CPU)

    @staticmethod
    def _mean(values: list[float]) -> float:
        return sum(values) / len(values) if values else float("nan")

    def summary(self) -> str:
        b = self.blocks
        return (f"{self.settings.mode} {self.settings.epochs} epochs on {self.n_windows} "
                f"windows, {len(b)} blocks: error {self._mean([x.error_before for x in b]):.4g}"
                f" → {self._mean([x.error_after for x in b]):.4g}, against the dense model "
                f"{self._mean([x.calib_before for x in b]):.4g} → "
                f"{self._mean([x.calib_after for x in b]):.4g}")

    def metrics(self, source: str, split: str | None, tokens_hash: str,
                protocol: dict[str, Any] | None = None) -> list[dict[str, Any]]:
        """calib_error(_before) and recon_error_before / _after (role ``reconstruction``),
        each carrying its per-block values in its protocol."""
        s, b = self.settings, self.blocks
        base = {"dataset": source, "split": split, "seqlen": self.seqlen,
                "n_samples": self.n_windows, "fidelity": "full", "role": RECONSTRUCTION_ROLE}
        common = {**(protocol or {}), "tokens_hash": tokens_hash, "mode": s.mode,
                  "epochs": s.epochs, "lr": s.lr, "batch_size": s.batch_size,
                  "samples": s.samples, "seed": s.seed, "blocks": len(b),
                  "error": "sum((ŷ−y)²)/sum(y²) per block on the windows fitted on, mean over "
                           "blocks"}

        def rounded(values: list[float]) -> list[float]:
            return [float(f"{v:.6g}") for v in values]

        return [
            {**base, "name": CALIBRATION_ERROR, "value": self._mean([x.calib_after for x in b]),
             "protocol": {**common, "target": "the dense model's hidden states",
                          "per_block": rounded([x.calib_after for x in b]),
                          "seconds": round(self.seconds, 3), "placement": self.placement,
                          "peak_memory_bytes": self.peak_memory_bytes}},
            {**base, "name": f"{CALIBRATION_ERROR}_before",
             "value": self._mean([x.calib_before for x in b]),
             "protocol": {**common, "target": "the dense model's hidden states",
                          "per_block": rounded([x.calib_before for x in b])}},
            {**base, "name": "recon_error_before", "value": self._mean([x.error_before for x in b]),
             "protocol": {**common, "target": _TARGETS[s.mode],
                          "per_block": rounded([x.error_before for x in b])}},
            {**base, "name": "recon_error_after", "value": self._mean([x.error_after for x in b]),
             "protocol": {**common, "target": _TARGETS[s.mode],
                          "per_block_before": rounded([x.error_before for x in b]),
                          "per_block_after": rounded([x.error_after for x in b]),
                          "curve": [rounded(x.curve) for x in b],
                          "steps": sum(x.steps for x in b)}},
        ]


_TARGETS = {"lr": "each dense linear layer on its input in the pruned model (mean over the "
                  "block's layers)",
            "br": "the dense block on the pruned model's input",
            "gp": "the dense model's hidden states (global propagation)"}


# -- streams of hidden states -----------------------------------------------------------------


class _Stream:
    """Hidden states of every calibration window at one depth, chunked like the block inputs
    (each chunk with its keyword arguments), stored on `store` (the GPU or the CPU)."""

    def __init__(self, hidden: list[torch.Tensor], kwargs: list[dict], store: torch.device):
        self.hidden = [h.to(store) for h in hidden]
        self.kwargs = kwargs
        self.store = store

    def rows(self, n: int) -> torch.Tensor:
        """The first n windows as one tensor (on the store device)."""
        return torch.cat(self.hidden)[:n]

    def through(self, block: nn.Module, device: torch.device) -> _Stream:
        """The block's outputs on every chunk (no grad)."""
        with torch.no_grad():
            out = [block_output(block(h.to(device), **kw)).to(self.store)
                   for h, kw in zip(self.hidden, self.kwargs, strict=True)]
        return _Stream(out, self.kwargs, self.store)

    def as_inputs(self, device: torch.device) -> BlockInputs:
        return BlockInputs([h.to(device) for h in self.hidden], self.kwargs)


def _normalised(pred: torch.Tensor, target: torch.Tensor) -> tuple[float, float]:
    """(sum of squared errors, sum of squared targets), fp64 accumulation."""
    d = pred.double() - target.double()
    return float((d * d).sum()), float((target.double() ** 2).sum())


def _ratio(num: float, den: float) -> float:
    return num / den if den > 0 else float("nan")


def _batch_kwargs(kwargs: dict, chunk: int, size: int, dtype: torch.dtype | None = None) -> dict:
    """A chunk's keyword arguments (the chunk had `chunk` windows) for a batch of `size`
    windows: batched tensors (two or more dimensions, the first the chunk's) keep one row,
    broadcast to `size` (the windows share length and positions); floating tensors are cast to
    `dtype` when given (the fp32 fit)."""

    def fix(v: Any) -> Any:
        if isinstance(v, torch.Tensor):
            if v.dim() >= 2 and v.shape[0] == chunk and chunk != size:
                v = v[:1].expand(size, *v.shape[1:])
            if dtype is not None and v.is_floating_point():
                v = v.to(dtype)
            return v
        if isinstance(v, (tuple, list)):
            return type(v)(fix(x) for x in v)
        return v

    return {k: fix(v) for k, v in kwargs.items()}


@dataclass
class _ChunkArgs:
    """The keyword arguments of the first chunk, for batches of any size."""

    kwargs: dict
    chunk: int

    def of(self, size: int, dtype: torch.dtype | None = None) -> dict:
        return _batch_kwargs(self.kwargs, self.chunk, size, dtype)


def _block_errors(block: nn.Module, x: torch.Tensor, targets: list[torch.Tensor],
                  kwargs: _ChunkArgs, device: torch.device, micro: int) -> list[float]:
    """Normalised errors of block(x) against each target (windows in micro-batches)."""
    sums = [[0.0, 0.0] for _ in targets]
    with torch.no_grad():
        for start in range(0, x.shape[0], micro):
            xb = x[start:start + micro].to(device)
            out = block_output(block(xb, **kwargs.of(xb.shape[0])))
            for acc, t in zip(sums, targets, strict=True):
                num, den = _normalised(out, t[start:start + micro].to(device))
                acc[0] += num
                acc[1] += den
    return [_ratio(a, b) for a, b in sums]


def _errors(out: torch.Tensor, targets: list[torch.Tensor], device: torch.device,
            rows: int = 8) -> list[float]:
    """Normalised errors of outputs already computed against each target."""
    sums = [[0.0, 0.0] for _ in targets]
    for start in range(0, out.shape[0], rows):
        o = out[start:start + rows].to(device)
        for acc, t in zip(sums, targets, strict=True):
            num, den = _normalised(o, t[start:start + rows].to(device))
            acc[0] += num
            acc[1] += den
    return [_ratio(a, b) for a, b in sums]


def _lr_schedule(settings: ReconstructionSettings, total: int) -> Callable[[int], float]:
    def factor(step: int) -> float:
        if settings.schedule == "constant":
            return 1.0
        return max(0.0, 1.0 - step / max(1, total))

    return factor


class _Fit:
    """Adam on a set of masked weights (fp32), the reference's recipe."""

    def __init__(self, weights: list[nn.Parameter], settings: ReconstructionSettings,
                 total_steps: int):
        self.weights = weights
        self.masks = [(w != 0) for w in weights]
        self.settings = settings
        self.opt = torch.optim.AdamW(weights, lr=settings.lr, betas=settings.betas,
                                     eps=settings.eps, weight_decay=settings.weight_decay)
        self.sched = torch.optim.lr_scheduler.LambdaLR(self.opt,
                                                       _lr_schedule(settings, total_steps))

    def step(self) -> None:
        for w, m in zip(self.weights, self.masks, strict=True):
            if w.grad is not None:
                w.grad.mul_(m)
        if self.settings.max_grad_norm is not None:
            torch.nn.utils.clip_grad_norm_(self.weights, self.settings.max_grad_norm)
        self.opt.step()
        self.sched.step()
        self.opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            for w, m in zip(self.weights, self.masks, strict=True):
                w.mul_(m)


def _epochs(n: int, settings: ReconstructionSettings, block_index: int):
    """Per epoch, the windows' order in batches of batch_size (seeded per block)."""
    gen = torch.Generator().manual_seed(settings.seed * 100_003 + block_index)
    for _ in range(settings.epochs):
        order = torch.randperm(n, generator=gen)
        yield [order[i:i + settings.batch_size] for i in range(0, n, settings.batch_size)]


def _train(forward: Callable[[torch.Tensor], torch.Tensor], weights: list[nn.Parameter],
           x: torch.Tensor, target: torch.Tensor, settings: ReconstructionSettings,
           device: torch.device, block_index: int) -> tuple[list[float], int]:
    """Fit `weights` so that forward(x) meets target (MSE; batches of windows, gradient
    accumulated over micro-batches). Returns (per-epoch normalised training error, steps)."""
    n = x.shape[0]
    per_epoch = math.ceil(n / settings.batch_size)
    fit = _Fit(weights, settings, settings.epochs * per_epoch)
    micro = settings.micro_batch_size or settings.batch_size
    curve, steps = [], 0
    for batches in _epochs(n, settings, block_index):
        num = den = 0.0
        for idx in batches:
            for part in idx.split(micro):
                xb = x[part].to(device, torch.float32)
                tb = target[part].to(device, torch.float32)
                with torch.enable_grad():
                    out = forward(xb)
                    loss = torch.nn.functional.mse_loss(out, tb) * (part.numel() / idx.numel())
                    loss.backward()
                a, b = _normalised(out.detach(), tb)
                num, den = num + a, den + b
            fit.step()
            steps += 1
        curve.append(_ratio(num, den))
    return curve, steps


class _TrainOnly:
    """Within the context: the block's parameters in fp32, eval mode, only `weights` requiring
    grad; each parameter's dtype, the grad flags and the mode restored on exit. Buffers are
    left alone (a `module.to(dtype)` round trip would cast a rotary `inv_freq` buffer down)."""

    def __init__(self, block: nn.Module, weights: list[nn.Parameter]):
        self.block, self.weights = block, weights

    def __enter__(self) -> _TrainOnly:
        b = self.block
        self.saved = {n: (p.dtype, p.requires_grad) for n, p in b.named_parameters()}
        self.training = b.training
        b.eval()
        for p in b.parameters():
            p.requires_grad_(False)
            if p.is_floating_point() and p.dtype != torch.float32:
                p.data = p.data.float()
        for w in self.weights:
            w.requires_grad_(True)
        return self

    def __exit__(self, *exc: Any) -> None:
        b = self.block
        for n, p in b.named_parameters():
            dtype, flag = self.saved[n]
            p.requires_grad_(flag)
            p.grad = None
            if p.dtype != dtype:
                p.data = p.data.to(dtype)
        b.train(self.training)


def _weights(linears: list[PrunableLinear]) -> list[nn.Parameter]:
    """The parameters holding the layers, each once (one 3-D parameter holds every expert)."""
    return list(dict.fromkeys(lin.parameter for lin in linears))


def _fit_block(block: nn.Module, linears: list[PrunableLinear], x: torch.Tensor,
               target: torch.Tensor, kwargs: _ChunkArgs, settings: ReconstructionSettings,
               device: torch.device, index: int) -> tuple[list[float], int]:
    weights = _weights(linears)
    with _TrainOnly(block, weights):
        kw32 = {}

        def forward(xb: torch.Tensor) -> torch.Tensor:
            size = xb.shape[0]
            if size not in kw32:
                kw32[size] = kwargs.of(size, torch.float32)
            return block_output(block(xb, **kw32[size]))

        return _train(forward, weights, x, target, settings, device, index)


def _linear_inputs(block: nn.Module, lin: PrunableLinear, stream: _Stream, n: int,
                   device: torch.device) -> torch.Tensor:
    """What `lin` receives in a block forward over the first n windows (store device)."""
    seen: list[torch.Tensor] = []
    chunk = {"windows": 1}

    def hook(module, args, output):  # noqa: ARG001 - must return None
        x = args[0].detach()  # (windows, T, in), or (tokens, in) where a model flattens (OPT)
        seen.append(x.reshape(chunk["windows"], -1, x.shape[-1]).to(stream.store))

    handle = lin.module.register_forward_hook(hook)
    try:
        with torch.no_grad():
            done = 0
            for h, kw in zip(stream.hidden, stream.kwargs, strict=True):
                if done >= n:
                    break
                chunk["windows"] = h.shape[0]
                block(h.to(device), **kw)
                done += h.shape[0]
    finally:
        handle.remove()
    return torch.cat(seen)[:n]


def _lr_targets(block: nn.Module, linears: list[PrunableLinear], stream: _Stream, n: int,
                device: torch.device) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """LR: per linear, (its inputs, the dense layer's outputs on them), before the mask."""
    out = {}
    for lin in linears:
        x = _linear_inputs(block, lin, stream, n, device)
        with torch.no_grad():
            y = torch.cat([lin.module(x[i:i + 8].to(device)).to(stream.store)
                           for i in range(0, x.shape[0], 8)])
        out[lin.name] = (x, y)
    return out


def _fit_linears(block: nn.Module, linears: list[PrunableLinear],
                 data: dict[str, tuple[torch.Tensor, torch.Tensor]],
                 settings: ReconstructionSettings, device: torch.device, index: int,
                 ) -> tuple[list[float], list[float], list[float], int]:
    """LR: each linear to its dense outputs. Returns (errors before, after, the mean per-epoch
    curve, steps), errors as the mean over the block's layers."""
    before, after, curves, steps = [], [], [], 0
    with _TrainOnly(block, _weights(linears)):
        for k, lin in enumerate(linears):
            x, y = data[lin.name]
            before.append(_linear_error(lin, x, y, device))
            curve, s = _train(lambda xb, m=lin.module: m(xb), [lin.module.weight], x, y,
                              settings, device, index * 1000 + k)
            curves.append(curve)
            steps += s
            after.append(_linear_error(lin, x, y, device))
    mean_curve = [sum(c[e] for c in curves) / len(curves) for e in range(settings.epochs)]
    return before, after, mean_curve, steps


def _linear_error(lin: PrunableLinear, x: torch.Tensor, y: torch.Tensor,
                  device: torch.device) -> float:
    num = den = 0.0
    with torch.no_grad():
        w = lin.module.weight
        for i in range(0, x.shape[0], 8):
            xb = x[i:i + 8].to(device, w.dtype)
            a, b = _normalised(lin.module(xb), y[i:i + 8].to(device))
            num, den = num + a, den + b
    return _ratio(num, den)


def stream_placement(lm: LoadedModel, n_windows: int, seqlen: int) -> torch.device:
    """Where the hidden-state streams live: the model's device, or the CPU when the model is
    on a GPU and five streams would take more than `STREAM_SHARE` of its free memory."""
    device = torch.device(lm.device)
    if device.type != "cuda":
        return device
    hidden = lm.model.config.hidden_size
    need = 5 * n_windows * seqlen * hidden * torch.finfo(lm.dtype).bits // 8
    free, _ = torch.cuda.mem_get_info(device)
    return device if need < STREAM_SHARE * free else torch.device("cpu")


def reconstruct_sequentially(lm: LoadedModel, inputs: BlockInputs, block_stats: StatsFn,
                             prune_block: PruneBlockFn, settings: ReconstructionSettings,
                             progress: Callable[[int, int], None] | None = None,
                             ) -> ReconstructionResult:
    """Mask and reconstruct every block in order (see the module docstring)."""
    t0 = time.perf_counter()
    device = torch.device(lm.device)
    total = inputs.nsamples
    n = total if settings.samples is None else settings.samples
    if n > total:
        raise ValueError(f"reconstruction.samples = {n} but the calibration set has {total} "
                         "windows")
    seqlen = inputs.hidden[0].shape[1]
    store = stream_placement(lm, total, seqlen)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sparse = _Stream(inputs.hidden, inputs.kwargs, store)
    dense = _Stream(inputs.hidden, inputs.kwargs, store)
    micro = settings.micro_batch_size or settings.batch_size
    fits = []
    blocks = lm.adapter.blocks(lm.model)
    for i, block in enumerate(blocks):
        linears = lm.adapter.prunable_linears(lm.model, i)
        if settings.mode == "lr" and any(lin.is_expert for lin in linears):
            raise ValueError(
                "reconstruction mode 'lr' fits each linear layer on its own inputs, and a "
                "stacked expert (a slice of a 3-D parameter) is not a module it can call; "
                "allowed on a mixture-of-experts model: mode 'br' or 'gp' (block-wise)")
        # every block with its own masks / rotary embeddings (Gemma's sliding and global)
        sparse.kwargs = dense.kwargs = inputs.at_block(i).kwargs
        fit_kwargs = _ChunkArgs(sparse.kwargs[0], inputs.hidden[0].shape[0])
        dense_next = dense.through(block, device)  # the dense model's hidden states
        y_dense = dense_next.rows(n)
        x = sparse.rows(n)
        if settings.mode == "lr":
            lr_data = _lr_targets(block, linears, sparse, n, device)
        target = (y_dense if settings.mode == "gp"
                  else sparse.through(block, device).rows(n) if settings.mode == "br" else None)
        prune_block(i, linears, block_stats(i, linears, sparse.as_inputs(device)))
        if settings.mode == "lr":
            [calib_before] = _block_errors(block, x, [y_dense], fit_kwargs, device, micro)
            before, after, curve, steps = _fit_linears(block, linears, lr_data, settings,
                                                       device, i)
            sparse = sparse.through(block, device)  # the next block's input, and the errors'
            [calib_after] = _errors(sparse.rows(n), [y_dense], device)
            fit = BlockFit(i, sum(before) / len(before), sum(after) / len(after),
                           calib_before, calib_after, curve, steps)
            del lr_data
        else:
            err_before, calib_before = _block_errors(block, x, [target, y_dense], fit_kwargs,
                                                     device, micro)
            curve, steps = ([], 0) if settings.epochs == 0 else _fit_block(
                block, linears, x, target, fit_kwargs, settings, device, i)
            sparse = sparse.through(block, device)  # the next block's input, and the errors'
            err_after, calib_after = _errors(sparse.rows(n), [target, y_dense], device)
            fit = BlockFit(i, err_before, err_after, calib_before, calib_after, curve, steps)
        fits.append(fit)
        log.debug("block %d: %s", i, fit)
        dense = dense_next
        del x, y_dense, target
        if progress:
            progress(i + 1, len(blocks))
    peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return ReconstructionResult(settings, n, seqlen, fits, time.perf_counter() - t0,
                                "cpu" if store.type == "cpu" and device.type != "cpu"
                                else "device", peak)


def collect_on_stream(want_hessian: bool, blocks: list[nn.Module]) -> StatsFn:
    """The sequential protocol's statistics: X (and H) of block i's linears on the pruned
    model's inputs."""
    def stats(i: int, linears: list[PrunableLinear], inputs: BlockInputs) -> dict[str, LayerStats]:
        return collect_block_stats(blocks[i], linears, inputs, want_hessian)

    return stats


# -- the memory arithmetic --------------------------------------------------------------------


GIB = 1024 ** 3


def memory_estimate(*, hidden: int, intermediate: int, n_blocks: int, vocab: int,
                    n_windows: int, seqlen: int, micro_batch: int, model_bytes: int = 2,
                    stream_bytes: int = 2, offload: bool = True) -> dict[str, float]:
    """Peak GPU memory (GiB) of block-wise reconstruction of a LLaMA-shaped model, by part.

    model: every weight at `model_bytes` (the embeddings and head counted once each);
    block_fp32: one block cast to fp32 for its fit, plus its gradient and Adam's two moments
    (4 × 4 bytes per block weight) and its bool masks; activations: what autograd keeps for one
    micro-batch through one fp32 block (per token ≈ 10·hidden + 4·intermediate floats: norms,
    q / k / v / attention output, residuals, gate / up / activation / product) plus the
    micro-batch's input and target; streams: five (n_windows × seqlen × hidden) tensors at
    `stream_bytes` (pruned input, dense input, target, the two outputs) — on the CPU when
    `offload`, then 0 here.
    """
    block_params = 4 * hidden * hidden + 3 * hidden * intermediate
    params = n_blocks * block_params + 2 * vocab * hidden
    tokens = micro_batch * seqlen
    parts = {
        "model": params * model_bytes / GIB,
        "block_fp32": block_params * (4 * 4 + 1 - model_bytes) / GIB,
        "activations": (tokens * (10 * hidden + 4 * intermediate) * 4
                        + 2 * tokens * hidden * 4) / GIB,
        "streams": 0.0 if offload else 5 * n_windows * seqlen * hidden * stream_bytes / GIB,
    }
    parts["total"] = sum(parts.values())
    return parts
