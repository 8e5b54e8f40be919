"""The default study on the embedded SmolLM2-135M (Q4_1 GGUF, dequantized): the judged
orderings, realised sparsity, and agreement with the official Wanda / SparseGPT code run on the
same protocol (figures from the issue). Slow: ~10 minutes on a 2-core CPU."""

from __future__ import annotations

import pytest
from prunestudio.engine.runner import launch_study
from prunestudio.engine.studies.config import load_config
from prunestudio.store import open_store

from prunestudio.schema.study_file import parse_config

pytestmark = pytest.mark.integration

# official code, calibration 16 × 128 from token 0 of pydoc_data.topics, eval 32 × 256 @ 40,000
OFFICIAL = {
    "dense": 15.02,
    "wanda 50%": 28.67, "wanda 2:4": 76.46,
    "sparsegpt 50%": 26.20, "sparsegpt 2:4": 44.69,
    "magnitude[matrix] 50%": 385.1,
}
# Magnitude per row and at 2:4 compare many exactly equal |W| (Q4_1 weights: ~213 distinct
# values in a row of 576); the reference breaks those ties with torch.topk, the default here by
# index (device-independent). With ties="topk" the reference figures come back.
OFFICIAL_TOPK_TIES = {"magnitude[row][ties=topk] 50%": 276.4,
                      "magnitude[matrix][ties=topk] 2:4": 1500.5}
TOLERANCE = {"sparsegpt 50%": 0.02, "sparsegpt 2:4": 0.02}
TASK_ITEMS = 20  # the shipped study scores 100 items of the offline task; 20 keep CI short


def _default_config(task_items: int | None):
    """The embedded default study, its offline task cut to `task_items` (None: no task)."""
    data = load_config(None).to_dict()
    if task_items is None:
        data.pop("tasks")
    else:
        data["tasks"]["limit"] = task_items
    return parse_config(data, "(default study, test)")


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    db = tmp_path_factory.mktemp("default-study") / "s.db"
    study_id, status = launch_study(_default_config(TASK_ITEMS), db)
    assert status == "finished"
    with open_store(db, readonly=True) as store:
        cands = store.candidates(study_id, with_metrics=True)
    assert all(c["status"] == "done" for c in cands), [c["error"] for c in cands]
    out = {}
    for c in cands:
        metrics = {(m["name"], m["role"]): m for m in c["metrics"]}
        out[c["info"]["label"]] = metrics
    return out


def _ppl(results, label, role="in_domain"):
    return results[label][("ppl", role)]["value"]


def test_in_domain_ordering_and_patterns(results):
    for pattern in ("50%", "2:4"):
        dense, sgpt = _ppl(results, "dense"), _ppl(results, f"sparsegpt {pattern}")
        wanda, mag = _ppl(results, f"wanda {pattern}"), _ppl(results, f"magnitude[matrix] {pattern}")
        assert dense < sgpt <= wanda < mag, (pattern, dense, sgpt, wanda, mag)
    for method in ("wanda", "sparsegpt", "gblm", "magnitude[matrix]"):
        assert _ppl(results, f"{method} 2:4") > _ppl(results, f"{method} 50%")


def test_realised_sparsity_within_0_001_of_the_target(results):
    for label, metrics in results.items():
        if label != "dense":
            assert abs(metrics[("sparsity", "pruned_layers")]["value"] - 0.5) <= 1e-3, label
            assert metrics[("sparsity_max_error", "pruned_layers")]["value"] <= 1e-3, label


@pytest.mark.parametrize("label", sorted(OFFICIAL))
def test_matches_the_official_code_on_the_same_protocol(results, label):
    m = results[label][("ppl", "in_domain")]
    assert (m["dataset"], m["seqlen"], m["n_samples"], m["protocol"]["offset"]) == (
        "pydoc", 256, 32, 40000)
    assert m["value"] == pytest.approx(OFFICIAL[label], rel=TOLERANCE.get(label, 0.01))


@pytest.mark.parametrize("label", sorted(OFFICIAL_TOPK_TIES))
def test_magnitude_with_reference_tie_breaking_matches(label):
    from prunestudio.engine.runner import evaluate_candidate, prepare

    from prunestudio.schema.spec import CandidateSpec, Pattern

    spec = CandidateSpec(method="magnitude", sparsity=0.5, options={
        "scope": "row" if "row" in label else "matrix", "ties": "topk"},
        pattern=Pattern.parse("2:4" if "2:4" in label else "unstructured"))
    assert spec.label == label
    ctx = prepare(_default_config(None))
    outcome = evaluate_candidate(ctx, spec)
    ppl = next(m["value"] for m in outcome.metrics if m.get("role") == "in_domain")
    assert ppl == pytest.approx(OFFICIAL_TOPK_TIES[label], rel=0.01)


def test_out_of_domain_is_recorded_beside_and_sparsegpt_overfits(results):
    for metrics in results.values():
        ood = metrics[("ppl", "out_of_domain")]
        assert (ood["dataset"], ood["split"], ood["seqlen"], ood["n_samples"]) == (
            "shakespeare", "hamlet", 256, 32)
    # SparseGPT's updates fit the calibration domain: better in domain, worse out of domain
    assert _ppl(results, "sparsegpt 50%") < _ppl(results, "wanda 50%")
    assert _ppl(results, "sparsegpt 50%", "out_of_domain") > _ppl(results, "wanda 50%",
                                                                   "out_of_domain")


def test_every_candidate_carries_the_offline_task_accuracy(results):
    for label, metrics in results.items():
        for name in ("acc", "acc_norm"):
            m = metrics[(name, "task")]
            assert (m["dataset"], m["n_samples"], m["fidelity"]) == (
                "shakespeare_next_line", TASK_ITEMS, "proxy"), label
            assert m["protocol"]["limit"] == TASK_ITEMS and m["protocol"]["num_fewshot"] == 0
            assert 0.0 <= m["value"] <= 1.0
            assert m["value"] * TASK_ITEMS == pytest.approx(round(m["value"] * TASK_ITEMS))
