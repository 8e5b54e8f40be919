"""`prunestudio web`: its parser, its refusal of a missing store (exit 2), the Streamlit command
it runs, and one real server answering its health check on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from prunestudio.app import MAIN_SCRIPT

from prunestudio.cli import build_parser, main
from prunestudio.commands import web


def test_parser_defaults_and_bad_ports() -> None:
    args = build_parser().parse_args(["web"])
    assert (args.store, args.host, args.port) == (None, "127.0.0.1", 8501)
    args = build_parser().parse_args(["web", "runs/s.db", "--host", "0.0.0.0", "--port", "9"])
    assert (args.store, args.host, args.port) == ("runs/s.db", "0.0.0.0", 9)
    for bad in ("0", "70000", "http"):
        with pytest.raises(SystemExit):
            build_parser().parse_args(["web", "--port", bad])


def test_missing_store_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["web", str(tmp_path / "nope.db")]) == 2
    err = capsys.readouterr().err
    assert "prunestudio web: error: no store at" in err and "nope.db" in err


def test_streamlit_command_is_headless_and_read_only() -> None:
    command = web.streamlit_command("/x/s.db", "127.0.0.1", 8600)
    assert command[:4] == [sys.executable, "-m", "streamlit", "run"]
    assert command[4] == str(MAIN_SCRIPT)
    joined = " ".join(command)
    for flag in ("--server.address 127.0.0.1", "--server.port 8600",
                 "--server.headless true", "--browser.gatherUsageStats false",
                 "--server.fileWatcherType none"):
        assert flag in joined
    assert command[-3:] == ["--", "--store", "/x/s.db"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_web_serves_the_app_and_stops_on_sigterm(app_db: Path) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "prunestudio.cli", "web", str(app_db), "--port", str(port)],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline = time.monotonic() + 60
        body = ""
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/_stcore/health",
                                            timeout=2) as r:
                    body = r.read().decode()
                    break
            except OSError:
                if proc.poll() is not None:
                    break
                time.sleep(0.3)
        assert body == "ok", proc.stdout.read() if proc.poll() is not None else "no answer"
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5) as r:
            assert r.status == 200
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    out = proc.stdout.read()
    assert f"serving {app_db.resolve()} (read-only) at http://127.0.0.1:{port}/" in out
    assert proc.returncode in (0, 143)
    with socket.socket() as s:  # the server is gone with it
        assert s.connect_ex(("127.0.0.1", port)) != 0
