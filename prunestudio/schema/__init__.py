"""Prune Studio's typed, torch-free schema: the records every reader shares.

Importing this package imports neither torch, transformers nor the engine (a test checks
``sys.modules``), so the store, the TUI, ``prunestudio show`` and the web app use it freely::

    from prunestudio.schema import Candidate, Study
    from prunestudio.store import open_store

    with open_store("runs/studio.db", readonly=True) as store:
        study = store.study_record("my-gp")
        for c in store.candidate_records(study.id):
            print(c.label, c.fitness.value if c.fitness else None)

One label (:attr:`Candidate.label`, ``spec_label``), one metric identity
(:class:`MetricIdentity`), one primary role (:attr:`Study.primary_role`) in the codebase.

The study file and candidate specs are typed here too (pydantic; imported on demand, not by
this package): ``schema.study_file.StudyConfig``, ``schema.spec.CandidateSpec``,
``schema.options`` (each method's options) and ``schema.windows.WindowSpec``. Full validation
checks names against the engine's registries (``schema.catalog``); a reader validates what the
engine recorded with ``context=SHAPE_ONLY``, without the engine.
"""

from .catalog import SHAPE_ONLY, CatalogMissingError
from .constants import (
    CANDIDATE_STATUSES,
    EVENT_LEVELS,
    FIDELITIES,
    FITNESS_METRIC,
    HIGHER_IS_BETTER,
    METRIC_IDENTITY_KEYS,
    METRIC_KEYS,
    REFERENCE_METHODS,
    REFERENCE_ORIGINS,
    SEARCH_FULL_ROLE,
    SEARCH_KINDS,
    SEARCH_PART_PREFIX,
    SEARCH_ROLE,
    STUDY_STATUSES,
    STUDY_TERMINAL,
    TASK_ROLE,
    is_search_part,
    search_part_roles,
)
from .labels import realised_label, spec_label
from .metrics import (
    TASK_SHORT_NAMES,
    Metric,
    MetricIdentity,
    choose_primary,
    column_titles,
    metric_key,
    task_metric_title,
)
from .records import Artifact, Candidate, Event, Study, StudyCounts, Worker
from .settings import EvalSettings, SearchSettings, StudySettings
from .store_path import default_store_path
from .workers import WorkerLane, WorkerSummary, WorkerTimeline

__all__ = [
    "CANDIDATE_STATUSES",
    "EVENT_LEVELS",
    "FIDELITIES",
    "FITNESS_METRIC",
    "HIGHER_IS_BETTER",
    "METRIC_IDENTITY_KEYS",
    "METRIC_KEYS",
    "REFERENCE_METHODS",
    "SHAPE_ONLY",
    "REFERENCE_ORIGINS",
    "SEARCH_KINDS",
    "SEARCH_PART_PREFIX",
    "SEARCH_FULL_ROLE",
    "SEARCH_ROLE",
    "is_search_part",
    "search_part_roles",
    "STUDY_STATUSES",
    "STUDY_TERMINAL",
    "TASK_ROLE",
    "TASK_SHORT_NAMES",
    "Artifact",
    "Candidate",
    "CatalogMissingError",
    "EvalSettings",
    "Event",
    "Metric",
    "MetricIdentity",
    "SearchSettings",
    "Study",
    "StudyCounts",
    "StudySettings",
    "Worker",
    "WorkerLane",
    "WorkerSummary",
    "WorkerTimeline",
    "choose_primary",
    "column_titles",
    "default_store_path",
    "metric_key",
    "realised_label",
    "spec_label",
    "task_metric_title",
]
