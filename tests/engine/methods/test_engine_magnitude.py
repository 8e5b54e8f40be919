"""Magnitude pruning: one threshold per matrix (the Wanda repo's baseline) or per row, and
the spec says which."""

from __future__ import annotations

import pytest
import torch
from engine_testlib import linear_modules, logical_weight, make_lm
from prunestudio.engine.pruning import prune_model

from prunestudio.schema.spec import CandidateSpec


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
        k = int(a.numel() * sparsity)
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
        k = int(w.shape[1] * 0.3)
        thresholds = torch.kthvalue(w, k, dim=1).values.unsqueeze(1)
        assert torch.equal(logical_weight(m) == 0, w <= thresholds), n


def test_scope_is_named_in_the_spec_and_defaults_to_matrix():
    default = CandidateSpec(method="magnitude", sparsity=0.5)
    matrix = CandidateSpec(method="magnitude", sparsity=0.5, options={"scope": "matrix"})
    row = CandidateSpec(method="magnitude", sparsity=0.5, options={"scope": "row"})
    assert default.label == matrix.label == "magnitude[matrix] 50%"
    assert row.label == "magnitude[row] 50%"
    assert default.canonical()["options"] == {"scope": "matrix", "ties": "index"}
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


def test_tie_breaking_is_named_and_only_changes_which_equal_weights_go():
    from prunestudio.engine.masks import mask_n_m, mask_per_row

    # quantized-like weights: 4 distinct magnitudes, so most comparisons are ties
    score = torch.tensor([[1.0, 2.0, 1.0, 2.0, 2.0, 3.0, 2.0, 4.0]] * 3)
    by_index = mask_per_row(score, 0.5, ties="index")  # two of the four 2.0s: the first two
    assert by_index[0].tolist() == [True, True, True, True, False, False, False, False]
    by_topk = mask_per_row(score, 0.5, ties="topk")
    expected = torch.zeros_like(by_topk)
    expected.scatter_(1, torch.topk(score, 4, dim=1, largest=False).indices, True)
    assert torch.equal(by_topk, expected)
    for mask in (by_index, by_topk):  # either way: exactly the 4 smallest values per row
        assert mask.sum(1).tolist() == [4, 4, 4]
        assert sorted(score[0][mask[0]].tolist()) == [1.0, 1.0, 2.0, 2.0]
    nm = mask_n_m(score, 2, 4, ties="index")
    assert nm[0].tolist() == [True, False, True, False, True, False, True, False]
    with pytest.raises(ValueError, match="ties must be one of index, topk"):
        mask_per_row(score, 0.5, ties="random")
    spec = CandidateSpec(method="magnitude", sparsity=0.5, options={"scope": "row", "ties": "topk"})
    assert spec.label == "magnitude[row][ties=topk] 50%"
