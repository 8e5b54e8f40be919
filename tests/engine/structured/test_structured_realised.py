"""Structured ratios become whole units by rounding to the nearest (a tie down), so a ratio is
never silently doubled; what a candidate really removed is recorded (realised ratios counted
again here from the shrunk weight shapes), its structure has a key, and impossible specs are
rejected before any candidate runs."""

from __future__ import annotations

import copy
import math

import pytest
import torch
from engine_testlib import logical_weight, make_lm, random_ids
from prunestudio.engine.calibration import StatsCache, calibration_hash
from prunestudio.engine.structured import (
    StructureError,
    check_structured_spec,
    prune_structured,
    unit_count,
)
from structured_testlib import modules

from prunestudio.schema.spec import CandidateSpec

HD = 16  # head size of every tiny model


def _spec(sparsity: float, **options) -> CandidateSpec:
    return CandidateSpec(method="structured", sparsity=sparsity, options=options)


def _stats(lm) -> StatsCache:
    ids = random_ids(3, 16, seed=1)
    return StatsCache(lm, ids, calibration_hash(ids), use_disk=False)


def _widths(model, arch: str, b: int) -> dict[str, int]:
    """Query heads, KV heads and MLP channels of block b, counted from its weight shapes (rows
    and columns of every coupled layer, which must agree)."""
    m = {k: logical_weight(v).shape for k, v in modules(model, arch, b).items()}
    if arch == "llama":
        heads, kv, mlp = m["q"][0] // HD, m["k"][0] // HD, m["gate"][0]
        assert m["v"][0] == kv * HD and m["o"][1] == heads * HD
        assert m["up"][0] == mlp == m["down"][1]
    elif arch == "opt":
        heads, mlp = m["q"][0] // HD, m["fc1"][0]
        kv = m["k"][0] // HD
        assert m["v"][0] == m["o"][1] == heads * HD == kv * HD and m["fc2"][1] == mlp
    else:  # gpt_neox, gpt2: fused qkv rows
        heads, mlp = m["qkv"][0] // (3 * HD), m["fc1"][0]
        kv = heads
        assert m["qkv"][0] == 3 * heads * HD and m["o"][1] == heads * HD
        assert m["fc2"][1] == mlp
    return {"heads": heads, "kv_heads": kv, "mlp": mlp}


@pytest.mark.parametrize("ratio,n,want", [
    (0.25, 2, 0),  # 0.5 head: a tie, rounds down (never 1 head = 50 %)
    (0.5, 2, 1),
    (0.75, 2, 1),  # 1.5: a tie, down
    (0.3, 2, 1),  # 0.6: nearest
    (0.2, 2, 0),
    (0.125, 4, 0),  # 0.5 head of 4
    (0.375, 4, 1),  # 1.5
    (0.15, 10, 1),  # 1.5000000000000002 in floating point: still the tie
    (0.35, 10, 3),  # 3.4999999999999996: nearest is 3
    (0.1, 128, 13),  # 12.8
    (0.3, 128, 38),  # 38.4
    (0.0, 128, 0),
    (0.999, 128, 128),  # every one: plan_counts refuses it
])
def test_unit_count_rounds_to_nearest_ties_down(ratio, n, want):
    assert unit_count(ratio, n) == want


def test_unit_count_never_exceeds_target_by_half_a_unit():
    for n in (1, 2, 3, 4, 7, 128, 11008):
        for i in range(0, 1000):
            r = i / 1000
            k = unit_count(r, n)
            assert abs(k - r * n) <= 0.5 + 1e-9, (r, n, k)
            if k > 0:  # a nonzero count is never more than the ratio asks, plus half a unit
                assert k <= r * n + 0.5 + 1e-9


@pytest.mark.parametrize("mlp", [False, True])
def test_quarter_of_two_query_heads_is_not_half(mlp):
    """The bug: 25 % of the 2 query heads per KV group used to round up to 1 head, so the
    0.25 candidate equalled the 0.5 one while labelled 25 %."""
    lm = make_lm("llama")  # 4 query heads over 2 KV heads: 2 per group
    stats = _stats(lm)
    opts = dict(ratio="groups", importance="l1", attention_unit="query_head", mlp=mlp)
    q_spec, h_spec = _spec(0.25, **opts), _spec(0.5, **opts)
    quarter, qi = prune_structured(lm, q_spec, stats)
    half, hi = prune_structured(lm, h_spec, stats)
    assert q_spec.label.startswith("structured[l1/sum/query_head")
    assert q_spec.label.endswith("] 25% groups")

    # 0.25 · 2 = 0.5 head, a tie: nearest rounding keeps both heads; 0.5 removes one
    for b in range(2):
        assert _widths(quarter.model, "llama", b)["heads"] == 4
        assert _widths(half.model, "llama", b)["heads"] == 2
    assert qi.structure_key != hi.structure_key
    assert qi.realised["attention"]["target"] == pytest.approx(0.25)
    assert qi.realised["attention"]["realised"] == 0.0  # visible, not a silent 50 %
    assert hi.realised["attention"]["realised"] == 0.5
    assert qi.attention_group_ratio == 0.0 and hi.attention_group_ratio == 0.5
    if mlp:
        assert qi.realised_label == "realised 0% query heads, 25% channels"
        assert hi.realised_label == "realised 50% query heads, 50% channels"
        assert qi.mlp_group_ratio == 0.25 and hi.mlp_group_ratio == 0.5
    else:
        assert qi.realised_label == "realised 0% query heads"
        assert hi.realised_label == "realised 50% query heads"
        assert qi.params_after == qi.params_before  # nothing removed: and it says so
    metrics = {m["name"]: m for m in qi.metrics()}
    att = metrics["group_ratio_attention"]
    assert att["value"] == 0.0
    assert att["protocol"]["target"] == pytest.approx(0.25)
    assert att["protocol"]["realised"] == 0.0
    assert att["protocol"]["counted_in"] == "query_head"
    assert "tie" in att["protocol"]["rounding"]


CASES = [
    ("llama", _spec(0.25, ratio="groups", importance="l1", attention_unit="query_head")),
    ("llama", _spec(0.5, ratio="groups", importance="l2")),
    ("llama", _spec(0.2, importance="taylor_first")),
    ("llama", _spec(0.0, importance="l1", attention_unit="query_head",
                    attention_ratios=[0.25, 0.75], mlp_ratios=[1.5 / 128, 0.3])),
    ("opt", _spec(0.0, importance="l1", attention_ratios=[0.125, 0.375],
                  mlp_ratios=[0.5 / 128, 0.1])),
    ("opt", _spec(0.3, ratio="groups", importance="taylor_vector", mlp=False)),
    ("gpt_neox", _spec(0.25, importance="l2", block_start=1)),
    ("gpt_neox", _spec(0.0, importance="l1", attention_ratios=[0.6, 0.0],
                       mlp_ratios=[0.0, 0.45])),
    ("gpt2", _spec(0.125, ratio="groups", importance="l1")),
    ("gpt2", _spec(0.0, importance="l1", attention_ratios=[0.375, 0.5],
                   mlp_ratios=[2.5 / 256, 0.0])),
]


@pytest.mark.parametrize("arch,spec", CASES, ids=[f"{a}-{s.label}" for a, s in CASES])
def test_realised_ratios_are_the_shrunk_widths(arch, spec):
    lm = make_lm(arch)
    pruned, info = prune_structured(lm, spec, _stats(lm))
    before = [_widths(lm.model, arch, b) for b in range(2)]
    after = [_widths(pruned.model, arch, b) for b in range(2)]
    r = info.realised
    blocks = r["attention"]["blocks"]
    assert blocks == info.blocks
    unit = r["attention"]["unit"]
    field = {"kv_group": "kv_heads", "query_head": "heads", "head": "heads"}[unit]
    if arch != "llama":
        assert unit == "head"
    for kind, key in (("attention", field), ("mlp", "mlp")):
        removed = [before[b][key] - after[b][key] for b in blocks]
        of = [before[b][key] for b in blocks]
        assert r[kind]["removed"] == sum(removed)
        assert r[kind]["of"] == sum(of)
        assert r[kind]["realised"] == pytest.approx(sum(removed) / sum(of))
        assert r[kind]["realised_per_block"] == pytest.approx([d / n for d, n in zip(removed, of, strict=True)])
        # nearest whole unit: within half a unit of the target, below it on a tie
        per_group = kind == "attention" and unit == "query_head"  # steps: heads per KV group
        steps = [before[b]["heads"] // before[b]["kv_heads"] if per_group else n
                 for b, n in zip(blocks, of, strict=True)]
        for b, t, d, n, s in zip(blocks, r[kind]["target_per_block"], removed, of, steps,
                                     strict=True):
            k = d * s // n
            assert abs(k - t * s) <= 0.5 + 1e-9, (kind, b, t, k, s)
            if abs(t * s - math.floor(t * s) - 0.5) < 1e-9:  # a tie
                assert k < t * s, (kind, b, t, k, s)
    # heads and channels outside the pruned blocks stay
    for b in range(2):
        if b not in blocks:
            assert after[b] == before[b]
    # the overall group ratio: both kinds weighted by their parameters
    m = {x["name"]: x for x in info.metrics()}
    assert m["group_ratio_attention"]["value"] == pytest.approx(
        sum(before[b]["heads"] - after[b]["heads"] for b in blocks)
        / sum(before[b]["heads"] for b in blocks))
    assert m["group_ratio_mlp"]["value"] == pytest.approx(r["mlp"]["realised"])
    overall = m["realised_group_ratio"]
    assert overall["value"] == info.realised_group_ratio == r["group_ratio"]["realised"]
    assert overall["protocol"]["realised"] == overall["value"]
    assert {"target", "attention", "mlp", "rounding", "structure_key"} <= set(overall["protocol"])
    assert overall["protocol"]["structure_key"] == info.structure_key
    assert info.realised_label.startswith("realised ")
    if spec.options["ratio"] == "groups" and not spec.options["attention_ratios"]:
        assert overall["protocol"]["target"] == pytest.approx(spec.sparsity)
    if info.target["kind"] == "params":
        assert " params (" in info.realised_label
    d = info.to_dict()
    assert d["structure_key"] == info.structure_key and d["realised_label"] == info.realised_label


def test_label_never_shows_zero_for_a_nonzero_ratio():
    lm = make_lm("llama")
    _, info = prune_structured(lm, _spec(0.0, importance="l1", attention=False,
                                         mlp_ratios=[0.004, 0.0]), _stats(lm))
    # 0.004 · 128 = 0.512 → 1 channel of the 256 in both blocks
    assert info.realised["mlp"]["removed"] == 1
    assert info.realised_label == "realised 0.4% channels"


def _key(lm, spec, stats):
    return prune_structured(lm, spec, stats)[1].structure_key


def test_structure_key_equal_exactly_when_the_same_units_are_kept():
    lm = make_lm("llama")
    stats = _stats(lm)
    qh = dict(importance="l1", attention_unit="query_head", mlp=False)
    half = _key(lm, _spec(0.5, ratio="groups", **qh), stats)
    # other specs, same structure: 0.6 · 2 = 1.2 → 1 head per group, per-layer 0.5 each
    assert _key(lm, _spec(0.6, ratio="groups", **qh), stats) == half
    assert _key(lm, _spec(0.0, attention_ratios=[0.5, 0.5], **qh), stats) == half
    assert _key(lm, _spec(0.5, ratio="groups", **qh), stats) == half  # stable
    # nothing removed: the dense structure, whatever the target said
    dense = _key(lm, _spec(0.25, ratio="groups", **qh), stats)
    assert dense != half
    assert _key(lm, _spec(0.0, attention_ratios=[0.2, 0.1], **qh), stats) == dense
    # different structures
    assert _key(lm, _spec(0.0, attention_ratios=[0.5, 0.0], **qh), stats) not in (half, dense)
    assert _key(lm, _spec(0.5, ratio="groups", importance="l1"), stats) != half
    a = _key(lm, _spec(0.5, ratio="groups", importance="random", attention=False, seed=0), stats)
    b = _key(lm, _spec(0.5, ratio="groups", importance="random", attention=False, seed=1), stats)
    assert a != b  # the same counts, other channels kept


def test_structure_key_counts_whole_kv_groups_as_their_heads():
    """kv_group units are keyed by the query and KV heads they remove, so a plan of the same
    kept heads under either unit numbering gives one key."""
    from prunestudio.engine.structured.plan import (
        BlockPlan,
        StructuredPlan,
        kept_units,
        structure_key,
    )

    original = [{"heads": 4, "kv_heads": 2, "head_dim": 16, "mlp": 8}] * 2
    by_group = StructuredPlan("kv_group", {0: BlockPlan(0, attention=(1,), mlp=(3,))})
    kept = kept_units(by_group, original)
    assert kept[0] == {"heads": [0, 1], "kv_heads": [0], "mlp": [0, 1, 2, 4, 5, 6, 7]}
    assert kept[1] == {"heads": [0, 1, 2, 3], "kv_heads": [0, 1], "mlp": list(range(8))}
    by_head = StructuredPlan("query_head", {0: BlockPlan(0, attention=(1, 3))})
    assert kept_units(by_head, original)[0]["heads"] == [0, 2]
    assert kept_units(by_head, original)[0]["kv_heads"] == [0, 1]
    assert structure_key(kept) != structure_key(kept_units(by_head, original))
    assert structure_key(kept) == structure_key(copy.deepcopy(kept))


# ------------------------------------------------------------------ the fast check


BAD = [
    (_spec(0.99, ratio="groups", importance="l1"),
     ["block 0: attention ratio 0.990", "sparsity = 0.99", "removes 2 of its 2 KV groups",
      "Allowed: sparsity ≤ 0.75"]),
    (_spec(0.99, ratio="groups", importance="l1", attention_unit="query_head"),
     ["removes 2 of its 2 query heads per KV group", "Allowed: sparsity ≤ 0.75"]),
    (_spec(0.999, ratio="groups", importance="l1", attention=False),
     ["block 0: MLP ratio", "removes 128 of its 128 channels", "Allowed: sparsity ≤ 0.9961"]),
    (_spec(0.0, importance="l1", mlp_ratios=[0.999, 0.0]),
     ["block 0: MLP ratio", "mlp_ratios[0] = 0.999", "Allowed: mlp_ratios[0] ≤ 0.9961"]),
    (_spec(0.0, importance="l1", attention_ratios=[0.0, 0.9]),
     ["block 1: attention ratio", "attention_ratios[1] = 0.9", "Allowed: attention_ratios[1] ≤ 0.75"]),
    (_spec(0.99, importance="l1"), ["cannot remove 99.0%", "sparsity", "allowed <"]),
    (_spec(0.9, importance="l1", block_start=1), ["cannot remove 90.0%"]),
    (_spec(0.0, importance="l1", attention_ratios=[0.5]), ["attention_ratios has 1 values; the model has 2"]),
    (_spec(0.2, importance="l1", block_start=2), ["block range", "block_start"]),
]


@pytest.mark.parametrize("spec,parts", BAD, ids=[s.label + str(i) for i, (s, _) in enumerate(BAD)])
def test_check_rejects_impossible_specs_before_any_run(spec, parts):
    lm = make_lm("llama")
    state = {k: v.clone() for k, v in lm.model.state_dict().items()}
    for source in (lm, lm.model, lm.model.config):
        with pytest.raises(ValueError) as exc:
            check_structured_spec(source, spec)
        assert isinstance(exc.value, StructureError)
        for part in parts:
            assert part in str(exc.value), (part, str(exc.value))
    # the same message the candidate itself would fail with
    with pytest.raises(StructureError) as run_exc:
        prune_structured(lm, spec, _stats(lm))
    assert str(run_exc.value) == str(exc.value)
    for k, v in lm.model.state_dict().items():
        assert torch.equal(v, state[k])


@pytest.mark.parametrize("arch", ["llama", "opt", "gpt_neox", "gpt2"])
def test_check_accepts_possible_specs(arch):
    lm = make_lm(arch)
    for spec in (_spec(0.25, ratio="groups", importance="l1"), _spec(0.2, importance="l1"),
                 _spec(0.75, ratio="groups", importance="l1", attention_unit="query_head"),
                 _spec(0.0, importance="l1", attention_ratios=[0.75, 0.0], mlp_ratios=[0.9, 0.1]),
                 CandidateSpec(method="magnitude", sparsity=0.99),
                 CandidateSpec(method="dense")):
        check_structured_spec(lm, spec)
        check_structured_spec(lm.model.config, spec)


def test_check_rejects_an_attention_layout_it_cannot_cut():
    lm = make_lm("llama", num_key_value_heads=3)  # 4 query heads over 3 KV heads
    with pytest.raises(StructureError, match="4 query heads over 3 KV heads"):
        check_structured_spec(lm.model.config, _spec(0.25, ratio="groups", importance="l1"))


def test_check_reads_a_pruned_models_recorded_widths():
    """A config with per-layer widths (a pruned model) is checked at those widths: block 0 has
    one KV group left, so a group ratio of 0.6 would empty it."""
    lm = make_lm("llama")
    pruned, _ = prune_structured(lm, _spec(0.0, importance="l1", attention_ratios=[0.5, 0.0]),
                                 None)
    spec = _spec(0.6, ratio="groups", importance="l1")  # 0.6 · 2 → 1 group; 0.6 · 1 → 1
    check_structured_spec(lm.model.config, spec)  # the original: fine
    for source in (pruned, pruned.model.config):
        with pytest.raises(StructureError, match="block 0: attention ratio 0.600 .* removes 1 "
                                                 "of its 1 KV groups"):
            check_structured_spec(source, spec)


@pytest.mark.parametrize("ratio,text", [
    (0.0, "0%"), (0.25, "25%"), (0.1875, "18.8%"), (0.125, "12.5%"), (0.0004, "0.04%"),
    (0.9999, ">99.9%"), (1 / 3, "33.3%"), (1.0, "100%"),
])
def test_label_percentages(ratio, text):
    from prunestudio.engine.structured.apply import _pct

    assert _pct(ratio) == text
