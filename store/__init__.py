"""Prune Studio's SQLite store: schema, writes from the engine, read queries for the UIs.

Imports only ``prunestudio.schema`` of Prune Studio, and no torch, so UIs start fast. Reads
come back as the schema's typed records (``Study``, ``Candidate``, ``Metric``...) for the UIs,
or as plain dicts (the engine's writer side and the ``--json`` payloads)::

    from prunestudio.store import open_store, queries
    with open_store("runs/studio.db", readonly=True) as store:
        study = store.study_record("my-study")
        records, cursor = queries.candidate_records_since(store, study.id, 0)

Every SQLite error comes out as a :class:`StoreError` subclass: no reader imports sqlite3.
"""

from prunestudio.schema.canonical import canonical_json, spec_hash

from . import queries
from .backup import BackupInfo, backup_store
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
    candidate_records_since,
    candidates_since,
    event_records_since,
    events_since,
    list_studies,
    list_workers,
    metrics_long,
    metrics_table,
    stale_running,
    studies_since,
    study_records,
    study_records_since,
    worker_records,
)
from .schema import SCHEMA_VERSION

__all__ = [
    "SCHEMA_VERSION",
    "HEARTBEAT_INTERVAL",
    "STALE_AFTER",
    "BackupInfo",
    "candidate_records_since",
    "event_records_since",
    "study_records",
    "study_records_since",
    "worker_records",
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
    "metrics_long",
    "metrics_table",
    "open_store",
    "queries",
    "spec_hash",
    "stale_running",
    "studies_since",
]
