"""Structured pruning: the shrunk model computes what the zeroed-group model computes, its
parameter count follows from the removed groups, the original stays intact, bad requests fail
clearly."""

from __future__ import annotations

import copy

import pytest
import torch
from engine_testlib import make_lm, random_ids
from prunestudio.engine.calibration import StatsCache, calibration_hash
from prunestudio.engine.structured import StructureError, prune_structured
from prunestudio.engine.structured.apply import plan_structured
from prunestudio.engine.structured.plan import BlockPlan, StructuredPlan, mask, shrink
from structured_testlib import unit_param_count

from prunestudio.schema.spec import CandidateSpec

ARCHS = ("llama", "opt", "gpt_neox", "gpt2")


def _stats(lm, n: int = 4, seqlen: int = 24) -> StatsCache:
    ids = random_ids(n, seqlen, seed=1)
    return StatsCache(lm, ids, calibration_hash(ids), use_disk=False)


def _n_params(model) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def _spec(sparsity: float, **options) -> CandidateSpec:
    return CandidateSpec(method="structured", sparsity=sparsity, options=options)


CASES = [
    ("llama", _spec(0.2, importance="taylor_first")),
    ("llama", _spec(0.5, ratio="groups", importance="l1", attention_unit="query_head")),
    ("llama", _spec(0.0, importance="taylor_mix", attention_ratios=[0.5, 0.0],
                    mlp_ratios=[0.25, 0.5])),
    ("opt", _spec(0.25, importance="taylor_vector")),
    ("opt", _spec(0.0, importance="activation", attention_ratios=[0.25, 0.5],
                  mlp_ratios=[0.5, 0.1])),
    ("gpt_neox", _spec(0.25, importance="taylor_second")),
    ("gpt_neox", _spec(0.5, ratio="groups", importance="l2", aggregation="max")),
    ("gpt2", _spec(0.2, importance="taylor_first", aggregation="prod")),
    ("gpt2", _spec(0.0, importance="l1", attention_ratios=[0.5, 0.25], mlp_ratios=[0.0, 0.3])),
]


@pytest.mark.parametrize("arch,spec", CASES, ids=[f"{a}-{s.label}" for a, s in CASES])
def test_shrunk_equals_masked_and_counts_add_up(arch, spec):
    lm = make_lm(arch, attn="eager")
    stats = _stats(lm)
    ids = random_ids(2, 20, seed=7)
    dense_logits = lm.model(ids).logits.detach().clone()
    dense_state = {k: v.clone() for k, v in lm.model.state_dict().items()}

    plan, _, _ = plan_structured(lm, spec, stats)
    pruned_lm, info = prune_structured(lm, spec, stats)

    # the original model is untouched (weights and outputs)
    assert torch.equal(lm.model(ids).logits, dense_logits)
    for k, v in lm.model.state_dict().items():
        assert torch.equal(v, dense_state[k]), k

    masked = copy.deepcopy(lm.model)
    mask(masked, lm.adapter, plan)
    with torch.no_grad():
        got = pruned_lm.model(ids).logits
        want = masked(ids).logits
    assert got.shape == want.shape
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    assert not torch.allclose(got, dense_logits, atol=1e-4)  # something was really removed

    # parameter arithmetic from hand-written slices of the removed units
    removed = 0
    for b, bp in plan.blocks.items():
        removed += sum(unit_param_count(lm.model, arch, b, "attention", u, plan.attention_unit)
                       for u in bp.attention)
        removed += sum(unit_param_count(lm.model, arch, b, "mlp", u) for u in bp.mlp)
    assert removed > 0
    assert _n_params(pruned_lm.model) == _n_params(lm.model) - removed
    assert info.params_before - info.params_after == removed


def test_param_ratio_is_hit_and_both_ratios_recorded():
    lm = make_lm("llama", layers=4)
    stats = _stats(lm)
    spec = _spec(0.2, importance="l2", block_start=1, block_end=-1)
    pruned, info = prune_structured(lm, spec, stats)
    assert info.blocks == [1, 2]
    assert abs(info.param_ratio - 0.2) < 0.01
    widths = [layer["mlp"] for layer in info.layers]
    assert widths[0] == widths[3] == 128 and widths[1] < 128  # kept blocks stay whole
    metrics = {m["name"]: m for m in info.metrics()}
    assert metrics["param_ratio"]["value"] == pytest.approx(info.param_ratio)
    assert metrics["param_ratio"]["protocol"]["target"]["param_ratio"] == 0.2
    assert 0 < metrics["group_ratio_mlp"]["value"] < 1
    assert spec.label == "structured[l2/sum] 20% params"


def test_query_head_mode_keeps_gqa_consistent():
    lm = make_lm("llama")  # 4 query heads over 2 KV heads
    spec = _spec(0.5, ratio="groups", importance="l1", attention_unit="query_head", mlp=False)
    pruned, info = prune_structured(lm, spec, _stats(lm))
    for layer in info.layers:
        assert (layer["heads"], layer["kv_heads"]) == (2, 2)
    attn = pruned.model.model.layers[0].self_attn
    assert attn.num_key_value_groups == 1
    assert pruned.model.config.num_attention_heads == 2  # uniform: config updated
    assert pruned.model.config.head_dim == 16  # head size (and its rotary dims) untouched


def test_explicit_plan_that_breaks_gqa_is_refused():
    lm = make_lm("llama")
    plan = StructuredPlan("query_head", {0: BlockPlan(0, attention=(0,))})  # group 0 only
    model = copy.deepcopy(lm.model)
    with pytest.raises(StructureError, match="same number of query heads in every KV group"):
        shrink(model, lm.adapter, plan)


@pytest.mark.parametrize("spec,match", [
    (_spec(0.9, ratio="groups", importance="l1"), "removes 2 of its 2 KV groups"),
    (_spec(0.0, importance="l1", attention_ratios=[0.0, 0.9]), "block 1: attention ratio"),
    (_spec(0.0, importance="l1", mlp_ratios=[0.999, 0.0]), "block 0: MLP ratio"),
    (_spec(0.9, importance="l1", block_start=1), "cannot remove 90.0%"),
    (_spec(0.0, importance="l1", attention_ratios=[0.5]), "has 1 values; the model has 2"),
    (_spec(0.2, importance="l1", block_start=2), "block range"),
])
def test_impossible_ratios_fail_clearly(spec, match):
    lm = make_lm("llama")
    with pytest.raises(StructureError, match=match):
        prune_structured(lm, spec, _stats(lm))


def test_every_head_removed_by_explicit_plan_is_refused():
    lm = make_lm("opt")
    plan = StructuredPlan("kv_group", {1: BlockPlan(1, attention=(0, 1, 2, 3))})
    with pytest.raises(StructureError, match="leave the layer empty"):
        shrink(copy.deepcopy(lm.model), lm.adapter, plan)


@pytest.mark.parametrize("bad,match", [
    (dict(sparsity=0.2, options={"importance": "nope"}), "importance"),
    (dict(sparsity=0.2, options={"ratios": "x"}), "allowed options"),
    (dict(sparsity=0.2, options={"attention_ratios": [0.1, 0.1]}), "not both"),
    (dict(sparsity=0.0, options={}), "needs a sparsity"),
    (dict(sparsity=0.5, pattern={"kind": "nm", "n": 2, "m": 4}), "no N:M"),
])
def test_spec_validation(bad, match):
    with pytest.raises(ValueError, match=match):
        CandidateSpec(method="structured", **bad)


def test_prune_model_refuses_structured_specs():
    from prunestudio.engine.pruning import prune_model

    lm = make_lm("llama")
    with pytest.raises(ValueError, match="prune_structured"):
        prune_model(lm, _spec(0.2, importance="l1"), None)
