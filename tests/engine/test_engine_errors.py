"""Bad input fails early with a message naming the field and the allowed values."""

from __future__ import annotations

import time

import pydantic
import pytest
import torch
from engine_testlib import make_lm, random_ids
from prunestudio.engine.calibration import LayerStats, StatsCache, calibration_hash
from prunestudio.engine.data.sources import TextSourceError
from prunestudio.engine.data.windows import WindowSpec
from prunestudio.engine.masks import NonFiniteScoreError
from prunestudio.engine.methods import get_method, method_names
from prunestudio.engine.methods.base import LayerInputs, LayerTarget
from prunestudio.engine.models.adapters import (
    PrunableLinear,
    UnsupportedModelError,
    adapter_for,
    supported_model_types,
)
from prunestudio.engine.models.loading import ModelLoadError, load_model
from prunestudio.engine.pruning import prune_model
from prunestudio.engine.spec import CandidateSpec


def test_registry_lists_the_builtin_methods():
    assert {"dense", "magnitude", "wanda", "gblm", "sparsegpt"} <= set(method_names())
    assert method_names() == sorted(method_names())


def test_unknown_method_lists_the_registry():
    with pytest.raises(ValueError, match=r"unknown method 'wandaa'; allowed: .*sparsegpt.*wanda"):
        get_method("wandaa")
    with pytest.raises(pydantic.ValidationError) as exc:
        CandidateSpec(method="wandaa", sparsity=0.5)
    assert "unknown method 'wandaa'" in str(exc.value)
    assert ", ".join(method_names()) in str(exc.value)


@pytest.mark.parametrize("bad", [-0.1, 1.0, 1.5])
def test_sparsity_outside_zero_one_names_the_field(bad):
    with pytest.raises(pydantic.ValidationError) as exc:
        CandidateSpec(method="wanda", sparsity=bad)
    text = str(exc.value)
    assert "sparsity" in text and "[0, 1)" in text and str(bad) in text


def test_zero_sparsity_for_a_pruning_method_and_sparsity_for_dense():
    with pytest.raises(pydantic.ValidationError, match=r"'wanda' needs a sparsity in \(0, 1\)"):
        CandidateSpec(method="wanda")
    with pytest.raises(pydantic.ValidationError, match="'dense' takes no sparsity"):
        CandidateSpec(method="dense", sparsity=0.5)


@pytest.mark.parametrize(
    "method,options,allowed",
    [
        ("wanda", {"blocksize": 64}, "allowed options: none"),
        ("magnitude", {"scop": "row"}, "allowed options: scope"),
        ("sparsegpt", {"dampening": 0.1}, "allowed options: blocksize, damp"),
    ],
)
def test_unknown_option_key_names_it_and_the_allowed_keys(method, options, allowed):
    key = next(iter(options))
    with pytest.raises(pydantic.ValidationError) as exc:
        CandidateSpec(method=method, sparsity=0.5, options=options)
    text = str(exc.value)
    assert f"invalid options for method '{method}'" in text
    assert f"(at {key})" in text and allowed in text


def test_bad_option_value_is_rejected():
    with pytest.raises(pydantic.ValidationError, match=r"greater than 0 \(at damp\)"):
        CandidateSpec(method="sparsegpt", sparsity=0.5, options={"damp": 0})


def test_unknown_spec_field_is_an_error_not_ignored():
    with pytest.raises(pydantic.ValidationError, match="sparsty"):
        CandidateSpec(method="wanda", sparsty=0.5)


def test_unknown_text_source_lists_the_sources():
    with pytest.raises(pydantic.ValidationError) as exc:
        WindowSpec(source="wikitext-103")
    text = str(exc.value)
    assert "unknown text source 'wikitext-103'" in text
    assert all(name in text for name in ("pydoc", "shakespeare", "wikitext2", "c4"))
    assert issubclass(TextSourceError, ValueError)


def test_unsupported_architectures_list_the_supported_types():
    import transformers as tf

    bert = tf.BertModel(tf.BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1,
                                      num_attention_heads=2, intermediate_size=64))
    t5 = tf.T5ForConditionalGeneration(tf.T5Config(vocab_size=64, d_model=32, d_ff=64,
                                                   num_layers=1, num_heads=2, d_kv=16))
    for model, name in ((bert, "bert"), (t5, "t5")):
        with pytest.raises(UnsupportedModelError) as exc:
            adapter_for(model)
        text = str(exc.value)
        assert f"unsupported architecture '{name}'" in text
        assert all(t in text for t in supported_model_types())
        assert "llama" in text and "gpt_neox" in text and "gpt2" in text and "opt" in text
    with pytest.raises(UnsupportedModelError, match="'mamba'"):
        adapter_for("mamba")
    assert type(adapter_for("mistral")).__name__ == "LlamaAdapter"


def test_unknown_model_id_or_missing_file_is_a_model_load_error(tmp_path, monkeypatch):
    import huggingface_hub.constants

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    t0 = time.perf_counter()
    with pytest.raises(ModelLoadError, match=r"unknown model 'no-such-org/no-such-model-xyz'.*'default'"):
        load_model("no-such-org/no-such-model-xyz", device="cpu")
    assert time.perf_counter() - t0 < 30, "an unknown id must not wait on the network"
    with pytest.raises(ModelLoadError, match=r"model file .*missing\.gguf' does not exist"):
        load_model(str(tmp_path / "missing.gguf"), device="cpu")
    with pytest.raises(ModelLoadError, match=r"model directory .* does not exist"):
        load_model(str(tmp_path / "no-such-dir"), device="cpu")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(ModelLoadError, match="unknown model"):
        load_model(str(empty), device="cpu")


def test_bad_device_and_dtype_name_the_allowed_values():
    from prunestudio.engine.models.loading import resolve_device, resolve_dtype

    with pytest.raises(ValueError, match="use auto, cpu, cuda or cuda:N"):
        resolve_device("tpu0")
    with pytest.raises(ValueError, match=r"dtype 'float8'.*bf16.*float32"):
        resolve_dtype("float8", torch.device("cpu"))


def _layer(out_f=4, in_f=8):
    mod = torch.nn.Linear(in_f, out_f, bias=False)
    return mod, PrunableLinear("model.layers.1.mlp.up_proj", 1, "up", mod)


@pytest.mark.parametrize("method", ["wanda", "gblm", "magnitude"])
def test_non_finite_scores_are_an_error_and_leave_the_layer_untouched(method):
    mod, lin = _layer()
    before = mod.weight.detach().clone()
    x = torch.rand(8)
    grad = torch.rand(4, 8)
    if method == "magnitude":
        with torch.no_grad():
            mod.weight[2, 3] = float("inf")
        before = mod.weight.detach().clone()
    elif method == "wanda":
        x[5] = float("nan")
    else:
        grad[0, 0] = float("inf")
    m = get_method(method)
    with pytest.raises(NonFiniteScoreError,
                       match=rf"{method} score of model\.layers\.1\.mlp\.up_proj.*non-finite"):
        m.prune_layer(lin, LayerTarget(0.5), LayerInputs(LayerStats(2, x, None), grad),
                      m.validate_options({}))
    assert torch.equal(mod.weight.detach(), before)


def test_non_finite_statistics_fail_the_whole_candidate():
    lm = make_lm("llama")
    ids = random_ids(2, 8)
    cache = StatsCache(lm, ids, calibration_hash(ids), use_disk=False)
    grads = cache.gradients()
    name = next(iter(grads))
    grads[name][0, 0] = float("nan")
    with pytest.raises(NonFiniteScoreError, match=name.replace(".", r"\.")):
        prune_model(lm, CandidateSpec(method="gblm", sparsity=0.5), cache)


def test_methods_that_need_calibration_refuse_to_run_without_it():
    lm = make_lm("llama")
    for method in ("wanda", "sparsegpt", "gblm"):
        with pytest.raises(ValueError, match=rf"method '{method}' needs calibration data"):
            prune_model(lm, CandidateSpec(method=method, sparsity=0.5), None)
    with pytest.raises(ValueError, match="needs calibration data"):
        prune_model(lm, CandidateSpec(method="magnitude", sparsity=0.5, layer_ratios="owl"), None)
