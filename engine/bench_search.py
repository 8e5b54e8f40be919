"""`prunestudio bench --search`: where a search candidate's time goes, against this machine's
floor, with the previous mask path and the current one measured in the same run.

A search candidate is what a GP / random study evaluates: a symbolic metric pruned at the
search's sparsity from dense statistics computed once, its zero pattern hashed, its fitness
measured (perplexity on the search split), the weights restored and the result recorded. The
bench runs that exact path (`run_job` of the in-process executor, the store writes of the study
loop) for a fixed, deterministic list of expressions: the published seed metrics, then random
trees of the GP's initialisation (ramped half-and-half, seed 0) until `n` of them ran (a metric
whose score is not finite fails in both paths and is skipped, as a search would record it).

Each candidate runs twice, back to back, in alternating order: with the reference mask path
(``selection="sort"``: full stable sort, ``isfinite``, ``masked_fill_`` — the previous
implementation) and with the current one (``"select"``). The zero-pattern hashes and the
fitness values of the two runs must be identical; the result says whether they were.

Phases per candidate (seconds): score (the metric and its finiteness check), select (the mask;
with the pipelined CPU path, `ScoreMethod.prune_layers`, only the wait for the selection thread:
the selection work hidden behind scoring is not charged),
apply (writing the masks, and `prune_model`'s per-layer bookkeeping), hash, evaluate (fitness
forward), restore, record (store writes), other (the rest of `run_job`: spec validation,
measurement set-up). The floor (`prunestudio.engine.floor`) is measured on this machine in the
same run.
"""

from __future__ import annotations

import dataclasses
import os
import platform
import random
import statistics
import time
from collections.abc import Iterator
from typing import Any

import torch
from prunestudio.engine.floor import Workload, floor, measure_machine, workload
from prunestudio.engine.masks import use_selection
from prunestudio.engine.phases import phase_clock
from prunestudio.engine.study.executor import InProcessExecutor, Job, run_job
from prunestudio.engine.symbolic.known import KNOWN_METRICS
from prunestudio.engine.symbolic.parse import parse
from prunestudio.engine.symbolic.tree import leaves_used, to_text
from prunestudio.engine.symbolic.variation import ramped_half_and_half
from prunestudio.store import Store

from prunestudio.schema.study_file import StudyConfig

SEARCH_PHASES = ("score", "select", "apply", "hash", "evaluate", "restore", "record", "other")
PATHS = ("sort", "select")  # reference first
SEED_METRICS = ("wanda", "pruner_zero", "gblm", "magnitude")


def expressions(seed: int = 0, leaves: tuple[str, ...] = ("W", "G", "X")) -> Iterator[str]:
    """The bench's candidates, deterministic: the seed metrics, then GP initial trees."""
    seen = set()
    for name in SEED_METRICS:
        seen.add(KNOWN_METRICS[name])
        yield KNOWN_METRICS[name]
    rng = random.Random(seed)
    while True:
        for tree in ramped_half_and_half(rng, 16, leaves=leaves):
            text = to_text(tree)
            if text not in seen:
                seen.add(text)
                yield text


def _load_average() -> float | None:
    """The 1-minute load average (another process on a shared machine shows here)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


def _fitness(result) -> float | None:
    for m in result.metrics:
        if m.get("role") == "search" and m.get("name") == "ppl":
            return m["value"]
    return None


class _Runner:
    def __init__(self, config: StudyConfig, store: Store, study_id: int) -> None:
        self.config, self.store, self.study_id = config, store, study_id
        self.executor = InProcessExecutor(config)
        self.n_jobs = 0

    def setup(self) -> dict[str, Any]:
        return self.executor.setup(warm=("dense_layer_stats", "gradients"))

    def run(self, expression: str, path: str) -> tuple[dict[str, float], Any]:
        """One candidate through the study's path; (phase seconds, CandidateResult)."""
        ctx = self.executor.ctx
        spec = self.config.search.candidate_spec(expression)
        self.n_jobs += 1
        job = Job(self.n_jobs, spec.canonical(), [{"name": "sparsity"}, {"name": "fitness"}],
                  hash_masks=True, info={"expression": expression})
        job = Job.from_dict(job.to_dict())  # what a worker receives
        t0 = time.perf_counter()
        with use_selection(path), phase_clock(ctx.lm.device) as clock:
            try:
                result = run_job(ctx, job)
            except Exception as exc:  # a failing metric: what the executor would record
                return {}, exc
        t1 = time.perf_counter()
        cid, _ = self.store.add_candidate(
            self.study_id, {**job.spec, "bench": [path, job.candidate_id]}, origin="bench")
        self.store.start_candidate(cid)
        self.store.finish_candidate(cid, metrics=result.metrics, timings=result.timings,
                                    info=result.info)
        t2 = time.perf_counter()
        tm, laps = result.timings, clock.seconds
        phases = {
            "score": laps.get("score", 0.0),
            "select": laps.get("select", 0.0),
            "apply": tm.get("prune", 0.0) - laps.get("score", 0.0) - laps.get("select", 0.0),
            "hash": tm.get("mask_hash", 0.0),
            "evaluate": tm.get("evaluate", 0.0),
            "restore": tm.get("restore", 0.0),
            "record": t2 - t1,
        }
        total = t2 - t0
        phases["other"] = total - sum(phases.values())
        phases["total"] = total
        return phases, result


def run_search_bench(config: StudyConfig, store: Store, *, candidates: int = 8,
                     repeats: int = 1, log=print) -> dict[str, Any]:
    """Run `candidates` search candidates `repeats` times through both mask paths."""
    if candidates < 1 or repeats < 1:
        raise ValueError("--candidates and --repeats must be at least 1")
    study_id = store.create_study(name=None, kind="bench", model=config.model.source,
                                  config=config.to_dict())
    runner = _Runner(config, store, study_id)
    t0 = time.perf_counter()
    description = runner.setup()
    setup_s = time.perf_counter() - t0
    lm = runner.executor.ctx.lm
    search_split = runner.executor.ctx.search_split
    # the proxy windows: what a search candidate's fitness reads (the split may be cut longer
    # for successive halving's higher fidelity)
    split = getattr(search_split, "proxy_windows", search_split.windows)
    log(f"  set-up {setup_s:.1f} s (model, windows, dense statistics); measuring the machine ...")
    load_before = _load_average()
    machine = measure_machine(lm.device, lm.dtype)

    chosen: list[str] = []
    failed: list[dict[str, str]] = []
    samples: dict[str, list[dict[str, float]]] = {p: [] for p in PATHS}
    identical_masks, identical_fitness, compared = True, True, 0
    works: list[Workload] = []
    source = expressions()
    # warm-up (first-call costs: allocator, kernels, numpy), not counted
    warm = KNOWN_METRICS[SEED_METRICS[0]]
    for path in PATHS:
        runner.run(warm, path)

    def pair(expression: str, order: tuple[str, ...]) -> bool:
        nonlocal identical_masks, identical_fitness, compared
        out = {}
        for path in order:
            out[path] = runner.run(expression, path)
        errors = {p: r for p, (_, r) in out.items() if isinstance(r, Exception)}
        if errors:
            if len(errors) != len(PATHS):  # one path failed, the other not: masks differ
                identical_masks = False
            failed.append({"expression": expression,
                           "error": f"{type(next(iter(errors.values()))).__name__}"})
            return False
        a, b = (out[p][1] for p in PATHS)
        compared += 1
        if a.info.get("mask_hash") != b.info.get("mask_hash"):
            identical_masks = False
        if _fitness(a) != _fitness(b):
            identical_fitness = False
        for p in PATHS:
            samples[p].append(out[p][0])
        same = "=" if a.info.get("mask_hash") == b.info.get("mask_hash") else "≠"
        times = "  ".join(f"{p} {out[p][0]['total']:.2f} s" for p in PATHS)
        log(f"  {expression:<44} {times}  ppl {_fitness(b):.3f}  masks {same}")
        return True

    for rep in range(repeats):
        i = 0
        if rep == 0:
            while len(chosen) < candidates:
                expression = next(source)
                order = PATHS if len(chosen) % 2 == 0 else PATHS[::-1]
                if pair(expression, order):
                    chosen.append(expression)
                    extra = len(leaves_used(parse(expression)) & {"G"})
                    works.append(workload(lm, split.n, split.seqlen, extra))
                if len(failed) > 4 * candidates:
                    raise RuntimeError("too many bench metrics failed; see the failures")
        else:
            for expression in chosen:
                order = PATHS if (i + rep) % 2 == 0 else PATHS[::-1]
                pair(expression, order)
                i += 1

    # measured again at the end: other processes only ever lower a measurement, so the
    # machine's peak and bandwidth are the better of the two
    again = measure_machine(lm.device, lm.dtype)
    machine = dataclasses.replace(machine, matmul_gflops=max(machine.matmul_gflops,
                                                             again.matmul_gflops),
                                  bandwidth_gbs=max(machine.bandwidth_gbs, again.bandwidth_gbs))
    load_after = _load_average()
    rows = {}
    floors = [floor(w, machine) for w in works]
    floor_s = statistics.fmean(f.seconds for f in floors)
    compute_s = statistics.fmean(f.compute_s for f in floors)
    memory_s = statistics.fmean(f.memory_s for f in floors)
    for p in PATHS:
        runs = samples[p]
        totals = [r["total"] for r in runs]
        median = statistics.median(totals)
        rows[p] = {
            # medians: robust to another process taking a core for a while (runs are paired,
            # reference and current back to back, so both see the same machine)
            "phases_s": {ph: statistics.median(r[ph] for r in runs) for ph in SEARCH_PHASES},
            "phases_mean_s": {ph: statistics.fmean(r[ph] for r in runs) for ph in SEARCH_PHASES},
            "total_s": median, "mean_s": statistics.fmean(totals), "min_s": min(totals),
            "max_s": max(totals), "ratio_to_floor": median / floor_s,
            "totals_s": totals,
        }
    # the per-pair ratio (same candidate, back to back) and its spread: the noise estimate
    pair_ratios = [a["total"] / b["total"] for a, b in zip(samples["sort"], samples["select"],
                                                         strict=True)]
    evaluate_s = rows["select"]["phases_s"]["evaluate"]
    eval_flops = works[0].eval_flops
    return {
        "mode": "search",
        "model": config.model.source,
        "model_description": description["model"],
        "device": f"{lm.device} ({str(lm.dtype).removeprefix('torch.')})",
        "torch": torch.__version__,
        "machine": f"{platform.machine()} {platform.processor() or ''} "
                   f"{torch.get_num_threads()} threads".strip(),
        "search_split": f"{split.spec.source} {split.n}×{split.seqlen} from {split.spec.offset}",
        "sparsity": config.search.sparsity,
        "pattern": config.search.pattern,
        "calibration": config.search.calibration,
        "candidates": chosen,
        "failed": failed,
        "repeats": repeats,
        "runs_per_path": len(samples["select"]),
        "setup_s": setup_s,
        "load_average": {"before": load_before, "after": load_after,
                         "cpus": os.cpu_count()},
        "paths": {"sort": "reference: full stable sort per row, isfinite, masked_fill_",
                  "select": "current: k-th value per row (introselect) + index-ordered ties, "
                            "min/max finiteness check, bit-exact integer-view apply; on CPU "
                            "per-row masks are selected on a selection thread while torch "
                            "(one thread fewer) scores the next layers"},
        "rows": rows,
        "speedup": rows["sort"]["total_s"] / rows["select"]["total_s"],
        "pair_speedup": {"median": statistics.median(pair_ratios), "min": min(pair_ratios),
                         "max": max(pair_ratios)},
        "phase_speedup": {ph: (rows["sort"]["phases_s"][ph] / rows["select"]["phases_s"][ph]
                               if rows["select"]["phases_s"][ph] > 0 else None)
                          for ph in ("score", "select", "apply")},
        "masks_identical": identical_masks and compared > 0,
        "fitness_identical": identical_fitness and compared > 0,
        "pairs_compared": compared,
        "machine_measured": {"matmul_gflops": machine.matmul_gflops,
                             "bandwidth_gbs": machine.bandwidth_gbs,
                             "threads": machine.threads, "dtype": machine.dtype},
        "workload": {"tokens": works[0].tokens, "eval_gflop": eval_flops / 1e9,
                     "attention_gflop": works[0].attention_flops / 1e9,
                     "prunable_weights": works[0].prunable_weights,
                     "candidate_gbytes": statistics.fmean(w.bytes for w in works) / 1e9},
        "floor": {"compute_s": compute_s, "memory_s": memory_s, "seconds": floor_s},
        "achieved_eval_gflops": eval_flops / evaluate_s / 1e9 if evaluate_s > 0 else None,
    }


def print_search_bench(r: dict[str, Any]) -> None:
    from prunestudio.engine.report import _console
    from rich.table import Table

    rows = r["rows"]
    table = Table(title=f"prunestudio bench --search — {r['model']} on {r['device']} "
                  f"({r['machine']}, torch {r['torch']}); {len(r['candidates'])} GP candidates × "
                  f"{r['repeats']} (symbolic, {r['sparsity']:.0%} {r['pattern']}, "
                  f"{r['calibration']} statistics); fitness on {r['search_split']}",
                  title_justify="left")
    table.add_column("phase (median s / candidate)")
    table.add_column("before: sort", justify="right")
    table.add_column("after: select", justify="right")
    table.add_column("speed-up", justify="right")
    for ph in SEARCH_PHASES:
        a, b = rows["sort"]["phases_s"][ph], rows["select"]["phases_s"][ph]
        table.add_row(ph, f"{a:.3f}", f"{b:.3f}", f"{a / b:.1f}×" if b > 1e-4 else "")
    before, after = rows["sort"], rows["select"]
    table.add_row("total: median", f"{before['total_s']:.3f}", f"{after['total_s']:.3f}",
                  f"{r['speedup']:.2f}×", style="bold")
    ps = r["pair_speedup"]
    table.add_row("total: mean", f"{before['mean_s']:.3f}", f"{after['mean_s']:.3f}", "")
    table.add_row("total: min … max", f"{before['min_s']:.2f} … {before['max_s']:.2f}",
                  f"{after['min_s']:.2f} … {after['max_s']:.2f}",
                  f"{ps['min']:.1f} … {ps['max']:.1f}×")
    fl = r["floor"]
    table.add_row("floor", f"{fl['seconds']:.3f}", f"{fl['seconds']:.3f}", "")
    table.add_row("ratio to floor", f"{rows['sort']['ratio_to_floor']:.2f}",
                  f"{rows['select']['ratio_to_floor']:.2f}", "", style="bold")
    console = _console()
    console.print(table)
    m, w = r["machine_measured"], r["workload"]
    console.print(
        f"floor = {w['eval_gflop']:.1f} GFLOP (fitness forward, {w['tokens']} tokens; attention "
        f"{w['attention_gflop']:.1f}) / {m['matmul_gflops']:.0f} GFLOP/s measured matmul peak "
        f"({m['dtype']}, {m['threads']} threads) = {fl['compute_s']:.3f} s  +  "
        f"{w['candidate_gbytes']:.2f} GB ({w['prunable_weights'] / 1e6:.1f} M prunable weights × "
        "32 B: score, select, apply, hash, restore; +4 B when G is read) / "
        f"{m['bandwidth_gbs']:.1f} GB/s measured copy bandwidth = {fl['memory_s']:.3f} s")
    if r["achieved_eval_gflops"]:
        console.print(f"fitness forward achieved {r['achieved_eval_gflops']:.0f} GFLOP/s "
                      f"({r['achieved_eval_gflops'] / m['matmul_gflops']:.0%} of the peak)")
    la = r["load_average"]
    if la["before"] is not None:
        console.print(f"load average (1 min) before / after: {la['before']:.2f} / "
                      f"{la['after']:.2f} on {la['cpus']} CPUs (the bench alone keeps it near "
                      f"{la['cpus']}; above that, other processes shared the cores and the times "
                      "are noisier: see min … max)")
    console.print(f"masks identical in both paths (zero-pattern hash, {r['pairs_compared']} "
                  f"pairs): {r['masks_identical']}; fitness identical: {r['fitness_identical']}",
                  style="bold")
    if r["failed"]:
        console.print(f"{len(r['failed'])} metric(s) failed in both paths and were skipped: "
                      + "; ".join(f"{f['expression']} ({f['error']})" for f in r["failed"]))
