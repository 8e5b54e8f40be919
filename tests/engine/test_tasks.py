"""Task evaluation through lm-eval: the offline task's score equals an independent
log-likelihood comparison; bad task names and unreachable datasets fail clearly."""

from __future__ import annotations

import pytest
import torch
from prunestudio.engine.evaluate.tasks import (
    OFFLINE_TASK,
    TaskError,
    evaluate_tasks,
    resolve_tasks,
    task_metrics,
)
from prunestudio.engine.models.loading import load_model
from prunestudio.engine.tasks.next_line import build_items

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


def test_offline_task_score_equals_independent_loglikelihood(tiny_model_dirs):
    lm = load_model(str(tiny_model_dirs["llama"]))
    items = build_items()[:N_ITEMS]
    correct = correct_norm = 0
    picks = set()
    for item in items:
        ll = [_choice_loglik(lm.model, lm.tokenizer, item["context"], c) for c in item["choices"]]
        best = max(range(len(ll)), key=lambda i: ll[i])
        best_norm = max(range(len(ll)), key=lambda i: ll[i] / len(item["choices"][i]))
        correct += best == item["label"]
        correct_norm += best_norm == item["label"]
        picks.add(best)
    assert len(picks) > 1  # the comparison is not degenerate

    (result,) = evaluate_tasks(lm.model, lm.tokenizer, "offline", limit=N_ITEMS, batch_size=4)
    assert result.task == OFFLINE_TASK
    assert result.n_samples == N_ITEMS
    assert result.metrics["acc"] == pytest.approx(correct / N_ITEMS, abs=1e-12)
    assert result.metrics["acc_norm"] == pytest.approx(correct_norm / N_ITEMS, abs=1e-12)

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
