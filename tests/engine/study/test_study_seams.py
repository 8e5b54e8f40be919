"""The seams of the one study loop: registries (proposers, measurements, method kinds), the
executor's JSON job / result, and a measurement added by one module (block_sparsity)."""

from __future__ import annotations

import json

import pytest
from prunestudio.engine.methods import (
    PruningMethod,
    ShapeChangingMethod,
    get_method,
    method_names,
)
from prunestudio.engine.models.loading import load_model
from prunestudio.engine.runner import launch_study, prepare
from prunestudio.engine.study.executor import InProcessExecutor, Job
from prunestudio.engine.study.measurements import measurement_names
from prunestudio.engine.study.proposers import proposer_kinds
from prunestudio.store import open_store
from tiny_models import tiny_gp_toml, tiny_study_toml

from prunestudio.schema.spec import CandidateSpec
from prunestudio.schema.study_file import ConfigError, parse_config

try:
    import tomllib
except ImportError:  # pragma: no cover
    import tomli as tomllib


@pytest.fixture(scope="module")
def llama(tiny_model_dirs):
    return load_model(str(tiny_model_dirs["llama"]), device="cpu")


def _data(model_dir, **kw) -> dict:
    return tomllib.loads(tiny_study_toml(model_dir, **kw))


def test_registries_list_every_member():
    assert proposer_kinds() == ["gp", "grid", "predictor", "random", "tpe"]
    assert {"perplexity", "tasks", "efficiency", "fitness", "search_mean", "sparsity",
            "block_sparsity"} <= set(measurement_names())
    structured = get_method("structured")
    assert "structured" in method_names()
    assert isinstance(structured, ShapeChangingMethod)
    assert not isinstance(structured, PruningMethod) and not hasattr(structured, "prune_layer")
    assert isinstance(get_method("wanda"), PruningMethod)


def test_executor_takes_json_jobs_and_returns_json_results(tiny_model_dirs, llama):
    config = parse_config(_data(tiny_model_dirs["llama"], methods='["wanda"]'))
    executor = InProcessExecutor(config, ctx=prepare(config, lm=llama))
    description = executor.setup()
    json.dumps(description)
    spec = CandidateSpec(method="wanda", sparsity=0.5)
    job = Job(7, spec.canonical(), [{"name": "sparsity"}, {"name": "perplexity"}],
              hash_masks=True)
    job = Job.from_dict(json.loads(json.dumps(job.to_dict())))
    result = executor.run(job)
    assert result.status == "done" and result.info["mask_hash"]
    back = json.loads(json.dumps(result.to_dict()))
    assert [m["name"] for m in back["metrics"]] == ["sparsity", "sparsity_max_error", "ppl",
                                                    "ppl"]
    # a known zero pattern comes back 'equivalent', unmeasured
    again = executor.run(Job(8, spec.canonical(), [{"name": "perplexity"}], hash_masks=True,
                             equivalent_masks={result.info["mask_hash"]: 7}))
    assert (again.status, again.equivalent_to, again.metrics) == ("equivalent", 7, [])
    # a failure comes back as a result, and the model is dense again
    bad = executor.run(Job(9, spec.canonical(), [{"name": "nonexistent"}]))
    assert bad.status == "failed" and "unknown measurement 'nonexistent'" in bad.error_summary
    assert all(float((lin.weight == 0).float().mean()) < 0.01
               for lin in llama.adapter.all_prunable_linears(llama.model))


def test_a_measurement_module_is_asked_for_by_name(tmp_path, tiny_model_dirs, llama):
    data = _data(tiny_model_dirs["llama"], methods='["wanda"]', patterns='["unstructured"]')
    data.setdefault("study", {})["measurements"] = ["block_sparsity"]
    study_id, status = launch_study(parse_config(data), tmp_path / "s.db", lm=llama)
    with open_store(tmp_path / "s.db", readonly=True) as store:
        cands = store.candidates(study_id, with_metrics=True)
    assert status == "finished"
    for c in cands:
        (m,) = [m for m in c["metrics"] if m["name"] == "block_sparsity"]
        per_block = m["protocol"]["per_block"]
        assert len(per_block) == 2 and m["value"] == max(per_block) - min(per_block)
        if c["spec"]["method"] == "wanda":
            assert all(abs(s - 0.5) < 1e-3 for s in per_block)
    data["study"]["measurements"] = ["block_sparsty"]
    with pytest.raises(ConfigError, match="unknown measurement.*block_sparsity"):
        parse_config(data)


def test_a_search_takes_the_studys_extra_measurements(tmp_path, tiny_model_dirs, llama):
    data = tomllib.loads(tiny_gp_toml(tiny_model_dirs["llama"], budget=4))
    data["study"]["measurements"] = ["block_sparsity"]
    data["search"].update(population=4, iterations=0, finalists=1, baselines=["wanda"])
    study_id, status = launch_study(parse_config(data), tmp_path / "gp.db", lm=llama)
    with open_store(tmp_path / "gp.db", readonly=True) as store:
        cands = store.candidates(study_id, with_metrics=True)
    assert status == "finished"
    measured = {c["id"] for c in cands for m in c["metrics"] if m["name"] == "block_sparsity"}
    # the baseline and every really evaluated search candidate, nothing reused or skipped
    expected = {c["id"] for c in cands if c["status"] == "done" and c["origin"] == "baseline"
                or (c["info"] or {}).get("evaluation") == "real"}
    assert len(expected) >= 3 and measured == expected
