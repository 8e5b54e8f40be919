"""The vocabulary of symbolic metrics: leaf and op names with their arities (no torch here).

Kept free of torch so that parsing, printing, simplifying and varying expressions — everything
but evaluation — is importable by light processes (a UI validating an expression, a search
scheduler). The definitions of the ops are in `ops.py`.
"""

from __future__ import annotations

LEAVES: tuple[str, ...] = ("W", "G", "X")
UNARY: tuple[str, ...] = (
    "sqr", "neg", "abs", "log", "exp", "sqrt", "tanh", "pow", "skip", "mms", "zsn", "norm1",
    "norm2",
)
BINARY: tuple[str, ...] = ("add", "sub", "mul", "div")
COMMUTATIVE: frozenset[str] = frozenset({"add", "mul"})

ARITY: dict[str, int] = {**{n: 0 for n in LEAVES}, **{n: 1 for n in UNARY},
                         **{n: 2 for n in BINARY}}


def arity(name: str) -> int:
    """0 for a leaf, 1 or 2 for an op; KeyError for an unknown name."""
    return ARITY[name]


def is_op(name: str) -> bool:
    return name in ARITY and ARITY[name] > 0


def allowed_names() -> str:
    """The vocabulary, for error messages."""
    return (
        f"leaves {', '.join(LEAVES)}; unary ops {', '.join(UNARY)}; "
        f"binary ops {', '.join(BINARY)}"
    )
