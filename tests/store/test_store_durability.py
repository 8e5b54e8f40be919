"""Nothing lost: WAL checkpoints (a copy of the .db file alone holds every result) and
`backup_store` (one consistent self-contained copy taken while a study writes)."""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import sqlite3
import time
from pathlib import Path

import pytest
from prunestudio.store import (
    BackupInfo,
    Store,
    StoreBackupError,
    StoreFullError,
    backup_store,
    open_store,
    queries,
)

CTX = mp.get_context("spawn")


def _write(path: str, n: int, name: str) -> None:
    """A study process: n candidates, each finished with two metrics, then a clean exit."""
    with open_store(path) as s:
        sid = s.create_study(name=name, kind="grid", model="m", config={})
        s.set_study_status(sid, "running")
        for i in range(n):
            cid, _ = s.add_candidate(sid, {"i": i}, origin="grid")
            s.start_candidate(cid)
            s.finish_candidate(cid, metrics=[{"name": "ppl", "value": 10.0 + i},
                                             {"name": "params", "value": 1.0 * i}])
        s.set_study_status(sid, "finished")


def _write_until(path: str, stop, started, n_max: int) -> None:
    with open_store(path) as s:
        sid = s.create_study(name="busy", kind="grid", model="m", config={})
        for i in range(n_max):
            if stop.is_set():
                break
            cid, _ = s.add_candidate(sid, {"i": i, "pad": "x" * 200}, origin="grid")
            s.start_candidate(cid)
            s.finish_candidate(cid, metrics=[{"name": "ppl", "value": 10.0 + i},
                                             {"name": "params", "value": 1.0 * i}])
            if i == 20:
                started.set()


def _db_only_copy(db: Path, folder: Path) -> Path:
    """Copy the database file alone (no -wal, no -shm), as a user copying `studio.db` does."""
    folder.mkdir()
    target = folder / db.name
    shutil.copyfile(db, target)
    return target


def _rows(path: Path) -> tuple[int, int, list[str]]:
    with open_store(path, readonly=True) as s:
        (study,) = queries.list_studies(s)
        metrics = s.conn.execute("SELECT COUNT(*) FROM metrics").fetchone()[0]
        return study["n_done"], metrics, [study["status"]]


# -- 1. checkpoints -----------------------------------------------------------------------------


def test_db_file_alone_holds_every_row_after_writer_exits_with_idle_reader(
        db_path: Path, tmp_path: Path) -> None:
    with open_store(db_path):
        pass  # the file exists, so that the reader can attach before the writer starts
    with open_store(db_path, readonly=True) as reader:
        assert queries.list_studies(reader) == []  # attached, WAL index mapped, then idle
        proc = CTX.Process(target=_write, args=(str(db_path), 30, "w"))
        proc.start()
        proc.join(120)
        assert proc.exitcode == 0, "writer process failed (see its traceback above)"
        # the situation this guards against: the reader keeps the WAL alive ...
        wal = db_path.with_name(db_path.name + "-wal")
        assert wal.exists() and wal.stat().st_size > 0
        assert not reader.conn.in_transaction
        copy = _db_only_copy(db_path, tmp_path / "elsewhere")
        # ... and the reader still sees everything, of course
        assert queries.list_studies(reader)[0]["n_done"] == 30
    assert _rows(copy) == (30, 60, ["finished"])


@pytest.mark.parametrize("every", [0.0, 3600.0])
def test_periodic_checkpoint_while_writing(db_path: Path, tmp_path: Path, every: float) -> None:
    with open_store(db_path):
        pass  # the schema is in the .db file (closing checkpoints)
    with open_store(db_path) as w, open_store(db_path, readonly=True) as reader:
        w.checkpoint_every = every
        sid = w.create_study(name="p", kind="grid", model="m", config={})
        reader.get_study(sid)
        for i in range(5):
            cid, _ = w.add_candidate(sid, {"i": i}, origin="grid")
            w.start_candidate(cid)
            w.finish_candidate(cid, metrics=[{"name": "ppl", "value": 1.0 + i},
                                             {"name": "params", "value": 2.0}])
        copy = _db_only_copy(db_path, tmp_path / f"copy{int(every)}")
        assert w.checkpoint_error is None
    raw = sqlite3.connect(copy)
    try:
        n = raw.execute("SELECT COUNT(*) FROM candidates").fetchone()[0]
    finally:
        raw.close()
    # checkpointing after each write (every=0) puts everything in the .db file; with an hour
    # between checkpoints, the rows are still in the WAL only (what the close checkpoint and
    # the periodic one are there for)
    assert n == (5 if every == 0.0 else 0)


def test_checkpoint_reports_frames(store: Store, study: int) -> None:
    store.add_event(study, "x")
    busy, log, done = store.checkpoint()
    assert busy == 0 and log >= 1 and done == log
    with pytest.raises(ValueError, match="PASSIVE, FULL"):
        store.checkpoint("EVERYTHING")


# -- 2. backup ----------------------------------------------------------------------------------


def test_backup_while_another_process_writes(db_path: Path, tmp_path: Path) -> None:
    with open_store(db_path):
        pass
    stop, started = CTX.Event(), CTX.Event()
    proc = CTX.Process(target=_write_until, args=(str(db_path), stop, started, 5000))
    proc.start()
    try:
        assert started.wait(60), "writer did not start"
        dest = tmp_path / "backups" / "copy.db"
        dest.parent.mkdir()
        info = backup_store(db_path, dest)
        with open_store(db_path, readonly=True) as s:
            written_then = s.conn.execute("SELECT COUNT(*) FROM candidates").fetchone()[0]
    finally:
        stop.set()
        proc.join(60)
    assert proc.exitcode == 0
    assert isinstance(info, BackupInfo) and info.path == dest
    assert sorted(os.listdir(dest.parent)) == ["copy.db"]  # one file: no -wal, no temp file
    raw = sqlite3.connect(f"{dest.as_uri()}?mode=ro", uri=True)
    try:
        assert raw.execute("PRAGMA integrity_check").fetchall() == [("ok",)]
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    finally:
        raw.close()
    assert dest.read_bytes()[18:20] == b"\x01\x01"  # rollback journal: needs no -wal
    with open_store(dest, readonly=True) as copy:
        cands = copy.candidates(1, with_metrics=True)
        n_metrics = copy.conn.execute("SELECT COUNT(*) FROM metrics").fetchone()[0]
        n_studies = copy.conn.execute("SELECT COUNT(*) FROM studies").fetchone()[0]
    assert (info.studies, info.candidates, info.metrics) == (n_studies, len(cands), n_metrics)
    assert info.bytes == dest.stat().st_size > 0
    assert 20 <= info.candidates <= written_then  # taken while the writer was writing
    # one committed state: a done candidate always has both of its metrics, the others none
    for c in cands:
        assert len(c["metrics"]) == (2 if c["status"] == "done" else 0), c
    assert n_metrics == 2 * sum(c["status"] == "done" for c in cands)


def test_store_backup_method_and_info(store: Store, study: int, tmp_path: Path) -> None:
    cid, _ = store.add_candidate(study, {"x": 1}, origin="grid")
    store.finish_candidate(cid, metrics=[{"name": "ppl", "value": 3.0}])
    info = store.backup(tmp_path / "b.db")
    assert (info.studies, info.candidates, info.metrics) == (1, 1, 1)
    assert info.to_dict()["path"] == str(tmp_path / "b.db")
    with open_store(tmp_path / "b.db", readonly=True) as b:
        assert b.candidate(cid)["metrics"][0]["value"] == 3.0
    with store.transaction(), pytest.raises(Exception, match="inside a transaction"):
        store.backup(tmp_path / "c.db")
    assert not (tmp_path / "c.db").exists()


def test_backup_refuses_existing_self_and_missing_folder(store: Store, db_path: Path,
                                                         tmp_path: Path) -> None:
    existing = tmp_path / "old.db"
    existing.write_bytes(b"precious")
    with pytest.raises(StoreBackupError, match="old.db already exists"):
        backup_store(db_path, existing)
    assert existing.read_bytes() == b"precious"
    with pytest.raises(StoreBackupError, match="already exists"):
        backup_store(db_path, tmp_path)  # a folder
    same = db_path.parent / ".." / db_path.parent.name / db_path.name
    with pytest.raises(StoreBackupError, match="is the store itself"):
        backup_store(db_path, same)
    missing = tmp_path / "no" / "such" / "b.db"
    with pytest.raises(StoreBackupError, match=r"folder .*such does not exist; create it"):
        backup_store(db_path, missing)
    assert not (tmp_path / "no").exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old.db", "runs"]
    assert all(p.name.startswith("studio.db") for p in db_path.parent.iterdir())


def test_backup_of_a_missing_store_creates_nothing(tmp_path: Path) -> None:
    with pytest.raises(Exception, match="no store at"):
        backup_store(tmp_path / "none.db", tmp_path / "b.db")
    assert list(tmp_path.iterdir()) == []


def test_backup_to_a_full_disk_leaves_nothing(store: Store, study: int, db_path: Path,
                                              tmpfs) -> None:
    store.create_study(name="big", kind="grid", model="m", config={"blob": "x" * 3_000_000})
    mount = tmpfs(size="1m")
    dest = mount.path / "b.db"
    with pytest.raises(StoreFullError, match=r"disk full while writing backup .*b\.db"):
        backup_store(db_path, dest)
    assert list(mount.path.iterdir()) == []  # no half file, no temp file


def test_backup_to_a_read_only_medium_is_refused(store: Store, db_path: Path, tmpfs) -> None:
    mount = tmpfs()
    mount.remount(readonly=True)
    with pytest.raises(StoreBackupError, match="cannot write backup .*Read-only file system"):
        backup_store(db_path, mount.path / "b.db")


def test_backup_on_a_read_only_medium_opens_and_queries(store: Store, study: int,
                                                        db_path: Path, tmpfs) -> None:
    cid, _ = store.add_candidate(study, {"x": 1}, origin="grid")
    store.finish_candidate(cid, metrics=[{"name": "ppl", "value": 3.0}])
    mount = tmpfs()
    backup_store(db_path, mount.path / "b.db")
    mount.remount(readonly=True)
    with open_store(mount.path / "b.db", readonly=True) as ro:
        assert not ro.immutable  # a rollback-journal file needs no -shm: plain mode=ro
        assert queries.best_candidate(ro, study)["id"] == cid
    assert sorted(os.listdir(mount.path)) == ["b.db"]


def test_close_checkpoint_gives_up_quickly_when_a_reader_holds_a_snapshot(
        db_path: Path) -> None:
    w = open_store(db_path)
    sid = w.create_study(name="x", kind="grid", model="m", config={})
    with open_store(db_path, readonly=True) as reader, reader.snapshot():
        reader.get_study(sid)  # holds a read mark on the current snapshot
        w.add_event(sid, "after the reader's snapshot")
        w.close_checkpoint_wait = 0.3
        start = time.perf_counter()
        w.close()
        took = time.perf_counter() - start
    assert 0.25 <= took < 5.0  # retried, then gave up: never blocks for the busy timeout
    with open_store(db_path, readonly=True) as again:  # and nothing was lost
        assert again.conn.execute("SELECT COUNT(*) FROM events").fetchone()[0] == 1
