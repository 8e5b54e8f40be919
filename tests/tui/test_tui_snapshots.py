"""SVG snapshots of every screen (pytest-textual-snapshot). The demo store has fixed
timestamps, the clock and the machine figures are frozen, times are shown in UTC.

Update after an intended change: ``pytest tests/tui/test_tui_snapshots.py --snapshot-update``
and look at the report / the SVGs before committing them.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from prunestudio.tui.app import PruneStudioApp
from textual.pilot import Pilot
from tui_helpers import press, settle

MakeApp = Callable[..., PruneStudioApp]
SnapCompare = Callable[..., bool]


def _keys(*keys: str) -> Callable[[Pilot[Any]], Any]:
    async def run_before(pilot: Pilot[Any]) -> None:
        await settle(pilot)
        await press(pilot, *keys)
        await settle(pilot)

    return run_before


GP = ("down", "down", "enter")  # studies are listed newest first; the GP study is third


def test_studies_screen(make_app: MakeApp, snap_compare: SnapCompare) -> None:
    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=_keys())


def test_study_screen_narrow(make_app: MakeApp, snap_compare: SnapCompare) -> None:
    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=_keys(*GP, "down"))


def test_study_screen_wide_with_detail(make_app: MakeApp, snap_compare: SnapCompare) -> None:
    assert snap_compare(make_app(), terminal_size=(120, 40), run_before=_keys(*GP, "down"))


def test_study_screen_worker_timeline(make_app: MakeApp, snap_compare: SnapCompare) -> None:
    # two Ray actors (one on another node): lanes over the study's span, figures, devices
    assert snap_compare(make_app(), terminal_size=(160, 40), run_before=_keys(*GP, "t"))


def test_study_sorted_and_filtered(make_app: MakeApp, snap_compare: SnapCompare) -> None:
    # baselines sorted by in-domain ppl (dense reference included, never marked best), done only
    keys = ("end", "enter", *["s"] * 5, "f", "f", "f")
    assert snap_compare(make_app(), terminal_size=(120, 40), run_before=_keys(*keys))


def test_candidate_screen_expression(make_app: MakeApp, snap_compare: SnapCompare) -> None:
    assert snap_compare(make_app(), terminal_size=(80, 24),
                        run_before=_keys(*GP, "down", "enter"))


def test_candidate_screen_layer_ratios(make_app: MakeApp, snap_compare: SnapCompare) -> None:
    assert snap_compare(make_app(), terminal_size=(100, 40),
                        run_before=_keys("down", "enter", "enter"))


def test_candidate_screen_failed(make_app: MakeApp, snap_compare: SnapCompare) -> None:
    keys = ("end", "enter", *["down"] * 6, "enter")  # sparsegpt 2:4: Cholesky failure
    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=_keys(*keys))


def test_export_dialog(make_app: MakeApp, snap_compare: SnapCompare) -> None:
    assert snap_compare(make_app(), terminal_size=(80, 24),
                        run_before=_keys(*GP, "down", "x"))


def test_cancel_dialog(make_app: MakeApp, snap_compare: SnapCompare) -> None:
    assert snap_compare(make_app(), terminal_size=(80, 24), run_before=_keys(*GP, "c"))
