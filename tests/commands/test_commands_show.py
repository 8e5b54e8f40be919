"""`prunestudio show STUDY` on a reconstruction grid: each overfitting warning on its own line
after the candidate table, prefixed ``warning:``; none for a study without a sweep (a store
written through the store's write API: ``tests/reconstruction_store.py``)."""

from __future__ import annotations

import contextlib
import io
from pathlib import Path

import pytest
from reconstruction_store import build_reconstruction_store, expected_warning


@pytest.fixture(scope="module")
def recon_db(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, int]]:
    return build_reconstruction_store(tmp_path_factory.mktemp("show") / "recon.db")


def _show(*args: str) -> str:
    """`prunestudio show ARGS` through the console script's main, in this process; stdout."""
    from prunestudio.cli import main

    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        code = main(["show", *args])
    assert code == 0
    return out.getvalue()


def test_show_prints_each_overfitting_warning_after_the_table(
        recon_db: tuple[Path, dict[str, int]]) -> None:
    path, ids = recon_db
    lines = _show("reconstruction-grid", "--store", str(path)).splitlines()
    warnings = [i for i, line in enumerate(lines) if line.startswith("warning:")]
    assert [lines[i] for i in warnings] == [f"warning: {expected_warning(ids)}"]
    table_end = max(i for i, line in enumerate(lines) if line.startswith("└"))
    assert warnings[0] == table_end + 1  # right after the candidate table, whole on one line
    assert any("wanda 50% +BR 4ep" in line for line in lines[:table_end])
    header = next(line for line in lines if "candidate" in line and "status" in line)
    assert "calib err" in header  # reconstructed candidates: their calibration error
    row = next(line for line in lines if "wanda 50% +BR 4ep" in line)
    assert "0.1200" in row  # its calib_error (the store's 4-epoch point)


def test_show_prints_no_warning_without_a_sweep(recon_db: tuple[Path, dict[str, int]]) -> None:
    path, ids = recon_db
    shown = _show(str(ids["plain"]), "--store", str(path))
    assert "wanda 50%" in shown and "warning:" not in shown and "calib err" not in shown
