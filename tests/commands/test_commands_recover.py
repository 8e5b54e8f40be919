"""`prunestudio recover CANDIDATE` through the console script on a tiny-model store: a new
candidate linked to its parent, perplexities after recovery with the parent's before-values in
their protocol, the training loss before / after; bad input is exit 2 naming what is wrong."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from prunestudio.store import open_store
from tiny_models import tiny_study_toml

EXE = [sys.executable, "-m", "prunestudio.cli"]
FAST = ["--steps", "8", "--lr", "2e-3", "--seqlen", "32", "--windows", "8"]


def _cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*EXE, *args], capture_output=True, text=True, timeout=300,
                          env={**os.environ, "PYTHONUNBUFFERED": "1"})


def _error_in_process(*args: str) -> str:
    """`prunestudio recover ARGS` through the console script's main (in this process: no
    interpreter start per case): exit 2 and one `error:` line; returns stderr."""
    import contextlib
    import io

    from prunestudio.cli import main

    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        code = main(["recover", *args])
    assert code == 2, (code, err.getvalue())
    assert "prunestudio recover: error:" in err.getvalue(), err.getvalue()
    return err.getvalue()


@pytest.fixture(scope="module")
def store(tmp_path_factory, tiny_model_dirs) -> Path:
    """A grid study (dense, wanda 50%) on the tiny llama, plus one failed candidate."""
    root = tmp_path_factory.mktemp("recover")
    cfg = root / "study.toml"
    cfg.write_text(tiny_study_toml(tiny_model_dirs["llama"], methods='["wanda"]',
                                   patterns='["unstructured"]'))
    db = root / "s.db"
    proc = _cli("run", str(cfg), "--store", str(db), "--quiet")
    assert proc.returncode == 0, proc.stderr
    with open_store(db) as s:
        cid, _ = s.add_candidate(1, {"method": "magnitude", "sparsity": 0.9, "pattern": {
            "kind": "unstructured", "m": None, "n": None}, "layer_ratios": "uniform",
            "owl": None, "calibration": {"mode": "sequential"}, "options": {}}, origin="grid")
        s.fail_candidate(cid, error="RuntimeError: boom")
    return db


def test_recover_records_a_new_candidate_linked_to_its_parent(store):
    with open_store(store, readonly=True) as s:
        parent = s.candidate(2)
    assert parent["spec"]["method"] == "wanda" and parent["status"] == "done"
    proc = _cli("recover", "2", "--store", str(store), "--json", "--quiet", *FAST)
    assert proc.returncode == 0, proc.stderr
    new = json.loads(proc.stdout)
    assert (new["origin"], new["parents"], new["status"]) == ("recovered", [2], "done")
    assert new["spec"]["recovery"]["method"] == "lora"
    assert new["spec"]["recovery"]["windows"] == {
        "source": "pydoc", "split": "all", "seqlen": 32, "n": 8, "offset": 0, "end": None,
        "selection": "contiguous", "seed": 0}
    assert {k: v for k, v in new["spec"].items() if k != "recovery"} == parent["spec"]
    by_key = {(m["name"], m["role"]): m for m in new["metrics"]}
    for role in ("in_domain", "out_of_domain"):
        after = by_key[("ppl", role)]
        before = next(m for m in parent["metrics"] if m["name"] == "ppl" and m["role"] == role)
        assert after["protocol"]["before"] == before["value"]
        assert after["protocol"]["recovered_from"] == 2
        assert after["protocol"]["tokens_hash"] == before["protocol"]["tokens_hash"]
        assert (after["dataset"], after["seqlen"], after["n_samples"], after["fidelity"]) == (
            before["dataset"], before["seqlen"], before["n_samples"], before["fidelity"])
    loss_before, loss_after = by_key[("train_loss_before", "recovery")], by_key[
        ("train_loss_after", "recovery")]
    assert loss_after["value"] < loss_before["value"]
    assert len(loss_after["protocol"]["curve"]) == 8 and loss_after["protocol"]["steps"] == 8
    assert by_key[("sparsity", "pruned_layers")]["value"] == pytest.approx(0.5)
    with open_store(store, readonly=True) as s:
        assert s.candidate(2)["metrics"] == parent["metrics"]  # the parent is untouched
        events = [e["message"] for e in s.db.query(
            "SELECT message FROM events WHERE candidate_id = ?", [new["id"]])]
    assert any("training loss" in e and "→" in e for e in events), events

    shown = _cli("show", "1", "--store", str(store)).stdout
    assert f"│ {new['id']} " in shown.replace("│  ", "│ ")
    # the same recovery again is refused; so is recovering a recovered candidate
    assert f"candidate {new['id']} already is this recovery" in _error_in_process(
        "2", "--store", str(store), *FAST)
    assert "is already recovered (from candidate 2)" in _error_in_process(
        str(new["id"]), "--store", str(store), *FAST)


@pytest.mark.parametrize(("args", "expected"), [
    (["99"], "no candidate with id 99"),
    (["3"], "failed when the study ran (RuntimeError: boom)"),
    (["2", "--r", "0"], "r: Input should be greater than or equal to 1"),
    (["2", "--steps", "5", "--epochs", "1"], "give steps or epochs, not both"),
    (["2", "--train", "offset=x"], "windows.offset: Input should be a valid integer"),
    (["2", "--method", "qlora", "--device", "nope"], "device"),
])
def test_bad_recover_input_is_exit_2_naming_what_is_wrong(store, args, expected):
    assert expected in _error_in_process(*args, "--store", str(store), *FAST)
