"""Workers in the TUI: the worker column of the candidates table, the study screen's
per-worker timeline (``t``), the machine panel's workers with their devices, and the feed that
reads the timeline only while it is shown and only when it is due."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest
from demo_store import DEMO_NOW, GP_WORKERS
from prunestudio.store import STALE_AFTER, open_store
from prunestudio.tui.app import PruneStudioApp
from prunestudio.tui.feed import StoreReader, TimelineFeed, WorkersView
from prunestudio.tui.study_screen import CandidateTableWidget, StudyScreen
from prunestudio.tui.workers import WorkerTimelinePanel, lane_cells, timeline_text
from tui_helpers import async_test, press, screen_text, settle, table_column

from prunestudio.schema import Worker, WorkerLane, WorkerSummary, WorkerTimeline

MakeApp = Callable[..., PruneStudioApp]
GP = ("down", "down", "enter")  # studies are listed newest first: the GP study is third


def _lines(app: PruneStudioApp, start: str) -> list[str]:
    return [line.strip() for line in screen_text(app).splitlines()
            if line.strip().startswith(start)]


@async_test
async def test_candidate_table_shows_the_worker_of_each_candidate(make_app: MakeApp) -> None:
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await press(pilot, *GP)
        screen = app.screen
        assert isinstance(screen, StudyScreen)
        table = screen.query_one(CandidateTableWidget)
        workers = table_column(table, "worker")
        assert set(workers) == {*GP_WORKERS, ""}  # the pending candidate has none
        assert workers[22] == GP_WORKERS[0] and table_column(table, "status")[22] == "running"
        assert screen.view.workers == sorted(GP_WORKERS)
        while screen.view.sort_key != "worker":  # a sort key like the others
            await press(pilot, "s")
        assert table_column(table, "worker")[:11] == [GP_WORKERS[0]] * 11


@async_test
async def test_worker_column_only_for_a_study_with_several_workers(make_app: MakeApp) -> None:
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await press(pilot, "end", "enter")  # baselines: every candidate on one worker
        table = app.screen.query_one(CandidateTableWidget)
        assert "worker" not in table.column_keys and table.row_count == 10
        await press(pilot, "enter")  # the candidate screen names it
        assert "worker gpu0" in screen_text(app)


@async_test
async def test_timeline_panel_lanes_figures_and_toggle(make_app: MakeApp) -> None:
    app = make_app()
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(pilot)
        await press(pilot, *GP)
        screen = app.screen
        assert isinstance(screen, StudyScreen)
        panel = screen.query_one(WorkerTimelinePanel)
        assert not panel.display and panel.view is None  # hidden: never read
        await press(pilot, "t")
        assert panel.display and panel.view is not None
        text = screen_text(app)
        assert "Workers 2 · over 3h05m" in text
        assert "▕00:06:38" in text and "03:12:34▏" in text  # the span, from the store
        w0, w1 = (_lines(app, w)[0] for w in GP_WORKERS)
        # candidates (the running one counts), busy share of the span, s/candidate, now
        assert w0.split("▏")[1].split()[:5] == ["11", "95%", "17m15s", "id", "33"]
        assert w1.split("▏")[1].split()[:4] == ["12", "93%", "14m22s", "idle"]
        assert "cuda:0 NVIDIA H100" in w1  # wide enough for the device
        running = panel.view.timeline.lanes[0]
        assert running.name == GP_WORKERS[0] and running.status_at(-1) == "running"
        await press(pilot, "t")
        assert not panel.display
        polls = screen.timeline_feed.due
        screen.poll()
        await settle(pilot)
        assert screen.timeline_feed.due == polls  # hidden: the poll does not read it


@async_test
async def test_timeline_follows_a_new_worker(make_app: MakeApp, demo_db: Path) -> None:
    app = make_app()
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        await press(pilot, *GP, "t")
        screen = app.screen
        assert isinstance(screen, StudyScreen)
        with open_store(demo_db) as store:  # a resume with a third worker: a new lane
            pending = store.candidates(screen.study.id, status="pending")[0]["id"]
            store.start_candidate(pending, worker="gpu-box:4200/w2")
        await press(pilot, "r")  # the refresh key reads it at once
        assert [lane.name for lane in screen.query_one(WorkerTimelinePanel).view.timeline
                .lanes][-1] == "gpu-box:4200/w2"
        new = _lines(app, "gpu-box:4200/w2")[0]
        assert new.split("▏")[1].split()[:3] == ["1", "0%", "—"]  # no row: "ended"
        assert "ended" in new
        assert "gpu-box:4200/w2" in table_column(screen.query_one(CandidateTableWidget),
                                                   "worker")


@async_test
async def test_machine_panel_lists_every_worker_and_its_device(make_app: MakeApp) -> None:
    app = make_app()
    async with app.run_test(size=(120, 30)) as pilot:
        await settle(pilot)
        text = screen_text(app)
        assert "workers of prunerzero-gp (3)" in text
        w0, = _lines(app, GP_WORKERS[0])
        assert w0.split()[1:5] == ["gpu-box", "id", "33", "10s"]
        assert w0.endswith("cuda:0 NVIDIA H100 80GB HBM3 31.0/80.0 GiB")
        w1, = _lines(app, GP_WORKERS[1])  # the GPU of another node
        assert w1.split()[1:4] == ["gpu-node2", "idle", "4s"] and "2.0/80.0 GiB" in w1
        driver, = _lines(app, "gpu-box:4200 ")  # the driver's row, not its actors'
        assert driver.split()[1:4] == ["gpu-box", "driver", "10s"]
        assert driver.endswith("cpu (16 threads)")


@async_test
async def test_machine_panel_marks_stale_workers(make_app: MakeApp) -> None:
    app = make_app(clock=lambda: DEMO_NOW + STALE_AFTER + 50)
    async with app.run_test(size=(100, 30)) as pilot:
        await settle(pilot)
        w0, = _lines(app, GP_WORKERS[0])
        assert w0.split()[1:4] == ["gpu-box", "stale", "2m00s"]
        assert "stale (runner gone" in screen_text(app)


def test_timeline_feed_reads_when_due_and_only_what_moved(demo_db: Path) -> None:
    ticks = itertools.count()
    mono = [0.0]
    reader = StoreReader(demo_db)
    try:
        with open_store(demo_db, readonly=True) as store:
            sid = store.study_record("prunerzero-gp").id
        feed = TimelineFeed(reader, sid, n_bins=10, duty=10.0, min_interval=5.0,
                            clock=lambda: mono[0] + next(ticks) * 0.01, now=lambda: DEMO_NOW)
        first = feed.poll()
        assert isinstance(first, WorkersView) and first.now == DEMO_NOW
        assert [lane.name for lane in first.timeline.lanes] == list(GP_WORKERS)
        assert first.summaries[GP_WORKERS[1]].failed == 2
        assert set(first.workers) == {*GP_WORKERS, "gpu-box:4200"}
        assert feed.poll() is None  # not due yet
        assert feed.poll(force=True) is not None  # the refresh key
        mono[0] += 10.0
        assert feed.poll() is not None
    finally:
        reader.close()


def test_timeline_of_a_dead_runner_stops_at_its_last_heartbeat(demo_db: Path) -> None:
    reader = StoreReader(demo_db)
    try:
        with open_store(demo_db, readonly=True) as store:
            sid = store.study_record("prunerzero-gp").id
        view = TimelineFeed(reader, sid, now=lambda: DEMO_NOW + 3600).poll()
        assert view is not None and all(w.stale for w in view.workers.values())
        # its running candidate is drawn to the last beat, not on for another hour
        assert view.timeline.end == DEMO_NOW - 4.0
    finally:
        reader.close()


def _view(bins: list[dict[str, float]], start: float = 0.0, bin_s: float = 10.0,
          worker: Worker | None = None) -> WorkersView:
    timeline = WorkerTimeline(start, start + bin_s * len(bins), len(bins),
                              (WorkerLane("w0", tuple(bins)),))
    summary = WorkerSummary("w0", done=3, busy_s=30.0, timed=3)
    return WorkersView(timeline, {"w0": summary}, {} if worker is None else {"w0": worker},
                       start + bin_s * len(bins))


def test_lane_cells_shade_busy_share_and_colour_status() -> None:
    bins = [{"done": 10.0}, {"done": 4.0}, {}, {"done": 9.0, "failed": 1.0},
            {"done": 7.0, "failed": 3.0}, {"running": 2.0}]
    view = _view(bins)
    cells = lane_cells(view.timeline.lanes[0], view.timeline, 6)
    assert cells.plain == "█▒ ██░"
    styles = {span.start: str(span.style) for span in cells.spans}
    assert styles == {0: "green", 1: "green", 3: "green",  # 1 s of 10 failed: drawn done
                      4: "bold red", 5: "bold yellow"}  # failures from a quarter; running
    half = lane_cells(view.timeline.lanes[0], view.timeline, 3)  # two bins per cell
    assert half.plain == "▓▒▓"  # 14, 10 and 12 busy seconds of 20
    wide = lane_cells(view.timeline.lanes[0], view.timeline, 12)  # a bin over two cells
    assert wide.plain == "██▒▒  ████░░"


def test_timeline_text_without_candidates_and_with_a_stale_worker() -> None:
    empty = WorkersView(WorkerTimeline(None, None, 10), {}, {}, 0.0)
    assert timeline_text(empty, 80).plain == "Workers 0 · no candidate has started yet"
    stale = Worker("w0", heartbeat=0.0, study_id=1, stale=True)
    text = timeline_text(_view([{"done": 10.0}] * 3, worker=stale), 80).plain
    lane = text.splitlines()[2]
    assert lane.startswith("w0       ▕") and lane.split("▏")[1].split() == [
        "3", "100%", "10s", "stale"]


@pytest.mark.parametrize("width", [60, 80, 200])
def test_timeline_text_fits_its_width(width: int) -> None:
    worker = Worker("w0", heartbeat=0.0, study_id=1, candidate_id=7,
                    device={"device": "cuda:0", "gpu": "NVIDIA H200",
                            "memory_total": 140 * 2**30, "memory_used": 12 * 2**30})
    text = timeline_text(_view([{"done": 10.0}] * 4, worker=worker), width)
    assert all(len(line) <= width for line in text.plain.splitlines()[1:])
    assert ("NVIDIA H200" in text.plain) == (width == 200)
