"""The primitive set of symbolic pruning metrics (Pruner-Zero): leaves, unary and binary ops.

Every op is a vectorised fp32 torch function, safe on any finite input: no domain errors (log of
0, sqrt of a negative, division by 0). Overflow to ±inf is still possible for extreme
compositions (e.g. ``sqr(sqr(exp(X)))``): the pruning method then rejects the score with
``NonFiniteScoreError`` — a candidate error, never a silent mask.

Leaves (all non-negative by construction):

====  =====================================================================  =========
name  value                                                                   shape
====  =====================================================================  =========
W     |weight|                                                                out × in
G     gradient l2 aggregate sqrt(Σ_s (100·∂L_s/∂W)²)                          out × in
X     input column squared-norm sums (Wanda's scaler_row)                     1 × in
D     diag of the upper Cholesky factor of the damped H⁻¹ (SparseGPT's d;     1 × in
      beyond the paper, opt-in)
====  =====================================================================  =========

Constants 0.1, 0.5, 2 and 10 (beyond the paper, opt-in) are 0-d tensors, broadcast by the ops.

Unary ops (ε = ``EPS`` = 1e-8, C = ``EXP_CLAMP`` = 50):

=====  ==================================  ==========================================
op     definition                          note
=====  ==================================  ==========================================
sqr    x·x
neg    −x
abs    |x|
log    ln(|x| + ε)                          finite at 0 (= ln ε ≈ −18.4)
exp    e^clamp(x, −C, C)                    at most e^50 ≈ 5.2e21
sqrt   √|x|
tanh   tanh(x)
pow    x·x·x                                cube: odd, sign-preserving, strictly
                                            increasing (the reference code's pow is x²,
                                            a duplicate of sqr; a distinct op is more use)
skip   x                                    identity
mms    (x − min x) / (max x − min x + ε)    min–max scaling over the whole operand
zsn    (x − mean x) / (std x + ε)           z-score over the whole operand, population
                                            std (correction 0: finite for one element)
norm1  x / (Σ|x| + ε)                       divide by the operand's l1 norm
norm2  x / (‖x‖₂ + ε)                       divide by the operand's l2 norm
=====  ==================================  ==========================================

Binary ops (operands broadcast: X is a 1 × in row):

=====  ==================================  ==========================================
op     definition                          note
=====  ==================================  ==========================================
add    a + b
sub    a − b
mul    a · b
div    a / (b + ε) if b ≥ 0 else a / (b − ε)  sign-preserving guard: |denominator| ≥ ε
                                            (the reference code divides by ‖b‖₂)
=====  ==================================  ==========================================

"Whole operand" means the tensor the op receives: a subtree over X alone stays a 1 × in row
(it is only broadcast when combined with W or G), so ``mms(X)`` scales over the ``in`` columns.
zsn, norm1 and norm2 rescale by the operand's largest magnitude before reducing, which is the
same value mathematically but keeps the sums of squares from overflowing for large inputs; their
sums (`total`) are the same bit for bit on any number of threads.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from prunestudio.engine.symbolic import grammar

EPS = 1e-8
EXP_CLAMP = 50.0


@dataclass(frozen=True)
class Op:
    name: str
    arity: int
    fn: Callable[..., torch.Tensor]
    summary: str


def _max_abs(x: torch.Tensor) -> torch.Tensor:
    """Largest magnitude of x, or 1 when x is all zeros (a safe rescaling factor)."""
    m = x.abs().amax()
    return torch.where(m > 0, m, torch.ones_like(m))


def _sqr(x: torch.Tensor) -> torch.Tensor:
    return x * x


def _neg(x: torch.Tensor) -> torch.Tensor:
    return -x


def _abs(x: torch.Tensor) -> torch.Tensor:
    return x.abs()


def _log(x: torch.Tensor) -> torch.Tensor:
    return torch.log(x.abs() + EPS)


def _exp(x: torch.Tensor) -> torch.Tensor:
    return torch.exp(x.clamp(-EXP_CLAMP, EXP_CLAMP))


def _sqrt(x: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(x.abs())


def _tanh(x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x)


def _pow(x: torch.Tensor) -> torch.Tensor:
    return x * x * x


def _skip(x: torch.Tensor) -> torch.Tensor:
    return x


def _mms(x: torch.Tensor) -> torch.Tensor:
    lo, hi = x.amin(), x.amax()
    return (x - lo) / (hi - lo + EPS)


_CHUNK = 4096  # summed by one thread: below torch's parallel grain (32768 elements)


def total(x: torch.Tensor) -> torch.Tensor:
    """Σx, bit for bit the same whatever torch's thread count (a plain ``x.sum()`` over a large
    tensor adds per-thread partial sums, so its last bits depend on the threads: a metric with
    zsn / norm1 / norm2 could prune differently on a 1-thread worker than on a 2-thread
    driver). Chunks of `_CHUNK` are summed one per output (torch splits a reduction with
    several outputs by output, never inside one), then the chunk sums the same way."""
    v = x.reshape(-1)
    while v.numel() > _CHUNK:
        pad = -v.numel() % _CHUNK
        if pad:  # +0.0 changes no sum
            v = torch.cat([v, v.new_zeros(pad)])
        v = v.view(-1, _CHUNK).sum(dim=1)
    return v.sum()


def _zsn(x: torch.Tensor) -> torch.Tensor:
    m = _max_abs(x)
    scaled = x / m
    n = scaled.numel()
    mean_scaled = total(scaled) / n
    deviation = scaled - mean_scaled
    std = torch.sqrt(total(deviation * deviation) / n) * m  # population std (correction 0)
    return (x - mean_scaled * m) / (std + EPS)


def _norm1(x: torch.Tensor) -> torch.Tensor:
    m = _max_abs(x)
    return x / (total((x / m).abs()) * m + EPS)


def _norm2(x: torch.Tensor) -> torch.Tensor:
    m = _max_abs(x)
    scaled = x / m
    return x / (torch.sqrt(total(scaled * scaled)) * m + EPS)


def _add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a + b


def _sub(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a - b


def _mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a * b


def _div(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    return a / torch.where(b >= 0, b + EPS, b - EPS)


OPS: dict[str, Op] = {
    op.name: op
    for op in (
        Op("sqr", 1, _sqr, "x·x"),
        Op("neg", 1, _neg, "−x"),
        Op("abs", 1, _abs, "|x|"),
        Op("log", 1, _log, "ln(|x| + ε)"),
        Op("exp", 1, _exp, "exp(clamp(x, −50, 50))"),
        Op("sqrt", 1, _sqrt, "√|x|"),
        Op("tanh", 1, _tanh, "tanh(x)"),
        Op("pow", 1, _pow, "x³"),
        Op("skip", 1, _skip, "x"),
        Op("mms", 1, _mms, "(x − min)/(max − min + ε)"),
        Op("zsn", 1, _zsn, "(x − mean)/(std + ε)"),
        Op("norm1", 1, _norm1, "x/(‖x‖₁ + ε)"),
        Op("norm2", 1, _norm2, "x/(‖x‖₂ + ε)"),
        Op("add", 2, _add, "a + b"),
        Op("sub", 2, _sub, "a − b"),
        Op("mul", 2, _mul, "a · b"),
        Op("div", 2, _div, "a/(b ± ε), sign-preserving guard"),
    )
}
assert {n: o.arity for n, o in OPS.items()} == {
    n: a for n, a in grammar.ARITY.items() if a > 0
}, "ops.py and grammar.py disagree"
