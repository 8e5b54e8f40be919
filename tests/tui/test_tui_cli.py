"""`prunestudio tui` start-up: no torch, fast import, clear errors with exit code 2."""

from __future__ import annotations

import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from prunestudio.store import open_store
from prunestudio.tui import main


def test_app_module_imports_without_torch_quickly() -> None:
    code = (
        "import sys, time; t = time.perf_counter(); import prunestudio.tui.app; "
        "dt = time.perf_counter() - t; "
        "bad = [m for m in ('torch', 'transformers', 'prunestudio.engine', 'pandas') "
        "if m in sys.modules]; print(dt, bad)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         check=True).stdout.split(maxsplit=1)
    assert out[1].strip() == "[]", out
    assert float(out[0]) < 2.0, f"importing the TUI took {float(out[0]):.2f} s"


def test_missing_store_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main([str(tmp_path / "nope.db")]) == 2
    err = capsys.readouterr().err
    assert "no store at" in err and "Traceback" not in err


def test_newer_schema_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "future.db"
    open_store(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE meta SET value = '99' WHERE key = 'schema_version'")
        conn.execute("PRAGMA user_version = 99")
    conn.close()
    assert main([str(path)]) == 2
    err = capsys.readouterr().err
    assert "schema version 99" in err and "upgrade prunestudio" in err


def test_not_a_store_exit_code_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE t (x)")
    conn.close()
    assert main([str(path)]) == 2
    assert "not an initialised Prune Studio store" in capsys.readouterr().err


def test_module_entry_point_reports_without_traceback(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "prunestudio.tui", str(tmp_path / "x.db")],
                          capture_output=True, text=True)
    assert proc.returncode == 2
    assert "no store at" in proc.stderr and "Traceback" not in proc.stderr


def test_help_and_bad_interval(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0 and "prunestudio tui" in capsys.readouterr().out
    assert main(["--interval", "0", "x.db"]) == 2
