"""Calibration statistics: block inputs, per-layer input statistics, gradients.

The sequential protocol (Wanda, SparseGPT, OWL) walks the decoder block by block: the block's
inputs are captured once at block 0, with the keyword arguments every block receives (attention
mask, position ids, rotary embeddings, cache position — per block, since Gemma 2 / 3 give
sliding-window and global blocks different masks and rotary tables); statistics for the block's
linear layers are collected in one forward, the block is pruned, and its *pruned* outputs become
the next block's inputs. No KV cache object ever reaches an isolated block call (PITFALLS: stale
keys). An expert of a mixture-of-experts layer sees only the tokens routed to it.

Statistics are fp32 whatever the model dtype:
  X  - Wanda's `scaler_row`: per input column, sum over tokens of x², averaged over samples.
  H  - SparseGPT's Hessian 2/n · Σ x xᵀ over the n calibration samples' tokens.
  G  - GBLM's gradient aggregate sqrt(Σ_samples (scale · ∂L_s/∂W)²), scale = 100, from the dense
       model in eval mode, one backward per calibration sample.
"""

from __future__ import annotations

import hashlib
import inspect
import logging
import os
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import torch
from prunestudio.engine.models.adapters import PrunableLinear
from prunestudio.engine.models.loading import LoadedModel
from prunestudio.engine.paths import cache_dir
from torch import nn

log = logging.getLogger(__name__)

GRADIENT_SCALE = 100.0
_CACHE_KWARGS_DROP = ("past_key_value", "past_key_values", "layer_past", "use_cache")


class _StopForward(Exception):
    pass


@dataclass
class BlockInputs:
    """Hidden states entering a block, in chunks, with the keyword arguments for each chunk.

    `kwargs` are the current block's; `per_block[i]` block i's (models that alternate
    sliding-window and global attention, such as Gemma 2 / 3, call each block with its own
    mask and rotary embeddings). `at_block(i)` switches to block i's."""

    hidden: list[torch.Tensor]
    kwargs: list[dict]
    per_block: list[list[dict]] | None = None

    @property
    def nsamples(self) -> int:
        return sum(h.shape[0] for h in self.hidden)

    def clone(self) -> BlockInputs:
        return BlockInputs([h.clone() for h in self.hidden], self.kwargs, self.per_block)

    def at_block(self, i: int) -> BlockInputs:
        """The same hidden states with block i's keyword arguments."""
        if self.per_block is None:
            return self
        return BlockInputs(self.hidden, self.per_block[i], self.per_block)


def _clean_kwargs(kwargs: dict) -> dict:
    out = {k: v for k, v in kwargs.items() if k not in _CACHE_KWARGS_DROP}
    out["use_cache"] = False
    return out


def _positional_names(block: nn.Module) -> list[str]:
    return [p.name for p in inspect.signature(block.forward).parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]


@torch.no_grad()
def capture_block_inputs(lm: LoadedModel, ids: torch.Tensor, batch_size: int = 8) -> BlockInputs:
    """Run the model's embeddings and keep what block 0 receives, chunk by chunk, with the
    keyword arguments every block receives.

    Each block's forward is replaced, for the capture only, by a recorder that returns its input
    unchanged, so the keyword arguments of block i are what the model really passes to block i
    (masks, rotary embeddings per attention type) at the cost of the embeddings alone."""
    blocks = list(lm.adapter.blocks(lm.model))
    hidden: list[torch.Tensor] = []
    per_block: list[list[dict]] = [[] for _ in blocks]
    saved = []

    def recorder(i: int, block: nn.Module):
        # Some models pass more than the hidden states positionally (GPT-2: past_key_values,
        # attention_mask, encoder_hidden_states): name them, or the causal mask is lost.
        positional = _positional_names(block)

        def forward(*args, **kw):
            x = args[0] if args else kw["hidden_states"]
            if i == 0:
                hidden.append(x.detach())
            rest = dict(kw)
            rest.pop("hidden_states", None)
            rest.update(zip(positional[1:], args[1:], strict=False))
            per_block[i].append(_clean_kwargs(rest))
            if i == len(blocks) - 1:
                raise _StopForward
            return x

        return forward

    for i, block in enumerate(blocks):
        saved.append(block.__dict__.get("forward"))
        block.forward = recorder(i, block)
    try:
        for start in range(0, ids.shape[0], batch_size):
            chunk = ids[start : start + batch_size].to(lm.device)
            try:
                lm.model(chunk, use_cache=False)
            except _StopForward:
                pass
    finally:
        for block, original in zip(blocks, saved, strict=True):
            if original is None:
                del block.forward
            else:
                block.forward = original
    return BlockInputs(hidden, per_block[0], per_block)


def block_output(out) -> torch.Tensor:
    """Recent transformers return a tensor from a decoder layer, older ones a tuple."""
    return out[0] if isinstance(out, (tuple, list)) else out


@torch.no_grad()
def run_block(block: nn.Module, inputs: BlockInputs) -> BlockInputs:
    outs = [block_output(block(h, **kw)) for h, kw in zip(inputs.hidden, inputs.kwargs, strict=True)]
    return BlockInputs(outs, inputs.kwargs, inputs.per_block)


@dataclass
class LayerStats:
    """Input statistics of one linear layer over the calibration samples (fp32)."""

    nsamples: int = 0
    x_sqnorm: torch.Tensor | None = None  # (in,) Wanda's scaler_row
    hessian: torch.Tensor | None = None  # (in, in) 2/n Σ x xᵀ
    tokens: int | None = None  # input rows seen (an expert: tokens routed to it); None: unknown

    @property
    def empty(self) -> bool:
        """No calibration token reached the layer (an expert the router never chose)."""
        return self.tokens == 0

    def to(self, device) -> LayerStats:
        return LayerStats(
            self.nsamples,
            None if self.x_sqnorm is None else self.x_sqnorm.to(device),
            None if self.hessian is None else self.hessian.to(device),
            self.tokens,
        )


@dataclass
class _Collector:
    want_hessian: bool
    nsamples: int = 0
    tokens: int = 0
    xsum: torch.Tensor | None = None
    hsum: torch.Tensor | None = None

    def add(self, x: torch.Tensor, batch: int | None = None) -> None:
        # `batch`: samples in the block's input chunk. A layer may see its input flattened to
        # (tokens, in) (OPT's fc1 / fc2, every expert), so its own shape cannot tell the
        # sample count.
        b = batch if batch is not None else (x.shape[0] if x.dim() == 3 else 1)
        x = x.reshape(-1, x.shape[-1]).float()
        self.nsamples += b
        self.tokens += x.shape[0]
        s = (x * x).sum(0)
        self.xsum = s if self.xsum is None else self.xsum + s
        if self.want_hessian:
            h = x.t() @ x
            self.hsum = h if self.hsum is None else self.hsum + h

    def result(self) -> LayerStats:
        n = max(self.nsamples, 1)
        return LayerStats(
            self.nsamples,
            None if self.xsum is None else self.xsum / n,
            None if self.hsum is None else self.hsum * (2.0 / n),
            self.tokens,
        )


@torch.no_grad()
def collect_block_stats(
    block: nn.Module, linears: list[PrunableLinear], inputs: BlockInputs, want_hessian: bool
) -> dict[str, LayerStats]:
    """One forward of `block` over the inputs with statistics hooks on its linear layers."""
    collectors = {lin.name: _Collector(want_hessian) for lin in linears}
    handles = []
    chunk = {"samples": 0}
    for lin in linears:
        col = collectors[lin.name]
        handles.append(lin.register_input_hook(
            lambda x, col=col: col.add(x, chunk["samples"])))
    try:
        for h, kw in zip(inputs.hidden, inputs.kwargs, strict=True):
            chunk["samples"] = h.shape[0]
            block(h, **kw)
    finally:
        for handle in handles:
            handle.remove()
    return {name: c.result() for name, c in collectors.items()}


BlockPruneFn = Callable[[int, list[PrunableLinear], dict[str, LayerStats]], None]


def prune_sequentially(
    lm: LoadedModel,
    block_inputs: BlockInputs,
    prune_block: BlockPruneFn,
    *,
    want_hessian: bool = False,
    blocks: Iterator[int] | None = None,
    progress: Callable[[int, int], None] | None = None,
) -> None:
    """The Wanda / SparseGPT loop: stats on block i's inputs, prune block i, propagate pruned."""
    model_blocks = lm.adapter.blocks(lm.model)
    todo = set(range(len(model_blocks)) if blocks is None else blocks)
    inputs = block_inputs.clone()
    for i, block in enumerate(model_blocks):
        if i > max(todo, default=-1):
            break
        inputs = inputs.at_block(i)
        if i in todo:
            linears = lm.adapter.prunable_linears(lm.model, i)
            stats = collect_block_stats(block, linears, inputs, want_hessian)
            prune_block(i, linears, stats)
        inputs = run_block(block, inputs)
        if progress:
            progress(i + 1, len(model_blocks))


# ---------------------------------------------------------------- dense statistics, cached


# Bump when the way a statistic is computed changes, so stale cache files are never reused.
STATS_VERSION = 3


def _cache_path(lm: LoadedModel, calib_hash: str, statistic: str) -> Path:
    return (cache_dir("stats") / f"v{STATS_VERSION}" / lm.fingerprint / calib_hash
            / f"{statistic}.pt")


def _load_cached(path: Path):
    if path.is_file():
        try:
            return torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # a corrupt cache file is recomputed, not trusted
            log.warning("ignoring unreadable statistics cache %s (%s)", path, exc)
    return None


def _save_cached(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp{os.getpid()}-{id(obj)}")  # workers may write it at once
    torch.save(obj, tmp)
    tmp.replace(path)  # atomic: a killed run never leaves a half-written cache file


@dataclass
class StatsCache:
    """Dense-model statistics for one (model, calibration set), memory- and disk-cached."""

    lm: LoadedModel
    calib_ids: torch.Tensor
    calib_hash: str
    batch_size: int = 8
    use_disk: bool = True
    _block_inputs: BlockInputs | None = None
    _dense: dict[str, dict[str, LayerStats]] = field(default_factory=dict)
    _grads: dict[str, torch.Tensor] | None = None
    computed: list[str] = field(default_factory=list)  # what had to be computed (not cached)

    def subset(self, indices: Sequence[int]) -> StatsCache:
        """The statistics of a subset of the calibration windows (an AdaPruner trial's samples):
        its own hash, computed when first read, never written to the disk cache (one subset per
        trial would fill it)."""
        n = int(self.calib_ids.shape[0])
        bad = [i for i in indices if not 0 <= int(i) < n]
        if bad:
            raise ValueError(f"calibration_samples {bad} are out of range: the study's "
                             f"calibration set has {n} windows (indices 0..{n - 1})")
        idx = torch.tensor(sorted({int(i) for i in indices}), dtype=torch.long)
        ids = self.calib_ids.index_select(0, idx.to(self.calib_ids.device))
        return StatsCache(self.lm, ids, calibration_hash(ids, self.calib_hash),
                          self.batch_size, use_disk=False)

    def block_inputs(self) -> BlockInputs:
        if self._block_inputs is None:
            self._block_inputs = capture_block_inputs(self.lm, self.calib_ids, self.batch_size)
        return self._block_inputs

    def dense_layer_stats(self, want_hessian: bool = False) -> dict[str, LayerStats]:
        """X (and H) of every linear layer from the *dense* model (no pruning in between)."""
        key = "dense_xh" if want_hessian else "dense_x"
        if key in self._dense:
            return self._dense[key]
        if not want_hessian and "dense_xh" in self._dense:
            return self._dense["dense_xh"]
        path = _cache_path(self.lm, self.calib_hash, key)
        cached = _load_cached(path) if self.use_disk else None
        if cached is not None:
            stats = {
                name: LayerStats(int(d["n"]), d.get("x"), d.get("h"), int(d["t"]))
                for name, d in cached.items()
            }
        else:
            self.computed.append(key)
            stats = {}
            prune_sequentially(
                self.lm,
                self.block_inputs(),
                lambda i, lins, st: stats.update({k: v.to("cpu") for k, v in st.items()}),
                want_hessian=want_hessian,
            )
            if self.use_disk:
                _save_cached(
                    path,
                    {
                        k: {kk: vv for kk, vv in (("n", torch.tensor(v.nsamples)), ("x", v.x_sqnorm),
                                                  ("h", v.hessian), ("t", torch.tensor(v.tokens)))
                            if vv is not None}
                        for k, v in stats.items()
                    },
                )
        self._dense[key] = stats
        return stats

    def gradients(self) -> dict[str, torch.Tensor]:
        """GBLM / Pruner-Zero G per linear layer (out × in, fp32, on CPU)."""
        if self._grads is not None:
            return self._grads
        path = _cache_path(self.lm, self.calib_hash, "grad_l2")
        cached = _load_cached(path) if self.use_disk else None
        if cached is None:
            self.computed.append("grad_l2")
            cached = compute_gradient_l2(self.lm, self.calib_ids)
            if self.use_disk:
                _save_cached(path, cached)
        self._grads = cached
        return cached


def weight_gradients(lm: LoadedModel, ids: torch.Tensor) -> Iterator[dict[str, torch.Tensor]]:
    """Per calibration sample (one backward each), ∂L_s/∂W of every prunable weight as an
    (out, in) fp32 CPU tensor, by layer name.

    Eval mode (no dropout, PITFALLS: OPT); only the prunable weights require grad, so the
    embeddings' gradients are never materialised. The model's grad flags and mode are restored
    when the iteration ends, however it ends.
    """
    model = lm.model
    linears = lm.adapter.all_prunable_linears(model)
    was_training = model.training
    model.eval()
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    for p in model.parameters():
        p.requires_grad_(False)
    for lin in linears:  # stacked experts: one parameter holds several layers
        lin.parameter.requires_grad_(True)
    try:
        for s in range(ids.shape[0]):
            x = ids[s : s + 1].to(lm.device)
            model(x, labels=x, use_cache=False).loss.backward()
            grads = {}
            for lin in linears:
                g = lin.parameter.grad
                grads[lin.name] = (lin.logical(g) if g is not None
                                   else torch.zeros_like(lin.weight)).float().cpu()
            for lin in linears:
                lin.parameter.grad = None
            yield grads
    finally:
        for n, p in model.named_parameters():
            p.requires_grad_(flags[n])
            p.grad = None
        model.train(was_training)


def compute_gradient_l2(
    lm: LoadedModel, ids: torch.Tensor, scale: float = GRADIENT_SCALE
) -> dict[str, torch.Tensor]:
    """sqrt(Σ_s (scale·∂L_s/∂W)²) per prunable weight (GBLM's G)."""
    acc: dict[str, torch.Tensor] = {}
    for grads in weight_gradients(lm, ids):
        for name, g in grads.items():
            square = (g * scale).pow(2)
            acc[name] = acc[name] + square if name in acc else square
    return {k: v.sqrt() for k, v in acc.items()}


def calibration_hash(ids: torch.Tensor, extra: str = "") -> str:
    h = hashlib.sha256(ids.cpu().numpy().astype("int64").tobytes())
    h.update(extra.encode())
    return h.hexdigest()[:16]
