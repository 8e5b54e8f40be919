"""Magnitude pruning: one threshold per matrix (the Wanda repo's baseline) or per row, and
the spec says which."""

from __future__ import annotations

import pytest
import torch
from engine_testlib import linear_modules, logical_weight, make_lm
from prunestudio.engine.pruning import prune_model
from prunestudio.engine.spec import CandidateSpec


def _pristine(lm) -> dict[str, torch.Tensor]:
    return {n: logical_weight(m).clone() for n, m in linear_modules(lm.model).items()}


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
@pytest.mark.parametrize("sparsity", [0.5, 0.37])
def test_per_matrix_uses_one_global_threshold(arch, sparsity):
    lm = make_lm(arch, seed=5)
    before = _pristine(lm)
    spec = CandidateSpec(method="magnitude", sparsity=sparsity, options={"scope": "matrix"})
    result = prune_model(lm, spec, None)  # magnitude needs no calibration data
    rows_differ = False
    for n, m in linear_modules(lm.model).items():
        a = before[n].abs().flatten()
        k = round(a.numel() * sparsity)
        threshold = torch.kthvalue(a, k).values  # the k-th smallest |w|
        expect = before[n].abs() <= threshold
        got = logical_weight(m) == 0
        assert int(expect.sum()) == k  # no ties in random weights
        assert torch.equal(got, expect), n
        assert abs(result.layer_sparsity[n] - k / a.numel()) < 1e-12
        rows_differ |= len(set(got.sum(1).tolist())) > 1
    assert rows_differ, "a per-matrix threshold leaves rows with different zero counts"


@pytest.mark.parametrize("arch", ["llama", "gpt2"])
def test_per_row_threshold_per_output_row(arch):
    lm = make_lm(arch, seed=6)
    before = _pristine(lm)
    prune_model(lm, CandidateSpec(method="magnitude", sparsity=0.3, options={"scope": "row"}), None)
    for n, m in linear_modules(lm.model).items():
        w = before[n].abs()
        k = round(w.shape[1] * 0.3)
        thresholds = torch.kthvalue(w, k, dim=1).values.unsqueeze(1)
        assert torch.equal(logical_weight(m) == 0, w <= thresholds), n


def test_scope_is_named_in_the_spec_and_defaults_to_matrix():
    default = CandidateSpec(method="magnitude", sparsity=0.5)
    matrix = CandidateSpec(method="magnitude", sparsity=0.5, options={"scope": "matrix"})
    row = CandidateSpec(method="magnitude", sparsity=0.5, options={"scope": "row"})
    assert default.label == matrix.label == "magnitude[matrix] 50%"
    assert row.label == "magnitude[row] 50%"
    assert default.canonical()["options"] == {"scope": "matrix"}
    assert default.hash() == matrix.hash() != row.hash()  # duplicates are recognised

    lm_a, lm_b = make_lm("llama", seed=7), make_lm("llama", seed=7)
    prune_model(lm_a, default, None)
    prune_model(lm_b, matrix, None)
    for (n, a), (_, b) in zip(linear_modules(lm_a.model).items(),
                              linear_modules(lm_b.model).items(), strict=True):
        assert torch.equal(a.weight, b.weight), n


def test_unknown_scope_lists_the_allowed_values():
    with pytest.raises(ValueError, match=r"invalid options for method 'magnitude'.*'matrix' or 'row'"):
        CandidateSpec(method="magnitude", sparsity=0.5, options={"scope": "column"})
