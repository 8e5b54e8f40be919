"""`prunestudio` — one console script, one subcommand per job.

Each subcommand is a module of :mod:`prunestudio.commands` that owns its parser and its
handler; this module only assembles them and turns what a handler raises into an exit code
and one line on stderr. Parsers import nothing heavy: `prunestudio tui` and `prunestudio
studies` never load torch.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from prunestudio.commands import COMMANDS, options
from prunestudio.commands.exit_codes import (  # noqa: F401 (re-exported)
    EXIT_CANDIDATES_FAILED,
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="prunestudio",
        description="Prune large language models; every candidate is recorded in SQLite.",
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in COMMANDS:
        options.add_command(sub, command)
    return parser


def _version() -> str:
    from prunestudio import __version__

    return f"prunestudio {__version__}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "handler", None):
        parser.print_help()
        return EXIT_USAGE
    if getattr(args, "store", "unset") is None:
        from prunestudio.schema import default_store_path

        args.store = str(default_store_path())
    if getattr(args, "quiet", False):  # before a handler imports the libraries it silences
        from prunestudio.engine.quiet import quiet_environment

        quiet_environment()
    from prunestudio.store import StoreError

    try:
        return int(args.handler(args) or 0)
    except BrokenPipeError:  # `prunestudio show 1 --json | head`
        sys.stderr.close()
        return EXIT_OK
    except (ValueError, StoreError, OSError) as exc:
        # Bad input (config, model, spec, store, paths...): the message names what is wrong
        # and what is allowed.
        if os.environ.get("PRUNESTUDIO_DEBUG"):
            raise
        print(f"prunestudio {args.command}: error: {_message(exc)}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt as exc:
        hint = getattr(exc, "hint", None)
        print(f"prunestudio {args.command}: {hint or 'interrupted'}", file=sys.stderr)
        return int(getattr(exc, "exit_code", 130))


def _message(exc: BaseException) -> str:
    """An OSError names its path and cause (`[Errno 28]` alone says little)."""
    if isinstance(exc, OSError) and exc.strerror and not isinstance(exc, FileNotFoundError):
        where = f" {exc.filename}" if exc.filename else ""
        return f"{exc.strerror}{where}"
    return str(exc)


if __name__ == "__main__":  # pragma: no cover
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    sys.exit(main())
