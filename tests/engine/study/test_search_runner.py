"""GP and random searches run on a tiny model: every candidate recorded with its expression,
generation, origin, parents and fitness; mask-equivalent metrics reuse a fitness (and say so);
failures are recorded and the search goes on; finalists are measured on held-out text."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from prunestudio.engine.models.loading import load_model
from prunestudio.engine.runner import launch_study, run_recorded, start_study
from prunestudio.engine.symbolic import parse, simplify, to_text
from prunestudio.store import open_store

from prunestudio.schema.study_file import parse_config

ORIGINS = {"seed", "init", "crossover", "mutation", "random", "baseline"}


def search_data(model_dir: Path, kind: str = "gp", seed: int = 0, **search) -> dict:
    settings = {"population": 6, "iterations": 3, "offspring": 2, "top_k": 4,
                "split": {"source": "pydoc", "seqlen": 32, "n": 2, "offset": 10000},
                "finalists": 2, **search}
    return {
        "study": {"kind": kind, "seed": seed},
        "model": {"source": str(model_dir)},
        "calibration": {"source": "pydoc", "seqlen": 32, "n": 4},
        "evaluation": [
            {"role": "in_domain", "windows": {"source": "pydoc", "seqlen": 64, "n": 2,
                                              "offset": 20000}},
            {"role": "out_of_domain", "windows": {"source": "shakespeare", "split": "hamlet",
                                                  "seqlen": 64, "n": 2}},
        ],
        "search": settings,
    }


@pytest.fixture(scope="module")
def llama(tiny_model_dirs):
    return load_model(str(tiny_model_dirs["llama"]), device="cpu")


def _run(tmp_path, data, llama, name="s.db"):
    study_id, status = launch_study(parse_config(data), tmp_path / name, lm=llama)
    with open_store(tmp_path / name, readonly=True) as store:
        cands = store.candidates(study_id, with_metrics=True)
        events = [e["message"] for e in store.db.query(
            "SELECT message FROM events WHERE study_id = ? ORDER BY id", [study_id])]
        study = store.get_study(study_id)
    return status, study, cands, events


def _fitness(c):
    return next((m for m in c["metrics"] if m["name"] == "ppl" and m["role"] == "search"), None)


def _full(c):
    """The higher-fidelity fitness of a candidate re-measured by successive halving."""
    return next((m for m in c["metrics"] if m["name"] == "ppl" and m["role"] == "search_full"),
                None)


@pytest.mark.parametrize("noise", [{"noise_aware": False}, {"noise_k": 0}],
                         ids=["paper", "halving"])
def test_gp_search_records_every_candidate(tmp_path, tiny_model_dirs, llama, noise):
    data = search_data(tiny_model_dirs["llama"], budget=10, baselines=["wanda"], **noise)
    status, study, cands, events = _run(tmp_path, data, llama)
    assert status == "finished" and study["kind"] == "gp" and study["budget"] == 10
    by_id = {c["id"]: c for c in cands}
    search = [c for c in cands if c["origin"] != "baseline"]
    real = [c for c in search if c["status"] == "done"]
    assert 0 < len(real) <= 10
    assert {c["origin"] for c in cands} <= ORIGINS
    assert {c["origin"] for c in search} & {"crossover", "mutation"}, "the search went on"
    for c in search:
        expression = c["spec"]["options"]["expression"]
        assert c["spec"]["method"] == "symbolic" and c["spec"]["calibration"]["mode"] == "dense"
        assert expression == to_text(simplify(parse(expression))), "stored simplified"
        assert c["generation"] is not None
        if c["origin"] in ("crossover", "mutation"):
            assert len(c["parents"]) == 2
            for p in c["parents"]:  # parents come from earlier generations and had a fitness
                assert by_id[p]["generation"] < c["generation"] and _fitness(by_id[p])
        else:
            assert c["parents"] is None
        if c["status"] in ("done", "skipped") and c["info"].get("equivalent_to") is None \
                and c["status"] == "done":
            m = _fitness(c)
            assert (m["fidelity"], m["dataset"], m["seqlen"], m["n_samples"]) == (
                "proxy", "pydoc", 32, 2)
            assert m["protocol"]["offset"] == 10000 and math.isfinite(m["value"])
            assert c["info"]["mask_hash"] and c["info"]["rank_key"]
    assert len({c["spec_hash"] for c in cands}) == len(cands)
    # finalists: the best distinct metrics by search PPL, measured on held-out text too
    finalists = [c for c in cands if any(m["protocol"].get("stage") == "finalist"
                                         for m in c["metrics"])]
    assert len(finalists) == 2
    if noise.get("noise_aware", True):
        # successive halving: the finalists are the best re-measured metrics, by the
        # higher-fidelity fitness (exact comparisons here: noise_k = 0)
        remeasured = [c for c in search if _full(c)]
        assert len(remeasured) >= 3, "the top 3 of generation 0 at least"
        ranked = sorted(remeasured, key=lambda c: (_full(c)["value"], c["idx"]))
        assert [c["id"] for c in finalists] == sorted(c["id"] for c in ranked[:2])
    else:  # the paper's search: the best by search PPL, and nothing re-measured
        best = min((c for c in search if _fitness(c)),
                   key=lambda c: (_fitness(c)["value"], c["idx"]))
        assert best in finalists
        assert not any(_full(c) for c in cands)
    for c in finalists:
        full = {m["role"]: m for m in c["metrics"] if m["fidelity"] == "full"
                and m["role"] != "search_full"}
        assert set(full) == {"in_domain", "out_of_domain"}
        assert full["in_domain"]["protocol"]["offset"] == 20000
    (baseline,) = [c for c in cands if c["origin"] == "baseline"]
    assert {m["role"] for m in baseline["metrics"] if m["name"] == "ppl"} == {
        "search", "in_domain", "out_of_domain"} | (
        {"search_full"} if noise.get("noise_aware", True) else set())
    assert any(e.startswith("search finished:") and "evaluations saved" in e for e in events)
    assert any("calibration dense" in e and "no forward pass per candidate" in e
               for e in events)


def test_mask_equivalent_metrics_reuse_the_recorded_fitness(tmp_path, tiny_model_dirs, llama):
    seeds = ["wanda", "sqrt(mul(W,sqrt(X)))", "add(W,W)", "W", "mul(W,G)"]
    data = search_data(tiny_model_dirs["llama"], population=5, iterations=0, finalists=5,
                       seed_metrics=seeds, baselines=["wanda"])
    status, study, cands, events = _run(tmp_path, data, llama)
    by_expr = {c["spec"]["options"].get("expression", "baseline"): c for c in cands}
    baseline = by_expr["baseline"]
    wanda, sqrt_wanda = by_expr["mul(W,sqrt(X))"], by_expr["sqrt(mul(W,sqrt(X)))"]
    double, magnitude = by_expr["add(W,W)"], by_expr["W"]
    # the Wanda seed prunes exactly as the Wanda baseline: identical pruned weights
    assert wanda["status"] == "skipped" and wanda["info"]["equivalent_to"] == baseline["id"]
    assert wanda["info"]["equivalence"] == "mask"
    # sqrt is strictly increasing on the non-negative score: symbolic rank key, no pruning
    assert sqrt_wanda["info"]["equivalent_to"] == baseline["id"]
    assert sqrt_wanda["info"]["equivalence"] == "rank_key"
    # W and 2W rank alike but have different rank keys: caught by the pruned weights' hash
    assert double["status"] == "done"
    assert magnitude["status"] == "skipped" and magnitude["info"]["equivalent_to"] == double["id"]
    assert magnitude["info"]["equivalence"] == "mask"
    assert magnitude["info"]["mask_hash"] == double["info"]["mask_hash"]
    for c, ref in ((wanda, baseline), (sqrt_wanda, baseline), (magnitude, double)):
        assert "mask-equivalent to candidate" in c["error"]
        m = _fitness(c)
        assert m["value"] == _fitness(ref)["value"]
        assert m["protocol"]["reused_from"] == ref["id"]
        assert m["protocol"]["equivalence"] == c["info"]["equivalence"]
    assert by_expr["mul(G,W)"]["status"] == "done"
    # finalists: the 3 distinct pruned models; the Wanda seed's is the baseline's, whose
    # held-out figures it takes instead of measuring them again
    finalists = {c["id"] for c in cands for m in c["metrics"]
                 if m["protocol"].get("stage") == "finalist"}
    assert finalists == {wanda["id"], double["id"], by_expr["mul(G,W)"]["id"]}
    held = {m["role"]: m for m in wanda["metrics"] if m["fidelity"] == "full"
            and m["role"] != "search_full"}
    base_held = {m["role"]: m for m in baseline["metrics"] if m["fidelity"] == "full"}
    assert set(held) == {"in_domain", "out_of_domain"}
    for role, m in held.items():
        assert m["value"] == base_held[role]["value"]
        assert m["protocol"]["reused_from"] == baseline["id"]
    assert any("3 fitness value(s) reused" in e and "(60.0% of evaluations saved)" in e
               for e in events), events[-1]


def test_equivalence_off_evaluates_everything(tmp_path, tiny_model_dirs, llama):
    data = search_data(tiny_model_dirs["llama"], population=2, iterations=0, finalists=0,
                       seed_metrics=["add(W,W)", "W"], equivalence="off")
    _, _, cands, _ = _run(tmp_path, data, llama)
    assert [c["status"] for c in cands] == ["done", "done"]
    assert _fitness(cands[0])["value"] == _fitness(cands[1])["value"]


def test_failing_metric_is_recorded_and_the_search_goes_on(tmp_path, tiny_model_dirs, llama):
    # W / (W − W + ε) is ~1e8·W: exp clamps at e^50 and its square overflows fp32 → inf scores
    bad = "sqr(exp(div(W,sub(W,W))))"
    data = search_data(tiny_model_dirs["llama"], population=4, iterations=2, budget=6,
                       seed_metrics=[bad, "wanda"])
    status, _, cands, events = _run(tmp_path, data, llama)
    (failed,) = [c for c in cands if c["spec"]["options"]["expression"] == bad]
    assert status == "finished"
    assert failed["status"] == "failed" and "non-finite" in failed["error"]
    assert failed["info"]["expression"] == bad and failed["metrics"] == []
    assert sum(c["status"] == "done" for c in cands) >= 4
    assert any("failed" in e for e in events)


def test_random_search_starts_like_gp_and_draws_random_trees(tmp_path, tiny_model_dirs, llama):
    _, _, gp, _ = _run(tmp_path, search_data(tiny_model_dirs["llama"], "gp", seed=4,
                                             budget=8, finalists=1), llama, "gp.db")
    status, study, rnd, _ = _run(tmp_path, search_data(tiny_model_dirs["llama"], "random",
                                                       seed=4, budget=8, finalists=1),
                                 llama, "random.db")
    assert status == "finished" and study["kind"] == "random"

    def gen0(cands):
        return [(c["spec_hash"], c["status"], _fitness(c) and _fitness(c)["value"])
                for c in cands if c["generation"] == 0]

    assert gen0(gp) == gen0(rnd), "same seed, same initial population and fitness"
    later = [c for c in rnd if c["generation"]]
    assert later and {c["origin"] for c in later} == {"random"}
    assert all(c["parents"] is None for c in later)
    assert sum(c["status"] == "done" for c in rnd) <= 8


def test_search_is_deterministic_for_a_seed(tmp_path, tiny_model_dirs, llama):
    data = search_data(tiny_model_dirs["llama"], seed=9, budget=9, finalists=0)

    def record(cands):
        return [(c["spec_hash"], c["origin"], c["parents"], c["generation"], c["status"],
                 _fitness(c) and _fitness(c)["value"]) for c in cands]

    _, _, first, _ = _run(tmp_path, data, llama, "a.db")
    _, _, second, _ = _run(tmp_path, data, llama, "b.db")
    assert record(first) == record(second)


def test_cancel_then_resume_finishes_without_duplicates(tmp_path, tiny_model_dirs, llama):
    config = parse_config(search_data(tiny_model_dirs["llama"], budget=6, finalists=1))
    db = tmp_path / "s.db"
    with open_store(db) as store:
        sid = start_study(store, config, name="to-cancel")
        store.request_cancel(sid, "user asked")
        assert run_recorded(store, sid, config, lm=llama) == "cancelled"
        assert store.get_study(sid)["status"] == "cancelled"
        assert all(c["status"] == "pending" for c in store.candidates(sid))
    _, status = launch_study(None, db, resume="to-cancel", lm=llama)
    with open_store(db, readonly=True) as store:
        cands = store.candidates(sid)
    assert status == "finished"
    assert len({c["spec_hash"] for c in cands}) == len(cands)
    assert {c["status"] for c in cands} <= {"done", "skipped", "failed"}


def test_search_split_overlapping_held_out_text_is_refused(tmp_path, tiny_model_dirs, llama):
    data = search_data(tiny_model_dirs["llama"])
    data["search"]["split"] = {"source": "pydoc", "seqlen": 64, "n": 2, "offset": 20032}
    with pytest.raises(ValueError, match="search.split overlaps the evaluation set 'in_domain'"):
        launch_study(parse_config(data), tmp_path / "s.db", lm=llama)
    data["search"]["split"] = {"source": "pydoc", "seqlen": 32, "n": 2, "offset": 0}
    with pytest.raises(ValueError, match="search.split overlaps the calibration"):
        launch_study(parse_config(data), tmp_path / "t.db", lm=llama)
