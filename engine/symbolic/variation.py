"""Genetic variation of expression trees: random generation, subtree crossover, mutation.

All randomness comes from the caller's `random.Random`, so a seeded search is reproducible.
Every operator returns trees no deeper than `max_depth` (depth counts levels, a leaf is 1); it
raises `ValueError` when handed a parent that is already deeper.

Choices (Pruner-Zero gives the search settings, not these details):

- Generation (`random_tree`): ``full`` draws d uniformly in [min_depth, max_depth] and puts
  every leaf at level d; ``grow`` forces ops above level min_depth, leaves at level max_depth,
  and in between picks a leaf with probability `p_leaf` = 0.3. An op is binary with probability
  `p_binary` = 0.5, then uniform within its arity (uniform over all 17 ops would make 13/17 of
  nodes unary chains); leaves are uniform over `leaves`. `ramped_half_and_half` alternates grow
  and full over depths 3–5, the initial population of the paper.
- Crossover (`crossover`): one point in each parent, an internal node with probability 0.9
  (Koza's bias, leaves otherwise); the two subtrees are swapped. Points whose offspring would
  exceed `max_depth` are redrawn (up to `tries` times); if none fit, the parents come back
  unchanged.
- Mutation (`point_mutation`): a node's op is replaced by a different one of the same arity
  (leaf → leaf, unary → unary, binary → binary), so the shape and depth never change. By
  default exactly one node, uniformly chosen (DEAP's mutNodeReplacement); with `rate`, each
  node independently with that probability (at least one). The paper's "probability 0.5" is the
  chance that the search mutates an offspring at all — the search loop's setting.
- `subtree_mutation` (optional, for diversity): a random subtree is replaced by a fresh grow
  tree of depth 1–3 that fits under `max_depth`.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from typing import Literal

from prunestudio.engine.symbolic.grammar import ALL_LEAVES, BINARY, LEAVES, UNARY
from prunestudio.engine.symbolic.tree import Node, Path, depth, replace, walk

DEFAULT_MAX_DEPTH = 8
INIT_DEPTH = (3, 5)


def _check_leaves(leaves: Sequence[str]) -> tuple[str, ...]:
    bad = [x for x in leaves if x not in ALL_LEAVES]
    if not leaves or bad:
        raise ValueError(f"leaves must be a non-empty subset of {ALL_LEAVES}, got "
                         f"{list(leaves)}")
    return tuple(leaves)


def _check_depth(tree: Node, max_depth: int, role: str) -> None:
    if depth(tree) > max_depth:
        raise ValueError(f"{role} {tree} has depth {depth(tree)} > max_depth {max_depth}")


def random_tree(rng: random.Random, min_depth: int = INIT_DEPTH[0],
                max_depth: int = INIT_DEPTH[1], method: Literal["grow", "full"] = "grow", *,
                leaves: Sequence[str] = LEAVES, p_leaf: float = 0.3,
                p_binary: float = 0.5) -> Node:
    """A random tree whose depth lies in [min_depth, max_depth]."""
    if not 1 <= min_depth <= max_depth:
        raise ValueError(f"need 1 ≤ min_depth ≤ max_depth, got {min_depth}, {max_depth}")
    if method not in ("grow", "full"):
        raise ValueError(f"method must be 'grow' or 'full', got {method!r}")
    leaf_names = _check_leaves(leaves)
    target = rng.randint(min_depth, max_depth) if method == "full" else max_depth

    def build(level: int) -> Node:
        if level == target:
            return Node(rng.choice(leaf_names))
        if method == "grow" and level >= min_depth and rng.random() < p_leaf:
            return Node(rng.choice(leaf_names))
        if rng.random() < p_binary:
            return Node(rng.choice(BINARY), (build(level + 1), build(level + 1)))
        return Node(rng.choice(UNARY), (build(level + 1),))

    return build(1)


def ramped_half_and_half(rng: random.Random, n: int, min_depth: int = INIT_DEPTH[0],
                         max_depth: int = INIT_DEPTH[1], *,
                         leaves: Sequence[str] = LEAVES) -> list[Node]:
    """`n` trees: depth limits d cycling over [min_depth, max_depth], each d alternating
    ``full`` (depth exactly d) and ``grow`` (depth in [min_depth, d])."""
    depths = range(min_depth, max_depth + 1)
    out = []
    for i in range(n):
        d = depths[(i // 2) % len(depths)]
        if i % 2:
            out.append(random_tree(rng, d, d, "full", leaves=leaves))
        else:
            out.append(random_tree(rng, min_depth, d, "grow", leaves=leaves))
    return out


def _pick_point(tree: Node, rng: random.Random, p_internal: float) -> tuple[Path, Node]:
    points = list(walk(tree))
    internal = [p for p in points if not p[1].is_leaf]
    if internal and rng.random() < p_internal:
        return rng.choice(internal)
    return rng.choice([p for p in points if p[1].is_leaf])


def crossover(a: Node, b: Node, rng: random.Random, *, max_depth: int = DEFAULT_MAX_DEPTH,
              p_internal: float = 0.9, tries: int = 32) -> tuple[Node, Node]:
    """Swap a random subtree of `a` with one of `b`; both offspring fit within `max_depth`."""
    _check_depth(a, max_depth, "parent")
    _check_depth(b, max_depth, "parent")
    for _ in range(tries):
        pa, sa = _pick_point(a, rng, p_internal)
        pb, sb = _pick_point(b, rng, p_internal)
        if len(pa) + depth(sb) <= max_depth and len(pb) + depth(sa) <= max_depth:
            return replace(a, pa, sb), replace(b, pb, sa)
    return a, b


def _other_name(name: str, rng: random.Random, leaf_names: tuple[str, ...]) -> str:
    pool = leaf_names if name in ALL_LEAVES else UNARY if name in UNARY else BINARY
    choices = [n for n in pool if n != name]
    return rng.choice(choices) if choices else name


def point_mutation(tree: Node, rng: random.Random, *, rate: float | None = None,
                   leaves: Sequence[str] = LEAVES) -> Node:
    """Replace node op(s) by another of the same arity; shape and depth are unchanged."""
    leaf_names = _check_leaves(leaves)
    points = list(walk(tree))
    if rate is None:
        targets = [rng.choice(points)]
    else:
        targets = [p for p in points if rng.random() < rate] or [rng.choice(points)]
    for path, node in targets:
        tree = replace(tree, path, Node(_other_name(node.op, rng, leaf_names), node.children))
    return tree


def subtree_mutation(tree: Node, rng: random.Random, *, max_depth: int = DEFAULT_MAX_DEPTH,
                     new_depth: tuple[int, int] = (1, 3),
                     leaves: Sequence[str] = LEAVES) -> Node:
    """Replace a uniformly chosen subtree by a fresh grow tree that fits within `max_depth`."""
    _check_depth(tree, max_depth, "tree")
    path, _ = rng.choice(list(walk(tree)))
    room = max_depth - len(path)
    hi = max(1, min(new_depth[1], room))
    lo = min(new_depth[0], hi)
    return replace(tree, path, random_tree(rng, lo, hi, "grow", leaves=leaves))
