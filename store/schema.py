"""Schema and migrations of the store (sqlite-utils ``Migrations``).

Rules for later versions: never edit a migration that has shipped; add ``m00N_...`` and bump
``SCHEMA_VERSION`` in the same change. Every migration records the version it brings the file
to in ``meta`` and ``PRAGMA user_version`` (both are read; the larger one wins).
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from prunestudio.schema.canonical import canonical_json, spec_hash

if TYPE_CHECKING:  # sqlite_utils imports pandas when present (~0.3 s): only load it to migrate
    from sqlite_utils import Database
    from sqlite_utils.migrations import Migrations

__all__ = [
    "SCHEMA_VERSION",
    "READABLE_FROM",
    "OWL_RENAMED_IN",
    "MIGRATION_SET",
    "get_migrations",
    "stored_schema_version",
    "is_initialised",
    "apply_migrations",
    "pending_migrations",
    "table_names",
]

SCHEMA_VERSION = 4
# The oldest version a read-only open accepts: every later migration but m004 only adds tables
# or nullable columns, and a read of a table (column) a store does not have yet returns nothing
# (e.g. `Store.predictor_fits`, `workers.device` read through ``SELECT *``). m004 renames a
# value: a read-only open of an older store holding OWL candidates is refused (`store.db`)
# until the store is opened read-write once, so no reader shows band-mapped results as 'owl'.
READABLE_FROM = 1
OWL_RENAMED_IN = 4  # the version whose migration renamed layer_ratios 'owl' -> 'owl_band'
MIGRATION_SET = "prunestudio"

# Key columns of `metrics` are NOT NULL: a missing dataset/split/fidelity/role is stored as ''
# and a missing seqlen as 0, so the UNIQUE constraint really is unique (SQLite treats NULLs as
# distinct) and re-recording a metric is an upsert. The store maps ''/0 back to None on read.
_SCHEMA_V1 = """
CREATE TABLE meta (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);
CREATE TABLE studies (
    id INTEGER PRIMARY KEY,
    name TEXT UNIQUE,
    kind TEXT NOT NULL,
    model TEXT NOT NULL,
    config TEXT NOT NULL,
    seed INTEGER,
    budget INTEGER,
    status TEXT NOT NULL,
    host TEXT,
    error TEXT,
    cancel_requested TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    updated_seq INTEGER NOT NULL
);
CREATE INDEX studies_updated_seq ON studies (updated_seq);
CREATE TABLE candidates (
    id INTEGER PRIMARY KEY,
    study_id INTEGER NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
    idx INTEGER NOT NULL,
    spec TEXT NOT NULL,
    spec_hash TEXT NOT NULL,
    origin TEXT NOT NULL,
    parents TEXT,
    generation INTEGER,
    status TEXT NOT NULL,
    error TEXT,
    worker TEXT,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    timings TEXT,
    info TEXT,
    updated_seq INTEGER NOT NULL,
    UNIQUE (study_id, idx),
    UNIQUE (study_id, spec_hash)
);
CREATE INDEX candidates_study_seq ON candidates (study_id, updated_seq);
CREATE UNIQUE INDEX candidates_seq ON candidates (updated_seq);
CREATE INDEX candidates_study_status ON candidates (study_id, status, idx);
CREATE TABLE metrics (
    id INTEGER PRIMARY KEY,
    candidate_id INTEGER NOT NULL REFERENCES candidates (id) ON DELETE CASCADE,
    name TEXT NOT NULL,
    value REAL NOT NULL,
    dataset TEXT NOT NULL DEFAULT '',
    split TEXT NOT NULL DEFAULT '',
    seqlen INTEGER NOT NULL DEFAULT 0,
    n_samples INTEGER,
    fidelity TEXT NOT NULL DEFAULT '',
    role TEXT NOT NULL DEFAULT '',
    protocol TEXT NOT NULL DEFAULT '{}',
    created_at REAL NOT NULL,
    UNIQUE (candidate_id, name, dataset, split, seqlen, fidelity, role)
);
-- The UNIQUE index above starts with candidate_id: it is the index on candidate_id.
CREATE INDEX metrics_name ON metrics (name, candidate_id);
CREATE TABLE events (
    id INTEGER PRIMARY KEY,
    study_id INTEGER NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
    candidate_id INTEGER REFERENCES candidates (id) ON DELETE CASCADE,
    time REAL NOT NULL,
    level TEXT NOT NULL,
    message TEXT NOT NULL,
    progress REAL
);
CREATE INDEX events_study_id ON events (study_id, id);
CREATE TABLE artifacts (
    id INTEGER PRIMARY KEY,
    candidate_id INTEGER NOT NULL REFERENCES candidates (id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    path TEXT NOT NULL,
    hash TEXT,
    bytes INTEGER,
    created_at REAL NOT NULL
);
CREATE INDEX artifacts_candidate ON artifacts (candidate_id);
CREATE TABLE workers (
    name TEXT PRIMARY KEY,
    study_id INTEGER REFERENCES studies (id) ON DELETE CASCADE,
    candidate_id INTEGER REFERENCES candidates (id) ON DELETE SET NULL,
    heartbeat REAL NOT NULL,
    host TEXT,
    pid INTEGER
);
"""


def _set_version(db: Database, version: int) -> None:
    db.execute(
        "INSERT INTO meta (key, value) VALUES ('schema_version', ?) "
        "ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        [str(version)],
    )
    db.execute(f"PRAGMA user_version = {int(version)}")


def m001_initial(db: Database) -> None:
    db.executescript(_SCHEMA_V1)
    db.execute("INSERT INTO meta (key, value) VALUES ('seq', '0')")
    _set_version(db, 1)


# v2: the accuracy-predictor search's fitted predictors, one row per (study, round, target):
# the payload is the fit's JSON (training size, hyper-parameters, fit quality on held-out folds,
# out-of-fold predictions per candidate, gain importances, the narrowed ranges, the LightGBM
# model text). A resumed study that fits a round again replaces its row.
_PREDICTOR_FITS_V2 = """
CREATE TABLE predictor_fits (
    id INTEGER PRIMARY KEY,
    study_id INTEGER NOT NULL REFERENCES studies (id) ON DELETE CASCADE,
    round INTEGER NOT NULL,
    target TEXT NOT NULL,
    n_train INTEGER NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    UNIQUE (study_id, round, target)
);
"""


def m002_predictor_fits(db: Database) -> None:
    db.executescript(_PREDICTOR_FITS_V2)
    _set_version(db, 2)


# v3: what each worker runs on (JSON: device, GPU name and memory, threads, node), written by
# the driver for its own process and for every Ray actor, so the machine panels show every
# worker's GPU even when it is on another node.
def m003_worker_devices(db: Database) -> None:
    db.execute("ALTER TABLE workers ADD COLUMN device TEXT")
    _set_version(db, 3)


# v4: `layer_ratios = "owl"` now means the OWL code's mapping (s_i = s − 2λ (r_i − mean r) /
# (max r − min r)); what was recorded as "owl" before was computed with the band mapping (every
# s_i within [s − λ, s + λ]), now named "owl_band". Every candidate spec and study config that
# says "owl" (at any depth of its JSON) is rewritten to "owl_band", and a rewritten candidate's
# spec hash recomputed, so old results keep a truthful label and a resumed old study computes
# what it recorded. Nothing else in the JSON changes (re-serialised canonically, as written).
def _owl_to_band(value: Any) -> tuple[Any, bool]:
    """``value`` with every object's ``"layer_ratios": "owl"`` made ``"owl_band"``; and
    whether anything changed."""
    if isinstance(value, dict):
        changed = False
        out = {}
        for k, v in value.items():
            if k == "layer_ratios" and v == "owl":
                out[k], hit = "owl_band", True
            else:
                out[k], hit = _owl_to_band(v)
            changed |= hit
        return out, changed
    if isinstance(value, list):
        pairs = [_owl_to_band(v) for v in value]
        return [v for v, _ in pairs], any(hit for _, hit in pairs)
    return value, False


def _next_seq(db: Database) -> int:
    db.execute("UPDATE meta SET value = CAST(value AS INTEGER) + 1 WHERE key = 'seq'")
    return int(db.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0])


def m004_owl_band(db: Database) -> None:
    # a rewritten row gets a new change number, so a reader polling since a cursor sees it
    touched: set[int] = set()
    cands = db.execute(
        "SELECT id, study_id, spec FROM candidates WHERE spec LIKE '%\"owl\"%' ORDER BY id"
    ).fetchall()
    for cid, sid, text in cands:
        spec, changed = _owl_to_band(json.loads(text))
        if changed:
            db.execute("UPDATE candidates SET spec = ?, spec_hash = ?, updated_seq = ? "
                       "WHERE id = ?", [canonical_json(spec), spec_hash(spec), _next_seq(db), cid])
            touched.add(int(sid))
    studies = db.execute(
        "SELECT id, config FROM studies WHERE config LIKE '%\"owl\"%' ORDER BY id").fetchall()
    for sid, text in studies:
        config, changed = _owl_to_band(json.loads(text))
        if changed:
            db.execute("UPDATE studies SET config = ? WHERE id = ?", [canonical_json(config), sid])
            touched.add(int(sid))
    for sid in sorted(touched):
        db.execute("UPDATE studies SET updated_seq = ? WHERE id = ?", [_next_seq(db), sid])
    _set_version(db, 4)


# In order; the name is what `_sqlite_migrations` records.
_STEPS: list[tuple[str, Callable[[Database], None]]] = [
    ("m001_initial", m001_initial), ("m002_predictor_fits", m002_predictor_fits),
    ("m003_worker_devices", m003_worker_devices), ("m004_owl_band", m004_owl_band)]
_MIGRATIONS: Migrations | None = None


def get_migrations() -> Migrations:
    """The sqlite-utils ``Migrations`` set named 'prunestudio' (built on first use)."""
    global _MIGRATIONS
    if _MIGRATIONS is None:
        from sqlite_utils.migrations import Migrations

        found = Migrations(MIGRATION_SET)
        for name, fn in _STEPS:
            found(name=name)(fn)
        _MIGRATIONS = found
    return _MIGRATIONS


def table_names(conn: sqlite3.Connection) -> list[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
    return [r[0] for r in rows]


def stored_schema_version(conn: sqlite3.Connection) -> int | None:
    """Schema version recorded in the file (None for a file without a Prune Studio schema)."""
    versions = [int(conn.execute("PRAGMA user_version").fetchone()[0])]
    if "meta" in table_names(conn):
        row = conn.execute("SELECT value FROM meta WHERE key = 'schema_version'").fetchone()
        if row is not None:
            versions.append(int(row[0]))
    best = max(versions)
    return best if best > 0 else None


def is_initialised(conn: sqlite3.Connection) -> bool:
    return stored_schema_version(conn) is not None


def pending_migrations(db: Database) -> list[str]:
    """Names of the migrations not yet applied to ``db`` (read-only)."""
    return [m.name for m in get_migrations().pending(db)]


def apply_migrations(db: Database) -> list[str]:
    """Apply pending migrations (caller holds the write lock); return the names applied."""
    pending = pending_migrations(db)
    if pending:
        get_migrations().apply(db)
    return pending
