"""Task evaluation through lm-eval: the offline task's score equals an independent
log-likelihood comparison; bad task names and unreachable datasets fail clearly."""

from __future__ import annotations

import pytest
import torch
from prunestudio.engine.evaluate.harness import (
    OFFLINE_TASK,
    TaskError,
    evaluate_tasks,
    resolve_tasks,
    task_metrics,
)
from prunestudio.engine.evaluate.offline_task.next_line import build_items
from prunestudio.engine.models.loading import load_model
from prunestudio.engine.runner import launch_study, prepare, pruned_model
from prunestudio.engine.studies.config import load_config
from prunestudio.store import open_store, queries
from tiny_models import save_tiny_model, tiny_study_toml

from prunestudio.schema.spec import CandidateSpec
from prunestudio.schema.study_file import ConfigError, parse_config

try:
    import tomllib
except ImportError:  # pragma: no cover
    import tomli as tomllib

pytest.importorskip("lm_eval")

N_ITEMS = 24


def _choice_loglik(model, tok, context: str, choice: str) -> float:
    """log p(choice | context), the continuation tokens being whatever the joined text adds
    after the context's own tokens (the delimiter is a newline)."""
    whole = tok.encode(context + "\n" + choice)
    ctx = tok.encode(context)
    assert whole[: len(ctx)] == ctx
    ids = torch.tensor([whole])
    with torch.no_grad():
        logp = torch.log_softmax(model(ids, use_cache=False).logits[0].double(), dim=-1)
    return sum(float(logp[t - 1, whole[t]]) for t in range(len(ctx), len(whole)))


def _reference_scores(model, tok, items) -> tuple[float, float, list[int]]:
    """(acc, acc_norm, the picked choice per item): the highest log-likelihood choice, and
    the highest per character of the choice."""
    correct = correct_norm = 0
    picks = []
    for item in items:
        ll = [_choice_loglik(model, tok, item["context"], c) for c in item["choices"]]
        best = max(range(len(ll)), key=lambda i: ll[i])
        best_norm = max(range(len(ll)), key=lambda i: ll[i] / len(item["choices"][i]))
        correct += best == item["label"]
        correct_norm += best_norm == item["label"]
        picks.append(best)
    return correct / len(items), correct_norm / len(items), picks


def test_offline_task_score_equals_independent_loglikelihood(tiny_model_dirs):
    lm = load_model(str(tiny_model_dirs["llama"]))
    acc, acc_norm, picks = _reference_scores(lm.model, lm.tokenizer, build_items()[:N_ITEMS])
    assert len(set(picks)) > 1  # the comparison is not degenerate

    (result,) = evaluate_tasks(lm.model, lm.tokenizer, "offline", limit=N_ITEMS, batch_size=4)
    assert result.task == OFFLINE_TASK
    assert result.n_samples == N_ITEMS
    assert result.metrics["acc"] == pytest.approx(acc, abs=1e-12)
    assert result.metrics["acc_norm"] == pytest.approx(acc_norm, abs=1e-12)

    records = {r["name"]: r for r in task_metrics([result])}
    acc = records["acc"]
    assert acc["dataset"] == OFFLINE_TASK and acc["n_samples"] == N_ITEMS
    assert acc["fidelity"] == "proxy" and acc["role"] == "task"
    assert acc["protocol"]["num_fewshot"] == 0
    assert acc["protocol"]["lm_eval_version"]
    assert acc["protocol"]["items_hash"]


def test_offline_items_are_deterministic_and_well_formed():
    a, b = build_items(), build_items()
    assert a == b and len(a) == 500
    for item in a[:50]:
        assert len(item["choices"]) == 4 and len(set(item["choices"])) == 4
        assert 0 <= item["label"] < 4
        assert item["context"].count("\n") == 3  # speaker line + 3 verse lines
    assert len({item["label"] for item in a}) == 4  # the answer's slot varies


def test_task_names_are_resolved_and_unknown_ones_rejected():
    assert resolve_tasks("offline,boolq,boolq") == [OFFLINE_TASK, "boolq"]
    assert len(resolve_tasks(["zero_shot"])) == 7
    with pytest.raises(TaskError, match="unknown task 'bogus'; allowed: shakespeare_next_line"):
        resolve_tasks("bogus")
    with pytest.raises(TaskError, match="no task"):
        resolve_tasks(" , ")


def test_missing_hub_dataset_offline_is_a_clear_error(tiny_model_dirs, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    lm = load_model(str(tiny_model_dirs["gpt2"]))
    with pytest.raises(TaskError, match="task 'piqa' needs the dataset baber/piqa .*"
                                        "shakespeare_next_line"):
        evaluate_tasks(lm.model, lm.tokenizer, ["piqa"], limit=2)


def _tasks_config(model_dir, tasks: dict | None, **data_changes):
    data = tomllib.loads(tiny_study_toml(model_dir, methods='["magnitude"]',
                                         patterns='["unstructured"]'))
    data["grid"]["sparsities"] = [0.8]
    if tasks is not None:
        data["tasks"] = tasks
    data.update(data_changes)
    return parse_config(data, "(test)")


def test_grid_study_scores_each_candidate_on_its_own_pruned_model(tmp_path):
    """The accuracy recorded for a candidate is that of its pruned model (measured before the
    weights are restored), with its protocol; checked against the slow reference. Large
    initial weights, so that pruning changes the model's answers."""
    model_dir = save_tiny_model("llama", tmp_path / "llama", initializer_range=0.5)
    config = _tasks_config(model_dir,
                           {"names": ["offline"], "limit": N_ITEMS, "batch_size": 4})
    study_id, status = launch_study(config, tmp_path / "s.db")
    assert status == "finished"
    with open_store(tmp_path / "s.db", readonly=True) as store:
        cands = store.candidates(study_id, with_metrics=True)
        events = [e["message"] for e in queries.events_since(store, study_id, 0)[0]]
    assert [c["spec"]["method"] for c in cands] == ["dense", "magnitude"]
    assert sum("in_domain ppl" in e and "acc next-line 0." in e for e in events) == 2

    ctx = prepare(config)
    items = build_items()[:N_ITEMS]
    picks = {}
    for cand in cands:
        lm, _, _ = pruned_model(ctx, CandidateSpec.model_validate(cand["spec"]))
        acc, acc_norm, picks[cand["id"]] = _reference_scores(lm.model, lm.tokenizer, items)
        ctx.snapshot.restore()
        recorded = {m["name"]: m for m in cand["metrics"] if m["role"] == "task"}
        assert set(recorded) == {"acc", "acc_norm"}
        assert recorded["acc"]["value"] == pytest.approx(acc, abs=1e-12)
        assert recorded["acc_norm"]["value"] == pytest.approx(acc_norm, abs=1e-12)
        m = recorded["acc"]
        assert (m["dataset"], m["n_samples"], m["fidelity"]) == (OFFLINE_TASK, N_ITEMS, "proxy")
        assert m["protocol"]["limit"] == N_ITEMS and m["protocol"]["num_fewshot"] == 0
        assert cand["timings"]["tasks"] > 0
    dense_id, pruned_id = (c["id"] for c in cands)
    assert picks[dense_id] != picks[pruned_id]  # pruning changed the answers: not degenerate
    scores = [sorted((m["name"], m["value"]) for m in c["metrics"] if m["role"] == "task")
              for c in cands]
    assert scores[0] != scores[1]  # so figures measured on the restored model would be caught


def test_tasks_section_is_validated_with_clear_messages(tiny_model_dirs):
    model = tiny_model_dirs["llama"]
    with pytest.raises(ConfigError, match="tasks.names: unknown task 'bogus'; allowed: "
                                          "shakespeare_next_line"):
        _tasks_config(model, {"names": ["bogus"]})
    for bad in (0, -3, 1.5, 0.0):
        with pytest.raises(ConfigError, match=r"tasks.limit: limit must be an int ≥ 1 "
                                              r"\(examples\) or a fraction 0 < f < 1"):
            _tasks_config(model, {"names": ["offline"], "limit": bad})
    with pytest.raises(ConfigError, match="tasks.colour: unknown key"):
        _tasks_config(model, {"names": ["offline"], "colour": "red"})
    config = _tasks_config(model, {"names": ["zero_shot", "offline"], "limit": 0.25})
    assert config.tasks.names[-1] == OFFLINE_TASK and len(config.tasks.names) == 8
    assert config.tasks.limit == 0.25
    assert _tasks_config(model, {"names": ["offline"], "limit": 100.0}).tasks.limit == 100
    assert "tasks" not in _tasks_config(model, None).to_dict()  # old recorded configs unchanged


def test_search_studies_take_no_tasks_section(tiny_model_dirs):
    with pytest.raises(ConfigError, match=r"\[tasks\] is for grid studies; measure a gp "
                                          r"study's finalists with `prunestudio eval"):
        _tasks_config(tiny_model_dirs["llama"], {"names": ["offline"]},
                      study={"kind": "gp"}, grid={})


def test_default_study_measures_the_offline_task():
    tasks = load_config(None).tasks
    assert tasks is not None and (tasks.names, tasks.limit) == ([OFFLINE_TASK], 100)
