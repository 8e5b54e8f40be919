"""Open a store file and write to it: :func:`open_store` and :class:`Store`.

Concurrency model: WAL journal (readers never block the writer), a busy timeout, and every
write is one short ``BEGIN IMMEDIATE`` transaction, so writers queue on the lock instead of
failing on a read-to-write upgrade. ``updated_seq`` values are taken from a counter inside that
transaction, hence they become visible to readers in increasing order: a reader that has seen
seq N has seen everything up to N (what makes the ``*_since`` cursors in ``queries`` exact).
"""

from __future__ import annotations

import functools
import json
import os
import socket
import sqlite3
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from time import monotonic, sleep  # not through `time`: tests may fake time.time only
from types import TracebackType
from typing import TYPE_CHECKING, Any, TypeVar

from prunestudio.schema import (
    CANDIDATE_STATUSES,
    EVENT_LEVELS,
    STUDY_STATUSES,
    STUDY_TERMINAL,
    Artifact,
    Candidate,
    Study,
)
from prunestudio.schema.canonical import canonical_json, spec_hash

from .errors import (
    SchemaTooNewError,
    StoreError,
    StoreLockedError,
    StoreNotFoundError,
    StoreNotWritableError,
    StorePathError,
    StoreReadOnlyError,
    db_error,
    not_writable_error,
    unwritable_reason,
)
from .liveness import pid_alive, this_host
from .records import (
    candidate_record,
    check_choice,
    decode_candidate,
    decode_study,
    metrics_for,
    normalise_metric,
    rows,
    study_record,
)
from .schema import (
    OWL_RENAMED_IN,
    READABLE_FROM,
    SCHEMA_VERSION,
    apply_migrations,
    pending_migrations,
    stored_schema_version,
    table_names,
)

if TYPE_CHECKING:  # sqlite_utils pulls in pandas when installed: imported only to migrate
    from sqlite_utils import Database

    from .backup import BackupInfo

__all__ = [
    "Store",
    "open_store",
    "StoreError",
    "SchemaTooNewError",
    "StoreNotFoundError",
    "StoreLockedError",
    "StoreReadOnlyError",
]


F = TypeVar("F", bound=Callable[..., Any])


def guarded(fn: F) -> F:
    """Turn any SQLite error escaping a Store method or a query function (first argument: the
    Store) into a StoreError subclass naming the store (the transaction, if any, was rolled
    back by :meth:`Store.transaction`)."""

    @functools.wraps(fn)
    def inner(self: Store, *args: Any, **kwargs: Any) -> Any:
        try:
            return fn(self, *args, **kwargs)
        except StoreError:
            raise
        except sqlite3.Error as exc:
            raise self.error(exc) from exc

    return inner  # type: ignore[return-value]


def _opt_json(value: Mapping[str, Any] | None, field: str) -> str | None:
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise ValueError(f"{field} must be a dict or None; got {type(value).__name__}")
    return canonical_json(dict(value))


def _text(value: Any, field: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError(f"{field} must be a non-empty string; got {value!r}")
    return value


def _opt_int(value: Any, field: str, minimum: int = 0) -> int | None:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"{field} must be an integer >= {minimum} or None; got {value!r}")
    return int(value)


class Store:
    """A connection to one store file. Use :func:`open_store` to get one.

    Write methods run one short transaction each (group several with :meth:`transaction`).
    Rows come back as plain dicts with JSON columns decoded. Every SQLite error comes out as
    a :class:`StoreError` subclass naming the store (see ``errors``).

    WAL checkpoints: SQLite copies the ``-wal`` file back into the database file only when
    the WAL reaches 1000 pages or when the *last* connection closes. A store watched by a UI
    keeps a reader attached, so the results of a short study could live in the ``-wal`` only,
    and a copy of the ``.db`` alone would lose them. A read-write Store therefore runs a
    PASSIVE checkpoint at most every :attr:`checkpoint_every` seconds after a write and on
    :meth:`close` (see there for why PASSIVE).
    """

    checkpoint_every = 30.0  # seconds between two periodic checkpoints while writing
    close_checkpoint_wait = 1.0  # seconds close() retries a checkpoint a reader held back

    def __init__(self, conn: sqlite3.Connection, path: Path, *, readonly: bool,
                 timeout: float | None = None, immutable: bool = False) -> None:
        self.conn = conn
        self.path = path
        self.readonly = readonly
        self.timeout = timeout
        # opened with SQLite's immutable=1 (a store on a read-only medium): changes made
        # elsewhere are not seen
        self.immutable = immutable
        self.checkpoint_error: StoreError | None = None  # the last failed periodic checkpoint
        self._db: Database | None = None
        self._closed = False
        self._last_checkpoint = monotonic()

    # -- connection ---------------------------------------------------------------------------

    def error(self, exc: sqlite3.Error, doing: str | None = None) -> StoreError:
        """The StoreError for an SQLite error on this store."""
        return db_error(self.path, exc, doing, self.timeout)

    @property
    def db(self) -> Database:
        """A ``sqlite_utils.Database`` on the same connection (imported on first use)."""
        if self._db is None:
            from sqlite_utils import Database

            self._db = Database(self.conn, execute_plugins=False)
        return self._db

    @property
    def schema_version(self) -> int | None:
        return stored_schema_version(self.conn)

    def checkpoint(self, mode: str = "PASSIVE") -> tuple[int, int, int]:
        """Run ``PRAGMA wal_checkpoint(mode)``; return SQLite's (busy, WAL frames, frames
        checkpointed). Frames checkpointed == WAL frames: the database file alone holds every
        committed transaction. (0, -1, -1): the store is not in WAL mode."""
        mode = mode.upper()
        if mode not in ("PASSIVE", "FULL", "RESTART", "TRUNCATE"):
            raise ValueError(f"checkpoint mode must be PASSIVE, FULL, RESTART or TRUNCATE; "
                             f"got {mode!r}")
        try:
            row = self.conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchone()
        except sqlite3.Error as exc:
            raise self.error(exc, "checkpoint") from exc
        self._last_checkpoint = monotonic()
        return int(row[0]), int(row[1]), int(row[2])

    def _maybe_checkpoint(self) -> None:
        """After a write: a PASSIVE checkpoint when the last one is ``checkpoint_every`` s
        old. A failure is kept in ``checkpoint_error``, never raised: the data is safe in the
        WAL, and the write that triggered this has committed."""
        if monotonic() - self._last_checkpoint < self.checkpoint_every:
            return
        try:
            self.checkpoint("PASSIVE")
            self.checkpoint_error = None
        except StoreError as exc:
            self._last_checkpoint = monotonic()
            self.checkpoint_error = exc

    def _final_checkpoint(self) -> None:
        # PASSIVE, retried briefly, rather than FULL: PASSIVE copies every frame that no
        # reader still needs, without taking the write lock and without waiting. Readers
        # that are attached but idle (a TUI between two polls, `show` loops: no open read
        # transaction) hold no WAL read mark, so it completes at once. A reader inside a read
        # transaction pins the frames after its snapshot: we retry for up to
        # `close_checkpoint_wait` seconds (its snapshot is short), then give up — what is
        # left stays safe in the WAL and the next checkpoint takes it. FULL would instead
        # block every other writer behind the busy handler until *all* readers move to the
        # latest snapshot (up to the whole busy timeout with a long-running reader such as
        # an export), stalling the other workers of the study.
        if self.conn.in_transaction:
            return
        deadline = monotonic() + self.close_checkpoint_wait
        delay = 0.01
        while True:
            try:
                _, log, done = self.conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
            except sqlite3.Error:
                return  # safe in the WAL; the next writer or opener recovers it
            if log < 0 or done >= log or monotonic() >= deadline:
                return
            sleep(delay)
            delay = min(0.2, delay * 2)

    def close(self) -> None:
        """Close the connection; a read-write store first checkpoints its WAL into the
        database file (so a copy of the ``.db`` file alone holds every committed result)."""
        if self._closed:
            return
        self._closed = True
        try:
            if not self.readonly:
                self._final_checkpoint()
        finally:
            self.conn.close()

    def backup(self, dest: str | os.PathLike[str]) -> BackupInfo:
        """One consistent, self-contained copy of this store at ``dest`` (a new file), taken
        with SQLite's online backup API while others keep writing; see
        :func:`~.backup.backup_store`."""
        from .backup import backup_connection

        if self.conn.in_transaction:
            raise StoreError(f"cannot back up store {self.path} inside a transaction",
                             path=self.path)
        return backup_connection(self.conn, self.path, dest)

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Store {str(self.path)!r}{' read-only' if self.readonly else ''}>"

    def _rollback(self) -> None:
        if self.conn.in_transaction:
            try:
                self.conn.execute("ROLLBACK")
            except sqlite3.Error:  # SQLite may have rolled back already (disk full, I/O)
                pass

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``); nested use becomes a savepoint.

        On any error the transaction is rolled back and the connection stays usable (e.g.
        after a full disk, once space is freed); SQLite errors come out as StoreError
        subclasses (:class:`StoreFullError`, :class:`StoreLockedError`, ...)."""
        if self.readonly:
            raise StoreReadOnlyError(
                f"store {self.path} was opened read-only; open it with readonly=False to write",
                path=self.path,
            )
        conn = self.conn
        if conn.in_transaction:
            conn.execute("SAVEPOINT store_write")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    try:
                        conn.execute("ROLLBACK TO store_write")
                        conn.execute("RELEASE store_write")
                    except sqlite3.Error:
                        pass  # the outer transaction is rolled back by its own handler
                raise
            conn.execute("RELEASE store_write")
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            raise self.error(exc) from exc
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            self._rollback()
            if isinstance(exc, sqlite3.Error) and not isinstance(exc, StoreError):
                raise self.error(exc) from exc
            raise
        self._maybe_checkpoint()

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees the same committed state."""
        conn = self.conn
        if conn.in_transaction:
            yield conn
            return
        try:
            conn.execute("BEGIN")
        except sqlite3.Error as exc:
            raise self.error(exc) from exc
        try:
            yield conn
        except sqlite3.Error as exc:
            if isinstance(exc, StoreError):
                raise
            raise self.error(exc) from exc
        finally:
            if conn.in_transaction:
                try:
                    conn.execute("COMMIT")
                except sqlite3.Error:
                    self._rollback()

    def _seq(self, n: int = 1) -> int:
        """Reserve ``n`` consecutive change numbers; return the first (inside a write)."""
        self.conn.execute(
            "UPDATE meta SET value = CAST(value AS INTEGER) + ? WHERE key = 'seq'", (n,)
        )
        last = int(self.conn.execute("SELECT value FROM meta WHERE key = 'seq'").fetchone()[0])
        return last - n + 1

    def _touch(self, study_id: int, candidate_ids: Sequence[int] = ()) -> None:
        """Give each changed candidate its own new seq, and the study the latest one."""
        first = self._seq(max(1, len(candidate_ids)))
        for offset, cid in enumerate(candidate_ids):
            self.conn.execute(
                "UPDATE candidates SET updated_seq = ? WHERE id = ?", (first + offset, cid)
            )
        last = first + max(0, len(candidate_ids) - 1)
        self.conn.execute("UPDATE studies SET updated_seq = ? WHERE id = ?", (last, study_id))

    # -- studies ------------------------------------------------------------------------------

    @guarded
    def create_study(
        self, *, name: str | None, kind: str, model: str, config: Mapping[str, Any],
        seed: int | None = None, budget: int | None = None,
    ) -> int:
        """Record a new study (status 'created'); return its id. ``name=None`` gives
        ``f"{kind}-{id}"``. Names must be unique and not purely numeric."""
        if name is not None:
            _text(name, "study name")
            if name.isdigit():
                raise ValueError(f"study name {name!r} must not be a number (ids are numbers)")
        _text(kind, "study kind")
        _text(model, "study model")
        config_json = _opt_json(config, "study config") or "{}"
        seed, budget = _opt_int(seed, "seed"), _opt_int(budget, "budget")
        with self.transaction() as c:
            if name is not None:
                row = c.execute("SELECT id FROM studies WHERE name = ?", (name,)).fetchone()
                if row:
                    raise StoreError(
                        f"a study named {name!r} already exists (id {row[0]}); choose another "
                        "name or resume that study"
                    )
            cur = c.execute(
                "INSERT INTO studies (name, kind, model, config, seed, budget, status, host,"
                " created_at, updated_seq) VALUES (?, ?, ?, ?, ?, ?, 'created', ?, ?, ?)",
                (name, kind, model, config_json, seed, budget, socket.gethostname(),
                 time.time(), self._seq()),
            )
            study_id = int(cur.lastrowid or 0)
            if name is None:
                auto, n = f"{kind}-{study_id}", 1
                while c.execute("SELECT 1 FROM studies WHERE name = ?", (auto,)).fetchone():
                    n += 1
                    auto = f"{kind}-{study_id}-{n}"
                c.execute("UPDATE studies SET name = ? WHERE id = ?", (auto, study_id))
        return study_id

    def _study_row(self, key: int | str) -> dict[str, Any] | None:
        if isinstance(key, str) and not key.isdigit():
            found = rows(self.conn, "SELECT * FROM studies WHERE name = ?", (key,))
        else:
            found = rows(self.conn, "SELECT * FROM studies WHERE id = ?", (int(key),))
            if not found and isinstance(key, str):
                found = rows(self.conn, "SELECT * FROM studies WHERE name = ?", (key,))
        return found[0] if found else None

    def _no_study(self, key: int | str) -> StoreError:
        known = rows(self.conn, "SELECT id, name FROM studies ORDER BY id DESC LIMIT 20")
        listed = ", ".join(f"{r['name']} (id {r['id']})" for r in known) or "none yet"
        return StoreError(f"no study {key!r} in {self.path}; known: {listed}")

    @guarded
    def get_study(self, study_id_or_name: int | str) -> dict[str, Any]:
        """The study row (config decoded), by id or by name."""
        row = self._study_row(study_id_or_name)
        if row is None:
            raise self._no_study(study_id_or_name)
        return decode_study(row)

    @guarded
    def set_study_status(self, study_id: int, status: str, *, error: str | None = None) -> None:
        """Set status (one of STUDY_STATUSES) and ``error`` (None clears it). The first
        'running' sets started_at; a terminal status sets finished_at; 'running' clears it."""
        check_choice("study status", status, STUDY_STATUSES)
        now = time.time()
        with self.transaction() as c:
            cur = c.execute(
                "UPDATE studies SET status = ?, error = ?,"
                " started_at = CASE WHEN ? = 'running' THEN COALESCE(started_at, ?)"
                " ELSE started_at END,"
                " finished_at = CASE WHEN ? THEN ? WHEN ? = 'running' THEN NULL"
                " ELSE finished_at END"
                " WHERE id = ?",
                (status, error, status, now, status in STUDY_TERMINAL, now, status, study_id),
            )
            if cur.rowcount == 0:
                raise self._no_study(study_id)
            self._touch(study_id)

    @guarded
    def request_cancel(self, study_id: int, reason: str) -> None:
        """Ask the runner to stop the study after its current candidate."""
        _text(reason, "cancel reason")
        with self.transaction() as c:
            cur = c.execute(
                "UPDATE studies SET cancel_requested = ? WHERE id = ?", (reason, study_id)
            )
            if cur.rowcount == 0:
                raise self._no_study(study_id)
            self._touch(study_id)

    @guarded
    def clear_cancel(self, study_id: int) -> None:
        """Forget a cancel request (e.g. when the user resumes the study)."""
        with self.transaction() as c:
            if c.execute(
                "UPDATE studies SET cancel_requested = NULL WHERE id = ?", (study_id,)
            ).rowcount == 0:
                raise self._no_study(study_id)
            self._touch(study_id)

    @guarded
    def cancel_requested(self, study_id: int) -> str | None:
        """The pending cancel reason of the study, or None."""
        row = self.conn.execute(
            "SELECT cancel_requested FROM studies WHERE id = ?", (study_id,)
        ).fetchone()
        if row is None:
            raise self._no_study(study_id)
        return row[0]

    # -- candidates ---------------------------------------------------------------------------

    @guarded
    def add_candidate(
        self, study_id: int, spec: Mapping[str, Any], *, origin: str,
        parents: Sequence[int] | None = None, generation: int | None = None,
    ) -> tuple[int, bool]:
        """Record a pending candidate; return ``(id, created)``. A spec already in the study
        (same canonical JSON, key order irrelevant) returns the existing id and False."""
        _text(origin, "candidate origin")
        spec_json = _opt_json(spec, "candidate spec") or "{}"
        digest = spec_hash(dict(spec))
        if parents is not None:
            parents = [int(p) for p in parents]
        generation = _opt_int(generation, "generation")
        with self.transaction() as c:
            row = c.execute(
                "SELECT id, spec FROM candidates WHERE study_id = ? AND spec_hash = ?",
                (study_id, digest),
            ).fetchone()
            if row is not None:
                if row[1] != spec_json:
                    raise StoreError(f"spec hash collision in study {study_id}: {digest}")
                return int(row[0]), False
            if c.execute("SELECT 1 FROM studies WHERE id = ?", (study_id,)).fetchone() is None:
                raise self._no_study(study_id)
            (idx,) = c.execute(
                "SELECT COALESCE(MAX(idx) + 1, 0) FROM candidates WHERE study_id = ?",
                (study_id,),
            ).fetchone()
            seq = self._seq()
            cur = c.execute(
                "INSERT INTO candidates (study_id, idx, spec, spec_hash, origin, parents,"
                " generation, status, created_at, updated_seq)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, 'pending', ?, ?)",
                (study_id, idx, spec_json, digest, origin,
                 None if parents is None else canonical_json(parents), generation,
                 time.time(), seq),
            )
            c.execute("UPDATE studies SET updated_seq = ? WHERE id = ?", (seq, study_id))
            return int(cur.lastrowid or 0), True

    def _candidate_row(self, candidate_id: int) -> dict[str, Any]:
        found = rows(self.conn, "SELECT * FROM candidates WHERE id = ?", (candidate_id,))
        if not found:
            raise StoreError(f"no candidate with id {candidate_id} in {self.path}")
        return found[0]

    @guarded
    def start_candidate(self, candidate_id: int, *, worker: str | None = None) -> bool:
        """Mark a 'pending' (or 'failed', to retry) candidate 'running'. Returns False and
        changes nothing when it is in any other status (e.g. another worker took it)."""
        with self.transaction() as c:
            row = self._candidate_row(candidate_id)
            if row["status"] not in ("pending", "failed"):
                return False
            c.execute(
                "UPDATE candidates SET status = 'running', worker = ?, started_at = ?,"
                " finished_at = NULL, error = NULL WHERE id = ?",
                (worker, time.time(), candidate_id),
            )
            self._touch(row["study_id"], [candidate_id])
            return True

    @guarded
    def claim_candidate(self, study_id: int, *, worker: str) -> dict[str, Any] | None:
        """Atomically take the lowest-idx pending candidate (for several workers); return it
        (now 'running') or None when nothing is pending."""
        with self.transaction() as c:
            row = c.execute(
                "SELECT id FROM candidates WHERE study_id = ? AND status = 'pending'"
                " ORDER BY idx LIMIT 1", (study_id,),
            ).fetchone()
            if row is None:
                return None
            self.start_candidate(int(row[0]), worker=worker)
            return self.candidate(int(row[0]))

    def _write_metrics(self, candidate_id: int, metrics: Sequence[dict[str, Any]]) -> None:
        now = time.time()
        for m in metrics:
            self.conn.execute(
                "INSERT INTO metrics (candidate_id, name, value, dataset, split, seqlen,"
                " n_samples, fidelity, role, protocol, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (candidate_id, name, dataset, split, seqlen, fidelity, role)"
                " DO UPDATE SET value = excluded.value, n_samples = excluded.n_samples,"
                " protocol = excluded.protocol, created_at = excluded.created_at",
                (candidate_id, m["name"], m["value"], m["dataset"], m["split"], m["seqlen"],
                 m["n_samples"], m["fidelity"], m["role"], m["protocol"], now),
            )

    @staticmethod
    def _normalise(metrics: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
        if isinstance(metrics, Mapping):
            raise ValueError("metrics must be a list of dicts, not one dict")
        out, seen = [], set()
        for m in metrics:
            norm = normalise_metric(m)
            key = tuple(norm[k] for k in ("name", "dataset", "split", "seqlen", "fidelity", "role"))
            if key in seen:
                raise ValueError(
                    f"metric {norm['name']!r} given twice with the same dataset/split/seqlen/"
                    "fidelity/role; tell them apart with those fields"
                )
            seen.add(key)
            out.append(norm)
        return out

    @guarded
    def finish_candidate(
        self, candidate_id: int, *, metrics: Sequence[Mapping[str, Any]],
        timings: Mapping[str, float] | None = None, info: Mapping[str, Any] | None = None,
        finished_at: float | None = None,
    ) -> None:
        """In one transaction: store the metrics and mark the candidate 'done'.

        Metric dicts take name, value (required) and dataset, split, seqlen, n_samples,
        fidelity ('proxy'/'full'), role, protocol (dict). Non-finite values raise ValueError
        before anything is written. ``timings``/``info`` replace the stored dicts when given;
        ``finished_at`` (default: now) is when its worker finished it (a parallel study
        records results in proposal order, possibly after they came back).
        """
        norm = self._normalise(metrics)
        timings_json, info_json = _opt_json(timings, "timings"), _opt_json(info, "info")
        with self.transaction() as c:
            row = self._candidate_row(candidate_id)
            if row["status"] == "done":
                raise StoreError(
                    f"candidate {candidate_id} is already done; use add_metrics() to record "
                    "a re-evaluation"
                )
            self._write_metrics(candidate_id, norm)
            c.execute(
                "UPDATE candidates SET status = 'done', error = NULL, finished_at = ?,"
                " timings = COALESCE(?, timings), info = COALESCE(?, info) WHERE id = ?",
                (time.time() if finished_at is None else finished_at, timings_json, info_json,
                 candidate_id),
            )
            self._touch(row["study_id"], [candidate_id])

    @guarded
    def add_metrics(self, candidate_id: int, metrics: Sequence[Mapping[str, Any]]) -> None:
        """Add or replace metrics (same key: name, dataset, split, seqlen, fidelity, role)."""
        norm = self._normalise(metrics)
        with self.transaction():
            row = self._candidate_row(candidate_id)
            self._write_metrics(candidate_id, norm)
            self._touch(row["study_id"], [candidate_id])

    def _end(self, candidate_id: int, status: str, error: str,
             timings: Mapping[str, float] | None, info: Mapping[str, Any] | None,
             finished_at: float | None = None) -> None:
        timings_json, info_json = _opt_json(timings, "timings"), _opt_json(info, "info")
        with self.transaction() as c:
            row = self._candidate_row(candidate_id)
            c.execute(
                "UPDATE candidates SET status = ?, error = ?, finished_at = ?,"
                " timings = COALESCE(?, timings), info = COALESCE(?, info) WHERE id = ?",
                (status, error, time.time() if finished_at is None else finished_at,
                 timings_json, info_json, candidate_id),
            )
            self._touch(row["study_id"], [candidate_id])

    @guarded
    def fail_candidate(
        self, candidate_id: int, *, error: str, timings: Mapping[str, float] | None = None,
        info: Mapping[str, Any] | None = None, finished_at: float | None = None,
    ) -> None:
        """Mark the candidate 'failed' with its error message (metrics already stored stay)."""
        self._end(candidate_id, "failed", _text(error, "error"), timings, info, finished_at)

    @guarded
    def skip_candidate(
        self, candidate_id: int, *, reason: str, info: Mapping[str, Any] | None = None
    ) -> None:
        """Mark the candidate 'skipped' (reason kept in ``error``, e.g. an equivalent mask)."""
        self._end(candidate_id, "skipped", _text(reason, "reason"), None, info)

    @guarded
    def release_candidates(self, candidate_ids: Sequence[int]) -> list[int]:
        """Candidates started but given up (e.g. work started ahead of a cancel) go back from
        'running' to 'pending' and lose any partial metrics; others are left as they are.
        Returns the ids released."""
        ids = [int(i) for i in candidate_ids]
        if not ids:
            return []
        marks = ", ".join("?" * len(ids))
        with self.transaction() as c:
            found = [r[0] for r in c.execute(
                f"SELECT id FROM candidates WHERE id IN ({marks}) AND status = 'running'"
                " ORDER BY idx", ids)]
            if found:
                fm = ", ".join("?" * len(found))
                c.execute(f"DELETE FROM metrics WHERE candidate_id IN ({fm})", found)
                c.execute(f"UPDATE candidates SET status = 'pending', worker = NULL,"
                          f" started_at = NULL WHERE id IN ({fm})", found)
                study = c.execute("SELECT study_id FROM candidates WHERE id = ?",
                                  (found[0],)).fetchone()[0]
                self._touch(study, found)
        return found

    @guarded
    def reset_running(self, study_id: int) -> list[int]:
        """After a crash: candidates still 'running' go back to 'pending' and lose any partial
        metrics. Returns their ids (in idx order)."""
        with self.transaction() as c:
            ids = [r[0] for r in c.execute(
                "SELECT id FROM candidates WHERE study_id = ? AND status = 'running' ORDER BY idx",
                (study_id,),
            )]
            if ids:
                c.execute(
                    "DELETE FROM metrics WHERE candidate_id IN (SELECT id FROM candidates"
                    " WHERE study_id = ? AND status = 'running')", (study_id,),
                )
                c.execute(
                    "UPDATE candidates SET status = 'pending', worker = NULL, started_at = NULL"
                    " WHERE study_id = ? AND status = 'running'", (study_id,),
                )
                self._touch(study_id, ids)
        return ids

    @guarded
    def candidates(
        self, study_id: int, *, status: str | None = None, with_metrics: bool = False
    ) -> list[dict[str, Any]]:
        """Candidates of a study ordered by idx, optionally one status only."""
        sql, params = "SELECT * FROM candidates WHERE study_id = ?", [study_id]
        if status is not None:
            check_choice("candidate status", status, CANDIDATE_STATUSES)
            sql, params = sql + " AND status = ?", [study_id, status]
        with self.snapshot() as c:
            found = [decode_candidate(r) for r in rows(c, sql + " ORDER BY idx", params)]
            if with_metrics:
                by_id = metrics_for(c, [r["id"] for r in found])
                for r in found:
                    r["metrics"] = by_id[r["id"]]
        return found

    @guarded
    def candidate(self, candidate_id: int) -> dict[str, Any]:
        """One candidate with its ``metrics`` list."""
        with self.snapshot() as c:
            out = decode_candidate(self._candidate_row(candidate_id))
            out["metrics"] = metrics_for(c, [candidate_id])[candidate_id]
        return out

    @guarded
    def candidate_by_hash(self, study_id: int, spec_hash: str) -> dict[str, Any] | None:
        """The candidate of this study with this spec hash (with metrics), or None."""
        row = self.conn.execute(
            "SELECT id FROM candidates WHERE study_id = ? AND spec_hash = ?",
            (study_id, spec_hash),
        ).fetchone()
        return None if row is None else self.candidate(int(row[0]))

    # -- records (prunestudio.schema) --------------------------------------------------------

    @guarded
    def study_record(self, study_id_or_name: int | str) -> Study:
        """The study (by id or name) as a :class:`~prunestudio.schema.Study` record."""
        row = self._study_row(study_id_or_name)
        if row is None:
            raise self._no_study(study_id_or_name)
        return study_record(row)

    @guarded
    def candidate_records(self, study_id: int, *, status: str | None = None
                          ) -> list[Candidate]:
        """The study's candidates (ordered by idx, with their metrics) as records."""
        return [candidate_record(r)
                for r in self.candidates(study_id, status=status, with_metrics=True)]

    @guarded
    def candidate_record(self, candidate_id: int) -> Candidate:
        """One candidate, with its metrics, as a record."""
        return candidate_record(self.candidate(candidate_id))

    @guarded
    def artifact_records(self, candidate_id: int) -> list[Artifact]:
        return [Artifact.of(r) for r in self.artifacts(candidate_id)]

    # -- events, artifacts, workers -----------------------------------------------------------

    @guarded
    def add_event(
        self, study_id: int, message: str, *, level: str = "info",
        candidate_id: int | None = None, progress: float | None = None,
    ) -> int:
        """Append a log line to the study (``progress`` in [0, 1] or None); return its id."""
        check_choice("event level", level, EVENT_LEVELS)
        if progress is not None and not 0.0 <= float(progress) <= 1.0:
            raise ValueError(f"progress must be within [0, 1] or None; got {progress!r}")
        with self.transaction() as c:
            cur = c.execute(
                "INSERT INTO events (study_id, candidate_id, time, level, message, progress)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (study_id, candidate_id, time.time(), level, str(message),
                 None if progress is None else float(progress)),
            )
            return int(cur.lastrowid or 0)

    # -- predictor fits (the accuracy-predictor search) --------------------------------------

    @guarded
    def add_predictor_fit(self, study_id: int, *, round: int, target: str,
                          payload: Mapping[str, Any]) -> int:
        """Record a fitted predictor of a study (one per round and target; a second fit of
        the same round and target replaces the first); return its id."""
        _text(target, "predictor target")
        text = _opt_json(payload, "predictor fit payload") or "{}"
        n_train = _opt_int(payload.get("n_train", 0), "n_train") or 0
        with self.transaction() as c:
            c.execute(
                "INSERT INTO predictor_fits (study_id, round, target, n_train, payload,"
                " created_at) VALUES (?, ?, ?, ?, ?, ?)"
                " ON CONFLICT (study_id, round, target) DO UPDATE SET"
                " n_train = excluded.n_train, payload = excluded.payload,"
                " created_at = excluded.created_at",
                (study_id, int(round), target, n_train, text, time.time()),
            )
            (fid,) = c.execute("SELECT id FROM predictor_fits WHERE study_id = ? AND round = ?"
                               " AND target = ?", (study_id, int(round), target)).fetchone()
            return int(fid)

    @guarded
    def predictor_fits(self, study_id: int, *, after_id: int = 0) -> list[dict[str, Any]]:
        """The study's fitted predictors (id > `after_id`), by round then target, as plain
        dicts (id, study_id, round, target, n_train, payload: dict, created_at). A store from
        before schema version 2 has none."""
        if "predictor_fits" not in table_names(self.conn):
            return []
        out = rows(self.conn, "SELECT * FROM predictor_fits WHERE study_id = ? AND id > ?"
                   " ORDER BY round, target, id", (study_id, int(after_id)))
        for r in out:
            r["payload"] = json.loads(r["payload"])
        return out

    @guarded
    def add_artifact(
        self, candidate_id: int, *, kind: str, path: str | os.PathLike[str],
        hash: str | None = None, bytes: int | None = None,
    ) -> int:
        """Record a file produced for a candidate (saved model, mask, plot); return its id."""
        _text(kind, "artifact kind")
        with self.transaction() as c:
            cur = c.execute(
                "INSERT INTO artifacts (candidate_id, kind, path, hash, bytes, created_at)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (candidate_id, kind, os.fspath(path), hash, _opt_int(bytes, "bytes"),
                 time.time()),
            )
            return int(cur.lastrowid or 0)

    @guarded
    def artifacts(self, candidate_id: int) -> list[dict[str, Any]]:
        return rows(self.conn, "SELECT * FROM artifacts WHERE candidate_id = ? ORDER BY id",
                    (candidate_id,))

    @guarded
    def heartbeat(
        self, worker: str, *, study_id: int, candidate_id: int | None = None,
        keep_candidate: bool = False, host: str | None = None, pid: int | None = None,
        device: Mapping[str, Any] | None = None,
    ) -> None:
        """Record that ``worker`` is alive (and what it is working on). ``keep_candidate``
        leaves an existing row's candidate as it is (a background beat). ``host`` / ``pid``
        default to this host and process; ``device`` (JSON: what the worker runs on) is kept
        when not given."""
        _text(worker, "worker")
        device_json = _opt_json(device, "device")
        with self.transaction() as c:
            c.execute(
                "INSERT INTO workers (name, study_id, candidate_id, heartbeat, host, pid, device)"
                " VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
                " study_id = excluded.study_id, candidate_id = CASE WHEN ?"
                " AND workers.study_id IS excluded.study_id THEN workers.candidate_id"
                " ELSE excluded.candidate_id END,"
                " heartbeat = excluded.heartbeat, host = excluded.host, pid = excluded.pid,"
                " device = COALESCE(excluded.device, workers.device)",
                (worker, study_id, candidate_id, time.time(),
                 this_host() if host is None else host, os.getpid() if pid is None else pid,
                 device_json, bool(keep_candidate)),
            )

    @guarded
    def remove_worker(self, name: str) -> bool:
        """Delete the ``workers`` row ``name`` (a runner that ends); True if there was one."""
        with self.transaction() as c:
            return c.execute("DELETE FROM workers WHERE name = ?", (name,)).rowcount > 0

    @guarded
    def remove_dead_workers(self, study_id: int | None = None) -> list[str]:
        """Delete the worker rows written on this host by processes that no longer exist
        (of one study, or of all); return their names. Rows of other hosts are kept: only
        their heartbeat's age tells (see ``liveness``). For ``--resume``."""
        host = this_host()
        sql, params = "SELECT name, pid FROM workers WHERE host = ?", [host]
        if study_id is not None:
            sql, params = sql + " AND study_id = ?", [host, study_id]
        with self.transaction() as c:
            dead = [name for name, pid in c.execute(sql, params).fetchall()
                    if pid is not None and not pid_alive(pid)]
            for name in dead:
                c.execute("DELETE FROM workers WHERE name = ?", (name,))
        return dead


# -- opening ----------------------------------------------------------------------------------


def _connect(target: str, *, uri: bool, timeout: float, check_same_thread: bool
             ) -> sqlite3.Connection:
    conn = sqlite3.connect(target, timeout=timeout, uri=uri, check_same_thread=check_same_thread)
    try:
        conn.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
        conn.execute("PRAGMA foreign_keys = ON")
    except BaseException:
        conn.close()
        raise
    return conn


def _check_version(conn: sqlite3.Connection, path: Path, *, readonly: bool) -> None:
    found = stored_schema_version(conn)
    if found is not None and found > SCHEMA_VERSION:
        raise SchemaTooNewError(str(path), found, SCHEMA_VERSION)
    if found is None:
        others = [t for t in table_names(conn) if not t.startswith("sqlite_")]
        if readonly:
            raise StoreError(
                f"{path} is not an initialised Prune Studio store (empty, or made by another "
                "program); a store is created by opening it read-write, e.g. by running a study",
                path=path,
            )
        if others:
            raise StoreError(
                f"{path} is an SQLite database but not a Prune Studio store "
                f"(tables: {', '.join(sorted(others)[:10])}); refusing to add tables to it",
                path=path,
            )
    elif readonly and found < READABLE_FROM:
        raise StoreError(
            f"store {path} has schema version {found}, older than this prunestudio's "
            f"{SCHEMA_VERSION}; open it once read-write to upgrade it", path=path,
        )
    elif readonly and found < OWL_RENAMED_IN and _has_band_owl(conn):
        raise StoreError(
            f"store {path} has schema version {found} and OWL candidates recorded as 'owl', "
            "which were computed with the band mapping now named 'owl_band' ('owl' is the OWL "
            "code's mapping since schema 4); open it once read-write to relabel them: "
            f"`prunestudio run --resume STUDY --store {path}` with any of its studies (a "
            "finished one runs nothing again)", path=path,
        )


def _has_band_owl(conn: sqlite3.Connection) -> bool:
    """A pre-v4 store holds a candidate or study config with layer_ratios 'owl'."""
    row = conn.execute(
        "SELECT 1 FROM candidates WHERE json_extract(spec, '$.layer_ratios') = 'owl' UNION ALL "
        "SELECT 1 FROM studies WHERE config LIKE '%\"layer_ratios\":\"owl\"%' "
        "OR config LIKE '%\"layer_ratios\": \"owl\"%' LIMIT 1"
    ).fetchone()
    return row is not None


# Kernel file systems: nothing written there is a file on a disk.
_VIRTUAL_FOLDERS = (Path("/proc"), Path("/sys"))


def _check_path(p: Path) -> None:
    """Refuse paths that cannot name a store file, whatever the mode."""
    try:
        resolved = p.resolve(strict=False)
    except (OSError, RuntimeError):  # a symlink loop: let the open itself report it
        resolved = p.absolute()
    for top in _VIRTUAL_FOLDERS:
        if resolved == top or top in resolved.parents:
            raise StorePathError(
                f"store path {p}: the folder {top} holds the kernel's virtual files and is "
                "not a place for a store; give a path in an ordinary folder, e.g. "
                "runs/prunestudio.db", path=p,
            )
    if p.is_dir():
        raise StorePathError(
            f"store path {p} is a folder; give a file path such as {p / 'prunestudio.db'}",
            path=p,
        )


def _make_folder(p: Path) -> None:
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError) as exc:
        raise StorePathError(
            f"cannot create store {p}: {exc.filename or p.parent} is a file, not a folder",
            path=p, cause=exc,
        ) from exc
    except OSError as exc:
        raise not_writable_error(
            p, f"cannot create the folder {p.parent} ({exc.strerror or exc})", exc
        ) from exc


def _medium_readonly(p: Path) -> bool:
    try:
        return bool(os.statvfs(p.parent).f_flag & os.ST_RDONLY)
    except OSError:
        return False


def _open_readonly(p: Path, timeout: float, check_same_thread: bool
                   ) -> tuple[sqlite3.Connection, bool]:
    """A read-only connection and whether it is ``immutable``.

    ``mode=ro`` first: it follows the writers' changes. A store in WAL mode needs its
    ``-shm`` file for that, which SQLite creates when missing; on a read-only medium it
    cannot, and the open fails. Then, when the medium really is read-only (nobody can change
    the file) and no ``-wal`` holds changes the database file lacks, ``immutable=1`` reads the
    database file as it is (without locks or change detection — nothing can change)."""
    uri = p.resolve().as_uri()

    def attempt(query: str) -> sqlite3.Connection:
        conn = _connect(f"{uri}?{query}", uri=True, timeout=timeout,
                        check_same_thread=check_same_thread)
        try:
            conn.execute("SELECT COUNT(*) FROM sqlite_master").fetchone()
        except BaseException:
            conn.close()
            raise
        return conn

    try:
        return attempt("mode=ro"), False
    except sqlite3.Error as exc:
        if not str(getattr(exc, "sqlite_errorname", "")).startswith("SQLITE_CANTOPEN"):
            raise
        wal = p.with_name(p.name + "-wal")
        if _medium_readonly(p):
            if wal.exists() and wal.stat().st_size > 0:
                raise StoreNotWritableError(
                    f"cannot read store {p}: it is on a read-only medium and its last changes "
                    f"are in {wal.name}, which SQLite can only read with a {p.name}-shm file "
                    f"beside it; copy {p.name} and {wal.name} to a writable folder and open "
                    "the copy, or make a self-contained copy with `prunestudio backup` where "
                    "the store was written", path=p, cause=exc,
                ) from exc
            return attempt("mode=ro&immutable=1"), True
        reason = unwritable_reason(p)
        if reason is None:
            raise
        raise StoreNotWritableError(
            f"cannot read store {p} ({exc}): {reason}, and SQLite must create "
            f"{p.name}-shm there to read a store in WAL mode; open a copy in a writable "
            "folder, or ask the store's owner", path=p, cause=exc,
        ) from exc


def open_store(
    path: str | os.PathLike[str], *, readonly: bool = False, timeout: float = 30.0,
    check_same_thread: bool = True,
) -> Store:
    """Open (read-write: create and migrate) the store at ``path``.

    Read-write: parent folders are created, WAL is switched on, pending migrations are applied
    under the write lock. Read-only (for UIs): the file must exist and be initialised; it may
    be on a read-only medium. Either way a file written by a newer schema raises
    :class:`SchemaTooNewError` before anything is changed. ``timeout`` is the busy timeout in
    seconds. Pass ``check_same_thread=False`` to share one read-only store between threads.

    Errors are :class:`StoreError` subclasses: :class:`StorePathError` (a folder, a path
    under /proc or /sys), :class:`StoreNotFoundError`, :class:`StoreNotWritableError` (a
    read-write open of a store that cannot be written), :class:`StoreLockedError`,
    :class:`StoreCorruptError`, :class:`SchemaTooNewError`, ...
    """
    p = Path(path).expanduser()
    _check_path(p)
    if readonly and not p.is_file():
        raise StoreNotFoundError(
            f"no store at {p}: a read-only open does not create one (check the path, or run a "
            "study first)", path=p,
        )
    if not readonly:
        _make_folder(p)
        reason = unwritable_reason(p)
        if reason is not None:
            raise not_writable_error(p, reason)
    try:
        if readonly:
            conn, immutable = _open_readonly(p, timeout, check_same_thread)
        else:
            conn, immutable = _connect(str(p), uri=False, timeout=timeout,
                                       check_same_thread=check_same_thread), False
    except StoreError:
        raise
    except sqlite3.Error as exc:
        raise db_error(p, exc, "open", timeout) from exc
    store = Store(conn, p, readonly=readonly, timeout=timeout, immutable=immutable)
    try:
        _check_version(conn, p, readonly=readonly)
        if not readonly:
            store.db.enable_wal()  # outside any transaction
            if pending_migrations(store.db):
                with store.transaction():
                    _check_version(conn, p, readonly=False)  # again, under the write lock
                    apply_migrations(store.db)
        return store
    except sqlite3.Error as exc:
        conn.close()
        if isinstance(exc, StoreError):
            raise
        raise db_error(p, exc, "open", timeout) from exc
    except BaseException:
        conn.close()
        raise
