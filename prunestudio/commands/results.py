"""What `run` and `prune` print when a study ends, and the exit code it earns."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from prunestudio.commands.exit_codes import EXIT_CANDIDATES_FAILED, EXIT_FAILED, EXIT_OK
from prunestudio.schema import SEARCH_KINDS


def failed_candidates(store, study_id: int) -> list[dict[str, Any]]:
    """The failures that make a finished study's exit code 3: every failed candidate of a grid
    study; of a search, its failed baselines (a proposed metric that fails is part of a search,
    recorded and shown, not an error of the run)."""
    study = store.get_study(study_id)
    failed = store.candidates(study_id, status="failed")
    if study["kind"] in SEARCH_KINDS:
        failed = [c for c in failed if c["origin"] == "baseline"]
    return failed


def finish_study(args: argparse.Namespace, study_id: int, status: str) -> int:
    """Print the study (a table, or --json) and return its exit code: 0 finished or cancelled,
    1 failed, 3 finished with failed candidates (named on stderr)."""
    from prunestudio.engine.report import print_study, study_payload
    from prunestudio.store import open_store

    with open_store(args.store, readonly=True, timeout=args.lock_timeout) as store:
        if args.json:
            print(json.dumps(study_payload(store, study_id), indent=2))
        else:
            print_study(store, study_id)
            print(f"\nstore: {args.store} — `prunestudio show {study_id} --store {args.store}`")
        failed = failed_candidates(store, study_id) if status == "finished" else []
    if status not in ("finished", "cancelled"):
        return EXIT_FAILED
    if failed:
        ids = ", ".join(str(c["id"]) for c in failed[:10]) + (" …" if len(failed) > 10 else "")
        print(f"prunestudio {args.command}: {len(failed)} candidate(s) failed (ids {ids}); "
              f"their errors: `prunestudio show {study_id} --store {args.store}` (exit code 3)",
              file=sys.stderr)
        return EXIT_CANDIDATES_FAILED
    return EXIT_OK
