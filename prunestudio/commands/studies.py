"""`prunestudio studies`: the studies in a store, with their progress."""

from __future__ import annotations

import argparse
import json

from prunestudio.commands.exit_codes import EXIT_OK

NAME = "studies"
HELP = "list the studies in a store"
DESCRIPTION = ("The studies in a store. A 'running' study whose runner stopped beating "
               "(killed, machine lost) shows as 'stale', with the command that resumes it (--json: "
               "\"stale\": true, the stored \"status\" kept as it is).")
OPTIONS = ("store", "lock_timeout", "json_output")


def handle(args: argparse.Namespace) -> int:
    import shlex

    from prunestudio.engine.report import print_studies
    from prunestudio.store import STALE_AFTER, open_store, queries

    with open_store(args.store, readonly=True, timeout=args.lock_timeout) as store:
        studies = queries.list_studies(store)
        if args.json:
            print(json.dumps(studies, indent=2))
            return EXIT_OK
        print_studies(store)
        for s in studies:
            if s.get("stale"):
                print(f"{s['name']} is stale: status 'running' but no runner heartbeat in the "
                      f"last {STALE_AFTER:.0f} s (its process was killed or its machine lost); "
                      f"resume it with: prunestudio run --resume {shlex.quote(s['name'])} "
                      f"--store {shlex.quote(str(store.path))}")
    return EXIT_OK
