"""Prune Studio's SQLite store: schema, writes from the engine, read queries for the UIs.

Imports nothing else of Prune Studio and no torch, so UIs start fast::

    from prunestudio.store import open_store, queries
    with open_store("runs/studio.db", readonly=True) as store:
        rows, cursor = queries.candidates_since(store, study_id, 0)
"""

from . import queries
from .backup import BackupInfo, backup_store
from .canonical import canonical_json, spec_hash
from .db import Store, open_store
from .errors import (
    SchemaTooNewError,
    StoreBackupError,
    StoreCorruptError,
    StoreDatabaseError,
    StoreError,
    StoreFullError,
    StoreLockedError,
    StoreNotFoundError,
    StoreNotWritableError,
    StorePathError,
    StoreReadOnlyError,
)
from .heartbeat import Heartbeat
from .liveness import HEARTBEAT_INTERVAL, STALE_AFTER
from .queries import (
    best_candidate,
    candidates_since,
    events_since,
    list_studies,
    list_workers,
    metrics_long,
    metrics_table,
    stale_running,
    studies_since,
)
from .records import (
    CANDIDATE_STATUSES,
    EVENT_LEVELS,
    FIDELITIES,
    SEARCH_KINDS,
    STUDY_STATUSES,
    STUDY_TERMINAL,
    metric_key,
    task_metric_title,
)
from .schema import SCHEMA_VERSION

__all__ = [
    "SCHEMA_VERSION",
    "CANDIDATE_STATUSES",
    "EVENT_LEVELS",
    "FIDELITIES",
    "HEARTBEAT_INTERVAL",
    "SEARCH_KINDS",
    "STALE_AFTER",
    "STUDY_STATUSES",
    "STUDY_TERMINAL",
    "BackupInfo",
    "Heartbeat",
    "SchemaTooNewError",
    "Store",
    "StoreBackupError",
    "StoreCorruptError",
    "StoreDatabaseError",
    "StoreError",
    "StoreFullError",
    "StoreLockedError",
    "StoreNotFoundError",
    "StoreNotWritableError",
    "StorePathError",
    "StoreReadOnlyError",
    "backup_store",
    "best_candidate",
    "candidates_since",
    "canonical_json",
    "events_since",
    "list_studies",
    "list_workers",
    "metric_key",
    "task_metric_title",
    "metrics_long",
    "metrics_table",
    "open_store",
    "queries",
    "spec_hash",
    "stale_running",
    "studies_since",
]
