"""OWL layer-wise sparsity ratios against a slow reference of DESIGN §4's formula."""

from __future__ import annotations

import pytest
from engine_testlib import (
    block_index,
    capture_linear_inputs,
    linear_modules,
    logical_weight,
    make_lm,
    random_ids,
    ref_x_sqnorm,
)
from prunestudio.engine.calibration import StatsCache, calibration_hash
from prunestudio.engine.pruning import owl_block_ratios, prune_model

from prunestudio.schema.spec import CandidateSpec, OWLConfig


def ref_owl(lm, ids, sparsity: float, M: float, lam: float) -> tuple[list[float], list[float]]:
    """Outlier ratio per block from the dense model (own hooks, float64), then
    s_i = s − (r_i − mean r), the deviations scaled into [−λ, λ]. Returns (ratios, r)."""
    mods = linear_modules(lm.model)
    own = capture_linear_inputs(lm.model, list(mods), ids)
    n_blocks = 1 + max(block_index(n) for n in mods)
    r = []
    for b in range(n_blocks):
        entries = []
        for n, m in mods.items():
            if block_index(n) == b:
                x = ref_x_sqnorm(own[n], ids.shape[0])
                entries.extend((logical_weight(m).double().abs() * x.sqrt()).flatten().tolist())
        mean = sum(entries) / len(entries)
        r.append(sum(1 for e in entries if e > M * mean) / len(entries))
    r_mean = sum(r) / len(r)
    widest = max(abs(v - r_mean) for v in r)
    ratios = [sparsity - (0.0 if widest == 0 else (v - r_mean) / widest * lam) for v in r]
    return ratios, r


@pytest.mark.parametrize("sparsity,M,lam", [(0.5, 5.0, 0.08), (0.6, 3.0, 0.05)])
def test_owl_block_ratios_match_reference(sparsity, M, lam):
    lm = make_lm("llama", layers=4, seed=22)
    ids = random_ids(4, 16, seed=22)
    dense = StatsCache(lm, ids, calibration_hash(ids)).dense_layer_stats()
    got = owl_block_ratios(dense, lm, sparsity, OWLConfig(M=M, lam=lam))
    expect, r = ref_owl(lm, ids, sparsity, M, lam)
    assert len(set(r)) == len(r), "test needs distinct outlier ratios"
    # float32 counting in the engine: ~1e-8 here; one outlier more or less would move ~1e-3
    assert got == pytest.approx(expect, abs=1e-6)
    # the properties the formula promises
    assert sum(got) / len(got) == pytest.approx(sparsity, abs=1e-12)
    assert all(sparsity - lam - 1e-12 <= s <= sparsity + lam + 1e-12 for s in got)
    assert max(abs(s - sparsity) for s in got) == pytest.approx(lam)
    # more outliers -> sparser is wrong: the block with the most outliers is pruned least
    assert got.index(min(got)) == r.index(max(r))
    assert got.index(max(got)) == r.index(min(r))


def test_equal_outlier_ratios_give_uniform_sparsity():
    lm = make_lm("opt", layers=1, seed=23)
    ids = random_ids(2, 8)
    dense = StatsCache(lm, ids, calibration_hash(ids)).dense_layer_stats()
    assert owl_block_ratios(dense, lm, 0.5, OWLConfig()) == [0.5]


def test_owl_candidate_prunes_each_block_to_its_ratio():
    lm = make_lm("llama", layers=4, seed=22)
    ids = random_ids(4, 16, seed=22)
    expect, _ = ref_owl(lm, ids, 0.5, 5.0, 0.08)
    spec = CandidateSpec(method="wanda", sparsity=0.5, layer_ratios="owl")
    assert spec.owl == OWLConfig()
    result = prune_model(lm, spec, StatsCache(lm, ids, calibration_hash(ids)))
    assert result.block_ratios == pytest.approx(expect, abs=1e-6)
    for n, m in linear_modules(lm.model).items():
        s_i = expect[block_index(n)]
        w = logical_weight(m)
        k = round(w.shape[1] * s_i)
        assert bool(((w == 0).sum(1) == k).all()), n  # every linear of a block shares s_i
        assert result.layer_targets[n] == pytest.approx(s_i)
    assert abs(result.overall_sparsity - 0.5) < 0.01


def test_owl_ratio_outside_zero_one_is_a_clear_error():
    lm = make_lm("llama", layers=4, seed=22)
    ids = random_ids(4, 16, seed=22)
    dense = StatsCache(lm, ids, calibration_hash(ids)).dense_layer_stats()
    with pytest.raises(ValueError, match=r"outside \[0, 1\).*lower λ"):
        owl_block_ratios(dense, lm, 0.95, OWLConfig(lam=0.08))
