"""Starting the TUI: :func:`run_tui` (a store path in, an exit code out) and :func:`main` (argv
in, exit code out). The command line itself — ``prunestudio tui [STORE] [--study S]
[--interval SECONDS]`` — is defined once, in :mod:`prunestudio.commands.tui`.

Store problems (missing file, newer schema, not a store, locked) are reported in one clear
line on stderr with exit code 2, before the terminal is taken over — never a traceback.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from pathlib import Path

from prunestudio.schema import default_store_path

__all__ = ["default_store_path", "main", "run_tui"]

EXIT_STORE_ERROR = 2


def run_tui(store_path: str | os.PathLike[str] | None = None, *, study: str | None = None,
            interval: float = 1.0) -> int:
    """Run the TUI on ``store_path`` until the user quits, polling the store every
    ``interval`` seconds (> 0); return the exit code (0, or 2 when the store cannot be
    opened)."""
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
        app = PruneStudioApp(reader, interval=interval,
                             open_study=int(study) if study and study.isdigit() else study)
        app.run()
    finally:
        reader.close()
    return app.return_code or 0  # Textual sets 1 after an unhandled exception


def main(argv: Sequence[str] | None = None) -> int:
    """``prunestudio tui`` with ``argv`` (default ``sys.argv[1:]``): parse, run, return the
    exit code — :func:`prunestudio.commands.tui.main`."""
    from prunestudio.commands.tui import main as tui_main

    return tui_main(argv)
