"""`prunestudio web [STORE]`: the web app (Streamlit) on a store, opened read-only.

Runs ``python -m streamlit run`` on the app's entry script in a child process (Streamlit's
public command line: no reliance on its internal bootstrap), headless, without usage
statistics or a file watcher, bound to 127.0.0.1 unless ``--host`` says otherwise.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from pathlib import Path

from prunestudio.commands import options

NAME = "web"
HELP = "compare and explain studies in the browser (Streamlit)"
DESCRIPTION = ("Serve the web app on STORE (opened read-only): every study with its best "
               "values, each study's progress, candidates and timeline, comparisons across "
               "studies, and every candidate's spec, metrics and protocols. Binds to "
               "127.0.0.1 unless --host says otherwise. Deep links: /study?study=ID, "
               "/candidate?candidate=ID, /compare?compare=1,2,3; ?live=0 starts paused.")
DEFAULT_PORT = 8501


def arguments(p: argparse.ArgumentParser) -> None:
    options.store_positional(p)
    p.add_argument("--host", default="127.0.0.1",
                   help="address to bind (default 127.0.0.1: this machine only; 0.0.0.0 "
                   "serves every interface)")
    p.add_argument("--port", type=_port, default=DEFAULT_PORT,
                   help=f"port (default {DEFAULT_PORT})")


def _port(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a port number; got {text!r}") from None
    if not 1 <= value <= 65535:
        raise argparse.ArgumentTypeError(f"must be within 1..65535; got {value}")
    return value


def streamlit_command(store: str, host: str, port: int) -> list[str]:
    """The child process's command line (``streamlit run`` on the app's entry script)."""
    from prunestudio.app import MAIN_SCRIPT

    return [sys.executable, "-m", "streamlit", "run", str(MAIN_SCRIPT),
            "--server.address", host, "--server.port", str(port),
            "--server.headless", "true", "--server.fileWatcherType", "none",
            "--server.runOnSave", "false", "--browser.gatherUsageStats", "false",
            "--global.developmentMode", "false", "--client.toolbarMode", "minimal",
            "--", "--store", store]


def check_store(store: str) -> Path:
    """The store's absolute path, after checking it opens read-only (StoreError if not)."""
    from prunestudio.store import open_store

    path = Path(store).expanduser().resolve()
    with open_store(path, readonly=True):
        pass
    return path


def handle(args: argparse.Namespace) -> int:
    path = check_store(args.store)
    try:
        import streamlit  # noqa: F401
    except ImportError as exc:
        raise ValueError("the web app needs Streamlit: pip install 'streamlit>=1.40' plotly "
                         "pandas (or pip install -e . in a checkout)") from exc
    command = streamlit_command(str(path), args.host, args.port)
    env = {**os.environ, "PRUNESTUDIO_STORE": str(path)}
    print(f"prunestudio web: serving {path} (read-only) at http://{args.host}:{args.port}/ "
          "- Ctrl-C stops it", file=sys.stderr, flush=True)
    child = subprocess.Popen(command, env=env)

    def stop(signum: int, _frame: object) -> None:  # `kill` of this process stops the server
        child.terminate()

    previous = signal.signal(signal.SIGTERM, stop)
    try:
        code = child.wait()
        return 143 if code == -signal.SIGTERM else code
    except KeyboardInterrupt:
        child.send_signal(signal.SIGINT)
        try:
            child.wait(timeout=10)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)
        if child.poll() is None:
            child.kill()
            child.wait()
