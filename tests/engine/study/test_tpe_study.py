"""AdaPruner's TPE search end to end through the console script on a four-block tiny LLaMA:
every trial a candidate pruned with its own calibration windows and combined-Taylor
coefficients, the objective the mean PPL of two texts, the Optuna study rebuilt from the store
equal to what was recorded, the baseline and the winner re-measured; a SIGKILL mid-trial then
resume that evaluates every trial once and ends as an uninterrupted run does, also with
batches of two trials killed between a batch's trials; the random sampler and the ablations'
search spaces; the `batch` key's validation (the batches without a model: test_tpe_batch.py)."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest
from cli_testlib import cli, start_until, statuses
from prunestudio.engine.studies.config import load_config
from prunestudio.engine.study.proposers.base import search_fitness as fitness_of
from prunestudio.engine.study.proposers.tpe import TpeSearch, fixed_samples
from prunestudio.store import open_store, queries
from tiny_models import tiny_inputs_toml

from prunestudio.schema.spec import CandidateSpec
from prunestudio.schema.study_file import ConfigError

SPARSITY = 0.15




def _toml(model: Path, *, name: str, trials: int = 6, extra: str = "", split_n: int = 2,
          sampler: str = "tpe") -> str:
    return f"""
[study]
name = "{name}"
kind = "tpe"
seed = 5
""" + tiny_inputs_toml(model, eval_n=2, out_of_domain=False).replace("n = 4\n", "n = 6\n", 1) + f"""
[tpe]
sampler = "{sampler}"
trials = {trials}
n_startup_trials = 3
sparsity = {SPARSITY}
samples = 3
factors = [1.0, 100.0, 10000.0]
splits = [{{ source = "pydoc", seqlen = 32, n = {split_n}, offset = 4000 }},
          {{ source = "shakespeare", split = "macbeth", seqlen = 32, n = {split_n} }}]
{extra}
"""


def _metric(c: dict, name: str, role: str) -> dict | None:
    return next((m for m in c["metrics"] if m["name"] == name and m["role"] == role), None)


def _rebuilt(cfg: Path, db: Path) -> tuple[TpeSearch, list[dict]]:
    config = load_config(cfg)
    with open_store(db, readonly=True) as store:
        cands = store.candidates(1, with_metrics=True)
    search = TpeSearch.from_config(config)
    search.restore(cands, {"model": "m", "timings": {"load": 0.0}, "device": "cpu"})
    return search, cands


def test_tpe_study_records_trials_with_their_windows_coefficients_and_the_objective(
        tmp_path, llama4):
    cfg = tmp_path / "t.toml"
    cfg.write_text(_toml(llama4, name="ada"))
    db = tmp_path / "s.db"
    out = json.loads(cli("run", str(cfg), "--store", str(db), "--json", "--quiet").stdout)
    assert out["study"]["kind"] == "tpe" and out["study"]["status"] == "finished"
    assert out["study"]["primary_role"] == "search" and out["study"]["budget"] == 6
    search, cands = _rebuilt(cfg, db)
    assert {c["status"] for c in cands} == {"done"}
    trials = sorted((c for c in cands if c["generation"] is not None),
                    key=lambda c: c["generation"])
    assert [c["generation"] for c in trials] == list(range(6))
    assert {c["origin"] for c in trials} == {"tpe"}
    for c in trials:
        info, spec = c["info"]["tpe"], c["spec"]
        params = info["params"]
        slots = [params[f"sample_{i}"] for i in range(3)]
        assert spec["calibration_samples"] == sorted(set(slots))  # duplicates dropped
        assert all(0 <= i < 6 for i in slots)
        o = spec["options"]
        assert o["importance"] == "combined" and spec["sparsity"] == SPARSITY
        assert o["alpha"] == params["alpha"] and o["beta"] == params["beta"]
        assert o["gamma"] == pytest.approx(params["beta"] * params["factor"], rel=1e-12)
        assert params["factor"] in (1.0, 100.0, 10000.0)
        # objective: the mean of the two texts' PPLs, each recorded with its own identity
        parts = [m for m in c["metrics"] if m["role"].startswith("search_")]
        assert sorted((m["role"], m["dataset"]) for m in parts) == [
            ("search_pydoc", "pydoc"), ("search_shakespeare", "shakespeare")]
        fit = _metric(c, "ppl", "search")
        assert fit["value"] == pytest.approx(sum(m["value"] for m in parts) / 2, rel=1e-12)
        assert fit["dataset"] == "pydoc+shakespeare" and fit["n_samples"] == 4
        label = CandidateSpec.model_validate(spec).label
        assert label.startswith("structured[combined(") and label.endswith(
            f" calib {len(spec['calibration_samples'])}")
    # the Optuna study rebuilt from the store holds exactly the recorded trials
    study = search.optuna_study()
    assert [t.params for t in study.trials] == [c["info"]["tpe"]["params"] for c in trials]
    assert [t.value for t in study.trials] == [fitness_of(c) for c in trials]
    # trials pruned with different windows and the same coefficients differ: the windows count
    assert len({c["spec_hash"] for c in trials}) == 6

    # baselines: dense and LLM-Pruner (first-order Taylor, a seeded random draw of 3 windows)
    base = {c["info"]["baseline"]: c for c in cands if c["origin"] == "baseline"}
    assert set(base) == {"dense", "llm_pruner"}
    llmp = base["llm_pruner"]
    assert llmp["spec"]["options"]["importance"] == "taylor_first"
    assert tuple(llmp["spec"]["calibration_samples"]) == fixed_samples(5, 6, 3)
    for c in base.values():
        assert _metric(c, "ppl", "in_domain") is not None
        assert _metric(c, "ppl", "search") is not None
    # the winner: best objective, re-measured on the held-out set
    winner = min(trials, key=lambda c: (fitness_of(c), c["generation"]))
    held = _metric(winner, "ppl", "in_domain")
    assert held is not None and held["protocol"]["finalist_rank"] == 1
    assert [c["id"] for c in trials if _metric(c, "ppl", "in_domain")] == [winner["id"]]


def test_a_spec_pruned_with_other_windows_prunes_differently(tmp_path, llama4):
    """calibration_samples reach the gradients: the same importance on two different window
    subsets removes different units (checked on the realised plan)."""
    from prunestudio.engine.studies.config import load_config as load
    from prunestudio.engine.study.context import prepare
    from prunestudio.engine.study.executor import prune_candidate

    from prunestudio.schema.spec import CandidateSpec

    cfg = tmp_path / "t.toml"
    cfg.write_text(_toml(llama4, name="w"))
    ctx = prepare(load(cfg))
    kept = []
    for samples in ((0,), (3, 4, 5)):
        spec = CandidateSpec(method="structured", sparsity=0.3, calibration_samples=samples,
                             options={"importance": "taylor_first"})
        pruned = prune_candidate(ctx, spec)
        kept.append(pruned.shape.structure_key)
        assert ctx.stats_for(spec.calibration_samples).calib_ids.shape[0] == len(samples)
    assert kept[0] != kept[1]
    with pytest.raises(ValueError, match="out of range.*6 windows"):
        ctx.stats_for((2, 9))


def test_sigkill_mid_trial_then_resume_evaluates_every_trial_once(tmp_path, llama4):
    text = _toml(llama4, name="victim", trials=5, split_n=40, extra="baselines = []")
    cfg = tmp_path / "t.toml"
    cfg.write_text(text)
    db = tmp_path / "s.db"
    proc = start_until(["run", str(cfg), "--store", str(db), "--quiet"], db,
                       lambda rows: any(r["generation"] == 2 and r["status"] == "running"
                                        for r in rows), what="trial 2 running")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    with open_store(db, readonly=True) as store:
        before = store.candidates(1, with_metrics=True)
    assert "running" in statuses(before)
    finished = {c["id"]: c for c in before if c["status"] == "done"}

    out = json.loads(cli("run", "--resume", "victim", "--store", str(db), "--json",
                         "--quiet").stdout)
    assert out["study"]["status"] == "finished"
    search, after = _rebuilt(cfg, db)
    by_id = {c["id"]: c for c in after}
    for cid, c in finished.items():  # never evaluated again
        assert by_id[cid]["finished_at"] == c["finished_at"]
    trials = [c for c in after if c["generation"] is not None]
    assert sorted(c["generation"] for c in trials) == list(range(5))  # each trial once
    assert {c["status"] for c in after} == {"done"}

    # the same study uninterrupted asks the same trials and records the same Optuna study
    ref_cfg = tmp_path / "ref.toml"
    ref_cfg.write_text(text.replace('name = "victim"', 'name = "reference"'))
    ref_db = tmp_path / "ref.db"
    cli("run", str(ref_cfg), "--store", str(ref_db), "--quiet")
    ref, ref_cands = _rebuilt(ref_cfg, ref_db)
    a, b = search.optuna_study().trials, ref.optuna_study().trials
    assert [t.params for t in a] == [t.params for t in b]
    assert [t.distributions for t in a] == [t.distributions for t in b]
    assert [t.value for t in a] == pytest.approx([t.value for t in b], rel=1e-9)
    assert [c["spec_hash"] for c in sorted(trials, key=lambda c: c["generation"])] == [
        c["spec_hash"] for c in sorted((c for c in ref_cands if c["generation"] is not None),
                                       key=lambda c: c["generation"])]


def test_random_sampler_and_ablations_search_what_they_say(tmp_path, llama4):
    def space(extra: str, sampler: str = "tpe") -> tuple[TpeSearch, dict]:
        cfg = tmp_path / "a.toml"
        cfg.write_text(_toml(llama4, name="a", extra=extra, sampler=sampler))
        search = TpeSearch.from_config(load_config(cfg))
        return search, search.distributions()

    joint, d = space("")
    assert set(d) == {"sample_0", "sample_1", "sample_2", "alpha", "beta", "factor"}
    _, d = space('search = "calibration"')
    assert set(d) == {"sample_0", "sample_1", "sample_2"}
    cal, _ = space('search = "calibration"')
    assert cal.coefficients({}) == (0.0, 1.0, 0.0)  # LLM-Pruner's element-wise first order
    imp, d = space('search = "importance"')
    assert set(d) == {"alpha", "beta", "factor"}
    assert imp.samples_of({"alpha": 0.1}) == fixed_samples(5, 6, 3)
    first, d = space('orders = "first"')
    assert set(d) == {"sample_0", "sample_1", "sample_2", "alpha", "beta"}
    assert first.coefficients({"alpha": 0.5, "beta": 0.25}) == (0.5, 0.25, 0.0)
    second, d = space('orders = "second"')
    assert "alpha" not in d and second.coefficients({}) == (0.0, 0.0, 1.0)
    _, d = space('aggregations = ["sum", "max"]')
    assert "aggregation" in d
    rnd, _ = space("", sampler="random")
    assert type(rnd.sampler(0)).__name__ == "RandomSampler" and rnd.origin == "random"
    assert type(joint.sampler(0)).__name__ == "TPESampler"

    bad = tmp_path / "bad.toml"
    bad.write_text(_toml(llama4, name="b", extra='search = "importance"\norders = "second"'))
    r = cli("run", str(bad), "--store", str(tmp_path / "b.db"), check=False)
    assert r.returncode == 2 and "leaves nothing to search" in r.stderr
    bad.write_text(_toml(llama4, name="b").replace("samples = 3", "samples = 9"))
    r = cli("run", str(bad), "--store", str(tmp_path / "b.db"), check=False)
    assert r.returncode == 2 and "only 6" in r.stderr
    assert not (tmp_path / "b.db").exists()  # refused before anything is recorded


def test_the_shipped_adapruner_configs_parse_as_their_names_say():
    root = Path(__file__).resolve().parents[3] / "configs"
    expect = {"adapruner-smollm2": ("tpe", "joint", "both"),
              "adapruner/random-sampler": ("random", "joint", "both"),
              "adapruner/first-order": ("tpe", "joint", "first"),
              "adapruner/second-order": ("tpe", "calibration", "second"),
              "adapruner/calibration-only": ("tpe", "calibration", "both"),
              "adapruner/importance-only": ("tpe", "importance", "both")}
    for name, (sampler, search, orders) in expect.items():
        config = load_config(root / f"{name}.toml")
        t = config.tpe
        assert (t.sampler, t.search, t.orders) == (sampler, search, orders), name
        assert config.study.kind == "tpe" and t.sparsity == 0.2 and t.trials == 40
        assert len(t.splits) == 2 and config.calibration.n == 32 and t.samples == 10
    assert sorted(p.stem for p in (root / "adapruner").glob("*.toml")) == sorted(
        n.split("/")[1] for n in expect if "/" in n)


def _trial_rows(cands: list[dict]) -> list[dict]:
    return sorted((c for c in cands if c["generation"] is not None),
                  key=lambda c: c["generation"])


def test_batches_of_two_run_to_the_budget_and_a_kill_mid_batch_resumes_to_the_same_records(
        tmp_path, llama4):
    """batch = 2, five trials: rounds [0, 1], [2, 3], [4]; SIGKILL once trial 2 (the first of
    its batch) is measured and trial 3 is not; the resumed study ends with the records of an
    uninterrupted one (same specs, trial by trial, the same Optuna study)."""
    text = _toml(llama4, name="victim", trials=5, split_n=40,
                 extra="baselines = []\nbatch = 2")
    cfg = tmp_path / "t.toml"
    cfg.write_text(text)
    db = tmp_path / "s.db"

    def ready(rows: list[dict]) -> bool:
        status = {r["generation"]: r["status"] for r in rows}
        return status.get(2) == "done" and status.get(3) in ("pending", "running")

    proc = start_until(["run", str(cfg), "--store", str(db), "--quiet"], db, ready,
                       what="trial 2 measured, trial 3 not")
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    with open_store(db, readonly=True) as store:
        before = {c["generation"]: c for c in store.candidates(1, with_metrics=True)}
    assert before[2]["status"] == "done" and before[3]["status"] != "done"
    assert 4 not in before  # the next batch was never asked

    out = json.loads(cli("run", "--resume", "victim", "--store", str(db), "--json",
                         "--quiet").stdout)
    assert out["study"]["status"] == "finished"
    search, after = _rebuilt(cfg, db)
    assert search.batch == 2
    by_gen = {c["generation"]: c for c in after}
    for n in (0, 1, 2):  # measured before the kill: never again
        assert by_gen[n]["finished_at"] == before[n]["finished_at"]
    trials = _trial_rows(after)
    assert [c["generation"] for c in trials] == list(range(5))  # each trial once
    assert {c["status"] for c in after} == {"done"} and len(after) == 6
    assert len({c["spec_hash"] for c in trials}) == 5  # a batch's trials differ
    # trial 3 was asked with trial 2 RUNNING: the study it was asked from says so
    states = [t.state.name for t in search.optuna_study(3).trials]
    assert states[-1] == "RUNNING" and "RUNNING" not in states[:-1] and len(states) == 3
    with open_store(db, readonly=True) as store:
        events = [e["message"] for e in queries.events_since(store, 1, 0)[0]]
    assert any("5 trials in batches of 2 (constant liar)" in e for e in events)

    # the same study uninterrupted (the same seed and batch) records the same trials
    ref_cfg = tmp_path / "ref.toml"
    ref_cfg.write_text(text.replace('name = "victim"', 'name = "reference"'))
    ref_db = tmp_path / "ref.db"
    cli("run", str(ref_cfg), "--store", str(ref_db), "--quiet")
    ref, ref_cands = _rebuilt(ref_cfg, ref_db)
    assert [c["spec_hash"] for c in trials] == [c["spec_hash"] for c in _trial_rows(ref_cands)]
    assert [c["info"]["tpe"]["params"] for c in trials] == [
        c["info"]["tpe"]["params"] for c in _trial_rows(ref_cands)]
    a, b = search.optuna_study().trials, ref.optuna_study().trials
    assert [t.params for t in a] == [t.params for t in b]
    assert [t.value for t in a] == pytest.approx([t.value for t in b], rel=1e-9)


@pytest.mark.parametrize("value,message", [
    ("0", "tpe.batch: Input should be greater than or equal to 1; got 0 (allowed: ≥ 1)"),
    ('"two"', "tpe.batch: Input should be a valid integer"),
], ids=["zero", "text"])
def test_a_bad_batch_is_refused_naming_the_field_and_what_is_allowed(tmp_path, llama4,
                                                                     value, message):
    cfg = tmp_path / "b.toml"
    cfg.write_text(_toml(llama4, name="b", extra=f"batch = {value}"))
    with pytest.raises(ConfigError) as err:
        load_config(cfg)
    assert message in str(err.value)
    cfg.write_text(_toml(llama4, name="b"))
    assert load_config(cfg).tpe.batch is None  # default: the run's workers (filled in then)
    cfg.write_text(_toml(llama4, name="b", extra="batch = 3"))
    assert load_config(cfg).tpe.batch == 3
