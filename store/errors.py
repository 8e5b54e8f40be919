"""Exceptions raised by the store. All derive from :class:`StoreError`.

Every SQLite error that leaves the store (``open_store``, every :class:`~.db.Store` method,
every function of ``queries``, ``backup_store``) is turned into a :class:`StoreError` subclass
by :func:`db_error`, carrying ``path`` (the store file) and ``cause`` (the SQLite exception):
a UI or the CLI prints ``str(exc)`` and never needs to import sqlite3.
"""

from __future__ import annotations

import os
import sqlite3
from pathlib import Path

__all__ = [
    "StoreError",
    "SchemaTooNewError",
    "StoreNotFoundError",
    "StoreLockedError",
    "StoreReadOnlyError",
    "StorePathError",
    "StoreNotWritableError",
    "StoreFullError",
    "StoreCorruptError",
    "StoreDatabaseError",
    "StoreBackupError",
    "READ_COMMANDS",
    "db_error",
    "locked_error",
    "unwritable_reason",
]

# What a user can still run on a store that cannot be written (named in messages).
READ_COMMANDS = "read-only commands (show, studies, tui) can still read it"


class StoreError(Exception):
    """Any problem with a Prune Studio store (bad file, missing row, bad state).

    ``path``: the store file concerned (None when not known); ``cause``: the underlying
    exception (an ``sqlite3.Error`` or ``OSError``) or None."""

    def __init__(self, message: str = "", *, path: str | os.PathLike[str] | None = None,
                 cause: BaseException | None = None) -> None:
        super().__init__(message)
        self.path = None if path is None else str(path)
        self.cause = cause


class SchemaTooNewError(StoreError):
    """The file was written by a newer prunestudio whose schema this version does not know."""

    def __init__(self, path: str, found: int, supported: int) -> None:
        self.found, self.supported = found, supported
        super().__init__(
            f"store {path} has schema version {found}, but this prunestudio supports schema "
            f"version {supported} at most; upgrade prunestudio (pip install -U prunestudio) "
            "to open it", path=path,
        )


class StoreNotFoundError(StoreError, FileNotFoundError):
    """A read-only open of a store file that does not exist."""


class StoreLockedError(StoreError):
    """SQLite answered 'database is locked' after the busy timeout ran out."""


class StoreReadOnlyError(StoreError, sqlite3.OperationalError):
    """A write was attempted on a store opened with ``readonly=True``."""


class StorePathError(StoreError):
    """The store path cannot name a store: a folder, a file under /proc or /sys, a parent
    that is a file."""


class StoreNotWritableError(StoreError):
    """A read-write open (or a write) of a store whose file or folder cannot be written:
    read-only medium, no permission. Read-only opens still work."""


class StoreFullError(StoreError):
    """The disk (or quota) filled up during a write; the transaction was rolled back."""


class StoreCorruptError(StoreError):
    """The file is not an SQLite database, or is damaged."""


class StoreDatabaseError(StoreError):
    """Any other SQLite error (an I/O error, an SQL error, ...)."""


class StoreBackupError(StoreError):
    """``backup_store`` refused its destination or failed; nothing was left under the
    destination's name."""


# -- mapping SQLite errors ------------------------------------------------------------------


def _errorname(exc: BaseException) -> str:
    return str(getattr(exc, "sqlite_errorname", "") or "")


def is_locked(exc: BaseException) -> bool:
    name = _errorname(exc)
    return isinstance(exc, sqlite3.OperationalError) and (
        name.startswith("SQLITE_BUSY") or name.startswith("SQLITE_LOCKED") or "locked" in str(exc)
    )


def _free_bytes(path: Path) -> int | None:
    folder = path if path.is_dir() else path.parent
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def is_full(exc: BaseException, path: Path | None = None) -> bool:
    """SQLITE_FULL, or an I/O error while the store's file system has (almost) no room left
    (SQLite reports a failed growth of the -shm file as an I/O error)."""
    name = _errorname(exc)
    if name == "SQLITE_FULL" or "database or disk is full" in str(exc):
        return True
    if path is not None and (name.startswith("SQLITE_IOERR") or "disk I/O error" in str(exc)):
        free = _free_bytes(path)
        return free is not None and free < 256 * 1024
    return False


def _is_readonly(exc: BaseException) -> bool:
    name = _errorname(exc)
    return name.startswith("SQLITE_READONLY") or "readonly database" in str(exc)


def _is_corrupt(exc: BaseException) -> bool:
    name = _errorname(exc)
    text = str(exc)
    return (name in ("SQLITE_NOTADB", "SQLITE_CORRUPT") or name.startswith("SQLITE_CORRUPT")
            or "not a database" in text or "malformed" in text)


def unwritable_reason(path: Path) -> str | None:
    """Why the store at ``path`` cannot be written, or None when it can (as far as the
    operating system tells before trying): a read-only medium, or no permission on the file
    or on its folder (SQLite creates ``-wal`` and ``-shm`` files beside the store)."""
    folder = path.parent
    try:
        st = os.statvfs(folder)
    except OSError:
        return None
    if st.f_flag & os.ST_RDONLY:
        return f"the medium holding {folder} is mounted read-only"
    if path.exists() and not os.access(path, os.W_OK):
        return f"no permission to write {path}"
    if not os.access(folder, os.W_OK | os.X_OK):
        return (f"no permission to write in the folder {folder} (SQLite creates "
                f"{path.name}-wal and {path.name}-shm beside the store)")
    return None


def locked_error(path: str | os.PathLike[str], exc: BaseException,
                 timeout: float | None = None) -> StoreLockedError:
    waited = f" ({timeout:g} s)" if timeout is not None else ""
    return StoreLockedError(
        f"store {path} is locked ({exc}): another process holds a write lock for longer than "
        f"the busy timeout{waited}; wait for it to finish or pass --lock-timeout SECONDS",
        path=path, cause=exc,
    )


def not_writable_error(path: Path, reason: str, cause: BaseException | None = None
                       ) -> StoreNotWritableError:
    if path.exists():
        text = f"cannot write store {path}: {reason}; {READ_COMMANDS}"
    else:
        text = f"cannot create store {path}: {reason}"
    return StoreNotWritableError(text, path=path, cause=cause)


def full_error(path: str | os.PathLike[str], exc: BaseException) -> StoreFullError:
    cause = str(exc) if "full" in str(exc) else f"{exc}; database or disk is full"
    return StoreFullError(
        f"disk full while writing store {path} ({cause}); free space and resume with --resume",
        path=path, cause=exc,
    )


def db_error(path: str | os.PathLike[str], exc: sqlite3.Error, doing: str | None = None,
             timeout: float | None = None) -> StoreError:
    """The :class:`StoreError` subclass for an SQLite error on the store at ``path``.

    ``doing`` (e.g. "open") is woven into the generic messages: ``cannot open store X: ...``.
    """
    if isinstance(exc, StoreError):
        return exc
    p = Path(path)
    if is_locked(exc):
        return locked_error(p, exc, timeout)
    if is_full(exc, p):
        return full_error(p, exc)
    if _is_readonly(exc):
        reason = unwritable_reason(p) or str(exc)
        return not_writable_error(p, reason, exc)
    if _is_corrupt(exc):
        what = f"cannot {doing} store {p}" if doing else f"store {p} is damaged"
        return StoreCorruptError(
            f"{what}: {exc} (the file is not a Prune Studio store, or it is damaged)",
            path=p, cause=exc,
        )
    what = f"cannot {doing} store {p}" if doing else f"database error on store {p}"
    return StoreDatabaseError(f"{what}: {exc}", path=p, cause=exc)
