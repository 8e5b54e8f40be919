#!/usr/bin/env python
"""GP vs random search over symbolic metrics on the embedded default model, same budget.

For every kind (gp, random) and seed, one study in one store: the same initial population, the
same budget of *real* fitness evaluations (mask-equivalent candidates reuse a fitness and cost
nothing), fitness = PPL on a search split of pydoc, the best metric re-evaluated on held-out
pydoc text (tokens [40000, 40000 + 256·n), used neither for calibration [0, 2048) nor for
fitness). Wanda at 50 % is measured once on the same texts, with the papers' sequential
calibration and with the search's dense calibration. The table goes to stdout (markdown).

Restartable: finished studies are skipped, interrupted ones resumed (`--resume` semantics), so
the protocol can be run piecewise. The full protocol of the issue:

    .venv/bin/python scripts/gp_vs_random.py --budget 120 --seeds 0,1,2 --store runs/gp_vs_random.db

`--table-only` prints the table of what the store holds without running anything.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import sys
import time
from typing import Any

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

CALIBRATION = {"source": "pydoc", "split": "all", "seqlen": 128, "n": 16, "offset": 0}


def heldout_sets(args: argparse.Namespace) -> list[dict[str, Any]]:
    sets = [{"role": "in_domain", "windows": {"source": "pydoc", "split": "all", "seqlen": 256,
                                              "n": args.heldout_n, "offset": 40000}}]
    if args.ood_n:
        sets.append({"role": "out_of_domain",
                     "windows": {"source": "shakespeare", "split": "hamlet", "seqlen": 256,
                                 "n": args.ood_n}})
    return sets


def search_split(args: argparse.Namespace) -> dict[str, Any]:
    return {"source": "pydoc", "split": "all", "seqlen": args.split_seqlen, "n": args.split_n,
            "offset": 20000}


def study_name(kind: str, seed: int, args: argparse.Namespace) -> str:
    seeded = "-seeded" if args.seed_metrics else ""
    space = "" if args.leaves == ["W", "G", "X"] and not args.constants else (
        "-" + "".join(args.leaves) + ("c" if args.constants else ""))
    space += "-bk" if args.allocation == "by_kind" else ""
    return f"{kind}-b{args.budget}-p{args.population}{seeded}{space}-s{seed}"


def search_config(kind: str, seed: int, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "study": {"name": study_name(kind, seed, args), "kind": kind, "seed": seed},
        "model": {"source": args.model},
        "calibration": CALIBRATION,
        "evaluation": heldout_sets(args),
        "search": {
            "population": args.population, "iterations": 100_000, "offspring": 2,
            "budget": args.budget, "top_k": args.top_k, "tournament_size": args.tournament,
            "p_mutation": 0.5, "init_depth": [3, 5], "max_depth": 7,
            "seed_metrics": args.seed_metrics, "sparsity": 0.5, "calibration": "dense",
            "split": search_split(args), "finalists": 1, "baselines": [],
            "leaves": args.leaves, "constants": args.constants,
            "allocation": {"mode": args.allocation},
        },
    }


def wanda_config(args: argparse.Namespace) -> dict[str, Any]:
    sets = heldout_sets(args) + [{"role": "fitness_text", "fidelity": "proxy",
                                  "windows": search_split(args)}]
    return {
        "study": {"name": f"wanda-ref-h{args.heldout_n}-o{args.ood_n}", "kind": "grid"},
        "model": {"source": args.model},
        "calibration": CALIBRATION,
        "evaluation": sets,
        "grid": {"methods": [], "include_dense": False},
        "candidates": [
            {"method": "wanda", "sparsity": 0.5},
            {"method": "wanda", "sparsity": 0.5, "calibration": {"mode": "dense"}},
            {"method": "wanda", "sparsity": 0.5, "layer_ratios": "owl"},
            {"method": "sparsegpt", "sparsity": 0.5},
        ],
    }


def run(config_data: dict[str, Any], store_path: str, lm, quiet: bool) -> None:
    from prunestudio.engine.progress import Reporter, RichReporter
    from prunestudio.engine.runner import launch_study
    from prunestudio.store import StoreError, open_store

    from prunestudio.schema.study_file import parse_config

    name = config_data["study"]["name"]
    reporter = Reporter() if quiet else RichReporter()
    try:
        with open_store(store_path) as store:
            study = store.get_study(name)
    except StoreError:
        study = None
    if study is not None and study["status"] == "finished":
        print(f"# {name}: finished, kept", file=sys.stderr)
        return
    t0 = time.time()
    if study is None:
        launch_study(parse_config(config_data, f"({name})"), store_path, reporter=reporter, lm=lm)
    else:
        launch_study(None, store_path, resume=name, reporter=reporter, lm=lm)
    print(f"# {name}: {time.time() - t0:.0f}s", file=sys.stderr)


def _metric(cand: dict[str, Any], role: str) -> dict[str, Any] | None:
    return next((m for m in cand["metrics"] if m["name"] == "ppl" and m["role"] == role), None)


def _ppl(cand: dict[str, Any], role: str) -> float | None:
    m = _metric(cand, role)
    return None if m is None else m["value"]


def _windows(cand: dict[str, Any] | None, role: str) -> list[float] | None:
    m = _metric(cand, role) if cand else None
    return None if m is None else (m.get("protocol") or {}).get("window_mean_nll")


def _vs(cand: dict[str, Any], ref: dict[str, Any] | None, role: str) -> str:
    """PPL ratio to the reference on the same windows and the paired noise: ``0.97× (−2.1 SE)``
    — the difference in log PPL over its paired standard error."""
    from prunestudio.engine.evaluate.perplexity import paired_log_se

    a, b = _windows(cand, role), _windows(ref, role)
    if not a or not b or len(a) != len(b):
        return "—"
    diff = statistics.fmean(a) - statistics.fmean(b)
    se = paired_log_se(a, b)
    return f"{math.exp(diff):.3f}× ({diff / se:+.1f} SE)" if se else f"{math.exp(diff):.3f}×"


def _study_minutes(store, study_id: int) -> float:
    """Wall-clock of a study: first start to last finish of its candidates (minutes)."""
    cands = store.candidates(study_id)
    starts = [c["started_at"] for c in cands if c.get("started_at")]
    ends = [c["finished_at"] for c in cands if c.get("finished_at")]
    return (max(ends) - min(starts)) / 60 if starts and ends else 0.0


def _pm(cand: dict[str, Any], role: str) -> str:
    m = _metric(cand, role)
    if m is None:
        return "—"
    se = (m.get("protocol") or {}).get("ppl_se")
    return f"{m['value']:.2f}" + (f" ± {se:.2f}" if se else "")


def table(store_path: str, args: argparse.Namespace) -> str:
    from prunestudio.engine.report import search_summary
    from prunestudio.store import StoreError, open_store

    from prunestudio.schema.labels import spec_label

    lines = ["| kind | seed | real evals | reused (saved) | failed | wall-clock (min) | best "
             "genome (noise-aware rank) | search PPL | held-out PPL in-domain | vs Wanda | "
             "out-of-domain | vs Wanda |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: | ---: |"]
    per_kind: dict[str, list[tuple[float, float | None, float | None]]] = {}
    reused = evaluated = 0
    minutes = 0.0
    with open_store(store_path, readonly=True) as store:
        refs, wanda = [], None
        try:
            ref_study = store.get_study(f"wanda-ref-h{args.heldout_n}-o{args.ood_n}")
            for c in store.candidates(ref_study["id"], with_metrics=True):
                refs.append(c)
                if spec_label(c["spec"]) == "wanda 50%":
                    wanda = c
        except StoreError:
            pass
        for kind in args.kinds:
            for seed in args.seeds:
                try:
                    study = store.get_study(study_name(kind, seed, args))
                except StoreError:
                    continue
                cands = store.candidates(study["id"], with_metrics=True)
                s = search_summary(study, cands)
                best = s["best"]
                reused += s["reused"]
                evaluated += s["evaluated"]
                minutes += s["candidate_minutes"]
                wall = _study_minutes(store, study["id"])
                status = "" if study["status"] == "finished" else f" ({study['status']})"
                head = (f"| {kind}{status} | {seed} | {s['evaluated']} | {s['reused']} "
                        f"({s['saved_fraction']:.0%}) | {s['failed']} | {wall:.1f} | ")
                if not best:
                    lines.append(head + "— | — | — | — | — | — |")
                    continue
                cand = next(c for c in cands if c["id"] == best["id"])
                held, ood = _ppl(cand, "in_domain"), _ppl(cand, "out_of_domain")
                per_kind.setdefault(kind, []).append((best["search_ppl"], held, ood))
                label = spec_label(cand["spec"]).removeprefix("symbolic ")
                lines.append(head + f"`{label}` | {best['search_ppl']:.2f} | "
                             f"{_pm(cand, 'in_domain')} | {_vs(cand, wanda, 'in_domain')} | "
                             f"{_pm(cand, 'out_of_domain')} | "
                             f"{_vs(cand, wanda, 'out_of_domain')} |")
    out = ["\n".join(lines), ""]
    wanda_in = _ppl(wanda, "in_domain") if wanda else None
    for kind, rows in per_kind.items():
        search = statistics.median(r[0] for r in rows)
        held = [r[1] for r in rows if r[1] is not None]
        ood = [r[2] for r in rows if r[2] is not None]
        med = statistics.median(held) if held else None
        out.append(f"- {kind}: median best search PPL {search:.2f}"
                   + (f", median held-out PPL in-domain {med:.2f}" if med else "")
                   + (f" ({med / wanda_in:.3f} × Wanda's)" if med and wanda_in else "")
                   + (f", out-of-domain {statistics.median(ood):.2f}" if ood else ""))
    for c in refs:
        out.append(f"- {spec_label(c['spec'])}: search PPL {_pm(c, 'fitness_text')}, held-out "
                   f"PPL in-domain {_pm(c, 'in_domain')}, out-of-domain "
                   f"{_pm(c, 'out_of_domain')}")
    total = evaluated + reused
    if total:
        out.append(f"- mask equivalence: {reused} of {total} fitness values reused "
                   f"({reused / total:.1%} of evaluations saved)")
    if minutes:
        out.append(f"- {evaluated} real evaluations in {minutes:.1f} min of candidate time: "
                   f"{evaluated / minutes:.2f} real evaluations per minute")
    out.append("- vs Wanda: PPL ratio to Wanda 50 % (sequential calibration) on the same "
               "windows, and the difference in log PPL over its paired standard error")
    out.append(f"- held-out = pydoc tokens [40000, {40000 + 256 * args.heldout_n}), "
               f"{args.heldout_n} × 256"
               + (f"; out-of-domain = Hamlet, {args.ood_n} × 256" if args.ood_n else "")
               + f"; search split = pydoc {args.split_n} × {args.split_seqlen} from token "
               "20000; calibration = pydoc 16 × 128 from 0; model = "
               + ("SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized)"
                  if args.model == "default" else args.model)
               + f"; 50 % unstructured; leaves {','.join(args.leaves)}"
               + (" + constants" if args.constants else "")
               + ("; allocation by kind" if args.allocation == "by_kind" else ""))
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--store", default="runs/gp_vs_random.db")
    p.add_argument("--model", default="default")
    p.add_argument("--budget", type=int, default=120, help="real evaluations per study")
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--kinds", default="gp,random")
    p.add_argument("--population", type=int, default=50)
    p.add_argument("--top-k", type=int, default=10)
    p.add_argument("--tournament", type=int, default=3)
    p.add_argument("--seed-metrics", default="", help="';'-separated known metrics / "
                   "expressions added to every initial population (default: none)")
    p.add_argument("--split-n", type=int, default=4)
    p.add_argument("--split-seqlen", type=int, default=256)
    p.add_argument("--heldout-n", type=int, default=32)
    p.add_argument("--ood-n", type=int, default=0, help="Hamlet windows (0: none)")
    p.add_argument("--leaves", default="W,G,X", help="terminals (W,G,X the paper's; D too)")
    p.add_argument("--constants", action="store_true", help="constants as terminals too")
    p.add_argument("--allocation", default="uniform", choices=["uniform", "by_kind"],
                   help="by_kind: per-layer-kind sparsity offsets in the genome")
    p.add_argument("--table-only", action="store_true")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    args.leaves = [x.strip() for x in args.leaves.split(",") if x.strip()]
    args.kinds = [k.strip() for k in args.kinds.split(",") if k.strip()]
    args.seed_metrics = [m.strip() for m in args.seed_metrics.split(";") if m.strip()]
    if not args.table_only:
        from prunestudio.engine.models.loading import load_model

        lm = load_model(args.model)
        run(wanda_config(args), args.store, lm, args.quiet)
        for seed in args.seeds:  # interleaved, so a partial run compares like with like
            for kind in args.kinds:
                run(search_config(kind, seed, args), args.store, lm, args.quiet)
    print(table(args.store, args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
