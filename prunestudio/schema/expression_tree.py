"""Parse and pretty-print the canonical text of a symbolic metric, e.g. ``mul(sqr(W),mms(G))``.

Display only, for the TUI and the web app: a reader never evaluates an expression (that is the
engine's interpreter, ``prunestudio.engine.symbolic``), so this parser just builds a tree of
names and numbers and prints it with box-drawing branches::

    mul
    ├── sqr
    │   └── W
    └── mms
        └── G
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

__all__ = ["Node", "ExpressionSyntaxError", "parse_expression", "render_tree", "tree_lines"]

_TOKEN = re.compile(r"\s*(?:([A-Za-z_][A-Za-z0-9_.]*|[-+]?\d+(?:\.\d*)?(?:[eE][-+]?\d+)?)|(.))")


class ExpressionSyntaxError(ValueError):
    """The text is not of the form ``op(arg, ...)`` with names or numbers as leaves."""


@dataclass
class Node:
    name: str
    children: list[Node] = field(default_factory=list)

    def __str__(self) -> str:
        if not self.children:
            return self.name
        return f"{self.name}({','.join(str(c) for c in self.children)})"

    @property
    def depth(self) -> int:
        return 1 + max((c.depth for c in self.children), default=0)

    @property
    def size(self) -> int:
        return 1 + sum(c.size for c in self.children)


def _tokens(text: str) -> list[str]:
    out: list[str] = []
    pos = 0
    text = text.rstrip()
    while pos < len(text):
        m = _TOKEN.match(text, pos)
        if m is None:  # pragma: no cover - the pattern matches any character
            raise ExpressionSyntaxError(f"cannot read {text[pos:]!r}")
        word, punct = m.groups()
        if punct is not None and punct not in "(),":
            raise ExpressionSyntaxError(f"unexpected {punct!r} at position {m.start(2)}")
        out.append(word if word is not None else punct)
        pos = m.end()
    return out


def parse_expression(text: str) -> Node:
    """The tree of ``text``; raises :class:`ExpressionSyntaxError` when it is malformed."""
    tokens = _tokens(text)
    if not tokens:
        raise ExpressionSyntaxError("empty expression")
    pos = 0

    def node() -> Node:
        nonlocal pos
        if pos >= len(tokens) or tokens[pos] in "(),":
            got = tokens[pos] if pos < len(tokens) else "end of text"
            raise ExpressionSyntaxError(f"expected a name, got {got!r}")
        out = Node(tokens[pos])
        pos += 1
        if pos < len(tokens) and tokens[pos] == "(":
            pos += 1
            while True:
                out.children.append(node())
                if pos >= len(tokens):
                    raise ExpressionSyntaxError(f"missing ')' after {out.name}(")
                if tokens[pos] == ")":
                    pos += 1
                    break
                if tokens[pos] != ",":
                    raise ExpressionSyntaxError(f"expected ',' or ')', got {tokens[pos]!r}")
                pos += 1
        return out

    root = node()
    if pos != len(tokens):
        raise ExpressionSyntaxError(f"unexpected {tokens[pos]!r} after a complete expression")
    return root


def tree_lines(root: Node) -> list[str]:
    """Lines of the box-drawing rendering of ``root``."""
    lines = [root.name]

    def walk(node: Node, prefix: str) -> None:
        for i, child in enumerate(node.children):
            last = i == len(node.children) - 1
            lines.append(f"{prefix}{'└── ' if last else '├── '}{child.name}")
            walk(child, prefix + ("    " if last else "│   "))

    walk(root, "")
    return lines


def render_tree(text: str) -> str:
    """The pretty-printed tree of ``text``, or the text itself with the reason when it does
    not parse (never raises)."""
    try:
        return "\n".join(tree_lines(parse_expression(text)))
    except ExpressionSyntaxError as exc:
        return f"{text}\n(not shown as a tree: {exc})"
