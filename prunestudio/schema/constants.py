"""The fixed vocabularies of Prune Studio's records: one definition each.

The store validates against these, the engine writes them, the UIs filter by them.
"""

from __future__ import annotations

__all__ = [
    "SEARCH_PART_PREFIX",
    "is_search_part",
    "search_part_roles",
    "SEARCH_FULL_ROLE",
    "SEARCH_KINDS",
    "STUDY_STATUSES",
    "STUDY_TERMINAL",
    "CANDIDATE_STATUSES",
    "EVENT_LEVELS",
    "FIDELITIES",
    "METRIC_KEYS",
    "METRIC_IDENTITY_KEYS",
    "SEARCH_ROLE",
    "FITNESS_METRIC",
    "TASK_ROLE",
    "REFERENCE_METHODS",
    "REFERENCE_ORIGINS",
    "HIGHER_IS_BETTER",
]

# Study kinds are the kinds of the engine's proposers (engine/study/proposers, one module
# each). A kind listed here is a search ranked by its fitness (role 'search'), which readers
# must know without the engine: gp and random search over symbolic metrics, and the
# accuracy-predictor search over per-block structured ratios (its predictors and selection are
# ranked by the search-split PPL too; task accuracy is a second, predicted objective).
SEARCH_KINDS = ("gp", "random", "predictor", "tpe")

# 'interrupted': the runner stopped on Ctrl-C / SIGTERM (resumable, like 'cancelled').
# A 'running' study whose runner died without a word is shown as 'stale' (see
# prunestudio.store.liveness): 'stale' is never stored.
STUDY_STATUSES = ("created", "running", "finished", "failed", "cancelled", "interrupted")
STUDY_TERMINAL = ("finished", "failed", "cancelled", "interrupted")
CANDIDATE_STATUSES = ("pending", "running", "done", "failed", "skipped")
EVENT_LEVELS = ("info", "warning", "error")
FIDELITIES = ("proxy", "full")

# Every field a metric record may carry (what the engine hands the store), and the fields
# that make up its identity: two values are comparable only when these are all equal.
METRIC_KEYS = (
    "name", "value", "dataset", "split", "seqlen", "n_samples", "fidelity", "role", "protocol",
)
METRIC_IDENTITY_KEYS = ("name", "role", "dataset", "split", "seqlen", "fidelity")

# A search candidate's fitness: perplexity on the search split, role 'search', fidelity proxy.
# The role is reserved: no [[evaluation]] set may take it.
SEARCH_ROLE = "search"
FITNESS_METRIC = ("ppl", SEARCH_ROLE)  # (name, role)
TASK_ROLE = "task"  # lm-eval task accuracies (dataset = the task name)
# One text of a fitness averaged over several (AdaPruner's objective): role 'search_<source>'
# (`search_part_roles`), fidelity proxy; the mean itself has role 'search'.
SEARCH_PART_PREFIX = "search_"
# A search fitness re-measured at higher fidelity (successive halving: more windows of the same
# search text, fidelity full): not a part of an averaged objective, not held-out text.
SEARCH_FULL_ROLE = SEARCH_PART_PREFIX + "full"


def search_part_roles(texts: list[tuple[str, str]]) -> list[str]:
    """The role of each (source, split) text of a fitness averaged over several: ``search_``
    + the source, + ``_<split>`` where two texts share a source, + ``_<i>`` where even that
    repeats (a role names one text of the study)."""
    def clean(x: str) -> str:
        return "".join(ch if ch.isalnum() else "_" for ch in x)

    sources = [src for src, _ in texts]
    roles = [SEARCH_PART_PREFIX + clean(src) + ("" if sources.count(src) == 1
                                                else "_" + clean(split))
             for src, split in texts]
    return [r if roles.count(r) == 1 else f"{r}_{i}" for i, r in enumerate(roles)]


def is_search_part(role: str | None) -> bool:
    return bool(role) and role.startswith(SEARCH_PART_PREFIX) and role != SEARCH_FULL_ROLE

# Candidates that are references, not results: the unpruned model and the baselines a study
# measures for comparison (origin 'baseline'). They are shown, never "the best".
REFERENCE_METHODS = ("dense",)
REFERENCE_ORIGINS = ("baseline",)

# Metric names where a larger value is better; everything else (ppl, loss, latency...) is
# lower-is-better.
HIGHER_IS_BETTER = ("acc", "accuracy", "mmlu", "f1", "exact_match", "score", "reward")
