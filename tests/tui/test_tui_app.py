"""Pilot tests: navigation, sorting, filtering, paging, detail, export, cancel, live updates."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from demo_store import spec
from prunestudio.store import open_store
from prunestudio.tui.app import PruneStudioApp
from prunestudio.tui.dialogs import ConfirmCancel, ExportDialog
from prunestudio.tui.studies_screen import StudiesScreen, StudiesTableWidget
from prunestudio.tui.study_screen import CandidateScreen, CandidateTableWidget, StudyScreen
from textual.pilot import Pilot
from tui_helpers import async_test, press, screen_text, settle, table_column

MakeApp = Callable[..., PruneStudioApp]


async def _open_gp(pilot) -> StudyScreen:  # type: ignore[no-untyped-def]
    await settle(pilot)
    await press(pilot, "down", "down", "enter")  # studies are newest first: 4, 3, 2 = gp
    screen = pilot.app.screen
    assert isinstance(screen, StudyScreen) and screen.study.name == "prunerzero-gp"
    return screen


@asynccontextmanager
async def _gp_study(make_app: MakeApp, size: tuple[int, int]
                    ) -> AsyncIterator[tuple[PruneStudioApp, Pilot, StudyScreen,
                                             CandidateTableWidget]]:
    """The demo GP study's screen at this terminal size: (app, pilot, screen, its table)."""
    app = make_app()
    async with app.run_test(size=size) as pilot:
        screen = await _open_gp(pilot)
        yield app, pilot, screen, screen.query_one(CandidateTableWidget)


@async_test
async def test_studies_screen(make_app: MakeApp) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        table = app.screen.query_one(StudiesTableWidget)
        assert table_column(table, "name") == ["random-search", "structured-grid",
                                               "prunerzero-gp", "baselines"]
        assert table_column(table, "status") == ["created", "cancelled", "running", "finished"]
        # a GP study's budget counts real fitness evaluations: 20 done, the 2 failed do not
        assert [p.split()[-1] for p in table_column(table, "progress")] == [
            "0/150", "8/40", "20/60", "10/10"]
        # each study's primary metric: the lowest in-domain full ppl of a grid, the dense
        # reference excluded (16.92 is dense); a GP study's best search fitness (proxy)
        assert table_column(table, "best") == ["", "31.00", "21.25", "26.95"]
        assert table_column(table, "eta")[2] == "6h14m"  # 20 evaluated in 3h07m, 40 to go
        text = screen_text(app)
        assert "GPU0 H100" in text and "4 studies · 1 running" in text


@async_test
async def test_navigation_with_keys_only(make_app: MakeApp) -> None:
    async with _gp_study(make_app, (80, 24)) as (app, pilot, screen, table):
        assert table.row_count == 24 and table.has_focus
        await press(pilot, "down", "enter")
        assert isinstance(app.screen, CandidateScreen)
        text = screen_text(app)
        assert "#1 (id" in text and "└── mms" in text and "protocol" not in text
        await press(pilot, "end")  # the metrics sit below the spec
        text = screen_text(app)
        assert "seqlen 256 · full · in_domain · n=32" in text
        await press(pilot, "escape")
        assert app.screen is screen and table.cursor_row == 1
        await press(pilot, "escape")
        assert isinstance(app.screen, StudiesScreen)


@async_test
async def test_sort_by_metric_and_reverse(make_app: MakeApp) -> None:
    async with _gp_study(make_app, (120, 40)) as (app, pilot, screen, table):
        primary = screen.view.primary
        # a GP study is ranked by its search fitness (Study.primary_role 'search')
        assert primary is not None and primary.title == "ppl search·p"
        while screen.view.sort_key != primary.key:
            await press(pilot, "s")
        fitness = table_column(table, primary.key)
        assert fitness[20:] == [""] * 4  # 2 failed, 1 running, 1 pending
        assert fitness[:20] == sorted(fitness[:20], key=float)
        # the held-out ppl (finalists only) is a sort key too; at this width, beside the
        # detail pane, only the primary metric has a column: read the view's order
        held_out = next(c for c in screen.view.columns.values() if c.title == "ppl in")
        while screen.view.sort_key != held_out.key:
            await press(pilot, "s")

        def values() -> list[float | None]:
            return [screen.view.rows[i].metrics.get(held_out.key)
                    for i in screen.view.page(0, 100)]

        ordered = values()
        assert ordered[3:] == [None] * 21  # three finalists have it; the rest come after
        assert ordered[:3] == sorted(ordered[:3]) and f"{ordered[0]:.2f}" == "25.29"
        assert sorted(table_column(table, "_id")[:3], key=int) == ["12", "24", "30"]
        await press(pilot, "S")  # reverse: worst first, rows without the metric stay last
        assert values()[:3] == ordered[:3][::-1]
        assert "ppl in ↓" in screen_text(app)


@async_test
async def test_filter_by_status_and_origin(make_app: MakeApp) -> None:
    async with _gp_study(make_app, (80, 24)) as (app, pilot, screen, table):
        await press(pilot, "f")  # running
        assert table_column(table, "status") == ["running"]
        await press(pilot, "f")  # pending
        assert table_column(table, "_id") == ["34"]
        await press(pilot, "f", "f")  # failed
        assert table_column(table, "_id") == ["17", "26"]
        await press(pilot, "o")  # first origin alphabetically: crossover
        assert table_column(table, "origin") == []  # 6 is random, 15 a mutation
        await press(pilot, "o")  # mutation
        assert table_column(table, "_id") == ["26"]
        assert "status failed  origin mutation  rows 1–1 of 1" in screen_text(app)
        await press(pilot, "f", "f")  # skipped, then all
        assert screen.view.status_filter is None
        assert set(table_column(table, "origin")) == {"mutation"}


@async_test
async def test_paging(make_app: MakeApp) -> None:
    app = make_app(page_size=10)
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await _open_gp(pilot)
        table = screen.query_one(CandidateTableWidget)
        assert table.row_count == 10 and table.pages == 3
        await press(pilot, "right_square_bracket")
        assert table_column(table, "_id")[0] == "21" and "page 2/3" in screen_text(app)
        await press(pilot, "right_square_bracket", "right_square_bracket")
        assert table_column(table, "_id") == ["31", "32", "33", "34"]
        await press(pilot, "left_square_bracket")
        assert table_column(table, "_id")[0] == "21"


@async_test
async def test_detail_pane_follows_cursor(make_app: MakeApp) -> None:
    async with _gp_study(make_app, (120, 40)) as (app, pilot, screen, table):
        assert screen.query_one("#side").display
        await press(pilot, "down", "down", "down", "down", "down", "down")
        text = screen_text(app)
        assert "#6 (id" in text and "NaN scores" in text and "exp" in text
        await press(pilot, "escape", "up", "enter")  # the structured study
        assert isinstance(app.screen, StudyScreen)
        await press(pilot, "end", "enter")
        text = screen_text(app)
        assert "Layer ratios" in text and "30 layers" in text and "mlp_ratios" in text


@async_test
async def test_export_command_copied(make_app: MakeApp) -> None:
    async with _gp_study(make_app, (80, 24)) as (app, pilot, screen, table):
        await press(pilot, "down", "x")
        assert isinstance(app.screen, ExportDialog)
        cid = screen.query_one(CandidateTableWidget).cursor_id
        assert app.clipboard == f"prunestudio export {cid} exports/prunerzero-gp-1 --store demo.db"
        await press(pilot, "escape")
        assert app.screen is screen


@async_test
async def test_cancel_running_study(make_app: MakeApp, demo_db: Path) -> None:
    app = make_app()
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        await press(pilot, "end", "c")  # the oldest study is finished: nothing to cancel
        assert not isinstance(app.screen, ConfirmCancel)
        assert any("nothing to cancel" in str(n.message) for n in app._notifications)
        await press(pilot, "home")
        screen = await _open_gp(pilot)
        await press(pilot, "c")
        assert isinstance(app.screen, ConfirmCancel)
        await press(pilot, "n")
        assert app.screen is screen
        with open_store(demo_db, readonly=True) as store:
            assert store.cancel_requested(screen.study.id) is None
        await press(pilot, "c", "y")
        await settle(pilot)
        with open_store(demo_db, readonly=True) as store:
            assert "cancelled from the TUI" in (store.cancel_requested(screen.study.id) or "")
        assert screen.study.cancel_requested  # re-read after the write
        assert "(cancelling)" in screen_text(app)


class _GatedFeed:
    """Wraps a feed: each poll reads the store, then waits until the test opens the gate."""

    def __init__(self, feed: Any) -> None:
        self.feed, self.has_read, self.gate = feed, threading.Event(), threading.Event()
        self.polls = 0

    def poll(self, *args: Any) -> Any:
        update = self.feed.poll(*args)
        self.polls += 1
        self.has_read.set()
        assert self.gate.wait(30), "the test never opened the gate"
        return update


@async_test
async def test_poll_asked_during_a_poll_is_not_lost(make_app: MakeApp, demo_db: Path) -> None:
    """A cancel written while a poll is in flight (it read before the write) must still show:
    the refresh asked for meanwhile runs after the poll, it is not dropped."""
    async with _gp_study(make_app, (80, 24)) as (app, pilot, screen, table):
        studies = next(s for s in app.screen_stack if isinstance(s, StudiesScreen))
        for target in (screen, studies):
            target.feed = _GatedFeed(target.feed)
            target.poll()
            assert await asyncio.to_thread(target.feed.has_read.wait, 30)
        with open_store(demo_db) as store:
            store.request_cancel(screen.study.id, "cancelled by the test")
        screen.poll()
        studies.poll()
        for target in (screen, studies):
            target.feed.gate.set()
        await settle(pilot)
        assert screen.feed.polls == 2 and studies.feed.polls == 2
        assert screen.study.cancel_requested == "cancelled by the test"
        assert studies.summaries[screen.study.id].cancel_requested == "cancelled by the test"


@async_test
async def test_live_update_keeps_cursor_and_scroll(make_app: MakeApp, demo_db: Path) -> None:
    async with _gp_study(make_app, (80, 24)) as (app, pilot, screen, table):
        await press(pilot, *["down"] * 15)
        cursor, scroll = table.cursor_id, table.scroll_y
        assert scroll > 0
        running = screen.view.page(0, 100)[22]
        with open_store(demo_db) as store:
            store.finish_candidate(running, metrics=[{
                "name": "ppl", "value": 19.5, "dataset": "pydoc", "split": "all", "seqlen": 128,
                "n_samples": 8, "fidelity": "proxy", "role": "search"}])
            new, _ = store.add_candidate(screen.study.id, spec("symbolic", 0.5, calibration="dense",
                                                               expression="mul(W,X)"),
                                         origin="mutation")
            store.add_event(screen.study.id, "candidate 22 done")
        screen.poll()
        await settle(pilot)
        assert table.row_count == 25 and table.cursor_id == cursor and table.scroll_y == scroll
        assert table.get_cell(str(running), "status").plain == "done"
        assert table_column(table, "label")[-1].startswith("symbolic mul(W,X)")
        assert "candidate 22 done" in screen_text(app)
        assert screen.study.n_done == 21 and screen.study.n_pending == 2


@async_test
async def test_command_palette_filters(make_app: MakeApp) -> None:
    async with _gp_study(make_app, (80, 24)) as (app, pilot, screen, table):
        titles = [c.title for c in app.get_system_commands(screen)]
        for wanted in ("Sort by ppl in", "Export command", "Cancel study", "Show only failed",
                       "Show only origin crossover", "Next page", "Quit"):
            assert wanted in titles
        await pilot.press("ctrl+p")
        await pilot.pause()
        for ch in "Show only failed":
            await pilot.press("space" if ch == " " else ch)
        await pilot.pause(0.3)
        await press(pilot, "enter")
        assert screen.view.status_filter == "failed"
        assert table_column(screen.query_one(CandidateTableWidget), "_id") == ["17", "26"]


@async_test
async def test_open_study_directly(make_app: MakeApp) -> None:
    app = make_app(open_study="baselines")
    async with app.run_test(size=(80, 24)) as pilot:
        await settle(pilot)
        assert isinstance(app.screen, StudyScreen) and app.screen.study.name == "baselines"
        await press(pilot, "escape")
        assert isinstance(app.screen, StudiesScreen)
