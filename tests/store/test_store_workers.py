"""Per-worker reads: what each worker of a study ran (``browse.worker_summary``) and when it
was busy (``browse.worker_timeline``: binned lanes, exact against a per-candidate sum)."""

from __future__ import annotations

import random
from types import SimpleNamespace

import pytest
from prunestudio.store import Store, browse
from store_builders import fixed_clock

from prunestudio.schema import Worker, WorkerSummary, WorkerTimeline
from prunestudio.schema.workers import dominant_status, running_until

STEP = 7.0  # the fixed clock's step


def _at(clock: SimpleNamespace, t: float) -> None:
    """The next store write reads time ``t``."""
    clock.now = t - STEP


def _run(store: Store, clock: SimpleNamespace, study: int, i: int, worker: str | None,
         start: float, end: float | None, status: str = "done") -> int:
    """Candidate ``i`` taken by ``worker`` at ``start`` and ended at ``end`` with ``status``
    (``end`` None: still running; ``worker`` None: never started, stays pending)."""
    cid, _ = store.add_candidate(study, {"i": i}, origin="random")
    if worker is None:
        return cid
    _at(clock, start)
    store.start_candidate(cid, worker=worker)
    if end is None:
        return cid
    if status == "done":
        store.finish_candidate(cid, metrics=[{"name": "ppl", "value": 10.0 + i}],
                               finished_at=end)
    elif status == "failed":
        store.fail_candidate(cid, error="boom", finished_at=end)
    else:
        store.skip_candidate(cid, reason="equivalent mask")
        store.conn.execute("UPDATE candidates SET finished_at = ? WHERE id = ?", (end, cid))
    return cid


@pytest.fixture
def two_workers(store: Store, study: int) -> tuple[Store, int, int]:
    """w0 and w1 from t=1000: w0 runs 3 (one failed) then a running one since 1090; w1 runs
    2 then a skipped one; one pending candidate; one without a worker (a classic record)."""
    with fixed_clock(0.0, STEP) as clock:
        _run(store, clock, study, 0, "w0@a:1", 1000, 1010)
        _run(store, clock, study, 1, "w1@b:2", 1005, 1045)
        _run(store, clock, study, 2, "w0@a:1", 1010, 1040, "failed")
        _run(store, clock, study, 3, "w0@a:1", 1040, 1080)
        _run(store, clock, study, 4, "w1@b:2", 1045, 1060)
        _run(store, clock, study, 5, "w1@b:2", 1060, 1062, "skipped")
        running = _run(store, clock, study, 6, "w0@a:1", 1090, None)
        _run(store, clock, study, 7, None, 0, None)
    return store, study, running


def test_worker_summary_counts_busy_time_and_order(two_workers: tuple[Store, int, int]
                                                   ) -> None:
    store, study, _ = two_workers
    w0, w1 = browse.worker_summary(store, study)
    assert w0 == WorkerSummary("w0@a:1", done=2, failed=1, skipped=0, running=1, busy_s=80.0,
                               timed=3, first_start=1000.0, last_finish=1080.0)
    assert w0.candidates == 4 and w0.mean_s == pytest.approx(80 / 3)
    assert (w1.name, w1.done, w1.skipped, w1.running, w1.busy_s, w1.timed) == (
        "w1@b:2", 2, 1, 0, 57.0, 3)
    assert (w1.first_start, w1.last_finish) == (1005.0, 1062.0)
    empty = store.create_study(name="empty", kind="grid", model="m", config={})
    assert browse.worker_summary(store, empty) == []
    assert WorkerSummary("x").mean_s is None


def test_worker_timeline_bins_busy_seconds_by_status(two_workers: tuple[Store, int, int]
                                                     ) -> None:
    store, study, _ = two_workers
    tl = browse.worker_timeline(store, study, 10, now=1100.0)
    # from the first start to now (a candidate runs): ten bins of 10 s
    assert (tl.start, tl.end, tl.n_bins, tl.bin_s) == (1000.0, 1100.0, 10, 10.0)
    w0, w1 = tl.lanes
    assert (w0.name, w1.name) == ("w0@a:1", "w1@b:2")
    assert w0.bins[0] == {"done": 10.0}
    assert [w0.bins[b] for b in (1, 2, 3)] == [{"failed": 10.0}] * 3
    assert w0.bins[8] == {} and w0.bins[9] == {"running": 10.0}
    assert w0.status_at(9) == "running" and w0.status_at(8) is None
    assert w1.bins[0] == {"done": 5.0} and w1.bins[4] == {"done": 10.0}  # 1045: the next
    assert w1.bins[6] == {"skipped": 2.0}
    assert w0.busy_s == pytest.approx(10 + 30 + 40 + 10) and w1.busy_s == pytest.approx(57)
    assert tl.utilisation("w0@a:1") == pytest.approx(0.9)
    assert tl.utilisation("nobody") is None
    # a later `now`: the running candidate grows, the window with it
    later = browse.worker_timeline(store, study, 4, now=1200.0)
    assert later.end == 1200.0 and later.lanes[0].bins[3] == {"running": 50.0}


def test_worker_timeline_of_an_ended_study_and_of_no_candidates(store: Store, study: int
                                                                 ) -> None:
    assert browse.worker_timeline(store, study, 8, now=5.0) == WorkerTimeline(None, None, 8)
    with fixed_clock(0.0, STEP) as clock:
        _run(store, clock, study, 0, "w0", 100, 130)
        _run(store, clock, study, 1, "w0", 130, 140, "failed")
    tl = browse.worker_timeline(store, study, 4, now=10_000.0)
    assert (tl.start, tl.end) == (100.0, 140.0)  # nothing runs: the last finish, not now
    assert [dict(b) for b in tl.lanes[0].bins] == [
        {"done": 10.0}, {"done": 10.0}, {"done": 10.0}, {"failed": 10.0}]
    assert tl.lanes[0].status_at(3) == "failed"


def test_worker_timeline_matches_a_per_candidate_sum(store: Store, study: int) -> None:
    """Random back-to-back spans on three workers, many crossing bin boundaries: every bin
    holds exactly the overlap of each candidate with it."""
    rng = random.Random(7)
    spans: list[tuple[str, str, float, float]] = []
    with fixed_clock(0.0, STEP) as clock:
        i = 0
        for w in ("a", "b", "c"):
            t = 1000.0 + rng.random() * 50
            for _ in range(40):
                length = rng.choice((0.5, 3.0, 20.0, 90.0)) * rng.random()
                status = "failed" if rng.random() < 0.2 else "done"
                _run(store, clock, study, i, w, t, t + length, status)
                spans.append((w, status, t, t + length))
                t += length + rng.random() * 5
                i += 1
    n = 37
    tl = browse.worker_timeline(store, study, n, now=0.0)
    start, width = tl.start or 0.0, tl.bin_s
    assert start == min(s for _, _, s, _ in spans) and tl.end == max(e for *_, e in spans)
    for lane in tl.lanes:
        for b in range(n):
            lo, hi = start + b * width, start + (b + 1) * width
            for status in ("done", "failed"):
                want = sum(max(0.0, min(e, hi) - max(s, lo)) for w, st, s, e in spans
                           if w == lane.name and st == status)
                assert lane.bins[b].get(status, 0.0) == pytest.approx(want, abs=1e-6)


def test_running_until_stops_at_a_dead_runners_last_heartbeat() -> None:
    live = Worker("w0", heartbeat=90.0, stale=False)
    dead = [Worker("w1", heartbeat=40.0, stale=True), Worker("w2", heartbeat=50.0, stale=True)]
    assert running_until(100.0, [live, *dead]) == 100.0  # one live worker: now
    assert running_until(100.0, dead) == 50.0  # every row stale: the last beat
    assert running_until(100.0, []) == 100.0  # no rows to tell


def test_dominant_status() -> None:
    assert dominant_status({}) is None and dominant_status({"done": 0.0}) is None
    assert dominant_status({"done": 9.0, "running": 0.5}) == "running"
    assert dominant_status({"done": 3.0, "failed": 1.0}) == "failed"  # a quarter
    assert dominant_status({"done": 3.1, "failed": 1.0}) == "done"
    assert dominant_status({"done": 1.0, "skipped": 2.0}) == "skipped"
