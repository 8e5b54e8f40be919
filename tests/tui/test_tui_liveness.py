"""The TUI shows 'stale' for a running study whose runner died (without any write to the
store), shows 'interrupted', and counts a GP study's progress in real fitness evaluations."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from prunestudio.store import STALE_AFTER, Store, open_store
from prunestudio.tui.app import PruneStudioApp
from prunestudio.tui.feed import StoreReader, StudiesFeed, StudyFeed
from prunestudio.tui.machine import FrozenSampler
from prunestudio.tui.model import StudySummary
from prunestudio.tui.studies_screen import StudiesTableWidget
from prunestudio.tui.view import CandidateView
from prunestudio.tui.widgets import progress_text, study_line, study_status_text
from tui_helpers import FROZEN_MACHINE, async_test, press, screen_text, settle, table_column

MakeApp = Callable[..., PruneStudioApp]
SEARCH = {"name": "ppl", "dataset": "pydoc", "seqlen": 128, "fidelity": "proxy",
          "role": "search"}


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _expr(i: int) -> dict[str, Any]:
    return {"method": "symbolic", "sparsity": 0.5, "options": {"expression": f"mul(W,{i})"}}


def write_gp(store: Store, budget: int = 3) -> int:
    """A GP study as the search runner writes it: a baseline, real evaluations, a reused
    (mask-equivalent) fitness, a failure and proposals skipped at the budget — 8 finished
    candidates, 3 real evaluations."""
    sid = store.create_study(name="gp", kind="gp", model="m", config={}, budget=budget)
    store.set_study_status(sid, "running")
    base, _ = store.add_candidate(sid, {"method": "wanda", "sparsity": 0.5}, origin="baseline")
    store.start_candidate(base)
    store.finish_candidate(base, metrics=[{**SEARCH, "value": 30.0}])
    ids = [store.add_candidate(sid, _expr(i), origin="init", generation=0)[0] for i in range(7)]
    for cid in ids[:3]:
        store.start_candidate(cid)
        store.finish_candidate(cid, metrics=[{**SEARCH, "value": 20.0 + cid}],
                               info={"evaluation": "real"})
    store.start_candidate(ids[3])
    store.add_metrics(ids[3], [{**SEARCH, "value": 20.0 + ids[0]}])
    store.skip_candidate(ids[3], reason="mask-equivalent", info={"equivalent_to": ids[0]})
    store.start_candidate(ids[4])
    store.fail_candidate(ids[4], error="nan")
    for cid in ids[5:]:
        store.skip_candidate(cid, reason="not evaluated: the budget was reached")
    return sid


def test_gp_progress_counts_real_evaluations(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with open_store(path) as store:
        sid = write_gp(store)
        store.heartbeat("w", study_id=sid)
    reader = StoreReader(path)
    try:
        update = StudiesFeed(reader).poll()
        assert update is not None
        (s,) = update.studies
        assert (s.finished, s.progress, s.total) == (8, 3, 3)  # was 8/3 before
        assert progress_text(s, 5).plain.endswith(" 3/3")
        feed = StudyFeed(reader, sid)
        view = CandidateView()
        polled = feed.poll()
        view.apply(polled.rows, polled.columns)
        assert view.budget_used == 3
        here = StudySummary.of(polled.study).with_counts(view.status_counts, view.budget_used)
        assert (here.finished, here.progress) == (8, 3)
        # the ETA runs on real evaluations too: 3 of 3 done, nothing left
        assert "ETA 0s" in study_line(here, (here.started_at or 0) + 60, None).renderables[1].plain
    finally:
        reader.close()


def test_studies_feed_turns_a_silent_study_stale(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with open_store(path) as store:
        sid = store.create_study(name="a", kind="grid", model="m", config={})
        store.set_study_status(sid, "running")
        store.heartbeat("w", study_id=sid)
        beat = store.conn.execute("SELECT heartbeat FROM workers").fetchone()[0]
    clock = Clock(beat + 1)
    reader = StoreReader(path)
    try:
        feed = StudiesFeed(reader, now=clock)
        first = feed.poll()
        assert first is not None and first.studies[0].shown_status == "running"
        assert feed.poll() is None  # nothing changed
        clock.now = beat + STALE_AFTER + 5  # the runner stopped beating; the store is silent
        update = feed.poll()
        assert update is not None
        (s,) = update.studies
        assert s.stale and s.status == "running" and s.shown_status == "stale"
        assert study_status_text(s).plain == "stale" and not s.live
        assert feed.poll() is None  # sent once
        study_feed = StudyFeed(reader, sid, now=clock)
        polled = study_feed.poll()
        assert polled.stale is True and polled.stale_changed
        clock.now = beat + 1
        again = study_feed.poll()
        assert again.stale is False and not again.empty  # flipped back: the screen hears it
        assert "ETA" not in study_line(s, clock.now, None).renderables[1].plain
    finally:
        reader.close()


@async_test
async def test_studies_screen_shows_stale_and_interrupted(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with open_store(path) as store:
        dead = store.create_study(name="killed", kind="grid", model="m", config={}, budget=2)
        store.set_study_status(dead, "running")  # no worker row: its runner is gone
        stopped = store.create_study(name="ctrl-c", kind="grid", model="m", config={})
        store.set_study_status(stopped, "running")
        store.set_study_status(stopped, "interrupted", error="interrupted by SIGINT")
        live = store.create_study(name="live", kind="grid", model="m", config={})
        store.set_study_status(live, "running")
        store.heartbeat("w", study_id=live)
    reader = StoreReader(path)
    app = PruneStudioApp(reader, interval=3600.0, machine_interval=0,
                         sampler=FrozenSampler(FROZEN_MACHINE))
    try:
        async with app.run_test(size=(100, 24)) as pilot:
            await settle(pilot)
            table = app.screen.query_one(StudiesTableWidget)
            assert table_column(table, "name") == ["live", "ctrl-c", "killed"]
            assert table_column(table, "status") == ["running", "interrupted", "stale"]
            assert "3 studies · 1 running · 1 stale" in screen_text(app)
            await press(pilot, "end", "enter")
            text = screen_text(app)
            assert "killed grid · stale" in text and "runner gone" in text
    finally:
        reader.close()
