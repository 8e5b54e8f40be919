"""Random generation, crossover and mutation: well-formed trees within the depth limit."""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from prunestudio.engine.symbolic import (
    BINARY,
    DEFAULT_MAX_DEPTH,
    UNARY,
    Node,
    crossover,
    depth,
    from_json,
    leaves_used,
    parse,
    point_mutation,
    ramped_half_and_half,
    random_tree,
    subtree_mutation,
    to_json,
    to_text,
    walk,
)

seeds = st.integers(min_value=0, max_value=2**32 - 1)


def _well_formed(tree: Node, max_depth: int) -> None:
    assert parse(to_text(tree)) == tree
    assert from_json(to_json(tree)) == tree
    assert depth(tree) <= max_depth


def _shape(tree: Node) -> tuple:
    """The tree with every name replaced by its arity class."""
    kind = "u" if tree.op in UNARY else "b" if tree.op in BINARY else "l"
    return (kind, tuple(_shape(c) for c in tree.children))


@settings(max_examples=200, deadline=None)
@given(seed=seeds, method=st.sampled_from(["grow", "full"]))
def test_random_trees_lie_in_the_initial_depth_range(seed, method):
    tree = random_tree(random.Random(seed), 3, 5, method)
    assert 3 <= depth(tree) <= 5
    _well_formed(tree, 5)
    if method == "full":
        leaf_levels = {len(path) for path, node in walk(tree) if node.is_leaf}
        assert len(leaf_levels) == 1


def test_generation_is_reproducible_from_the_seed():
    a = ramped_half_and_half(random.Random(7), 50)
    b = ramped_half_and_half(random.Random(7), 50)
    assert a == b
    assert ramped_half_and_half(random.Random(8), 50) != a
    assert all(3 <= depth(t) <= 5 for t in a)
    assert len({to_text(t) for t in a}) > 40  # diverse
    assert {depth(t) for t in a} == {3, 4, 5}


def test_leaf_subset_is_respected():
    rng = random.Random(0)
    for _ in range(50):
        assert leaves_used(random_tree(rng, leaves=("W", "X"))) <= {"W", "X"}
    with pytest.raises(ValueError, match="subset"):
        random_tree(rng, leaves=("W", "Q"))
    with pytest.raises(ValueError, match="min_depth"):
        random_tree(rng, 4, 3)


@settings(max_examples=300, deadline=None)
@given(seed=seeds, max_depth=st.integers(min_value=3, max_value=DEFAULT_MAX_DEPTH))
def test_crossover_keeps_trees_well_formed_and_within_the_limit(seed, max_depth):
    rng = random.Random(seed)
    a = random_tree(rng, 1, max_depth, rng.choice(["grow", "full"]))
    b = random_tree(rng, 1, max_depth, rng.choice(["grow", "full"]))
    for _ in range(5):
        a, b = crossover(a, b, rng, max_depth=max_depth)
        _well_formed(a, max_depth)
        _well_formed(b, max_depth)


@settings(max_examples=300, deadline=None)
@given(seed=seeds, rate=st.one_of(st.none(), st.floats(min_value=0, max_value=1)))
def test_point_mutation_keeps_the_shape_and_changes_something(seed, rate):
    rng = random.Random(seed)
    tree = random_tree(rng, 3, 5)
    child = point_mutation(tree, rng, rate=rate)
    _well_formed(child, depth(tree))
    assert _shape(child) == _shape(tree)  # same arity at every node: unary→unary, …
    assert child != tree
    if rate is None:
        assert sum(x.op != y.op for (_, x), (_, y) in zip(walk(tree), walk(child), strict=True)) == 1


@settings(max_examples=300, deadline=None)
@given(seed=seeds, max_depth=st.integers(min_value=3, max_value=DEFAULT_MAX_DEPTH))
def test_subtree_mutation_stays_within_the_limit(seed, max_depth):
    rng = random.Random(seed)
    tree = random_tree(rng, 1, max_depth)
    for _ in range(5):
        tree = subtree_mutation(tree, rng, max_depth=max_depth)
        _well_formed(tree, max_depth)


def test_crossover_usually_produces_new_trees():
    rng = random.Random(0)
    pop = ramped_half_and_half(rng, 40)
    changed = 0
    for i in range(0, 40, 2):
        c, d = crossover(pop[i], pop[i + 1], rng)
        changed += (c, d) != (pop[i], pop[i + 1])
    assert changed >= 18


def test_crossover_at_the_depth_limit_never_exceeds_it():
    rng = random.Random(1)
    full = [random_tree(rng, 6, 6, "full") for _ in range(20)]
    for i in range(200):
        c, d = crossover(full[i % 20], full[(i * 7 + 3) % 20], rng, max_depth=6)
        assert depth(c) <= 6 and depth(d) <= 6


def test_parents_deeper_than_the_limit_are_rejected():
    deep = random_tree(random.Random(0), 6, 6, "full")
    with pytest.raises(ValueError, match="max_depth"):
        crossover(deep, deep, random.Random(0), max_depth=5)
    with pytest.raises(ValueError, match="max_depth"):
        subtree_mutation(deep, random.Random(0), max_depth=5)
