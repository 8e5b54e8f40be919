"""Reconstruction on the embedded SmolLM2-135M (one small study, ~1-2 minutes on 2 cores):
BR+GP on self-generated calibration text lowers magnitude's perplexity and every block's error
against the dense model, keeps the sparsity, records its errors with their protocol, and a
resumed study neither re-runs nor duplicates a candidate."""

from __future__ import annotations

import pytest
from prunestudio.engine.runner import launch_study
from prunestudio.store import open_store

from prunestudio.schema.study_file import parse_config

pytestmark = pytest.mark.integration


def _config() -> dict:
    return {
        "study": {"name": "reconstruction-embedded"},
        "calibration": {"source": "self", "n": 4, "seqlen": 64, "seed": 3},
        "evaluation": [{"role": "in_domain", "windows": {"source": "pydoc", "n": 4,
                                                          "seqlen": 128, "offset": 40000}}],
        "grid": {"methods": ["magnitude"], "include_dense": False},
        "reconstruction": {"modes": ["none", "gp"], "epochs": [2], "batch_size": 1,
                           "lr": 1e-3},
    }


def test_br_gp_on_self_generated_windows_lowers_magnitudes_perplexity(tmp_path):
    db = tmp_path / "s.db"
    config = parse_config(_config(), "(test)")
    study_id, status = launch_study(config, db)
    assert status == "finished"
    with open_store(db, readonly=True) as store:
        cands = {c.label: c for c in store.candidate_records(study_id)}
    plain, fitted = cands["magnitude[matrix] 50%"], cands["magnitude[matrix] 50% +BR+GP 2ep"]
    assert plain.status == fitted.status == "done"
    assert fitted.ppl("in_domain").value < 0.8 * plain.ppl("in_domain").value
    [sparsity] = fitted.find("sparsity", "pruned_layers")
    assert sparsity.value == pytest.approx(0.5, abs=1e-6)
    [after] = fitted.find("calib_error", "reconstruction")
    [before] = fitted.find("calib_error_before", "reconstruction")
    assert after.value < before.value
    per_block = after.protocol["per_block"]
    assert len(per_block) == 30  # every block of SmolLM2-135M, not only the first
    falls = [a < b for a, b in zip(per_block, before.protocol["per_block"], strict=True)]
    assert sum(falls) >= 27, falls  # Adam at lr 1e-3 may overshoot on a block or two
    assert after.identity.dataset == "self" and after.n_samples == 4
    assert after.protocol["calibration"]["generation"]["prefix"] == 5
    assert not plain.find("calib_error")  # not reconstructed: nothing to report

    # resumed: the self-generated windows come back from the cache with the same tokens (or
    # the resume would be refused as changed inputs), and nothing re-runs or duplicates
    again_id, status = launch_study(None, db, resume=study_id)
    assert (again_id, status) == (study_id, "finished")
    with open_store(db, readonly=True) as store:
        again = {c.label: c for c in store.candidate_records(study_id)}
    assert {k: c.finished_at for k, c in again.items()} == {
        k: c.finished_at for k, c in cands.items()}
