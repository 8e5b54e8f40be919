"""The study runner on tiny models: every candidate recorded with its protocol, failures
recorded without stopping the study, cancellation honoured, resume without duplicates."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from prunestudio.engine.data.windows import WindowSpec, build_windows
from prunestudio.engine.models.loading import load_model
from prunestudio.engine.runner import launch_study, run_recorded, start_study
from prunestudio.store import open_store
from tiny_models import tiny_study_toml

from prunestudio.schema.study_file import parse_config

try:
    import tomllib
except ImportError:  # pragma: no cover
    import tomli as tomllib


def _config(model_dir: Path, **kw):
    return parse_config(tomllib.loads(tiny_study_toml(model_dir, **kw)))


@pytest.fixture(scope="module")
def llama(tiny_model_dirs):
    return load_model(str(tiny_model_dirs["llama"]), device="cpu")


def test_study_records_every_candidate_with_protocol(tmp_path, tiny_model_dirs, llama):
    config = _config(tiny_model_dirs["llama"], methods='["magnitude", "wanda", "sparsegpt"]')
    study_id, status = launch_study(config, tmp_path / "s.db", lm=llama)
    assert status == "finished"
    with open_store(tmp_path / "s.db", readonly=True) as store:
        cands = store.candidates(study_id, with_metrics=True)
        study = store.get_study(study_id)
    assert [c["status"] for c in cands] == ["done"] * 7  # dense + 3 methods × 2 patterns
    assert study["budget"] == 7 and study["status"] == "finished"
    for c in cands:
        ppl = {m["role"]: m for m in c["metrics"] if m["name"] == "ppl"}
        assert set(ppl) == {"in_domain", "out_of_domain"}
        m = ppl["in_domain"]
        assert (m["dataset"], m["split"], m["seqlen"], m["n_samples"], m["fidelity"]) == (
            "pydoc", "all", 64, 4, "full")
        assert m["protocol"]["offset"] == 20000 and m["protocol"]["n_tokens_scored"] == 4 * 63
        assert math.isclose(math.exp(m["protocol"]["nll_sum"] / (4 * 63)), m["value"],
                            rel_tol=1e-9)
        assert ppl["out_of_domain"]["dataset"] == "shakespeare"
        if c["spec"]["method"] != "dense":
            sparsity = next(x for x in c["metrics"] if x["name"] == "sparsity")
            assert abs(sparsity["value"] - 0.5) <= 1e-3
            assert set(c["timings"]) >= {"prune", "evaluate", "restore", "total"}


def test_recorded_dense_ppl_matches_a_direct_forward(tmp_path, tiny_model_dirs, llama):
    config = _config(tiny_model_dirs["llama"], methods='["wanda"]', patterns='["unstructured"]')
    study_id, _ = launch_study(config, tmp_path / "s.db", lm=llama)
    with open_store(tmp_path / "s.db", readonly=True) as store:
        dense = store.candidates(study_id, with_metrics=True)[0]
    recorded = next(m["value"] for m in dense["metrics"] if m["role"] == "in_domain")
    win = build_windows(WindowSpec(source="pydoc", seqlen=64, n=4, offset=20000), llama.tokenizer)
    with torch.no_grad():  # the weights were restored after Wanda: the dense model again
        losses = [llama.model(w[None], labels=w[None]).loss.double() for w in win.ids]
    assert recorded == pytest.approx(math.exp(sum(losses) / len(losses)), rel=1e-5)


NON_FINITE = "pow(exp(div(X,sub(X,X))))"  # X/ε → exp clamps at e^50 → cubed overflows to inf


def test_failing_candidate_is_recorded_and_the_study_goes_on(tmp_path, tiny_model_dirs, llama):
    config = _config(tiny_model_dirs["llama"], methods='["magnitude"]',
                     patterns='["unstructured"]',
                     extra=f"""
[[candidates]]
method = "symbolic"
sparsity = 0.6
options = {{ expression = "{NON_FINITE}" }}
""")
    study_id, status = launch_study(config, tmp_path / "s.db", lm=llama)
    with open_store(tmp_path / "s.db", readonly=True) as store:
        by_method = {c["spec"]["method"]: c
                     for c in store.candidates(study_id, with_metrics=True)}
        events = [e["message"] for e in store.db.query("SELECT message FROM events")]
    assert status == "finished"
    failed = by_method["symbolic"]
    assert failed["status"] == "failed" and "non-finite" in failed["error"]
    assert failed["metrics"] == []
    assert by_method["magnitude"]["status"] == "done"
    assert any(f"candidate {failed['id']} failed" in e for e in events)
    # the failed candidate left no pruned weights behind: dense PPL of the model is unchanged
    assert all(float((lin.weight == 0).float().mean()) < 0.01
               for lin in llama.adapter.all_prunable_linears(llama.model))


def test_a_pattern_no_layer_can_take_is_refused_before_the_study_exists(tmp_path,
                                                                        tiny_model_dirs, llama):
    from prunestudio.engine.preflight import PreflightError

    # 3:5 is a valid pattern, but 5 divides none of the tiny model's input widths (64, 128)
    config = _config(tiny_model_dirs["llama"], methods='["magnitude"]',
                     patterns='["3:5", "unstructured"]')
    with pytest.raises(PreflightError, match=r"pattern 3:5: groups of 5 .* width\(s\) 64, 128"):
        launch_study(config, tmp_path / "s.db", lm=llama)
    with open_store(tmp_path / "s.db", readonly=True) as store:
        assert list(store.db.query("SELECT id FROM studies")) == []


def test_cancel_request_stops_at_a_candidate_boundary_and_resume_finishes(
        tmp_path, tiny_model_dirs, llama):
    config = _config(tiny_model_dirs["llama"], methods='["magnitude", "wanda"]')
    db = tmp_path / "s.db"
    with open_store(db) as store:
        study_id = start_study(store, config, name="to-cancel")
        store.request_cancel(study_id, "user asked from the TUI")
        assert run_recorded(store, study_id, config, lm=llama) == "cancelled"
        study = store.get_study(study_id)
        assert study["status"] == "cancelled" and study["error"] == "user asked from the TUI"
        assert {c["status"] for c in store.candidates(study_id)} == {"pending"}
    sid, status = launch_study(None, db, resume="to-cancel", lm=llama)
    with open_store(db, readonly=True) as store:
        cands = store.candidates(sid)
    assert sid == study_id and status == "finished"
    assert [c["status"] for c in cands] == ["done"] * 5
    assert len({c["spec_hash"] for c in cands}) == 5


def test_study_name_must_be_new(tmp_path, tiny_model_dirs, llama):
    config = _config(tiny_model_dirs["llama"], methods='["magnitude"]', patterns='["2:4"]')
    launch_study(config, tmp_path / "s.db", name="once", lm=llama)
    with pytest.raises(Exception, match="already exists.*resume"):
        launch_study(config, tmp_path / "s.db", name="once", lm=llama)


@pytest.mark.parametrize("arch", ["opt", "gpt_neox", "gpt2"])
def test_other_architectures_run_a_study(tmp_path, tiny_model_dirs, arch):
    config = _config(tiny_model_dirs[arch], methods='["wanda", "sparsegpt"]')
    study_id, status = launch_study(config, tmp_path / "s.db")
    with open_store(tmp_path / "s.db", readonly=True) as store:
        cands = store.candidates(study_id, with_metrics=True)
    assert status == "finished" and [c["status"] for c in cands] == ["done"] * 5
    for c in cands[1:]:
        sparsity = next(m for m in c["metrics"] if m["name"] == "sparsity")
        assert abs(sparsity["value"] - 0.5) <= 1e-3
        assert all(math.isfinite(m["value"]) for m in c["metrics"])
