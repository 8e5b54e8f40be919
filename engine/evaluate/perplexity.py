"""Perplexity, the Wanda / SparseGPT way.

The split is joined and tokenized once; non-overlapping windows of `seqlen` are cut (tail
dropped); each window's shifted token cross-entropy is summed in fp32; PPL = exp(total NLL /
number of predicted tokens). Every window has seqlen − 1 predictions, so this equals exp of the
mean of per-window mean losses — the reference code's formula.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from prunestudio.engine.data.windows import Windows


@dataclass(frozen=True)
class PerplexityResult:
    ppl: float
    nll_sum: float
    n_tokens: int
    n_windows: int
    seqlen: int

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
        logits = model(x, use_cache=False).logits
        logits = logits[:, :-1, :].float()
        target = x[:, 1:]
        nll = F.cross_entropy(logits.reshape(-1, logits.shape[-1]), target.reshape(-1),
                              reduction="none").reshape(target.shape).sum(1)
        out.append(nll.cpu())
        if progress:
            progress(min(start + batch_size, n), n)
    return torch.cat(out).double()


def perplexity(model, windows: Windows, device, batch_size: int = 4,
               progress: Callable[[int, int], None] | None = None) -> PerplexityResult:
    nll = window_nll(model, windows.ids, device, batch_size, progress)
    n_tokens = windows.n * (windows.seqlen - 1)
    total = float(nll.sum())
    mean = total / n_tokens
    ppl = math.exp(mean) if mean < 700 else math.inf
    return PerplexityResult(ppl, total, n_tokens, windows.n, windows.seqlen)
