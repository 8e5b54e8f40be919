"""The `prunestudio` subcommands, one module each.

A command module has `NAME`, `HELP`, optional `DESCRIPTION`, optional `arguments(p)` (its own
arguments), `OPTIONS` (names of the shared option builders in
:mod:`prunestudio.commands.options`, each option defined once there) and `handle(args) -> exit
code`; :func:`prunestudio.commands.options.add_command` builds its parser. Handlers import the engine (torch) when they run, never at
import time, so `prunestudio --help`, `studies`, `show` and `tui` stay torch-free.
"""

from prunestudio.commands import (
    backup,
    bench,
    export,
    methods,
    prune,
    recover,
    run,
    show,
    studies,
    tui,
    web,
)
from prunestudio.commands import eval as eval_command

# in the order `prunestudio --help` lists them
COMMANDS = (run, prune, studies, show, export, eval_command, recover, bench, backup, methods, tui,
            web)

__all__ = ["COMMANDS"]
