from __future__ import annotations

import math
import sqlite3

import pytest
from prunestudio.store import Store, StoreDatabaseError, StoreError, spec_hash

PPL = {"name": "ppl", "dataset": "wikitext2", "split": "test", "seqlen": 128,
       "n_samples": 4, "fidelity": "proxy", "role": "search"}


def ppl(value: float, **over: object) -> dict:
    return {**PPL, "value": value, **over}


def _seq(store: Store) -> int:
    return int(store.conn.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0])


# -- studies -----------------------------------------------------------------------------------


def test_create_and_get_study(store: Store) -> None:
    sid = store.create_study(name=None, kind="gp", model="m", config={"b": 2, "a": 1},
                             seed=3, budget=50)
    s = store.get_study(sid)
    assert s["name"] == f"gp-{sid}" and s["status"] == "created"
    assert s["config"] == {"a": 1, "b": 2} and (s["seed"], s["budget"]) == (3, 50)
    assert s["host"] and s["created_at"] > 0 and s["started_at"] is None
    assert store.get_study(f"gp-{sid}")["id"] == sid
    assert store.get_study(str(sid))["id"] == sid  # a CLI argument "1"


def test_study_names_unique_and_not_numeric(store: Store, study: int) -> None:
    with pytest.raises(StoreError, match="already exists"):
        store.create_study(name="s1", kind="grid", model="m", config={})
    with pytest.raises(ValueError, match="number"):
        store.create_study(name="42", kind="grid", model="m", config={})
    # an auto name that a user already took gets a suffix
    store.create_study(name="grid-3", kind="grid", model="m", config={})
    auto = store.create_study(name=None, kind="grid", model="m", config={})
    assert auto == 3 and store.get_study(auto)["name"] == "grid-3-2"


def test_missing_study_lists_known(store: Store, study: int) -> None:
    with pytest.raises(StoreError, match=r"no study 'zz'.*known: s1 \(id 1\)"):
        store.get_study("zz")
    with pytest.raises(StoreError, match="no study 99"):
        store.set_study_status(99, "running")


def test_study_status_lifecycle(store: Store, study: int) -> None:
    with pytest.raises(ValueError, match="created, running, finished, failed, cancelled"):
        store.set_study_status(study, "done")
    store.set_study_status(study, "running")
    started = store.get_study(study)["started_at"]
    assert started is not None and store.get_study(study)["finished_at"] is None
    store.set_study_status(study, "failed", error="CUDA OOM")
    s = store.get_study(study)
    assert s["status"] == "failed" and s["error"] == "CUDA OOM" and s["finished_at"] >= started
    store.set_study_status(study, "running")  # resume keeps the first start, clears the end
    s = store.get_study(study)
    assert s["started_at"] == started and s["finished_at"] is None and s["error"] is None


def test_cancel_request(store: Store, study: int) -> None:
    assert store.cancel_requested(study) is None
    before = store.get_study(study)["updated_seq"]
    store.request_cancel(study, "user pressed c")
    assert store.cancel_requested(study) == "user pressed c"
    assert store.get_study(study)["updated_seq"] > before
    store.clear_cancel(study)
    assert store.cancel_requested(study) is None
    with pytest.raises(StoreError):
        store.cancel_requested(12345)


# -- candidates --------------------------------------------------------------------------------


def test_add_candidate_dedups_by_spec_hash(store: Store, study: int) -> None:
    a, created_a = store.add_candidate(study, {"method": "wanda", "sparsity": 0.5},
                                       origin="baseline")
    b, created_b = store.add_candidate(study, {"sparsity": 0.5, "method": "wanda"},
                                       origin="random")
    c, created_c = store.add_candidate(study, {"method": "wanda", "sparsity": 0.6},
                                       origin="random", parents=[a], generation=1)
    assert (created_a, created_b, created_c) == (True, False, True)
    assert b == a and c != a
    rows = store.candidates(study)
    assert [r["idx"] for r in rows] == [0, 1]
    assert rows[0]["origin"] == "baseline" and rows[0]["status"] == "pending"
    assert rows[0]["spec_hash"] == spec_hash({"method": "wanda", "sparsity": 0.5})
    assert rows[1]["parents"] == [a] and rows[1]["generation"] == 1
    assert store.candidate_by_hash(study, rows[1]["spec_hash"])["id"] == c
    assert store.candidate_by_hash(study, "0" * 16) is None


def test_same_spec_in_two_studies_is_two_candidates(store: Store, study: int) -> None:
    other = store.create_study(name="s2", kind="grid", model="m", config={})
    a, _ = store.add_candidate(study, {"x": 1}, origin="init")
    b, created = store.add_candidate(other, {"x": 1}, origin="init")
    assert created and a != b and store.candidate(b)["idx"] == 0


def test_add_candidate_unknown_study(store: Store) -> None:
    with pytest.raises(StoreError, match="no study 7"):
        store.add_candidate(7, {"x": 1}, origin="init")


def test_finish_candidate_writes_metrics_and_status(store: Store, study: int) -> None:
    cid, _ = store.add_candidate(study, {"x": 1}, origin="init")
    assert store.start_candidate(cid, worker="gpu0") is True
    assert store.candidate(cid)["status"] == "running"
    store.finish_candidate(
        cid,
        metrics=[ppl(21.5), {"name": "params", "value": 134_515_008},
                 {"name": "acc", "value": 0.41, "dataset": "mmlu", "fidelity": "full",
                  "protocol": {"lm_eval": "0.4.9", "num_fewshot": 5}}],
        timings={"prune": 1.5, "eval": 3.0}, info={"sparsity": 0.5},
    )
    c = store.candidate(cid)
    assert c["status"] == "done" and c["worker"] == "gpu0" and c["finished_at"] >= c["started_at"]
    assert c["timings"] == {"prune": 1.5, "eval": 3.0} and c["info"] == {"sparsity": 0.5}
    by_name = {m["name"]: m for m in c["metrics"]}
    assert by_name["ppl"]["value"] == 21.5 and by_name["ppl"]["seqlen"] == 128
    assert by_name["ppl"]["n_samples"] == 4 and by_name["ppl"]["role"] == "search"
    assert by_name["params"]["dataset"] is None and by_name["params"]["seqlen"] is None
    assert by_name["acc"]["protocol"] == {"lm_eval": "0.4.9", "num_fewshot": 5}
    with pytest.raises(StoreError, match="already done"):
        store.finish_candidate(cid, metrics=[ppl(1.0)])


@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_non_finite_metric_changes_nothing(store: Store, study: int, bad: float) -> None:
    cid, _ = store.add_candidate(study, {"x": 1}, origin="init")
    store.start_candidate(cid)
    seq = _seq(store)
    with pytest.raises(ValueError, match="not finite"):
        store.finish_candidate(cid, metrics=[ppl(20.0), {"name": "acc", "value": bad}],
                               timings={"prune": 1.0})
    c = store.candidate(cid)
    assert c["status"] == "running" and c["metrics"] == [] and c["timings"] is None
    assert _seq(store) == seq


def test_finish_is_one_transaction_even_when_sqlite_fails(store: Store, study: int) -> None:
    cid, _ = store.add_candidate(study, {"x": 1}, origin="init")
    store.start_candidate(cid)
    store.conn.execute(
        "CREATE TRIGGER explode BEFORE INSERT ON metrics WHEN NEW.name = 'explode'"
        " BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
    )
    # every SQLite error comes out as a StoreError naming the store, with the cause kept
    with pytest.raises(StoreDatabaseError, match="disk on fire") as err:
        store.finish_candidate(cid, metrics=[ppl(20.0), {"name": "explode", "value": 1.0}])
    assert isinstance(err.value.cause, sqlite3.IntegrityError)
    assert err.value.path == str(store.path) and str(store.path) in str(err.value)
    c = store.candidate(cid)
    assert c["status"] == "running" and c["metrics"] == [] and c["finished_at"] is None
    assert not store.conn.in_transaction
    store.finish_candidate(cid, metrics=[ppl(20.0)])  # the store is still usable
    assert store.candidate(cid)["status"] == "done"


@pytest.mark.parametrize(
    ("metric", "message"),
    [
        ({"name": "ppl", "value": 1.0, "seq_len": 128}, "unknown metric field"),
        ({"value": 1.0}, "'name'"),
        ({"name": "ppl"}, "must be a number"),
        ({"name": "ppl", "value": "12"}, "must be a number"),
        ({"name": "ppl", "value": 1.0, "fidelity": "ful"}, "proxy, full"),
        ({"name": "ppl", "value": 1.0, "seqlen": 0}, "seqlen"),
        ({"name": "ppl", "value": 1.0, "protocol": [1]}, "protocol"),
    ],
)
def test_metric_validation(store: Store, study: int, metric: dict, message: str) -> None:
    cid, _ = store.add_candidate(study, {"x": 1}, origin="init")
    with pytest.raises(ValueError, match=message):
        store.finish_candidate(cid, metrics=[metric])
    assert store.candidate(cid)["status"] == "pending"


def test_duplicate_metric_key_in_one_call(store: Store, study: int) -> None:
    cid, _ = store.add_candidate(study, {"x": 1}, origin="init")
    with pytest.raises(ValueError, match="given twice"):
        store.finish_candidate(cid, metrics=[ppl(1.0), ppl(2.0)])


def test_add_metrics_upserts_and_bumps(store: Store, study: int) -> None:
    cid, _ = store.add_candidate(study, {"x": 1}, origin="init")
    store.finish_candidate(cid, metrics=[ppl(20.0)])
    seq = store.candidate(cid)["updated_seq"]
    store.add_metrics(cid, [ppl(19.0), ppl(25.0, fidelity="full", n_samples=80)])
    c = store.candidate(cid)
    assert c["updated_seq"] > seq
    values = sorted((m["fidelity"], m["value"]) for m in c["metrics"])
    assert values == [("full", 25.0), ("proxy", 19.0)]  # proxy replaced, not duplicated


def test_fail_and_skip(store: Store, study: int) -> None:
    a, _ = store.add_candidate(study, {"x": 1}, origin="init")
    b, _ = store.add_candidate(study, {"x": 2}, origin="init")
    store.start_candidate(a)
    store.fail_candidate(a, error="NaN scores in layer 3", timings={"prune": 0.2})
    store.skip_candidate(b, reason="same mask as candidate 1", info={"equivalent_to": a})
    ca, cb = store.candidate(a), store.candidate(b)
    assert ca["status"] == "failed" and ca["error"] == "NaN scores in layer 3"
    assert ca["timings"] == {"prune": 0.2}
    assert cb["status"] == "skipped" and cb["info"] == {"equivalent_to": a}
    assert store.start_candidate(a) is True  # a failed candidate can be retried
    assert store.candidate(a)["error"] is None
    assert store.start_candidate(b) is False  # skipped ones are not


def test_start_is_a_claim(store: Store, study: int) -> None:
    cid, _ = store.add_candidate(study, {"x": 1}, origin="init")
    assert store.start_candidate(cid, worker="gpu0") is True
    assert store.start_candidate(cid, worker="gpu1") is False
    assert store.candidate(cid)["worker"] == "gpu0"
    with pytest.raises(StoreError, match="no candidate with id 999"):
        store.start_candidate(999)


def test_claim_candidate_takes_lowest_pending(store: Store, study: int) -> None:
    ids = [store.add_candidate(study, {"x": i}, origin="init")[0] for i in range(3)]
    store.start_candidate(ids[0])
    got = store.claim_candidate(study, worker="gpu1")
    assert got is not None and got["id"] == ids[1] and got["status"] == "running"
    assert got["worker"] == "gpu1"
    assert store.claim_candidate(study, worker="gpu1")["id"] == ids[2]
    assert store.claim_candidate(study, worker="gpu1") is None


def test_reset_running(store: Store, study: int) -> None:
    ids = [store.add_candidate(study, {"x": i}, origin="init")[0] for i in range(4)]
    store.finish_candidate(ids[0], metrics=[ppl(10.0)])
    store.start_candidate(ids[1], worker="gpu0")
    store.start_candidate(ids[2], worker="gpu1")
    store.add_metrics(ids[1], [ppl(11.0)])  # partial result of a run that then crashed
    assert store.reset_running(study) == [ids[1], ids[2]]
    for cid in ids[1:3]:
        c = store.candidate(cid)
        assert c["status"] == "pending" and c["metrics"] == [] and c["worker"] is None
    assert store.candidate(ids[0])["metrics"][0]["value"] == 10.0  # finished work untouched
    assert [c["id"] for c in store.candidates(study, status="pending")] == ids[1:]
    assert store.reset_running(study) == []


def test_candidates_filter_and_metrics(store: Store, study: int) -> None:
    a, _ = store.add_candidate(study, {"x": 1}, origin="init")
    store.add_candidate(study, {"x": 2}, origin="init")
    store.finish_candidate(a, metrics=[ppl(3.0)])
    assert [c["id"] for c in store.candidates(study, status="done")] == [a]
    assert "metrics" not in store.candidates(study)[0]
    assert store.candidates(study, with_metrics=True)[0]["metrics"][0]["value"] == 3.0
    with pytest.raises(ValueError, match="pending, running, done, failed, skipped"):
        store.candidates(study, status="finished")


def test_unserialisable_spec(store: Store, study: int) -> None:
    with pytest.raises(ValueError):
        store.add_candidate(study, {"ratio": math.nan}, origin="init")
    with pytest.raises(TypeError):
        store.add_candidate(study, {"f": object()}, origin="init")
    assert store.candidates(study) == []


# -- events, artifacts, workers ----------------------------------------------------------------


def test_events(store: Store, study: int) -> None:
    e1 = store.add_event(study, "started", progress=0.0)
    e2 = store.add_event(study, "slow layer", level="warning", progress=0.5)
    assert e2 > e1
    with pytest.raises(ValueError, match="info, warning, error"):
        store.add_event(study, "x", level="debug")
    with pytest.raises(ValueError, match="progress"):
        store.add_event(study, "x", progress=1.5)
    with pytest.raises(StoreDatabaseError, match="FOREIGN KEY") as err:  # no such study
        store.add_event(999, "x")
    assert isinstance(err.value.cause, sqlite3.IntegrityError)


def test_artifacts_and_heartbeat(store: Store, study: int) -> None:
    cid, _ = store.add_candidate(study, {"x": 1}, origin="init")
    aid = store.add_artifact(cid, kind="mask", path="/tmp/m.pt", hash="abc", bytes=10)
    arts = store.artifacts(cid)
    assert [a["id"] for a in arts] == [aid] and arts[0]["bytes"] == 10
    store.heartbeat("gpu0", study_id=study)
    first = store.conn.execute("SELECT heartbeat FROM workers").fetchone()[0]
    store.heartbeat("gpu0", study_id=study, candidate_id=cid)
    rows = store.conn.execute("SELECT name, candidate_id, heartbeat, pid FROM workers").fetchall()
    assert len(rows) == 1 and rows[0][1] == cid and rows[0][2] >= first and rows[0][3] > 0


def test_transaction_groups_writes(store: Store, study: int) -> None:
    with pytest.raises(RuntimeError):
        with store.transaction():
            store.add_candidate(study, {"x": 1}, origin="init")
            store.add_event(study, "added")
            raise RuntimeError("abort")
    assert store.candidates(study) == []
    assert store.conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0
    with store.transaction():
        store.add_candidate(study, {"x": 1}, origin="init")
        store.add_event(study, "added")
    assert len(store.candidates(study)) == 1
