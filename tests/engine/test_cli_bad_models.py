"""Bad models and bad text sources through the console script: exit code 2, one clear message
(what is wrong, what is allowed, no traceback), and nothing written — the store and the model
folder given are byte-identical afterwards."""

from __future__ import annotations

import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from cli_testlib import EXE, tree_digest
from prunestudio.store import open_store
from tiny_models import tiny_study_toml

SMALL = ["--calib", "source=pydoc,n=2,seqlen=32",
         "--eval", "role=in_domain,source=pydoc,n=2,seqlen=32,offset=20000", "--quiet"]
PYDANTIC_NOISE = ("errors.pydantic.dev", "For further information", "[type=", "input_value")


def _store(tmp_path: Path) -> Path:
    """An existing store in its own folder (so a stray -wal / -shm file shows as a change)."""
    folder = tmp_path / "store"
    folder.mkdir()
    db = folder / "s.db"
    with open_store(db):
        pass
    return db


def _refused(db: Path, model: Path | None, *args: str) -> str:
    """Run the CLI; it must exit 2 with a message and leave the store and model untouched."""
    watched = [db.parent] + ([model] if model is not None else [])
    before = tree_digest(*watched)
    proc = subprocess.run([*EXE, *args, "--store", str(db)], capture_output=True, text=True,
                          timeout=300, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr, proc.stderr
    command = args[0]
    assert proc.stderr.startswith(f"prunestudio {command}: error: "), proc.stderr
    assert not any(noise in proc.stderr for noise in PYDANTIC_NOISE), proc.stderr
    assert tree_digest(*watched) == before, "a refused command changed the store or the model"
    # read without a trace: immutable=1 creates no -wal / -shm file beside the store
    con = sqlite3.connect(f"file:{db}?mode=ro&immutable=1", uri=True)
    try:
        assert con.execute("SELECT COUNT(*) FROM studies").fetchone() == (0,)
    finally:
        con.close()
    return proc.stderr


def _default_gguf() -> Path:
    from prunestudio.engine.models.loading import default_gguf_path

    return default_gguf_path()


def _gguf_head(path: Path, nbytes: int) -> Path:
    """The first `nbytes` bytes of the default model's GGUF file, written to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(_default_gguf(), "rb") as src:
        path.write_bytes(src.read(nbytes))
    return path


# ---------------------------------------------------------------- 1. a GGUF cut short


def test_truncated_gguf_is_refused_with_the_bytes_expected_and_found(tmp_path):
    db = _store(tmp_path)
    cut = _gguf_head(tmp_path / "model" / "SmolLM2-cut.gguf", 3_000_000)
    full = _default_gguf().stat().st_size
    err = _refused(db, cut.parent, "prune", "--model", str(cut), *SMALL)
    assert f"GGUF file {cut} is truncated or corrupt" in err
    assert f"expected at least {full} bytes, found 3000000" in err
    assert "reshape" not in err and "struct.error" not in err


def test_a_few_bytes_of_gguf_header_and_junk_are_refused(tmp_path):
    db = _store(tmp_path)
    head = _gguf_head(tmp_path / "model" / "head.gguf", 1000)
    folder = head.parent
    err = _refused(db, folder, "prune", "--model", str(head), *SMALL)
    assert "truncated or corrupt: its header is cut short: expected at least 1002 bytes, " \
           "found 1000" in err
    junk = folder / "junk.gguf"
    junk.write_bytes(b"junk")
    err = _refused(db, folder, "run", str(_toml(tmp_path, junk)), "--quiet")
    assert f"{junk} is not a GGUF file" in err and "magic bytes" in err


def _toml(tmp_path: Path, model: Path, **replace: str) -> Path:
    text = tiny_study_toml(model, methods='["magnitude"]', patterns='["unstructured"]')
    for old, new in replace.items():
        assert old in text
        text = text.replace(old, new)
    cfg = tmp_path / "study.toml"
    cfg.write_text(text)
    return cfg


# ---------------------------------------------------------------- 2. config.json, no weights


def test_folder_with_config_but_no_weights_says_so_and_lists_the_names(tmp_path,
                                                                         tiny_model_dirs):
    db = _store(tmp_path)
    folder = tmp_path / "no-weights"
    shutil.copytree(tiny_model_dirs["llama"], folder,
                    ignore=shutil.ignore_patterns("*.safetensors"))
    err = _refused(db, folder, "prune", "--model", str(folder), *SMALL)
    assert f"model folder '{folder}' has config.json but no weights" in err
    assert ("looked for model.safetensors, model.safetensors.index.json, pytorch_model.bin, "
            "pytorch_model.bin.index.json") in err
    assert "not a local directory with config.json" not in err


# ---------------------------------------------------------------- 3. unsupported architecture


def test_t5_folder_names_its_architecture_and_the_supported_families(tmp_path):
    import transformers as tf

    db = _store(tmp_path)
    folder = tmp_path / "t5"
    tf.T5ForConditionalGeneration(tf.T5Config(vocab_size=64, d_model=32, d_ff=64, num_layers=1,
                                              num_heads=2, d_kv=16)).save_pretrained(folder)
    err = _refused(db, folder, "prune", "--model", str(folder), *SMALL)
    assert "unsupported architecture T5ForConditionalGeneration (model_type 't5')" in err
    for family in ("llama family (model types llama, mistral", "opt family",
                   "gpt_neox family", "gpt2 family"):
        assert family in err, err
    err = _refused(db, folder, "run", str(_toml(tmp_path, folder)), "--quiet")
    assert "T5ForConditionalGeneration (model_type 't5')" in err


# ---------------------------------------------------------------- 4, 5, 6 (wired by the runner)


def test_heads_not_divisible_by_kv_heads_names_both_numbers(tmp_path):
    import torch
    import transformers as tf
    from tiny_models import tiny_tokenizer

    db = _store(tmp_path)
    folder = tmp_path / "bad-gqa"
    torch.manual_seed(0)
    tf.AutoModelForCausalLM.from_config(tf.LlamaConfig(
        vocab_size=384, hidden_size=48, intermediate_size=96, num_hidden_layers=1,
        num_attention_heads=6, num_key_value_heads=4,
        max_position_embeddings=128)).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    err = _refused(db, folder, "prune", "--model", str(folder), *SMALL)
    assert "num_attention_heads (6) is not divisible by num_key_value_heads (4)" in err


def test_evaluation_longer_than_gpt2_positions_is_refused_once(tmp_path, tiny_model_dirs):
    db = _store(tmp_path)
    model = tiny_model_dirs["gpt2"]  # n_positions = 512
    err = _refused(db, model, "prune", "--model", str(model), "--quiet",
                   "--calib", "source=pydoc,n=2,seqlen=32",
                   "--eval", "role=in_domain,source=pydoc,n=1,seqlen=1024,offset=20000")
    assert ("evaluation 'in_domain': windows of 1024 tokens are longer than the model's "
            "context of 512 tokens") in err
    assert "n_positions = 512" in err and "IndexError" not in err


@pytest.mark.parametrize("flags,expected", [
    (["--device", "gpu7"], "device 'gpu7' is not valid: use auto, cpu, cuda or cuda:N"),
    (["--dtype", "float8"], "dtype 'float8' is not valid: use auto, bf16, bfloat16, float16, "
                            "float32, fp16, fp32"),
])
def test_bad_device_or_dtype_is_refused_before_any_study(tmp_path, tiny_model_dirs, flags,
                                                         expected):
    db = _store(tmp_path)
    model = tiny_model_dirs["llama"]
    assert expected in _refused(db, model, "prune", "--model", str(model), *SMALL, *flags)


def test_cuda_on_a_machine_without_cuda_says_none_is_available(tmp_path, tiny_model_dirs):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    db = _store(tmp_path)
    model = tiny_model_dirs["llama"]
    err = _refused(db, model, "prune", "--model", str(model), *SMALL, "--device", "cuda")
    assert "device 'cuda' requested but no CUDA device is available here" in err


# ---------------------------------------------------------------- 7. c4 without a split


def test_c4_calibration_in_a_study_file_uses_its_train_split_and_needs_the_hub(tmp_path,
                                                                              tiny_model_dirs):
    db = _store(tmp_path)
    model = tiny_model_dirs["llama"]
    cfg = _toml(tmp_path, model, **{'source = "pydoc"\nseqlen = 32\nn = 4':
                                    'source = "c4"\nseqlen = 32\nn = 4\nselection = "documents"'})
    err = _refused(db, model, "run", str(cfg), "--quiet")
    assert "has no split" not in err
    assert "text source 'c4' split 'train' could not be loaded" in err
    assert "allenai/c4" in err and "needs the Hugging Face hub (network access)" in err


def test_prune_calib_source_c4_uses_its_train_split(tmp_path, tiny_model_dirs):
    """`--calib source=c4,...` over the default study's pydoc calibration (split all): the
    inherited split must not follow the source change (prune_config merges the flags with
    `merge_window_overrides`)."""
    db = _store(tmp_path)
    model = tiny_model_dirs["llama"]
    err = _refused(db, model, "prune", "--model", str(model), "--quiet",
                   "--calib", "source=c4,n=2,seqlen=32,selection=documents",
                   "--eval", "role=in_domain,source=pydoc,n=2,seqlen=32,offset=20000")
    assert "has no split 'all'" not in err, err
    assert "text source 'c4' split 'train' could not be loaded" in err
    assert "needs the Hugging Face hub" in err


def test_unknown_split_lists_the_sources_splits(tmp_path, tiny_model_dirs):
    db = _store(tmp_path)
    model = tiny_model_dirs["llama"]
    err = _refused(db, model, "prune", "--model", str(model), "--quiet",
                   "--calib", "source=wikitext2,split=tset,n=2,seqlen=32")
    assert ("text source 'wikitext2' has no split 'tset'; allowed: train, validation, test "
            "(default: train for calibration, test for evaluation)") in err


# ---------------------------------------------------------------- 8. config messages


def test_sparsity_out_of_range_names_the_field_without_pydantic_noise(tmp_path,
                                                                      tiny_model_dirs):
    db = _store(tmp_path)
    model = tiny_model_dirs["llama"]
    err = _refused(db, model, "prune", "--model", str(model), *SMALL, "--sparsities", "0.5,1.5")
    assert "grid.sparsities.1: sparsity must be in [0, 1), got 1.5" in err


@pytest.mark.parametrize("replace,expected", [
    ({'methods = ["magnitude"]': 'methods = ["wandaa"]'},
     "grid.methods.0: unknown method 'wandaa'; allowed: dense, gblm, magnitude, sparsegpt"),
    ({"[grid]": "[study]\nkind = \"anneal\"\n\n[grid]"},
     "study.kind: unknown study kind 'anneal'; allowed: gp, grid, predictor, random, tpe"),
    ({"sparsities = [0.5]": "sparsities = [1.0]"},
     "grid.sparsities.0: sparsity must be in [0, 1), got 1.0"),
    ({"[grid]": "[[candidates]]\nmethod = \"sparsegpt\"\nsparsity = 0.5\noptions = { damp = 0 "
                "}\n\n[grid]"},
     "candidates.0: invalid options for method 'sparsegpt'"),
])
def test_bad_study_files_get_field_message_lines(tmp_path, tiny_model_dirs, replace, expected):
    db = _store(tmp_path)
    model = tiny_model_dirs["llama"]
    err = _refused(db, model, "run", str(_toml(tmp_path, model, **replace)), "--quiet")
    assert "invalid study config" in err and expected in err, err
