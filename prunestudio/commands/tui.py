"""`prunestudio tui [STORE]`: watch and steer studies live in the terminal.

The TUI's flags are defined here once; `python -m prunestudio.tui` and
`prunestudio.tui.main(argv)` run this same parser and handler through `prunestudio.cli.main`,
so every entry point accepts and refuses the same input with the same exit code.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from prunestudio.commands import options

NAME = "tui"
MIN_INTERVAL = 0.1  # seconds between store polls: each poll reads only what changed


HELP = "watch and steer studies live in the terminal"
DESCRIPTION = ("Watch and steer pruning studies live in the terminal (works over SSH). "
               "Opens the store read-only; the only write is a cancel request you confirm.")


def arguments(p: argparse.ArgumentParser) -> None:
    options.store_positional(p)
    p.add_argument("--study", default=None, metavar="STUDY",
                   help="open this study (id or name) directly")
    p.add_argument("--interval", type=float, default=1.0, metavar="SECONDS",
                   help=f"seconds between store polls (default 1, at least {MIN_INTERVAL:g})")


def handle(args: argparse.Namespace) -> int:
    if not args.interval >= MIN_INTERVAL:  # NaN too
        raise ValueError(f"--interval must be at least {MIN_INTERVAL:g} seconds; got "
                         f"{args.interval:g}")
    from prunestudio.tui import run_tui

    return run_tui(args.store, study=args.study, interval=args.interval)


def main(argv: Sequence[str] | None = None) -> int:
    """`python -m prunestudio.tui [STORE] [--study S] [--interval SECONDS]`: the same as
    `prunestudio tui ...` (argv in, exit code out; --help exits through SystemExit)."""
    from prunestudio.cli import main as cli_main

    return cli_main([NAME, *(sys.argv[1:] if argv is None else argv)])
