"""The predictor's search space: every sampled architecture meets the parameter budget (whole
units, exactly) and leaves the fixed blocks alone; narrowing only ever narrows; features have
one column per per-block ratio plus the derived ones; the torch-free rounding is the
planner's."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from prunestudio.engine.predictor.space import (
    BlockLayout,
    Layout,
    SearchSpace,
    SpaceError,
    unit_count,
)
from prunestudio.engine.structured.plan import unit_count as planner_unit_count


@st.composite
def spaces(draw) -> SearchSpace:
    n = draw(st.integers(3, 10))
    kv = draw(st.sampled_from([2, 4, 8]))
    hidden = draw(st.sampled_from([32, 64, 96]))
    mlp = draw(st.sampled_from([48, 128, 200]))
    blocks = tuple(BlockLayout(kv, 4 * hidden * hidden // kv, mlp, 3 * hidden)
                   for _ in range(n))
    prunable = sum(b.att_units * b.att_params + b.mlp_units * b.mlp_params for b in blocks)
    total = prunable + draw(st.integers(0, 3 * prunable))  # embeddings, norms
    keep_first = draw(st.integers(0, 2))
    keep_last = draw(st.integers(0, min(2, n - keep_first - 1)))
    free = n - keep_first - keep_last
    # a budget the free blocks can reach with room to spare, a tolerance above one grid step
    # of the MLP channels (a coarser grid can miss the window: the sampler then says so)
    reach = 0.4 * free * (blocks[0].att_units * blocks[0].att_params
                          + blocks[0].mlp_units * blocks[0].mlp_params) / total
    budget = draw(st.floats(0.2, 0.8)) * reach
    step = draw(st.sampled_from([0.05, 0.1, 0.125]))
    grid_jump = (math.ceil(step * mlp) + 1) * 3 * hidden / total
    tolerance = max(0.3 * budget, grid_jump)
    assume(tolerance < budget)
    space = SearchSpace.create(Layout(blocks, total), budget=budget, tolerance=tolerance,
                               step=step, keep_first=keep_first, keep_last=keep_last)
    # whole attention units can be too coarse too (one KV group of few free blocks jumping
    # over the window): only spaces where some architecture meets the budget, by enumeration
    assume(_reachable(space))
    return space


def _reachable(space: SearchSpace) -> bool:
    """Whether some choice of units within the windows removes a parameter count in the
    budget's window (every sum enumerated, those above the window dropped)."""
    lo, hi = space.target
    sums = {0}
    for v, (a, b) in zip(space.variables, space.windows, strict=True):
        sums = {s + c * v.params for s in sums for c in v.choices[a:b + 1]
                if s + c * v.params <= hi}
    return any(s >= lo for s in sums)


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(space=spaces(), seed=st.integers(0, 2**16))
def test_every_sample_meets_the_budget_and_keeps_the_fixed_blocks(space, seed):
    ks = space.sample(np.random.default_rng(seed), 12)
    assert ks and len(set(ks)) == len(ks)
    lo, hi = space.target
    for k in ks:
        removed = space.removed(k)
        assert lo <= removed <= hi
        assert abs(space.param_ratio(k) - space.budget) <= space.tolerance + 1e-12
        assert space.in_windows(k)
        att, mlp = space.ratios(k)
        for b in space.fixed:  # the fixed blocks are never pruned
            assert att[b] == 0.0 and mlp[b] == 0.0
        # the spec's ratios round back (the planner's rule) to exactly the sampled units
        assert space.from_ratios(att, mlp) == k
        for v, u in zip(space.variables, k, strict=True):
            ratios = att if v.kind == "att" else mlp
            assert planner_unit_count(ratios[v.block], v.units) == u < v.units


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(space=spaces(), seed=st.integers(0, 2**16), top=st.integers(0, 6),
       elite=st.floats(0.05, 1.0), rounds=st.integers(1, 4))
def test_narrowing_only_narrows_and_keeps_the_budget_reachable(space, seed, top, elite,
                                                                rounds):
    rng = np.random.default_rng(seed)
    current = space
    for _ in range(rounds):
        ranked = current.sample(rng, 30)
        importance = {name: float(g) for name, g in zip(
            current.feature_names, rng.exponential(size=len(current.feature_names)),
            strict=True)}
        narrowed, changes = current.narrow(importance, ranked, top=top, elite=elite)
        assert current.contains(narrowed) and space.contains(narrowed)
        assert narrowed.feasible()
        assert len([c for c in changes if "after" in c]) <= top
        for c in changes:
            if "after" in c:
                (a, b), (x, y) = c["before"], c["after"]
                assert a <= x <= y <= b and (x, y) != (a, b)
        for k in narrowed.sample(rng, 5):  # still sampled inside the budget
            assert narrowed.in_budget(k) and narrowed.in_windows(k)
        current = narrowed


@settings(max_examples=30, deadline=None)
@given(space=spaces(), seed=st.integers(0, 2**16))
def test_features_have_one_column_per_ratio_and_the_derived_ones(space, seed):
    ks = space.sample(np.random.default_rng(seed), 7)
    X = space.features(ks)
    names = space.feature_names
    assert X.shape == (len(ks), len(space.variables) + len(space.derived)) == (len(ks),
                                                                                len(names))
    assert np.isfinite(X).all()
    col = {n: i for i, n in enumerate(names)}
    for row, k in zip(X, ks, strict=True):
        for v, u in zip(space.variables, k, strict=True):
            assert row[col[v.name]] == u / v.units
        assert row[col["param_ratio"]] == pytest.approx(space.param_ratio(k))
        assert 0.0 <= row[col["depth_centroid"]] <= 1.0
        assert 0.0 <= row[col["att_share"]] <= 1.0


def test_unit_count_is_the_planners_rounding():
    for n in (1, 2, 3, 4, 7, 10, 64, 1536):
        for r in np.linspace(0, 0.99, 199):
            assert unit_count(float(r), n) == planner_unit_count(float(r), n)
    assert unit_count(0.15, 10) == 1  # a tie (1.5000000000000002) rounds down


def test_an_unreachable_budget_or_no_free_block_is_a_clear_error():
    layout = Layout(tuple(BlockLayout(2, 100, 10, 10) for _ in range(3)), 1000)
    with pytest.raises(SpaceError, match="leave no block"):
        SearchSpace.create(layout, budget=0.1, tolerance=0.01, step=0.1, keep_first=2,
                           keep_last=1)
    with pytest.raises(SpaceError, match="out of reach"):
        SearchSpace.create(layout, budget=0.6, tolerance=0.01, step=0.1, keep_first=1,
                           keep_last=1)
