"""N:M semi-structured sparsity through every method, and its validation."""

from __future__ import annotations

import pydantic
import pytest
import torch
from engine_testlib import linear_modules, logical_weight, make_lm, random_ids
from prunestudio.engine.calibration import StatsCache, calibration_hash
from prunestudio.engine.masks import mask_n_m
from prunestudio.engine.pruning import prune_model

from prunestudio.schema.spec import CandidateSpec, Pattern

METHODS = ["magnitude", "wanda", "gblm", "sparsegpt"]


def _assert_every_group_has_n_zeros(model, n: int, m: int) -> None:
    mods = linear_modules(model)
    assert mods
    for name, mod in mods.items():
        w = logical_weight(mod)  # (out, in): groups run along the input dimension
        out_f, in_f = w.shape
        zeros = (w == 0).reshape(out_f, in_f // m, m).sum(-1)
        assert bool((zeros == n).all()), (
            f"{name}: groups with {sorted(set(zeros.flatten().tolist()))} zeros, want {n}"
        )


@pytest.mark.parametrize("pattern", ["2:4", "4:8", "3:8"])
@pytest.mark.parametrize("method", METHODS)
def test_every_group_of_m_has_exactly_n_zeros(method, pattern):
    lm = make_lm("llama", seed=4)
    ids = random_ids(3, 16, seed=4)
    spec = CandidateSpec(method=method, pattern=Pattern.parse(pattern))
    n, m = map(int, pattern.split(":"))
    assert spec.sparsity == n / m
    result = prune_model(lm, spec, StatsCache(lm, ids, calibration_hash(ids)))
    _assert_every_group_has_n_zeros(lm.model, n, m)
    assert abs(result.overall_sparsity - n / m) < 1e-9


@pytest.mark.parametrize("method", ["wanda", "sparsegpt"])
def test_nm_groups_follow_the_logical_input_dimension_of_gpt2_conv1d(method):
    lm = make_lm("gpt2", seed=4)
    ids = random_ids(3, 16, seed=4)
    prune_model(lm, CandidateSpec(method=method, pattern=Pattern.parse("2:4")),
                StatsCache(lm, ids, calibration_hash(ids)))
    _assert_every_group_has_n_zeros(lm.model, 2, 4)
    # the stored (in, out) matrix read the wrong way does not satisfy 2:4
    c_fc = lm.model.transformer.h[0].mlp.c_fc.weight
    wrong = (c_fc == 0).reshape(c_fc.shape[0], -1, 4).sum(-1)
    assert not bool((wrong == 2).all())


def test_mask_n_m_prunes_the_n_lowest_of_each_group():
    g = torch.Generator().manual_seed(0)
    score = torch.rand(6, 16, generator=g)
    mask = mask_n_m(score, 3, 8)
    for r in range(6):
        for g0 in range(0, 16, 8):
            vals = score[r, g0 : g0 + 8].tolist()
            lowest = sorted(range(8), key=lambda j: (vals[j], j))[:3]
            expect = [j in lowest for j in range(8)]
            assert mask[r, g0 : g0 + 8].tolist() == expect


def test_m_not_dividing_the_input_width_is_a_clear_error():
    with pytest.raises(ValueError, match="M=4 does not divide the input width 10"):
        mask_n_m(torch.rand(3, 10), 2, 4)
    for method in ("wanda", "sparsegpt", "magnitude"):
        lm = make_lm("llama")
        ids = random_ids(2, 8)
        spec = CandidateSpec(method=method, pattern=Pattern.parse("2:12"))  # 64 % 12 != 0
        with pytest.raises(ValueError, match=r"2:12.*M=12 does not divide the input width 64"):
            prune_model(lm, spec, StatsCache(lm, ids, calibration_hash(ids)))


@pytest.mark.parametrize("n,m", [(4, 4), (5, 4), (0, 4), (-1, 2)])
def test_n_at_least_m_is_rejected_naming_the_fields(n, m):
    with pytest.raises(pydantic.ValidationError, match="N:M pattern needs 0 < N < M") as exc:
        Pattern(kind="nm", n=n, m=m)
    assert f"got {n}:{m}" in str(exc.value)
    with pytest.raises(ValueError, match="0 < N < M"):
        Pattern.parse(f"{n}:{m}")
    with pytest.raises(pydantic.ValidationError) as exc:
        CandidateSpec(method="wanda", pattern={"kind": "nm", "n": n, "m": m})
    assert "pattern" in str(exc.value) and "0 < N < M" in str(exc.value)


def test_pattern_parse_and_incomplete_patterns():
    assert Pattern.parse("2:4") == Pattern(kind="nm", n=2, m=4)
    assert Pattern.parse(" Unstructured ") == Pattern()
    with pytest.raises(ValueError, match="use 'unstructured' or 'N:M'"):
        Pattern.parse("two:four")
    with pytest.raises(pydantic.ValidationError, match="needs n and m"):
        Pattern(kind="nm", n=2)
    with pytest.raises(pydantic.ValidationError, match="only for kind='nm'"):
        Pattern(n=2, m=4)
    with pytest.raises(pydantic.ValidationError, match=r"fixes sparsity at 0\.5; got sparsity=0\.3"):
        CandidateSpec(method="wanda", sparsity=0.3, pattern=Pattern.parse("2:4"))
    with pytest.raises(pydantic.ValidationError, match="uniform layer ratios only"):
        CandidateSpec(method="wanda", pattern=Pattern.parse("2:4"), layer_ratios="owl")
