"""Read queries for the web app: change tokens, slim chart rows, SQL-paged candidate tables.

The web app re-runs its script on every interaction and every live tick, so what it reads must
be cheap to ask again:

- :func:`change_token` / :func:`study_token` are one-row reads that move whenever anything the
  app shows changes (the app keys its caches on them);
- :func:`candidate_points_since` returns only the candidates changed after a cursor, without
  their protocols, timings or traces (what the charts need, a few columns each);
- :func:`candidate_page` filters, sorts and pages a study's candidates in SQL and returns full
  records for one page only, with the number of rows that pass the filters;
- aggregates (:func:`study_overview`, :func:`status_counts`, :func:`failure_reasons`) are one
  GROUP BY each; per worker, :func:`worker_summary` and the binned :func:`worker_timeline`.

Every function reads one consistent snapshot and returns schema records or plain values.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from prunestudio.schema import (
    Candidate,
    Event,
    MetricIdentity,
    WorkerLane,
    WorkerSummary,
    WorkerTimeline,
)
from prunestudio.schema.workers import LANE_STATUSES

from .db import Store, guarded
from .records import decode_candidate, decode_metric, in_budget_sql, metrics_for, rows

__all__ = [
    "BASE_SORTS",
    "CandidateFilter",
    "PointBatch",
    "candidate_page",
    "candidate_points_since",
    "candidate_records_by_ids",
    "change_token",
    "dense_candidates",
    "failure_reasons",
    "lineage_ids",
    "metric_identities",
    "predictor_fits",
    "recent_events",
    "reconstruction_candidates",
    "sibling_trials",
    "status_counts",
    "study_overview",
    "study_token",
    "worker_summary",
    "worker_timeline",
]

# sort keys of candidate_page that are candidate columns (anything else: a MetricIdentity)
BASE_SORTS: dict[str, str] = {
    "idx": "c.idx",
    "id": "c.id",
    "status": "c.status",
    "origin": "c.origin",
    "generation": "c.generation",
    "worker": "c.worker",
    "seconds": "COALESCE(json_extract(c.timings, '$.total'), c.finished_at - c.started_at)",
    "created": "c.created_at",
    "finished": "c.finished_at",
}

# stored placeholders of a metric identity's missing parts (see store.schema)
_KEY_COLUMNS = ("name", "dataset", "split", "seqlen", "fidelity", "role")


def _identity_params(identity: MetricIdentity) -> list[Any]:
    """The stored key columns of ``identity`` (None -> '' / 0, as the store writes them)."""
    return [identity.name, identity.dataset or "", identity.split or "", identity.seqlen or 0,
            identity.fidelity or "", identity.role or ""]


def _identity_sql(alias: str) -> str:
    return " AND ".join(f"{alias}.{col} = ?" for col in _KEY_COLUMNS)


def _marks(values: Sequence[Any]) -> str:
    return ",".join("?" * len(values))


# -- change tokens -------------------------------------------------------------------------


@guarded
def change_token(store: Store) -> int:
    """A number that grows whenever a study, a candidate, a metric or an event is written
    (the store's change counter plus the last event id): equal tokens, nothing to re-read."""
    row = store.conn.execute(
        "SELECT (SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'seq'),"
        " (SELECT COALESCE(MAX(id), 0) FROM events)"
    ).fetchone()
    seq, event = int(row[0] or 0), int(row[1] or 0)
    return seq * 1_000_003 + event  # both only grow: the sum does too


@guarded
def study_token(store: Store, study_id: int) -> int | None:
    """The study's ``updated_seq`` (it moves when the study or any of its candidates
    changes), or None when there is no such study."""
    row = store.conn.execute("SELECT updated_seq FROM studies WHERE id = ?",
                             (int(study_id),)).fetchone()
    return None if row is None else int(row[0])


# -- aggregates ----------------------------------------------------------------------------


@guarded
def study_overview(store: Store) -> dict[int, dict[str, Any]]:
    """Per study id: ``compute_s`` (summed candidate time: recorded ``timings.total``, else
    finished - started) and ``last_update`` (the latest time anything of the study was
    written: study, candidate or event). One aggregate query per table."""
    out: dict[int, dict[str, Any]] = {}
    with store.snapshot() as c:
        for r in rows(c, "SELECT id, created_at, started_at, finished_at FROM studies"):
            times = [t for t in (r["created_at"], r["started_at"], r["finished_at"]) if t]
            out[int(r["id"])] = {"compute_s": 0.0, "last_update": max(times, default=None)}
        for r in rows(c, "SELECT study_id,"
                      " SUM(COALESCE(json_extract(timings, '$.total'),"
                      " finished_at - started_at, 0)) AS compute_s,"
                      " MAX(MAX(created_at, COALESCE(started_at, 0), COALESCE(finished_at, 0)))"
                      " AS last FROM candidates GROUP BY study_id"):
            entry = out.setdefault(int(r["study_id"]), {"compute_s": 0.0, "last_update": None})
            entry["compute_s"] = float(r["compute_s"] or 0.0)
            entry["last_update"] = _latest(entry["last_update"], r["last"])
        for r in rows(c, "SELECT study_id, MAX(time) AS last FROM events GROUP BY study_id"):
            entry = out.setdefault(int(r["study_id"]), {"compute_s": 0.0, "last_update": None})
            entry["last_update"] = _latest(entry["last_update"], r["last"])
    return out


def _latest(*times: float | None) -> float | None:
    found = [float(t) for t in times if t]
    return max(found) if found else None


@guarded
def status_counts(store: Store, study_id: int) -> dict[str, int]:
    """Candidates of the study by status (one indexed GROUP BY)."""
    with store.snapshot() as c:
        return {str(r[0]): int(r[1]) for r in c.execute(
            "SELECT status, COUNT(*) FROM candidates WHERE study_id = ? GROUP BY status",
            (int(study_id),))}


@guarded
def failure_reasons(store: Store, study_id: int, limit: int = 20) -> list[dict[str, Any]]:
    """The first lines of the failed candidates' errors, most frequent first: rows with
    ``reason``, ``n``, ``first_id`` (the lowest candidate id failing so) and ``workers``."""
    line = ("TRIM(substr(error, 1, instr(error || char(10), char(10)) - 1))")
    with store.snapshot() as c:
        found = rows(c, f"SELECT {line} AS reason, COUNT(*) AS n, MIN(id) AS first_id,"
                     " GROUP_CONCAT(DISTINCT worker) AS workers FROM candidates"
                     " WHERE study_id = ? AND status = 'failed' GROUP BY reason"
                     " ORDER BY n DESC, first_id LIMIT ?", (int(study_id), int(limit)))
    return found


# -- per worker ----------------------------------------------------------------------------

# a candidate's span: started, and finished or still running (a running one lasts until `now`)
_SPAN = ("c.study_id = ? AND c.worker IS NOT NULL AND c.started_at IS NOT NULL"
         " AND (c.finished_at IS NOT NULL OR c.status = 'running')")
_ENDED_TIMED = ("c.status IN ('done', 'failed', 'skipped') AND c.started_at IS NOT NULL"
                " AND c.finished_at IS NOT NULL")


@guarded
def worker_summary(store: Store, study_id: int) -> list[WorkerSummary]:
    """Per worker that took candidates of the study (``candidates.worker``): its candidates
    done / failed / skipped / running, busy seconds (``finished_at - started_at`` summed over
    its ended candidates), first start, last finish and the mean seconds per candidate; by
    first start, then name. One GROUP BY over the study's rows."""
    with store.snapshot() as c:
        found = rows(c, "SELECT c.worker AS name,"
                     " SUM(c.status = 'done') AS done, SUM(c.status = 'failed') AS failed,"
                     " SUM(c.status = 'skipped') AS skipped,"
                     " SUM(c.status = 'running') AS running,"
                     f" SUM(CASE WHEN {_ENDED_TIMED} THEN MAX(0.0, c.finished_at - c.started_at)"
                     " END) AS busy_s,"
                     f" SUM({_ENDED_TIMED}) AS timed, MIN(c.started_at) AS first_start,"
                     f" MAX(CASE WHEN {_ENDED_TIMED} THEN c.finished_at END) AS last_finish"
                     " FROM candidates c WHERE c.study_id = ? AND c.worker IS NOT NULL"
                     " GROUP BY c.worker ORDER BY first_start IS NULL, first_start, name",
                     (int(study_id),))
    return [WorkerSummary.of(r) for r in found]


@guarded
def worker_timeline(store: Store, study_id: int, n_bins: int, now: float) -> WorkerTimeline:
    """When each worker of the study was busy, in ``n_bins`` equal bins from the first start
    of a candidate to the last finish (to ``now`` while one runs): per worker and bin, busy
    seconds by status (a running candidate counts up to ``now``). Lanes ordered as
    :func:`worker_summary`.

    Cheap at 100k candidates: the candidates inside one bin are summed by a GROUP BY; only
    those crossing a bin boundary come back one by one, and a worker running one candidate at
    a time crosses each boundary at most once (at most ``n_bins`` rows per worker)."""
    n_bins = max(1, int(n_bins))
    sid = int(study_id)
    with store.snapshot() as c:
        start, last, running = c.execute(
            "SELECT MIN(c.started_at), MAX(c.finished_at), SUM(c.status = 'running')"
            f" FROM candidates c WHERE {_SPAN}", (sid,)).fetchone()
        if start is None:
            return WorkerTimeline(None, None, n_bins)
        start = float(start)
        last = float(last) if last is not None else start
        end = max(float(now), last) if running else last  # now: a running one grows
        width = (end - start) / n_bins or 1.0
        # the bin of each end of a span (clamped to the last bin: `end` itself falls there)
        span_end = "CASE WHEN c.status = 'running' THEN MAX(?, c.started_at) ELSE c.finished_at END"
        bin_of = "MIN(?, CAST(({0} - ?) / ? AS INTEGER))"
        first, final = bin_of.format("c.started_at"), bin_of.format(f"({span_end})")
        # one scan: the spans inside one bin summed per (worker, status, bin); a span that
        # crosses a boundary is a group of its own (keyed by its id), split below
        found = c.execute(
            f"SELECT worker, status, b0, b1, SUM(MAX(0.0, e - s)), MIN(s), MAX(e) FROM"
            f" (SELECT c.id, c.worker, c.status, c.started_at AS s, {span_end} AS e,"
            f" {first} AS b0, {final} AS b1 FROM candidates c WHERE {_SPAN})"
            " GROUP BY worker, status, b0, CASE WHEN b1 > b0 THEN id END",
            [end, n_bins - 1, start, width, n_bins - 1, end, start, width, sid]).fetchall()
    bins: dict[str, list[dict[str, float]]] = {}
    first_start: dict[str, float] = {}
    for worker, status, b0, b1, seconds, s, e in found:
        lane = bins.setdefault(worker, [{} for _ in range(n_bins)])
        first_start[worker] = min(first_start.get(worker, s), s)
        if status not in LANE_STATUSES:
            continue
        pieces = [(int(b0), float(seconds))] if b1 == b0 else [
            (b, min(e, start + (b + 1) * width) - max(s, start + b * width))
            for b in range(int(b0), int(b1) + 1)]
        for b, part in pieces:
            if part > 0:
                lane[b][status] = lane[b].get(status, 0.0) + part
    order = sorted(bins, key=lambda w: (first_start[w], w))
    return WorkerTimeline(start, end, n_bins,
                          tuple(WorkerLane(w, tuple(bins[w])) for w in order))


@guarded
def metric_identities(store: Store, study_ids: Sequence[int]) -> list[MetricIdentity]:
    """Every metric identity recorded for candidates of these studies, in first-recorded
    order."""
    ids = [int(s) for s in study_ids]
    if not ids:
        return []
    with store.snapshot() as c:
        found = rows(c, "SELECT m.name, m.dataset, m.split, m.seqlen, m.fidelity, m.role,"
                     " MIN(m.id) AS first FROM metrics m JOIN candidates c"
                     f" ON c.id = m.candidate_id WHERE c.study_id IN ({_marks(ids)})"
                     " GROUP BY m.name, m.dataset, m.split, m.seqlen, m.fidelity, m.role"
                     " ORDER BY first", ids)
    return [MetricIdentity.of(decode_metric({**r, "protocol": None})) for r in found]


@guarded
def recent_events(store: Store, study_id: int, limit: int = 200) -> list[Event]:
    """The study's last ``limit`` events, newest first."""
    with store.snapshot() as c:
        found = rows(c, "SELECT * FROM events WHERE study_id = ? ORDER BY id DESC LIMIT ?",
                     (int(study_id), int(limit)))
    return [Event.of(r) for r in found]


# -- candidate rows for charts -------------------------------------------------------------


@dataclass(frozen=True)
class PointBatch:
    """What :func:`candidate_points_since` returns: slim candidate records (no metrics), their
    metric values as ``(candidate id, identity, value)`` (one identity object per distinct
    identity) and the new cursor."""

    candidates: list[Candidate]
    values: list[tuple[int, MetricIdentity, float]]
    cursor: int


@guarded
def candidate_points_since(
    store: Store, study_id: int, after_seq: int, limit: int | None = None
) -> PointBatch:
    """Candidates of the study changed after ``after_seq`` (oldest change first, at most
    ``limit``) — slim, for charts over every candidate: records with spec, info, status,
    origin, generation, parents, worker, times, ``timings`` holding only ``total`` and the
    error's first line, but no metrics; the metric values come apart, without protocols.
    Full records: :func:`candidate_page`, :func:`candidate_records_by_ids`."""
    line = "substr(c.error, 1, instr(c.error || char(10), char(10)) - 1)"
    with store.snapshot() as conn:
        found = rows(
            conn,
            "SELECT c.id, c.study_id, c.idx, c.spec, c.spec_hash, c.origin, c.parents,"
            f" c.generation, c.status, {line} AS error, c.worker, c.created_at, c.started_at,"
            " c.finished_at, c.info, c.updated_seq,"
            " json_extract(c.timings, '$.total') AS total_s,"
            f" {in_budget_sql('c', 's.kind')} AS in_budget"
            " FROM candidates c JOIN studies s ON s.id = c.study_id"
            " WHERE c.study_id = ? AND c.updated_seq > ? ORDER BY c.updated_seq LIMIT ?",
            (int(study_id), int(after_seq), -1 if limit is None else int(limit)),
        )
        if not found:
            return PointBatch([], [], after_seq)
        cursor = int(found[-1]["updated_seq"])
        raw = conn.execute(
            "SELECT m.candidate_id, m.name, m.dataset, m.split, m.seqlen, m.fidelity, m.role,"
            " m.value FROM candidates c JOIN metrics m ON m.candidate_id = c.id"
            " WHERE c.study_id = ? AND c.updated_seq > ? AND c.updated_seq <= ? ORDER BY m.id",
            (int(study_id), int(after_seq), cursor),
        ).fetchall()
    identities: dict[tuple[Any, ...], MetricIdentity] = {}
    values = []
    for cid, name, dataset, split, seqlen, fidelity, role, value in raw:
        key = (name, dataset, split, seqlen, fidelity, role)
        identity = identities.get(key)
        if identity is None:
            identity = identities[key] = MetricIdentity(name, role, dataset, split, seqlen,
                                                        fidelity)
        values.append((int(cid), identity, float(value)))
    out = []
    for r in found:
        d = decode_candidate(r)
        total = d.pop("total_s")
        d["timings"] = {"total": total} if total is not None else None
        out.append(Candidate.of(d))
    return PointBatch(out, values, cursor)


@guarded
def candidate_records_by_ids(store: Store, ids: Iterable[int]) -> list[Candidate]:
    """Full records (metrics with protocols) of these candidate ids, in the order given;
    unknown ids are left out."""
    wanted = list(dict.fromkeys(int(i) for i in ids))
    if not wanted:
        return []
    found: dict[int, dict[str, Any]] = {}
    with store.snapshot() as c:
        for start in range(0, len(wanted), 500):
            chunk = wanted[start : start + 500]
            for r in rows(c, f"SELECT * FROM candidates WHERE id IN ({_marks(chunk)})", chunk):
                found[int(r["id"])] = decode_candidate(r)
        metrics = metrics_for(c, list(found))
    out = []
    for cid in wanted:
        if cid in found:
            found[cid]["metrics"] = metrics[cid]
            out.append(Candidate.of(found[cid]))
    return out


@guarded
def dense_candidates(store: Store, study_ids: Sequence[int]) -> dict[int, Candidate]:
    """The unpruned model's candidate of each study that measured one (method 'dense'; the
    done one with the lowest idx), by study id."""
    ids = [int(s) for s in study_ids]
    if not ids:
        return {}
    dense = "json_extract({0}.spec, '$.method') = 'dense' AND {0}.status = 'done'"
    with store.snapshot() as c:
        cids = [int(r[0]) for r in c.execute(
            f"SELECT c.id FROM candidates c WHERE c.study_id IN ({_marks(ids)})"
            f" AND {dense.format('c')} AND c.idx = (SELECT MIN(d.idx) FROM candidates d"
            f" WHERE d.study_id = c.study_id AND {dense.format('d')})", ids)]
    return {cand.study_id: cand for cand in candidate_records_by_ids(store, cids)}


@guarded
def lineage_ids(store: Store, candidate_id: int, depth: int = 6, limit: int = 200
                ) -> list[tuple[int, int]]:
    """``(ancestor id, generation distance)`` of a candidate through its ``parents``, itself
    first (distance 0), at most ``depth`` steps up and ``limit`` candidates; each ancestor once,
    at its shortest distance. One recursive query."""
    with store.snapshot() as c:
        found = c.execute(
            "WITH RECURSIVE anc(id, d) AS (SELECT ?, 0 UNION"
            " SELECT CAST(j.value AS INTEGER), anc.d + 1 FROM anc"
            " JOIN candidates c ON c.id = anc.id, json_each(c.parents) j"
            " WHERE c.parents IS NOT NULL AND anc.d < ?)"
            " SELECT id, MIN(d) AS d FROM anc GROUP BY id ORDER BY d, id LIMIT ?",
            (int(candidate_id), int(depth), int(limit)),
        ).fetchall()
    return [(int(r[0]), int(r[1])) for r in found]


# -- the paged table -----------------------------------------------------------------------


@dataclass(frozen=True)
class CandidateFilter:
    """What a candidate table shows: filters (None: no filter on that field) and the top
    ``top_percent`` % by ``top_metric`` (of the candidates passing the other filters; ties at
    the threshold are kept). ``generations`` may hold None (candidates without one)."""

    statuses: tuple[str, ...] | None = None
    origins: tuple[str, ...] | None = None
    generations: tuple[int | None, ...] | None = None
    top_metric: MetricIdentity | None = None
    top_percent: float | None = None
    references: bool = True  # include the dense model and the baselines

    def where(self, study_id: int) -> tuple[list[str], list[Any]]:
        """SQL conditions on candidate alias ``c`` (without the top-k% part) and params."""
        where, params = ["c.study_id = ?"], [int(study_id)]
        if self.statuses is not None:
            where.append(f"c.status IN ({_marks(self.statuses) or 'NULL'})")
            params += list(self.statuses)
        if self.origins is not None:
            where.append(f"c.origin IN ({_marks(self.origins) or 'NULL'})")
            params += list(self.origins)
        if self.generations is not None:
            gens = [int(g) for g in self.generations if g is not None]
            parts = [f"c.generation IN ({_marks(gens)})"] if gens else []
            if None in self.generations:
                parts.append("c.generation IS NULL")
            where.append(f"({' OR '.join(parts) or '0'})")
            params += gens
        if not self.references:
            from .records import reference_sql

            where.append(f"NOT {reference_sql('c')}")
        return where, params


def _top_threshold(conn: Any, where: list[str], params: list[Any], metric: MetricIdentity,
                   percent: float) -> float | None:
    """The value of the last candidate inside the top ``percent`` % (None: no values)."""
    base = (" FROM candidates c JOIN metrics t ON t.candidate_id = c.id AND "
            + _identity_sql("t") + " WHERE " + " AND ".join(where))
    args = [*_identity_params(metric), *params]
    n = int(conn.execute("SELECT COUNT(*)" + base, args).fetchone()[0])
    if n == 0:
        return None
    k = max(1, math.ceil(n * max(0.0, min(100.0, percent)) / 100.0))
    order = "ASC" if metric.lower_is_better else "DESC"
    row = conn.execute(f"SELECT t.value{base} ORDER BY t.value {order} LIMIT 1 OFFSET ?",
                       [*args, k - 1]).fetchone()
    return None if row is None else float(row[0])


@guarded
def candidate_page(
    store: Store, study_id: int, filters: CandidateFilter | None = None, *,
    sort: str | MetricIdentity = "idx", descending: bool = False, offset: int = 0,
    limit: int | None = 100,
) -> tuple[list[Candidate], int]:
    """One page of the study's candidates (full records, metrics with protocols) filtered and
    sorted in SQL, and how many candidates pass the filters. ``sort``: a key of
    :data:`BASE_SORTS` or a metric identity (candidates without that metric come last, in idx
    order, whatever the direction). ``limit=None``: every row (a CSV export)."""
    filters = filters or CandidateFilter()
    where, params = filters.where(study_id)
    join, join_params, order = "", [], ""
    direction = "DESC" if descending else "ASC"
    with store.snapshot() as conn:
        if filters.top_metric is not None and filters.top_percent is not None:
            threshold = _top_threshold(conn, where, params, filters.top_metric,
                                       filters.top_percent)
            op = "<=" if filters.top_metric.lower_is_better else ">="
            where.append("EXISTS (SELECT 1 FROM metrics k WHERE k.candidate_id = c.id AND "
                         f"{_identity_sql('k')} AND k.value {op} ?)")
            params += [*_identity_params(filters.top_metric),
                       threshold if threshold is not None else math.nan]
            if threshold is None:
                where.append("0")
        if isinstance(sort, MetricIdentity):
            join = " LEFT JOIN metrics s ON s.candidate_id = c.id AND " + _identity_sql("s")
            join_params = _identity_params(sort)
            order = f"s.value IS NULL, s.value {direction}, c.idx"
        else:
            if sort not in BASE_SORTS:
                raise ValueError(f"sort must be a metric identity or one of "
                                 f"{', '.join(BASE_SORTS)}; got {sort!r}")
            expr = BASE_SORTS[sort]
            order = f"{expr} IS NULL, {expr} {direction}, c.idx"
        cond = " AND ".join(where)
        total = int(conn.execute(f"SELECT COUNT(*) FROM candidates c WHERE {cond}",
                                 params).fetchone()[0])
        found = rows(conn, f"SELECT c.* FROM candidates c{join} WHERE {cond} ORDER BY {order}"
                     " LIMIT ? OFFSET ?",
                     [*join_params, *params, -1 if limit is None else int(limit),
                      max(0, int(offset))])
        decoded = [decode_candidate(r) for r in found]
        metrics = metrics_for(conn, [int(r["id"]) for r in decoded])
    for r in decoded:
        r["metrics"] = metrics[int(r["id"])]
    return [Candidate.of(r) for r in decoded], total


@guarded
def predictor_fits(store: Store, study_id: int) -> list[dict[str, Any]]:
    """A predictor study's fits (round, target, n_train, payload), by round then target, with
    the payload's fitted model text left out (the web app draws the fit, it never predicts);
    [] for a store without the table (schema 1) or a study without fits."""
    with store.snapshot() as c:
        if not c.execute("SELECT 1 FROM sqlite_master WHERE type = 'table'"
                         " AND name = 'predictor_fits'").fetchone():
            return []
        found = rows(c, "SELECT id, round, target, n_train, json_remove(payload, '$.model')"
                        " AS payload, created_at FROM predictor_fits WHERE study_id = ?"
                        " ORDER BY round, target, id", (int(study_id),))
    for r in found:
        r["payload"] = json.loads(r["payload"] or "{}")
    return found


@guarded
def sibling_trials(store: Store, study_id: int, objective: MetricIdentity,
                   info_key: str) -> list[dict[str, Any]]:
    """The trials (candidates with a generation) of the study and of every other study of its
    kind and model, for charts that compare searches (a TPE study against its random-sampler
    twin): rows of ``study_id``, ``study`` (name), ``seed``, ``id``, ``generation``,
    ``status``, ``origin``, ``value`` (the candidate's ``objective``, None where not
    measured) and ``info`` (its ``info[info_key]``, decoded; None without). The study's own
    trials first, then the others by study id; each by generation. One query."""
    if not info_key.isidentifier():
        raise ValueError(f"info_key must be an identifier; got {info_key!r}")
    with store.snapshot() as c:
        found = rows(
            c,
            "SELECT s.id AS study_id, s.name AS study, s.seed, c.id, c.generation, c.status,"
            " c.origin, m.value, json_quote(json_extract(c.info, ?)) AS info"
            " FROM studies t JOIN studies s ON s.kind = t.kind AND s.model = t.model"
            " JOIN candidates c ON c.study_id = s.id AND c.generation IS NOT NULL"
            " LEFT JOIN metrics m ON m.candidate_id = c.id AND " + _identity_sql("m") +
            " WHERE t.id = ? ORDER BY s.id != t.id, s.id, c.generation, c.idx",
            [f"$.{info_key}", *_identity_params(objective), int(study_id)])
    for r in found:
        r["info"] = json.loads(r["info"] or "null")
    return found


@guarded
def reconstruction_candidates(store: Store, study_id: int) -> list[Candidate]:
    """Full records (metrics with protocols) of every candidate of the study, by idx, when
    at least one of them is reconstructed (its spec has a ``reconstruction`` recipe); [] when
    none is (one read that stops at the first match). What the reconstruction view compares:
    each recipe against the same spec without it, and the dense model."""
    with store.snapshot() as c:
        if c.execute("SELECT 1 FROM candidates WHERE study_id = ?"
                     " AND json_type(spec, '$.reconstruction') = 'object' LIMIT 1",
                     (int(study_id),)).fetchone() is None:
            return []
        decoded = [decode_candidate(r) for r in rows(
            c, "SELECT * FROM candidates WHERE study_id = ? ORDER BY idx", (int(study_id),))]
        metrics = metrics_for(c, [int(r["id"]) for r in decoded])
    for r in decoded:
        r["metrics"] = metrics[int(r["id"])]
    return [Candidate.of(r) for r in decoded]
