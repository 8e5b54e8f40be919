"""`prunestudio tui` and `python -m prunestudio.tui`: one parser, one behaviour."""

from __future__ import annotations

import subprocess
import sys

import pytest
from prunestudio.tui import main

ENTRY_POINTS = {"console script": [sys.executable, "-m", "prunestudio.cli", "tui"],
                "module": [sys.executable, "-m", "prunestudio.tui"]}


def _run(entry: str, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([*ENTRY_POINTS[entry], *args], capture_output=True, text=True,
                          timeout=60)


@pytest.mark.parametrize("interval", ["0", "-1", "0.05", "nan"])
def test_too_short_an_interval_is_refused_the_same_way_by_both_entry_points(tmp_path,
                                                                            interval):
    missing = str(tmp_path / "absent.db")  # refused before the store is even looked at
    results = {entry: _run(entry, missing, "--interval", interval) for entry in ENTRY_POINTS}
    for proc in results.values():
        assert proc.returncode == 2, (proc.stdout, proc.stderr)
        assert proc.stderr.startswith("prunestudio tui: error: --interval must be at least "
                                      "0.1 seconds"), proc.stderr
        assert "no store at" not in proc.stderr and "Traceback" not in proc.stderr
    assert len({(p.returncode, p.stdout, p.stderr) for p in results.values()}) == 1


def test_in_process_entry_point_returns_2_for_a_bad_interval(capsys):
    assert main(["x.db", "--interval", "0"]) == 2
    assert "--interval must be at least 0.1 seconds; got 0" in capsys.readouterr().err


def test_both_entry_points_share_help_and_usage_errors(tmp_path):
    helps = {entry: _run(entry, "--help") for entry in ENTRY_POINTS}
    assert helps["module"].stdout == helps["console script"].stdout
    assert helps["module"].stdout.startswith("usage: prunestudio tui")
    assert "--interval SECONDS" in helps["module"].stdout
    bad = {entry: _run(entry, "--interval", "soon") for entry in ENTRY_POINTS}
    assert {p.returncode for p in bad.values()} == {2}
    assert bad["module"].stderr == bad["console script"].stderr
    assert "argument --interval: invalid float value: 'soon'" in bad["module"].stderr


def test_a_missing_store_is_the_same_error_from_both_entry_points(tmp_path):
    missing = str(tmp_path / "absent.db")
    results = [_run(entry, missing, "--interval", "0.5") for entry in ENTRY_POINTS]
    assert {p.returncode for p in results} == {2}
    assert results[0].stderr == results[1].stderr and "no store at" in results[0].stderr
