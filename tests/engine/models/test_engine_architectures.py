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

from prunestudio.schema.spec import CandidateSpec

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


CONTEXT = {"llama": ("rotary", "max_position_embeddings"), "opt": ("learned",
           "max_position_embeddings"), "gpt_neox": ("rotary", "max_position_embeddings"),
           "gpt2": ("learned", "n_positions")}


@pytest.mark.parametrize("arch", ARCHS)
def test_every_family_states_its_context_and_its_head_config_passes(arch):
    from prunestudio.engine.models.loading import context_length

    lm = make_lm(arch)
    lm.adapter.check_config(lm.model.config)  # a working model's config passes
    assert context_length(lm) == 256  # engine_testlib's tiny configs
    assert (lm.adapter.positions, lm.adapter.context_field()) == CONTEXT[arch]


@pytest.mark.parametrize("arch", ["opt", "gpt2"])
def test_learned_positions_run_up_to_the_limit_and_are_refused_past_it(arch):
    from prunestudio.engine.models.loading import ContextLengthError, check_context

    lm = make_lm(arch)
    limit = 256
    check_context(lm, limit, "calibration")  # exactly the context: fine, and it runs
    with torch.no_grad():
        lm.model(random_ids(1, limit))
        with pytest.raises(IndexError):  # what every candidate hit before the check
            lm.model(random_ids(1, limit + 1))
    with pytest.raises(ContextLengthError) as exc:
        check_context(lm, limit + 1, "evaluation 'in_domain'")
    text = str(exc.value)
    field = CONTEXT[arch][1]
    assert text.startswith("evaluation 'in_domain': windows of 257 tokens are longer than the "
                           "model's context of 256 tokens; ")
    assert f"learns one position embedding per position ({field} = 256)" in text
    assert "cannot run" in text and text.endswith("Use seqlen ≤ 256")


@pytest.mark.parametrize("arch", ["llama", "gpt_neox"])
def test_rope_models_past_their_trained_context_are_refused_as_not_comparable(arch, byte_tok):
    from prunestudio.engine.models.loading import ContextLengthError, check_context

    lm = make_lm(arch)
    fits = build_windows(WindowSpec(source="pydoc", seqlen=256, n=1), byte_tok)
    check_context(lm, fits, "search split")  # Windows and WindowSpec work as well as ints
    check_context(lm, fits.spec, "search split")
    with pytest.raises(ContextLengthError) as exc:
        check_context(lm, WindowSpec(source="pydoc", seqlen=1024, n=1), "calibration")
    text = str(exc.value)
    assert text.startswith("calibration: windows of 1024 tokens are longer than the model's "
                           "context of 256 tokens; ")
    assert "rotary position embeddings (RoPE)" in text and "trained for 256 positions" in text
    assert "not comparable" in text
    assert isinstance(exc.value, ValueError)


@pytest.mark.parametrize("arch,overrides,expected", [
    ("llama", {"num_attention_heads": 6, "num_key_value_heads": 4, "head_dim": 16},
     "num_attention_heads (6) is not divisible by num_key_value_heads (4)"),
    ("llama", {"num_attention_heads": 4, "num_key_value_heads": 8, "head_dim": 16},
     "num_attention_heads (4) is not divisible by num_key_value_heads (8)"),
    ("gpt2", {"n_head": 6}, "hidden_size (64) is not divisible by num_attention_heads (6)"),
    ("opt", {"num_attention_heads": 5}, "hidden_size (64) is not divisible by "
     "num_attention_heads (5)"),
    ("gpt_neox", {"num_attention_heads": 0}, "num_attention_heads = 0"),
])
def test_head_counts_that_cannot_work_are_named(arch, overrides, expected):
    from engine_testlib import tiny_config
    from prunestudio.engine.models.adapters import InvalidModelConfigError, adapter_for

    config = tiny_config(arch, **overrides)
    with pytest.raises(InvalidModelConfigError) as exc:
        adapter_for(config.model_type).check_config(config)
    assert expected in str(exc.value)
