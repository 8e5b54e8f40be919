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
    return f"{kind}-b{args.budget}-p{args.population}{seeded}-s{seed}"


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
        },
    }


def wanda_config(args: argparse.Namespace) -> dict[str, Any]:
    sets = heldout_sets(args) + [{"role": "search_split", "fidelity": "proxy",
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


def _ppl(cand: dict[str, Any], role: str) -> float | None:
    return next((m["value"] for m in cand["metrics"] if m["name"] == "ppl" and m["role"] == role),
                None)


def table(store_path: str, args: argparse.Namespace) -> str:
    from prunestudio.engine.report import search_summary
    from prunestudio.store import StoreError, open_store

    lines = ["| kind | seed | real evals | reused (saved) | failed | candidates | best metric "
             "(by search PPL) | search PPL | held-out PPL | evals/min |",
             "| --- | ---: | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: |"]
    per_kind: dict[str, list[tuple[float, float | None]]] = {}
    reused = evaluated = 0
    minutes = 0.0
    with open_store(store_path, readonly=True) as store:
        for kind in args.kinds:
            for seed in args.seeds:
                try:
                    study = store.get_study(study_name(kind, seed, args))
                except StoreError:
                    continue
                cands = store.candidates(study["id"], with_metrics=True)
                s = search_summary(study, cands)
                best = s["best"]
                held = None
                if best:
                    held = _ppl(next(c for c in cands if c["id"] == best["id"]), "in_domain")
                    per_kind.setdefault(kind, []).append((best["search_ppl"], held))
                reused += s["reused"]
                evaluated += s["evaluated"]
                minutes += s["candidate_minutes"]
                status = "" if study["status"] == "finished" else f" ({study['status']})"
                lines.append(
                    f"| {kind}{status} | {seed} | {s['evaluated']} | {s['reused']} "
                    f"({s['saved_fraction']:.0%}) | {s['failed']} | {s['candidates']} | "
                    f"`{best['expression'] if best else '—'}` | "
                    f"{best['search_ppl']:.2f} | {'—' if held is None else f'{held:.2f}'} | "
                    f"{s['evaluations_per_minute']:.2f} |" if best else
                    f"| {kind}{status} | {seed} | {s['evaluated']} | {s['reused']} | "
                    f"{s['failed']} | {s['candidates']} | — | — | — | — |")
        wanda = {}
        try:
            ref = store.get_study(f"wanda-ref-h{args.heldout_n}-o{args.ood_n}")
            for c in store.candidates(ref["id"], with_metrics=True):
                mode = c["spec"]["calibration"]["mode"]
                wanda[mode] = (_ppl(c, "search_split"), _ppl(c, "in_domain"))
        except StoreError:
            pass
    out = ["\n".join(lines), ""]
    for kind, rows in per_kind.items():
        search = statistics.median(r[0] for r in rows)
        held = [r[1] for r in rows if r[1] is not None]
        out.append(f"- {kind}: median best search PPL {search:.2f}, median held-out PPL of the "
                   f"bests {statistics.median(held):.2f} (best held-out {min(held):.2f})"
                   if held else f"- {kind}: median best search PPL {search:.2f}")
    for mode, (search, held) in sorted(wanda.items()):
        out.append(f"- Wanda 50 % ({mode} calibration): search PPL "
                   f"{'—' if search is None else f'{search:.2f}'}, held-out PPL "
                   f"{'—' if held is None else f'{held:.2f}'}")
    total = evaluated + reused
    if total:
        out.append(f"- mask equivalence: {reused} of {total} fitness values reused "
                   f"({reused / total:.1%} of evaluations saved)")
    if minutes:
        out.append(f"- {evaluated} real evaluations in {minutes:.1f} min of candidate time: "
                   f"{evaluated / minutes:.2f} real evaluations per minute")
    out.append(f"- held-out = pydoc tokens [40000, {40000 + 256 * args.heldout_n}), "
               f"{args.heldout_n} × 256; search split = pydoc {args.split_n} × "
               f"{args.split_seqlen} from token 20000; calibration = pydoc 16 × 128 from 0; "
               "model = " + ("SmolLM2-135M-Instruct (Q4_1 GGUF, dequantized)"
                             if args.model == "default" else args.model)
               + "; 50 % unstructured")
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
    p.add_argument("--table-only", action="store_true")
    p.add_argument("--quiet", action="store_true")
    args = p.parse_args(argv)
    args.seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
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
