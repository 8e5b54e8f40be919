"""Exceptions raised by the store. All derive from :class:`StoreError`."""

from __future__ import annotations

import sqlite3

__all__ = [
    "StoreError",
    "SchemaTooNewError",
    "StoreNotFoundError",
    "StoreLockedError",
    "StoreReadOnlyError",
]


class StoreError(Exception):
    """Any problem with a Prune Studio store (bad file, missing row, bad state)."""


class SchemaTooNewError(StoreError):
    """The file was written by a newer prunestudio whose schema this version does not know."""

    def __init__(self, path: str, found: int, supported: int) -> None:
        self.path, self.found, self.supported = path, found, supported
        super().__init__(
            f"store {path} has schema version {found}, but this prunestudio supports schema "
            f"version {supported} at most; upgrade prunestudio (pip install -U prunestudio) "
            "to open it"
        )


class StoreNotFoundError(StoreError, FileNotFoundError):
    """A read-only open of a store file that does not exist."""


class StoreLockedError(StoreError):
    """SQLite answered 'database is locked' after the busy timeout ran out."""


class StoreReadOnlyError(StoreError, sqlite3.OperationalError):
    """A write was attempted on a store opened with ``readonly=True``."""
