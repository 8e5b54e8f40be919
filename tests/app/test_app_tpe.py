"""The AdaPruner study view (kind ``tpe``): best so far per trial against every other tpe study
of the same model and objective (TPE against its random-sampler twin), fANOVA importances,
the windows of the best trials, the slices over α / β / f / γ and the best trials (a store
written through the store's write API, trials recorded as the tpe proposer records them:
``info.tpe`` with params, Optuna distributions as JSON, windows and coefficients)."""

from __future__ import annotations

import math
import random
from typing import Any

import pytest
from app_store import _config, _ppl, _run, fixed_clock, spec
from app_testlib import Run, assert_clean, charts, frames, texts
from optuna.distributions import (
    CategoricalDistribution,
    FloatDistribution,
    distribution_to_json,
)
from prunestudio.app.views import tpe as view
from prunestudio.store import open_store

from prunestudio.schema import MetricIdentity

MODEL = "smollm2-135m-instruct (Q4_1 GGUF)"
OTHER_MODEL = "smollm2-360m-instruct"
POOL, SLOTS, TRIALS = 16, 4, 12
FACTORS = (1.0, 10.0, 100.0, 1000.0)
OBJECTIVE = MetricIdentity("ppl", "search", "pydoc+shakespeare", "all+macbeth", 128, "proxy")


def _objective(value: float, dataset: str = "pydoc+shakespeare",
               split: str = "all+macbeth") -> list[dict[str, Any]]:
    """The search-mean record and its two parts, as the search_mean measurement writes them."""
    parts = [_ppl(value * 0.8, "search_pydoc", fidelity="proxy", seqlen=128, n=8),
             _ppl(value * 1.2, "search_shakespeare", fidelity="proxy", dataset="shakespeare",
                  split="macbeth", seqlen=128, n=8)]
    return [*parts, _ppl(value, "search", fidelity="proxy", dataset=dataset, split=split,
                         seqlen=128, n=16)]


def _space(search: str) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if search in ("joint", "calibration"):
        out.update({f"sample_{i}": CategoricalDistribution(tuple(range(POOL)))
                    for i in range(SLOTS)})
    if search in ("joint", "importance"):
        out.update(alpha=FloatDistribution(0.0, 1.0), beta=FloatDistribution(0.0, 1.0),
                   factor=CategoricalDistribution(FACTORS))
    return out


def _tpe_study(store, name: str, sampler: str, seed: int, *, model: str = MODEL,
               search: str = "joint", trials: int = TRIALS, fail: int | None = None,
               baselines: bool = True, split: str = "all+macbeth") -> tuple[int, list]:
    """A tpe study: the dense reference (and the llm_pruner baseline), then ``trials`` trials
    with params drawn from ``seed``; returns (study id, [(trial, objective or None)])."""
    sid = store.create_study(name=name, kind="tpe", model=model, seed=seed, budget=trials,
                             config=_config(name, "tpe", seed, tpe={
                                 "sampler": sampler, "trials": trials, "samples": SLOTS,
                                 "search": search, "factors": list(FACTORS)}))
    store.set_study_status(sid, "running")
    if baselines:
        _run(store, sid, spec("dense"), "baseline", info={"baseline": "dense"},
             metrics=[*_objective(15.0, split=split), _ppl(15.02, "in_domain")])
        _run(store, sid, {**spec("structured", 0.2, block_start=3, block_end=27),
                          "calibration_samples": [1, 4, 9, 12]}, "baseline",
             info={"baseline": "llm_pruner"},
             metrics=[*_objective(45.0, split=split), _ppl(44.0, "in_domain")])
    rng = random.Random(seed)
    space = _space(search)
    found = []
    for n in range(trials):
        params: dict[str, Any] = {}
        for key, dist in space.items():
            params[key] = (rng.choice(dist.choices) if isinstance(dist, CategoricalDistribution)
                           else round(rng.random(), 4))
        samples = sorted({int(params[k]) for k in params if k.startswith("sample_")}) or [
            1, 4, 9, 12]
        alpha, beta = params.get("alpha", 0.0), params.get("beta", 1.0)
        gamma = beta * params["factor"] if "factor" in params else 0.0
        value = round(30.0 + 12.0 * alpha + 3.0 * beta + 0.4 * len(samples)
                      + 2.0 * rng.random() + (1.0 if sampler == "random" else 0.0), 3)
        info = {"tpe": {"trial": n, "sampler": sampler, "params": params,
                        "distributions": {k: distribution_to_json(d) for k, d in space.items()},
                        "samples": samples, "alpha": alpha, "beta": beta, "gamma": gamma}}
        sp = {**spec("structured", 0.2, importance="combined", alpha=alpha, beta=beta,
                     gamma=gamma, block_start=3, block_end=27),
              "calibration_samples": samples}
        if n == fail:
            _run(store, sid, sp, sampler, generation=n, metrics=None, info=info,
                 error="RuntimeError: non-finite objective (inf)")
            found.append((n, None))
            continue
        _run(store, sid, sp, sampler, generation=n, info=info,
             metrics=_objective(value, split=split))
        found.append((n, value))
    store.set_study_status(sid, "finished")
    return sid, found


@pytest.fixture(scope="module")
def tpe_db(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    path = tmp_path_factory.mktemp("tpe") / "tpe.db"
    out: dict[str, Any] = {"path": path}
    with fixed_clock(), open_store(path) as store:
        out["tpe"] = _tpe_study(store, "adapruner-tpe", "tpe", 0, fail=5)
        out["random"] = _tpe_study(store, "adapruner-random", "random", 1, baselines=False)
        # same kind and model, another objective (one text only): not on the others' chart
        out["other"] = _tpe_study(store, "adapruner-pydoc", "tpe", 2, trials=3,
                                  baselines=False, split="all")
        # the ablation over windows only (importance fixed), another model
        out["calibration"] = _tpe_study(store, "adapruner-calibration", "tpe", 3,
                                        model=OTHER_MODEL, search="calibration", trials=8)
        # just started: the dense model measured, trial 0 running (no info yet)
        sid = store.create_study(name="adapruner-started", kind="tpe", model="m-started",
                                 seed=4, budget=TRIALS, config=_config(
                                     "adapruner-started", "tpe", 4, tpe={"sampler": "tpe"}))
        store.set_study_status(sid, "running")
        _run(store, sid, spec("dense"), "baseline", info={"baseline": "dense"},
             metrics=_objective(15.0))
        cid, _ = store.add_candidate(sid, {**spec("structured", 0.2, importance="combined"),
                                           "calibration_samples": [0, 3]}, origin="tpe",
                                     generation=0)
        store.start_candidate(cid, worker="gpu0")
        out["started"] = sid
    return out


def _running_min(found: list) -> tuple[list[int], list[float]]:
    xs, ys, best = [], [], math.inf
    for n, v in found:
        if v is None:
            continue
        best = min(best, v)
        xs.append(n)
        ys.append(best)
    return xs, ys


def test_tpe_view_compares_the_samplers_and_explains_the_search(run_app: Run, tpe_db) -> None:
    sid, found = tpe_db["tpe"]
    at = run_app(store=tpe_db["path"], study=str(sid))
    assert_clean(at)
    assert "TPE" in [t.label for t in at.tabs]
    figs = charts(at)
    lines = figs["tpe-best"]["data"]
    assert [t["name"] for t in lines] == ["adapruner-tpe (tpe, seed 0)",
                                          "adapruner-random (random, seed 1)"]
    for trace, key in zip(lines, ("tpe", "random"), strict=True):
        xs, ys = _running_min(tpe_db[key][1])
        assert trace["x"] == xs and trace["y"] == pytest.approx(ys)
        assert all(b <= a for a, b in zip(trace["y"], trace["y"][1:], strict=False))
        assert trace["y"][-1] == pytest.approx(min(v for _, v in tpe_db[key][1] if v))
    assert 5 not in lines[0]["x"]  # the failed trial
    shapes = figs["tpe-best"]["layout"]["shapes"]
    assert sorted(s["y0"] for s in shapes) == [15.0, 45.0]  # dense and llm_pruner
    summary = next(f for f in frames(at) if "final best" in f.columns)
    assert list(summary["study"]) == [t["name"] for t in lines]
    for (_, row), key in zip(summary.iterrows(), ("tpe", "random"), strict=True):
        values = dict(tpe_db[key][1])
        best = min(v for v in values.values() if v is not None)
        assert row["final best"] == pytest.approx(best)
        assert row["within 1% at trial"] == min(n for n, v in values.items()
                                                if v is not None and v <= best * 1.01)
    assert summary.iloc[0]["trials"] == f"{TRIALS - 1}/{TRIALS}"

    importance = figs["tpe-importance"]["data"][0]
    assert set(importance["y"]) == {"alpha", "beta", "factor", f"windows ({SLOTS} slots)"}
    assert sum(importance["x"]) == pytest.approx(1.0, abs=1e-6)
    windows = figs["tpe-windows"]["data"]
    done = sorted((v, n) for n, v in found if v is not None)
    top = {n for _, n in done[: math.ceil(0.2 * len(done))]}
    # the windows each top trial used, counted by hand from what was recorded
    with open_store(tpe_db["path"], readonly=True) as store:
        recorded = {c.generation: c.info["tpe"]["samples"]
                    for c in store.candidate_records(sid) if c.generation in top}
    counts: dict[int, int] = {}
    for ws in recorded.values():
        for w in ws:
            counts[w] = counts.get(w, 0) + 1
    by_window = dict(zip(windows[0]["x"], (c[0] for c in windows[0]["customdata"]),
                         strict=True))
    assert {w: n for w, n in by_window.items() if n} == counts
    for key in ("alpha", "beta", "factor", "gamma"):
        assert f"tpe-slice-{key}" in figs
    assert figs["tpe-slice-factor"]["layout"]["xaxis"]["type"] == "log"
    assert len(figs["tpe-slice-alpha"]["data"][0]["x"]) == TRIALS - 1

    best_table = next(f for f in frames(at) if "windows" in f.columns and "gamma" in f.columns)
    assert len(best_table) == 5
    best_trial, best_value = min(((n, v) for n, v in found if v is not None),
                                 key=lambda nv: (nv[1], nv[0]))
    first = best_table.iloc[0]
    assert first["trial"] == best_trial and first["objective"] == pytest.approx(best_value)
    assert list(best_table["objective"]) == sorted(best_table["objective"])
    assert first["label"]


def test_the_random_study_compares_back_and_another_objective_stays_apart(
        run_app: Run, tpe_db) -> None:
    sid, _ = tpe_db["random"]
    at = run_app(store=tpe_db["path"], study=str(sid))
    assert_clean(at)
    names = [t["name"] for t in charts(at)["tpe-best"]["data"]]
    assert names == ["adapruner-random (random, seed 1)", "adapruner-tpe (tpe, seed 0)"]
    other, _ = tpe_db["other"]
    at = run_app(store=tpe_db["path"], study=str(other))
    assert_clean(at)
    figs = charts(at)
    assert [t["name"] for t in figs["tpe-best"]["data"]] == ["adapruner-pydoc (tpe, seed 2)"]
    assert "tpe-importance" not in figs
    assert "fANOVA needs at least 5 measured trials; 3 so far" in texts(at)


def test_a_wide_space_fits_fanova_only_when_asked(run_app: Run, tpe_db,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(view, "AUTO_FANOVA_CELLS", 10)
    sid, _ = tpe_db["tpe"]
    at = run_app(store=tpe_db["path"], study=str(sid))
    assert_clean(at)
    assert "tpe-importance" not in charts(at)
    at.toggle(key="tpe-fanova").set_value(True).run()
    assert_clean(at)
    assert f"windows ({SLOTS} slots)" in charts(at)["tpe-importance"]["data"][0]["y"]


def test_the_calibration_ablation_has_no_coefficient_slices(run_app: Run, tpe_db) -> None:
    sid, found = tpe_db["calibration"]
    at = run_app(store=tpe_db["path"], study=str(sid))
    assert_clean(at)
    assert "TPE" in [t.label for t in at.tabs]
    figs = charts(at)
    assert not any(k.startswith("tpe-slice-") for k in figs)
    assert [t["name"] for t in figs["tpe-best"]["data"]] == [
        "adapruner-calibration (tpe, seed 3)"]  # another model: alone
    assert "tpe-windows" in figs
    assert figs["tpe-importance"]["data"][0]["y"] == [f"windows ({SLOTS} slots)"]
    best_table = next(f for f in frames(at) if "windows" in f.columns and "gamma" in f.columns)
    assert best_table.iloc[0]["objective"] == pytest.approx(min(v for _, v in found))
    assert set(best_table["alpha"]) == {0.0} and set(best_table["beta"]) == {1.0}


def test_a_study_without_measured_trials_renders(run_app: Run, tpe_db) -> None:
    at = run_app(store=tpe_db["path"], study=str(tpe_db["started"]))
    assert_clean(at)
    figs = charts(at)
    assert [t["name"] for t in figs["tpe-best"]["data"]] == ["adapruner-started (tpe, seed 4)"]
    assert not any(k.startswith(("tpe-slice-", "tpe-windows", "tpe-importance")) for k in figs)
    assert "fANOVA needs at least 5 measured trials; 0 so far" in texts(at)


def test_sibling_trials_query(tpe_db) -> None:
    from prunestudio.store import browse

    sid, found = tpe_db["tpe"]
    rid, _ = tpe_db["random"]
    oid, _ = tpe_db["other"]
    with open_store(tpe_db["path"], readonly=True) as store:
        rows = browse.sibling_trials(store, sid, OBJECTIVE, "tpe")
        with pytest.raises(ValueError):
            browse.sibling_trials(store, sid, OBJECTIVE, "tpe') --")
    studies = list(dict.fromkeys(r["study_id"] for r in rows))
    assert studies == [sid, rid, oid]  # own first; the other model's study left out
    own = [r for r in rows if r["study_id"] == sid]
    assert [(r["generation"], r["value"]) for r in own] == found
    assert own[0]["info"]["params"]["factor"] in FACTORS and own[0]["study"] == "adapruner-tpe"
    assert all(r["value"] is None for r in rows if r["study_id"] == oid)  # another identity


# -- pure helpers ------------------------------------------------------------------------------


def test_convergence_against_a_hand_computed_reference() -> None:
    conv = view.convergence([0, 1, 2, 3, 4, 5], [50.0, 40.0, math.nan, 39.3, 45.0, 39.0])
    assert conv.trials == [0, 1, 3, 4, 5]
    assert conv.best == [50.0, 40.0, 39.3, 39.3, 39.0]
    assert conv.final == 39.0
    assert conv.within == 3  # 39.3 <= 39.0 * 1.01 = 39.39, first reached at trial 3
    unordered = view.convergence([3, 0, 1], [10.0, 12.0, 10.05])
    assert unordered.trials == [0, 1, 3] and unordered.within == 1
    higher = view.convergence([0, 1, 2], [0.5, 0.7, 0.705], lower_is_better=False)
    assert higher.best == [0.5, 0.7, 0.705] and higher.within == 1
    empty = view.convergence([0], [math.nan])
    assert (empty.trials, empty.final, empty.within) == ([], None, None)


def test_importances_group_the_window_slots_and_windows_count_the_best() -> None:
    grouped = view.grouped_importances({"sample_0": 0.1, "sample_1": 0.2, "alpha": 0.7})
    assert grouped == pytest.approx({"alpha": 0.7, "windows (2 slots)": 0.3})
    assert view.grouped_importances({"alpha": 1.0}) == {"alpha": 1.0}
    rows = [{"study_id": 1, "study": "s", "seed": 0, "id": 10 + n, "generation": n,
             "status": "failed" if n == 4 else "done", "origin": "tpe", "value": v,
             "info": {"sampler": "tpe", "samples": ws, "params": {}, "alpha": 0.1,
                      "beta": 0.2, "gamma": 2.0}}
            for n, (v, ws) in enumerate([(30.0, [1, 2]), (20.0, [2, 3]), (25.0, [3, 5]),
                                         (40.0, [1, 5]), (None, [7]), (35.0, [2, 9])])]
    trials = view.trials_frame(rows)
    assert view.study_label(trials) == "s (tpe, seed 0)"
    shares = view.window_shares(trials).set_index("window")
    # 5 measured trials: the best 20 % is trial 1 alone (windows 2, 3); 7 never measured
    assert list(shares.index) == [1, 2, 3, 5, 9]
    assert shares["best_n"].to_dict() == {1: 0, 2: 1, 3: 1, 5: 0, 9: 0}
    assert shares["all_n"].to_dict() == {1: 2, 2: 3, 3: 2, 5: 2, 9: 1}
    assert shares.loc[2, "all"] == pytest.approx(0.6)
    best = view.best_trials(trials, {11: "b"}, n=2)
    assert list(best["trial"]) == [1, 2] and list(best["label"]) == ["b", "#12"]
    assert list(best["windows"]) == ["2, 3", "3, 5"]


def test_fanova_on_a_rebuilt_study_ranks_the_parameter_that_matters() -> None:
    space = {"sample_0": CategoricalDistribution((0, 1, 2)), "alpha": FloatDistribution(0, 1),
             "beta": FloatDistribution(0, 1)}
    rng = random.Random(0)
    rows = []
    for n in range(30):
        params = {"sample_0": rng.choice((0, 1, 2)), "alpha": rng.random(),
                  "beta": rng.random()}
        rows.append({"study_id": 1, "study": "s", "seed": 0, "id": n, "generation": n,
                     "status": "done", "origin": "tpe", "value": 10 * params["alpha"] + 0.01
                     * params["beta"], "info": {"params": params, "distributions": {
                         k: distribution_to_json(d) for k, d in space.items()}}})
    trials = view.trials_frame(rows)
    assert view.encoded_width(trials) == 5
    records = view.fanova_records(trials)
    assert len(records) == 30 and records[0][2] == pytest.approx(rows[0]["value"])
    found = view.fanova_importances(records)
    assert max(found, key=found.__getitem__) == "alpha"
    assert set(found) == set(space)
