"""``backup_store``: one consistent, self-contained copy of a store, taken while studies write.

SQLite's online backup API copies every page inside one read transaction of the source, so the
copy is one committed state (WAL readers never block writers: studies keep writing). The copy
is switched to ``journal_mode=DELETE``: a single file, no ``-wal`` / ``-shm`` needed, fit for a
USB stick, an e-mail or a read-only medium.

Safety: the copy is written to a temporary sibling file that this function creates, checked
(``PRAGMA quick_check``), synced, then linked into place under the destination name only if
that name is still free, so a crash never leaves a half-written file under the destination's
name and nothing that existed before is ever overwritten or deleted.
"""

from __future__ import annotations

import os
import secrets
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

from .errors import StoreBackupError, StoreError, StoreFullError, db_error, is_full

__all__ = ["BackupInfo", "backup_store", "backup_connection"]


@dataclass(frozen=True)
class BackupInfo:
    """What :func:`backup_store` wrote: the copy's path, its row counts and size."""

    path: Path
    studies: int
    candidates: int
    metrics: int
    bytes: int
    seconds: float

    def to_dict(self) -> dict[str, object]:
        return {"path": str(self.path), "studies": self.studies, "candidates": self.candidates,
                "metrics": self.metrics, "bytes": self.bytes, "seconds": self.seconds}


def _same_file(a: Path, b: Path) -> bool:
    try:
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
    except OSError:
        pass
    return a.resolve(strict=False) == b.resolve(strict=False)


def _check_dest(source: Path, dest: Path) -> None:
    if _same_file(source, dest):
        raise StoreBackupError(
            f"backup destination {dest} is the store itself; give another file name",
            path=dest,
        )
    if os.path.lexists(dest):
        kind = "a folder" if dest.is_dir() else "a file"
        raise StoreBackupError(
            f"backup destination {dest} already exists ({kind}); give a new file name "
            "(a backup never overwrites anything)", path=dest,
        )
    if not dest.parent.is_dir():
        what = "is not a folder" if dest.parent.exists() else "does not exist"
        raise StoreBackupError(
            f"cannot back up to {dest}: the folder {dest.parent} {what}; create it first",
            path=dest,
        )


def _fsync(path: Path, directory: bool = False) -> None:
    try:
        fd = os.open(path, os.O_RDONLY | (os.O_DIRECTORY if directory else 0))
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def _place(tmp: Path, dest: Path) -> None:
    """Give ``tmp`` the name ``dest`` without ever replacing a file that appeared there
    meanwhile: a hard link fails when ``dest`` exists. File systems without hard links fall
    back to ``os.replace`` after one more check."""
    try:
        os.link(tmp, dest)
    except FileExistsError as exc:
        raise StoreBackupError(
            f"backup destination {dest} appeared while the backup was written; the backup "
            "was not placed (nothing was overwritten)", path=dest, cause=exc,
        ) from exc
    except OSError:
        if os.path.lexists(dest):
            raise StoreBackupError(
                f"backup destination {dest} appeared while the backup was written; the backup "
                "was not placed (nothing was overwritten)", path=dest,
            ) from None
        os.replace(tmp, dest)
        return
    os.unlink(tmp)


def backup_connection(source: sqlite3.Connection, source_path: Path,
                      dest: str | os.PathLike[str]) -> BackupInfo:
    """Back up the database of an open connection (see :func:`backup_store`)."""
    start = time.perf_counter()
    dest = Path(dest).expanduser()
    _check_dest(Path(source_path), dest)
    tmp = dest.with_name(f".{dest.name}.backup-{os.getpid()}-{secrets.token_hex(4)}.tmp")
    try:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
    except OSError as exc:
        raise StoreBackupError(
            f"cannot write backup {dest}: {exc.strerror or exc} (in {dest.parent})",
            path=dest, cause=exc,
        ) from exc
    os.close(fd)
    created = [tmp]  # only files this function created are ever removed
    copy: sqlite3.Connection | None = None
    try:
        copy = sqlite3.connect(tmp)
        created += [tmp.with_name(tmp.name + s) for s in ("-journal", "-wal", "-shm")]
        # pages=-1: every page in one step, i.e. one read transaction of the source — one
        # committed state, however much the studies write meanwhile (WAL: they never wait).
        source.backup(copy, pages=-1)
        mode = copy.execute("PRAGMA journal_mode=DELETE").fetchone()[0]
        if str(mode).lower() != "delete":
            raise StoreBackupError(f"backup {dest}: could not switch the copy to "
                                   f"journal_mode=DELETE (got {mode})", path=dest)
        check = copy.execute("PRAGMA quick_check").fetchall()
        if check != [("ok",)]:
            raise StoreBackupError(
                f"backup {dest}: the copy failed SQLite's quick_check "
                f"({'; '.join(str(r[0]) for r in check[:5])}); the source store may be "
                "damaged: run `PRAGMA integrity_check` on it", path=dest,
            )
        counts = [int(copy.execute(f"SELECT COUNT(*) FROM {t}").fetchone()[0])
                  for t in ("studies", "candidates", "metrics")]
        copy.close()
        copy = None
        _fsync(tmp)
        _place(tmp, dest)
        _fsync(dest.parent, directory=True)
    except BaseException as exc:
        if copy is not None:
            copy.close()
        for f in created:
            try:
                f.unlink()
            except OSError:
                pass
        if isinstance(exc, StoreError):
            raise
        if isinstance(exc, sqlite3.Error):
            if is_full(exc, tmp):
                raise StoreFullError(
                    f"disk full while writing backup {dest} ({exc}); free space in "
                    f"{dest.parent} and run the backup again (nothing was left under "
                    f"{dest.name})", path=dest, cause=exc,
                ) from exc
            if "no such table" in str(exc):
                raise StoreBackupError(
                    f"cannot back up {source_path}: it is not a Prune Studio store ({exc})",
                    path=source_path, cause=exc,
                ) from exc
            raise db_error(source_path, exc, "back up") from exc
        if isinstance(exc, OSError):
            raise StoreBackupError(f"cannot write backup {dest}: {exc}", path=dest,
                                   cause=exc) from exc
        raise
    return BackupInfo(path=dest, studies=counts[0], candidates=counts[1], metrics=counts[2],
                      bytes=dest.stat().st_size, seconds=time.perf_counter() - start)


def backup_store(source: str | os.PathLike[str], dest: str | os.PathLike[str], *,
                 timeout: float = 30.0) -> BackupInfo:
    """Copy the store at ``source`` to the new file ``dest`` while studies keep writing.

    Returns a :class:`BackupInfo`: ``path`` (the copy), ``studies``, ``candidates``,
    ``metrics`` (row counts in the copy, one consistent state) and ``bytes`` (the copy's
    size), plus ``seconds``. The copy is ONE self-contained file (``journal_mode=DELETE``, no
    ``-wal``), opens read-only anywhere, even on a read-only medium.

    Raises :class:`StoreBackupError` (a StoreError) when ``dest`` already exists, is the
    store itself or is in a missing folder, :class:`StoreFullError` when the disk fills up
    (nothing is left under ``dest``), and the errors of ``open_store(source, readonly=True)``
    (missing store, not a store, newer schema ...). Never deletes or overwrites a file it did
    not create. For ``prunestudio backup STORE DEST``.
    """
    from .db import open_store

    with open_store(source, readonly=True, timeout=timeout) as store:
        return backup_connection(store.conn, store.path, dest)
