"""WeightSnapshot: pristine weights restored exactly, only where a candidate wrote; and
pruning is deterministic across restore cycles and cache reloads."""

from __future__ import annotations

import pytest
import torch
from engine_testlib import linear_modules, make_lm, random_ids
from prunestudio.engine.calibration import StatsCache, calibration_hash
from prunestudio.engine.pruning import WeightSnapshot, prune_model

from prunestudio.schema.spec import CandidateSpec


def _params(model) -> dict[str, torch.Tensor]:
    return {n: p.detach().clone() for n, p in model.named_parameters()}


def test_restore_is_exact_and_touches_only_dirty_layers():
    lm = make_lm("gpt2", seed=19)
    pristine = _params(lm.model)
    snap = WeightSnapshot(lm)
    ids = random_ids(3, 16, seed=19)
    prune_model(lm, CandidateSpec(method="wanda", sparsity=0.5),
                StatsCache(lm, ids, calibration_hash(ids)), snapshot=snap)
    mods = linear_modules(lm.model)
    assert snap.dirty == set(mods)

    # the snapshot is a copy: pruning did not reach it
    one, other = sorted(mods)[:2]
    assert snap.restore({one}) == 1
    assert torch.equal(mods[one].weight, pristine[f"{one}.weight"])
    assert not torch.equal(mods[other].weight, pristine[f"{other}.weight"])
    assert one not in snap.dirty and other in snap.dirty

    # a write the snapshot was not told about is left alone: only dirty layers are copied back
    with torch.no_grad():
        mods[one].weight.add_(1.0)
    tampered = mods[one].weight.detach().clone()
    assert snap.restore() == len(mods) - 1
    assert snap.dirty == set()
    assert torch.equal(mods[one].weight, tampered)
    for n, p in lm.model.named_parameters():
        if n != f"{one}.weight":
            assert torch.equal(p.detach(), pristine[n]), n
    assert snap.restore() == 0


@pytest.mark.parametrize("method", ["magnitude", "wanda", "sparsegpt", "gblm"])
def test_prune_restore_prune_gives_identical_weights(method):
    lm = make_lm("llama", seed=20)
    pristine = _params(lm.model)
    ids = random_ids(3, 16, seed=20)
    spec = CandidateSpec(method=method, sparsity=0.5)
    snap = WeightSnapshot(lm)

    prune_model(lm, spec, StatsCache(lm, ids, calibration_hash(ids)), snapshot=snap)
    first = _params(lm.model)
    assert any(not torch.equal(first[n], pristine[n]) for n in first)
    snap.restore()
    assert all(torch.equal(p.detach(), pristine[n]) for n, p in lm.model.named_parameters())

    # a fresh statistics cache reloads what the first run wrote to disk
    cache = StatsCache(lm, ids, calibration_hash(ids))
    result = prune_model(lm, spec, cache, snapshot=snap)
    if method == "gblm":
        assert result.stats_computed == []  # gradients came from the disk cache
    second = _params(lm.model)
    for n in first:
        assert torch.equal(first[n], second[n]), f"{method}: {n} differs between runs"

    # and once more through the same (memory-cached) statistics
    snap.restore()
    prune_model(lm, spec, cache, snapshot=snap)
    assert all(torch.equal(p.detach(), first[n]) for n, p in lm.model.named_parameters())


def test_a_different_candidate_after_restore_starts_from_pristine_weights():
    lm = make_lm("opt", seed=21)
    ids = random_ids(3, 16, seed=21)
    cache = StatsCache(lm, ids, calibration_hash(ids))
    spec = CandidateSpec(method="wanda", sparsity=0.3)

    fresh = make_lm("opt", seed=21)
    prune_model(fresh, spec, StatsCache(fresh, ids, calibration_hash(ids), use_disk=False))
    expected = _params(fresh.model)

    snap = WeightSnapshot(lm)
    prune_model(lm, CandidateSpec(method="magnitude", sparsity=0.7), cache, snapshot=snap)
    snap.restore()
    prune_model(lm, spec, cache, snapshot=snap)
    for n, p in lm.model.named_parameters():
        assert torch.equal(p.detach(), expected[n]), n
