"""Export of structurally pruned models: plain `from_pretrained` when the config can express the
widths; otherwise `from_pretrained(..., trust_remote_code=True)` through the folder's own
modeling file (test_structured_remote_code.py) or the one-call `load_pruned` (also for folders
written without remote code); the reloaded logits equal the in-memory ones."""

from __future__ import annotations

import json

import pytest
import torch
from engine_testlib import make_lm, random_ids
from prunestudio.engine.calibration import StatsCache, calibration_hash
from prunestudio.engine.models.loading import load_model
from prunestudio.engine.structured import (
    StructureError,
    export_pruned,
    load_pruned,
    prune_structured,
)
from prunestudio.engine.structured.plan import layer_widths
from transformers import AutoModelForCausalLM

from prunestudio.schema.spec import CandidateSpec


def _prune(lm, sparsity, **options):
    ids = random_ids(3, 16, seed=2)
    stats = StatsCache(lm, ids, calibration_hash(ids), use_disk=False)
    spec = CandidateSpec(method="structured", sparsity=sparsity, options=options)
    return prune_structured(lm, spec, stats)


def _logits(model, ids):
    with torch.no_grad():
        return model(ids, use_cache=False).logits


def test_uniform_llama_round_trips_through_plain_from_pretrained(tiny_model_dirs, tmp_path):
    lm = load_model(str(tiny_model_dirs["llama"]))  # GQA 4/2 heads, tied embeddings, tokenizer
    pruned, info = _prune(lm, 0.25, importance="taylor_first")
    assert info.plain_from_pretrained
    ids = random_ids(2, 24, vocab=lm.model.config.vocab_size, seed=9)
    want = _logits(pruned.model, ids)
    out = export_pruned(pruned.model, pruned.tokenizer, tmp_path / "m")
    assert out.plain_from_pretrained and "AutoModelForCausalLM" in out.how_to_load
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert cfg["num_attention_heads"] == info.layers[0]["heads"] < 4
    assert cfg["intermediate_size"] == info.layers[0]["mlp"] < 128
    reloaded = AutoModelForCausalLM.from_pretrained(tmp_path / "m")
    assert torch.equal(_logits(reloaded, ids), want)
    assert reloaded.lm_head.weight is reloaded.model.embed_tokens.weight  # still tied
    # the engine's own loader takes the folder like any model
    again = load_model(str(tmp_path / "m"))
    assert torch.equal(_logits(again.model, ids), want)


@pytest.mark.parametrize("arch,options", [
    ("llama", dict(importance="l1", attention_ratios=[0.5, 0.0], mlp_ratios=[0.25, 0.5])),
    ("llama", dict(importance="l2", attention_unit="query_head", attention_ratios=[0.5, 0.0],
                   mlp_ratios=[0.0, 0.1])),
    ("opt", dict(importance="taylor_first", attention_ratios=[0.25, 0.25],
                 mlp_ratios=[0.25, 0.25])),
    ("gpt_neox", dict(importance="taylor_mix", attention_ratios=[0.5, 0.25],
                      mlp_ratios=[0.1, 0.4])),
    ("gpt2", dict(importance="taylor_vector", attention_ratios=[0.25, 0.5],
                  mlp_ratios=[0.3, 0.0])),
])
def test_non_plain_widths_need_and_get_the_one_call_loader(arch, options, tmp_path):
    lm = make_lm(arch, seed=1)
    pruned, info = _prune(lm, 0.0, **options)
    assert not info.plain_from_pretrained
    ids = random_ids(2, 20, seed=3)
    want = _logits(pruned.model, ids)
    out = export_pruned(pruned.model, None, tmp_path / "m")
    assert out.remote_code and "trust_remote_code=True" in out.how_to_load
    assert "load_pruned" in (tmp_path / "m" / "prunestudio_load.txt").read_text()
    with pytest.raises(Exception, match="(?i)size|shape"):  # plain loading fails loudly
        AutoModelForCausalLM.from_pretrained(out.path)  # (without trust_remote_code)
    reloaded = load_pruned(out.path)
    assert not reloaded.training
    assert torch.equal(_logits(reloaded, ids), want)
    assert layer_widths(reloaded, lm.adapter) == info.layers


@pytest.mark.parametrize("arch", ["opt", "gpt_neox", "gpt2"])
def test_uniform_mlp_only_pruning_is_plain_for_every_family(arch, tmp_path):
    lm = make_lm(arch, seed=2)
    pruned, info = _prune(lm, 0.3, ratio="groups", importance="l2", attention=False)
    assert info.plain_from_pretrained
    ids = random_ids(1, 16, seed=4)
    out = export_pruned(pruned.model, None, tmp_path / "m")
    reloaded = AutoModelForCausalLM.from_pretrained(out.path)
    assert torch.equal(_logits(reloaded, ids), _logits(pruned.model, ids))


def test_without_remote_code_the_folder_is_as_before_and_load_pruned_loads_it(tmp_path):
    """`remote_code=False` writes what exports wrote before the remote code existed: no
    modeling file, no auto_map; `load_pruned` (backward compatible) loads it."""
    lm = make_lm("llama", seed=4)
    pruned, info = _prune(lm, 0.0, importance="l1", attention_ratios=[0.0, 0.5],
                          mlp_ratios=[0.5, 0.0])
    out = export_pruned(pruned.model, None, tmp_path / "m", remote_code=False, card={})
    assert not out.remote_code and out.loader == "prunestudio"
    assert out.how_to_load.startswith("from prunestudio.engine.structured import load_pruned")
    cfg = json.loads((tmp_path / "m" / "config.json").read_text())
    assert "auto_map" not in cfg and "pruned_widths" not in cfg
    assert not (tmp_path / "m" / "modeling_prunestudio.py").exists()
    card = json.loads((tmp_path / "m" / "prunestudio.json").read_text())
    assert card["load"]["loader"] == "prunestudio"
    ids = random_ids(1, 16, seed=5)
    assert torch.equal(_logits(load_pruned(out.path), ids), _logits(pruned.model, ids))


def test_export_refuses_a_model_its_config_entry_does_not_describe(tmp_path):
    lm = make_lm("llama", seed=4)
    pruned, _ = _prune(lm, 0.0, importance="l1", mlp_ratios=[0.5, 0.0])
    entry = pruned.model.config.prunestudio_structured
    pruned.model.config.prunestudio_structured = {**entry, "layers": entry["original_layers"]}
    with pytest.raises(StructureError, match="records widths"):
        export_pruned(pruned.model, None, tmp_path / "m")


def test_export_refuses_a_non_empty_folder(tmp_path):
    lm = make_lm("llama")
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "x").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        export_pruned(lm.model, None, tmp_path / "m")
