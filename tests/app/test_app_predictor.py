"""The predictor study view: predicted vs measured per round with y = x, fit quality over
rounds, importances, narrowed ranges, the top-k picks (a store written through the store's
write API, fits shaped as the predictor proposer records them)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from app_store import _config, _ppl, _run, fixed_clock, spec
from app_testlib import Run, assert_clean, charts, frames, texts
from prunestudio.store import open_store


def _structured(att: list[float], mlp: list[float]) -> dict:
    return spec("structured", 0.0, importance="taylor_second", attention_ratios=att,
                mlp_ratios=mlp)


def _fit(rnd: int, target: str, ids: list[int], measured: list[float], oof: list[float],
         narrowed: list[dict]) -> dict:
    return {"target": target, "n_train": len(ids), "feature_names": ["att_1", "mlp_1"],
            "r2": 0.5 + 0.2 * rnd, "spearman": 0.6 + 0.1 * rnd, "kendall": 0.4 + 0.2 * rnd,
            "oof": oof, "measured": measured, "importance": {"att_1": 3.0 + rnd, "mlp_1": 1.0},
            "model": "tree\n" * 1000, "round": rnd, "candidate_ids": ids,
            "narrowed": narrowed}


def _predictor_store(path: Path) -> int:
    with fixed_clock(), open_store(path) as store:
        sid = store.create_study(name="predictor-20", kind="predictor",
                                 model="smollm2-135m-instruct (Q4_1 GGUF)", seed=0, budget=10,
                                 config=_config("predictor-20", "predictor", 0))
        store.set_study_status(sid, "running")
        _run(store, sid, spec("dense"), "baseline", metrics=[_ppl(15.0, "search",
                                                                  fidelity="proxy")])
        ids, ppl = [], []
        for i in range(8):
            value = 30.0 + 2.0 * i
            ids.append(_run(store, sid, _structured([0.0, 0.05 * i], [0.0, 0.2]),
                            "random" if i < 4 else "predictor", generation=i // 4,
                            metrics=[_ppl(value, "search", fidelity="proxy")]))
            ppl.append(math.log(value))
        for rnd in (0, 1):
            part = slice(4 * rnd, 4 * rnd + 4)
            narrowed = [{"feature": "att_1", "gain": 3.0, "before": [0.0, 0.5],
                         "after": [0.0, 0.25]}] if rnd == 0 else [
                {"feature": "mlp_1", "skipped": "the budget would be out of reach",
                 "before": [0.0, 0.5]}]
            store.add_predictor_fit(sid, round=rnd, target="log_ppl", payload=_fit(
                rnd, "log_ppl", ids[part], ppl[part], [v + 0.01 for v in ppl[part]], narrowed))
        store.add_predictor_fit(sid, round=2, target="selection", payload={
            "predictor_round": 1, "scored": 500, "kendall": 1.0, "spearman": 1.0,
            "top_k": [{"id": ids[-1], "rank": 0, "predicted_log_ppl": ppl[-1] - 0.05,
                       "measured_log_ppl": ppl[-1]}],
            "winner": {"id": ids[4], "search_ppl": 38.0}})
        store.add_event(sid, "round 1: predictors fitted")
    return sid


@pytest.fixture
def predictor_db(tmp_path: Path) -> tuple[Path, int]:
    path = tmp_path / "predictor.db"
    return path, _predictor_store(path)


def test_predictor_view_draws_every_round(run_app: Run, predictor_db) -> None:
    path, sid = predictor_db
    at = run_app(store=path, study=str(sid))
    assert_clean(at)
    assert "Predictor" in [t.label for t in at.tabs]
    metrics = {m.label: m.value for m in at.metric}
    assert metrics["Rounds fitted"] == "2"
    assert metrics["Kendall τ (last round, log PPL)"] == "0.6000"
    figs = charts(at)
    pvm = figs["predictor-pvm"]["data"]
    assert [t["name"] for t in pvm] == ["y = x", "0", "1", "selection"]
    assert sum(len(t["x"]) for t in pvm[1:3]) == 8  # every out-of-fold prediction
    assert [t["name"] for t in figs["predictor-quality"]["data"]] == [
        "log_ppl kendall", "log_ppl r2", "log_ppl spearman"]
    assert figs["predictor-quality"]["data"][0]["y"] == pytest.approx([0.4, 0.6])
    assert figs["predictor-importance"]["data"][0]["y"] == ["mlp_1", "att_1"]  # largest on top
    ranges = next(f for f in frames(at) if "feature" in f.columns)
    assert list(ranges["after"]) == ["[0.0, 0.25]", ""]
    assert "the budget would be out of reach" in list(ranges["note"])
    assert "chosen among 500 architectures" in texts(at)


def test_fits_are_read_without_the_model_text(predictor_db) -> None:
    from prunestudio.store import browse

    path, sid = predictor_db
    with open_store(path, readonly=True) as store:
        fits = browse.predictor_fits(store, sid)
        full = store.predictor_fits(sid)
    assert [(f["round"], f["target"]) for f in fits] == [(0, "log_ppl"), (1, "log_ppl"),
                                                          (2, "selection")]
    assert "model" not in fits[0]["payload"] and full[0]["payload"]["model"].startswith("tree")
    assert fits[0]["payload"]["oof"] == full[0]["payload"]["oof"]
