"""The torch-free reconstruction schema (Shin et al. 2024): the study file's section and its
variants, the label suffix, the sweeps and the one overfitting rule every reader uses."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError
from store_builders import canonical_spec

from prunestudio.schema import Candidate
from prunestudio.schema.labels import reconstruction_label, spec_label
from prunestudio.schema.reconstruction import (
    CALIBRATION_ERROR,
    RECONSTRUCTION_ROLE,
    ReconstructionSection,
    ReconstructionSettings,
    overfitting_warnings,
    sweep_points,
)

ROLES = ("in_domain", "out_of_domain")
_ids = iter(range(1, 10_000))


def _cand(method: str, mode: str | None, epochs: int = 10, samples: int | None = None, *,
          calib: float | None = None, ppl: dict[str, float] | None = None,
          status: str = "done", sparsity: float = 0.5) -> Candidate:
    spec = canonical_spec(method, sparsity)
    if mode is not None:
        spec["reconstruction"] = ReconstructionSettings(mode=mode, epochs=epochs,
                                                        samples=samples).recipe()
    metrics: list[dict[str, Any]] = []
    if calib is not None:
        metrics.append({"name": CALIBRATION_ERROR, "value": calib, "role": RECONSTRUCTION_ROLE,
                        "fidelity": "full"})
    for role, value in (ppl or {}).items():
        metrics.append({"name": "ppl", "value": value, "role": role, "fidelity": "full"})
    cid = next(_ids)
    return Candidate.of({"id": cid, "study_id": 1, "idx": cid, "spec": spec, "spec_hash": "",
                         "origin": "grid", "status": status, "metrics": metrics})


def _sweep(method: str = "wanda", mode: str = "br", points: tuple = ()) -> list[Candidate]:
    """Candidates along epochs: points of (epochs, calib, in_domain PPL)."""
    return [_cand(method, mode, e, calib=c, ppl={"in_domain": p, "out_of_domain": 50.0})
            for e, c, p in points]


# -- the study file's section --------------------------------------------------------------


def test_variants_cross_modes_with_samples_then_epochs() -> None:
    section = ReconstructionSection(modes=["none", "br", "gp"], epochs=[1, 4],
                                    samples=[32, None], lr=1e-4)
    found = section.variants()
    assert found[0] is None
    assert [(v.mode, v.samples, v.epochs) for v in found[1:]] == [
        ("br", 32, 1), ("br", 32, 4), ("br", None, 1), ("br", None, 4),
        ("gp", 32, 1), ("gp", 32, 4), ("gp", None, 1), ("gp", None, 4)]
    assert all(v.lr == 1e-4 and v.betas == (0.9, 0.95) for v in found[1:])


def test_default_section_is_none_and_block_wise_at_ten_epochs() -> None:
    found = ReconstructionSection().variants()
    assert found[0] is None and len(found) == 2
    assert found[1] == ReconstructionSettings(mode="br", epochs=10)


@pytest.mark.parametrize("fields, message", [
    ({"epochs": [1, 1]}, "distinct"), ({"modes": []}, "at least one"),
    ({"epochs": [-1]}, "epochs must be >= 0"), ({"samples": [0]}, "samples must be >= 1"),
    ({"batch_size": 8, "micro_batch_size": 3}, "must divide"), ({"typo": 1}, "typo")])
def test_section_refuses_what_is_wrong(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        ReconstructionSection(**fields)


# -- labels ----------------------------------------------------------------------------------


def test_reconstruction_label() -> None:
    assert reconstruction_label(None) == ""
    assert reconstruction_label({"mode": "br", "epochs": 10}) == "+BR 10ep"
    assert reconstruction_label(ReconstructionSettings(mode="gp", epochs=3, samples=32)
                                .recipe()) == "+BR+GP 3ep n32"
    assert reconstruction_label({"mode": "lr", "epochs": 0, "samples": None}) == "+LR 0ep"
    spec = {**canonical_spec("wanda", 0.5),
            "reconstruction": ReconstructionSettings(mode="br").recipe()}
    assert spec_label(spec) == "wanda 50% +BR 10ep"


# -- sweeps ----------------------------------------------------------------------------------


def test_sweep_points_group_by_everything_but_the_swept_value() -> None:
    cands = [*_sweep(points=((4, 0.1, 20.0), (1, 0.3, 22.0))),
             _cand("wanda", "br", 2, status="running"),  # not done: left out
             _cand("wanda", "gp", 1, calib=0.2), _cand("wanda", None)]
    found = sweep_points(cands, "epochs")
    assert list(found) == ["wanda 50% +BR"]  # BR+GP has one point, "none" is no recipe
    assert [v for v, _ in found["wanda 50% +BR"]] == [1, 4]  # sorted by the value
    assert sweep_points(cands, "samples") == {}


def test_samples_none_sorts_last() -> None:
    cands = [_cand("wanda", "br", 5, None, calib=0.1), _cand("wanda", "br", 5, 64, calib=0.2),
             _cand("wanda", "br", 5, 8, calib=0.3)]
    found = sweep_points(cands, "samples")
    assert list(found) == ["wanda 50% +BR 5ep"]
    assert [v for v, _ in found["wanda 50% +BR 5ep"]] == [8, 64, None]


# -- the overfitting rule ------------------------------------------------------------------


def test_warning_when_calibration_error_falls_and_ppl_rises() -> None:
    cands = _sweep(points=((1, 0.3, 24.1), (2, 0.2, 23.5), (4, 0.12, 23.9)))
    found = overfitting_warnings(cands, ROLES)
    assert len(found) == 1
    w = found[0]
    assert (w.role, w.variable, w.low, w.high) == ("in_domain", "epochs", 2, 4)
    assert (w.low_candidate, w.high_candidate) == (cands[1].id, cands[2].id)
    assert w.text == ("overfitting: wanda 50% +BR: epochs 2 → 4 lowered calibration error "
                      "0.2 → 0.12 but raised in_domain PPL 23.500 → 23.900 (candidates "
                      f"{cands[1].id} → {cands[2].id})")


def test_no_warning_when_both_fall_or_calibration_error_rises() -> None:
    assert overfitting_warnings(_sweep(points=((1, 0.3, 24.1), (2, 0.2, 23.5))), ROLES) == []
    # calibration error rose too: not the overfitting picture
    assert overfitting_warnings(_sweep(points=((1, 0.2, 23.5), (2, 0.3, 24.1))), ROLES) == []
    # a role the caller did not ask about is not read
    assert overfitting_warnings(_sweep(points=((1, 0.3, 23.0), (2, 0.2, 24.0))),
                                ["out_of_domain"]) == []


def test_no_warning_across_methods_or_modes() -> None:
    across_methods = [*_sweep("wanda", points=((1, 0.3, 23.0),)),
                      *_sweep("magnitude", points=((2, 0.2, 30.0),))]
    across_modes = [*_sweep("wanda", "br", points=((1, 0.3, 23.0),)),
                    *_sweep("wanda", "gp", points=((2, 0.2, 30.0),))]
    across_sparsity = [_cand("wanda", "br", 1, calib=0.3, ppl={"in_domain": 23.0}),
                       _cand("wanda", "br", 2, calib=0.2, ppl={"in_domain": 30.0},
                             sparsity=0.6)]
    for cands in (across_methods, across_modes, across_sparsity):
        assert sweep_points(cands, "epochs") == {}
        assert overfitting_warnings(cands, ROLES) == []


def test_a_samples_sweep_warns_too_and_names_all_windows() -> None:
    cands = [_cand("sparsegpt", "lr", 3, 16, calib=0.3, ppl={"out_of_domain": 40.0}),
             _cand("sparsegpt", "lr", 3, None, calib=0.2, ppl={"out_of_domain": 41.0})]
    (w,) = overfitting_warnings(cands, ROLES)
    assert (w.variable, w.low, w.high, w.role) == ("samples", 16, "all", "out_of_domain")
    assert w.label == "sparsegpt 50% +LR 3ep"
    assert "samples 16 → all" in w.text


def test_missing_values_say_nothing() -> None:
    cands = [_cand("wanda", "br", 1, calib=0.3, ppl={"in_domain": 23.0}),
             _cand("wanda", "br", 2, calib=None, ppl={"in_domain": 30.0}),
             _cand("wanda", "br", 4, calib=0.1)]
    assert len(sweep_points(cands, "epochs")["wanda 50% +BR"]) == 3
    assert overfitting_warnings(cands, ROLES) == []
