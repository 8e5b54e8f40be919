"""Hypothesis strategies shared by the symbolic-metric tests."""

from __future__ import annotations

from collections.abc import Callable

from hypothesis import strategies as st
from prunestudio.engine.symbolic import BINARY, LEAVES, UNARY, Node


def trees(max_leaves: int = 10,
          extra: Callable[[st.SearchStrategy[Node]], st.SearchStrategy[Node]] | None = None
          ) -> st.SearchStrategy[Node]:
    """Random expression trees over W, G, X with every unary and binary op; `extra(kids)`
    adds more ways to grow a node (e.g. simplification patterns)."""

    def extend(kids):
        unary = st.tuples(st.sampled_from(list(UNARY)), kids).map(lambda t: Node(t[0], (t[1],)))
        binary = st.tuples(st.sampled_from(list(BINARY)), kids, kids).map(
            lambda t: Node(t[0], (t[1], t[2]))
        )
        more = [extra(kids)] if extra is not None else []
        return st.one_of(unary, binary, *more)

    return st.recursive(st.sampled_from(LEAVES).map(Node), extend, max_leaves=max_leaves)
