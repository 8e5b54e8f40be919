"""Per-layer-kind sparsity (`layer_ratios = "by_kind"`): the re-centring against a slow
reference over the model's own modules, the realised sparsities, and the refusals."""

from __future__ import annotations

import pytest
from engine_testlib import linear_modules, make_lm
from prunestudio.engine.preflight import PreflightError, check_specs
from prunestudio.engine.pruning import kind_ratios, prune_model

from prunestudio.schema.labels import spec_label
from prunestudio.schema.spec import CandidateSpec

KIND_OF = {"q_proj": "q", "k_proj": "k", "v_proj": "v", "o_proj": "o", "gate_proj": "gate",
           "up_proj": "up", "down_proj": "down"}


def ref_kind_ratios(lm, sparsity: float, offsets: dict[str, float]) -> dict[str, float]:
    """From the model's own nn.Linear modules: parameters per kind by module name, the
    parameter-weighted mean offset subtracted."""
    counts: dict[str, int] = {}
    for name, mod in linear_modules(lm.model).items():
        kind = KIND_OF[name.rsplit(".", 1)[-1]]
        counts[kind] = counts.get(kind, 0) + mod.weight.numel()
    mean = sum(offsets.get(k, 0.0) * n for k, n in counts.items()) / sum(counts.values())
    return {k: sparsity + offsets.get(k, 0.0) - mean for k in counts}


def _spec(sparsity, offsets, method="magnitude"):
    return CandidateSpec.model_validate(
        {"method": method, "sparsity": sparsity, "layer_ratios": "by_kind",
         "kind_offsets": offsets})


def test_kind_ratios_match_reference_and_keep_the_overall_sparsity():
    lm = make_lm("llama", layers=2, seed=5)
    offsets = {"k": 0.15, "v": 0.1, "down": -0.1}
    got = kind_ratios(lm, 0.5, offsets)
    expect = ref_kind_ratios(lm, 0.5, offsets)
    assert got == pytest.approx(expect, abs=1e-12)
    assert got["k"] > got["q"] > got["down"]  # the offsets' order survives re-centring
    # shifting every offset by one constant is the same allocation
    shifted = {k: offsets.get(k, 0.0) + 0.05 for k in ("q", "k", "v", "o", "gate", "up", "down")}
    assert kind_ratios(lm, 0.5, shifted) == pytest.approx(got, abs=1e-12)


def test_pruning_by_kind_realises_each_kinds_sparsity_and_the_target_overall():
    lm = make_lm("llama", layers=2, seed=6)
    spec = _spec(0.5, {"k": 0.2, "up": -0.1})
    result = prune_model(lm, spec, stats=None)
    expect = ref_kind_ratios(lm, 0.5, {"k": 0.2, "up": -0.1})
    zeros: dict[str, list[int]] = {}
    for name, mod in linear_modules(lm.model).items():
        kind = KIND_OF[name.rsplit(".", 1)[-1]]
        z = zeros.setdefault(kind, [0, 0])
        z[0] += int((mod.weight == 0).sum())
        z[1] += mod.weight.numel()
    for kind, (nz, n) in zeros.items():
        rows = n // next(m.weight.shape[1] for nm, m in linear_modules(lm.model).items()
                         if KIND_OF[nm.rsplit(".", 1)[-1]] == kind)
        # selection rounds the count of each row or matrix: within one weight per row
        assert nz / n == pytest.approx(expect[kind], abs=rows / n + 1e-9), kind
    assert result.kind_ratios == pytest.approx(expect)
    assert result.overall_sparsity == pytest.approx(0.5, abs=0.01)
    assert spec_label(spec.canonical()) == "magnitude[matrix] 50% kinds[k+0.20,up-0.10]"


def test_unknown_kinds_and_out_of_range_sparsities_are_refused_before_anything_runs():
    lm = make_lm("llama", layers=2, seed=7)
    with pytest.raises(PreflightError, match=r"does not have: \['fc1'\]; its kinds are "
                       r"\['down', 'gate', 'k', 'o', 'q', 'up', 'v'\]"):
        check_specs(lm, [_spec(0.5, {"fc1": 0.1})])
    with pytest.raises(PreflightError, match="outside \\[0, 1\\)"):
        check_specs(lm, [_spec(0.9, {"q": 0.5})])


def test_the_spec_takes_by_kind_and_offsets_together_only():
    with pytest.raises(ValueError, match="go together"):
        CandidateSpec(method="magnitude", sparsity=0.5, layer_ratios="by_kind")
    with pytest.raises(ValueError, match="go together"):
        CandidateSpec(method="magnitude", sparsity=0.5, kind_offsets={"q": 0.1})
    with pytest.raises(ValueError, match="uniform layer ratios only"):
        CandidateSpec.model_validate({"method": "wanda", "pattern": {"kind": "nm", "n": 2, "m": 4},
                                      "layer_ratios": "by_kind", "kind_offsets": {"q": 0.1}},
                                     )
    # uniform specs keep their canonical form (and hashes): no kind_offsets key
    assert "kind_offsets" not in CandidateSpec(method="magnitude", sparsity=0.5).canonical()
