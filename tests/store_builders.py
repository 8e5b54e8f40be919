"""What the hand-built test stores share (the TUI's demo store, the web app's stores, the
benchmarks' big stores): canonical specs, a deterministic store clock, random expressions.

Every store built with these is written through the store's own write API; specs are in the
canonical form the engine records (``tests/tui/test_tui_demo_store.py`` checks each one
against ``CandidateSpec``).
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from contextlib import contextmanager
from types import SimpleNamespace
from typing import Any
from unittest import mock

__all__ = ["EVALUATION_SETS", "canonical_spec", "fixed_clock", "random_expression"]

# the default study's two evaluation sets, as a recorded config holds them
EVALUATION_SETS = [
    {"role": "in_domain", "fidelity": "full",
     "windows": {"source": "pydoc", "split": "all", "seqlen": 256, "n": 32, "offset": 40000}},
    {"role": "out_of_domain", "fidelity": "full",
     "windows": {"source": "shakespeare", "split": "hamlet", "seqlen": 256, "n": 32}},
]
_UNSTRUCTURED = {"kind": "unstructured", "n": None, "m": None}
_NM = {"kind": "nm", "n": 2, "m": 4}
# each method's options with their defaults filled in, as the engine records them
_OPTIONS: dict[str, dict[str, Any]] = {
    "dense": {}, "wanda": {}, "gblm": {},
    "magnitude": {"scope": "matrix", "ties": "index"},
    "sparsegpt": {"blocksize": 128, "damp": 0.01},
    "symbolic": {"scope": "row"},
    "structured": {"importance": "taylor_first", "aggregation": "sum", "ratio": "params",
                   "attention_unit": "kv_group", "attention": True, "mlp": True,
                   "block_start": 0, "block_end": None, "attention_ratios": None,
                   "mlp_ratios": None, "alpha": 1.0, "beta": 1.0, "gamma": 1.0, "seed": 0},
}


def canonical_spec(method: str, sparsity: float = 0.0, *, nm: bool = False,
                   calibration: str = "sequential", **options: Any) -> dict[str, Any]:
    """A candidate spec in the engine's canonical form (``CandidateSpec(...).canonical()``)."""
    return {"method": method, "sparsity": sparsity, "pattern": dict(_NM if nm else _UNSTRUCTURED),
            "layer_ratios": "uniform", "owl": None, "calibration": {"mode": calibration},
            "options": {**_OPTIONS[method], **options}}


@contextmanager
def fixed_clock(start: float, step: float) -> Iterator[SimpleNamespace]:
    """Deterministic store timestamps: each write reads a clock that advances by ``step``
    seconds per call (``clock.now`` may be moved by hand)."""
    from prunestudio.store import db as store_db

    clock = SimpleNamespace(now=start)

    def tick() -> float:
        clock.now += step
        return clock.now

    with mock.patch.object(store_db, "time", SimpleNamespace(time=tick)):
        yield clock


_LEAVES = ("W", "G", "X")
_UNARY = ("sqr", "sqrt", "abs", "mms", "zsn", "log", "exp", "tanh", "norm1", "norm2")
_BINARY = ("add", "sub", "mul", "div")


def random_expression(rng: random.Random, depth: int) -> str:
    """A random symbolic metric in canonical text, at most ``depth`` operators deep."""
    if depth == 0 or rng.random() < 0.2:
        return rng.choice(_LEAVES)
    if rng.random() < 0.4:
        return f"{rng.choice(_UNARY)}({random_expression(rng, depth - 1)})"
    return (f"{rng.choice(_BINARY)}({random_expression(rng, depth - 1)},"
            f"{random_expression(rng, depth - 1)})")
