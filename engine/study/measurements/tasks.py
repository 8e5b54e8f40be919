"""Task accuracy through lm-eval on the in-memory (pruned) model (`evaluate.harness`): one
record per task and metric (acc, acc_norm). Runs when the study has a [tasks] section."""

from __future__ import annotations

from typing import Any

from prunestudio.engine.progress import Reporter
from prunestudio.engine.study.measurements.base import Measurement, Metric


def task_accuracy(lm, tasks, reporter: Reporter | None = None) -> list[dict[str, Any]]:
    """lm-eval accuracy of the in-memory (pruned) model: one metric record per task and
    metric (acc, acc_norm) with its protocol."""
    from prunestudio.engine.evaluate.harness import evaluate_tasks, task_metrics

    reporter = reporter or Reporter()
    with reporter.task(f"lm-eval {', '.join(tasks.names)}"
                       + (f" (limit {tasks.limit})" if tasks.limit is not None else "")):
        results = evaluate_tasks(lm.model, lm.tokenizer, tasks.names, limit=tasks.limit,
                                 num_fewshot=tasks.num_fewshot, batch_size=tasks.batch_size,
                                 progress_bars=False)
    return task_metrics(results)


class Tasks(Measurement):
    name = "tasks"
    timing = "tasks"

    def applies(self, ctx) -> bool:
        return ctx.study.tasks is not None

    def measure(self, model, ctx) -> list[Metric]:
        return task_accuracy(model, ctx.study.tasks, ctx.reporter)
