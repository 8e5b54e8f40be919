"""Study liveness: the 'interrupted' status, the background heartbeat, dead workers, the
'stale' rule; and what a study's budget counts (real evaluations of a GP search)."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from prunestudio.store import (
    SCHEMA_VERSION,
    STALE_AFTER,
    Heartbeat,
    Store,
    StoreLockedError,
    open_store,
    queries,
)
from prunestudio.store.liveness import pid_alive, this_host

from prunestudio.schema import STUDY_STATUSES, STUDY_TERMINAL


def _wait_for(predicate, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.01)


def _dead_pid() -> int:
    """The pid of a process that has exited and been reaped."""
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait(30)
    assert not pid_alive(proc.pid)
    return proc.pid


def _workers(store: Store) -> dict[str, dict]:
    return {w["name"]: w for w in queries.list_workers(store)}


# -- 5a. 'interrupted' --------------------------------------------------------------------------


def test_interrupted_is_a_resumable_end_state_of_a_version_1_store(db_path: Path) -> None:
    with open_store(db_path) as s:  # a store as the current release writes it
        assert s.schema_version == SCHEMA_VERSION
        applied = s.conn.execute("SELECT name FROM _sqlite_migrations").fetchall()
        assert applied == [("m001_initial",), ("m002_predictor_fits",), ("m003_worker_devices",),
                           ("m004_owl_band",)]
        # statuses are free text in the v1 schema (no CHECK): no migration is needed
        sql = s.conn.execute("SELECT sql FROM sqlite_master WHERE name = 'studies'").fetchone()
        assert "CHECK" not in sql[0].upper()
        sid = s.create_study(name="x", kind="gp", model="m", config={})
        s.set_study_status(sid, "running")
    assert "interrupted" in STUDY_STATUSES and "interrupted" in STUDY_TERMINAL
    with open_store(db_path) as s:
        s.set_study_status(sid, "interrupted", error="interrupted by SIGTERM")
        row = s.get_study(sid)
        assert row["status"] == "interrupted" and row["finished_at"] is not None
        s.set_study_status(sid, "running")  # resumed
        row = s.get_study(sid)
        assert row["finished_at"] is None and row["error"] is None
        s.set_study_status(sid, "interrupted")
    with open_store(db_path, readonly=True) as ro:
        (listed,) = queries.list_studies(ro)
        assert listed["status"] == "interrupted" and listed["stale"] is False
        assert ro.schema_version == SCHEMA_VERSION


# -- 5b. heartbeat helper -----------------------------------------------------------------------


def test_heartbeat_thread_keeps_the_row_fresh_and_removes_it(store: Store, study: int) -> None:
    threads = threading.active_count()
    with Heartbeat(store.path, "w1", study, interval=0.05) as beat:
        first = _workers(store)["w1"]  # the first beat is written before __enter__ returns
        assert (first["study_id"], first["pid"], first["host"]) == (study, os.getpid(),
                                                                     this_host())
        assert first["candidate_id"] is None and first["stale"] is False
        assert beat.alive and beat._thread.daemon
        assert beat._store is not None and beat._store.conn is not store.conn
        _wait_for(lambda: _workers(store)["w1"]["heartbeat"] > first["heartbeat"], what="beat")
        cid, _ = store.add_candidate(study, {"i": 1}, origin="grid")
        beat.working_on(cid)
        _wait_for(lambda: _workers(store)["w1"]["candidate_id"] == cid, what="candidate")
        assert beat.beats >= 2 and beat.last_error is None
    assert not beat.alive and "w1" not in _workers(store)
    assert threading.active_count() == threads


def test_background_beat_keeps_the_candidate_the_runner_recorded(store: Store,
                                                                 study: int) -> None:
    cid, _ = store.add_candidate(study, {"i": 1}, origin="grid")
    with Heartbeat(store.path, "w1", study, interval=0.02, remove_on_exit=False) as beat:
        store.heartbeat("w1", study_id=study, candidate_id=cid)  # the runner's own beat
        n = beat.beats
        _wait_for(lambda: beat.beats >= n + 3, what="background beats")
        assert _workers(store)["w1"]["candidate_id"] == cid
    assert "w1" in _workers(store)  # remove_on_exit=False


def test_heartbeat_survives_a_locked_store(store: Store, study: int) -> None:
    with Heartbeat(store.path, "w1", study, interval=0.02, timeout=0.05) as beat:
        with store.transaction():
            store.add_event(study, "holding the write lock")
            _wait_for(lambda: isinstance(beat.last_error, StoreLockedError), what="lock error")
            assert beat.alive
        n = beat.beats
        _wait_for(lambda: beat.beats > n and beat.last_error is None, what="recovery")


def test_heartbeat_start_errors_raise(tmp_path: Path) -> None:
    folder = tmp_path / "d"
    folder.mkdir()
    with pytest.raises(Exception, match="is a folder"):
        Heartbeat(folder, "w", 1).start()
    with pytest.raises(ValueError, match="interval"):
        Heartbeat(tmp_path / "s.db", "w", 1, interval=0)


def test_remove_worker_and_dead_workers(store: Store, study: int) -> None:
    dead = _dead_pid()
    store.heartbeat("alive-here", study_id=study)  # this process
    store.heartbeat("dead-here", study_id=study, pid=dead)
    store.heartbeat("dead-elsewhere", study_id=study, host="another-host", pid=dead)
    assert store.remove_dead_workers(study) == ["dead-here"]
    assert set(_workers(store)) == {"alive-here", "dead-elsewhere"}
    assert store.remove_worker("alive-here") is True
    assert store.remove_worker("alive-here") is False
    assert set(_workers(store)) == {"dead-elsewhere"}


# -- 5c. the stale rule -------------------------------------------------------------------------


def test_stale_rule(store: Store, study: int) -> None:
    def flags(now: float | None = None) -> tuple[bool, dict[int, bool], bool]:
        (row,) = queries.list_studies(store, now=now)
        since, _ = queries.studies_since(store, 0, now=now)
        assert since[0]["stale"] == row["stale"]
        return row["stale"], queries.stale_running(store, now), row["status"] == "running"

    assert flags() == (False, {}, False)  # 'created': never stale
    store.set_study_status(study, "running")
    assert flags() == (True, {study: True}, True)  # running, no worker at all
    store.heartbeat("w", study_id=study)
    beat = _workers(store)["w"]["heartbeat"]
    assert flags() == (False, {study: False}, True)
    assert flags(now=beat + STALE_AFTER - 1)[0] is False
    assert flags(now=beat + STALE_AFTER + 1)[0] is True  # no beat for STALE_AFTER seconds
    assert queries.list_workers(store, now=beat + STALE_AFTER + 1)[0]["stale"] is True
    store.heartbeat("w", study_id=study, pid=_dead_pid())  # fresh, but its process is gone
    assert flags()[0] is True and queries.list_workers(store)[0]["stale"] is True
    store.heartbeat("w", study_id=study, host="another-host", pid=1 << 30)
    assert flags()[0] is False  # another host's pid cannot be checked: its age decides
    store.heartbeat("w2", study_id=study, pid=_dead_pid())
    assert flags()[0] is False  # one live worker is enough
    store.set_study_status(study, "interrupted")
    assert flags() == (False, {}, False)


def test_workers_of_other_studies_do_not_keep_a_study_alive(store: Store, study: int) -> None:
    other = store.create_study(name="other", kind="grid", model="m", config={})
    for sid in (study, other):
        store.set_study_status(sid, "running")
    store.heartbeat("w", study_id=other)
    assert queries.stale_running(store) == {study: True, other: False}
    assert queries.stale_running(store, study_ids=[other]) == {other: False}


# -- 6. what the budget counts ------------------------------------------------------------------


SEARCH_PPL = {"name": "ppl", "dataset": "pydoc", "split": "search", "seqlen": 128,
              "fidelity": "proxy", "role": "search"}
FULL_PPL = {"name": "ppl", "dataset": "pydoc", "split": "all", "seqlen": 256,
            "fidelity": "full", "role": "in_domain"}


def _expr(text: str) -> dict:
    return {"method": "symbolic", "sparsity": 0.5, "options": {"expression": text}}


def write_gp_study(store: Store, budget: int = 4) -> tuple[int, set[int]]:
    """A GP study written the way the study loop (engine/study/) writes one; returns its id and the
    ids of its real fitness evaluations."""
    sid = store.create_study(name="gp", kind="gp", model="m", config={}, budget=budget)
    store.set_study_status(sid, "running")
    real: set[int] = set()
    # baselines: origin 'baseline', no generation, evaluated on the search split and full
    base, _ = store.add_candidate(sid, {"method": "wanda", "sparsity": 0.5}, origin="baseline")
    store.start_candidate(base)
    store.finish_candidate(base, metrics=[{**SEARCH_PPL, "value": 30.0},
                                          {**FULL_PPL, "value": 28.0}])
    # generation 0: the seed, init trees; every proposal recorded before any is evaluated
    gen0 = [store.add_candidate(sid, _expr(e), origin=o, generation=0)[0] for e, o in
            [("mul(abs(W),sqrt(X))", "seed"), ("mul(W,X)", "init"), ("sqr(W)", "init"),
             ("sqrt(mul(abs(W),sqrt(X)))", "init"), ("exp(W)", "init")]]
    for cid, value in zip(gen0[:3], (29.0, 31.0, 35.0), strict=True):  # real evaluations
        store.start_candidate(cid)
        store.finish_candidate(cid, metrics=[{"name": "sparsity", "value": 0.5},
                                             {**SEARCH_PPL, "value": value}],
                               info={"evaluation": "real", "mask_hash": f"h{cid}"})
        real.add(cid)
    # mask-equivalent to the seed: fitness reused (add_metrics) then 'skipped'
    store.start_candidate(gen0[3])
    store.add_metrics(gen0[3], [{**SEARCH_PPL, "value": 29.0,
                                 "protocol": {"reused_from": gen0[0]}}])
    store.skip_candidate(gen0[3], reason="mask-equivalent to candidate 1",
                         info={"equivalent_to": gen0[0], "evaluation": "reused"})
    store.start_candidate(gen0[4])  # NaN scores: failed
    store.fail_candidate(gen0[4], error="search perplexity is nan")
    # generation 1: one real evaluation reaches the budget of 4, the rest are not evaluated
    gen1 = [store.add_candidate(sid, _expr(e), origin=o, parents=[gen0[0]], generation=1)[0]
            for e, o in [("mul(sqr(W),X)", "mutation"), ("add(W,X)", "crossover"),
                         ("mul(W,sqr(X))", "mutation")]]
    store.start_candidate(gen1[0])
    store.finish_candidate(gen1[0], metrics=[{**SEARCH_PPL, "value": 27.0}],
                           info={"evaluation": "real"})
    real.add(gen1[0])
    for cid in gen1[1:]:
        store.skip_candidate(cid, reason="not evaluated: the budget of 4 real evaluations "
                             "was reached", info={"budget": budget})
    # finalists: the best are re-evaluated at full fidelity (more metrics, no new row)
    for cid in (gen1[0], gen0[0]):
        store.add_metrics(cid, [{**FULL_PPL, "value": 26.0}])
    return sid, real


def test_gp_budget_counts_real_evaluations_only(store: Store) -> None:
    sid, real = write_gp_study(store)
    (row,) = queries.list_studies(store)
    assert (row["n_total"], row["n_done"], row["n_skipped"], row["n_failed"]) == (9, 5, 3, 1)
    assert row["n_budget_used"] == len(real) == row["budget"] == 4  # not 9/4, not 5/4
    rows, _ = queries.candidates_since(store, sid, 0)
    assert {r["id"] for r in rows if r["in_budget"]} == real
    assert all(r["in_budget"] in (0, 1) for r in rows)
    since, _ = queries.studies_since(store, 0)
    assert since[0]["n_budget_used"] == 4


def test_other_kinds_count_every_finished_candidate(store: Store, study: int) -> None:
    ids = [store.add_candidate(study, {"i": i}, origin="grid")[0] for i in range(5)]
    store.finish_candidate(ids[0], metrics=[{"name": "ppl", "value": 1.0}])
    store.fail_candidate(ids[1], error="boom")
    store.skip_candidate(ids[2], reason="dup")
    store.start_candidate(ids[3])
    (row,) = queries.list_studies(store)
    assert row["n_budget_used"] == 3
    rows, _ = queries.candidates_since(store, study, 0)
    assert [r["in_budget"] for r in sorted(rows, key=lambda r: r["idx"])] == [1, 1, 1, 0, 0]


def test_budget_rule_matches_the_engines_search_history(store: Store) -> None:
    """One definition: the engine's count of real evaluations (what stops a search) and the
    store's n_budget_used agree on a store written the way a GP run writes it."""
    state = pytest.importorskip("prunestudio.engine.search.state")
    sid, real = write_gp_study(store)
    history = state.SearchHistory.from_store(store, sid)
    assert history.real_evaluations == queries.list_studies(store)[0]["n_budget_used"] == 4
    assert {i.id for i in history.search() if i.evaluated} == real
