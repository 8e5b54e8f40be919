"""OWL layer-wise sparsity ratios against a slow, independent reference of the OWL code
(luuyin/OWL @ dddb7a4, ``lib/prune_all.py``, ``prune_wanda_outlier``; DESIGN §4), and of the
banded variant ``owl_band``."""

from __future__ import annotations

import pytest
import torch
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
from prunestudio.engine.pruning import owl_block_ratios, owl_outlier_ratios, prune_model

from prunestudio.schema.spec import CandidateSpec, OWLConfig


def ref_outlier_ratios(lm, ids, M: float) -> list[float]:
    """Per block, from the dense model (own hooks, float64, Python loops): the share of the
    block's concatenated |W|·sqrt(x²-sum) entries strictly above M × their mean (the OWL code's
    `check_outlier_mean`, as a fraction rather than a percent)."""
    mods = linear_modules(lm.model)
    own = capture_linear_inputs(lm.model, list(mods), ids)
    n_blocks = 1 + max(block_index(n) for n in mods)
    r = []
    for b in range(n_blocks):
        entries: list[float] = []
        for n, m in mods.items():
            if block_index(n) == b:
                x = ref_x_sqnorm(own[n], ids.shape[0])
                entries.extend((logical_weight(m).double().abs() * x.sqrt()).flatten().tolist())
        mean = sum(entries) / len(entries)
        r.append(sum(1 for e in entries if e > M * mean) / len(entries))
    return r


def ref_owl_code(r: list[float], sparsity: float, lam: float) -> list[float]:
    """The OWL code's steps, one by one: min–max scale to [0, 2λ], subtract the mean, add the
    keep ratio 1 − s; each block's sparsity is 1 − its keep ratio."""
    lo, hi = min(r), max(r)
    scaled = [(v - lo) * (1 / (hi - lo) * lam * 2) for v in r]
    mean = sum(scaled) / len(scaled)
    keep = [v - mean + (1 - sparsity) for v in scaled]
    return [1 - k for k in keep]


def ref_owl_band(r: list[float], sparsity: float, lam: float) -> list[float]:
    """s_i = s − (r_i − mean r), the deviations scaled so the largest is λ."""
    r_mean = sum(r) / len(r)
    widest = max(abs(v - r_mean) for v in r)
    return [sparsity - (0.0 if widest == 0 else (v - r_mean) / widest * lam) for v in r]


def _dense(lm, ids):
    return StatsCache(lm, ids, calibration_hash(ids)).dense_layer_stats()


@torch.no_grad()
def _boost_outliers(lm, block: int) -> None:
    """Make one block outlier-heavy: every 50th weight of its layers × 10."""
    for n, m in linear_modules(lm.model).items():
        if block_index(n) == block:
            m.weight.view(-1)[::50] *= 10


@pytest.mark.parametrize("sparsity,M,lam,boost", [
    (0.5, 5.0, 0.08, None),  # as drawn: max r − mean r = 0.55 (max r − min r)
    (0.6, 3.0, 0.05, None),  # as drawn: 0.39
    (0.5, 5.0, 0.08, 3),     # the last block outlier-heavy (the others unchanged): 0.70
])
def test_owl_matches_the_owl_code_and_owl_band_the_band(sparsity, M, lam, boost):
    lm = make_lm("llama", layers=4, seed=22)
    if boost is not None:
        _boost_outliers(lm, boost)
    ids = random_ids(4, 16, seed=22)
    dense = _dense(lm, ids)
    cfg = OWLConfig(M=M, lam=lam)
    r = ref_outlier_ratios(lm, ids, M)
    assert len(set(r)) == len(r), "test needs distinct outlier ratios"
    # skewed: the mappings differ only when max r − mean r ≠ mean r − min r
    r_mean = sum(r) / len(r)
    assert abs((max(r) - r_mean) - (r_mean - min(r))) > 0.05 * (max(r) - min(r))
    if boost is not None:
        assert r.index(max(r)) == boost and max(r) - r_mean > 0.65 * (max(r) - min(r))
    assert owl_outlier_ratios(dense, lm, M) == pytest.approx(r, abs=1e-12)

    code = owl_block_ratios(dense, lm, sparsity, cfg)  # "owl" is the default mapping
    band = owl_block_ratios(dense, lm, sparsity, cfg, mapping="owl_band")
    # float32 scores in the engine: the counts agree; one outlier more or less moves ~1e-3
    assert code == pytest.approx(ref_owl_code(r, sparsity, lam), abs=1e-6)
    assert band == pytest.approx(ref_owl_band(r, sparsity, lam), abs=1e-6)
    assert max(abs(a - b) for a, b in zip(code, band, strict=True)) > 1e-3

    for got in (code, band):
        assert sum(got) / len(got) == pytest.approx(sparsity, abs=1e-12)
        # more outliers -> sparser is wrong: the block with the most outliers is pruned least
        assert got.index(min(got)) == r.index(max(r))
        assert got.index(max(got)) == r.index(min(r))
    # the code's mapping: spread exactly 2λ, one side beyond λ here (not clipped to the band)
    assert max(code) - min(code) == pytest.approx(2 * lam)
    assert max(abs(s - sparsity) for s in code) > lam + 1e-3
    # the band: every s_i within s ± λ, the largest deviation exactly λ
    assert all(sparsity - lam - 1e-12 <= s <= sparsity + lam + 1e-12 for s in band)
    assert max(abs(s - sparsity) for s in band) == pytest.approx(lam)


@pytest.mark.parametrize("mapping", ["owl", "owl_band"])
def test_equal_outlier_ratios_give_uniform_sparsity(mapping):
    # one block: max r = min r (the OWL code divides by zero there; we give every block s)
    lm = make_lm("opt", layers=1, seed=23)
    ids = random_ids(2, 8)
    assert owl_block_ratios(_dense(lm, ids), lm, 0.5, OWLConfig(), mapping=mapping) == [0.5]


@pytest.mark.parametrize("layer_ratios,formula", [("owl", ref_owl_code),
                                                  ("owl_band", ref_owl_band)])
def test_owl_candidate_prunes_each_block_to_its_ratio(layer_ratios, formula):
    lm = make_lm("llama", layers=4, seed=22)
    ids = random_ids(4, 16, seed=22)
    expect = formula(ref_outlier_ratios(lm, ids, 5.0), 0.5, 0.08)
    spec = CandidateSpec(method="wanda", sparsity=0.5, layer_ratios=layer_ratios)
    assert spec.owl == OWLConfig() and (spec.owl.M, spec.owl.lam) == (5.0, 0.08)
    assert spec.label == {"owl": "wanda 50% owl", "owl_band": "wanda 50% owl-band"}[layer_ratios]
    result = prune_model(lm, spec, StatsCache(lm, ids, calibration_hash(ids)))
    assert result.block_ratios == pytest.approx(expect, abs=1e-6)
    for n, m in linear_modules(lm.model).items():
        s_i = expect[block_index(n)]
        w = logical_weight(m)
        k = int(w.shape[1] * s_i)
        assert bool(((w == 0).sum(1) == k).all()), n  # every linear of a block shares s_i
        assert result.layer_targets[n] == pytest.approx(s_i)
    assert abs(result.overall_sparsity - 0.5) < 0.01


@pytest.mark.parametrize("mapping", ["owl", "owl_band"])
def test_owl_ratio_outside_zero_one_is_a_clear_error(mapping):
    lm = make_lm("llama", layers=4, seed=22)
    ids = random_ids(4, 16, seed=22)
    with pytest.raises(ValueError, match=r"outside \[0, 1\).*λ=0\.08; lower λ"):
        owl_block_ratios(_dense(lm, ids), lm, 0.95, OWLConfig(lam=0.08), mapping=mapping)


def test_unknown_mapping_is_refused():
    lm = make_lm("opt", layers=1, seed=23)
    ids = random_ids(2, 8)
    with pytest.raises(ValueError, match="owl_band"):
        owl_block_ratios(_dense(lm, ids), lm, 0.5, OWLConfig(), mapping="band")
