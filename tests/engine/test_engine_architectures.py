"""Every supported family prunes with every method, in the right orientation, touching only
the decoder blocks' linear layers, and still evaluates."""

from __future__ import annotations

import math

import pytest
import torch
from engine_testlib import (
    ARCHS,
    capture_linear_inputs,
    is_conv1d,
    linear_modules,
    logical_weight,
    make_lm,
    random_ids,
    ref_row_mask,
    ref_x_sqnorm,
)
from prunestudio.engine.calibration import StatsCache, calibration_hash
from prunestudio.engine.data.windows import WindowSpec, build_windows
from prunestudio.engine.evaluate.perplexity import perplexity
from prunestudio.engine.pruning import prune_model
from prunestudio.engine.spec import CandidateSpec

EXPECTED_KINDS = {
    "llama": ["q", "k", "v", "o", "gate", "up", "down"],
    "opt": ["q", "k", "v", "o", "fc1", "fc2"],
    "gpt_neox": ["qkv", "o", "fc1", "fc2"],
    "gpt2": ["qkv", "o", "fc1", "fc2"],
}


@pytest.mark.parametrize("arch", ARCHS)
def test_adapter_lists_every_linear_layer_of_every_block(arch):
    lm = make_lm(arch)
    lins = lm.adapter.all_prunable_linears(lm.model)
    found = linear_modules(lm.model)  # walked independently of the adapter
    assert sorted(lin.name for lin in lins) == sorted(found)
    assert [lin.kind for lin in lins if lin.block == 0] == EXPECTED_KINDS[arch]
    for lin in lins:
        mod = found[lin.name]
        assert lin.module is mod
        assert lin.transposed == is_conv1d(mod) == (arch == "gpt2")
        assert torch.equal(lin.weight, logical_weight(mod))
        assert lin.weight.data_ptr() == mod.weight.data_ptr()  # a view: edits reach the model
    if arch == "llama":  # GQA: k and v have 2 KV heads × 16 = 32 outputs
        shapes = {lin.kind: tuple(lin.weight.shape) for lin in lins if lin.block == 0}
        assert shapes["q"] == (64, 64) and shapes["k"] == shapes["v"] == (32, 64)
    if arch == "gpt2":  # c_attn is (in 64, out 192) as stored, (192, 64) logically
        c_attn = lins[0]
        assert c_attn.module.weight.shape == (64, 192) and c_attn.weight.shape == (192, 64)
        assert (c_attn.out_features, c_attn.in_features) == (192, 64)


def test_gpt2_conv1d_layers_are_pruned_per_logical_output_row():
    lm = make_lm("gpt2", seed=12)
    ids = random_ids(4, 16, seed=12)
    dense = {n: logical_weight(m).clone() for n, m in linear_modules(lm.model).items()}
    block0 = [n for n in dense if ".h.0." in n]
    own = capture_linear_inputs(lm.model, block0, ids)
    prune_model(lm, CandidateSpec(method="wanda", sparsity=0.5),
                StatsCache(lm, ids, calibration_hash(ids)))
    mods = linear_modules(lm.model)
    for short in ("attn.c_attn", "attn.c_proj", "mlp.c_fc", "mlp.c_proj"):
        name = f"transformer.h.0.{short}"
        stored = mods[name].weight.detach()  # (in, out)
        n_in = stored.shape[0]
        # each stored *column* is one logical output row: exactly half its entries are zero
        assert bool(((stored == 0).sum(0) == n_in // 2).all()), name
        x = ref_x_sqnorm(own[name], 4)
        expect = ref_row_mask(dense[name].double().abs() * x.sqrt().reshape(1, -1), 0.5)
        assert torch.equal((stored == 0).t(), expect), name


@pytest.mark.parametrize("method", ["wanda", "sparsegpt", "gblm", "magnitude"])
@pytest.mark.parametrize("arch", ARCHS)
def test_prune_and_evaluate_every_family(arch, method, byte_tok):
    lm = make_lm(arch, seed=13)
    calib = build_windows(WindowSpec(source="pydoc", seqlen=32, n=4, selection="random",
                                     seed=0, end=20000), byte_tok)
    evaluation = build_windows(WindowSpec(source="pydoc", seqlen=32, n=3, offset=20000),
                               byte_tok)
    dense_ppl = perplexity(lm.model, evaluation, lm.device).ppl
    untouched = {n: p.detach().clone() for n, p in lm.model.named_parameters()
                 if n.removesuffix(".weight") not in linear_modules(lm.model)}
    assert any("emb" in n or "wte" in n for n in untouched)

    spec = CandidateSpec(method=method, sparsity=0.5)
    result = prune_model(lm, spec, StatsCache(lm, calib.ids, calib.tokens_hash))

    mods = linear_modules(lm.model)
    assert set(result.layer_sparsity) == set(mods)
    for n, m in mods.items():
        realised = float((m.weight == 0).float().mean())
        assert abs(realised - 0.5) <= 0.001, (n, realised)
        assert result.layer_sparsity[n] == pytest.approx(realised)
    assert abs(result.overall_sparsity - 0.5) <= 0.001
    for n, p in lm.model.named_parameters():  # embeddings, lm_head, norms, biases
        if n in untouched:
            assert torch.equal(p.detach(), untouched[n]), f"{n} changed"
    ppl = perplexity(lm.model, evaluation, lm.device).ppl
    assert math.isfinite(ppl) and ppl > 1
    assert ppl != pytest.approx(dense_ppl, rel=1e-6)


@pytest.mark.parametrize("sparsity", [0.25, 0.75])
def test_realised_sparsity_matches_other_targets(sparsity):
    lm = make_lm("opt", seed=14)
    ids = random_ids(3, 16, seed=14)
    result = prune_model(lm, CandidateSpec(method="sparsegpt", sparsity=sparsity),
                         StatsCache(lm, ids, calibration_hash(ids)))
    for n, m in linear_modules(lm.model).items():
        assert abs(float((m.weight == 0).float().mean()) - sparsity) <= 0.001, n
    assert result.max_target_error <= 0.001
