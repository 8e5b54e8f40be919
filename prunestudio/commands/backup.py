"""`prunestudio backup STORE DEST`: one consistent copy of a store, while studies write."""

from __future__ import annotations

import argparse

from prunestudio.commands.exit_codes import EXIT_OK

NAME = "backup"
HELP = "copy a store into one consistent file, while studies run"
DESCRIPTION = ("Copy STORE to DEST through SQLite's online backup API: one self-contained "
               "file (no -wal / -shm beside it) holding every committed result, consistent even while "
               "studies write. DEST must not exist.")
OPTIONS = ("lock_timeout",)


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", metavar="STORE", help="the store to copy")
    p.add_argument("dest", metavar="DEST", help="the new file (refused if it exists)")


def handle(args: argparse.Namespace) -> int:
    from prunestudio.store import backup_store

    info = backup_store(args.source, args.dest, timeout=args.lock_timeout)
    print(f"backed up {args.source} to {args.dest}: {info}")
    return EXIT_OK
