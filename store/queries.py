"""Read queries for the TUI and the web app (open the store with ``readonly=True``).

Live views poll with cursors, like Optuna Dashboard's ``after=N``: keep the cursor returned by
``studies_since`` / ``candidates_since`` (an ``updated_seq``) or ``events_since`` (an event id)
and pass it back next time; only rows changed since then come back. Start with cursor 0.
Each function reads one consistent snapshot.
"""

from __future__ import annotations

import sqlite3
import time
from typing import Any

from prunestudio.schema import Candidate, Event, Study, Worker, metric_key

from .db import Store, guarded
from .liveness import this_host, worker_stale
from .records import (
    candidate_record,
    decode_candidate,
    decode_metric,
    decode_study,
    in_budget_sql,
    reference_sql,
    rows,
    study_record,
)

__all__ = [
    "list_studies",
    "study_records",
    "study_records_since",
    "candidate_records_since",
    "event_records_since",
    "worker_records",
    "studies_since",
    "stale_running",
    "candidates_since",
    "events_since",
    "metrics_table",
    "metrics_long",
    "best_candidate",
    "best_metrics",
    "list_workers",
]

_COUNTS = f"""
SELECT s.*,
       COUNT(c.id) AS n_total,
       COALESCE(SUM(c.status = 'done'), 0) AS n_done,
       COALESCE(SUM(c.status = 'failed'), 0) AS n_failed,
       COALESCE(SUM(c.status = 'pending'), 0) AS n_pending,
       COALESCE(SUM(c.status = 'running'), 0) AS n_running,
       COALESCE(SUM(c.status = 'skipped'), 0) AS n_skipped,
       COALESCE(SUM({in_budget_sql("c", "s.kind")}), 0) AS n_budget_used
FROM studies s LEFT JOIN candidates c ON c.study_id = s.id
"""


def _workers_of_running(c: sqlite3.Connection, study_ids: list[int] | None = None
                        ) -> dict[int, list[dict[str, Any]]]:
    """Worker rows of the studies whose status is 'running' (all of them when ``study_ids``
    is None), by study id; a running study without any worker row maps to []."""
    sql = "SELECT id FROM studies WHERE status = 'running'"
    params: list[Any] = []
    if study_ids is not None:
        if not study_ids:
            return {}
        sql += f" AND id IN ({','.join('?' * len(study_ids))})"
        params = list(study_ids)
    out: dict[int, list[dict[str, Any]]] = {int(r[0]): [] for r in c.execute(sql, params)}
    if out:
        marks = ",".join("?" * len(out))
        for w in rows(c, f"SELECT * FROM workers WHERE study_id IN ({marks})", list(out)):
            out[int(w["study_id"])].append(w)
    return out


def _stale_flags(c: sqlite3.Connection, study_ids: list[int] | None, now: float | None
                 ) -> dict[int, bool]:
    now = time.time() if now is None else now
    host = this_host()
    return {sid: all(worker_stale(w, now, host) for w in workers)
            for sid, workers in _workers_of_running(c, study_ids).items()}


def _with_counts(c: sqlite3.Connection, found: list[dict[str, Any]], now: float | None
                 ) -> list[dict[str, Any]]:
    flags = _stale_flags(c, [int(r["id"]) for r in found if r["status"] == "running"], now)
    out = []
    for r in found:
        d = decode_study(r)
        d["stale"] = flags.get(int(r["id"]), False)
        out.append(d)
    return out


@guarded
def list_studies(store: Store, now: float | None = None) -> list[dict[str, Any]]:
    """Every study (ordered by id) with candidate counts n_total, n_done, n_failed,
    n_pending, n_running, n_skipped, ``n_budget_used`` (candidates that spent the study's
    budget: real fitness evaluations of a gp / random search, finished candidates of any
    other kind — see ``records.in_budget_sql``; the progress to show is n_budget_used /
    budget) and ``stale`` (True: status 'running' but no live worker — see ``liveness``;
    ``now`` defaults to the current time) — one aggregate query."""
    with store.snapshot() as c:
        return _with_counts(c, rows(c, _COUNTS + " GROUP BY s.id ORDER BY s.id"), now)


@guarded
def studies_since(store: Store, after_seq: int, now: float | None = None
                  ) -> tuple[list[dict[str, Any]], int]:
    """Studies (with counts and ``stale``, as in :func:`list_studies`) that changed after
    ``after_seq`` — a study's seq also moves when any of its candidates changes — and the new
    cursor. A study turns stale without changing (its runner died): poll
    :func:`stale_running` for that."""
    with store.snapshot() as c:
        found = rows(
            c, _COUNTS + " WHERE s.updated_seq > ? GROUP BY s.id ORDER BY s.updated_seq",
            (after_seq,),
        )
        out = _with_counts(c, found, now)
    cursor = max((r["updated_seq"] for r in found), default=after_seq)
    return out, cursor


@guarded
def stale_running(store: Store, now: float | None = None,
                  study_ids: list[int] | None = None) -> dict[int, bool]:
    """``{study id: stale}`` for every study whose status is 'running' (or those of
    ``study_ids`` that are): stale when none of its worker rows has a heartbeat younger than
    ``liveness.STALE_AFTER`` seconds from a process still alive (on this host). Cheap: reads
    the running studies' ids and their worker rows."""
    with store.snapshot() as c:
        return _stale_flags(c, study_ids, now)


@guarded
def candidates_since(
    store: Store, study_id: int | None, after_seq: int, limit: int | None = None
) -> tuple[list[dict[str, Any]], int]:
    """Candidates whose ``updated_seq`` > ``after_seq`` (oldest change first, at most
    ``limit``), each with its ``metrics`` list and ``in_budget`` (1 when it spent one unit of
    its study's budget: see ``records.in_budget_sql``), and the new cursor.
    ``study_id=None``: all studies. Every change has its own seq, so paging with ``limit``
    never skips a row."""
    where, params = "c.updated_seq > ?", [after_seq]
    if study_id is not None:
        where, params = "c.study_id = ? AND c.updated_seq > ?", [study_id, after_seq]
    with store.snapshot() as conn:
        found = [
            decode_candidate(r)
            for r in rows(
                conn,
                f"SELECT c.*, {in_budget_sql('c', 's.kind')} AS in_budget FROM candidates c"
                f" JOIN studies s ON s.id = c.study_id WHERE {where}"
                " ORDER BY c.updated_seq LIMIT ?",
                [*params, -1 if limit is None else limit],
            )
        ]
        if not found:
            return [], after_seq
        cursor = found[-1]["updated_seq"]
        # seqs are unique, so (after_seq, cursor] selects exactly the rows above: one query.
        by_id: dict[int, list[dict[str, Any]]] = {r["id"]: [] for r in found}
        for m in rows(
            conn,
            "SELECT m.* FROM candidates c JOIN metrics m ON m.candidate_id = c.id"
            f" WHERE {where} AND c.updated_seq <= ? ORDER BY m.id",
            [*params, cursor],
        ):
            by_id[m["candidate_id"]].append(decode_metric(m))
    for r in found:
        r["metrics"] = by_id[r["id"]]
    return found, cursor


@guarded
def events_since(
    store: Store, study_id: int, after_id: int, limit: int = 1000
) -> tuple[list[dict[str, Any]], int]:
    """Events of the study with id > ``after_id`` (oldest first) and the new cursor."""
    with store.snapshot() as c:
        found = rows(
            c, "SELECT * FROM events WHERE study_id = ? AND id > ? ORDER BY id LIMIT ?",
            (study_id, after_id, limit),
        )
    return found, (found[-1]["id"] if found else after_id)


@guarded
def metrics_long(store: Store, study_id: int) -> list[dict[str, Any]]:
    """Long format: one row per metric, with its candidate's idx, status, origin, generation
    and the metric's ``key`` (see :func:`metrics_table`). Best for charts."""
    with store.snapshot() as c:
        found = rows(
            c,
            "SELECT m.*, c.idx, c.status, c.origin, c.generation FROM metrics m"
            " JOIN candidates c ON c.id = m.candidate_id WHERE c.study_id = ?"
            " ORDER BY c.idx, m.id",
            (study_id,),
        )
    out = []
    for r in found:
        m = decode_metric(r)
        m["key"] = metric_key(m)
        out.append(m)
    return out


@guarded
def metrics_table(store: Store, study_id: int) -> list[dict[str, Any]]:
    """Wide format: one row per candidate (ordered by idx) with id, idx, status, origin,
    generation, spec_hash, spec, error, plus one column per metric named
    ``name:dataset:split:seqlen:fidelity`` (empty parts for missing fields, ``:role`` appended
    when a role is set), e.g. ``ppl:wikitext2:test:2048:full``. Ready for
    ``pandas.DataFrame(rows)``; candidates without that metric have no such key."""
    with store.snapshot() as c:
        cands = rows(
            c,
            "SELECT id, idx, status, origin, generation, spec_hash, spec, error"
            " FROM candidates WHERE study_id = ? ORDER BY idx",
            (study_id,),
        )
        out = {r["id"]: decode_candidate(r) for r in cands}
        for m in rows(
            c,
            "SELECT m.* FROM metrics m JOIN candidates c ON c.id = m.candidate_id"
            " WHERE c.study_id = ? ORDER BY m.id",
            (study_id,),
        ):
            dm = decode_metric(m)
            out[dm["candidate_id"]][metric_key(dm)] = dm["value"]
    return list(out.values())


@guarded
def best_candidate(
    store: Store, study_id: int, metric: str = "ppl", role: str | None = None,
    lower_is_better: bool = True, *, dataset: str | None = None, split: str | None = None,
    seqlen: int | None = None, fidelity: str | None = None,
) -> dict[str, Any] | None:
    """The done candidate with the best value of ``metric`` (with its metrics and a ``best``
    key holding that metric row), or None when no done candidate has it.

    Raises ValueError when the filters still match several metric identities (e.g. proxy and
    full fidelity, or two datasets): numbers measured differently are never compared."""
    where = ["c.study_id = ?", "c.status = 'done'", "m.name = ?"]
    params: list[Any] = [study_id, metric]
    for col, value in (("role", role), ("dataset", dataset), ("split", split),
                       ("seqlen", seqlen), ("fidelity", fidelity)):
        if value is not None:
            where.append(f"m.{col} = ?")
            params.append(value)
    base = " FROM metrics m JOIN candidates c ON c.id = m.candidate_id WHERE " + " AND ".join(where)
    order = "ASC" if lower_is_better else "DESC"
    with store.snapshot() as c:
        kinds = rows(c, "SELECT DISTINCT m.name, m.dataset, m.split, m.seqlen, m.fidelity, m.role"
                     + base, params)
        if not kinds:
            return None
        if len(kinds) > 1:
            keys = ", ".join(sorted(metric_key(decode_metric({**k, "protocol": None}))
                                    for k in kinds))
            raise ValueError(
                f"metric {metric!r} is ambiguous in study {study_id}: it matches {keys}; pass "
                "dataset=, split=, seqlen=, fidelity= or role= to pick one"
            )
        best = rows(c, "SELECT m.*" + base + f" ORDER BY m.value {order}, c.idx LIMIT 1", params)[0]
        out = store.candidate(best["candidate_id"])
    out["best"] = decode_metric(best)
    return out


@guarded
def best_metrics(
    store: Store, study_ids: list[int] | None = None, metric: str = "ppl",
    lower_is_better: bool = True, exclude_methods: tuple[str, ...] = (),
    *, exclude_references: bool = False,
) -> list[dict[str, Any]]:
    """For each study and each identity of ``metric`` (dataset, split, seqlen, fidelity,
    role), the best value among done candidates: rows with study_id, name, dataset, split,
    seqlen, fidelity, role, value, candidate_id and idx (of a candidate holding that value)
    and n (done candidates with that metric). One aggregate query; ``study_ids`` limits it
    (e.g. to the studies ``studies_since`` reported changed); ``exclude_methods`` leaves out
    candidates whose spec has that ``method`` (e.g. the unpruned "dense" reference);
    ``exclude_references`` leaves out every candidate that is a reference (the rule of
    ``prunestudio.schema.Candidate.is_reference``: the dense model and the baselines)."""
    where, params = ["c.status = 'done'", "m.name = ?"], [metric]
    if study_ids is not None:
        if not study_ids:
            return []
        where.append(f"c.study_id IN ({','.join('?' * len(study_ids))})")
        params += [int(s) for s in study_ids]
    if exclude_methods:
        marks = ",".join("?" * len(exclude_methods))
        where.append(f"COALESCE(json_extract(c.spec, '$.method'), '') NOT IN ({marks})")
        params += list(exclude_methods)
    if exclude_references:
        where.append(f"NOT {reference_sql('c')}")
    # SQLite takes the bare columns (candidate_id, idx) from the row holding the MIN / MAX
    # (the only min/max aggregate in the query, as that rule requires).
    sql = (
        f"SELECT c.study_id, m.name, m.dataset, m.split, m.seqlen, m.fidelity, m.role,"
        f" {'MIN' if lower_is_better else 'MAX'}(m.value) AS value, m.candidate_id, c.idx,"
        " COUNT(*) AS n FROM candidates c JOIN metrics m ON m.candidate_id = c.id"
        f" WHERE {' AND '.join(where)}"
        " GROUP BY c.study_id, m.dataset, m.split, m.seqlen, m.fidelity, m.role"
        " ORDER BY c.study_id, m.role, m.fidelity, m.dataset, m.split, m.seqlen"
    )
    with store.snapshot() as c:
        found = rows(c, sql, params)
    out = []
    for r in found:
        m = decode_metric({**r, "protocol": None})
        del m["protocol"]
        out.append(m)
    return out


@guarded
def list_workers(store: Store, study_id: int | None = None, now: float | None = None
                 ) -> list[dict[str, Any]]:
    """Worker heartbeats (name, study_id, candidate_id, heartbeat, host, pid), newest first,
    each with ``stale``: heartbeat older than ``liveness.STALE_AFTER`` seconds before ``now``
    (default: the current time), or written on this host by a process that is gone."""
    sql, params = "SELECT * FROM workers", []
    if study_id is not None:
        sql, params = sql + " WHERE study_id = ?", [study_id]
    found = rows(store.conn, sql + " ORDER BY heartbeat DESC", params)
    now = time.time() if now is None else now
    host = this_host()
    for w in found:
        w["stale"] = worker_stale(w, now, host)
    return found


# -- records (prunestudio.schema) -------------------------------------------------------------
# The UIs read these: typed, frozen records that know their label, primary role and metric
# identities. The dict functions above stay for the engine and the --json payloads.


def study_records(store: Store, now: float | None = None) -> list[Study]:
    """:func:`list_studies` as :class:`~prunestudio.schema.Study` records (with counts)."""
    return [study_record(r) for r in list_studies(store, now)]


def study_records_since(store: Store, after_seq: int, now: float | None = None
                        ) -> tuple[list[Study], int]:
    """:func:`studies_since` as records (with counts and ``stale``) and the new cursor."""
    found, cursor = studies_since(store, after_seq, now)
    return [study_record(r) for r in found], cursor


def candidate_records_since(
    store: Store, study_id: int | None, after_seq: int, limit: int | None = None
) -> tuple[list[Candidate], int]:
    """:func:`candidates_since` as :class:`~prunestudio.schema.Candidate` records (with
    metrics and ``in_budget``) and the new cursor."""
    found, cursor = candidates_since(store, study_id, after_seq, limit)
    return [candidate_record(r) for r in found], cursor


def event_records_since(store: Store, study_id: int, after_id: int, limit: int = 1000
                        ) -> tuple[list[Event], int]:
    """:func:`events_since` as records and the new cursor."""
    found, cursor = events_since(store, study_id, after_id, limit)
    return [Event.of(r) for r in found], cursor


def worker_records(store: Store, study_id: int | None = None, now: float | None = None
                   ) -> list[Worker]:
    """:func:`list_workers` as records (with ``stale``)."""
    return [Worker.of(r) for r in list_workers(store, study_id, now)]
