"""Nothing silently wrong: impossible store paths, read-only media, full disks, and every
database error as a StoreError naming the store (real mounts: root ignores chmod)."""

from __future__ import annotations

import shutil
import sqlite3
from pathlib import Path

import pytest
from prunestudio.store import (
    Store,
    StoreCorruptError,
    StoreDatabaseError,
    StoreError,
    StoreFullError,
    StoreLockedError,
    StoreNotWritableError,
    StorePathError,
    open_store,
    queries,
)

PPL = {"name": "ppl", "dataset": "wikitext2", "split": "test", "seqlen": 128,
       "fidelity": "full", "role": "in_domain"}


def _fill_study(store: Store, n: int = 6) -> int:
    sid = store.create_study(name="s", kind="grid", model="m", config={"a": 1})
    for i in range(n):
        cid, _ = store.add_candidate(sid, {"i": i}, origin="grid")
        store.start_candidate(cid)
        store.finish_candidate(cid, metrics=[{**PPL, "value": 20.0 + i},
                                             {"name": "params", "value": 1e6 - i}])
    return sid


def _check_readable(store: Store, sid: int, n: int = 6) -> None:
    cands = store.candidates(sid, with_metrics=True)
    assert len(cands) == n and all(len(c["metrics"]) == 2 for c in cands)
    assert queries.list_studies(store)[0]["n_done"] == n
    rows, cursor = queries.candidates_since(store, sid, 0)
    assert len(rows) == n and cursor > 0
    assert queries.best_candidate(store, sid)["best"]["value"] == 20.0
    assert len(queries.metrics_table(store, sid)) == n


# -- impossible paths ----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/proc/prunestudio.db", "/sys/x.db", "/proc/self/s.db"])
@pytest.mark.parametrize("readonly", [False, True])
def test_kernel_folders_are_not_a_place_for_a_store(path: str, readonly: bool) -> None:
    with pytest.raises(StorePathError, match=r"holds the kernel's virtual files and is not a "
                       r"place for a store") as err:
        open_store(path, readonly=readonly)
    assert path in str(err.value) and err.value.path == path


@pytest.mark.parametrize("readonly", [False, True])
def test_a_folder_is_not_a_store(tmp_path: Path, readonly: bool) -> None:
    folder = tmp_path / "somedir"
    folder.mkdir()
    with pytest.raises(StorePathError) as err:
        open_store(folder, readonly=readonly)
    assert str(err.value) == (f"store path {folder} is a folder; give a file path such as "
                              f"{folder}/prunestudio.db")
    assert list(folder.iterdir()) == []


def test_a_file_in_the_way_of_the_folder(tmp_path: Path) -> None:
    (tmp_path / "runs").write_text("not a folder")
    with pytest.raises(StorePathError, match="is a file, not a folder"):
        open_store(tmp_path / "runs" / "studio.db")


def test_lock_message_names_the_cli_flag(db_path: Path) -> None:
    with open_store(db_path) as holder, open_store(db_path, timeout=0.1) as other:
        sid = holder.create_study(name="x", kind="grid", model="m", config={})
        with holder.transaction():
            holder.add_event(sid, "holding")
            with pytest.raises(StoreLockedError) as err:
                other.add_event(sid, "blocked")
    text = str(err.value)
    assert "pass --lock-timeout SECONDS" in text and "timeout=" not in text
    assert str(db_path) in text and err.value.path == str(db_path)


def test_query_errors_are_store_errors(store: Store, study: int) -> None:
    store.conn.execute("DROP INDEX metrics_name")  # any SQL failure inside a query
    store.conn.execute("ALTER TABLE metrics RENAME TO metrics_gone")
    with pytest.raises(StoreDatabaseError, match="no such table: metrics") as err:
        queries.metrics_long(store, study)
    assert str(store.path) in str(err.value) and isinstance(err.value.cause, sqlite3.Error)
    with pytest.raises(StoreError, match=str(store.path)):
        queries.candidates_since(store, study, 0)


def test_a_damaged_store_is_a_store_error(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    with open_store(path) as s:
        _fill_study(s, 200)
    data = bytearray(path.read_bytes())
    data[4096 * 2:4096 * 6] = b"\xff" * (4096 * 4)  # smash a few b-tree pages
    path.write_bytes(bytes(data))
    with pytest.raises(StoreCorruptError) as err:  # at the open, or at the first read
        with open_store(path, readonly=True) as ro:
            ro.candidates(1, with_metrics=True)
            queries.metrics_table(ro, 1)
    assert str(path) in str(err.value) and "malformed" in str(err.value)


# -- read-only media -----------------------------------------------------------------------------


def test_read_write_open_on_a_read_only_medium(tmpfs) -> None:
    mount = tmpfs()
    path = mount.path / "studio.db"
    with open_store(path) as s:
        sid = _fill_study(s)
    mount.remount(readonly=True)
    with pytest.raises(StoreNotWritableError) as err:
        open_store(path)
    assert str(err.value) == (
        f"cannot write store {path}: the medium holding {mount.path} is mounted read-only; "
        "read-only commands (show, studies, tui) can still read it")
    with open_store(path, readonly=True) as ro:  # what the message promises
        _check_readable(ro, sid)
    with pytest.raises(StoreNotWritableError, match=r"cannot create store .*new\.db: the "
                       r"medium .* is mounted read-only"):
        open_store(mount.path / "new.db")
    with pytest.raises(StoreNotWritableError, match=r"cannot create the folder .*Read-only"):
        open_store(mount.path / "sub" / "new.db")
    assert sorted(p.name for p in mount.path.iterdir()) == ["studio.db"]


def test_wal_store_without_shm_on_a_read_only_medium(tmpfs) -> None:
    mount = tmpfs()
    path = mount.path / "studio.db"
    with open_store(path) as s:
        sid = _fill_study(s)
    assert sorted(p.name for p in mount.path.iterdir()) == ["studio.db"]  # no -wal, no -shm
    assert path.read_bytes()[18:20] == b"\x02\x02"  # still a WAL-mode file
    mount.remount(readonly=True)
    with open_store(path, readonly=True) as ro:
        assert ro.immutable  # mode=ro alone cannot create the -shm: immutable=1
        _check_readable(ro, sid)
        assert ro.get_study(sid)["config"] == {"a": 1}


def test_wal_and_shm_copied_to_a_read_only_medium(tmpfs, db_path: Path) -> None:
    """A store copied with its -wal and -shm while a study ran: mode=ro reads the WAL."""
    mount = tmpfs()
    with open_store(db_path) as w, open_store(db_path, readonly=True) as reader:
        w.checkpoint_every = 3600.0
        sid = _fill_study(w)
        reader.get_study(sid)
        for suffix in ("", "-wal", "-shm"):
            shutil.copyfile(f"{db_path}{suffix}", f"{mount.path / 'studio.db'}{suffix}")
    mount.remount(readonly=True)
    with open_store(mount.path / "studio.db", readonly=True) as ro:
        assert not ro.immutable
        _check_readable(ro, sid)


def test_wal_without_shm_on_a_read_only_medium_is_refused_not_truncated(
        tmpfs, db_path: Path) -> None:
    mount = tmpfs()
    with open_store(db_path) as w, open_store(db_path, readonly=True) as reader:
        w.checkpoint_every = 3600.0
        reader.get_study(_fill_study(w))
        for suffix in ("", "-wal"):  # no -shm: immutable=1 would silently drop the WAL
            shutil.copyfile(f"{db_path}{suffix}", f"{mount.path / 'studio.db'}{suffix}")
    mount.remount(readonly=True)
    with pytest.raises(StoreNotWritableError, match=r"its last changes are in studio\.db-wal"):
        open_store(mount.path / "studio.db", readonly=True)


# -- full disk -----------------------------------------------------------------------------------


def test_full_disk_during_a_write(tmpfs) -> None:
    mount = tmpfs(size="2m")
    path = mount.path / "studio.db"
    store = open_store(path)
    try:
        sid = _fill_study(store)
        filler = mount.fill()
        before = store.conn.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0]
        with pytest.raises(StoreFullError) as err:
            store.create_study(name="big", kind="grid", model="m",
                               config={"blob": "x" * 400_000})
        assert str(err.value) == (
            f"disk full while writing store {path} (database or disk is full); free space "
            "and resume with --resume")
        assert err.value.path == str(path)
        # rolled back, and the connection is still usable
        assert not store.conn.in_transaction
        assert store.conn.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0] \
            == before
        assert [r["name"] for r in queries.list_studies(store)] == ["s"]
        filler.unlink()
        big = store.create_study(name="big", kind="grid", model="m",
                                 config={"blob": "x" * 400_000})
    finally:
        store.close()
    with open_store(path, readonly=True) as ro:
        _check_readable(ro, sid)
        assert len(ro.get_study(big)["config"]["blob"]) == 400_000
