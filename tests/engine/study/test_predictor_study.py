"""The accuracy-predictor search end to end through the console script, on a four-block tiny
LLaMA: rounds of budget-exact architectures, the fitted predictors in the store (fit quality,
importances, narrowed ranges, a model that reloads and reproduces the recorded predictions),
predicted vs measured, the baselines and the winner re-measured on the held-out set; and a
SIGKILL then resume that records nothing twice and ends as an uninterrupted run does."""

from __future__ import annotations

import json
import math
import signal
from pathlib import Path

import numpy as np
import pytest
from cli_testlib import cli, start_until, statuses
from prunestudio.engine.predictor.fit import Fit
from prunestudio.store import open_store, queries
from tiny_models import tiny_inputs_toml

BUDGET, TOL = 0.15, 0.02




def _toml(model: Path, *, name: str, tasks: bool, extra: str = "", split_n: int = 2) -> str:
    return f"""
[study]
name = "{name}"
kind = "predictor"
seed = 3
""" + tiny_inputs_toml(model, eval_n=2, out_of_domain=False) + ("""
[tasks]
names = ["offline"]
limit = 4
batch_size = 8
""" if tasks else "") + f"""
[predictor]
budget = {BUDGET}
tolerance = {TOL}
rounds = 2
samples_per_round = 4
top_k = 2
candidates_scored = 100
narrow_top = 2
elite = 0.3
keep_first = 1
keep_last = 1
num_boost_round = 50
split = {{ source = "pydoc", seqlen = 64, n = {split_n}, offset = 4000 }}
{extra}
"""


def _metric(c: dict, name: str, role: str) -> dict | None:
    return next((m for m in c["metrics"] if m["name"] == name and m["role"] == role), None)


def test_predictor_study_records_rounds_fits_baselines_and_the_winner(tmp_path, llama4):
    cfg = tmp_path / "p.toml"
    cfg.write_text(_toml(llama4, name="pred", tasks=True, extra="random_samples = 2"))
    db = tmp_path / "s.db"
    out = json.loads(cli("run", str(cfg), "--store", str(db), "--json", "--quiet").stdout)
    assert out["study"]["kind"] == "predictor" and out["study"]["status"] == "finished"
    assert out["study"]["primary_role"] == "search" and out["study"]["budget"] == 2 * 4 + 2
    with open_store(db, readonly=True) as store:
        cands = store.candidates(1, with_metrics=True)
        fits = store.predictor_fits(1)
        (study,) = queries.study_records(store, now=0.0)
    assert {c["status"] for c in cands} == {"done"}
    assert len({c["spec_hash"] for c in cands}) == len(cands)

    # rounds: 4 samples in each of generations 0 and 1, then the predictor's 2 picks
    by_gen = {}
    for c in cands:
        by_gen.setdefault(c["generation"], []).append(c)
    assert [len(by_gen[g]) for g in (0, 1, 2)] == [4, 4, 2]
    assert {c["origin"] for c in by_gen[0] + by_gen[1]} == {"sample"}
    assert {c["origin"] for c in by_gen[2]} == {"predictor"}
    assert study.counts.budget_used == 10  # the picks and the samples, no baseline

    # every architecture of the search and of the random baseline removes budget ± tolerance
    # of all parameters, exactly as the space counted it, and leaves blocks 0 and 3 whole
    archs = [c for c in cands if (c["spec"]["options"] or {}).get("attention_ratios")]
    assert len(archs) == 12
    for c in archs:
        realised = _metric(c, "param_ratio", "structure")
        assert abs(realised["value"] - BUDGET) <= TOL + 1e-12
        assert realised["value"] == pytest.approx(c["info"]["predictor"]["param_ratio"],
                                                  abs=1e-12)
        opts = c["spec"]["options"]
        assert opts["importance"] == "taylor_second"
        for b in (0, 3):
            assert opts["attention_ratios"][b] == 0.0 and opts["mlp_ratios"][b] == 0.0
        assert _metric(c, "ppl", "search") is not None and _metric(c, "acc", "task") is not None

    # baselines: dense, uniform and LLM-Pruner at the budget (held-out PPL), 2 random ones
    baselines = {c["info"]["baseline"]: c for c in cands if c["origin"] == "baseline"
                 and c["info"]["baseline"] != "random"}
    assert set(baselines) == {"dense", "uniform", "llm_pruner"}
    for name in ("uniform", "llm_pruner"):
        c = baselines[name]
        assert c["spec"]["sparsity"] == BUDGET and c["spec"]["options"]["ratio"] == "params"
        assert _metric(c, "ppl", "in_domain") is not None
    assert baselines["uniform"]["spec"]["options"]["block_start"] == 1
    assert _metric(baselines["dense"], "prunable_params", "structure")["protocol"]["layout"]
    randoms = [c for c in cands if c["info"].get("baseline") == "random"]
    assert len(randoms) == 2 and all(c["generation"] is None for c in randoms)

    # the fits: one per round and target, with quality, importances and the narrowed ranges
    table = {(f["round"], f["target"]): f["payload"] for f in fits}
    assert set(table) == {(0, "log_ppl"), (0, "accuracy"), (1, "log_ppl"), (1, "accuracy"),
                          (2, "selection")}
    for r in (0, 1):
        p = table[(r, "log_ppl")]
        assert p["n_train"] == 4 * (r + 1) and len(p["oof"]) == p["n_train"]
        assert set(p["oof_by_candidate"]) == {str(c["id"]) for g in range(r + 1)
                                              for c in by_gen[g]}
        assert p["kfold"] == min(5, p["n_train"]) and p["params"]["min_data_in_leaf"] == 2
        for key in ("r2", "spearman", "kendall", "importance", "model", "narrowed"):
            assert key in p
        assert set(p["importance"]) == set(p["feature_names"])
        for ch in p["narrowed"]:
            if "after" in ch:
                (a, b), (x, y) = ch["before"], ch["after"]
                assert a <= x <= y <= b
    # the last fit, reloaded from the store, reproduces the predictions the picks recorded
    last = Fit.from_dict(table[(1, "log_ppl")])
    col = last.feature_names
    for c in by_gen[2]:
        info = c["info"]["predictor"]
        X = np.array([[info["features"][n] for n in col]])
        assert last.predict(X)[0] == info["predicted_log_ppl"]
    # predicted vs measured: round-1 samples carry round 0's prediction, picks their own
    for c in by_gen[1] + by_gen[2]:
        assert math.isfinite(c["info"]["predictor"]["predicted_log_ppl"])
    sel = table[(2, "selection")]
    assert [r["id"] for r in sel["top_k"]] == [c["id"] for c in by_gen[2]]
    assert all(r["measured_log_ppl"] is not None for r in sel["top_k"])

    # the winner: the best measured search PPL, re-measured on the held-out set (finalist 1)
    search = [c for c in cands if c["generation"] is not None]
    winner = min(search, key=lambda c: (_metric(c, "ppl", "search")["value"], c["idx"]))
    held = _metric(winner, "ppl", "in_domain")
    assert held["protocol"]["stage"] == "finalist" and held["protocol"]["finalist_rank"] == 1
    assert sel["winner"]["id"] == winner["id"]
    best_random = min(randoms, key=lambda c: (_metric(c, "ppl", "search")["value"], c["idx"]))
    assert _metric(best_random, "ppl", "in_domain")["protocol"]["baseline"] == "random"
    assert [c["id"] for c in search if _metric(c, "ppl", "in_domain")] == [winner["id"]]


def _record(cands: list[dict]) -> list[tuple]:
    return [(c["spec_hash"], c["origin"], c["generation"], c["status"]) for c in cands]


def test_sigkill_then_resume_records_nothing_twice(tmp_path, llama4):
    text = _toml(llama4, name="victim", tasks=False, split_n=40, extra='baselines = []')
    cfg = tmp_path / "p.toml"
    cfg.write_text(text)
    db = tmp_path / "s.db"
    proc = start_until(["run", str(cfg), "--store", str(db), "--quiet"], db,
                       lambda rows: any(r["generation"] == 1 and r["status"] == "running"
                                        for r in rows)
                       and sum(r["generation"] == 1 and r["status"] == "pending"
                               for r in rows) >= 2,  # killed inside a candidate, mid-round
                       what="the first round-1 candidate")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    with open_store(db, readonly=True) as store:
        before = store.candidates(1, with_metrics=True)
        fits_before = store.predictor_fits(1)
    assert "running" in statuses(before)
    assert [(f["round"], f["target"]) for f in fits_before] == [(0, "log_ppl")]
    finished = {c["id"]: c for c in before if c["status"] == "done"}

    out = json.loads(cli("run", "--resume", "victim", "--store", str(db), "--json",
                         "--quiet").stdout)
    assert out["study"]["status"] == "finished"
    with open_store(db, readonly=True) as store:
        after = {c["id"]: c for c in store.candidates(1, with_metrics=True)}
        fits = store.predictor_fits(1)
    for cid, c in finished.items():  # recorded work kept, never evaluated again
        assert after[cid]["finished_at"] == c["finished_at"]
        # every metric recorded before the kill is unchanged (the winner gains held-out ones)
        assert [m for m in after[cid]["metrics"]
                if m["id"] in {x["id"] for x in c["metrics"]}] == c["metrics"]
    assert len({c["spec_hash"] for c in after.values()}) == len(after)
    assert {c["status"] for c in after.values()} == {"done"}
    assert [(f["round"], f["target"]) for f in fits] == [(0, "log_ppl"), (1, "log_ppl"),
                                                         (2, "selection")]
    assert fits[0]["id"] == fits_before[0]["id"]
    assert fits[0]["payload"]["model"] == fits_before[0]["payload"]["model"]

    # the same study uninterrupted makes the same proposals and the same fits
    ref_cfg = tmp_path / "ref.toml"
    ref_cfg.write_text(text.replace('name = "victim"', 'name = "reference"'))
    ref_db = tmp_path / "ref.db"
    ref = json.loads(cli("run", str(ref_cfg), "--store", str(ref_db), "--json",
                         "--quiet").stdout)
    assert _record(ref["candidates"]) == _record(out["candidates"])
    with open_store(ref_db, readonly=True) as store:
        ref_fits = store.predictor_fits(1)
    assert [f["payload"].get("model") for f in ref_fits] == [
        f["payload"].get("model") for f in fits]


def test_accuracy_on_finals_measures_tasks_on_the_baselines_and_finals_only(tmp_path, llama4):
    cfg = tmp_path / "p.toml"
    cfg.write_text(_toml(llama4, name="finals", tasks=True, extra='accuracy_on = "finals"\n'
                         'baselines = ["random"]\nrandom_samples = 2').replace(
        "rounds = 2", "rounds = 1").replace("top_k = 2", "top_k = 1"))
    db = tmp_path / "s.db"
    out = json.loads(cli("run", str(cfg), "--store", str(db), "--json", "--quiet").stdout)
    assert out["study"]["status"] == "finished"
    with open_store(db, readonly=True) as store:
        cands = store.candidates(1, with_metrics=True)
        fits = store.predictor_fits(1)
    with_acc = {c["id"] for c in cands if _metric(c, "acc", "task") is not None}
    held_out = {c["id"] for c in cands if _metric(c, "ppl", "in_domain") is not None}
    dense = next(c for c in cands if c["spec"]["method"] == "dense")
    # the dense model, the winner and the best random architecture: accuracy and held-out PPL
    assert with_acc == held_out and len(with_acc) == 3 and dense["id"] in with_acc
    assert len(cands) == 1 + 4 + 1 + 2
    # no accuracy predictor without accuracies to fit
    assert {f["target"] for f in fits} == {"log_ppl", "selection"}
