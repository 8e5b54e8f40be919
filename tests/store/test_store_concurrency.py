"""Several processes on one store file: WAL readers, queued writers, clear lock errors."""

from __future__ import annotations

import multiprocessing as mp
import time
from pathlib import Path

import pytest
from prunestudio.store import Store, StoreLockedError, open_store, queries

CTX = mp.get_context("spawn")


def _writer(path: str, study_id: int, tag: str, n: int, barrier) -> None:
    with open_store(path, timeout=30.0) as s:
        barrier.wait(30)  # start writing together, so that the writers really interleave
        for i in range(n):
            cid, created = s.add_candidate(study_id, {"w": tag, "i": i}, origin="random")
            assert created
            s.start_candidate(cid, worker=tag)
            s.add_event(study_id, f"{tag} {i}", candidate_id=cid, progress=(i + 1) / n)
            s.finish_candidate(cid, metrics=[{"name": "ppl", "value": float(i)},
                                             {"name": "params", "value": 1000.0 + i}])
            time.sleep(0.005)  # let the other writer in: a 2-core machine may run one to the end


def _hold_lock(path: str, study_id: int, inside, release, seconds: float) -> None:
    with open_store(path) as s, s.transaction():
        s.add_candidate(study_id, {"held": True}, origin="init")
        inside.set()
        release.wait(10)
        time.sleep(seconds)


def test_two_writer_processes_and_a_reader(db_path: Path) -> None:
    n = 40
    with open_store(db_path) as s:
        sid = s.create_study(name="live", kind="random", model="m", config={})
    barrier = CTX.Barrier(3)
    procs = [CTX.Process(target=_writer, args=(str(db_path), sid, tag, n, barrier))
             for tag in ("a", "b")]
    for p in procs:
        p.start()
    barrier.wait(60)
    latest: dict[int, dict] = {}
    cursor, polls = 0, 0
    with open_store(db_path, readonly=True) as ro:
        while any(p.is_alive() for p in procs) or polls == 0:
            found, new_cursor = queries.candidates_since(ro, sid, cursor)
            assert new_cursor >= cursor
            for row in found:
                assert row["updated_seq"] > cursor
                if row["status"] == "done":  # status and metrics land together
                    assert {m["name"] for m in row["metrics"]} == {"ppl", "params"}
                else:
                    assert row["metrics"] == []
                latest[row["id"]] = row
            cursor, polls = new_cursor, polls + 1
            time.sleep(0.01)
        for p in procs:
            p.join(60)
            assert p.exitcode == 0, "writer process failed (see its traceback above)"
        found, cursor = queries.candidates_since(ro, sid, cursor)
        latest.update({r["id"]: r for r in found})
        final = ro.candidates(sid, with_metrics=True)
        events, _ = queries.events_since(ro, sid, 0, limit=10_000)
        counts = queries.list_studies(ro)[0]
    assert len(final) == 2 * n and sorted(c["idx"] for c in final) == list(range(2 * n))
    order = "".join(c["spec"]["w"] for c in final)  # by idx
    assert order.count("ab") + order.count("ba") >= 2, f"writers did not interleave: {order}"
    assert all(c["status"] == "done" and len(c["metrics"]) == 2 for c in final)
    assert {c["id"]: c["status"] for c in latest.values()} == {c["id"]: "done" for c in final}
    assert len(events) == 2 * n
    assert (counts["n_total"], counts["n_done"]) == (2 * n, 2 * n)


def test_reader_sees_only_committed_and_writer_waits(db_path: Path) -> None:
    with open_store(db_path) as s:
        sid = s.create_study(name="lock", kind="grid", model="m", config={})
    inside, release = CTX.Event(), CTX.Event()
    proc = CTX.Process(target=_hold_lock, args=(str(db_path), sid, inside, release, 0.5))
    proc.start()
    try:
        assert inside.wait(30), "lock holder did not start"
        with open_store(db_path, readonly=True) as ro, open_store(db_path, timeout=20) as rw:
            assert queries.candidates_since(ro, sid, 0) == ([], 0)  # uncommitted: invisible
            release.set()
            start = time.perf_counter()
            rw.add_event(sid, "waited for the lock")  # busy timeout: queues, no error
            waited = time.perf_counter() - start
            found, _ = queries.candidates_since(ro, sid, 0)
            assert [r["spec"] for r in found] == [{"held": True}]
        assert waited >= 0.3
    finally:
        release.set()
        proc.join(30)
    assert proc.exitcode == 0


def test_lock_held_too_long_gives_clear_error(db_path: Path) -> None:
    with open_store(db_path) as holder, open_store(db_path, timeout=0.2) as other:
        sid = holder.create_study(name="x", kind="grid", model="m", config={})
        with holder.transaction():
            holder.add_event(sid, "holding")
            start = time.perf_counter()
            with pytest.raises(StoreLockedError, match="locked.*another process holds a write"):
                other.add_event(sid, "blocked")
            assert time.perf_counter() - start >= 0.15
            with open_store(db_path, readonly=True) as ro:  # readers are never blocked
                assert ro.get_study(sid)["name"] == "x"
        assert not other.conn.in_transaction
        other.add_event(sid, "after")
        assert _count(other, "events") == 2


def _count(store: Store, table: str) -> int:
    return store.conn.execute(f"SELECT COUNT(*) FROM {table}").fetchone()[0]
