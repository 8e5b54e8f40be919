"""The reconstruction view of a grid study (Shin et al. 2024): the method × mode table of
held-out PPL and calibration error, the per-block errors before / after, and the overfitting
report with its warning (a store written through the store's write API:
``tests/reconstruction_store.py``)."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
from app_testlib import Run, assert_clean, charts, frames, texts
from prunestudio.app.views import reconstruction as view
from prunestudio.store import browse, open_store
from reconstruction_store import BLOCKS, build_reconstruction_store, expected_warning


@pytest.fixture(scope="module")
def recon_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    return build_reconstruction_store(tmp_path_factory.mktemp("recon") / "recon.db")


def test_reconstruction_view_shows_the_table_the_blocks_and_the_warning(
        run_app: Run, recon_db: tuple[Path, dict[str, int]]) -> None:
    path, ids = recon_db
    at = run_app(store=path, study=str(ids["study"]))
    assert_clean(at)
    labels = [t.label for t in at.tabs]
    assert "Reconstruction" in labels and labels.index("Methods") < labels.index(
        "Reconstruction")
    assert [w.value for w in at.warning] == [expected_warning(ids)]

    table = next(f for f in frames(at) if "recipe" in f.columns)
    assert list(table.columns) == [
        "candidate", "recipe", "in_domain PPL · none", "in_domain PPL · BR",
        "out_of_domain PPL · none", "out_of_domain PPL · BR", "calib error · BR"]
    assert list(table["candidate"]) == ["dense", "wanda 50%", "wanda 50%", "wanda 50%"]
    assert list(table["recipe"]) == ["", "1ep", "2ep", "4ep"]
    rows = table.set_index("recipe")
    assert rows.loc["", "in_domain PPL · none"] == pytest.approx(15.02)  # dense
    assert math.isnan(rows.loc["", "in_domain PPL · BR"])
    assert list(rows.loc[["1ep", "2ep", "4ep"], "in_domain PPL · none"]) == pytest.approx(
        [28.70] * 3)  # the same spec as pruned, beside each of its recipes
    assert list(rows.loc[["1ep", "2ep", "4ep"], "in_domain PPL · BR"]) == pytest.approx(
        [24.1, 23.5, 23.9])
    assert list(rows.loc[["1ep", "2ep", "4ep"], "calib error · BR"]) == pytest.approx(
        [0.3, 0.2, 0.12])

    figs = charts(at)
    blocks = figs["reconstruction-blocks"]["data"]
    # the three reconstructed candidates, after (solid) and before (dashed) each
    assert [t["name"] for t in blocks] == [
        f"wanda 50% +BR {e}ep · {part}" for e in (1, 2, 4) for part in ("after", "before")]
    assert blocks[0]["x"] == list(range(BLOCKS))
    assert blocks[0]["y"] == pytest.approx([0.12, 0.24, 0.36, 0.48])  # 0.3 × depth weights
    assert blocks[1]["y"] == pytest.approx([0.3, 0.6, 0.9, 1.2]) and blocks[1]["line"][
        "dash"] == "dash"
    sweep = figs["reconstruction-sweep-0"]
    assert sweep["layout"]["title"]["text"] == "wanda 50% +BR: vs epochs"
    by_name = {t["name"]: t for t in sweep["data"]}
    assert by_name["calibration error"]["x"] == ["1", "2", "4"]
    assert by_name["calibration error"]["y"] == pytest.approx([0.3, 0.2, 0.12])
    assert by_name["in_domain PPL"]["y"] == pytest.approx([24.1, 23.5, 23.9])
    assert by_name["in_domain PPL"]["yaxis"] == "y2"  # each panel on its own scale
    assert by_name["in_domain PPL rose"]["x"] == ["4"]  # the warning's step, ringed
    assert "out_of_domain PPL rose" not in by_name


def test_the_other_error_and_a_chosen_candidate(run_app: Run,
                                                recon_db: tuple[Path, dict[str, int]]) -> None:
    path, ids = recon_db
    at = run_app(store=path, study=str(ids["study"]))
    at.radio(key="reconstruction-error").set_value(list(view.ERRORS)[1]).run()
    at.multiselect(key="reconstruction-blocks-ids").set_value([ids["br4"]]).run()
    assert_clean(at)
    blocks = charts(at)["reconstruction-blocks"]["data"]
    assert [t["name"] for t in blocks] == ["wanda 50% +BR 4ep · after",
                                           "wanda 50% +BR 4ep · before"]
    # against the mode's own target: 0.5 × / 1.5 × the calibration error per block
    assert blocks[0]["y"] == pytest.approx([0.024, 0.048, 0.072, 0.096])
    assert blocks[1]["y"] == pytest.approx([0.072, 0.144, 0.216, 0.288])


def test_a_grid_without_reconstruction_has_no_such_view(
        run_app: Run, recon_db: tuple[Path, dict[str, int]]) -> None:
    path, ids = recon_db
    at = run_app(store=path, study=str(ids["plain"]))
    assert_clean(at)
    assert "Reconstruction" not in [t.label for t in at.tabs]
    assert "overfitting" not in texts(at)
    with open_store(path, readonly=True) as store:
        assert browse.reconstruction_candidates(store, ids["plain"]) == []
        found = browse.reconstruction_candidates(store, ids["study"])
    assert [c.id for c in found] == [ids[k] for k in ("dense", "none", "br1", "br2", "br4")]
    # full records: the per-block lists of the protocols come with them
    calib = next(m for m in found[-1].metrics if m.name == "calib_error")
    assert calib.protocol["per_block"] == pytest.approx([0.048, 0.096, 0.144, 0.192])
