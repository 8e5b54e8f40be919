"""Command line of the TUI: ``prunestudio tui [STORE] [--study S] [--interval SECONDS]``.

Store problems (missing file, newer schema, not a store, locked) are reported in one clear
line on stderr with exit code 2, before the terminal is taken over — never a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

__all__ = ["build_parser", "cmd_tui", "default_store_path", "main", "run_tui"]

EXIT_STORE_ERROR = 2


def default_store_path() -> Path:
    """``$PRUNESTUDIO_STORE``, else ``./prunestudio.db`` (as the engine's CLI)."""
    return Path(os.environ.get("PRUNESTUDIO_STORE", "prunestudio.db"))


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prunestudio tui",
        description="Watch and steer pruning studies live in the terminal (works over SSH). "
        "Opens the store read-only; the only write is a cancel request you confirm.",
    )
    parser.add_argument(
        "store", nargs="?", default=None,
        help="store file (default: $PRUNESTUDIO_STORE or ./prunestudio.db)",
    )
    parser.add_argument("--study", default=None, help="open this study (name or id) directly")
    parser.add_argument("--interval", type=float, default=1.0,
                        help="seconds between store polls (default: 1)")
    return parser


def run_tui(store_path: str | os.PathLike[str] | None = None, *, study: str | None = None,
            interval: float = 1.0) -> int:
    """Run the TUI on ``store_path`` until the user quits; return the exit code (0, or 2 when
    the store cannot be opened)."""
    from prunestudio.store import StoreError

    from .feed import StoreReader

    path = Path(store_path) if store_path is not None else default_store_path()
    try:
        reader = StoreReader(path)
    except StoreError as exc:  # StoreNotFoundError, SchemaTooNewError, not a store, locked
        print(f"prunestudio tui: {exc}", file=sys.stderr)
        return EXIT_STORE_ERROR
    from .app import PruneStudioApp

    try:
        app = PruneStudioApp(reader, interval=max(0.1, interval),
                             open_study=int(study) if study and study.isdigit() else study)
        app.run()
    finally:
        reader.close()
    return app.return_code or 0  # Textual sets 1 after an unhandled exception


def cmd_tui(args: argparse.Namespace) -> int:
    """Handler for ``prunestudio tui`` in the main console script (an argparse namespace
    with ``store`` and, when that parser defines them, ``study`` and ``interval``)."""
    return run_tui(getattr(args, "store", None), study=getattr(args, "study", None),
                   interval=getattr(args, "interval", None) or 1.0)


def main(argv: list[str] | None = None) -> int:
    """``prunestudio tui`` entry point: parse ``argv`` (default ``sys.argv[1:]``), run, and
    return the exit code."""
    args = build_parser().parse_args(argv)
    if args.interval <= 0:
        print("prunestudio tui: --interval must be > 0 seconds", file=sys.stderr)
        return EXIT_STORE_ERROR
    return run_tui(args.store, study=args.study, interval=args.interval)
