"""Stores for the web app's tests, benchmarks and screenshots, written through the store's write
API (``create_study``, ``add_candidate``, ``start_candidate``, ``finish_candidate``,
``fail_candidate``, ``add_metrics``, ``add_event``, ``heartbeat``) with fixed timestamps; specs
in the canonical form the engine records, metrics with the identities and protocols the
engine's measurements write.

``build_app_store(path)`` writes six studies (names in :data:`STUDIES`):

- ``baselines`` (grid, finished): dense, magnitude / Wanda / SparseGPT at 50 % and 60 %
  unstructured and 2:4; in-domain and out-of-domain ppl, the offline task's acc / acc_norm
  (lm-eval protocol), params / MACs / latency, realised sparsity; one failure with traceback;
- ``prunerzero-gp`` (gp, running): 3 generations with parents, search-split fitness (proxy),
  finalists at full fidelity, a Wanda baseline, a failure, one running and one pending
  candidate, run by two workers (gpu0, gpu1 on another node) whose heartbeats carry their
  devices;
- ``structured-grid`` (grid, cancelled): structured candidates with per-block ratios and what
  they realised, params and parameter ratios;
- ``random-search`` (random, finished): symbolic candidates, baselines;
- ``broken-grid`` (grid, failed): a study error and candidates failing for two reasons;
- ``anneal-search`` (a kind no view registered): a few candidates.

``build_empty_store(path)``: an initialised store without studies. ``build_big_store(path,
n)``: one running GP study of ``n`` candidates (benchmarks); ``add_search_candidates`` adds
more to it (a live refresh).

Run as a script to write a store to look at: ``python tests/app/app_store.py /tmp/app.db``
then ``prunestudio web /tmp/app.db``.
"""

from __future__ import annotations

import math
import os
import random
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from prunestudio.store import Store, open_store

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests/: store_builders
from store_builders import EVALUATION_SETS, canonical_spec, random_expression  # noqa: E402
from store_builders import fixed_clock as shared_fixed_clock  # noqa: E402

__all__ = ["START", "STUDIES", "add_search_candidates", "build_app_store", "build_big_store",
           "build_empty_store", "spec"]

START = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC
STUDIES = ("baselines", "prunerzero-gp", "structured-grid", "random-search", "broken-grid",
           "anneal-search")
MODEL = "smollm2-135m-instruct (Q4_1 GGUF)"
TRACEBACK = (
    "RuntimeError: SparseGPT: Cholesky decomposition failed on model.layers.7.mlp.down_proj "
    "(Hessian not positive definite after 1% damping)\n\n"
    "Traceback (most recent call last):\n"
    '  File "engine/methods/sparsegpt.py", line 88, in prune_layer\n'
    "    h_inv = torch.linalg.cholesky(h)\n"
    "torch._C._LinAlgError: linalg.cholesky: The factorization could not be completed")


@contextmanager
def fixed_clock(start: float = START, step: float = 5.0) -> Iterator[SimpleNamespace]:
    """The shared deterministic store clock, from this store's start."""
    with shared_fixed_clock(start, step) as clock:
        yield clock


def spec(method: str, sparsity: float = 0.0, *, nm: bool = False, calibration: str = "sequential",
         **options: Any) -> dict[str, Any]:
    """A candidate spec in the engine's canonical form (``CandidateSpec(...).canonical()``)."""
    return canonical_spec(method, sparsity, nm=nm, calibration=calibration, **options)


def _ppl(value: float, role: str, *, fidelity: str = "full", dataset: str = "pydoc",
         split: str = "all", seqlen: int = 256, n: int = 32, **protocol: Any) -> dict[str, Any]:
    return {"name": "ppl", "value": value, "dataset": dataset, "split": split, "seqlen": seqlen,
            "n_samples": n, "fidelity": fidelity, "role": role,
            "protocol": {"selection": "contiguous", "offset": 40000 if role == "in_domain" else 0,
                         "tokens_hash": f"t{seqlen}{n}{role}", "n_tokens_scored": n * (seqlen - 1),
                         **protocol}}


def _acc(acc: float, acc_norm: float, n: int = 100) -> list[dict[str, Any]]:
    protocol = {"num_fewshot": 0, "limit": n, "n_available": 500, "lm_eval_version": "0.4.13",
                "harness": "lm-eval simple_evaluate, HFLM on the in-memory model"}
    return [{"name": name, "value": v, "dataset": "shakespeare_next_line", "n_samples": n,
             "fidelity": "proxy", "role": "task",
             "protocol": {**protocol, "stderr": round(math.sqrt(v * (1 - v) / n), 4)}}
            for name, v in (("acc", acc), ("acc_norm", acc_norm))]


def _efficiency(params: float, latency: float, sparsity: float | None) -> list[dict[str, Any]]:
    out = [{"name": "params", "value": params, "role": "efficiency",
            "protocol": {"scope": "unique parameters (tied embeddings once)"}},
           {"name": "macs_per_token", "value": params * 0.98, "seqlen": 128, "role": "efficiency",
            "protocol": {"scope": "linear layers + attention"}},
           {"name": "latency_ms", "value": latency, "seqlen": 128, "n_samples": 1,
            "role": "efficiency", "protocol": {"device": "cpu", "statistic": "median"}}]
    if sparsity is not None:
        out.append({"name": "sparsity", "value": sparsity, "role": "pruned_layers",
                    "protocol": {"target": sparsity}})
    return out


_CALIBRATION = {"source": "pydoc", "split": "all", "seqlen": 128, "n": 16, "offset": 0}
_EVAL = EVALUATION_SETS


def _config(name: str, kind: str, seed: int, **sections: Any) -> dict[str, Any]:
    return {"study": {"name": name, "kind": kind, "seed": seed},
            "model": {"source": "default", "device": "auto", "dtype": "auto"},
            "calibration": _CALIBRATION, "evaluation": [{**e, "batch_size": 4} for e in _EVAL],
            "candidates": [], **sections}


def _run(store: Store, sid: int, sp: dict[str, Any], origin: str, *, metrics: list[dict] | None,
         error: str | None = None, parents: list[int] | None = None,
         generation: int | None = None, worker: str = "gpu0", seconds: float = 9.0,
         info: dict[str, Any] | None = None) -> int:
    cid, _ = store.add_candidate(sid, sp, origin=origin, parents=parents, generation=generation)
    store.start_candidate(cid, worker=worker)
    if error is not None:
        store.fail_candidate(cid, error=error, timings={"prune": seconds})
    elif metrics is not None:
        store.finish_candidate(cid, metrics=metrics, timings={"prune": seconds * 0.4,
                                                              "eval": seconds * 0.6,
                                                              "total": seconds}, info=info)
    return cid


def _grid(store: Store) -> int:
    sid = store.create_study(name="baselines", kind="grid", model=MODEL, seed=0, budget=12,
                             config=_config("baselines", "grid", 0, grid={
                                 "methods": ["magnitude", "wanda", "sparsegpt"],
                                 "sparsities": [0.5, 0.6], "patterns": ["unstructured", "2:4"]}))
    store.set_study_status(sid, "running")
    dense_params = 1.348e8
    rows = [  # method, sparsity, 2:4, in-domain, ood, acc, acc_norm, latency
        ("dense", 0.0, False, 15.02, 34.52, 0.42, 0.49, 41.0),
        ("magnitude", 0.5, False, 388.4, 376.9, 0.36, 0.38, 40.0),
        ("magnitude", 0.6, False, 1210.0, 980.0, 0.30, 0.31, 40.0),
        ("wanda", 0.5, False, 28.70, 70.49, 0.35, 0.35, 40.5),
        ("wanda", 0.6, False, 52.10, 120.3, 0.33, 0.34, 40.2),
        ("wanda", 0.5, True, 77.10, 148.6, 0.40, 0.39, 33.0),
        ("sparsegpt", 0.5, False, 26.37, 91.31, 0.36, 0.40, 40.1),
        ("sparsegpt", 0.6, False, 44.20, 150.2, 0.34, 0.36, 40.3),
        ("sparsegpt", 0.5, True, None, None, None, None, None),
    ]
    for method, sparsity, nm, ind, ood, acc, acc_norm, latency in rows:
        sp = spec(method, sparsity, nm=nm)
        origin = "baseline" if method == "dense" else "grid"
        if ind is None:
            _run(store, sid, sp, origin, metrics=None, error=TRACEBACK, seconds=14.8)
            store.add_event(sid, "candidate sparsegpt 2:4 failed: Cholesky", level="error")
            continue
        params = dense_params * (1 - 0.85 * sparsity) if nm else dense_params
        metrics = [_ppl(ind, "in_domain"),
                   _ppl(ood, "out_of_domain", dataset="shakespeare", split="hamlet"),
                   *_acc(acc, acc_norm), *_efficiency(params, latency,
                                                      None if method == "dense" else sparsity)]
        _run(store, sid, sp, origin, metrics=metrics,
             seconds=14.8 if method == "sparsegpt" else 9.4, info={"stats_computed": ["X"]})
    store.add_event(sid, "study finished: 8 done, 1 failed", progress=1.0)
    store.set_study_status(sid, "finished")
    return sid


EXPRESSIONS = [
    "mul(abs(W),sqrt(X))", "mul(sqr(W),mms(G))", "add(mul(abs(W),sqrt(X)),mul(abs(W),G))",
    "mul(W,G)", "div(sqr(W),add(X,G))", "mul(sqr(W),zsn(G))", "mul(exp(tanh(W)),mms(G))",
    "sub(mul(W,X),log(G))", "mul(sqr(W),mms(sqr(G)))", "add(sqr(W),norm1(G))",
    "mul(abs(W),norm2(X))", "mul(sqr(sqrt(W)),G)", "mul(sqr(W),mms(sqrt(G)))",
    "mul(abs(W),mms(G))", "add(mul(sqr(W),mms(G)),sqrt(X))", "mul(sqr(W),norm2(G))",
    "mul(sqr(abs(W)),mms(G))", "mul(sqr(W),tanh(G))", "div(sqr(W),add(sqrt(X),G))",
    "mul(mul(W,W),mms(G))",
]


def _fitness(i: int) -> float:
    return round(19.0 + 40.0 * math.exp(-i / 5.0) + 3.0 * ((i * 37) % 11) / 11.0, 3)


def _gp(store: Store) -> int:
    sid = store.create_study(
        name="prunerzero-gp", kind="gp", model=MODEL, seed=1, budget=30,
        config=_config("prunerzero-gp", "gp", 1, search={
            "population": 8, "iterations": 3, "budget": 30, "top_k": 3, "sparsity": 0.5,
            "pattern": "unstructured", "finalists": 3, "baselines": ["wanda"],
            "split": {"source": "pydoc", "split": "all", "seqlen": 128, "n": 8,
                      "offset": 20000}}))
    store.set_study_status(sid, "running")
    base = spec("wanda", 0.5, calibration="dense")
    _run(store, sid, base, "baseline", metrics=[
        _ppl(30.5, "search", fidelity="proxy", seqlen=128, n=8),
        _ppl(28.70, "in_domain"),
        _ppl(70.49, "out_of_domain", dataset="shakespeare", split="hamlet")])
    ids: list[int] = []
    for i, expr in enumerate(EXPRESSIONS):
        gen = i // 8 if i < 16 else 2
        origin = "random" if gen == 0 else ("mutation" if i % 2 else "crossover")
        parents = None if gen == 0 else [ids[(i * 7) % len(ids)], ids[(i * 3 + 1) % len(ids)]][
            : 1 + i % 2]
        sp = spec("symbolic", 0.5, calibration="dense", expression=expr)
        if i == 18:  # running
            cid, _ = store.add_candidate(sid, sp, origin=origin, parents=parents, generation=gen)
            store.start_candidate(cid, worker="gpu1")
            ids.append(cid)
            continue
        if i == 19:  # pending
            cid, _ = store.add_candidate(sid, sp, origin=origin, parents=parents, generation=gen)
            ids.append(cid)
            continue
        if i == 6:
            ids.append(_run(store, sid, sp, origin, metrics=None, parents=parents,
                            generation=gen, error="NaN scores from exp(tanh(W)) in layer 3"))
            continue
        metrics = [_ppl(_fitness(i), "search", fidelity="proxy", seqlen=128, n=8)]
        ids.append(_run(store, sid, sp, origin, metrics=metrics, parents=parents,
                        generation=gen, worker="gpu0" if i % 2 else "gpu1", seconds=4.1))
        if i % 8 == 7:
            store.add_event(sid, f"generation {gen}: best search ppl {_fitness(i):.2f}",
                            progress=(i + 1) / 30)
    for rank, i in enumerate((17, 13, 9), start=1):  # finalists, best search fitness first
        store.add_metrics(ids[i], [
            _ppl(_fitness(i) * 1.08, "in_domain", stage="finalist", finalist_rank=rank),
            _ppl(_fitness(i) * 2.6, "out_of_domain", dataset="shakespeare", split="hamlet",
                 stage="finalist", finalist_rank=rank)])
    # one Ray actor per GPU, the second on another node; each row says what it runs on
    for name, host, pid, cand in (("gpu0", "gpu-box", 4242, None),
                                  ("gpu1", "gpu-node2", 5120, ids[18])):
        store.heartbeat(name, study_id=sid, candidate_id=cand, host=host, pid=pid, device={
            "device": "cuda:0", "gpu": "NVIDIA H200", "memory_total": 140 * 2**30,
            "memory_used": (30 if cand else 2) * 2**30, "memory_peak": 32 * 2**30,
            "threads": 8, "node": host, "role": "ray actor"})
    return sid


def _structured(store: Store) -> int:
    sid = store.create_study(name="structured-grid", kind="grid", model=MODEL, seed=2,
                             budget=6, config=_config("structured-grid", "grid", 2))
    store.set_study_status(sid, "running")
    _run(store, sid, spec("dense"), "baseline", metrics=[
        _ppl(15.02, "in_domain"), _ppl(34.52, "out_of_domain", dataset="shakespeare",
                                       split="hamlet"),
        *_efficiency(1.348e8, 41.0, None)])
    blocks = 30
    for i in range(5):
        attn = [round(0.05 + 0.35 * ((i + j * 3) % 10) / 10, 3) for j in range(blocks)]
        mlp = [round(0.10 + 0.30 * ((i * 2 + j) % 7) / 7, 3) for j in range(blocks)]
        sp = spec("structured", importance="taylor_mix", attention_ratios=attn, mlp_ratios=mlp)
        ratio = 0.12 + 0.03 * i
        realised = {
            "attention": {"unit": "kv_group", "enabled": True, "target": 0.2, "realised": 0.2,
                          "blocks": list(range(blocks)), "target_per_block": attn,
                          "realised_per_block": [round(min(1.0, a + 0.01), 3) for a in attn]},
            "mlp": {"unit": "channel", "enabled": True, "target": 0.25, "realised": 0.25,
                    "blocks": list(range(blocks)), "target_per_block": mlp,
                    "realised_per_block": mlp},
            "group_ratio": {"target": 0.22, "realised": 0.22}}
        info = {"structured": {"realised": realised, "realised_label":
                               f"realised {ratio:.0%} params (20% KV groups, 25% channels)",
                               "layers": [{"heads": 9, "kv_heads": 3, "mlp": 1536}] * blocks,
                               "param_ratio": ratio},
                "label": f"structured per-layer (realised {ratio:.0%} params)"}
        params = 1.348e8 * (1 - ratio)
        _run(store, sid, sp, "grid", seconds=26.5, info=info, metrics=[
            _ppl(31.0 + 3 * ((i * 5) % 7), "in_domain"),
            _ppl(80.0 + 5 * i, "out_of_domain", dataset="shakespeare", split="hamlet"),
            {"name": "param_ratio", "value": ratio, "role": "structure",
             "protocol": {"params_before": 1.348e8, "params_after": params}},
            *_efficiency(params, 41.0 * (1 - ratio), None)])
    store.request_cancel(sid, "cancelled from the CLI by demo@host")
    store.add_event(sid, "cancel requested: stopping after the current candidate",
                    level="warning")
    store.set_study_status(sid, "cancelled")
    return sid


def _random(store: Store) -> int:
    sid = store.create_study(name="random-search", kind="random", model=MODEL, seed=3,
                             budget=12, config=_config("random-search", "random", 3, search={
                                 "budget": 12, "sparsity": 0.5, "finalists": 2,
                                 "baselines": ["wanda"]}))
    store.set_study_status(sid, "running")
    _run(store, sid, spec("wanda", 0.5, calibration="dense"), "baseline",
         metrics=[_ppl(30.5, "search", fidelity="proxy", seqlen=128, n=8)])
    for i, expr in enumerate(EXPRESSIONS[:10]):
        _run(store, sid, spec("symbolic", 0.5, calibration="dense", expression=expr), "random",
             generation=i, metrics=[_ppl(_fitness(i) + 4.0, "search", fidelity="proxy",
                                         seqlen=128, n=8)], seconds=3.0)
    store.set_study_status(sid, "finished")
    return sid


def _broken(store: Store) -> int:
    sid = store.create_study(name="broken-grid", kind="grid", model=MODEL, seed=4, budget=4,
                             config=_config("broken-grid", "grid", 4))
    store.set_study_status(sid, "running")
    _run(store, sid, spec("dense"), "baseline", metrics=[_ppl(15.02, "in_domain")])
    for i, sparsity in enumerate((0.5, 0.6, 0.7)):
        error = (TRACEBACK if i < 2 else
                 "OutOfMemoryError: CUDA out of memory. Tried to allocate 2.00 GiB\n\n"
                 "Traceback (most recent call last):\n  File \"engine/pruning.py\", line 140")
        _run(store, sid, spec("sparsegpt", sparsity), "grid", metrics=None, error=error,
             worker="gpu1")
    store.set_study_status(sid, "failed", error="3 of 4 candidates failed; see their errors")
    return sid


def _unknown(store: Store) -> int:
    sid = store.create_study(name="anneal-search", kind="anneal", model=MODEL, seed=5, budget=5,
                             config={"study": {"name": "anneal-search", "kind": "anneal",
                                               "seed": 5},
                                     "evaluation": [{"role": "in_domain", "fidelity": "full"}]})
    store.set_study_status(sid, "running")
    for i in range(3):
        _run(store, sid, spec("wanda", 0.5 + 0.05 * i), "anneal",
             metrics=[_ppl(29.0 + 5 * i, "in_domain")], seconds=5.0)
    store.set_study_status(sid, "finished")
    return sid


def build_app_store(path: str | os.PathLike[str]) -> Path:
    """Write the six studies of :data:`STUDIES` at ``path`` (a new file); return the path."""
    p = Path(path)
    if p.exists():
        raise FileExistsError(f"{p} exists; the app store is only written to a new file")
    with fixed_clock(), open_store(p) as store:
        _grid(store)
        _gp(store)
        _structured(store)
        _random(store)
        _broken(store)
        _unknown(store)
    return p


def build_empty_store(path: str | os.PathLike[str]) -> Path:
    """An initialised store without any study."""
    p = Path(path)
    with open_store(p):
        pass
    return p


# -- big stores (benchmarks) ----------------------------------------------------------------

def add_search_candidates(store: Store, study_id: int, start: int, count: int,
                          rng: random.Random) -> list[int]:
    """Add ``count`` finished GP-like candidates (indices from ``start``; 3 % fail, 1 % get a
    held-out figure) in one transaction; return their ids."""
    ids = []
    with store.transaction():
        for i in range(start, start + count):
            sp = spec("symbolic", round(0.5 + i * 1e-7, 7), calibration="dense",
                      expression=random_expression(rng, 4))
            origin = "random" if i < 50 else rng.choice(("mutation", "crossover"))
            parents = None if i < 50 else [rng.randrange(1, max(2, i))]
            cid, _ = store.add_candidate(study_id, sp, origin=origin, generation=i // 50,
                                         parents=parents)
            store.start_candidate(cid, worker=f"gpu{i % 2}")
            if rng.random() < 0.03:
                store.fail_candidate(cid, error="NaN scores in layer 3\n\nTraceback ...")
            else:
                value = 18.0 + 200.0 / (1 + i / 500) + rng.random() * 5
                metrics = [_ppl(value, "search", fidelity="proxy", seqlen=128, n=8)]
                if rng.random() < 0.01:
                    metrics.append(_ppl(value * 1.07, "in_domain"))
                store.finish_candidate(cid, metrics=metrics, timings={"total": 4.0})
            ids.append(cid)
    return ids


def build_big_store(path: str | os.PathLike[str], n: int = 10_000, seed: int = 0) -> int:
    """A store with the six studies of :func:`build_app_store` plus one running GP study of
    ``n`` candidates (``big-gp``); returns that study's id."""
    p = build_app_store(path)
    rng = random.Random(seed)
    with open_store(p) as store:
        sid = store.create_study(name="big-gp", kind="gp", model=MODEL, seed=seed, budget=2 * n,
                                 config=_config("big-gp", "gp", seed, search={"budget": 2 * n}))
        store.set_study_status(sid, "running")
        for start in range(0, n, 1000):
            add_search_candidates(store, sid, start, min(1000, n - start), rng)
    return sid


if __name__ == "__main__":  # pragma: no cover
    target = build_app_store(sys.argv[1] if len(sys.argv) > 1 else "app-demo.db")
    print(f"app store written to {target}")
