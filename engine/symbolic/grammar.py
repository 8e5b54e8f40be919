"""The vocabulary of symbolic metrics: leaf and op names with their arities (no torch here).

Kept free of torch so that parsing, printing, simplifying and varying expressions — everything
but evaluation — is importable by light processes (a UI validating an expression, a search
scheduler). The definitions of the ops are in `ops.py`.
"""

from __future__ import annotations

# the paper's leaves (the default search space): |W|, the gradient aggregate G, Wanda's X
LEAVES: tuple[str, ...] = ("W", "G", "X")
# beyond the paper, opt-in per search ([search] leaves): D, the diagonal of the upper Cholesky
# factor of the damped inverse Hessian — what SparseGPT's mask score w² / d² divides by
EXTRA_LEAVES: tuple[str, ...] = ("D",)
# constants, opt-in per search ([search] constants): terminals that weight one term against
# another (add(mul(W,sqrt(X)),mul(0.1,mul(W,G)))); a fixed set, so the space stays finite
CONSTANTS: tuple[str, ...] = ("0.1", "0.5", "2", "10")
ALL_LEAVES: tuple[str, ...] = LEAVES + EXTRA_LEAVES + CONSTANTS


def is_constant(name: str) -> bool:
    return name in CONSTANTS
UNARY: tuple[str, ...] = (
    "sqr", "neg", "abs", "log", "exp", "sqrt", "tanh", "pow", "skip", "mms", "zsn", "norm1",
    "norm2",
)
BINARY: tuple[str, ...] = ("add", "sub", "mul", "div")
COMMUTATIVE: frozenset[str] = frozenset({"add", "mul"})

ARITY: dict[str, int] = {**{n: 0 for n in ALL_LEAVES}, **{n: 1 for n in UNARY},
                         **{n: 2 for n in BINARY}}


def arity(name: str) -> int:
    """0 for a leaf, 1 or 2 for an op; KeyError for an unknown name."""
    return ARITY[name]


def is_op(name: str) -> bool:
    return name in ARITY and ARITY[name] > 0


def allowed_names() -> str:
    """The vocabulary, for error messages."""
    return (
        f"leaves {', '.join(LEAVES + EXTRA_LEAVES)}; constants {', '.join(CONSTANTS)}; unary ops {', '.join(UNARY)}; "
        f"binary ops {', '.join(BINARY)}"
    )
