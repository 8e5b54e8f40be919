"""The `prunestudio` console script, run as a user runs it (subprocesses on tiny model folders):
results as JSON, clear errors for bad input, resume after SIGKILL, export round trip."""

from __future__ import annotations

import json
import signal
import sqlite3
from pathlib import Path

import pytest
import torch
from cli_testlib import cli as _cli
from cli_testlib import cli_error as _error
from cli_testlib import start_until, statuses
from prunestudio.store import open_store
from tiny_models import slow_study_toml, tiny_study_toml


@pytest.mark.parametrize("command", ["run", "prune", "studies", "show", "export", "bench",
                                     "methods", "tui"])
def test_every_subcommand_has_help(command):
    out = _cli(command, "--help").stdout
    assert out.startswith(f"usage: prunestudio {command}")


def test_methods_lists_every_method_with_its_options():
    out = _cli("methods").stdout
    for name in ("magnitude", "wanda", "sparsegpt", "gblm", "symbolic", "structured"):
        assert f"\n{name} " in f"\n{out}", out
    assert "expression (required)" in out and "scope='row'" in out
    assert "Undefined" not in out


def test_prune_json_lists_candidates_with_spec_status_and_protocol(tmp_path, tiny_model_dirs):
    out = _cli("prune", "--model", str(tiny_model_dirs["llama"]), "--methods", "wanda,magnitude",
               "--sparsities", "0.5", "--patterns", "unstructured,4:8",
               "--option", "magnitude.scope=row",
               "--calib", "source=pydoc,n=4,seqlen=32",
               "--eval", "role=in_domain,source=pydoc,n=2,seqlen=64,offset=20000",
               "--eval", "role=out_of_domain,source=shakespeare,split=hamlet,n=2,seqlen=64",
               "--store", str(tmp_path / "s.db"), "--json", "--quiet").stdout
    result = json.loads(out)
    assert result["study"]["status"] == "finished"
    cands = result["candidates"]
    assert len(cands) == 5
    assert {c["status"] for c in cands} == {"done"}
    specs = [c["spec"] for c in cands]
    assert {(s["method"], s["pattern"]["kind"]) for s in specs} == {
        ("dense", "unstructured"), ("wanda", "unstructured"), ("wanda", "nm"),
        ("magnitude", "unstructured"), ("magnitude", "nm")}
    assert all(s["options"] == {"scope": "row", "ties": "index"}
               for s in specs if s["method"] == "magnitude")
    ppl = [m for m in cands[1]["metrics"] if m["name"] == "ppl"]
    assert {(m["role"], m["dataset"], m["seqlen"], m["n_samples"], m["fidelity"]) for m in ppl} == {
        ("in_domain", "pydoc", 64, 2, "full"), ("out_of_domain", "shakespeare", 64, 2, "full")}
    table = _cli("show", str(result["study"]["id"]), "--store", str(tmp_path / "s.db")).stdout
    assert "PPL in_domain" in table and "PPL out_of_domain" in table and "wanda 4:8" in table
    listed = json.loads(_cli("studies", "--store", str(tmp_path / "s.db"), "--json").stdout)
    assert [(s["name"], s["n_done"]) for s in listed] == [(result["study"]["name"], 5)]


@pytest.mark.parametrize(("args", "expected"), [
    (["--model", "/nonexistent/model-dir"], "model directory '/nonexistent/model-dir' does not"),
    (["--model", "/nonexistent/x.gguf"], "model file '/nonexistent/x.gguf' does not exist"),
    (["--sparsities", "1.0"], "sparsity must be in [0, 1), got 1.0"),
    (["--sparsities", "-0.1"], "sparsity must be in [0, 1), got -0.1"),
    (["--patterns", "4:4"], "grid.patterns: N:M pattern needs 0 < N < M, got 4:4"),
    (["--patterns", "2-4"], "pattern"),
    (["--methods", "wandaa"], "unknown method 'wandaa'"),
    (["--option", "wanda.nope=1"], "invalid options for method 'wanda'"),
    (["--calib", "source=nowhere"], "unknown text source 'nowhere'"),
])
def test_bad_prune_input_gets_a_clear_error(tmp_path, tiny_model_dirs, args, expected):
    base = ["prune", "--model", str(tiny_model_dirs["llama"]), "--store", str(tmp_path / "s.db"),
            "--quiet"]
    err = _error(*base, *args) if args[0] != "--model" else _error(*base[:1], *base[3:], *args)
    assert expected in err, err


def test_calibration_longer_than_the_text_is_refused_before_a_study_exists(tmp_path,
                                                                           tiny_model_dirs):
    db = tmp_path / "s.db"
    err = _error("prune", "--model", str(tiny_model_dirs["llama"]), "--store", str(db),
                 "--quiet", "--calib", "source=shakespeare,split=hamlet,n=4000,seqlen=512")
    assert "hamlet" in err and "tokens" in err and "available" in err
    with open_store(db, readonly=True) as store:  # validate first, create after: no study
        assert list(store.db.query("SELECT status, error FROM studies")) == []


def test_malformed_config_names_the_key(tmp_path, tiny_model_dirs):
    cfg = tmp_path / "bad.toml"
    cfg.write_text(tiny_study_toml(tiny_model_dirs["llama"]) + "\n[grid2]\nmethods = []\n")
    assert "grid2: unknown key" in _error("run", str(cfg), "--store", str(tmp_path / "s.db"))
    cfg.write_text(tiny_study_toml(tiny_model_dirs["llama"]).replace("seqlen = 32", "seqlen = 'x'"))
    assert "calibration.seqlen" in _error("run", str(cfg), "--store", str(tmp_path / "s.db"))
    cfg.write_text("[model\n")
    assert "not valid TOML" in _error("run", str(cfg), "--store", str(tmp_path / "s.db"))
    assert "does not exist" in _error("run", str(tmp_path / "missing.toml"))


def test_store_from_a_newer_schema_is_refused(tmp_path):
    db = tmp_path / "new.db"
    with open_store(db):
        pass
    con = sqlite3.connect(db)
    con.execute("PRAGMA user_version = 999")
    con.execute("UPDATE meta SET value = '999' WHERE key = 'schema_version'")
    con.commit()
    con.close()
    err = _error("studies", "--store", str(db))
    assert "newer" in err and "999" in err


def test_unsupported_architecture_is_named(tmp_path):
    from transformers import BertConfig, BertLMHeadModel

    folder = tmp_path / "bert"
    BertLMHeadModel(BertConfig(vocab_size=64, hidden_size=32, num_hidden_layers=1,
                               num_attention_heads=2, intermediate_size=64,
                               is_decoder=True)).save_pretrained(folder)
    from tiny_models import tiny_tokenizer

    tiny_tokenizer().save_pretrained(folder)
    err = _error("prune", "--model", str(folder), "--store", str(tmp_path / "s.db"), "--quiet")
    assert "bert" in err and "llama" in err and "gpt2" in err


def test_a_tokenizer_that_does_not_belong_to_the_model_is_refused_before_the_study(tmp_path):
    from tiny_models import tiny_config, tiny_tokenizer
    from transformers import AutoModelForCausalLM

    folder = tmp_path / "small-vocab"
    config = tiny_config("llama")
    config.vocab_size = 64  # the tiny tokenizer's ids go up to 383
    AutoModelForCausalLM.from_config(config).save_pretrained(folder)
    tiny_tokenizer().save_pretrained(folder)
    db = tmp_path / "s.db"
    err = _error("prune", "--model", str(folder), "--store", str(db), "--quiet")
    assert "calibration: the tokenizer produced token id" in err
    assert "input embedding has 64 rows (ids 0..63)" in err and "does not belong" in err
    if db.exists():  # checked before the study is recorded: nothing in the store
        import sqlite3

        con = sqlite3.connect(db)
        assert con.execute("SELECT COUNT(*) FROM studies").fetchone() == (0,)
        con.close()


def _slow_study(tmp_path: Path, model_dir: Path) -> Path:
    cfg = tmp_path / "slow.toml"
    cfg.write_text(slow_study_toml(model_dir))
    return cfg


def test_sigkill_mid_candidate_then_resume_loses_and_duplicates_nothing(tmp_path, tiny_model_dirs):
    db = tmp_path / "s.db"
    cfg = _slow_study(tmp_path, tiny_model_dirs["llama"])
    proc = start_until(["run", str(cfg), "--store", str(db), "--name", "victim", "--quiet"],
                       db, lambda rows: statuses(rows).count("done") >= 2
                       and "running" in statuses(rows), what="its third candidate")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    with open_store(db, readonly=True) as store:
        before = {c["spec_hash"]: c for c in store.candidates(1, with_metrics=True)}
    running = [c for c in before.values() if c["status"] == "running"]
    assert len(running) == 1, "the kill must land inside a candidate"
    done_before = {h: c for h, c in before.items() if c["status"] == "done"}

    out = json.loads(_cli("run", "--resume", "victim", "--store", str(db), "--json",
                          "--quiet").stdout)
    after = {c["spec_hash"]: c for c in out["candidates"]}
    assert out["study"]["status"] == "finished"
    assert len(out["candidates"]) == len(before) == 7
    assert set(after) == set(before)
    assert all(c["status"] == "done" for c in after.values())
    for h, c in done_before.items():  # finished work kept as it was, not re-run
        assert after[h]["metrics"] == c["metrics"]
    for c in after.values():  # exactly one record per metric identity
        keys = [(m["name"], m["role"]) for m in c["metrics"]]
        assert len(keys) == len(set(keys))


def test_export_round_trip_gives_the_pruned_models_logits(tmp_path, tiny_model_dirs):
    from prunestudio.engine.models.loading import load_model
    from prunestudio.engine.pruning import prune_model
    from prunestudio.engine.runner import prepare
    from transformers import AutoModelForCausalLM

    from prunestudio.schema.spec import CandidateSpec
    from prunestudio.schema.study_file import parse_config

    db = tmp_path / "s.db"
    result = json.loads(_cli("prune", "--model", str(tiny_model_dirs["gpt2"]), "--methods",
                             "wanda", "--no-dense", "--calib", "source=pydoc,n=4,seqlen=32",
                             "--eval", "role=in_domain,source=pydoc,n=2,seqlen=64,offset=20000",
                             "--store", str(db), "--json", "--quiet").stdout)
    (cand,) = result["candidates"]
    out_dir = tmp_path / "export"
    _cli("export", str(cand["id"]), str(out_dir), "--store", str(db), "--verify")
    assert "is not empty" in _error("export", str(cand["id"]), str(out_dir), "--store", str(db))
    exported = AutoModelForCausalLM.from_pretrained(out_dir).eval()

    config = parse_config(result["study"]["config"])
    ctx = prepare(config, lm=load_model(str(tiny_model_dirs["gpt2"]), device="cpu"))
    prune_model(ctx.lm, CandidateSpec.model_validate(cand["spec"]), ctx.stats)
    ids = ctx.evaluations[0].windows.ids
    with torch.no_grad():
        assert torch.equal(exported(ids).logits, ctx.lm.model(ids).logits)
    c_fc = exported.transformer.h[0].mlp.c_fc.weight
    assert abs(float((c_fc == 0).float().mean()) - 0.5) < 1e-3
    card = json.loads((out_dir / "prunestudio.json").read_text())
    assert card["candidate"] == cand["id"] and card["spec"] == cand["spec"]
    with open_store(db, readonly=True) as store:
        (artifact,) = store.artifacts(cand["id"])
    assert artifact["kind"] == "model" and artifact["bytes"] > 0


def test_structured_candidate_records_size_exports_smaller_and_evaluates_tasks(
        tmp_path, tiny_model_dirs):
    from transformers import AutoModelForCausalLM

    db = tmp_path / "s.db"
    result = json.loads(_cli(
        "prune", "--model", str(tiny_model_dirs["llama"]), "--methods", "structured",
        "--sparsities", "0.2", "--option", "structured.importance=l2",
        "--calib", "source=pydoc,n=4,seqlen=32",
        "--eval", "role=in_domain,source=pydoc,n=2,seqlen=64,offset=20000",
        "--store", str(db), "--json", "--quiet").stdout)
    dense, cand = result["candidates"]
    by_name = {m["name"]: m for m in cand["metrics"]}
    assert by_name["param_ratio"]["value"] == pytest.approx(0.2, abs=0.02)
    dense_params = next(m["value"] for m in dense["metrics"] if m["name"] == "params")
    assert by_name["params"]["value"] == pytest.approx(
        dense_params * (1 - by_name["param_ratio"]["value"]), rel=1e-9)
    assert by_name["latency_ms"]["role"] == "efficiency" and by_name["latency_ms"]["seqlen"] == 64
    assert by_name["macs_per_token"]["value"] < next(
        m["value"] for m in dense["metrics"] if m["name"] == "macs_per_token")

    out_dir = tmp_path / "small"
    _cli("export", str(cand["id"]), str(out_dir), "--store", str(db), "--verify")
    exported = AutoModelForCausalLM.from_pretrained(out_dir)
    assert sum(p.numel() for p in exported.parameters()) == by_name["params"]["value"]

    metrics = json.loads(_cli("eval", str(cand["id"]), "--tasks", "offline", "--limit", "20",
                              "--store", str(db), "--json").stdout)
    acc = {m["name"]: m for m in metrics}["acc"]
    assert (acc["dataset"], acc["n_samples"], acc["fidelity"]) == (
        "shakespeare_next_line", 20, "proxy")
    with open_store(db, readonly=True) as store:
        stored = {m["name"] for m in store.candidate(cand["id"])["metrics"]}
    assert {"acc", "acc_norm", "ppl", "param_ratio"} <= stored
    assert "unknown task" in _error("eval", str(cand["id"]), "--tasks", "nosuchtask",
                                    "--store", str(db)).lower()


def test_prune_with_tasks_records_and_shows_accuracy_beside_ppl(tmp_path, tiny_model_dirs):
    db = tmp_path / "s.db"
    common = ["--model", str(tiny_model_dirs["gpt2"]), "--methods", "magnitude",
              "--calib", "source=pydoc,n=4,seqlen=32",
              "--eval", "role=in_domain,source=pydoc,n=2,seqlen=64,offset=20000",
              "--store", str(db)]
    result = json.loads(_cli("prune", *common, "--tasks", "offline", "--task-limit", "8",
                             "--json", "--quiet").stdout)
    for cand in result["candidates"]:
        acc = next(m for m in cand["metrics"] if m["name"] == "acc")
        assert (acc["dataset"], acc["n_samples"], acc["fidelity"], acc["role"]) == (
            "shakespeare_next_line", 8, "proxy", "task")
    dense = result["candidates"][0]
    assert dense["spec"]["method"] == "dense"
    shown = _cli("show", result["study"]["name"], "--store", str(db)).stdout
    assert "acc next-line" in shown and "acc_norm next-line" in shown and "time s" in shown
    assert ("acc next-line: shakespeare_next_line (acc), 8 examples, 0-shot, proxy, stderr ±"
            in shown) and "(dense), lm-eval 0.4" in shown

    metrics = json.loads(_cli("eval", str(dense["id"]), "--tasks", "offline", "--limit", "12",
                              "--store", str(db), "--json").stdout)
    acc12 = next(m["value"] for m in metrics if m["name"] == "acc")
    shown = _cli("show", result["study"]["name"], "--store", str(db)).stdout
    assert "acc next-line: shakespeare_next_line (acc), 12 examples" in shown  # most examples
    row = next(line.split("│") for line in shown.splitlines()
               if line.startswith("│") and line.split("│")[1].strip() == str(dense["id"]))
    assert f"{acc12:.3f}" in [cell.strip() for cell in row]

    assert "--task-limit needs --tasks" in _error("prune", *common, "--task-limit", "8")
    assert "unknown task 'bogus'" in _error("prune", *common, "--tasks", "bogus")


def test_a_reconstructed_candidate_exports_the_same_fitted_model(tmp_path, tiny_model_dirs):
    """`export --verify` re-prunes and re-fits a reconstructed candidate from its recorded
    recipe: the same perplexity as recorded (the fit is seeded), the mask kept."""
    from transformers import AutoModelForCausalLM

    db = tmp_path / "s.db"
    result = json.loads(_cli("prune", "--model", str(tiny_model_dirs["llama"]), "--methods",
                             "wanda", "--no-dense", "--calib", "source=pydoc,n=4,seqlen=32",
                             "--eval", "role=in_domain,source=pydoc,n=2,seqlen=64,offset=20000",
                             "--reconstruct", "gp", "--reconstruct-epochs", "2",
                             "--reconstruct-set", "batch_size=2,lr=1e-3",
                             "--store", str(db), "--json", "--quiet").stdout)
    (cand,) = result["candidates"]
    assert cand["spec"]["reconstruction"]["mode"] == "gp"
    calib = next(m for m in cand["metrics"] if m["name"] == "calib_error")
    assert calib["role"] == "reconstruction" and len(calib["protocol"]["per_block"]) == 2
    out_dir = tmp_path / "export"
    _cli("export", str(cand["id"]), str(out_dir), "--store", str(db), "--verify")
    exported = AutoModelForCausalLM.from_pretrained(out_dir).eval()
    q = exported.model.layers[0].self_attn.q_proj.weight
    assert abs(float((q == 0).float().mean()) - 0.5) < 1e-3
