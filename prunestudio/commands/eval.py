"""`prunestudio eval CANDIDATE`: task accuracy (lm-eval) of a recorded candidate, re-pruned in
memory from its spec; the results join the candidate's metrics."""

from __future__ import annotations

import argparse
import json

from prunestudio.commands import options
from prunestudio.commands.exit_codes import EXIT_OK

NAME = "eval"
HELP = "task accuracy (lm-eval) of a recorded candidate"
DESCRIPTION = ("Re-prune CANDIDATE from its spec in memory and evaluate it with lm-eval; "
               "results are added to the candidate's metrics. Tasks: offline (shakespeare_next_line, "
               "no internet), zero_shot (boolq, piqa, hellaswag, winogrande, arc_easy, arc_challenge, "
               "openbookqa), mmlu, or task names, comma-separated.")
OPTIONS = ("allow_changed_inputs", "device", "dtype", "store", "lock_timeout", "json_output")


def arguments(p: argparse.ArgumentParser) -> None:
    options.candidate_id(p)
    p.add_argument("--tasks", default="offline", help="comma-separated (default: offline)")
    p.add_argument("--limit", type=float, default=None,
                   help="at most N examples per task (a proxy: recorded as fidelity 'proxy')")
    p.add_argument("--num-fewshot", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=8)


def handle(args: argparse.Namespace) -> int:
    from prunestudio.engine.candidate_jobs import recorded_candidate, recorded_config, reprune
    from prunestudio.engine.evaluate.harness import evaluate_tasks, resolve_tasks, task_metrics
    from prunestudio.engine.progress import RichReporter
    from prunestudio.store import open_store

    resolve_tasks(args.tasks)  # unknown task names fail before the model loads
    cand, study = recorded_candidate(args.store, args.candidate, "evaluate",
                                     lock_timeout=args.lock_timeout)
    reporter = RichReporter()
    config = options.ModelChoice.from_args(args).apply(recorded_config(study))
    _, spec, lm, _, _ = reprune(args, cand, study, config, reporter, "evaluate")
    reporter.message(f"lm-eval: {args.tasks} on candidate {cand['id']} ({spec.label})")
    limit = int(args.limit) if args.limit is not None and args.limit >= 1 else args.limit
    results = evaluate_tasks(lm.model, lm.tokenizer, args.tasks, limit=limit,
                             num_fewshot=args.num_fewshot, batch_size=args.batch_size)
    metrics = task_metrics(results)
    with open_store(args.store, timeout=args.lock_timeout) as store:
        store.add_metrics(cand["id"], metrics)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        for m in metrics:
            print(f"{m['dataset']:<24} {m['name']:<8} {m['value']:.4f}  (n={m['n_samples']}, "
                  f"{m['fidelity']})")
    return EXIT_OK
