"""The one loop with several jobs in flight: results come back in any order and are recorded in
proposal order, so a parallel run records exactly what one process records; a worker that dies
re-queues its candidate; a cancel leaves nothing half-recorded."""

from __future__ import annotations

import pytest
from parallel_testlib import ReorderingExecutor, study_records
from prunestudio.engine.models.loading import load_model
from prunestudio.engine.runner import prepare, start_study
from prunestudio.engine.study.executor import InProcessExecutor
from prunestudio.engine.study.loop import MAX_LOST, run_study
from prunestudio.engine.study.proposers import make_proposer
from prunestudio.store import open_store, queries
from tiny_models import tiny_gp_toml, tiny_study_toml

from prunestudio.schema.study_file import parse_config

try:
    import tomllib
except ImportError:  # pragma: no cover
    import tomli as tomllib


@pytest.fixture(scope="module")
def llama(tiny_model_dirs):
    return load_model(str(tiny_model_dirs["llama"]), device="cpu")


def _gp(model_dir):
    """A GP search long enough to propose equivalent metrics (skipped candidates)."""
    text = tiny_gp_toml(model_dir, budget=30).replace("iterations = 4", "iterations = 12")
    return parse_config(tomllib.loads(text.replace("population = 6", "population = 8")))


def _run(db, config, llama, slots=None, **kw):
    """Record the study and run it in this process, or through a ReorderingExecutor."""
    with open_store(db) as store:
        sid = start_study(store, config)
        inner = InProcessExecutor(config, ctx=prepare(config, lm=llama))
        executor = inner if slots is None else ReorderingExecutor(inner, slots, **kw)
        status = run_study(store, sid, make_proposer(config), executor)
    return sid, status, executor


def test_out_of_order_results_are_recorded_as_one_process_records_them(tmp_path,
                                                                         tiny_model_dirs,
                                                                         llama):
    config = _gp(tiny_model_dirs["llama"])
    sid, status, _ = _run(tmp_path / "one.db", config, llama)
    one = study_records(tmp_path / "one.db", sid)
    sid3, status3, executor = _run(tmp_path / "three.db", config, llama, slots=3)
    three = study_records(tmp_path / "three.db", sid3)
    assert status == status3 == "finished"
    statuses = {r[5] for r in one}
    assert "skipped" in statuses and "done" in statuses  # equivalences were decided
    assert three == one
    # jobs really ran ahead (three in flight before the first was recorded), and every
    # candidate measured in one process was submitted at least once
    assert executor.most_in_flight == 3
    assert len(executor.submitted) >= sum(r[5] == "done" for r in one)
    with open_store(tmp_path / "three.db", readonly=True) as store:
        assert {c["worker"] for c in store.candidates(sid3) if c["status"] == "done"} <= {
            "fake/w0", "fake/w1", "fake/w2"}
        assert not store.candidates(sid3, status="running")
        rows = queries.list_workers(store, sid3)  # the workers' rows end with the run
        assert rows and not [w for w in rows if w["name"].startswith("fake/")]


def test_a_candidate_that_kills_its_worker_is_requeued_then_recorded_failed(tmp_path,
                                                                            tiny_model_dirs,
                                                                            llama):
    config = parse_config(tomllib.loads(tiny_study_toml(tiny_model_dirs["llama"])))
    sid, status, executor = _run(tmp_path / "lost.db", config, llama, slots=2, lose=[3])
    assert status == "finished"
    with open_store(tmp_path / "lost.db", readonly=True) as store:
        cands = {c["id"]: c for c in store.candidates(sid)}
        events = [e["message"] for e in queries.events_since(store, sid, 0)[0]]
    assert executor.submitted.count(3) == MAX_LOST
    assert cands[3]["status"] == "failed" and "died 2 times" in cands[3]["error"]
    assert all(c["status"] == "done" for i, c in cands.items() if i != 3)
    assert sum("died while running candidate 3" in m and "re-queued" in m for m in events) == 1
    assert any("candidate 3 is recorded failed" in m for m in events)


def test_a_cancel_records_a_prefix_and_resume_finishes_the_same_study(tmp_path,
                                                                      tiny_model_dirs, llama):
    config = parse_config(tomllib.loads(tiny_study_toml(
        tiny_model_dirs["llama"], methods='["magnitude", "wanda", "sparsegpt"]')))
    sid, _, _ = _run(tmp_path / "ref.db", config, llama)
    reference = study_records(tmp_path / "ref.db", sid)

    class CancelAfterFirstWait(ReorderingExecutor):
        def wait(self, timeout=None):
            out = super().wait(timeout)
            with open_store(tmp_path / "c.db") as other:
                other.request_cancel(cid, "test: cancel while jobs are in flight")
            return out

    with open_store(tmp_path / "c.db") as store:
        cid = start_study(store, config)
        inner = InProcessExecutor(config, ctx=prepare(config, lm=llama))
        status = run_study(store, cid, make_proposer(config), CancelAfterFirstWait(inner, 3))
        cands = store.candidates(cid)
    assert status == "cancelled"
    states = [c["status"] for c in cands]
    done = states.count("done")
    assert 1 <= done < len(states) and states == ["done"] * done + ["pending"] * (
        len(states) - done)  # recorded in order, nothing left running
    with open_store(tmp_path / "c.db") as store:
        store.clear_cancel(cid)
        inner = InProcessExecutor(config, ctx=prepare(config, lm=llama))
        assert run_study(store, cid, make_proposer(config), ReorderingExecutor(inner, 3),
                         resumed=True) == "finished"
    assert study_records(tmp_path / "c.db", cid) == reference
