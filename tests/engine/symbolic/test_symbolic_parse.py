"""Text and JSON forms: round trips, canonical spelling, error messages with positions."""

from __future__ import annotations

import json

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prunestudio.engine.symbolic import (
    KNOWN_METRICS,
    ExpressionError,
    Node,
    depth,
    from_json,
    leaves_used,
    op,
    parse,
    size,
    to_json,
    to_text,
)
from symbolic_testlib import trees as any_trees


def trees(max_leaves: int = 16) -> st.SearchStrategy[Node]:
    return any_trees(max_leaves)


@settings(max_examples=300, deadline=None)
@given(trees())
def test_text_and_json_round_trip(tree):
    text = to_text(tree)
    assert " " not in text
    assert parse(text) == tree
    assert from_json(json.loads(json.dumps(to_json(tree)))) == tree


@pytest.mark.parametrize("name", sorted(KNOWN_METRICS))
def test_known_metrics_are_canonical_text(name):
    assert to_text(parse(KNOWN_METRICS[name])) == KNOWN_METRICS[name]


def test_whitespace_and_case_are_tolerated_and_normalised():
    assert to_text(parse("  Mul( w ,\tSQRT( x ) ) ")) == "mul(W,sqrt(X))"


def test_json_form_is_nested_lists():
    assert to_json(parse("mul(sqr(W),mms(G))")) == ["mul", ["sqr", "W"], ["mms", "G"]]
    assert to_json(parse("X")) == "X"


def test_measures():
    t = parse("add(mul(W,sqrt(X)),mul(W,G))")
    assert (depth(t), size(t)) == (4, 8)
    assert depth(parse("W")) == 1
    assert leaves_used(t) == {"W", "X", "G"}
    assert leaves_used(parse("sqr(W)")) == {"W"}


def test_nodes_are_well_formed_by_construction():
    with pytest.raises(ExpressionError, match="takes 2 argument"):
        op("mul", Node("W"))
    with pytest.raises(ExpressionError, match="unknown name 'foo'"):
        Node("foo")
    assert str(op("sqrt", Node("X"))) == "sqrt(X)"


@pytest.mark.parametrize(
    ("text", "position", "fragments"),
    [
        ("", 0, ["empty expression"]),
        ("   ", 0, ["empty expression"]),
        ("foo(W)", 0, ["unknown name 'foo'", "unary ops sqr", "binary ops add, sub, mul, div"]),
        ("mul(W,bar)", 6, ["unknown name 'bar'", "leaves W, G, X"]),
        ("mul(W)", 0, ["'mul' takes 2 argument(s), got 1"]),
        ("sqrt(W,X)", 0, ["'sqrt' takes 1 argument(s), got 2"]),
        ("mul()", 0, ["'mul' takes 2 argument(s), got 0"]),
        ("mul(W,X", 7, ["unbalanced parentheses", "missing ')'"]),
        ("sqrt(mul(W,X)", 13, ["missing ')' to close 'sqrt'"]),
        ("mul(W,X))", 8, ["unbalanced ')'"]),
        ("mul(W,X) W", 9, ["trailing text"]),
        ("W,X", 1, ["trailing text"]),
        ("mul(W,)", 6, ["expected a leaf or an op name, got ')'"]),
        ("mul(,W)", 4, ["expected a leaf or an op name, got ','"]),
        ("mul(W;X)", 5, ["expected ',' or ')'", "got ';'"]),
        ("W(X)", 1, ["leaf 'W' takes no arguments"]),
        ("sqrt", 4, ["'sqrt' needs 1 argument(s) in parentheses"]),
        ("__import__('os')", 0, ["unknown name '__import__'"]),
        ("1+2", 0, ["constant 1 is not one of the constants 0.1, 0.5, 2, 10"]),
    ],
)
def test_parse_errors_are_clear_and_positioned(text, position, fragments):
    with pytest.raises(ExpressionError) as info:
        parse(text)
    assert info.value.position == position
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, message
    if text.strip():
        assert f"at position {position}" in message
        assert "<here>" in message


def test_pathological_nesting_is_an_error_not_a_recursion_crash():
    text = "neg(" * 500 + "W" + ")" * 500
    with pytest.raises(ExpressionError, match="nested deeper"):
        parse(text)


def test_non_text_is_rejected():
    with pytest.raises(ExpressionError, match="must be text"):
        parse(["mul", "W", "X"])  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("obj", "fragment"),
    [
        ("Q", "at $: 'Q' is not a leaf"),
        ("mul", "ops are written as lists"),
        ([], "expected a leaf name or a list"),
        (["mul", "W"], "at $: 'mul' takes 2 argument(s), got 1"),
        (["mul", "W", ["sqrt", "Z"]], "at $[2][1]: 'Z' is not a leaf"),
        (["nope", "W"], "at $[0]: unknown op 'nope'"),
        ({"op": "W"}, "expected a leaf name or a list"),
    ],
)
def test_json_errors_name_the_path(obj, fragment):
    with pytest.raises(ExpressionError) as info:
        from_json(obj)
    assert fragment in str(info.value)


def test_parsing_and_variation_do_not_import_torch():
    """A UI or scheduler can validate, print and vary expressions without loading torch."""
    import subprocess
    import sys

    code = ("import sys; from prunestudio.engine.symbolic import parse, canonical_key, rank_key, "
            "random_tree, crossover, KNOWN_METRICS; parse('mul(W,sqrt(X))'); "
            "assert 'torch' not in sys.modules, 'torch was imported'")
    subprocess.run([sys.executable, "-c", code], check=True)
