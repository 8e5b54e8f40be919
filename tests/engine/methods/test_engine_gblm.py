"""GBLM's gradient statistic G and score, against per-sample autograd on a fresh copy."""

from __future__ import annotations

import copy

import pytest
import torch
from engine_testlib import linear_modules, logical_weight, make_lm, random_ids, ref_wanda_sequential
from prunestudio.engine.calibration import StatsCache, calibration_hash, compute_gradient_l2
from prunestudio.engine.pruning import prune_model

from prunestudio.schema.spec import CandidateSpec

DROPOUT = dict(dropout=0.5, attention_dropout=0.5, activation_dropout=0.5,
               resid_pdrop=0.5, embd_pdrop=0.5, attn_pdrop=0.5)


def ref_gradient_l2(model: torch.nn.Module, ids: torch.Tensor, scale: float = 100.0,
                    train: bool = False) -> dict[str, torch.Tensor]:
    """sqrt(Σ_samples (scale · ∂L_s/∂W)²) with torch.autograd.grad on a deep copy, one
    sample at a time, in (out, in) orientation."""
    fresh = copy.deepcopy(model)
    fresh.train(train)
    mods = linear_modules(fresh)
    names = list(mods)
    acc = {n: torch.zeros_like(logical_weight(mods[n]), dtype=torch.float64) for n in names}
    for s in range(ids.shape[0]):
        x = ids[s : s + 1]
        torch.manual_seed(s)
        loss = fresh(x, labels=x, use_cache=False).loss
        grads = torch.autograd.grad(loss, [mods[n].weight for n in names])
        for n, g in zip(names, grads, strict=True):
            g = g.t() if type(mods[n]).__name__ == "Conv1D" else g
            acc[n] += (scale * g.double()) ** 2
    return {n: a.sqrt() for n, a in acc.items()}


@pytest.mark.parametrize("arch", ["llama", "opt", "gpt2"])
def test_gradient_l2_equals_per_sample_autograd_in_eval_mode(arch):
    lm = make_lm(arch, seed=15, **DROPOUT)
    lm.model.train()  # left in train mode by a caller: G must still be taken without dropout
    ids = random_ids(3, 12, seed=15)
    ref = ref_gradient_l2(lm.model, ids)
    flags = {n: p.requires_grad for n, p in lm.model.named_parameters()}

    got = compute_gradient_l2(lm, ids)

    assert set(got) == set(ref)
    for n in ref:
        assert got[n].dtype == torch.float32 and got[n].shape == ref[n].shape
        torch.testing.assert_close(got[n].double(), ref[n], rtol=1e-4, atol=1e-6)
    assert lm.model.training, "the caller's train/eval mode is restored"
    assert {n: p.requires_grad for n, p in lm.model.named_parameters()} == flags
    assert all(p.grad is None for p in lm.model.parameters())

    if arch == "opt":  # the check can fail: with dropout on, the gradients differ
        noisy = ref_gradient_l2(lm.model, ids, train=True)
        assert any(not torch.allclose(noisy[n], ref[n], rtol=1e-3) for n in ref)


def test_gradients_are_cached_on_disk_per_model_and_calibration(_engine_env):
    lm = make_lm("llama", seed=16)
    ids = random_ids(2, 8, seed=16)
    first = StatsCache(lm, ids, calibration_hash(ids))
    g1 = first.gradients()
    assert first.computed == ["grad_l2"]
    assert list(_engine_env.rglob("grad_l2.pt"))
    second = StatsCache(lm, ids, calibration_hash(ids))
    g2 = second.gradients()
    assert second.computed == []
    assert all(torch.equal(g1[n], g2[n]) for n in g1)
    other = random_ids(2, 8, seed=17)
    third = StatsCache(lm, other, calibration_hash(other))
    third.gradients()
    assert third.computed == ["grad_l2"]


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_gblm_masks_equal_slow_reference(arch):
    lm = make_lm(arch, seed=18)
    ids = random_ids(4, 16, seed=18)
    grads = ref_gradient_l2(lm.model, ids)
    ref = ref_wanda_sequential(lm, ids, 0.5, grads=grads)
    wanda_ref = ref_wanda_sequential(lm, ids, 0.5)

    prune_model(lm, CandidateSpec(method="gblm", sparsity=0.5),
                StatsCache(lm, ids, calibration_hash(ids)))
    differs = False
    for n, m in linear_modules(lm.model).items():
        assert torch.equal(logical_weight(m) == 0, ref[n]), n
        differs |= not torch.equal(ref[n], wanda_ref[n])
    assert differs, "the gradient term should change some masks relative to Wanda"
