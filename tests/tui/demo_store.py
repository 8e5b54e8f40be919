"""The TUI tests' demo store, written through the engine's write path (the store API) with
fixed timestamps; every spec is in the canonical form the engine records (a test checks each
one against ``CandidateSpec``), every study kind one the engine runs.

Used by the TUI tests and ``scripts/tui_screenshots.py``; to try the TUI without running a
study::

    python tests/tui/demo_store.py /tmp/demo.db && prunestudio tui /tmp/demo.db

Four studies: a finished baseline grid (in-domain / out-of-domain ppl, one failure), a running
genetic-programming search over expressions run by two Ray actors in parallel (proxy ppl
under the 'search' role, finalists at full fidelity, parents, a running and pending
candidates, events, the heartbeats of its driver and of both actors — one on another node —
with their devices, just before DEMO_NOW), a cancelled structured grid with per-block ratios, and a random search that has
not started.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from prunestudio.store import Store, open_store

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: store_builders
from prunestudio.tui.machine import GpuInfo, GpuProcess, MachineSnapshot
from store_builders import EVALUATION_SETS, canonical_spec  # noqa: E402
from store_builders import fixed_clock as shared_fixed_clock  # noqa: E402

__all__ = ["DEMO_MACHINE", "DEMO_NOW", "DEMO_START", "GP_WORKERS", "build_demo_store",
           "demo_specs", "fixed_clock", "spec"]

DEMO_START = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC
DEMO_NOW = DEMO_START + 3 * 3600 + 754.0  # "now" for screenshots: a few hours later
_GIB = 2**30
DEMO_MACHINE = MachineSnapshot(  # fixed machine-panel figures for screenshots and tests
    host="gpu-box", cpu_percent=23.0, cpu_count=16, ram_used=40 * _GIB, ram_total=125 * _GIB,
    load=(1.2, 0.9, 0.8),
    gpus=(GpuInfo(0, "NVIDIA H100 80GB HBM3", 87.0, 31 * _GIB, 80 * _GIB, 63, 312, 700),),
    processes=(GpuProcess(0, 4242, "python -m prunestudio run configs/gp.toml", 30 * _GIB),),
)


@contextmanager
def fixed_clock(start: float = DEMO_START, step: float = 7.0) -> Iterator[SimpleNamespace]:
    """The shared deterministic store clock, from the demo's start."""
    with shared_fixed_clock(start, step) as clock:
        yield clock


_SPECS: list[dict[str, Any]] = []  # every spec written, for the validity test


def spec(method: str, sparsity: float = 0.0, *, nm: bool = False, calibration: str = "sequential",
         **options: Any) -> dict[str, Any]:
    """A candidate spec in the engine's canonical form (``CandidateSpec(...).canonical()``)."""
    out = canonical_spec(method, sparsity, nm=nm, calibration=calibration, **options)
    _SPECS.append(out)
    return out


def demo_specs() -> list[dict[str, Any]]:
    """Every spec the demo store holds (build the store first)."""
    return list(_SPECS)


def _ppl(value: float, role: str, *, fidelity: str = "full", dataset: str = "pydoc",
         split: str = "all", seqlen: int = 256, n: int = 32) -> dict[str, Any]:
    return {
        "name": "ppl", "value": value, "dataset": dataset, "split": split, "seqlen": seqlen,
        "n_samples": n, "fidelity": fidelity, "role": role,
        "protocol": {"join": "\n\n", "windows": "non-overlapping", "tail": "dropped",
                     "dtype": "fp32", "offset": 40000 if role == "in_domain" else 0},
    }


_CALIBRATION = {"source": "pydoc", "split": "all", "seqlen": 256, "n": 8, "offset": 0}
_EVAL = EVALUATION_SETS
_MODEL = "smollm2-135m-instruct (Q4_1 GGUF)"


def _config(name: str, kind: str, seed: int, *, evaluation: list[dict[str, Any]] | None = None,
            **sections: Any) -> dict[str, Any]:
    """A study config in the shape ``StudyConfig.to_dict()`` records (main sections)."""
    return {"study": {"name": name, "kind": kind, "seed": seed},
            "model": {"source": "default", "device": "auto", "dtype": "auto"},
            "calibration": _CALIBRATION,
            "evaluation": [{**e, "batch_size": 4} for e in (evaluation or _EVAL)],
            "candidates": [], **sections}


def _grid(store: Store, clock: SimpleNamespace) -> None:
    sid = store.create_study(
        name="baselines", kind="grid", model=_MODEL, seed=0, budget=10,
        config=_config("baselines", "grid", 0, grid={
            "methods": ["magnitude", "wanda", "sparsegpt", "gblm"], "sparsities": [0.5],
            "patterns": ["unstructured", "2:4"], "layer_ratios": "uniform",
            "include_dense": True}))
    store.set_study_status(sid, "running")
    specs: list[tuple[dict[str, Any], float | None, float | None]] = [
        (spec("dense"), 16.92, 41.37),
        (spec("magnitude", 0.5), 61.80, 188.4),
        (spec("magnitude", 0.5, nm=True), 402.7, 1093.0),
        (spec("wanda", 0.5), 28.67, 77.12),
        (spec("wanda", 0.5, nm=True), 47.31, 128.9),
        (spec("sparsegpt", 0.5), 26.95, 70.84),
        (spec("sparsegpt", 0.5, nm=True), None, None),
        (spec("gblm", 0.5), 28.12, 75.50),
        (spec("gblm", 0.5, nm=True), 45.96, 125.2),
        (spec("magnitude", 0.5, scope="row"), 55.43, 160.1),
    ]
    for sp, ind, ood in specs:
        origin = "baseline" if sp["method"] == "dense" else "grid"  # as the engine's runner
        cid, _ = store.add_candidate(sid, sp, origin=origin)
        store.start_candidate(cid, worker="gpu0")
        if ind is None:
            store.fail_candidate(cid, error="SparseGPT: Cholesky decomposition failed on "
                                 "model.layers.7.mlp.down_proj (Hessian not positive definite "
                                 "after 1% damping); raise damping or use more calibration "
                                 "samples", timings={"prune": 12.4})
            store.add_event(sid, f"candidate {sp['method']} 2:4 failed: Cholesky",
                            level="error", candidate_id=cid)
            continue
        store.finish_candidate(
            cid, metrics=[_ppl(ind, "in_domain"),
                          _ppl(ood, "out_of_domain", dataset="shakespeare", split="hamlet")],
            timings={"prune": 3.2 if sp["method"] != "sparsegpt" else 14.8, "eval": 5.1,
                     "total": 9.4}, info={"realised_sparsity": sp["sparsity"]},
        )
    store.add_event(sid, "study finished: 9 done, 1 failed", progress=1.0)
    store.set_study_status(sid, "finished")


_EXPRESSIONS = [
    "mul(abs(W),sqrt(X))", "mul(sqr(W),mms(G))", "add(mul(abs(W),sqrt(X)),mul(abs(W),G))",
    "mul(W,G)", "div(sqr(W),add(X,G))", "mul(sqr(W),zsn(G))", "mul(exp(tanh(W)),mms(G))",
    "sub(mul(W,X),log(G))", "mul(sqr(W),mms(sqr(G)))", "add(sqr(W),norm1(G))",
    "mul(abs(W),norm2(X))", "mul(sqr(sqrt(W)),G)",
]
_OFFSPRING = [
    "mul(sqr(W),mms(sqrt(G)))", "mul(abs(W),mms(G))", "add(mul(sqr(W),mms(G)),sqrt(X))",
    "mul(sqr(W),norm2(G))", "mul(sqr(abs(W)),mms(G))", "mul(sqr(W),tanh(G))",
    "div(sqr(W),add(sqrt(X),G))", "mul(mul(W,W),mms(G))", "mul(sqr(W),mms(add(G,X)))",
    "sub(sqr(W),neg(mms(G)))", "mul(pow(W),mms(G))", "mul(sqr(W),zsn(mms(G)))",
]


# the GP study runs on two Ray actors, one per GPU, the second on another node
GP_WORKERS = ("gpu-box:4200/w0", "gpu-box:4200/w1")  # driver host:pid / actor; w1 on gpu-node2
GP_DEVICES = tuple(  # what each actor runs on (memory_used: set with its heartbeat)
    {"device": "cuda:0", "gpu": "NVIDIA H100 80GB HBM3", "memory_total": 80 * 2**30,
     "memory_used": None, "memory_peak": 33 * 2**30, "threads": 8, "node": node,
     "role": "ray actor"} for node in ("gpu-box", "10.0.0.12"))
GP_DRIVER = "gpu-box:4200"  # the driver: the store's only writer, it runs no candidate


def _gp_schedule(n_finished: int, start: float, end: float) -> list[tuple[int, float, float]]:
    """(worker, start, end) of the GP's candidates on its two workers, as a claim queue runs
    them: each candidate goes to the worker free first, a generation starts when the one
    before it is evaluated; durations vary, failures are short. The first ``n_finished``
    end; the next one starts and runs on (its end: ``end``). Scaled so the last one to end
    ends at ``end``."""
    gens = [0] * 12 + [1] * 6 + [2] * 6
    free, barrier, gen_end = [0.0, 0.0], 0.0, 0.0
    units: list[tuple[int, float, float]] = []
    for i in range(n_finished + 1):
        if i and gens[i] != gens[i - 1]:
            barrier = gen_end
        w = min((0, 1), key=lambda k: free[k])
        s = max(free[w], barrier) + 0.02
        d = 0.25 if i in (6, 15) else 1.0 + 0.5 * ((i * 37) % 7) / 6
        units.append((w, s, s + d))
        free[w] = s + d
        gen_end = max(gen_end, s + d)
    last = max(e for _, _, e in units[:n_finished])
    scale = (end - start) / last
    return [(w, start + s * scale, start + e * scale) for w, s, e in units]


def _at(clock: SimpleNamespace, t: float) -> None:
    """The next store write reads time ``t``."""
    clock.now = t - 7.0


def _gp(store: Store, clock: SimpleNamespace) -> tuple[int, int | None]:
    """The running search; returns its id and its running candidate's (run by the first of
    :data:`GP_WORKERS`, on this machine's GPU). Its candidates run on
    two workers in parallel (each candidate's times placed with the clock), from a minute
    after the study starts until a few seconds before DEMO_NOW."""
    config = _config("prunerzero-gp", "gp", 1, search={
        "population": 12, "iterations": 24, "offspring": 2, "budget": 60, "top_k": 4,
        "sparsity": 0.5, "pattern": "unstructured", "scope": "row", "calibration": "dense",
        "split": {"source": "pydoc", "split": "all", "seqlen": 128, "n": 8, "offset": 20000},
        "finalists": 3, "baselines": []})
    sid = store.create_study(name="prunerzero-gp", kind="gp", model=_MODEL, seed=1,
                             budget=60, config=config)
    store.set_study_status(sid, "running")
    resume = clock.now  # the studies built after this one are written from here on
    schedule = _gp_schedule(22, clock.now + 60.0, DEMO_NOW - 12.0)
    busy = schedule[22][0]  # the schedule's worker that runs candidate 22 is GP_WORKERS[0]
    ids: list[int] = []
    running: int | None = None
    for i in range(24):
        expr = _EXPRESSIONS[i] if i < 12 else _OFFSPRING[i - 12]
        origin = "random" if i < 12 else ("mutation" if i % 2 else "crossover")
        parents = None if i < 12 else [ids[(i * 7) % 12], ids[(i * 5 + 3) % 12]][: 1 + i % 2]
        sp = spec("symbolic", 0.5, calibration="dense", expression=expr)
        _at(clock, schedule[min(i, 22)][1] - 1.0)  # proposed just before it starts
        cid, created = store.add_candidate(sid, sp, origin=origin, parents=parents,
                                           generation=0 if i < 12 else 1 + (i - 12) // 6)
        if not created:
            continue
        ids.append(cid)
        if i == 23:
            continue  # pending: the idle worker claims it next
        w, t_start, t_end = schedule[i]
        _at(clock, t_start)
        store.start_candidate(cid, worker=GP_WORKERS[w ^ busy])
        if i == 22:
            running = cid
            continue
        _at(clock, t_end)
        total = round(t_end - t_start, 1)
        if i in (6, 15):
            store.fail_candidate(cid, error="NaN scores from exp(tanh(W)) in layer 3: the "
                                 "candidate is recorded as failed",
                                 timings={"score": total}, finished_at=t_end)
            continue
        value = 19.0 + 40.0 * math.exp(-i / 6.0) + 3.0 * ((i * 37) % 11) / 11.0
        metrics = [_ppl(value, "search", fidelity="proxy", seqlen=128, n=8)]
        if i in (1, 13, 19):  # finalists re-evaluated at full fidelity
            metrics += [_ppl(value * 1.08, "in_domain"),
                        _ppl(value * 2.6, "out_of_domain", dataset="shakespeare",
                             split="hamlet")]
        store.finish_candidate(cid, metrics=metrics, finished_at=t_end, timings={
            "score": round(total * 0.1, 1), "prune": round(total * 0.55, 1),
            "eval": round(total * 0.35, 1), "total": total})
        if i % 6 == 5:
            _at(clock, t_end + 1.0)
            store.add_event(sid, f"generation {i // 6}: best search ppl {value:.2f}",
                            progress=(i + 1) / 60)
    _at(clock, DEMO_NOW - 300.0)
    store.add_event(sid, "low memory headroom on cuda:0 of gpu-box:4200/w0 (7.1 GiB free)",
                    level="warning")
    clock.now = resume
    return sid, running


def _structured(store: Store, clock: SimpleNamespace) -> None:
    sid = store.create_study(name="structured-grid", kind="grid", model=_MODEL, seed=2,
                             budget=40, config=_config("structured-grid", "grid", 2,
                                                       evaluation=_EVAL[:1]))
    store.set_study_status(sid, "running")
    for i in range(8):
        attn = [round(0.05 + 0.35 * ((i + j * 3) % 10) / 10, 3) for j in range(30)]
        mlp = [round(0.10 + 0.30 * ((i * 2 + j) % 7) / 7, 3) for j in range(30)]
        sp = spec("structured", importance="taylor_mix", attention_ratios=attn, mlp_ratios=mlp)
        cid, _ = store.add_candidate(sid, sp, origin="grid")
        store.start_candidate(cid, worker="gpu0")
        store.finish_candidate(cid, metrics=[
            _ppl(31.0 + 3 * ((i * 5) % 7), "in_domain"),
            {"name": "params", "value": 1.02e8 - i * 1.3e6, "role": "efficiency"},
        ], timings={"prune": 20.5, "eval": 6.0, "total": 26.5})
    store.request_cancel(sid, "cancelled from the CLI by demo@host")
    store.add_event(sid, "cancel requested: stopping after the current candidate",
                    level="warning")
    store.set_study_status(sid, "cancelled")


def build_demo_store(path: str | os.PathLike[str]) -> Path:
    """Write the demo store at ``path`` (which must not exist yet); return its path."""
    p = Path(path)
    if p.exists():
        raise FileExistsError(f"{p} exists; the demo store is only written to a new file")
    with fixed_clock() as clock, open_store(p) as store:
        _grid(store, clock)
        gp, running = _gp(store, clock)
        _structured(store, clock)
        store.create_study(name="random-search", kind="random", model=_MODEL, seed=3,
                           budget=150, config=_config("random-search", "random", 3, search={
                               "budget": 150, "sparsity": 0.5, "finalists": 3}))
        # the GP's heartbeats, a few seconds before DEMO_NOW (the screenshots' clock): at
        # that time they are live (shown 'running'); watched later, it shows 'stale'. The
        # driver writes one row for itself and one per Ray actor, with what each runs on.
        _at(clock, DEMO_NOW - 10.0)
        store.heartbeat(GP_DRIVER, study_id=gp, host=DEMO_MACHINE.host, pid=4200, device={
            "device": "cpu", "gpu": None, "memory_total": None, "memory_used": None,
            "memory_peak": None, "threads": 16, "node": "gpu-box", "role": "driver"})
        for w, (host, pid) in enumerate(((DEMO_MACHINE.host, DEMO_MACHINE.processes[0].pid),
                                         ("gpu-node2", 5120))):
            _at(clock, DEMO_NOW - (10.0 if w == 0 else 4.0))
            store.heartbeat(GP_WORKERS[w], study_id=gp, host=host, pid=pid,
                            candidate_id=None if w else running,
                            device={**GP_DEVICES[w], "memory_used": (2 if w else 31) * 2**30})
    return p


if __name__ == "__main__":  # pragma: no cover
    target = build_demo_store(sys.argv[1] if len(sys.argv) > 1 else "demo.db")
    print(f"demo store written to {target}")
