"""`prunestudio bench`: where a candidate's time goes, and what the study loop saves.

Both loops run the same candidates in the same process, one after the other:

* study loop — the runner's way: model loaded once, calibration statistics computed once,
  per candidate prune → evaluate → record → restore only the touched weights;
* naive loop — model reloaded from its source and statistics recomputed for every candidate.

Statistics are kept in memory only (no disk cache) in both loops, so the study loop's one-time
cost is measured, not read from a warm cache. Records go to a temporary store.
"""

from __future__ import annotations

import platform
import time
from typing import Any

import torch
from prunestudio.engine.calibration import StatsCache, calibration_hash
from prunestudio.engine.evaluate.perplexity import perplexity
from prunestudio.engine.methods import get_method
from prunestudio.engine.models.loading import LoadedModel, load_model
from prunestudio.engine.pruning import WeightSnapshot, prune_model
from prunestudio.engine.runner import cut_windows
from prunestudio.store import Store

from prunestudio.schema.spec import CandidateSpec
from prunestudio.schema.study_file import StudyConfig

PHASES = ("load", "statistics", "prune", "evaluate", "record", "restore")


def _warm_statistics(stats: StatsCache, specs: list[CandidateSpec]) -> None:
    """Compute what the candidates will need, once."""
    needs = set()
    for spec in specs:
        method = get_method(spec.method)
        needs |= method.needs(method.validate_options(spec.options))
    if needs & {"x", "hessian"}:
        stats.block_inputs()
    if any(s.calibration.mode == "dense" or s.layer_ratios in ("owl", "owl_band")
           for s in specs):
        stats.dense_layer_stats("hessian" in needs)
    if "grad" in needs:
        stats.gradients()


def _candidate(lm: LoadedModel, spec: CandidateSpec, stats: StatsCache, evaluation,
               snapshot: WeightSnapshot | None, store: Store, study_id: int,
               times: dict[str, float]) -> float:
    t0 = time.perf_counter()
    prune_model(lm, spec, stats, snapshot)
    t1 = time.perf_counter()
    ppl = perplexity(lm.model, evaluation.windows, lm.device, evaluation.batch_size)
    t2 = time.perf_counter()
    cid, _ = store.add_candidate(study_id, {**spec.canonical(), "loop": id(times)}, origin="bench")
    store.start_candidate(cid)
    store.finish_candidate(cid, metrics=[ppl.metric(fidelity=evaluation.fidelity,
                                                    role=evaluation.role,
                                                    windows=evaluation.windows)])
    t3 = time.perf_counter()
    if snapshot is not None:
        snapshot.restore()
    t4 = time.perf_counter()
    for phase, dt in (("prune", t1 - t0), ("evaluate", t2 - t1), ("record", t3 - t2),
                      ("restore", t4 - t3)):
        times[phase] += dt
    return ppl.ppl


def _sync(lm: LoadedModel) -> None:
    if lm.device.type == "cuda":
        torch.cuda.synchronize(lm.device)


def run_bench(config: StudyConfig, specs: list[CandidateSpec], store: Store,
              log=print) -> dict[str, Any]:
    study_id = store.create_study(name=None, kind="bench", model=config.model.source,
                                  config=config.to_dict(), budget=2 * len(specs))
    m = config.model
    # -- study loop
    study = dict.fromkeys(PHASES, 0.0)
    t_start = time.perf_counter()
    lm = load_model(m.source, device=m.device, dtype=m.dtype)
    study["load"] = lm.load_seconds
    device = f"{lm.device} ({str(lm.dtype).removeprefix('torch.')})"
    calibration, evaluations = cut_windows(config, lm)
    key = calibration_hash(calibration.ids, calibration.tokens_hash)
    t0 = time.perf_counter()
    stats = StatsCache(lm, calibration.ids, key, use_disk=False)
    _warm_statistics(stats, specs)
    _sync(lm)
    study["statistics"] = time.perf_counter() - t0
    snapshot = WeightSnapshot(lm)
    ppl_study = []
    for spec in specs:
        ppl_study.append(_candidate(lm, spec, stats, evaluations[0], snapshot, store, study_id,
                                    study))
        log(f"  study loop  {spec.label:<18} ppl {ppl_study[-1]:.3f}")
    _sync(lm)
    study_total = time.perf_counter() - t_start
    del lm, stats, snapshot

    # -- naive loop
    naive = dict.fromkeys(PHASES, 0.0)
    t_start = time.perf_counter()
    ppl_naive = []
    for spec in specs:
        lm = load_model(m.source, device=m.device, dtype=m.dtype)
        naive["load"] += lm.load_seconds
        t0 = time.perf_counter()
        stats = StatsCache(lm, calibration.ids, key, use_disk=False)
        _warm_statistics(stats, [spec])
        naive["statistics"] += time.perf_counter() - t0
        ppl_naive.append(_candidate(lm, spec, stats, evaluations[0], None, store, study_id, naive))
        log(f"  naive loop  {spec.label:<18} ppl {ppl_naive[-1]:.3f}")
        del lm, stats
    naive_total = time.perf_counter() - t_start

    n = len(specs)
    return {
        "model": m.source,
        "device": device,
        "torch": torch.__version__,
        "machine": f"{platform.machine()} {platform.processor() or ''} "
                   f"{torch.get_num_threads()} threads".strip(),
        "candidates": [s.label for s in specs],
        "evaluation": f"{evaluations[0].windows.spec.source} {evaluations[0].windows.n}×"
                      f"{evaluations[0].windows.seqlen}",
        "same_results": all(abs(a - b) <= 1e-6 * max(1.0, abs(a))
                            for a, b in zip(ppl_study, ppl_naive, strict=True)),
        "study_loop": {"phases_s": study, "total_s": study_total,
                       "candidates_per_min": 60 * n / study_total},
        "naive_loop": {"phases_s": naive, "total_s": naive_total,
                       "candidates_per_min": 60 * n / naive_total},
        "throughput_ratio": naive_total / study_total,
        "per_candidate_ratio": (naive_total / n) / (
            (study_total - study["load"] - study["statistics"]) / n),
    }


def print_bench(r: dict[str, Any]) -> None:
    from rich.table import Table

    n = len(r["candidates"])
    table = Table(title=f"prunestudio bench — {r['model']} on {r['device']} ({r['machine']}, "
                  f"torch {r['torch']}); {n} candidates: {', '.join(r['candidates'])}; "
                  f"eval {r['evaluation']}", title_justify="left")
    table.add_column("phase")
    table.add_column("study loop s", justify="right")
    table.add_column("naive loop s", justify="right")
    for phase in PHASES:
        table.add_row(phase, f"{r['study_loop']['phases_s'][phase]:.2f}",
                      f"{r['naive_loop']['phases_s'][phase]:.2f}")
    table.add_row("total", f"{r['study_loop']['total_s']:.2f}", f"{r['naive_loop']['total_s']:.2f}",
                  style="bold")
    table.add_row("candidates / min", f"{r['study_loop']['candidates_per_min']:.2f}",
                  f"{r['naive_loop']['candidates_per_min']:.2f}")
    from prunestudio.engine.report import _console

    console = _console()
    console.print(table)
    console.print(f"throughput ratio (study loop / naive loop, {n} candidates, one-time load and "
                  f"statistics included): {r['throughput_ratio']:.2f}×", style="bold")
    console.print(f"per-candidate ratio (naive candidate / study-loop candidate, steady state): "
                  f"{r['per_candidate_ratio']:.2f}×", style="bold")
    console.print(f"same perplexities in both loops: {r['same_results']}")

