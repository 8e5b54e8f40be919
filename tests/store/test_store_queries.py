from __future__ import annotations

import time
from pathlib import Path

import pytest
from prunestudio.store import Store, open_store, queries


def ppl(value: float, **over: object) -> dict:
    return {"name": "ppl", "value": value, "dataset": "wikitext2", "split": "test",
            "seqlen": 128, "fidelity": "proxy", **over}


def _add(store: Store, study: int, n: int) -> list[int]:
    return [store.add_candidate(study, {"i": i}, origin="random")[0] for i in range(n)]


def test_list_studies_counts(store: Store, study: int) -> None:
    ids = _add(store, study, 6)
    store.finish_candidate(ids[0], metrics=[ppl(10.0)])
    store.finish_candidate(ids[1], metrics=[ppl(11.0)])
    store.fail_candidate(ids[2], error="boom")
    store.start_candidate(ids[3])
    store.skip_candidate(ids[4], reason="dup mask")
    empty = store.create_study(name="empty", kind="tpe", model="m", config={})
    rows = {r["id"]: r for r in queries.list_studies(store)}
    s = rows[study]
    assert (s["n_total"], s["n_done"], s["n_failed"], s["n_running"], s["n_pending"],
            s["n_skipped"]) == (6, 2, 1, 1, 1, 1)
    assert s["config"] == {"a": 1} and s["name"] == "s1"
    e = rows[empty]
    assert (e["n_total"], e["n_done"], e["n_pending"]) == (0, 0, 0)


def test_studies_since(store: Store, study: int) -> None:
    other = store.create_study(name="s2", kind="gp", model="m", config={})
    found, cursor = queries.studies_since(store, 0)
    assert [r["id"] for r in found] == [study, other]
    assert queries.studies_since(store, cursor) == ([], cursor)
    _add(store, study, 1)  # a candidate change moves its study too
    found, cursor2 = queries.studies_since(store, cursor)
    assert [r["id"] for r in found] == [study] and found[0]["n_pending"] == 1
    assert cursor2 > cursor


def test_candidates_since_returns_only_changes(store: Store, study: int) -> None:
    ids = _add(store, study, 3)
    found, cur = queries.candidates_since(store, study, 0)
    assert [r["id"] for r in found] == ids and all(r["metrics"] == [] for r in found)
    assert queries.candidates_since(store, study, cur) == ([], cur)

    new = store.add_candidate(study, {"i": 99}, origin="mutation", parents=[ids[0]])[0]
    store.finish_candidate(ids[0], metrics=[ppl(12.0)])  # an old candidate changes
    found, cur2 = queries.candidates_since(store, study, cur)
    assert [r["id"] for r in found] == [new, ids[0]]  # in order of change
    assert found[1]["status"] == "done" and found[1]["metrics"][0]["value"] == 12.0
    assert found[0]["parents"] == [ids[0]] and found[0]["metrics"] == []
    assert cur2 > cur

    store.add_metrics(ids[0], [ppl(30.0, fidelity="full")])
    found, cur3 = queries.candidates_since(store, study, cur2)
    assert [r["id"] for r in found] == [ids[0]] and len(found[0]["metrics"]) == 2
    assert cur3 > cur2


def test_candidates_since_other_study_not_returned(store: Store, study: int) -> None:
    other = store.create_study(name="s2", kind="gp", model="m", config={})
    _add(store, other, 2)
    assert queries.candidates_since(store, study, 0) == ([], 0)
    every, _ = queries.candidates_since(store, None, 0)
    assert len(every) == 2


def test_candidates_since_paging_never_skips(store: Store, study: int) -> None:
    ids = _add(store, study, 5)
    for cid in ids:
        store.start_candidate(cid)
    _, cur = queries.candidates_since(store, study, 0)
    store.reset_running(study)  # one transaction changing five rows
    seen: list[int] = []
    while True:
        page, new_cur = queries.candidates_since(store, study, cur, limit=2)
        if not page:
            break
        assert len(page) <= 2 and new_cur > cur
        seen += [r["id"] for r in page]
        cur = new_cur
    assert sorted(seen) == ids and len(seen) == 5


def test_events_since(store: Store, study: int) -> None:
    other = store.create_study(name="s2", kind="gp", model="m", config={})
    store.add_event(other, "elsewhere")
    for i in range(5):
        store.add_event(study, f"step {i}", progress=i / 4)
    found, cur = queries.events_since(store, study, 0, limit=3)
    assert [e["message"] for e in found] == ["step 0", "step 1", "step 2"]
    found, cur = queries.events_since(store, study, cur)
    assert [e["message"] for e in found] == ["step 3", "step 4"] and found[-1]["progress"] == 1.0
    assert queries.events_since(store, study, cur) == ([], cur)
    store.add_event(study, "done", level="info")
    found, cur2 = queries.events_since(store, study, cur)
    assert [e["message"] for e in found] == ["done"] and cur2 > cur


def test_metrics_table_wide(store: Store, study: int) -> None:
    a, b = _add(store, study, 2)
    store.finish_candidate(a, metrics=[ppl(10.0), {"name": "params", "value": 100},
                                       ppl(9.0, role="held_out", dataset="ptb")])
    rows = queries.metrics_table(store, study)
    assert [r["id"] for r in rows] == [a, b]
    assert rows[0]["ppl:wikitext2:test:128:proxy"] == 10.0
    assert rows[0]["params::::"] == 100.0
    assert rows[0]["ppl:ptb:test:128:proxy:held_out"] == 9.0
    assert rows[0]["spec"] == {"i": 0} and rows[1]["status"] == "pending"
    assert "ppl:wikitext2:test:128:proxy" not in rows[1]
    long = queries.metrics_long(store, study)
    assert {m["key"] for m in long} == {"ppl:wikitext2:test:128:proxy", "params::::",
                                        "ppl:ptb:test:128:proxy:held_out"}
    assert all(m["idx"] == 0 and m["status"] == "done" for m in long)


def test_best_candidate(store: Store, study: int) -> None:
    assert queries.best_candidate(store, study) is None
    ids = _add(store, study, 4)
    store.finish_candidate(ids[0], metrics=[ppl(20.0), {"name": "acc", "value": 0.3}])
    store.finish_candidate(ids[1], metrics=[ppl(15.0), {"name": "acc", "value": 0.5}])
    store.finish_candidate(ids[2], metrics=[ppl(25.0), {"name": "acc", "value": 0.4}])
    store.start_candidate(ids[3])
    store.add_metrics(ids[3], [ppl(1.0)])  # not done: never the best
    best = queries.best_candidate(store, study)
    assert best is not None and best["id"] == ids[1] and best["best"]["value"] == 15.0
    assert queries.best_candidate(store, study, "acc", lower_is_better=False)["id"] == ids[1]
    assert queries.best_candidate(store, study, "acc")["id"] == ids[0]

    store.add_metrics(ids[2], [ppl(5.0, fidelity="full")])
    with pytest.raises(ValueError, match="ambiguous.*proxy.*full|ambiguous.*full.*proxy"):
        queries.best_candidate(store, study)
    assert queries.best_candidate(store, study, fidelity="full")["id"] == ids[2]
    assert queries.best_candidate(store, study, fidelity="proxy")["id"] == ids[1]
    assert queries.best_candidate(store, study, role="held_out") is None


def test_list_workers(store: Store, study: int) -> None:
    store.heartbeat("gpu0", study_id=study)
    store.heartbeat("gpu1", study_id=study)
    assert [w["name"] for w in queries.list_workers(store, study)] == ["gpu1", "gpu0"]
    assert queries.list_workers(store, study + 1) == []


def _plans(store: Store, fn) -> list[str]:
    sqls: list[str] = []
    store.conn.set_trace_callback(sqls.append)
    try:
        fn()
    finally:
        store.conn.set_trace_callback(None)
    plans = []
    for sql in sqls:
        if sql.lstrip().upper().startswith("SELECT"):
            plans += [r[3] for r in store.conn.execute("EXPLAIN QUERY PLAN " + sql)]
    return plans


def test_live_queries_use_indexes(store: Store, study: int) -> None:
    ids = _add(store, study, 3)
    store.finish_candidate(ids[0], metrics=[ppl(1.0)])
    store.add_event(study, "x")
    plans = _plans(store, lambda: (queries.candidates_since(store, study, 1),
                                   queries.events_since(store, study, 0)))
    assert plans, "no SELECT traced"
    assert not [p for p in plans if p.startswith("SCAN")], plans
    assert any("candidates_study_seq" in p for p in plans)


def test_candidates_since_cheap_at_100k(tmp_path: Path) -> None:
    path = tmp_path / "big.db"
    with open_store(path) as store:
        sid = store.create_study(name="big", kind="random", model="m", config={})
        n = 100_000
        with store.transaction() as c:
            c.executemany(
                "INSERT INTO candidates (study_id, idx, spec, spec_hash, origin, status,"
                " created_at, updated_seq) VALUES (?, ?, '{}', ?, 'random', 'done', 0, ?)",
                ((sid, i, f"{i:016x}", i + 10) for i in range(n)),
            )
            c.executemany(
                "INSERT INTO metrics (candidate_id, name, value, created_at)"
                " VALUES (?, 'ppl', ?, 0)", ((i + 1, float(i)) for i in range(n)),
            )
            c.execute("UPDATE meta SET value = ? WHERE key = 'seq'", (str(n + 10),))
        cid, _ = store.add_candidate(sid, {"new": 1}, origin="tpe")
        store.finish_candidate(cid, metrics=[ppl(3.0)])
    with open_store(path, readonly=True) as ro:
        start = time.perf_counter()
        for _ in range(20):
            found, cur = queries.candidates_since(ro, sid, n + 9)
        elapsed = (time.perf_counter() - start) / 20
        assert [r["id"] for r in found] == [cid] and found[0]["metrics"][0]["value"] == 3.0
        assert cur == ro.candidate(cid)["updated_seq"]
        assert elapsed < 0.02, f"{elapsed * 1000:.1f} ms per incremental poll"
        counts = queries.list_studies(ro)[0]
        assert counts["n_total"] == n + 1 and counts["n_done"] == n + 1


def test_best_metrics_per_study_and_identity(store: Store, study: int) -> None:
    ids = _add(store, study, 4)
    store.finish_candidate(ids[0], metrics=[ppl(12.0, role="search"), ppl(30.0, fidelity="full",
                                                                          role="in_domain")])
    store.finish_candidate(ids[1], metrics=[ppl(9.0, role="search"), ppl(5.0, name="loss")])
    store.finish_candidate(ids[2], metrics=[ppl(11.0, role="search")])
    store.start_candidate(ids[3])  # partial metrics of an unfinished candidate never count
    store.add_metrics(ids[3], [ppl(1.0, role="search")])
    other = store.create_study(name="s2", kind="gp", model="m", config={})
    (oid,) = _add(store, other, 1)
    store.finish_candidate(oid, metrics=[ppl(7.0)])

    found = queries.best_metrics(store)
    by = {(r["study_id"], r["role"], r["fidelity"]): r for r in found}
    assert set(by) == {(study, "search", "proxy"), (study, "in_domain", "full"),
                       (other, None, "proxy")}
    search = by[study, "search", "proxy"]
    assert (search["value"], search["candidate_id"], search["n"]) == (9.0, ids[1], 3)
    assert search["idx"] == 1 and search["seqlen"] == 128 and search["name"] == "ppl"
    assert by[study, "in_domain", "full"]["value"] == 30.0
    assert [r["study_id"] for r in queries.best_metrics(store, [other])] == [other]
    assert queries.best_metrics(store, []) == []
    best_acc = queries.best_metrics(store, [study], metric="loss", lower_is_better=False)
    assert [(r["value"], r["candidate_id"]) for r in best_acc] == [(5.0, ids[1])]


def test_best_metrics_exclude_methods(store: Store, study: int) -> None:
    dense, _ = store.add_candidate(study, {"method": "dense"}, origin="baseline")
    wanda, _ = store.add_candidate(study, {"method": "wanda", "sparsity": 0.5}, origin="baseline")
    other, _ = store.add_candidate(study, {"i": 1}, origin="random")  # no method key
    for cid, value in ((dense, 10.0), (wanda, 20.0), (other, 30.0)):
        store.finish_candidate(cid, metrics=[ppl(value)])
    (best,) = queries.best_metrics(store, [study], exclude_methods=("dense",))
    assert (best["value"], best["candidate_id"], best["n"]) == (20.0, wanda, 2)
    (best,) = queries.best_metrics(store, [study])
    assert best["candidate_id"] == dense
