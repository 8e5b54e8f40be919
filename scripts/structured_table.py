#!/usr/bin/env python
"""Structured pruning on the embedded default: one row per importance criterion, plus dense.

    .venv/bin/python scripts/structured_table.py                 # ~20% of parameters removed
    .venv/bin/python scripts/structured_table.py --criteria taylor_first,l2 --task-limit 100

Protocol (printed with the table): LLM-Pruner style, blocks [block_start, block_end) pruned
(default 4 .. n−2: the first four and the last two blocks kept), `--ratio` a fraction of all
parameters (the group ratios that achieve it are printed); importance from 10 × 64 calibration
tokens of pydoc in tokens [0, 40000) (LLM-Pruner: 10 × 64 BookCorpus); held-out perplexity on
pydoc, 32 windows of 256 tokens from token 40000; offline accuracy = lm-eval's
`shakespeare_next_line` (acc, 4 choices, first `--task-limit` items); latency = median of 5
forwards of one 256-token sequence on this machine's CPU.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # shared cores: no OpenMP spin-waiting
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CRITERIA = ("l1", "l2", "taylor_vector", "taylor_first", "taylor_second", "taylor_mix",
            "activation", "random")


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default")
    p.add_argument("--ratio", type=float, default=0.2, help="fraction of all parameters")
    p.add_argument("--criteria", default=",".join(CRITERIA))
    p.add_argument("--aggregation", default="sum")
    p.add_argument("--block-start", type=int, default=4)
    p.add_argument("--block-end", type=int, default=-2)
    p.add_argument("--calib-n", type=int, default=10)
    p.add_argument("--calib-seqlen", type=int, default=64)
    p.add_argument("--eval-n", type=int, default=32)
    p.add_argument("--eval-seqlen", type=int, default=256)
    p.add_argument("--eval-offset", type=int, default=40000)
    p.add_argument("--task-limit", type=int, default=200)
    p.add_argument("--latency-seqlen", type=int, default=256)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--json", help="also write the rows here")
    p.add_argument("--latency-only", action="store_true",
                   help="only time dense against the first criterion's pruned model, "
                        "interleaved (--rounds × 5 forwards each): steadier on a shared CPU")
    p.add_argument("--rounds", type=int, default=5)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    import torch

    torch.set_num_threads(args.threads)
    from prunestudio.engine.calibration import StatsCache, calibration_hash
    from prunestudio.engine.data.windows import WindowSpec, build_windows
    from prunestudio.engine.evaluate.efficiency import measure_latency, parameter_counts
    from prunestudio.engine.evaluate.harness import evaluate_tasks
    from prunestudio.engine.evaluate.perplexity import perplexity
    from prunestudio.engine.models.loading import load_model
    from prunestudio.engine.structured import prune_structured

    lm = load_model(args.model)
    calib = build_windows(WindowSpec(source="pydoc", seqlen=args.calib_seqlen, n=args.calib_n,
                                     selection="random", end=args.eval_offset, seed=0),
                          lm.tokenizer)
    evalw = build_windows(WindowSpec(source="pydoc", seqlen=args.eval_seqlen, n=args.eval_n,
                                     offset=args.eval_offset), lm.tokenizer)
    stats = StatsCache(lm, calib.ids, calibration_hash(calib.ids, calib.tokens_hash))

    def measure(model, label: str, info=None) -> dict:
        t0 = time.perf_counter()
        ppl = perplexity(model, evalw, lm.device, batch_size=4).ppl
        (acc,) = evaluate_tasks(model, lm.tokenizer, "offline", limit=args.task_limit,
                                batch_size=16)
        lat = measure_latency(model, batch=1, seqlen=args.latency_seqlen, repeats=5)
        row = {"criterion": label, "ppl": ppl, "acc": acc.metrics["acc"],
               "acc_norm": acc.metrics["acc_norm"], "acc_stderr": acc.stderr.get("acc"),
               "params": parameter_counts(model, lm.adapter).total,
               "latency_ms": lat.latency_s * 1e3, "tokens_per_s": lat.tokens_per_s}
        if info is not None:
            row.update(param_ratio=info.param_ratio, att_ratio=info.attention_group_ratio,
                       mlp_ratio=info.mlp_group_ratio, prune_s=sum(info.seconds.values()))
        row["eval_s"] = time.perf_counter() - t0
        print(json.dumps(row), file=sys.stderr, flush=True)
        return row

    if args.latency_only:
        return _latency_only(args, lm, stats, measure_latency)
    rows = [measure(lm.model, "dense")]
    for crit in args.criteria.split(","):
        pruned, info = prune_structured(lm, _spec(args, crit), stats)
        rows.append(measure(pruned.model, crit, info))
        del pruned

    n_blocks = lm.adapter.num_blocks(lm.model)
    end = args.block_end + n_blocks if args.block_end < 0 else args.block_end
    print(f"model: {lm.description}; {n_blocks} blocks; pruned blocks [{args.block_start}, "
          f"{end}); target {args.ratio:.0%} of all parameters; aggregation {args.aggregation}")
    print(f"calibration: pydoc {args.calib_n} × {args.calib_seqlen} random windows in tokens "
          f"[0, {args.eval_offset}); PPL: pydoc {args.eval_n} × {args.eval_seqlen} from token "
          f"{args.eval_offset}; accuracy: shakespeare_next_line, first {args.task_limit} items, "
          f"4 choices (chance 25%); latency: batch 1 × {args.latency_seqlen}, median of 5, "
          f"CPU {torch.get_num_threads()} threads (shared machine)")
    head = (f"| {'criterion':<14} | {'params':>8} | {'removed':>7} | {'heads/MLP removed':>17} "
            f"| {'PPL':>10} | {'acc':>5} | {'acc_norm':>8} | {'latency ms':>10} |")
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for r in rows:
        removed = f"{r['param_ratio']:.1%}" if "param_ratio" in r else "—"
        groups = (f"{r['att_ratio']:.0%} / {r['mlp_ratio']:.1%}" if "att_ratio" in r else "—")
        print(f"| {r['criterion']:<14} | {r['params'] / 1e6:>7.1f}M | {removed:>7} | "
              f"{groups:>17} | {r['ppl']:>8.2f} | {r['acc']:>5.3f} | {r['acc_norm']:>8.3f} | "
              f"{r['latency_ms']:>10.0f} |")
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=2)
    return 0


def _spec(args, criterion: str):
    from prunestudio.schema.spec import CandidateSpec

    return CandidateSpec(method="structured", sparsity=args.ratio, options={
        "importance": criterion, "aggregation": args.aggregation,
        "block_start": args.block_start, "block_end": args.block_end})


def _latency_only(args, lm, stats, measure_latency) -> int:
    import statistics

    from prunestudio.engine.structured import prune_structured

    pruned, info = prune_structured(lm, _spec(args, args.criteria.split(",")[0]), stats)
    times: dict[str, list[float]] = {"dense": [], "pruned": []}
    for _ in range(args.rounds):
        for name, model in (("dense", lm.model), ("pruned", pruned.model)):
            t = measure_latency(model, batch=1, seqlen=args.latency_seqlen, repeats=5)
            times[name].append(t.latency_s * 1e3)
    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"latency, batch 1 × {args.latency_seqlen}, median of {args.rounds} interleaved rounds "
          f"× 5 forwards: dense {med['dense']:.0f} ms, pruned ({info.param_ratio:.1%} of "
          f"parameters removed) {med['pruned']:.0f} ms, speed-up "
          f"{med['dense'] / med['pruned']:.2f}×; rounds: {times}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
