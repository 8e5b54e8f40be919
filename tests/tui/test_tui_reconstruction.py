"""The study screen's overfitting warnings (a reconstruction grid, Shin et al. 2024): shown
under the study line for that study, hidden for a study without them; the feed sends them
when they change, not on every poll (a store written through the store's write API:
``tests/reconstruction_store.py``)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest
from prunestudio.store import open_store
from prunestudio.tui.app import PruneStudioApp
from prunestudio.tui.feed import StoreReader, StudyFeed
from prunestudio.tui.study_screen import StudyScreen
from reconstruction_store import (
    EPOCHS,
    build_reconstruction_store,
    expected_warning,
    reconstructed_spec,
)
from textual.widgets import Static
from tui_helpers import async_test, press, screen_text, settle

MakeApp = Callable[..., PruneStudioApp]


@pytest.fixture
def recon_db(tmp_path: Path) -> tuple[Path, dict[str, int]]:
    return build_reconstruction_store(tmp_path / "recon.db")


@async_test
async def test_study_screen_shows_the_overfitting_warning(
        make_app: MakeApp, recon_db: tuple[Path, dict[str, int]]) -> None:
    path, ids = recon_db
    app = make_app(path)
    async with app.run_test(size=(240, 40)) as pilot:
        await settle(pilot)
        await press(pilot, "enter")  # newest first: the reconstruction grid
        screen = app.screen
        assert isinstance(screen, StudyScreen) and screen.study.name == "reconstruction-grid"
        panel = screen.query_one("#warnings", Static)
        assert panel.display and panel.tooltip == expected_warning(ids)  # whole when cut
        assert f"warning: {expected_warning(ids)}" in screen_text(app)
        await press(pilot, "escape", "down", "enter")  # the grid without reconstruction
        screen = app.screen
        assert isinstance(screen, StudyScreen) and screen.study.name == "plain-grid"
        assert not screen.query_one("#warnings", Static).display
        assert "warning:" not in screen_text(app)


def test_feed_sends_the_warnings_when_they_change(recon_db: tuple[Path, dict[str, int]]
                                                  ) -> None:
    path, ids = recon_db
    reader = StoreReader(path)
    try:
        feed = StudyFeed(reader, ids["study"])
        assert feed.poll().warnings == [expected_warning(ids)]
        assert feed.poll().warnings is None  # nothing changed
        with open_store(path) as store:  # 8 epochs: the in-domain PPL falls again
            cid, _ = store.add_candidate(ids["study"], reconstructed_spec("wanda", 0.5, "br", 8),
                                         origin="grid")
        update = feed.poll()
        assert update.warnings is None and not update.empty  # pending: no metric yet
        with open_store(path) as store:
            store.start_candidate(cid, worker="gpu0")
            calib, _, _ = EPOCHS[4]
            store.finish_candidate(cid, metrics=[
                {"name": "calib_error", "value": calib / 2, "role": "reconstruction",
                 "fidelity": "full"},
                {"name": "ppl", "value": 24.5, "role": "in_domain", "dataset": "pydoc",
                 "split": "all", "seqlen": 256, "fidelity": "full"}])
        found = feed.poll().warnings
        assert found is not None and len(found) == 2 and found[0] == expected_warning(ids)
        assert "epochs 4 → 8" in found[1] and "in_domain PPL 23.900 → 24.500" in found[1]
    finally:
        reader.close()
