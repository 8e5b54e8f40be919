"""Candidates per minute on 1 and 2 Ray workers (and in this process), measured in one run.

    .venv/bin/python scripts/workers_benchmark.py [--model default] [--candidates 16]
                                                  [--workers 1,2] [--out DIR]

The same grid study (magnitude and Wanda at evenly spaced sparsities, unstructured; 8 × 256
pydoc tokens of calibration, 8 × 256 held-out tokens of evaluation) runs through
`prunestudio run` once in one process and once per worker count. Two figures per run:

- steady: candidates / minute between the first candidate's start and the last one's end
  (what a long search sees: the model and statistics are loaded once per worker);
- end to end: candidates / minute of the whole command (model loads, Ray start-up included).

On a CPU machine each of N workers gets (CPUs / N) torch threads, so the comparison is how a
machine's cores are best spent; on a GPU machine each worker gets one GPU. The ratios are the
result: `speedup = steady(N) / steady(1 worker)`.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from prunestudio.store import open_store


def study_toml(model: str, n: int) -> str:
    half = max(1, n // 2)
    sparsities = [round(0.3 + 0.4 * i / max(1, half - 1), 3) for i in range(half)]
    return f"""
[study]
name = "bench-workers"

[model]
source = "{model}"

[calibration]
source = "pydoc"
seqlen = 256
n = 8

[[evaluation]]
role = "in_domain"
windows = {{ source = "pydoc", seqlen = 256, n = 8, offset = 40000 }}

[grid]
methods = ["magnitude", "wanda"]
sparsities = {sparsities}
patterns = ["unstructured"]
include_dense = false
"""


def run(config: Path, store: Path, workers: int | None) -> dict:
    args = [sys.executable, "-m", "prunestudio.cli", "run", str(config), "--store", str(store),
            "--quiet", "--json"]
    if workers is not None:
        args += ["--workers", str(workers)]
    t0 = time.perf_counter()
    proc = subprocess.run(args, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(args)} failed ({proc.returncode}):\n{proc.stderr}")
    with open_store(store, readonly=True) as s:
        cands = s.candidates(1)
    done = [c for c in cands if c["status"] == "done"]
    span = max(c["finished_at"] for c in done) - min(c["started_at"] for c in done)
    return {"workers": workers or "in-process", "candidates": len(done),
            "steady_per_min": 60.0 * len(done) / span, "end_to_end_per_min":
            60.0 * len(done) / wall, "wall_s": wall,
            "workers_seen": sorted({c["worker"] for c in done})}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="default")
    p.add_argument("--candidates", type=int, default=16)
    p.add_argument("--workers", default="1,2", help="worker counts, comma-separated")
    p.add_argument("--out", type=Path, default=None, help="write the results as JSON here")
    args = p.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    with tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "bench.toml"
        config.write_text(study_toml(args.model, args.candidates))
        # warm the statistics' disk cache first, so no run pays for computing them
        run(config, Path(tmp) / "warm.db", None)
        results = [run(config, Path(tmp) / "inproc.db", None)]
        for n in counts:
            results.append(run(config, Path(tmp) / f"w{n}.db", n))
    base = next((r for r in results if r["workers"] == 1), results[0])
    print(f"machine: {os.cpu_count()} CPUs; model {args.model}; {args.candidates} candidates")
    print(f"{'run':>12} {'cand.':>6} {'steady/min':>11} {'end-to-end/min':>15} {'wall s':>8} "
          f"{'speedup':>8}")
    for r in results:
        r["speedup_vs_1_worker"] = r["steady_per_min"] / base["steady_per_min"]
        print(f"{str(r['workers']):>12} {r['candidates']:>6} {r['steady_per_min']:>11.2f} "
              f"{r['end_to_end_per_min']:>15.2f} {r['wall_s']:>8.1f} "
              f"{r['speedup_vs_1_worker']:>7.2f}×")
    if args.out:
        args.out.write_text(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
