"""`prunestudio export CANDIDATE DIR`: a recorded candidate's pruned model, saved with
save_pretrained (written beside DIR, renamed into place)."""

from __future__ import annotations

import argparse
import sys

from prunestudio.commands import options
from prunestudio.commands.exit_codes import EXIT_FAILED, EXIT_OK

NAME = "export"
HELP = "save a candidate's pruned model with save_pretrained"
DESCRIPTION = ("Re-prune CANDIDATE from its recorded spec on a fresh load of its study's "
               "model (refused if the model's fingerprint differs from the recorded one) and write it "
               "to DIR (loadable with from_pretrained). The export is written beside DIR and renamed "
               "into place; DIR may not hold the store, the source model or the current directory.")
OPTIONS = ("allow_changed_inputs", "device", "dtype", "store", "lock_timeout")


def arguments(p: argparse.ArgumentParser) -> None:
    options.candidate_id(p)
    p.add_argument("directory", metavar="DIR")
    p.add_argument("--verify", action="store_true",
                   help="reload DIR with from_pretrained and compare its perplexity with the "
                   "recorded one (exit 1 on a mismatch, or when there is none recorded)")
    p.add_argument("--force", action="store_true",
                   help="replace a previous export in DIR (refused if DIR holds any file an "
                   "export did not write)")


def handle(args: argparse.Namespace) -> int:
    from prunestudio.engine.candidate_jobs import (
        protected_paths,
        recorded_candidate,
        recorded_config,
        reprune,
    )
    from prunestudio.engine.evaluate.perplexity import perplexity
    from prunestudio.engine.export import check_export_target, write_export
    from prunestudio.engine.models.loading import load_model
    from prunestudio.engine.progress import RichReporter
    from prunestudio.engine.structured.export import export_pruned
    from prunestudio.schema.study_file import ConfigError
    from prunestudio.store import open_store

    cand, study = recorded_candidate(args.store, args.candidate, "export",
                                     lock_timeout=args.lock_timeout)
    target = check_export_target(args.directory, force=args.force,
                                 protected=protected_paths(args.store, study))
    verify_against = None
    if args.verify:  # decided before minutes of work: is there a recorded figure to compare?
        role = (study["config"].get("evaluation") or [{}])[0].get("role")
        verify_against = next((m for m in cand["metrics"] if m["name"] == "ppl"
                               and m["role"] == role and "reused_from" not in (m["protocol"] or {})),
                              None)
        if verify_against is None:
            raise ConfigError(
                f"--verify: candidate {cand['id']} ({cand['status']}) has no recorded {role!r} "
                "perplexity to compare the export with (a pending, skipped or search-only "
                "candidate); export it without --verify, or run `prunestudio show` to pick a "
                "measured one")
    reporter = RichReporter()
    config = options.ModelChoice.from_args(args).apply(recorded_config(study))
    ctx, spec, lm, result, structured = reprune(args, cand, study, config, reporter, "export")
    card = {"candidate": cand["id"], "study": study["name"], "spec": cand["spec"],
            "model": study["model"], "model_fingerprint": ctx.lm.fingerprint,
            "metrics": cand["metrics"]}
    if result is not None:
        card["realised_sparsity"] = result.overall_sparsity
    if structured is not None:
        card["structured"] = structured.to_dict()
    info = write_export(target, lambda tmp: export_pruned(lm.model, lm.tokenizer, tmp, card=card,
                                                          final_path=target.path))
    out = target.path
    with open_store(args.store, timeout=args.lock_timeout) as store:
        store.add_artifact(cand["id"], kind="model", path=str(out), bytes=info.nbytes)
    what = (f"sparsity {result.overall_sparsity:.4f}" if result is not None
            else f"{structured.param_ratio:.1%} of parameters removed")
    replacing = " replacing the previous export" if target.replaces_previous else ""
    print(f"exported candidate {cand['id']} ({spec.label}, {what}) to {out} "
          f"({info.nbytes / 2**20:.1f} MiB){replacing}; load it with:\n{info.how_to_load}")
    if verify_against is not None:
        reloaded = load_model(str(out), device=str(ctx.lm.device), dtype=args.dtype or "auto")
        ev = next(e for e in ctx.evaluations if e.role == verify_against["role"])
        got = perplexity(reloaded.model, ev.windows, reloaded.device, ev.batch_size).ppl
        recorded = float(verify_against["value"])
        print(f"verify: reloaded {ev.role} PPL {got:.3f}, recorded {recorded:.3f}")
        if abs(got - recorded) > 1e-3 * recorded:
            print("verify: MISMATCH between exported and recorded perplexity", file=sys.stderr)
            return EXIT_FAILED
    return EXIT_OK
