"""Expression trees of symbolic pruning metrics: the immutable node type and its two text forms.

A tree is a `Node`: an op name (or a leaf name W / G / X) and a tuple of children whose length is
the op's arity. Nodes are frozen and compare structurally, so trees can be dict keys and set
members, and a `Node` that exists is well-formed (checked on construction).

Canonical text: ``op(child,child)`` with no spaces, e.g. ``mul(sqr(W),mms(G))``.
JSON form: a leaf is its name, an op is a list ``[op, child, ...]``, e.g.
``["mul", ["sqr", "W"], ["mms", "G"]]``.

Depth counts levels: a leaf has depth 1, ``mul(W,sqrt(X))`` depth 3.
Paths address subtrees: a tuple of child indices from the root (``()`` is the root).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

from prunestudio.engine.symbolic.grammar import (
    ALL_LEAVES,
    ARITY,
    allowed_names,
    arity,
    is_constant,
    is_op,
)

Path = tuple[int, ...]


class ExpressionError(ValueError):
    """A malformed expression (text or JSON); `position` is the character offset when known."""

    def __init__(self, message: str, position: int | None = None):
        super().__init__(message)
        self.position = position


@dataclass(frozen=True)
class Node:
    op: str
    children: tuple[Node, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.children, tuple):
            object.__setattr__(self, "children", tuple(self.children))
        try:
            expected = arity(self.op)
        except KeyError:
            raise ExpressionError(f"unknown name {self.op!r}; allowed: {allowed_names()}") from None
        if len(self.children) != expected:
            raise ExpressionError(
                f"{self.op!r} takes {expected} argument(s), got {len(self.children)}"
            )
        if not all(isinstance(c, Node) for c in self.children):
            raise ExpressionError(f"children of {self.op!r} must be Node objects")

    @property
    def is_leaf(self) -> bool:
        return not self.children

    def __str__(self) -> str:
        return to_text(self)

    def __repr__(self) -> str:
        return f"Node({to_text(self)!r})"


def leaf(name: str) -> Node:
    return Node(name)


def op(name: str, *children: Node) -> Node:
    return Node(name, tuple(children))


# ---------------------------------------------------------------- measures


def depth(tree: Node) -> int:
    """Number of levels on the longest root-to-leaf path (a leaf is 1)."""
    return 1 + max((depth(c) for c in tree.children), default=0)


def size(tree: Node) -> int:
    """Number of nodes."""
    return 1 + sum(size(c) for c in tree.children)


def leaves_used(tree: Node) -> frozenset[str]:
    """Which inputs (W, G, X, D) the expression reads; constants are not inputs."""
    if tree.is_leaf:
        return frozenset() if is_constant(tree.op) else frozenset({tree.op})
    return frozenset().union(*(leaves_used(c) for c in tree.children))


# ---------------------------------------------------------------- addressing


def walk(tree: Node, path: Path = ()) -> Iterator[tuple[Path, Node]]:
    """Every (path, subtree), root first (pre-order)."""
    yield path, tree
    for i, child in enumerate(tree.children):
        yield from walk(child, (*path, i))


def subtree(tree: Node, path: Path) -> Node:
    for i in path:
        tree = tree.children[i]
    return tree


def replace(tree: Node, path: Path, new: Node) -> Node:
    """A copy of `tree` with the subtree at `path` replaced by `new`."""
    if not path:
        return new
    i, rest = path[0], path[1:]
    children = list(tree.children)
    children[i] = replace(children[i], rest, new)
    return Node(tree.op, tuple(children))


# ---------------------------------------------------------------- text and JSON forms


def to_text(tree: Node) -> str:
    """Canonical text, e.g. ``mul(sqr(W),mms(G))``."""
    if tree.is_leaf:
        return tree.op
    return f"{tree.op}({','.join(to_text(c) for c in tree.children)})"


JsonTree = str | list
MAX_JSON_NESTING = 128


def to_json(tree: Node) -> JsonTree:
    """Nested-list form: ``"W"`` or ``["mul", "W", ["sqrt", "X"]]``."""
    if tree.is_leaf:
        return tree.op
    return [tree.op, *(to_json(c) for c in tree.children)]


def from_json(obj: object, where: str = "$") -> Node:
    """Inverse of `to_json`; errors name the JSON path of the bad element (``$[2][1]``)."""
    if where.count("[") > MAX_JSON_NESTING:
        raise ExpressionError(f"at {where}: expression nested deeper than {MAX_JSON_NESTING} levels")
    if isinstance(obj, str):
        if obj not in ALL_LEAVES:
            hint = " (ops are written as lists: [op, child, ...])" if is_op(obj) else ""
            raise ExpressionError(f"at {where}: {obj!r} is not a leaf{hint}; allowed: {allowed_names()}")
        return Node(obj)
    if not isinstance(obj, list) or not obj or not isinstance(obj[0], str):
        raise ExpressionError(
            f"at {where}: expected a leaf name or a list [op, child, ...], got {obj!r}"
        )
    name, args = obj[0], obj[1:]
    if not is_op(name):
        raise ExpressionError(f"at {where}[0]: unknown op {name!r}; allowed: {allowed_names()}")
    if len(args) != ARITY[name]:
        raise ExpressionError(
            f"at {where}: {name!r} takes {ARITY[name]} argument(s), got {len(args)}"
        )
    return Node(name, tuple(from_json(a, f"{where}[{i + 1}]") for i, a in enumerate(args)))
