"""Structured pruning on every family with a structured layout (tiny models, CPU).

For each family: attention units and MLP channels are removed in every block through the
engine's public path (`prune_structured`); the parameter count falls by exactly what the
hand-written slices of the removed units hold (`structured_testlib`, independent of the engine);
the shrunk model computes what the model with those units zeroed computes (OLMo 2: what a model
built by hand without those heads computes — zeroing is not removing there, see
`test_olmo2_shrink_is_the_model_built_without_the_heads`); its perplexity is finite; and the
export reloads with identical logits — plain `from_pretrained` when the config can express the
widths, the folder's remote code / `load_pruned` otherwise. Layouts that cannot be cut are
refused with a message naming what is allowed.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path

import pytest
import torch
from engine_testlib import (
    FAMILY_ARCHS,
    make_any_lm,
    make_lm,
    random_ids,
    ref_ppl,
)
from prunestudio.engine.calibration import StatsCache, calibration_hash
from prunestudio.engine.predictor.layout import model_layout
from prunestudio.engine.structured import (
    StructureError,
    check_structured_spec,
    export_pruned,
    load_pruned,
    prune_structured,
)
from prunestudio.engine.structured.apply import plan_structured
from prunestudio.engine.structured.groups import block_groups
from prunestudio.engine.structured.importance import group_scores
from prunestudio.engine.structured.plan import (
    BlockPlan,
    StructuredPlan,
    layer_widths,
    mask,
    shrink,
)
from structured_testlib import modules, slice_weight, unit_param_count, unit_slices
from transformers import AutoModelForCausalLM

from prunestudio.schema.spec import CandidateSpec

# Families whose attention needs query heads (multi-query: one KV head) or has no GQA
QUERY_HEAD_ONLY = {"falcon"}
# per-block ratios, different per block (remote code on export)
NON_UNIFORM = {
    arch: dict(attention_ratios=[0.5, 0.25] if arch in ("phi", "falcon", "gpt2", "opt",
                                                         "gpt_neox") else [0.5, 0.0],
               mlp_ratios=[0.25, 0.5])
    for arch in FAMILY_ARCHS
}
IMPORTANCE = {"mixtral": "activation", "phi3": "taylor_mix", "falcon": "l2", "olmo2": "l1"}
# uniform head pruning that plain `from_pretrained` can rebuild: the config class declares
# num_attention_heads, num_key_value_heads and head_dim (others derive head_dim from
# hidden_size / heads, so fewer heads need the remote code)
PLAIN_HEADS = {"llama", "mistral", "qwen3", "gemma2", "gemma3_text", "mixtral"}
MLP_FIELD = {"opt": "ffn_dim", "gpt2": "n_inner", "falcon": "ffn_hidden_size"}


def _spec(sparsity: float = 0.0, **options) -> CandidateSpec:
    return CandidateSpec(method="structured", sparsity=sparsity, options=options)


def _stats(lm) -> StatsCache:
    ids = random_ids(3, 16, vocab=lm.model.config.vocab_size, seed=1)
    return StatsCache(lm, ids, calibration_hash(ids), use_disk=False)


def _logits(model, ids):
    with torch.no_grad():
        return model(ids, use_cache=False).logits


def _n_params(model) -> int:
    return sum(p.numel() for p in {id(p): p for p in model.parameters()}.values())


def _unit(arch: str, options: dict) -> str:
    return options.get("attention_unit", "query_head" if arch in QUERY_HEAD_ONLY else "kv_group")


def _removed_params(lm, arch, plan) -> int:
    removed = 0
    for b, bp in plan.blocks.items():
        removed += sum(unit_param_count(lm.model, arch, b, "attention", u, plan.attention_unit)
                       for u in bp.attention)
        removed += sum(unit_param_count(lm.model, arch, b, "mlp", u) for u in bp.mlp)
    return removed


# ------------------------------------------------------------------ OLMo 2: built by hand


@torch.no_grad()
def olmo2_without(model, plan: StructuredPlan):
    """A copy of an OLMo 2 model with the plan's KV groups and MLP channels taken out by hand:
    every linear rebuilt from the kept rows / columns, the q / k norm weights kept for the kept
    rows (so each norm averages over the kept heads only), the head-count attribute set."""
    from torch import nn

    out = copy.deepcopy(model)
    cfg = model.config
    hd = cfg.hidden_size // cfg.num_attention_heads
    rep = cfg.num_attention_heads // cfg.num_key_value_heads
    for b, bp in plan.blocks.items():
        att, mlp = out.model.layers[b].self_attn, out.model.layers[b].mlp
        kv = [g for g in range(cfg.num_key_value_heads) if g not in bp.attention]
        q_rows = torch.tensor([(g * rep + j) * hd + d for g in kv for j in range(rep)
                               for d in range(hd)])
        k_rows = torch.tensor([g * hd + d for g in kv for d in range(hd)])
        chans = torch.tensor([c for c in range(mlp.down_proj.in_features) if c not in bp.mlp])

        def linear(w):
            lin = nn.Linear(w.shape[1], w.shape[0], bias=False)
            lin.weight = nn.Parameter(w.clone())
            return lin

        att.q_proj = linear(att.q_proj.weight[q_rows])
        att.k_proj = linear(att.k_proj.weight[k_rows])
        att.v_proj = linear(att.v_proj.weight[k_rows])
        att.o_proj = linear(att.o_proj.weight[:, q_rows])
        att.q_norm.weight = nn.Parameter(att.q_norm.weight[q_rows].clone())
        att.k_norm.weight = nn.Parameter(att.k_norm.weight[k_rows].clone())
        att.num_key_value_groups = len(q_rows) // len(k_rows)
        mlp.gate_proj = linear(mlp.gate_proj.weight[chans])
        mlp.up_proj = linear(mlp.up_proj.weight[chans])
        mlp.down_proj = linear(mlp.down_proj.weight[:, chans])
    return out


def _reference(lm, arch, plan):
    """What the shrunk model must compute: the zeroed units (OLMo 2: built by hand)."""
    if arch == "olmo2":
        return olmo2_without(lm.model, plan)
    masked = copy.deepcopy(lm.model)
    mask(masked, lm.adapter, plan)
    return masked


# ------------------------------------------------------------------ every family


def _export_and_reload(model, folder: Path, plain: bool):
    out = export_pruned(model, None, folder)
    assert out.plain_from_pretrained == plain
    attn = model.config._attn_implementation  # the same kernels: identical logits
    if plain:
        return out, AutoModelForCausalLM.from_pretrained(out.path, attn_implementation=attn)
    assert out.remote_code
    with pytest.raises(Exception, match="(?i)size|shape"):  # not without the remote code
        AutoModelForCausalLM.from_pretrained(out.path)
    return out, AutoModelForCausalLM.from_pretrained(out.path, trust_remote_code=True,
                                                     attn_implementation=attn)


@pytest.mark.parametrize("arch", FAMILY_ARCHS)
def test_per_block_widths_shrink_match_reference_and_round_trip(arch, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "hf-modules"))
    lm = make_lm(arch)
    options = dict(NON_UNIFORM[arch], importance=IMPORTANCE.get(arch, "taylor_first"),
                   attention_unit=_unit(arch, NON_UNIFORM[arch]))
    spec = _spec(**options)
    stats = _stats(lm)
    ids = random_ids(2, 20, seed=7)
    dense = _logits(lm.model, ids)
    plan, _, _ = plan_structured(lm, spec, stats)
    pruned, info = prune_structured(lm, spec, stats)
    assert torch.equal(_logits(lm.model, ids), dense)  # the original is untouched

    # every block lost attention units and MLP channels, as many as the hand-written
    # slices of the removed units hold
    assert sorted(plan.blocks) == [0, 1]
    assert all(bp.mlp for bp in plan.blocks.values()) and plan.blocks[0].attention
    removed = _removed_params(lm, arch, plan)
    assert info.params_before - info.params_after == removed > 0
    assert _n_params(pruned.model) == _n_params(lm.model) - removed

    got = _logits(pruned.model, ids)
    torch.testing.assert_close(got, _logits(_reference(lm, arch, plan), ids), rtol=1e-5,
                               atol=1e-5)
    assert not torch.allclose(got, dense, atol=1e-4)
    assert math.isfinite(ref_ppl(pruned.model, ids[:1, :12]))

    # per-block widths: the folder's remote code and load_pruned rebuild it exactly
    assert not info.plain_from_pretrained
    out, reloaded = _export_and_reload(pruned.model, tmp_path / f"{arch}-nonuniform", False)
    assert type(reloaded).__name__ == "PruneStudioForCausalLM"
    assert torch.equal(_logits(reloaded, ids), got)
    again = load_pruned(out.path)
    assert torch.equal(_logits(again, ids), got)
    assert layer_widths(again, lm.adapter) == info.layers
    # the recorded widths are what the structure check reads (a meta-device rebuild)
    check_structured_spec(pruned.model.config, spec)


@pytest.mark.parametrize("arch", FAMILY_ARCHS)
def test_uniform_widths_export_plain_where_the_config_can_say_so(arch, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "hf-modules"))
    lm = make_lm(arch, seed=3)
    spec = _spec(0.5, ratio="groups", importance="l1", attention_unit=_unit(arch, {}))
    pruned, info = prune_structured(lm, spec, None)
    assert all(layer == info.layers[0] for layer in info.layers)
    before = layer_widths(lm.model, lm.adapter)[0]
    assert info.layers[0]["heads"] < before["heads"] and info.layers[0]["mlp"] < before["mlp"]
    assert info.layers[0]["head_dim"] == before["head_dim"]  # heads stay whole
    ids = random_ids(2, 16, seed=4)
    want = _logits(pruned.model, ids)
    plain = arch in PLAIN_HEADS
    assert info.plain_from_pretrained == plain
    out, reloaded = _export_and_reload(pruned.model, tmp_path / f"{arch}-uniform", plain)
    assert torch.equal(_logits(reloaded, ids), want)
    if plain:
        cfg = json.loads((out.path / "config.json").read_text())
        assert cfg["num_attention_heads"] == info.layers[0]["heads"]
        assert cfg["num_key_value_heads"] == info.layers[0]["kv_heads"]
        assert cfg["head_dim"] == info.layers[0]["head_dim"]
        assert cfg["intermediate_size"] == info.layers[0]["mlp"]
        assert "auto_map" not in cfg


@pytest.mark.parametrize("arch", FAMILY_ARCHS)
def test_uniform_mlp_pruning_exports_plain_for_every_family(arch, tmp_path):
    lm = make_lm(arch, seed=5)
    pruned, info = prune_structured(lm, _spec(0.25, ratio="groups", importance="l2",
                                              attention=False), None)
    assert info.plain_from_pretrained
    ids = random_ids(1, 16, seed=6)
    out, reloaded = _export_and_reload(pruned.model, tmp_path / f"{arch}-mlp", True)
    assert torch.equal(_logits(reloaded, ids), _logits(pruned.model, ids))
    cfg = json.loads((out.path / "config.json").read_text())
    assert cfg[MLP_FIELD.get(arch, "intermediate_size")] == info.layers[0]["mlp"]


@pytest.mark.parametrize("arch", FAMILY_ARCHS)
def test_predictor_layout_counts_what_pruning_removes(arch):
    """The search space's per-step parameter counts (OLMo 2's norm entries, a channel of
    every expert) are exactly what a per-block spec removes."""
    lm = make_lm(arch, seed=6)
    unit = _unit(arch, {})
    layout = model_layout(lm, unit)
    ks = {"att": [1, 0], "mlp": [3, 5]}
    want = 0
    ratios = {"att": [], "mlp": []}
    for b, bl in enumerate(layout.blocks):
        want += ks["att"][b] * bl.att_params + ks["mlp"][b] * bl.mlp_params
        ratios["att"].append(ks["att"][b] / bl.att_units)
        ratios["mlp"].append(ks["mlp"][b] / bl.mlp_units)
    _, info = prune_structured(lm, _spec(importance="l1", attention_unit=unit,
                                         attention_ratios=ratios["att"],
                                         mlp_ratios=ratios["mlp"]), None)
    assert info.params_before - info.params_after == want


# ------------------------------------------------------------------ family specifics


def test_olmo2_shrink_is_the_model_built_without_the_heads(tmp_path):
    """OLMo 2's q_norm / k_norm are RMS norms over the whole projection (heads × head_dim).
    Removing heads slices their weights, so each norm then averages over the kept heads only:
    the shrunk model is the model built without those heads, *not* the model with them
    zeroed (a zeroed head still counts in the mean square). `mask` refuses to pretend."""
    lm = make_lm("olmo2", seed=2)
    spec = _spec(0.5, ratio="groups", importance="l1")  # 1 of 2 KV groups, half the channels
    plan, _, _ = plan_structured(lm, spec, None)
    pruned, info = prune_structured(lm, spec, None)
    att = pruned.model.model.layers[0].self_attn
    assert tuple(att.q_norm.weight.shape) == (32,) and tuple(att.k_norm.weight.shape) == (16,)
    ids = random_ids(2, 20, seed=3)
    got = _logits(pruned.model, ids)
    torch.testing.assert_close(got, _logits(olmo2_without(lm.model, plan), ids), rtol=1e-5,
                               atol=1e-5)
    zeroed = copy.deepcopy(lm.model)
    for b, bp in plan.blocks.items():  # the zeroed model, by hand: not the same function
        a, hd = zeroed.model.layers[b].self_attn, 16
        for g in bp.attention:
            q, k = slice(g * 2 * hd, (g + 1) * 2 * hd), slice(g * hd, (g + 1) * hd)
            a.q_proj.weight.data[q] = 0
            a.k_proj.weight.data[k] = 0
            a.v_proj.weight.data[k] = 0
            a.o_proj.weight.data[:, q] = 0
        m = zeroed.model.layers[b].mlp
        m.gate_proj.weight.data[list(bp.mlp)] = 0
    assert not torch.allclose(_logits(zeroed, ids), got, atol=1e-4)
    with pytest.raises(StructureError, match="olmo2: zeroing attention heads is not"):
        mask(copy.deepcopy(lm.model), lm.adapter, plan)
    # MLP channels alone: zeroing is removing
    mlp_only = StructuredPlan("kv_group", {b: BlockPlan(b, (), bp.mlp)
                                           for b, bp in plan.blocks.items()})
    masked, shrunk = copy.deepcopy(lm.model), copy.deepcopy(lm.model)
    mask(masked, lm.adapter, mlp_only)
    shrink(shrunk, lm.adapter, mlp_only)
    torch.testing.assert_close(_logits(shrunk, ids), _logits(masked, ids), rtol=1e-5, atol=1e-5)
    # OLMo 2's config derives head_dim (no such field): fewer heads go through remote code
    assert not info.plain_from_pretrained
    out = export_pruned(pruned.model, None, tmp_path / "olmo2-uniform")
    assert torch.equal(_logits(load_pruned(out.path), ids), got)


@pytest.mark.parametrize("arch", ["qwen3", "gemma3_text"])
def test_per_head_qk_norms_are_untouched(arch):
    """Qwen 3 and Gemma 3 normalise q and k per head (over head_dim): removing heads leaves
    the norms as they are, and the shrunk model equals the zeroed one."""
    lm = make_lm(arch, seed=4)
    dense = {n: p.clone() for n, p in lm.model.named_parameters() if "_norm" in n}
    spec = _spec(importance="l1", attention_ratios=[0.5, 0.5], mlp_ratios=[0.0, 0.0])
    plan, _, _ = plan_structured(lm, spec, None)
    pruned, info = prune_structured(lm, spec, None)
    assert [layer["heads"] for layer in info.layers] == [2, 2]
    for n, p in pruned.model.named_parameters():
        if "_norm" in n:
            assert torch.equal(p, dense[n]), n
    masked = copy.deepcopy(lm.model)
    mask(masked, lm.adapter, plan)
    ids = random_ids(2, 16, seed=5)
    torch.testing.assert_close(_logits(pruned.model, ids), _logits(masked, ids), rtol=1e-5,
                               atol=1e-5)


def test_gemma_keeps_its_head_dim_scaling_and_validates_its_config(tmp_path, monkeypatch):
    """Gemma's head_dim (32) is not hidden / heads (16) and its attention scale comes from
    query_pre_attn_scalar: pruning heads changes neither. Gemma 2 / 3 configs require
    hidden_size divisible by the heads, so 3 heads of hidden 64 cannot be plain."""
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "hf-modules"))
    lm = make_lm("gemma2", seed=1)
    scaling = lm.model.model.layers[0].self_attn.scaling
    pruned, info = prune_structured(lm, _spec(0.5, ratio="groups", importance="l1"), None)
    att = pruned.model.model.layers[0].self_attn
    assert att.scaling == scaling and att.head_dim == 32 and att.num_key_value_groups == 2
    assert pruned.model.config.head_dim == 32 and pruned.model.config.num_attention_heads == 2
    # 4 heads, no GQA: one removed head leaves 3, which Gemma2Config's validation rejects
    lm = make_lm("gemma2", seed=1, num_key_value_heads=4)
    pruned, info = prune_structured(lm, _spec(0.25, ratio="groups", importance="l1",
                                              mlp=False), None)
    assert info.layers[0]["heads"] == info.layers[1]["heads"] == 3
    assert not info.plain_from_pretrained
    ids = random_ids(1, 16, seed=2)
    _, reloaded = _export_and_reload(pruned.model, tmp_path / "gemma2-3heads", False)
    assert torch.equal(_logits(reloaded, ids), _logits(pruned.model, ids))


def test_phi3_blocks_with_their_own_head_counts():
    """Phi-3's attention reads num_attention_heads from its config: a block with fewer heads
    sees its own count, while the model's config (and the other blocks) keep theirs, and later
    config changes still reach it."""
    lm = make_lm("phi3", seed=2)
    pruned, info = prune_structured(lm, _spec(importance="l1", attention_ratios=[0.5, 0.0],
                                              mlp_ratios=[0.0, 0.25]), None)
    layers = pruned.model.model.layers
    assert layers[0].self_attn.config.num_attention_heads == 2
    assert layers[0].self_attn.config.num_key_value_heads == 1
    assert layers[1].self_attn.config.num_attention_heads == 4
    assert pruned.model.config.num_attention_heads == 4
    assert lm.model.model.layers[0].self_attn.config.num_attention_heads == 4  # original
    pruned.model.config.sliding_window = 7
    assert layers[0].self_attn.config.sliding_window == 7
    assert tuple(layers[0].self_attn.qkv_proj.weight.shape) == ((2 + 2 * 1) * 16, 64)
    assert tuple(layers[1].mlp.gate_up_proj.weight.shape) == (2 * 96, 64)


@pytest.mark.parametrize("overrides,unit,ratios,layers", [
    (dict(new_decoder_architecture=True, num_kv_heads=2), "kv_group", [0.5, 0.0],
     [(2, 1), (4, 2)]),
    (dict(new_decoder_architecture=True, num_kv_heads=2), "query_head", [0.5, 0.5],
     [(2, 2), (2, 2)]),
    (dict(multi_query=False), "kv_group", [0.5, 0.25], [(2, 2), (3, 3)]),
    ({}, "query_head", [0.75, 0.25], [(1, 1), (3, 1)]),
], ids=["grouped-kv_group", "grouped-query_head", "multi_head", "multi_query"])
def test_falcon_layouts(overrides, unit, ratios, layers, tmp_path, monkeypatch):
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "hf-modules"))
    lm = make_lm("falcon", seed=3, **overrides)
    spec = _spec(importance="l1", attention_unit=unit, attention_ratios=ratios,
                 mlp_ratios=[0.25, 0.0])
    plan, _, _ = plan_structured(lm, spec, None)
    pruned, info = prune_structured(lm, spec, None)
    assert [(w["heads"], w["kv_heads"]) for w in info.layers] == layers
    assert info.params_before - info.params_after == _removed_params(lm, "falcon", plan)
    ids = random_ids(2, 16, seed=4)
    got = _logits(pruned.model, ids)
    torch.testing.assert_close(got, _logits(_reference(lm, "falcon", plan), ids), rtol=1e-5,
                               atol=1e-5)
    _, reloaded = _export_and_reload(pruned.model, tmp_path / "falcon", False)
    assert torch.equal(_logits(reloaded, ids), got)


def test_falcon_refusals_name_what_is_allowed():
    lm = make_lm("falcon")  # multi-query: 4 query heads, one shared KV head
    with pytest.raises(StructureError, match="share one KV head.*allowed: attention_unit = "
                                             "'query_head'"):
        check_structured_spec(lm, _spec(0.25, ratio="groups", importance="l1"))
    alibi = make_lm("falcon", alibi=True)
    with pytest.raises(StructureError, match="alibi.*allowed: MLP pruning only"):
        check_structured_spec(alibi, _spec(0.25, ratio="groups", importance="l1",
                                           attention_unit="query_head"))
    with pytest.raises(StructureError, match="alibi"):
        shrink(copy.deepcopy(alibi.model), alibi.adapter,
               StructuredPlan("query_head", {0: BlockPlan(0, attention=(0,))}))
    pruned, info = prune_structured(alibi, _spec(0.25, ratio="groups", importance="l1",
                                                 attention=False), None)
    assert [w["mlp"] for w in info.layers] == [192, 192] and info.plain_from_pretrained


def test_mixtral_expert_channels_each_expert_ranked_on_its_own():
    lm = make_lm("mixtral", seed=1)
    width, experts = 64, 4
    att, mlp = block_groups(lm.adapter, lm.model, 0)
    assert mlp.n_units == experts * width and tuple(mlp.partition.shape) == (experts, width)
    # scores from the hand-written slices of each expert's own weights
    mods = modules(lm.model, "mixtral", 0)
    for how in ("sum", "mean", "max", "last"):
        got = group_scores(mlp, "l1", how)
        for u in (0, 5, width + 7, 3 * width + 63):
            parts = [float(slice_weight(mods[key], rows, cols).double().abs().sum())
                     for key, _, rows, cols in unit_slices(lm.model, "mixtral", 0, "mlp", u)]
            want = {"sum": sum(parts), "mean": sum(parts) / 3, "max": max(parts),
                    "last": parts[-1]}[how]
            assert float(got[u]) == pytest.approx(want, rel=1e-6), (how, u)
    router = lm.model.model.layers[0].mlp.gate.weight.clone()
    spec = _spec(importance="l1", attention_ratios=[0.0, 0.0], mlp_ratios=[0.25, 0.5])
    plan, _, _ = plan_structured(lm, spec, None)
    pruned, info = prune_structured(lm, spec, None)
    removed = [sorted(u % width for u in plan.blocks[0].mlp if u // width == e)
               for e in range(experts)]
    assert all(len(r) == 16 for r in removed) and len({tuple(r) for r in removed}) > 1
    ex = pruned.model.model.layers[0].mlp.experts
    assert tuple(ex.gate_up_proj.shape) == (experts, 2 * 48, 64)
    assert tuple(ex.down_proj.shape) == (experts, 64, 48) and ex.intermediate_dim == 48
    assert torch.equal(pruned.model.model.layers[0].mlp.gate.weight, router)  # router kept
    assert [w["mlp"] for w in info.layers] == [48, 32]
    assert info.realised["mlp"]["realised_per_block"] == [0.25, 0.5]
    # an explicit plan that leaves experts with unequal widths is refused
    bad = StructuredPlan("kv_group", {0: BlockPlan(0, mlp=(0, 1, width))})
    with pytest.raises(StructureError, match="same width in every expert"):
        shrink(copy.deepcopy(lm.model), lm.adapter, bad)


def test_qwen2_moe_prunes_attention_and_refuses_its_mixed_mlp(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_MODULES_CACHE", str(tmp_path / "hf-modules"))
    lm = make_any_lm("qwen2_moe")
    with pytest.raises(StructureError, match="shared expert.*allowed here: attention pruning "
                                             "only"):
        check_structured_spec(lm, _spec(0.25, ratio="groups", importance="l1"))
    spec = _spec(importance="l1", attention_ratios=[0.5, 0.0], mlp_ratios=[0.0, 0.0])
    plan, _, _ = plan_structured(lm, spec, None)
    pruned, info = prune_structured(lm, spec, None)
    assert [w["heads"] for w in info.layers] == [2, 4]
    masked = copy.deepcopy(lm.model)
    mask(masked, lm.adapter, plan)
    ids = random_ids(1, 16, seed=2)
    got = _logits(pruned.model, ids)
    torch.testing.assert_close(got, _logits(masked, ids), rtol=1e-5, atol=1e-5)
    out = export_pruned(pruned.model, None, tmp_path / "qwen2moe")
    reloaded = AutoModelForCausalLM.from_pretrained(out.path, trust_remote_code=True)
    assert torch.equal(_logits(reloaded, ids), got)


def test_generic_models_are_refused_naming_the_families_that_work():
    lm = make_any_lm("starcoder2")  # no family adapter: generic discovery
    spec = _spec(0.25, ratio="groups", importance="l1")
    for call in (lambda: check_structured_spec(lm, spec),
                 lambda: check_structured_spec(lm.model.config, spec),
                 lambda: prune_structured(lm, spec, None)):
        with pytest.raises(StructureError) as err:
            call()
        text = str(err.value)
        assert "structured pruning needs a family adapter" in text
        assert "'starcoder2'" in text and "generic discovery" in text
        for family in ("llama (llama, mistral", "gemma (", "olmo2 (", "moe (mixtral", "phi3 (",
                       "phi (", "falcon (", "opt (", "gpt_neox (", "gpt2 ("):
            assert family in text, family
