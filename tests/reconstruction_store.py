"""A store with a reconstruction grid (Shin et al. 2024), written through the store's write API
with fixed timestamps, for the web app's, ``show``'s and the TUI's tests.

Two grid studies: ``plain-grid`` (dense and Wanda 50 %, no reconstruction) and, newer,
``reconstruction-grid``: dense, Wanda 50 % as pruned ("none") and Wanda 50 % +BR at 1, 2 and
4 epochs. Along the epochs sweep the calibration error falls monotonically (0.3 → 0.2 →
0.12) while the in-domain PPL falls then rises at the last step (24.1 → 23.5 → 23.9) and the
out-of-domain PPL keeps falling: exactly one overfitting warning (in_domain, epochs 2 → 4).
Reconstructed candidates record ``calib_error`` / ``calib_error_before`` /
``recon_error_before`` / ``recon_error_after`` (role ``reconstruction``) with per-block lists
in their protocols, as the engine's reconstruction step writes them.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from prunestudio.store import Store, open_store
from store_builders import EVALUATION_SETS, canonical_spec, fixed_clock

from prunestudio.schema.reconstruction import ReconstructionSettings

__all__ = ["BLOCKS", "EPOCHS", "add_plain_study", "add_reconstruction_study",
           "build_reconstruction_store", "expected_warning", "recipe", "reconstructed_spec"]

START = 1_767_225_600.0  # 2026-01-01 00:00:00 UTC
MODEL = "smollm2-135m-instruct (Q4_1 GGUF)"
BLOCKS = 4
CALIBRATION = {"source": "pydoc", "split": "all", "seqlen": 128, "n": 16, "offset": 0}
# epochs -> (calib_error, in_domain PPL, out_of_domain PPL)
EPOCHS = {1: (0.3, 24.1, 60.2), 2: (0.2, 23.5, 58.9), 4: (0.12, 23.9, 58.1)}
DENSE = (15.02, 34.52)
NONE = (28.70, 70.49)


def recipe(mode: str = "br", epochs: int = 10, samples: int | None = None) -> dict[str, Any]:
    """A reconstruction recipe as a spec records it (every field, defaults filled in)."""
    return ReconstructionSettings(mode=mode, epochs=epochs, samples=samples).recipe()


def reconstructed_spec(method: str, sparsity: float, mode: str, epochs: int,
                       samples: int | None = None) -> dict[str, Any]:
    return {**canonical_spec(method, sparsity), "reconstruction": recipe(mode, epochs, samples)}


def _config(name: str, reconstruction: dict[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "study": {"name": name, "kind": "grid", "seed": 0},
        "model": {"source": "default", "device": "auto", "dtype": "auto"},
        "calibration": CALIBRATION, "evaluation": [{**e, "batch_size": 4}
                                                   for e in EVALUATION_SETS],
        "grid": {"methods": ["wanda"], "sparsities": [0.5], "patterns": ["unstructured"]},
        "candidates": []}
    if reconstruction is not None:
        out["reconstruction"] = reconstruction
    return out


def _ppl(in_domain: float, out_of_domain: float) -> list[dict[str, Any]]:
    return [{"name": "ppl", "value": value, "dataset": dataset, "split": split, "seqlen": 256,
             "n_samples": 32, "fidelity": "full", "role": role,
             "protocol": {"selection": "contiguous", "tokens_hash": f"t{role}"}}
            for value, role, dataset, split in (
                (in_domain, "in_domain", "pydoc", "all"),
                (out_of_domain, "out_of_domain", "shakespeare", "hamlet"))]


def _errors(calib: float, mode: str, epochs: int) -> list[dict[str, Any]]:
    """The four reconstruction metrics: per-block errors growing with depth, their mean the
    recorded value."""
    weights = [0.4, 0.8, 1.2, 1.6]  # mean 1.0
    after = [round(calib * w, 6) for w in weights]
    before = [round(2.5 * calib * w, 6) for w in weights]
    target_before = [round(1.5 * calib * w, 6) for w in weights]
    target_after = [round(0.5 * calib * w, 6) for w in weights]
    curve = [[round(b * (1.0 - 0.5 * (e + 1) / epochs), 6) for e in range(epochs)]
             for b in target_before]

    def metric(name: str, value: float, protocol: dict[str, Any]) -> dict[str, Any]:
        return {"name": name, "value": value, "dataset": "pydoc", "split": "all",
                "seqlen": 128, "n_samples": 16, "fidelity": "full", "role": "reconstruction",
                "protocol": protocol}

    return [
        metric("calib_error_before", 2.5 * calib, {"per_block": before}),
        metric("calib_error", calib, {"per_block": after, "mode": mode, "epochs": epochs}),
        metric("recon_error_before", 1.5 * calib, {"per_block": target_before}),
        metric("recon_error_after", 0.5 * calib, {"per_block_before": target_before,
                                                  "per_block_after": target_after,
                                                  "curve": curve})]


def _done(store: Store, sid: int, spec: dict[str, Any], origin: str,
          metrics: list[dict[str, Any]]) -> int:
    cid, _ = store.add_candidate(sid, spec, origin=origin)
    store.start_candidate(cid, worker="gpu0")
    store.finish_candidate(cid, metrics=metrics, timings={"total": 12.0})
    return cid


def add_plain_study(store: Store) -> int:
    """A grid without reconstruction: dense and Wanda 50 %."""
    sid = store.create_study(name="plain-grid", kind="grid", model=MODEL, seed=0, budget=2,
                             config=_config("plain-grid", None))
    store.set_study_status(sid, "running")
    _done(store, sid, canonical_spec("dense"), "baseline", _ppl(*DENSE))
    _done(store, sid, canonical_spec("wanda", 0.5), "grid", _ppl(*NONE))
    store.set_study_status(sid, "finished")
    return sid


def add_reconstruction_study(store: Store) -> dict[str, int]:
    """The reconstruction grid; returns ids: ``study``, ``dense``, ``none`` and ``br1`` /
    ``br2`` / ``br4`` (Wanda 50 % +BR at that many epochs)."""
    sid = store.create_study(name="reconstruction-grid", kind="grid", model=MODEL, seed=0,
                             budget=5, config=_config("reconstruction-grid", {
                                 "modes": ["none", "br"], "epochs": list(EPOCHS)}))
    store.set_study_status(sid, "running")
    ids = {"study": sid}
    ids["dense"] = _done(store, sid, canonical_spec("dense"), "baseline", _ppl(*DENSE))
    ids["none"] = _done(store, sid, canonical_spec("wanda", 0.5), "grid", _ppl(*NONE))
    for epochs, (calib, in_domain, out_of_domain) in EPOCHS.items():
        ids[f"br{epochs}"] = _done(store, sid, reconstructed_spec("wanda", 0.5, "br", epochs),
                                   "grid", [*_ppl(in_domain, out_of_domain),
                                            *_errors(calib, "br", epochs)])
    store.add_event(sid, "study finished: 5 done", progress=1.0)
    store.set_study_status(sid, "finished")
    return ids


def expected_warning(ids: dict[str, int]) -> str:
    """The one overfitting warning of the reconstruction grid (``OverfitWarning.text``)."""
    return ("overfitting: wanda 50% +BR: epochs 2 → 4 lowered calibration error 0.2 → 0.12 "
            "but raised in_domain PPL 23.500 → 23.900 (candidates "
            f"{ids['br2']} → {ids['br4']})")


def build_reconstruction_store(path: str | os.PathLike[str]) -> tuple[Path, dict[str, int]]:
    """Write both studies at ``path`` (a new file); return the path and the reconstruction
    grid's ids (``plain`` is the plain grid's study id)."""
    p = Path(path)
    if p.exists():
        raise FileExistsError(f"{p} exists; the store is only written to a new file")
    with fixed_clock(START, 5.0), open_store(p) as store:
        plain = add_plain_study(store)
        ids = add_reconstruction_study(store)
    return p, {**ids, "plain": plain}
