"""`prunestudio show STUDY`: a study's candidates and their measurements."""

from __future__ import annotations

import argparse
import json

from prunestudio.commands.exit_codes import EXIT_OK

NAME = "show"
HELP = "a study's results, sorted by held-out perplexity"
DESCRIPTION = ("A study's candidates with their perplexities. For gp / random searches: "
               "expression, generation, origin, search-split PPL (proxy) beside held-out PPL (full) "
               "of the finalists, and how many evaluations mask equivalence saved.")
OPTIONS = ("store", "lock_timeout", "json_output")


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("study", metavar="STUDY", help="study id or name")
    p.add_argument("--sort", default=None, metavar="ROLE",
                   help="sort by the PPL of this evaluation role (default: the first one; "
                   "searches: the search split)")
    p.add_argument("--limit", type=int, default=25, metavar="N",
                   help="searches: show the N best candidates by search PPL, plus baselines "
                   "and finalists (0: all)")


def handle(args: argparse.Namespace) -> int:
    from prunestudio.engine.report import print_study, study_payload
    from prunestudio.store import open_store

    with open_store(args.store, readonly=True, timeout=args.lock_timeout) as store:
        if args.json:
            print(json.dumps(study_payload(store, args.study), indent=2))
        else:
            print_study(store, args.study, args.sort, limit=args.limit)
    return EXIT_OK
