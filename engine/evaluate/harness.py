"""Task accuracy through lm-eval's Python API, on the in-memory model (no save / reload).

Tasks:
  offline  - `shakespeare_next_line`, a local lm-eval task built from the shipped corpus
             (prunestudio/engine/evaluate/offline_task/), for the default demo with no network;
  zero-shot (the pruning papers' seven) - boolq, piqa, hellaswag, winogrande, arc_easy,
             arc_challenge, openbookqa; and `mmlu` (5-shot in the papers, 0-shot by default
             here: pass num_fewshot) - these download their datasets from the Hugging Face hub.
Aliases: `zero_shot` (the seven), `offline`.

The task index never scans lm-eval's ~15k built-in task configs: it is built with
`TaskManager(include_path=[...], include_defaults=False)` over our own folder plus the few
built-in folders that hold the requested tasks.

Each result becomes store metric records: name acc / acc_norm, dataset = task, n_samples =
examples scored, fidelity proxy (with a limit) or full, and a protocol with the few-shot count,
the lm-eval version, the limit and the stderr.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

OFFLINE_TASK = "shakespeare_next_line"
ZERO_SHOT_TASKS = ("boolq", "piqa", "hellaswag", "winogrande", "arc_easy", "arc_challenge",
                   "openbookqa")
HUB_TASKS = (*ZERO_SHOT_TASKS, "mmlu")
ALL_TASKS = (OFFLINE_TASK, *HUB_TASKS)
ALIASES = {"zero_shot": ZERO_SHOT_TASKS, "offline": (OFFLINE_TASK,)}

# lm-eval folders (relative to lm_eval/tasks) that hold each hub task's YAML.
_BUILTIN_DIRS = {
    "boolq": "super_glue/boolq", "piqa": "piqa", "hellaswag": "hellaswag",
    "winogrande": "winogrande", "arc_easy": "arc", "arc_challenge": "arc",
    "openbookqa": "openbookqa", "mmlu": "mmlu/default",
}
_DATASETS = {
    "boolq": "aps/super_glue (boolq)", "piqa": "baber/piqa", "hellaswag": "Rowan/hellaswag",
    "winogrande": "allenai/winogrande", "arc_easy": "allenai/ai2_arc",
    "arc_challenge": "allenai/ai2_arc", "openbookqa": "allenai/openbookqa",
    "mmlu": "cais/mmlu",
}
_METRICS = ("acc", "acc_norm")


class TaskError(ValueError):
    """Unknown task name, missing lm-eval, or a task whose data cannot be loaded here."""


def resolve_tasks(names: str | Sequence[str]) -> list[str]:
    """'a,b' or a list; aliases expanded; order kept, duplicates dropped; unknown → TaskError."""
    if isinstance(names, str):
        names = [n for n in names.split(",")]
    out: list[str] = []
    for raw in names:
        name = raw.strip().lower()
        if not name:
            continue
        expanded = ALIASES.get(name, (name,))
        for n in expanded:
            if n not in ALL_TASKS:
                aliases = ", ".join(f"{k}={'+'.join(v)}" for k, v in ALIASES.items())
                raise TaskError(
                    f"unknown task {raw.strip()!r}; allowed: {', '.join(ALL_TASKS)} "
                    f"(aliases: {aliases})"
                )
            if n not in out:
                out.append(n)
    if not out:
        raise TaskError(f"no task given; allowed: {', '.join(ALL_TASKS)}")
    return out


def _lm_eval():
    try:
        import lm_eval
    except ImportError as exc:
        raise TaskError(
            "task evaluation needs lm-eval: pip install 'lm-eval>=0.4.13,<0.5'"
        ) from exc
    return lm_eval


def task_manager(names: Sequence[str]):
    """A TaskManager that indexes only our folder and the built-in folders `names` need."""
    _lm_eval()
    import lm_eval.tasks as builtin
    from lm_eval.tasks import TaskManager
    from prunestudio.engine.evaluate.offline_task import TASKS_DIR

    root = Path(builtin.__file__).parent
    paths = [str(TASKS_DIR)]
    for n in names:
        if n in _BUILTIN_DIRS:
            p = str(root / _BUILTIN_DIRS[n])
            if p not in paths:
                paths.append(p)
    return TaskManager(include_path=paths, include_defaults=False)


@dataclass
class TaskResult:
    task: str
    metrics: dict[str, float]
    stderr: dict[str, float]
    n_samples: int
    num_fewshot: int
    limit: int | float | None
    version: str
    extra: dict[str, Any] = field(default_factory=dict)
    n_available: int | None = None  # examples the task has; None when lm-eval did not say

    @property
    def fidelity(self) -> str:
        """'full' when every example of the task was scored (no limit, or a limit at least the
        task's size), else 'proxy'. A limit alone does not make a figure a proxy."""
        if self.limit is None:
            return "full"
        if self.n_available is not None and self.n_samples >= self.n_available:
            return "full"
        return "proxy"

    def records(self) -> list[dict[str, Any]]:
        """Store metric dicts (one per metric) carrying the protocol."""
        out = []
        for name, value in self.metrics.items():
            out.append({
                "name": name,
                "value": value,
                "dataset": self.task,
                "n_samples": self.n_samples,
                "fidelity": self.fidelity,
                "role": "task",
                "protocol": {
                    "num_fewshot": self.num_fewshot,
                    "limit": self.limit,
                    "n_available": self.n_available,
                    "stderr": self.stderr.get(name),
                    "lm_eval_version": self.version,
                    "harness": "lm-eval simple_evaluate, HFLM on the in-memory model",
                    **self.extra,
                },
            })
        return out


def _load_task(tm, name: str):
    """Load one task (its dataset included); a data failure becomes a clear TaskError."""
    try:
        loaded = tm.load([name])
    except Exception as exc:  # datasets raises many types for "offline" / "not found"
        if name == OFFLINE_TASK:
            raise TaskError(f"the offline task {name!r} could not be built: {exc}") from exc
        offline = os.environ.get("HF_HUB_OFFLINE") == "1" or os.environ.get(
            "HF_DATASETS_OFFLINE") == "1"
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise TaskError(
            f"task {name!r} needs the dataset {_DATASETS.get(name, '?')} from the Hugging Face "
            f"hub, which could not be loaded{' (HF_HUB_OFFLINE=1)' if offline else ''}: "
            f"{type(exc).__name__}: {first}. Without internet use the task {OFFLINE_TASK!r} "
            "(alias 'offline'), or pre-download the dataset into the datasets cache."
        ) from exc
    obj = loaded["groups"].get(name) or loaded["tasks"].get(name)
    if obj is None:
        raise TaskError(f"lm-eval did not return task {name!r} (got {list(loaded['tasks'])[:5]})")
    return obj


def _n_samples(results: dict, name: str, is_group: bool, which: str = "effective") -> int:
    """Examples lm-eval scored (`which="effective"`) or the task has (`"original"`)."""
    n = results.get("n-samples", {})
    if name in n:
        return int(n[name].get(which, n[name].get("original", 0)))
    if is_group:  # a group (mmlu): sum over its subtasks
        subtasks = results.get("group_subtasks", {}).get(name, [])
        return sum(int(n[s].get(which, 0)) for s in subtasks if s in n)
    return 0


def _quiet_hflm(hflm_class):
    """HFLM without its per-request progress bars (a study shows its own progress)."""

    class QuietHFLM(hflm_class):
        def loglikelihood(self, requests, disable_tqdm: bool = False):
            return super().loglikelihood(requests, disable_tqdm=True)

        def loglikelihood_rolling(self, requests, disable_tqdm: bool = False):
            return super().loglikelihood_rolling(requests, disable_tqdm=True)

        def generate_until(self, requests, disable_tqdm: bool = False):
            return super().generate_until(requests, disable_tqdm=True)

    return QuietHFLM


@contextmanager
def _no_git_lookup():
    """lm-eval records the git hash of the *current directory* by running `git describe`,
    which prints `fatal: not a git repository` on stderr outside one (through `--quiet`) and
    says nothing about the model or the task: skipped (the protocol records lm-eval's version).
    """
    import lm_eval.evaluator as evaluator

    saved = getattr(evaluator, "get_git_commit_hash", None)
    if saved is None:  # another lm-eval layout: leave it alone
        yield
        return
    evaluator.get_git_commit_hash = lambda: None
    try:
        yield
    finally:
        evaluator.get_git_commit_hash = saved


def evaluate_tasks(model, tokenizer, tasks: str | Sequence[str], *, limit: int | float | None = None,
                   num_fewshot: int | None = None, batch_size: int = 8,
                   max_length: int | None = None, seed: int = 0,
                   progress_bars: bool = True) -> list[TaskResult]:
    """Evaluate the in-memory `model` on `tasks` with lm-eval; one TaskResult per task.

    `limit`: at most this many examples per (sub)task (a cheap proxy, recorded as fidelity
    'proxy'). `num_fewshot`: None keeps each task's default (0 for all of ours).
    `progress_bars=False` hides lm-eval's request bars (studies report their own progress).
    """
    names = resolve_tasks(tasks)
    lm_eval = _lm_eval()
    from lm_eval.api.group import Group
    from lm_eval.models.huggingface import HFLM

    if not progress_bars:
        HFLM = _quiet_hflm(HFLM)  # noqa: N806 - the class lm-eval instantiates

    kwargs: dict[str, Any] = {"pretrained": model, "tokenizer": tokenizer,
                              "batch_size": batch_size}
    if max_length is not None:
        kwargs["max_length"] = max_length
    was_training = model.training
    quiet = logging.getLogger("lm_eval")
    level = quiet.level
    quiet.setLevel(logging.ERROR)  # per-task chatter (custom kwargs, default aggregations, ...)
    try:
        tm = task_manager(names)
        objects = [_load_task(tm, n) for n in names]
        model.eval()
        lm = HFLM(**kwargs)
        with _no_git_lookup():
            out = lm_eval.simple_evaluate(
                model=lm, tasks=objects, task_manager=tm, limit=limit,
                num_fewshot=num_fewshot, log_samples=False, bootstrap_iters=1000,
                random_seed=seed, numpy_random_seed=seed, torch_random_seed=seed,
                fewshot_random_seed=seed,
            )
    finally:
        quiet.setLevel(level)
        model.train(was_training)
    version = getattr(lm_eval, "__version__", "unknown")
    results = []
    for name, obj in zip(names, objects, strict=True):
        is_group = isinstance(obj, Group)
        res = out["results"].get(name) or out.get("groups", {}).get(name) or {}
        metrics, stderr = {}, {}
        for m in _METRICS:
            key = f"{m},none"
            if key in res and isinstance(res[key], (int, float)):
                metrics[m] = float(res[key])
                se = res.get(f"{m}_stderr,none")
                if isinstance(se, (int, float)):
                    stderr[m] = float(se)
        fewshot = out.get("n-shot", {}).get(name, num_fewshot or 0)
        extra: dict[str, Any] = {}
        if name == OFFLINE_TASK:
            from prunestudio.engine.evaluate.offline_task.next_line import build_items, items_hash

            kw = dict(getattr(obj.config, "dataset_kwargs", None) or {})
            extra["items_hash"] = items_hash(build_items(**kw))
            extra["items"] = kw
        available = _n_samples(out, name, is_group, "original") or None
        results.append(TaskResult(name, metrics, stderr, _n_samples(out, name, is_group),
                                  int(fewshot or 0), limit, version, extra, available))
    return results


def task_metrics(results: Sequence[TaskResult]) -> list[dict[str, Any]]:
    return [r for res in results for r in res.records()]
