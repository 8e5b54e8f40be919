"""Parse the text form of an expression, ``mul(sqr(W),mms(G))``, into a `Node`.

A hand-written recursive-descent parser (never ``eval``). Whitespace between tokens is ignored
and names are case-insensitive (``Mul(w, Sqrt(x))`` parses); `to_text` gives the canonical
spelling back. Every error is an `ExpressionError` whose message gives the character position
and shows the text with a ``<here>`` marker at that position.
"""

from __future__ import annotations

import re
from functools import lru_cache

from prunestudio.engine.symbolic.grammar import (
    ALL_LEAVES,
    ARITY,
    CONSTANTS,
    allowed_names,
    is_op,
)
from prunestudio.engine.symbolic.tree import ExpressionError, Node

MAX_NESTING = 64  # deeper text is rejected before Python's recursion limit is near
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_NUMBER = re.compile(r"\d+(?:\.\d*)?|\.\d+")


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.pos = 0

    def fail(self, message: str, pos: int | None = None) -> ExpressionError:
        pos = self.pos if pos is None else pos
        shown = f"{self.text[:pos]}<here>{self.text[pos:]}"
        return ExpressionError(f"at position {pos} in {shown!r}: {message}", pos)

    def skip_space(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos].isspace():
            self.pos += 1

    def peek(self) -> str:
        self.skip_space()
        return self.text[self.pos] if self.pos < len(self.text) else ""

    def describe_next(self) -> str:
        c = self.peek()
        return "end of text" if not c else repr(c)

    def expect(self, char: str, context: str) -> None:
        if self.peek() != char:
            raise self.fail(f"expected {char!r} {context}, got {self.describe_next()}")
        self.pos += 1

    def node(self, nesting: int) -> Node:
        if nesting > MAX_NESTING:
            raise self.fail(f"expression nested deeper than {MAX_NESTING} levels")
        self.skip_space()
        start = self.pos
        number = _NUMBER.match(self.text, self.pos)
        if number is not None:
            self.pos = number.end()
            value = float(number.group(0))
            name = next((c for c in CONSTANTS if float(c) == value), None)
            if name is None:
                raise self.fail(f"constant {number.group(0)} is not one of the constants "
                                f"{', '.join(CONSTANTS)}", start)
            return Node(name)
        m = _NAME.match(self.text, self.pos)
        if m is None:
            raise self.fail(
                f"expected a leaf or an op name, got {self.describe_next()}; allowed: {allowed_names()}"
            )
        word = m.group(0)
        self.pos = m.end()
        if word.upper() in ALL_LEAVES:
            if self.peek() == "(":
                raise self.fail(f"leaf {word.upper()!r} takes no arguments", self.pos)
            return Node(word.upper())
        name = word.lower()
        if not is_op(name):
            raise self.fail(f"unknown name {word!r}; allowed: {allowed_names()}", start)
        expected = ARITY[name]
        if self.peek() != "(":
            raise self.fail(f"op {name!r} needs {expected} argument(s) in parentheses: {name}(...)")
        self.pos += 1
        args: list[Node] = []
        while True:
            if self.peek() == ")" and not args:
                break
            args.append(self.node(nesting + 1))
            if self.peek() == ",":
                self.pos += 1
                continue
            break
        if not self.peek():
            raise self.fail(f"unbalanced parentheses: missing ')' to close {name!r} at position {start}")
        if self.peek() != ")":
            raise self.fail(
                f"expected ',' or ')' in the arguments of {name!r} (at position {start}), "
                f"got {self.describe_next()}"
            )
        if len(args) != expected:
            raise self.fail(
                f"op {name!r} takes {expected} argument(s), got {len(args)}", start
            )
        self.pos += 1
        return Node(name, tuple(args))


def parse(text: str) -> Node:
    """Parse expression text; `ExpressionError` (a ValueError) on malformed input.

    Results are cached (trees are immutable), so re-parsing a spec's expression per layer is free.
    """
    if not isinstance(text, str):
        raise ExpressionError(f"an expression must be text, got {type(text).__name__}")
    return _parse(text)


@lru_cache(maxsize=4096)
def _parse(text: str) -> Node:
    p = _Parser(text)
    if not p.peek():
        raise ExpressionError("empty expression: write e.g. mul(W,sqrt(X))", 0)
    tree = p.node(0)
    if p.peek():
        extra = "unbalanced ')'" if p.peek() == ")" else "unexpected trailing text"
        raise p.fail(f"{extra} after a complete expression")
    return tree
