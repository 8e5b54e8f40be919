"""Open a store file and write to it: :func:`open_store` and :class:`Store`.

Concurrency model: WAL journal (readers never block the writer), a busy timeout, and every
write is one short ``BEGIN IMMEDIATE`` transaction, so writers queue on the lock instead of
failing on a read-to-write upgrade. ``updated_seq`` values are taken from a counter inside that
transaction, hence they become visible to readers in increasing order: a reader that has seen
seq N has seen everything up to N (what makes the ``*_since`` cursors in ``queries`` exact).
"""

from __future__ import annotations

import os
import socket
import sqlite3
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import TYPE_CHECKING, Any

from .canonical import canonical_json, spec_hash
from .errors import (
    SchemaTooNewError,
    StoreError,
    StoreLockedError,
    StoreNotFoundError,
    StoreReadOnlyError,
)
from .records import (
    CANDIDATE_STATUSES,
    EVENT_LEVELS,
    STUDY_STATUSES,
    STUDY_TERMINAL,
    check_choice,
    decode_candidate,
    decode_study,
    metrics_for,
    normalise_metric,
    rows,
)
from .schema import (
    SCHEMA_VERSION,
    apply_migrations,
    pending_migrations,
    stored_schema_version,
    table_names,
)

if TYPE_CHECKING:  # sqlite_utils pulls in pandas when installed: imported only to migrate
    from sqlite_utils import Database

__all__ = [
    "Store",
    "open_store",
    "StoreError",
    "SchemaTooNewError",
    "StoreNotFoundError",
    "StoreLockedError",
    "StoreReadOnlyError",
]


def _locked(path: Path, exc: sqlite3.OperationalError) -> StoreError:
    return StoreLockedError(
        f"store {path} is locked ({exc}): another process holds a write lock for longer than "
        "the busy timeout; wait for it to finish or raise open_store(..., timeout=)"
    )


def _is_locked(exc: BaseException) -> bool:
    return isinstance(exc, sqlite3.OperationalError) and "locked" in str(exc)


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
    Rows come back as plain dicts with JSON columns decoded.
    """

    def __init__(self, conn: sqlite3.Connection, path: Path, *, readonly: bool) -> None:
        self.conn = conn
        self.path = path
        self.readonly = readonly
        self._db: Database | None = None

    # -- connection ---------------------------------------------------------------------------

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

    def close(self) -> None:
        self.conn.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Store {str(self.path)!r}{' read-only' if self.readonly else ''}>"

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``); nested use becomes a savepoint."""
        if self.readonly:
            raise StoreReadOnlyError(
                f"store {self.path} was opened read-only; open it with readonly=False to write"
            )
        conn = self.conn
        if conn.in_transaction:
            conn.execute("SAVEPOINT store_write")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK TO store_write")
                    conn.execute("RELEASE store_write")
                raise
            conn.execute("RELEASE store_write")
            return
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            raise (_locked(self.path, exc) if _is_locked(exc) else exc) from exc
        try:
            yield conn
            conn.execute("COMMIT")
        except BaseException as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            if _is_locked(exc):
                raise _locked(self.path, exc) from exc  # type: ignore[arg-type]
            raise

    @contextmanager
    def snapshot(self) -> Iterator[sqlite3.Connection]:
        """A read transaction: every query inside sees the same committed state."""
        conn = self.conn
        if conn.in_transaction:
            yield conn
            return
        conn.execute("BEGIN")
        try:
            yield conn
        except sqlite3.OperationalError as exc:
            if _is_locked(exc):
                raise _locked(self.path, exc) from exc
            raise
        finally:
            if conn.in_transaction:
                conn.execute("COMMIT")

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

    def get_study(self, study_id_or_name: int | str) -> dict[str, Any]:
        """The study row (config decoded), by id or by name."""
        row = self._study_row(study_id_or_name)
        if row is None:
            raise self._no_study(study_id_or_name)
        return decode_study(row)

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

    def clear_cancel(self, study_id: int) -> None:
        """Forget a cancel request (e.g. when the user resumes the study)."""
        with self.transaction() as c:
            if c.execute(
                "UPDATE studies SET cancel_requested = NULL WHERE id = ?", (study_id,)
            ).rowcount == 0:
                raise self._no_study(study_id)
            self._touch(study_id)

    def cancel_requested(self, study_id: int) -> str | None:
        """The pending cancel reason of the study, or None."""
        row = self.conn.execute(
            "SELECT cancel_requested FROM studies WHERE id = ?", (study_id,)
        ).fetchone()
        if row is None:
            raise self._no_study(study_id)
        return row[0]

    # -- candidates ---------------------------------------------------------------------------

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

    def finish_candidate(
        self, candidate_id: int, *, metrics: Sequence[Mapping[str, Any]],
        timings: Mapping[str, float] | None = None, info: Mapping[str, Any] | None = None,
    ) -> None:
        """In one transaction: store the metrics and mark the candidate 'done'.

        Metric dicts take name, value (required) and dataset, split, seqlen, n_samples,
        fidelity ('proxy'/'full'), role, protocol (dict). Non-finite values raise ValueError
        before anything is written. ``timings``/``info`` replace the stored dicts when given.
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
                (time.time(), timings_json, info_json, candidate_id),
            )
            self._touch(row["study_id"], [candidate_id])

    def add_metrics(self, candidate_id: int, metrics: Sequence[Mapping[str, Any]]) -> None:
        """Add or replace metrics (same key: name, dataset, split, seqlen, fidelity, role)."""
        norm = self._normalise(metrics)
        with self.transaction():
            row = self._candidate_row(candidate_id)
            self._write_metrics(candidate_id, norm)
            self._touch(row["study_id"], [candidate_id])

    def _end(self, candidate_id: int, status: str, error: str,
             timings: Mapping[str, float] | None, info: Mapping[str, Any] | None) -> None:
        timings_json, info_json = _opt_json(timings, "timings"), _opt_json(info, "info")
        with self.transaction() as c:
            row = self._candidate_row(candidate_id)
            c.execute(
                "UPDATE candidates SET status = ?, error = ?, finished_at = ?,"
                " timings = COALESCE(?, timings), info = COALESCE(?, info) WHERE id = ?",
                (status, error, time.time(), timings_json, info_json, candidate_id),
            )
            self._touch(row["study_id"], [candidate_id])

    def fail_candidate(
        self, candidate_id: int, *, error: str, timings: Mapping[str, float] | None = None,
        info: Mapping[str, Any] | None = None,
    ) -> None:
        """Mark the candidate 'failed' with its error message (metrics already stored stay)."""
        self._end(candidate_id, "failed", _text(error, "error"), timings, info)

    def skip_candidate(
        self, candidate_id: int, *, reason: str, info: Mapping[str, Any] | None = None
    ) -> None:
        """Mark the candidate 'skipped' (reason kept in ``error``, e.g. an equivalent mask)."""
        self._end(candidate_id, "skipped", _text(reason, "reason"), None, info)

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

    def candidate(self, candidate_id: int) -> dict[str, Any]:
        """One candidate with its ``metrics`` list."""
        with self.snapshot() as c:
            out = decode_candidate(self._candidate_row(candidate_id))
            out["metrics"] = metrics_for(c, [candidate_id])[candidate_id]
        return out

    def candidate_by_hash(self, study_id: int, spec_hash: str) -> dict[str, Any] | None:
        """The candidate of this study with this spec hash (with metrics), or None."""
        row = self.conn.execute(
            "SELECT id FROM candidates WHERE study_id = ? AND spec_hash = ?",
            (study_id, spec_hash),
        ).fetchone()
        return None if row is None else self.candidate(int(row[0]))

    # -- events, artifacts, workers -----------------------------------------------------------

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

    def artifacts(self, candidate_id: int) -> list[dict[str, Any]]:
        return rows(self.conn, "SELECT * FROM artifacts WHERE candidate_id = ? ORDER BY id",
                    (candidate_id,))

    def heartbeat(self, worker: str, *, study_id: int, candidate_id: int | None = None) -> None:
        """Record that ``worker`` is alive (and what it is working on)."""
        _text(worker, "worker")
        with self.transaction() as c:
            c.execute(
                "INSERT INTO workers (name, study_id, candidate_id, heartbeat, host, pid)"
                " VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (name) DO UPDATE SET"
                " study_id = excluded.study_id, candidate_id = excluded.candidate_id,"
                " heartbeat = excluded.heartbeat, host = excluded.host, pid = excluded.pid",
                (worker, study_id, candidate_id, time.time(), socket.gethostname(), os.getpid()),
            )


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
                "program); a store is created by opening it read-write, e.g. by running a study"
            )
        if others:
            raise StoreError(
                f"{path} is an SQLite database but not a Prune Studio store "
                f"(tables: {', '.join(sorted(others)[:10])}); refusing to add tables to it"
            )
    elif readonly and found < SCHEMA_VERSION:
        raise StoreError(
            f"store {path} has schema version {found}, older than this prunestudio's "
            f"{SCHEMA_VERSION}; open it once read-write to upgrade it"
        )


def open_store(
    path: str | os.PathLike[str], *, readonly: bool = False, timeout: float = 30.0,
    check_same_thread: bool = True,
) -> Store:
    """Open (read-write: create and migrate) the store at ``path``.

    Read-write: parent folders are created, WAL is switched on, pending migrations are applied
    under the write lock. Read-only (for UIs): the file must exist and be initialised. Either
    way a file written by a newer schema raises :class:`SchemaTooNewError` before anything is
    changed. ``timeout`` is the busy timeout in seconds. Pass ``check_same_thread=False`` to
    share one read-only store between threads.
    """
    p = Path(path).expanduser()
    if readonly and not p.is_file():
        raise StoreNotFoundError(
            f"no store at {p}: a read-only open does not create one (check the path, or run a "
            "study first)"
        )
    if not readonly:
        p.parent.mkdir(parents=True, exist_ok=True)
    target = f"{p.resolve().as_uri()}?mode=ro" if readonly else str(p)
    conn = _connect(target, uri=readonly, timeout=timeout, check_same_thread=check_same_thread)
    store = Store(conn, p, readonly=readonly)
    try:
        _check_version(conn, p, readonly=readonly)
        if not readonly:
            store.db.enable_wal()  # outside any transaction
            if pending_migrations(store.db):
                with store.transaction():
                    _check_version(conn, p, readonly=False)  # again, under the write lock
                    apply_migrations(store.db)
        return store
    except sqlite3.DatabaseError as exc:
        conn.close()
        if _is_locked(exc):
            raise _locked(p, exc) from exc  # type: ignore[arg-type]
        raise StoreError(f"cannot open store {p}: {exc}") from exc
    except BaseException:
        conn.close()
        raise
