"""The web app's reads: one read-only store per path, change tokens, token-keyed caches.

Every page asks the store for a cheap change token first (``browse.change_token`` for the
whole store, ``browse.study_token`` for one study: one-row reads). Cached loads take the token
as an argument (``st.cache_data``), so an unchanged store is never read again and a changed
one is read at once. A study's candidates for the charts live in a :class:`StudyFrame` that
only fetches the candidates changed since its cursor (``browse.candidate_points_since``), so a
refresh after a few new candidates costs a few rows, not the whole study. Tables are paged in
SQL (``browse.candidate_page``).

This is the only module of the app that talks to the store.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd
import streamlit as st
from prunestudio.app.display import method_label, pattern_label
from prunestudio.store import Store, browse, open_store, queries
from prunestudio.store.browse import CandidateFilter

from prunestudio.schema import (
    Candidate,
    Event,
    MetricIdentity,
    Study,
    Worker,
    WorkerSummary,
    WorkerTimeline,
)

__all__ = [
    "BASE_COLUMNS",
    "FrameSnapshot",
    "Reader",
    "StudiesData",
    "StudyFrame",
    "WorkersData",
    "reader",
    "study_frame",
]

# the chart frame's columns besides one per metric identity (named by its key)
BASE_COLUMNS = ("id", "idx", "status", "origin", "generation", "label", "reference", "dense",
                "method", "pattern", "target", "seconds", "worker", "created_at",
                "started_at", "finished_at", "error", "parents", "in_budget")


MEMO_ENTRIES = 64  # derived objects kept per snapshot


@dataclass(frozen=True)
class FrameSnapshot:
    """A study's candidates for charts at one moment: ``df`` (one row per candidate, ordered
    by idx; :data:`BASE_COLUMNS` plus one column per metric identity, named by its key),
    ``identities`` (key -> identity, first recorded first) and the study token it reflects.
    A snapshot never changes; :meth:`memo` keeps what pages derive from it (figures, tables)
    until the next change of the study."""

    df: pd.DataFrame
    identities: dict[str, MetricIdentity]
    token: int | None
    loaded_s: float = 0.0  # seconds the last update spent reading and building
    _memo: dict[Any, Any] = field(default_factory=dict, repr=False, compare=False)

    def identity(self, key: str | None) -> MetricIdentity | None:
        return None if key is None else self.identities.get(key)

    def memo(self, key: Any, build: Callable[[], Any]) -> Any:
        """``build()`` once per snapshot and ``key`` (a rerun without changes reuses it)."""
        if key not in self._memo:
            if len(self._memo) >= MEMO_ENTRIES:  # many filter / option combinations
                self._memo.clear()
            self._memo[key] = build()
        return self._memo[key]


def _row(c: Candidate) -> dict[str, Any]:
    spec = c.spec
    target = spec.get("sparsity")
    return {
        "id": c.id, "idx": c.idx, "status": c.status, "origin": c.origin,
        "generation": float("nan") if c.generation is None else float(c.generation),
        "label": c.label, "reference": c.is_reference, "dense": c.is_dense,
        "method": method_label(spec), "pattern": pattern_label(spec),
        "target": float(target) if isinstance(target, (int, float)) else float("nan"),
        "seconds": c.seconds, "worker": c.worker or "", "created_at": c.created_at,
        "started_at": c.started_at, "finished_at": c.finished_at,
        "error": c.first_error_line or "",
        "parents": ",".join(str(p) for p in c.parents) if c.parents else "",
        "in_budget": bool(c.in_budget),
    }


def _frame(rows: list[dict[str, Any]], values: dict[int, dict[str, float]],
           keys: list[str]) -> pd.DataFrame:
    data: dict[str, list[Any]] = {col: [r[col] for r in rows] for col in BASE_COLUMNS}
    for key in keys:
        data[key] = [values[r["id"]].get(key, float("nan")) for r in rows]
    df = pd.DataFrame(data)
    for col in ("seconds", "created_at", "started_at", "finished_at"):
        df[col] = pd.to_numeric(df[col], errors="coerce")
    return df


class StudyFrame:
    """Every candidate of one study for the charts, kept up to date incrementally: each
    :meth:`update` reads the study token and, when it moved, only the candidates changed since
    the last cursor, whose rows replace or join the previous frame (no rebuild of the rest).
    Shared by every session (one lock)."""

    def __init__(self, study_id: int) -> None:
        self.study_id = study_id
        self.cursor = 0
        self.identities: dict[str, MetricIdentity] = {}
        self.snapshot = FrameSnapshot(pd.DataFrame(columns=list(BASE_COLUMNS)), {}, None)
        self.lock = threading.Lock()

    def update(self, store: Store) -> FrameSnapshot:
        with self.lock:
            token = browse.study_token(store, self.study_id)
            if token is not None and token == self.snapshot.token:
                return self.snapshot
            t0 = time.perf_counter()
            rows: dict[int, dict[str, Any]] = {}
            values: dict[int, dict[str, float]] = {}
            while True:
                batch = browse.candidate_points_since(store, self.study_id, self.cursor,
                                                      limit=20_000)
                if not batch.candidates:
                    break
                for c in batch.candidates:
                    rows[c.id] = _row(c)
                    values[c.id] = {}
                for cid, identity, value in batch.values:
                    self.identities.setdefault(identity.key, identity)
                    values[cid][identity.key] = value
                self.cursor = batch.cursor
            df = self.snapshot.df
            if rows:
                changed = _frame(sorted(rows.values(), key=lambda r: r["idx"]), values,
                                 list(self.identities))
                kept = df[~df["id"].isin(list(rows))] if len(df) else df
                if len(kept):
                    df = pd.concat([kept, changed], ignore_index=True)
                    if not df["idx"].is_monotonic_increasing:
                        df = df.sort_values("idx", kind="stable", ignore_index=True)
                else:
                    df = changed
            self.snapshot = FrameSnapshot(df, dict(self.identities), token,
                                          time.perf_counter() - t0)
            return self.snapshot


class Reader:
    """One read-only connection to a store, shared by every session and script thread (one
    query at a time), and the study frames built on it."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.store = open_store(path, readonly=True, timeout=5.0, check_same_thread=False)
        self.lock = threading.RLock()
        self.frames: dict[int, StudyFrame] = {}

    def token(self) -> int:
        with self.lock:
            return browse.change_token(self.store)

    def study_token(self, study_id: int) -> int | None:
        with self.lock:
            return browse.study_token(self.store, study_id)

    def frame(self, study_id: int) -> FrameSnapshot:
        with self.lock:
            frame = self.frames.setdefault(study_id, StudyFrame(study_id))
            return frame.update(self.store)


@st.cache_resource(show_spinner=False)
def reader(path: str) -> Reader:
    """The shared :class:`Reader` of the store at ``path`` (opened once per process)."""
    return Reader(path)


def study_frame(path: str, study_id: int) -> FrameSnapshot:
    return reader(path).frame(study_id)


# -- token-keyed loads ---------------------------------------------------------------------


@dataclass(frozen=True)
class StudiesData:
    """Every study (with counts), its best values, compute time and last update."""

    studies: list[Study]
    best: dict[int, list[dict[str, Any]]] = field(default_factory=dict)  # best ppl rows
    best_acc: dict[int, list[dict[str, Any]]] = field(default_factory=dict)
    overview: dict[int, dict[str, Any]] = field(default_factory=dict)


@st.cache_data(max_entries=16, show_spinner=False)
def load_studies(path: str, token: int, now_bucket: int) -> StudiesData:
    """``now_bucket`` (time // 15 s) re-reads the liveness of running studies now and then:
    a runner that dies writes nothing."""
    r = reader(path)
    with r.lock:
        studies = queries.study_records(r.store)
        best = queries.best_metrics(r.store, None, exclude_references=True)
        acc = queries.best_metrics(r.store, None, "acc", lower_is_better=False,
                                   exclude_references=True)
        overview = browse.study_overview(r.store)
    by: dict[int, list[dict[str, Any]]] = {}
    for row in best:
        by.setdefault(int(row["study_id"]), []).append(row)
    by_acc: dict[int, list[dict[str, Any]]] = {}
    for row in acc:
        by_acc.setdefault(int(row["study_id"]), []).append(row)
    return StudiesData(studies, by, by_acc, overview)


@st.cache_data(max_entries=64, show_spinner=False)
def load_study(path: str, key: str, token: int) -> Study | None:
    """The study by id or name (no counts), or None."""
    r = reader(path)
    with r.lock:
        try:
            return r.store.study_record(key)
        except Exception:  # StoreError: no such study
            return None


@st.cache_data(max_entries=16, show_spinner=False)
def load_predictor_fits(path: str, study_id: int, token: int) -> list[dict[str, Any]]:
    """A predictor study's recorded fits (``browse.predictor_fits``), re-read when the store's
    change token moves (a fit is written with its round's event)."""
    r = reader(path)
    with r.lock:
        return browse.predictor_fits(r.store, study_id)


@st.cache_data(max_entries=16, show_spinner=False)
def load_sibling_trials(path: str, study_id: int, objective: MetricIdentity, info_key: str,
                        token: int) -> list[dict[str, Any]]:
    """The trials of the study and of every other study of its kind and model, with their
    ``objective`` values and ``info[info_key]`` (``browse.sibling_trials``), re-read when the
    store's change token moves (another study's new trial moves it too)."""
    r = reader(path)
    with r.lock:
        return browse.sibling_trials(r.store, study_id, objective, info_key)


@st.cache_data(max_entries=16, show_spinner=False)
def load_reconstruction(path: str, study_id: int, token: int | None) -> list[Candidate]:
    """Every candidate of the study with its metric protocols when one of them is
    reconstructed, else [] (``browse.reconstruction_candidates``), re-read when the study's
    token moves."""
    r = reader(path)
    with r.lock:
        return browse.reconstruction_candidates(r.store, study_id)


@st.cache_data(max_entries=64, show_spinner=False)
def load_counts(path: str, study_id: int, token: int | None) -> dict[str, int]:
    r = reader(path)
    with r.lock:
        return browse.status_counts(r.store, study_id)


@st.cache_data(max_entries=64, show_spinner=False)
def load_page(path: str, study_id: int, token: int | None, filters: CandidateFilter,
              sort: str | MetricIdentity, descending: bool, offset: int, limit: int | None
              ) -> tuple[list[Candidate], int]:
    r = reader(path)
    with r.lock:
        return browse.candidate_page(r.store, study_id, filters, sort=sort,
                                     descending=descending, offset=offset, limit=limit)


@st.cache_data(max_entries=64, show_spinner=False)
def load_candidates(path: str, ids: tuple[int, ...], token: int) -> list[Candidate]:
    r = reader(path)
    with r.lock:
        return browse.candidate_records_by_ids(r.store, ids)


@st.cache_data(max_entries=32, show_spinner=False)
def load_dense(path: str, study_ids: tuple[int, ...], token: int) -> dict[int, Candidate]:
    r = reader(path)
    with r.lock:
        return browse.dense_candidates(r.store, study_ids)


@st.cache_data(max_entries=32, show_spinner=False)
def load_lineage(path: str, candidate_id: int, token: int | None, depth: int = 6
                 ) -> tuple[list[tuple[int, int]], list[Candidate]]:
    """Ancestors ``(id, distance)`` of a candidate and their records."""
    r = reader(path)
    with r.lock:
        found = browse.lineage_ids(r.store, candidate_id, depth)
        return found, browse.candidate_records_by_ids(r.store, [i for i, _ in found])


@st.cache_data(max_entries=32, show_spinner=False)
def load_failures(path: str, study_id: int, token: int | None) -> list[dict[str, Any]]:
    r = reader(path)
    with r.lock:
        return browse.failure_reasons(r.store, study_id)


@st.cache_data(max_entries=32, show_spinner=False)
def load_events(path: str, study_id: int, token: int, limit: int = 200) -> list[Event]:
    r = reader(path)
    with r.lock:
        return browse.recent_events(r.store, study_id, limit)


@dataclass(frozen=True)
class WorkersData:
    """What each worker of a study ran (``browse.worker_summary``) and its busy share of the
    study's span (a one-bin ``browse.worker_timeline``: running candidates count up to
    ``now``, as on the TUI's timeline)."""

    summaries: list[WorkerSummary]
    span: WorkerTimeline


@st.cache_data(max_entries=32, show_spinner=False)
def load_worker_summary(path: str, study_id: int, token: int | None, now: float
                        ) -> WorkersData:
    """Per worker of the study, re-read when the study's token moves or ``now`` does (pass
    it rounded: a running candidate's time grows with the clock)."""
    r = reader(path)
    with r.lock:
        return WorkersData(browse.worker_summary(r.store, study_id),
                           browse.worker_timeline(r.store, study_id, 1, now))


def load_workers(path: str, study_id: int) -> list[Worker]:
    """Worker heartbeats of the study (not cached: their liveness is a matter of time)."""
    r = reader(path)
    with r.lock:
        return queries.worker_records(r.store, study_id)


@st.cache_data(max_entries=32, show_spinner=False)
def load_identities(path: str, study_ids: tuple[int, ...], token: int) -> list[MetricIdentity]:
    r = reader(path)
    with r.lock:
        return browse.metric_identities(r.store, study_ids)


@st.cache_data(max_entries=16, show_spinner=False)
def load_artifacts(path: str, candidate_id: int, token: int) -> list[Any]:
    r = reader(path)
    with r.lock:
        return r.store.artifact_records(candidate_id)


def csv_bytes(path: str, study_id: int, filters: CandidateFilter, sort: str | MetricIdentity,
              descending: bool, columns: list[str]) -> bytes:
    """Every candidate passing ``filters`` as CSV, in the table's order and columns (built on
    click, with its own connection: Streamlit calls it outside the script run)."""
    from prunestudio.app.tables import candidate_table

    with open_store(path, readonly=True, timeout=5.0) as store:
        found, _ = browse.candidate_page(store, study_id, filters, sort=sort,
                                         descending=descending, limit=None)
        identities = browse.metric_identities(store, [study_id])
    df = candidate_table(found, identities, columns, numeric=True)
    return df.to_csv(index=False).encode()


def store_label(path: str) -> str:
    """How the store is named in commands shown to the user (the path as given)."""
    return str(Path(path))
