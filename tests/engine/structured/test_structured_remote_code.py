"""Issue 13 item 7: an export with per-block widths loads with plain transformers,
`AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)`, through the small modeling
file shipped in the folder — in a Python process where Prune Studio cannot be imported — and
gives exactly the in-memory pruned model's logits (and greedy generations, KV cache on), for
every family structured pruning supports, a LoRA-recovered (merged) model included."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from engine_testlib import make_lm, random_ids
from prunestudio.engine.calibration import StatsCache, calibration_hash
from prunestudio.engine.models.adapters import adapter_for
from prunestudio.engine.models.loading import load_model
from prunestudio.engine.structured import export_pruned, load_pruned, prune_structured
from prunestudio.engine.structured.export import (
    EXPORT_CARD,
    REMOTE_CODE_FILE,
    WIDTHS_KEY,
    _transformers_class,
    remote_code_source,
)
from prunestudio.engine.structured.plan import layer_widths

from prunestudio.schema.spec import CandidateSpec

# per case: the architecture and non-uniform per-block ratios (sparsity 0)
CASES = {
    "llama": ("llama", dict(importance="taylor_first", attention_ratios=[0.5, 0.0],
                            mlp_ratios=[0.25, 0.5])),
    "llama_query_head": ("llama", dict(importance="l2", attention_unit="query_head",
                                       attention_ratios=[0.5, 0.0], mlp_ratios=[0.0, 0.1])),
    "opt": ("opt", dict(importance="l1", attention_ratios=[0.25, 0.5], mlp_ratios=[0.25, 0.0])),
    "gpt_neox": ("gpt_neox", dict(importance="taylor_mix", attention_ratios=[0.5, 0.25],
                                  mlp_ratios=[0.1, 0.4])),
    "gpt2": ("gpt2", dict(importance="taylor_vector", attention_ratios=[0.25, 0.5],
                          mlp_ratios=[0.3, 0.0])),
    "lora_merged": ("llama", dict(importance="l1", attention_ratios=[0.0, 0.5],
                                  mlp_ratios=[0.5, 0.25])),
    # families with their own layouts (test_structured_families.py): fused q|k|v and gate|up
    # with per-block head counts in the layer's config (Phi-3), Falcon's multi-query fused
    # rows, stacked experts (Mixtral), whole-projection q / k norms (OLMo 2), explicit head_dim
    "phi3": ("phi3", dict(importance="l1", attention_ratios=[0.5, 0.0], mlp_ratios=[0.25, 0.5])),
    "falcon": ("falcon", dict(importance="l1", attention_unit="query_head",
                              attention_ratios=[0.5, 0.25], mlp_ratios=[0.25, 0.0])),
    "mixtral": ("mixtral", dict(importance="l1", attention_ratios=[0.0, 0.5],
                                mlp_ratios=[0.25, 0.5])),
    "olmo2": ("olmo2", dict(importance="l1", attention_ratios=[0.5, 0.0], mlp_ratios=[0.0, 0.25])),
    "gemma2": ("gemma2", dict(importance="l1", attention_ratios=[0.5, 0.0],
                              mlp_ratios=[0.25, 0.5])),
}

# SDPA infers GQA from the tensors; eager attention reads the layer's num_key_value_groups
# (Gemma 2 has no SDPA attention in transformers 5)
ATTENTION = {"llama_query_head": "eager", "gemma2": "eager"}

# Runs with `python -I` (no script folder, no PYTHONPATH, no user site) and a finder that makes
# every `prunestudio` import fail: the folder must load on torch + transformers alone.
LOADER = textwrap.dedent('''
    import importlib.abc, json, sys

    class NoPruneStudio(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] == "prunestudio":
                raise ImportError(f"{name} must not be needed to load an export")

    sys.meta_path.insert(0, NoPruneStudio())
    import torch
    from transformers import AutoModelForCausalLM

    cases, resave = json.loads(sys.argv[1]), sys.argv[2]
    out = {}
    for name, (folder, attn) in cases.items():
        model = AutoModelForCausalLM.from_pretrained(folder, trust_remote_code=True,
                                                     attn_implementation=attn)
        want = torch.load(folder + ".expected.pt")
        with torch.no_grad():
            logits = model(want["ids"], use_cache=False).logits
            gen = model.generate(want["prompt"], max_new_tokens=6, do_sample=False,
                                 use_cache=True, pad_token_id=0)
        row = {"class": type(model).__name__, "config": type(model.config).__name__,
               "training": model.training, "dtype": str(model.dtype),
               "logits_equal": torch.equal(logits, want["logits"]),
               "max_abs_diff": float((logits - want["logits"]).abs().max()),
               "generate_equal": torch.equal(gen, want["generate"])}
        if name == resave:  # a remote-code model saved again keeps loading
            model.save_pretrained(folder + ".resaved")
            again = AutoModelForCausalLM.from_pretrained(folder + ".resaved",
                                                         trust_remote_code=True)
            with torch.no_grad():
                row["resaved_equal"] = torch.equal(
                    again(want["ids"], use_cache=False).logits, want["logits"])
        out[name] = row
    out["prunestudio_modules"] = sorted(m for m in sys.modules if m.startswith("prunestudio"))
    print("RESULT " + json.dumps(out))
''')


def _prune(lm, options):
    ids = random_ids(3, 16, vocab=lm.model.config.vocab_size, seed=2)
    stats = StatsCache(lm, ids, calibration_hash(ids), use_disk=False)
    return prune_structured(lm, CandidateSpec(method="structured", sparsity=0.0,
                                              options=options), stats)


def _with_lora(model):
    """LoRA adapters with nonzero updates (as after recovery) on a pruned model."""
    from peft import LoraConfig, get_peft_model

    torch.manual_seed(5)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["q_proj", "v_proj", "down_proj"],
                        init_lora_weights=False)
    return get_peft_model(model, config).eval()


def _expected(model, vocab: int) -> dict[str, torch.Tensor]:
    ids = random_ids(2, 20, vocab=vocab, seed=3)
    prompt = random_ids(1, 8, vocab=vocab, seed=4)
    with torch.no_grad():
        return {"ids": ids, "logits": model(ids, use_cache=False).logits, "prompt": prompt,
                "generate": model.generate(prompt, max_new_tokens=6, do_sample=False,
                                           use_cache=True, pad_token_id=0)}


def _load_isolated(cases: dict[str, tuple[Path, str]], tmp: Path, resave: str) -> dict:
    script = tmp / "load_isolated.py"
    script.write_text(LOADER)
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTHON")}
    env.update(HF_MODULES_CACHE=str(tmp / "hf-modules"), HF_HUB_OFFLINE="1",
               TRANSFORMERS_VERBOSITY="error")
    proc = subprocess.run(
        [sys.executable, "-I", str(script), json.dumps({k: [str(f), a] for k, (f, a) in cases.items()}),
         resave], cwd=tmp, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    line = next(x for x in proc.stdout.splitlines() if x.startswith("RESULT "))
    return json.loads(line.removeprefix("RESULT "))


@pytest.fixture(scope="module")
def exported(tiny_model_dirs, tmp_path_factory):
    """Every case pruned, exported and reloaded once in one isolated process: (folders,
    in-memory infos, the loader's results)."""
    tmp = tmp_path_factory.mktemp("remote-code")
    folders, infos = {}, {}
    for name, (arch, options) in CASES.items():
        # the llama case: the tests' saved model folder (tied embeddings, GQA, tokenizer)
        lm = (load_model(str(tiny_model_dirs["llama"])) if name == "llama"
              else make_lm(arch, seed=1, attn=ATTENTION.get(name, "sdpa")))
        pruned, info = _prune(lm, options)
        assert not info.plain_from_pretrained, name
        model, merge = pruned.model, False
        if name == "lora_merged":
            before = _expected(model, lm.model.config.vocab_size)
            model, merge = _with_lora(model), True
            unmerged = _expected(model, lm.model.config.vocab_size)
            assert not torch.allclose(before["logits"], unmerged["logits"])  # LoRA does act
        folder = tmp / name
        out = export_pruned(model, pruned.tokenizer, folder, card={"case": name},
                            merge_lora=merge)
        if merge:
            model = model.get_base_model()  # merged in place: a plain transformers model
            assert not any(hasattr(m, "lora_A") for m in model.modules())
        want = _expected(model, lm.model.config.vocab_size)
        if merge:  # merging changes the arithmetic, not the function
            torch.testing.assert_close(want["logits"], unmerged["logits"], rtol=1e-4,
                                       atol=1e-4)
        torch.save(want, f"{folder}.expected.pt")
        folders[name], infos[name] = folder, (out, info, model)
    loads = {k: (f, ATTENTION.get(k, "sdpa")) for k, f in folders.items()}
    return folders, infos, _load_isolated(loads, tmp, resave="llama")


@pytest.mark.parametrize("case", list(CASES))
def test_non_uniform_export_loads_with_transformers_remote_code(exported, case):
    folders, infos, results = exported
    assert results["prunestudio_modules"] == []
    row = results[case]
    assert row["class"] == "PruneStudioForCausalLM" and row["config"] == "PruneStudioConfig"
    assert not row["training"] and row["dtype"] == "torch.float32"
    assert row["logits_equal"], row["max_abs_diff"]
    assert row["generate_equal"]
    out, info, _ = infos[case]
    assert out.remote_code and not out.plain_from_pretrained
    assert out.loader == "transformers+remote_code"
    if case == "llama":
        assert row["resaved_equal"]


@pytest.mark.parametrize("case", ["llama", "opt"])
def test_the_folder_describes_itself(exported, case):
    folders, infos, _ = exported
    folder = folders[case]
    out, info, _ = infos[case]
    config = json.loads((folder / "config.json").read_text())
    assert config["auto_map"] == {
        "AutoConfig": "modeling_prunestudio.PruneStudioConfig",
        "AutoModelForCausalLM": "modeling_prunestudio.PruneStudioForCausalLM"}
    assert config["architectures"] == ["PruneStudioForCausalLM"]
    assert config["model_type"] == CASES[case][0]
    widths = config[WIDTHS_KEY]
    assert widths["num_attention_heads"] == [w["heads"] for w in info.layers]
    assert widths["num_key_value_heads"] == [w["kv_heads"] for w in info.layers]
    assert widths["intermediate_size"] == [w["mlp"] for w in info.layers]
    assert len(set(widths["intermediate_size"])) > 1 or len(set(
        widths["num_attention_heads"])) > 1  # really non-uniform
    code = (folder / REMOTE_CODE_FILE).read_text()
    assert "prunestudio" not in "\n".join(line for line in code.splitlines()
                                          if line.startswith(("import", "from")))
    assert {"model.safetensors", REMOTE_CODE_FILE}.issubset(p.name for p in folder.iterdir())
    assert not list(folder.glob("*.bin")) and not list(folder.glob("*.pkl"))  # no pickles
    card = json.loads((folder / EXPORT_CARD).read_text())
    assert card["load"]["loader"] == "transformers+remote_code"
    assert "trust_remote_code=True" in card["load"]["code"]
    assert card["load"]["remote_code"]["file"] == REMOTE_CODE_FILE
    assert REMOTE_CODE_FILE in card["files"]  # so `export --force` may replace it
    note = (folder / "prunestudio_load.txt").read_text()
    assert "trust_remote_code=True" in note and "load_pruned" in note


def test_prunestudio_still_loads_the_remote_code_folder(exported):
    folders, infos, _ = exported
    for case in ("llama", "gpt2", "lora_merged"):
        _, info, model = infos[case]
        ids = random_ids(1, 12, vocab=model.config.vocab_size, seed=8)
        reloaded = load_pruned(folders[case])
        assert type(reloaded).__name__ != "PruneStudioForCausalLM"  # no remote code run
        assert layer_widths(reloaded, adapter_for(reloaded)) == info.layers
        with torch.no_grad():
            assert torch.equal(reloaded(ids, use_cache=False).logits,
                               model(ids, use_cache=False).logits)


def test_a_peft_model_needs_merge_lora(tmp_path):
    lm = make_lm("llama", seed=3)
    pruned, _ = _prune(lm, CASES["llama"][1])
    peft_model = _with_lora(pruned.model)
    with pytest.raises(ValueError, match="merge_lora=True"):
        export_pruned(peft_model, None, tmp_path / "m")
    assert not (tmp_path / "m").exists()  # refused before writing anything


def test_remote_code_template_fills_in_the_family_classes():
    from transformers import GPT2LMHeadModel, LlamaConfig, LlamaForCausalLM

    text = remote_code_source("gpt2", "GPT2Config", "GPT2LMHeadModel")
    assert 'FAMILY = "gpt2"' in text and 'BASE_MODEL = "GPT2LMHeadModel"' in text
    compile(text, REMOTE_CODE_FILE, "exec")

    class Reloaded(LlamaForCausalLM):  # e.g. a remote-code model exported again
        pass

    assert _transformers_class(Reloaded) == "LlamaForCausalLM"
    assert _transformers_class(LlamaConfig) == "LlamaConfig"
    assert _transformers_class(GPT2LMHeadModel) == "GPT2LMHeadModel"
