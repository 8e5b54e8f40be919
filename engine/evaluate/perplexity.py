"""Perplexity, the Wanda / SparseGPT way.

The split is joined and tokenized once; non-overlapping windows of `seqlen` are cut (tail
dropped); each window's shifted token cross-entropy is summed in fp32; PPL = exp(total NLL /
number of predicted tokens). Every window has seqlen − 1 predictions, so this equals exp of the
mean of per-window mean losses — the reference code's formula.

**Standard error.** log PPL is the mean of the n per-window mean losses m_w, so its standard
error is sd(m_w) / √n (sample sd, n − 1), and PPL's follows by the delta method: SE(PPL) ≈
PPL · SE(log PPL). Every metric records both, the n windows and — up to `MAX_WINDOWS_RECORDED`
windows — the m_w themselves (``window_mean_nll``), so two figures on the same windows can be
compared *paired* (`paired_log_se`): the spread of their per-window differences, free of how
hard each window is, which is what decides whether one pruned model is better than another.
It measures how much the figure would move on other windows of the same text, not run-to-run
noise (the figure itself is deterministic).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from prunestudio.engine.data.windows import Windows

MAX_WINDOWS_RECORDED = 512  # per-window mean losses kept in a metric's protocol up to this


def _finite(x: float | None) -> float | None:
    return x if x is not None and math.isfinite(x) else None


def log_se(values: Sequence[float]) -> float | None:
    """Standard error of the mean of `values` (sample sd with n − 1, over √n); None for fewer
    than two values or a non-finite result."""
    n = len(values)
    if n < 2:
        return None
    mean = math.fsum(values) / n
    var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
    return _finite(math.sqrt(var / n)) if math.isfinite(var) else None


def paired_log_se(a: Sequence[float], b: Sequence[float]) -> float | None:
    """Standard error of mean(a) − mean(b) for per-window values of two models on the same
    windows: the SE of the mean of the per-window differences."""
    if len(a) != len(b):
        raise ValueError(f"paired windows differ in number: {len(a)} and {len(b)}")
    return log_se([x - y for x, y in zip(a, b, strict=True)])


@dataclass(frozen=True)
class PerplexityResult:
    ppl: float
    nll_sum: float
    n_tokens: int
    n_windows: int
    seqlen: int
    window_nll: tuple[float, ...] = ()  # summed NLL of each window

    @property
    def window_mean_nll(self) -> tuple[float, ...]:
        """Mean token loss of each window (seqlen − 1 predictions each)."""
        return tuple(v / (self.seqlen - 1) for v in self.window_nll)

    @property
    def log_ppl_se(self) -> float | None:
        """Standard error of log PPL over the windows (None below two windows)."""
        return log_se(self.window_mean_nll)

    @property
    def ppl_se(self) -> float | None:
        """Standard error of PPL (delta method: PPL · SE(log PPL))."""
        se = self.log_ppl_se
        return None if se is None else _finite(self.ppl * se)

    def noise(self) -> dict:
        """The protocol keys of the figure's standard error."""
        means = self.window_mean_nll
        out = {"n_windows": self.n_windows, "log_ppl_se": self.log_ppl_se,
               "ppl_se": self.ppl_se}
        if means and len(means) <= MAX_WINDOWS_RECORDED and all(map(math.isfinite, means)):
            out["window_mean_nll"] = list(means)
        return out

    def metric(self, *, fidelity: str, role: str, windows: Windows) -> dict:
        """The store's metric record, carrying its whole protocol."""
        spec = windows.spec
        return {
            "name": "ppl",
            "value": self.ppl,
            "dataset": spec.source,
            "split": spec.split,
            "seqlen": self.seqlen,
            "n_samples": self.n_windows,
            "fidelity": fidelity,
            "role": role,
            "protocol": {
                "selection": spec.selection,
                "offset": spec.offset,
                "tokens_hash": windows.tokens_hash,
                "text_hash": windows.text_hash,
                "n_tokens_scored": self.n_tokens,
                "nll_sum": self.nll_sum,
                **self.noise(),
            },
        }


@torch.no_grad()
def window_nll(model, ids: torch.Tensor, device, batch_size: int = 4,
               progress: Callable[[int, int], None] | None = None) -> torch.Tensor:
    """Summed next-token NLL (fp32) of each window; shape (n_windows,)."""
    out = []
    n = ids.shape[0]
    for start in range(0, n, batch_size):
        x = ids[start : start + batch_size].to(device)
        logits = model(x, use_cache=False).logits.float()
        # every position's logits as they are (no copy of a [:, :-1] slice: 200 MB at 4 × 256
        # tokens of a 49k vocabulary); the last position has no next token: ignored, and left
        # out of the sum, so the sums are bit for bit those of the sliced computation
        target = torch.full_like(x, -100)
        target[:, :-1] = x[:, 1:]
        nll = F.cross_entropy(logits.view(-1, logits.shape[-1]), target.view(-1),
                              reduction="none", ignore_index=-100).view(x.shape)[:, :-1].sum(1)
        out.append(nll.cpu())
        if progress:
            progress(min(start + batch_size, n), n)
    return torch.cat(out).double()


def from_window_nll(nll: Sequence[float] | torch.Tensor, seqlen: int) -> PerplexityResult:
    """The perplexity of windows of `seqlen` tokens whose summed NLLs are `nll`."""
    values = tuple(float(v) for v in nll)
    n_tokens = len(values) * (seqlen - 1)
    total = float(torch.tensor(values, dtype=torch.float64).sum())
    mean = total / n_tokens
    ppl = math.exp(mean) if mean < 700 else math.inf
    return PerplexityResult(ppl, total, n_tokens, len(values), seqlen, values)


def perplexity(model, windows: Windows, device, batch_size: int = 4,
               progress: Callable[[int, int], None] | None = None) -> PerplexityResult:
    nll = window_nll(model, windows.ids, device, batch_size, progress)
    return from_window_nll(nll, windows.seqlen)
