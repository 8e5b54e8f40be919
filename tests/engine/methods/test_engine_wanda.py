"""Wanda and the activation statistics it reads, against slow references built from inputs
captured with the test's own forward hooks."""

from __future__ import annotations

import pytest
import torch
from engine_testlib import (
    ARCHS,
    capture_linear_inputs,
    linear_modules,
    logical_weight,
    make_lm,
    random_ids,
    ref_hessian,
    ref_row_mask,
    ref_wanda_sequential,
    ref_x_sqnorm,
)
from prunestudio.engine.calibration import StatsCache, calibration_hash
from prunestudio.engine.pruning import prune_model

from prunestudio.schema.spec import CandidateSpec


@pytest.mark.parametrize("arch", ARCHS)
def test_dense_statistics_equal_explicit_computation(arch, _engine_env):
    lm = make_lm(arch)
    ids = random_ids(5, 16)
    cache = StatsCache(lm, ids, calibration_hash(ids), batch_size=2)  # chunks of 2, 2, 1
    stats = cache.dense_layer_stats(want_hessian=True)

    names = sorted(linear_modules(lm.model))
    assert sorted(stats) == names
    own = capture_linear_inputs(lm.model, names, ids, batch_size=1)
    for n in names:
        st = stats[n]
        assert st.nsamples == 5
        x_ref = ref_x_sqnorm(own[n], nsamples=5)
        h_ref = ref_hessian(own[n], nsamples=5)
        assert st.x_sqnorm.dtype == torch.float32 and st.hessian.dtype == torch.float32
        torch.testing.assert_close(st.x_sqnorm.double(), x_ref, rtol=1e-5, atol=1e-6)
        torch.testing.assert_close(st.hessian.double(), h_ref, rtol=1e-4, atol=1e-5)
        # the Hessian's diagonal is 2 × Wanda's statistic (same tokens, same n)
        torch.testing.assert_close(torch.diag(st.hessian), 2 * st.x_sqnorm, rtol=1e-5, atol=1e-6)

    # written under $PRUNESTUDIO_CACHE, and a second cache object reads it back unchanged
    files = list(_engine_env.rglob("*.pt"))
    assert files, "statistics were not cached on disk"
    again = StatsCache(lm, ids, calibration_hash(ids), batch_size=2)
    stats2 = again.dense_layer_stats(want_hessian=True)
    assert again.computed == []
    for n in names:
        assert torch.equal(stats2[n].x_sqnorm, stats[n].x_sqnorm)
        assert torch.equal(stats2[n].hessian, stats[n].hessian)
        assert stats2[n].nsamples == 5


@pytest.mark.parametrize("sparsity", [0.5, 0.3])
@pytest.mark.parametrize("arch", ARCHS)
def test_wanda_sequential_masks_equal_slow_per_row_reference(arch, sparsity):
    lm = make_lm(arch, seed=1)
    ids = random_ids(4, 16, seed=1)
    ref = ref_wanda_sequential(lm, ids, sparsity)  # on a deep copy, before the engine runs

    spec = CandidateSpec(method="wanda", sparsity=sparsity)
    result = prune_model(lm, spec, StatsCache(lm, ids, calibration_hash(ids), batch_size=3))

    mods = linear_modules(lm.model)
    assert set(ref) == set(mods) == set(result.layer_sparsity)
    for n, m in mods.items():
        got = logical_weight(m) == 0
        assert torch.equal(got, ref[n]), f"{n}: {(got != ref[n]).sum()} mask entries differ"
        k = int(got.shape[1] * sparsity)
        assert bool((got.sum(1) == k).all()), f"{n}: not {k} zeros in every row"


def test_wanda_dense_calibration_mode_uses_dense_statistics_for_every_block():
    lm = make_lm("llama", seed=2)
    ids = random_ids(4, 16, seed=2)
    ref = ref_wanda_sequential(lm, ids, 0.5, sequential=False)
    ref_seq = ref_wanda_sequential(lm, ids, 0.5, sequential=True)
    spec = CandidateSpec(method="wanda", sparsity=0.5, calibration={"mode": "dense"})
    prune_model(lm, spec, StatsCache(lm, ids, calibration_hash(ids)))
    differs = False
    for n, m in linear_modules(lm.model).items():
        assert torch.equal(logical_weight(m) == 0, ref[n]), n
        differs |= not torch.equal(ref[n], ref_seq[n])
    assert differs, "dense and sequential calibration should give different masks in block 1"


def test_wanda_score_uses_square_root_of_statistic():
    """A hand-made layer where |W| alone and |W|·X (no sqrt) would each choose differently."""
    from prunestudio.engine.calibration import LayerStats
    from prunestudio.engine.methods import get_method
    from prunestudio.engine.methods.base import LayerInputs, LayerTarget
    from prunestudio.engine.models.adapters import PrunableLinear

    lin_mod = torch.nn.Linear(4, 1, bias=False)
    with torch.no_grad():
        lin_mod.weight.copy_(torch.tensor([[1.0, 3.0, 2.5, 10.0]]))
    x = torch.tensor([16.0, 1.0, 4.0, 1.0])  # sqrt: 4, 1, 2, 1 -> scores 4, 3, 5, 10
    lin = PrunableLinear("l", 0, "q", lin_mod)
    wanda = get_method("wanda")
    wanda.prune_layer(lin, LayerTarget(0.5), LayerInputs(LayerStats(1, x, None)),
                      wanda.validate_options({}))
    assert lin_mod.weight.tolist() == [[0.0, 0.0, 2.5, 10.0]]
    expected = ref_row_mask(torch.tensor([[4.0, 3.0, 5.0, 10.0]]), 0.5)
    assert torch.equal(lin_mod.weight == 0, expected)
