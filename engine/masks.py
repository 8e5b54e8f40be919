"""Sparsity patterns: turn a score (higher = more important) into a prune mask (True = pruned).

Selection is exact and deterministic on fp32 scores: the k lowest of a comparison group are
what a *stable* ascending sort would put first — every score strictly below the k-th smallest
value, then the scores equal to it, lowest index first — so ties break by position, never by
bf16 rounding or thread order.

Two implementations give the same masks (`use_selection`):

* ``"select"`` (default): the k-th smallest value of each group by a selection (numpy's
  introselect on CPU, `torch.kthvalue` elsewhere), one comparison against it, and a cumulative count of the equal entries only in the groups where
  ties straddle the threshold — linear time, no index tensors. N:M groups (M ≤ 16) count each
  entry's place in the stable order directly: M·(M−1) comparisons of whole columns. The
  finiteness check is one min/max pass, and `apply_mask_` zeroes the pruned weights through an
  integer view (bit for bit what ``masked_fill_`` writes);
* ``"sort"``: the previous path, kept as the reference: a full stable sort of each group and
  its first k indices (O(w log w) per group), ``isfinite`` over the whole score and
  ``masked_fill_``. `prunestudio bench --search` runs both and checks the zero patterns are
  identical.

``ties="topk"`` (the reference Wanda code's `torch.topk(largest=False)`, device-dependent order
among equal scores) is unchanged by either.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from contextvars import ContextVar

import numpy as np
import torch


class NonFiniteScoreError(ValueError):
    """A pruning score with NaN or inf entries: an error for the candidate, never a silent mask."""


def n_to_prune(width: int, sparsity: float) -> int:
    """Weights pruned in a comparison group of `width`: ``int(width · sparsity)`` (floor), as
    the reference codes count (Wanda's and OWL's ``int(W.shape[1] * sparsity_ratio)``, GBLM's),
    so a per-block OWL sparsity such as 0.6822 prunes the same weights per row as the OWL code;
    the realised sparsity is at most 1/width below the target."""
    return int(width * sparsity)


def check_finite(score: torch.Tensor, where: str) -> None:
    # one reduction pass (NaN propagates through min / max); the count only on failure
    if score.numel() and current_selection() == "select":
        lo, hi = torch.aminmax(score.detach())
        if bool(torch.isfinite(lo) & torch.isfinite(hi)):
            return
    finite = torch.isfinite(score)
    if not bool(finite.all()):
        bad = int((~finite).sum())
        raise NonFiniteScoreError(
            f"{where}: score has {bad} non-finite value(s) (NaN or inf) out of {score.numel()}"
        )


TIES = ("index", "topk")
SELECTIONS = ("select", "sort")
_SELECTION: ContextVar[str] = ContextVar("prunestudio_mask_selection", default="select")


def current_selection() -> str:
    return _SELECTION.get()


@contextmanager
def use_selection(selection: str) -> Iterator[None]:
    """Run the block with this selection implementation (``"sort"``: the reference)."""
    if selection not in SELECTIONS:
        raise ValueError(f"selection must be one of {', '.join(SELECTIONS)}; got {selection!r}")
    token = _SELECTION.set(selection)
    try:
        yield
    finally:
        _SELECTION.reset(token)


def _check_ties(ties: str) -> None:
    if ties not in TIES:
        raise ValueError(f"ties must be one of {', '.join(TIES)}; got {ties!r}")


def lowest(score: torch.Tensor, k: int, dim: int, ties: str = "index") -> torch.Tensor:
    """Indices of the k lowest scores along `dim` (a sort; the reference selection).

    ties="index": a stable sort, equal scores pruned lowest index first — the same mask on
    every device. ties="topk": `torch.topk(largest=False)` as the reference Wanda code does;
    its order among equal scores is the kernel's (device-dependent). Scores with many exact
    ties (magnitude of quantized weights) give measurably different masks under the two.
    """
    if ties == "topk":
        return torch.topk(score, k, dim=dim, largest=False).indices
    _check_ties(ties)
    return torch.sort(score, dim=dim, stable=True).indices.narrow(dim, 0, k)


def _on_numpy(t: torch.Tensor) -> bool:
    """Whether the selection's k-th value is found by numpy (CPU fp32 / fp64) or by torch."""
    return t.device.type == "cpu" and t.dtype in (torch.float32, torch.float64)


def lowest_mask(rows: torch.Tensor, k: int) -> torch.Tensor:
    """Boolean mask of the k lowest entries of each row of a 2-D tensor, exactly the first k
    of a stable ascending sort: entries strictly below the row's k-th smallest value, then the
    entries equal to it, lowest index first.

    The k-th value is found by numpy's introselect on CPU (linear time; several times faster
    than `torch.kthvalue` there, and it releases the GIL, so `lowest_mask_async` runs beside
    torch work), by `torch.kthvalue` elsewhere."""
    n_rows, width = rows.shape
    if k <= 0:
        return torch.zeros(rows.shape, dtype=torch.bool, device=rows.device)
    if k >= width:
        return torch.ones(rows.shape, dtype=torch.bool, device=rows.device)
    if _on_numpy(rows):
        a = rows.detach().numpy()
        part = np.partition(a, k - 1, axis=1)
        kth = part[:, k - 1 : k]
        if np.isnan(kth).any():  # NaN scores (callers reject them before selecting)
            return _sorted_lowest(rows, k)
        mask = torch.from_numpy(a <= kth)
        # every entry after the k-th in the partition is ≥ it: a row has more than k entries
        # ≤ its k-th value exactly when the smallest of them equals it
        tied = np.flatnonzero(part[:, k:].min(axis=1) == kth[:, 0])
        if tied.size:
            _break_ties(rows, mask, torch.from_numpy(np.ascontiguousarray(kth)),
                        torch.from_numpy(tied), k)
        return mask
    kth = torch.kthvalue(rows, k, dim=1, keepdim=True).values
    mask = rows <= kth
    count = mask.sum(1, dtype=torch.int32)  # (int64 would cast the mask first)
    tied = (count != k).nonzero().squeeze(1)
    if tied.numel():
        if bool((count.index_select(0, tied) < k).any()):  # NaN scores
            return _sorted_lowest(rows, k)
        _break_ties(rows, mask, kth, tied, k)
    return mask


def _sorted_lowest(rows: torch.Tensor, k: int) -> torch.Tensor:
    """The first k of a stable sort of each row (NaN last): the reference the fast paths match."""
    return _mask_from_indices(rows, torch.sort(rows, dim=1, stable=True).indices[:, :k])


def _break_ties(rows: torch.Tensor, mask: torch.Tensor, kth: torch.Tensor,
                tied: torch.Tensor, k: int) -> None:
    """Rows `tied` have more entries equal to their k-th value than places left: keep every
    entry below it, then the equal ones lowest index first (in place on `mask`)."""
    sub, v = rows.index_select(0, tied), kth.index_select(0, tied)
    below, equal = sub < v, sub == v
    need = k - below.sum(1, keepdim=True)
    mask[tied] = below | (equal & (equal.cumsum(1) <= need))


_SELECTION_THREAD: tuple[int, ThreadPoolExecutor] | None = None


def lowest_mask_async(rows: torch.Tensor, k: int) -> Future:
    """`lowest_mask(rows, k)` on the selection thread (one per process: a forked child, which
    inherits the pool but not its thread, makes its own)."""
    global _SELECTION_THREAD
    if _SELECTION_THREAD is None or _SELECTION_THREAD[0] != os.getpid():
        _SELECTION_THREAD = (os.getpid(),
                             ThreadPoolExecutor(1, thread_name_prefix="prunestudio-select"))
    return _SELECTION_THREAD[1].submit(lowest_mask, rows, k)


@contextmanager
def core_for_selection() -> Iterator[None]:
    """Torch on one thread fewer while the selection thread works (restored after).

    Splitting the rows of one selection over threads measured no faster: after every torch op
    its OpenMP workers spin on the other cores for milliseconds. Giving the selection thread a
    core of its own, and pipelining it with the torch work of the next layer, does overlap."""
    threads = torch.get_num_threads()
    if threads > 1:
        torch.set_num_threads(threads - 1)
    try:
        yield
    finally:
        if threads > 1:
            torch.set_num_threads(threads)


def pipelined_selection(device: torch.device) -> bool:
    """Whether `lowest_mask_async` overlaps with torch work for fp32 scores on `device`: with
    the default selection, on CPU (numpy's selection)."""
    return current_selection() == "select" and device.type == "cpu"


_RANK_MAX_M = 16  # N:M groups up to this size: ranks by pairwise comparison


def lowest_in_small_groups(groups: torch.Tensor, n: int) -> torch.Tensor:
    """Boolean mask of the n lowest of each row of a (groups, m) tensor with m small (N:M),
    exactly the first n of a stable ascending sort: an entry's position in that sort is the
    number of entries below it plus the number of equal entries before it, counted by m·(m−1)
    comparisons of whole columns (no per-group sort)."""
    count, m = groups.shape
    if n <= 0 or n >= m:
        return lowest_mask(groups, n)
    if _on_numpy(groups):
        cols = np.ascontiguousarray(groups.detach().numpy().T)  # (m, groups): one row per place
        rank = np.zeros(cols.shape, dtype=np.uint8)
        hit = np.empty(cols.shape[1], dtype=bool)
        for i in range(m):
            for j in range(m):
                if j != i:
                    (np.less_equal if j < i else np.less)(cols[j], cols[i], out=hit)
                    rank[i] += hit
        mask = torch.from_numpy((rank < n).T)
    else:
        cols = groups.t().contiguous()
        rank = torch.zeros(cols.shape, dtype=torch.uint8, device=groups.device)
        for i in range(m):
            for j in range(m):
                if j != i:
                    rank[i] += (cols[j] <= cols[i]) if j < i else (cols[j] < cols[i])
        mask = (rank < n).t()
    if int(mask.sum()) != count * n:  # NaN scores (callers reject them first): the sort
        # decides, NaN last
        return _sorted_lowest(groups, n)
    return mask


def _mask_from_indices(score: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    mask = torch.zeros_like(score, dtype=torch.bool)
    mask.scatter_(1, idx, True)
    return mask


def mask_per_row(score: torch.Tensor, sparsity: float, ties: str = "index") -> torch.Tensor:
    """Prune the lowest `sparsity` fraction of each output row (Wanda's comparison group)."""
    k = n_to_prune(score.shape[1], sparsity)
    _check_ties(ties)
    if ties == "index" and current_selection() == "select":
        return lowest_mask(score, k)
    mask = torch.zeros_like(score, dtype=torch.bool)
    if k > 0:
        mask.scatter_(1, lowest(score, k, 1, ties), True)
    return mask


def mask_per_matrix(score: torch.Tensor, sparsity: float, ties: str = "index") -> torch.Tensor:
    """Prune the lowest `sparsity` fraction of the whole matrix (one threshold per matrix)."""
    k = n_to_prune(score.numel(), sparsity)
    _check_ties(ties)
    if ties == "index" and current_selection() == "select":
        return lowest_mask(score.reshape(1, -1), k).reshape(score.shape)
    mask = torch.zeros(score.numel(), dtype=torch.bool, device=score.device)
    if k > 0:
        mask[lowest(score.reshape(-1), k, 0, ties)] = True
    return mask.reshape(score.shape)


def mask_n_m(score: torch.Tensor, n: int, m: int, ties: str = "index") -> torch.Tensor:
    """N:M: in every group of M consecutive input columns of a row, prune the N lowest."""
    out_f, in_f = score.shape
    if in_f % m:
        raise ValueError(f"N:M pattern {n}:{m}: M={m} does not divide the input width {in_f}")
    _check_ties(ties)
    if ties == "index" and current_selection() == "select":
        groups = score.reshape(-1, m)
        if m <= _RANK_MAX_M:
            return lowest_in_small_groups(groups, n).reshape(out_f, in_f)
        return lowest_mask(groups, n).reshape(out_f, in_f)
    groups = score.reshape(out_f, in_f // m, m)
    mask = torch.zeros_like(groups, dtype=torch.bool)
    mask.scatter_(2, lowest(groups, n, 2, ties), True)
    return mask.reshape(out_f, in_f)


_SAME_WIDTH_INT = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


@torch.no_grad()
def apply_mask_(weight: torch.Tensor, mask: torch.Tensor) -> None:
    """Zero the pruned entries of `weight` in place: bit for bit ``masked_fill_(mask, 0)``.

    CPU ``masked_fill_`` is several times slower than a multiply; multiplying the float weights
    by the keep mask would turn pruned negative weights into -0.0, so the weights' bits (an
    integer view of the same storage) are multiplied instead: 0 for pruned entries (+0.0),
    unchanged bits for the rest."""
    data = weight.detach()
    if (current_selection() == "sort" or data.device.type != "cpu" or not data.is_contiguous()
            or not data.is_floating_point()):
        data.masked_fill_(mask, 0)
        return
    data.view(_SAME_WIDTH_INT[data.element_size()]).mul_(~mask)


def _numpy_view(weight: torch.Tensor) -> np.ndarray | None:
    """`weight` as a numpy array without a copy (CPU, a numpy float dtype), else None: numpy's
    comparison with a scalar runs ~3× faster than torch's (a pass over every prunable weight,
    once for the realised sparsity and once for the zero-pattern hash of each candidate)."""
    data = weight.detach()
    if data.device.type == "cpu" and data.dtype in (torch.float32, torch.float64, torch.float16):
        return data.numpy()
    return None


def zero_pattern(weight: torch.Tensor) -> np.ndarray:
    """Which entries of `weight` are zero (±0.0), as a numpy boolean array."""
    a = _numpy_view(weight)
    return a == 0 if a is not None else (weight.detach() == 0).cpu().numpy()


def realised_sparsity(weight: torch.Tensor) -> float:
    """The fraction of `weight`'s entries that are zero (counted where the weight lives)."""
    a = _numpy_view(weight)
    if a is not None:
        return int(np.count_nonzero(a == 0)) / weight.numel()
    # (== 0).sum(), not count_nonzero: the latter branches per element and is ~5× slower on
    # a freshly pruned weight (half zeros, in no predictable order)
    return float((weight.detach() == 0).sum()) / weight.numel()
