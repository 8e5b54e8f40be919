"""The grid proposer's overfitting events: a reconstructed candidate that completes a sweep step
where calibration error fell but held-out PPL rose gets a warning note (recorded as an event);
the schema's rule decides (the same `show`, the TUI and the web app apply)."""

from __future__ import annotations

from prunestudio.engine.study.proposers.grid import GridProposer
from prunestudio.store import open_store
from reconstruction_store import build_reconstruction_store, expected_warning

from prunestudio.schema.study_file import parse_config


def test_the_step_that_overfits_is_a_warning_on_both_its_candidates(tmp_path):
    path, ids = build_reconstruction_store(tmp_path / "r.db")
    with open_store(path, readonly=True) as store:
        study = store.get_study(ids["study"])
        cands = store.candidates(ids["study"], with_metrics=True)
    proposer = GridProposer(parse_config(study["config"], "(test)"))
    proposer.restore(cands, {"model": "m", "dtype": "float32", "device": "cpu",
                               "timings": {"load": 0.0}})
    for key, warned in (("br4", True), ("br2", True), ("br1", False), ("none", False),
                        ("dense", False)):
        notes = proposer._overfitting(ids[key])
        assert [(n.level, n.message) for n in notes] == (
            [("warning", expected_warning(ids))] if warned else []), key
