"""Display trees of symbolic metrics (the TUI and the web app draw them; never evaluated)."""

from __future__ import annotations

import pytest

from prunestudio.schema.expression_tree import ExpressionSyntaxError, parse_expression, render_tree


def test_expression_tree_pretty_print() -> None:
    assert render_tree("mul(sqr(W),mms(G))") == "\n".join([
        "mul",
        "├── sqr",
        "│   └── W",
        "└── mms",
        "    └── G",
    ])
    tree = parse_expression(" add( mul(abs(W), sqrt(X)) , 0.5 )")
    assert str(tree) == "add(mul(abs(W),sqrt(X)),0.5)"
    assert (tree.depth, tree.size) == (4, 7)


@pytest.mark.parametrize("text", ["", "mul(W", "mul(W,)", "mul W", "mul(W))", "a+b", "(W)"])
def test_expression_tree_rejects_malformed(text: str) -> None:
    with pytest.raises(ExpressionSyntaxError):
        parse_expression(text)
    assert "not shown as a tree" in render_tree(text)
