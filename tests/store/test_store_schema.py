from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
from prunestudio.store import (
    SCHEMA_VERSION,
    SchemaTooNewError,
    Store,
    StoreError,
    StoreNotFoundError,
    StoreReadOnlyError,
    open_store,
)

TABLES = {"studies", "candidates", "metrics", "events", "artifacts", "workers", "meta",
          "predictor_fits"}


def _raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path)


def _sqlite_file(path: Path, sql: str) -> Path:
    """A plain SQLite file (not made by the store) after one statement."""
    raw = _raw(path)
    raw.execute(sql)
    raw.close()
    return path


def _table_names(path: Path) -> list[str]:
    raw = _raw(path)
    names = [r[0] for r in raw.execute("SELECT name FROM sqlite_master")]
    raw.close()
    return names


def test_migrations_create_schema_and_record_version(store: Store, db_path: Path) -> None:
    assert db_path.is_file()  # parent folder "runs/" was created
    names = {r[0] for r in store.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert TABLES <= names
    assert store.conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
    meta = dict(store.conn.execute("SELECT key, value FROM meta").fetchall())
    assert int(meta["schema_version"]) == SCHEMA_VERSION
    assert int(meta["seq"]) == 0
    applied = store.conn.execute(
        "SELECT migration_set, name FROM _sqlite_migrations").fetchall()
    assert applied == [("prunestudio", "m001_initial"), ("prunestudio", "m002_predictor_fits"),
                       ("prunestudio", "m003_worker_devices"), ("prunestudio", "m004_owl_band")]
    assert store.schema_version == SCHEMA_VERSION


def test_expected_indexes_exist(store: Store) -> None:
    idx = {r[1]: r for r in store.conn.execute(
        "SELECT type, name, tbl_name FROM sqlite_master WHERE type='index'")}
    assert {"candidates_study_seq", "candidates_seq", "events_study_id"} <= set(idx)
    unique = store.conn.execute("PRAGMA index_list(metrics)").fetchall()
    cols = [
        [c[2] for c in store.conn.execute(f"PRAGMA index_info('{u[1]}')")]
        for u in unique if u[2]
    ]
    assert ["candidate_id", "name", "dataset", "split", "seqlen", "fidelity", "role"] in cols


def test_wal_busy_timeout_and_foreign_keys(store: Store) -> None:
    assert store.conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert store.conn.execute("PRAGMA busy_timeout").fetchone()[0] == 30000
    assert store.conn.execute("PRAGMA foreign_keys").fetchone()[0] == 1


def test_reopen_applies_nothing_twice(db_path: Path) -> None:
    with open_store(db_path) as s:
        sid = s.create_study(name="keep", kind="grid", model="m", config={})
        first = s.conn.execute("SELECT * FROM _sqlite_migrations").fetchall()
    with open_store(db_path) as s:
        assert s.conn.execute("SELECT * FROM _sqlite_migrations").fetchall() == first
        assert s.get_study(sid)["name"] == "keep"
        assert int(dict(s.conn.execute("SELECT key, value FROM meta").fetchall())["seq"]) >= 1


@pytest.mark.parametrize("readonly", [False, True])
def test_newer_schema_refused(db_path: Path, readonly: bool) -> None:
    open_store(db_path).close()
    with _raw(db_path) as raw:
        raw.execute("UPDATE meta SET value = '7' WHERE key = 'schema_version'")
    raw.close()
    with pytest.raises(SchemaTooNewError) as err:
        open_store(db_path, readonly=readonly)
    msg = str(err.value)
    assert "7" in msg and str(SCHEMA_VERSION) in msg and str(db_path) in msg
    assert "upgrade prunestudio" in msg
    assert (err.value.found, err.value.supported) == (7, SCHEMA_VERSION)


def test_newer_schema_refused_before_anything_is_applied(tmp_path: Path) -> None:
    path = _sqlite_file(tmp_path / "future.db", "PRAGMA user_version = 5")
    with pytest.raises(SchemaTooNewError, match="schema version 5"):
        open_store(path)
    assert _table_names(path) == []
    raw = _raw(path)
    assert raw.execute("PRAGMA journal_mode").fetchone()[0] != "wal"
    raw.close()


def test_readonly_missing_file(tmp_path: Path) -> None:
    missing = tmp_path / "nope" / "studio.db"
    with pytest.raises(StoreNotFoundError, match="nope"):
        open_store(missing, readonly=True)
    assert not missing.parent.exists()  # a read-only open creates nothing


def test_readonly_uninitialised_file(tmp_path: Path) -> None:
    empty = tmp_path / "empty.db"
    empty.touch()
    with pytest.raises(StoreError, match="not an initialised Prune Studio store"):
        open_store(empty, readonly=True)


def test_not_a_database(tmp_path: Path) -> None:
    junk = tmp_path / "junk.db"
    junk.write_text("hello " * 1000)
    for readonly in (False, True):
        with pytest.raises(StoreError, match="cannot open store"):
            open_store(junk, readonly=readonly)


def test_foreign_sqlite_file_left_alone(tmp_path: Path) -> None:
    other = _sqlite_file(tmp_path / "other.db", "CREATE TABLE photos (id INTEGER)")
    with pytest.raises(StoreError, match="not a Prune Studio store.*photos"):
        open_store(other)
    assert _table_names(other) == ["photos"]


def test_readonly_store_refuses_writes(db_path: Path) -> None:
    with open_store(db_path) as s:
        sid = s.create_study(name="x", kind="grid", model="m", config={})
    with open_store(db_path, readonly=True) as ro:
        assert ro.readonly and ro.get_study("x")["id"] == sid
        with pytest.raises(sqlite3.OperationalError):  # StoreReadOnlyError is one
            ro.add_event(sid, "hello")
        with pytest.raises(StoreReadOnlyError, match="read-only"):
            ro.create_study(name="y", kind="grid", model="m", config={})
        # and SQLite itself refuses, whatever path a write takes
        with pytest.raises(sqlite3.OperationalError, match="readonly"):
            ro.conn.execute("INSERT INTO meta (key, value) VALUES ('x', 'y')")
    with open_store(db_path, readonly=True) as ro:
        assert ro.conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 0


def test_store_path_with_spaces_and_hash(tmp_path: Path) -> None:
    path = tmp_path / "my runs #1" / "studio?.db"
    with open_store(path) as s:
        s.create_study(name="x", kind="grid", model="m", config={})
    with open_store(path, readonly=True) as ro:
        assert ro.get_study("x")["kind"] == "grid"


def test_predictor_fits_round_trip_and_a_refit_replaces(store: Store) -> None:
    sid = store.create_study(name="p", kind="predictor", model="m", config={})
    other = store.create_study(name="q", kind="predictor", model="m", config={})
    payload = {"n_train": 8, "r2": 0.5, "importance": {"att.b1": 2.0}, "model": "tree\n"}
    first = store.add_predictor_fit(sid, round=0, target="log_ppl", payload=payload)
    store.add_predictor_fit(sid, round=0, target="accuracy", payload={"n_train": 8})
    store.add_predictor_fit(other, round=0, target="log_ppl", payload={"n_train": 3})
    again = store.add_predictor_fit(sid, round=0, target="log_ppl",
                                    payload={**payload, "r2": 0.75})
    assert again == first  # the same round and target: replaced, not duplicated
    fits = store.predictor_fits(sid)
    assert [(f["round"], f["target"], f["n_train"]) for f in fits] == [
        (0, "accuracy", 8), (0, "log_ppl", 8)]
    assert fits[1]["payload"] == {**payload, "r2": 0.75}
    assert store.predictor_fits(sid, after_id=max(f["id"] for f in fits)) == []
