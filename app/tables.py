"""DataFrames the pages show: the studies table, a page of candidates, a protocol table.

Pure functions of schema records (labels from ``Candidate.label``, metric columns from
``MetricIdentity`` / ``column_titles``, the primary role from ``Study.primary_role``); no
Streamlit, no store.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
from prunestudio.app.display import duration, method_label, pattern_label
from prunestudio.store.browse import CandidateFilter

from prunestudio.schema import (
    Candidate,
    Metric,
    MetricIdentity,
    Study,
    Worker,
    WorkerSummary,
    WorkerTimeline,
    choose_primary,
    column_titles,
)

__all__ = [
    "BASE_TABLE_COLUMNS",
    "best_by_study",
    "candidate_table",
    "default_columns",
    "filter_frame",
    "metric_titles",
    "protocol_table",
    "studies_table",
    "worker_summary_table",
    "workers_table",
]

# the candidate table's own columns (metric columns come after, titled by column_titles)
BASE_TABLE_COLUMNS = ("id", "#", "status", "origin", "gen", "candidate", "method", "pattern",
                      "target", "sparsity", "parents", "time s", "worker", "finished", "error")


def metric_titles(identities: Sequence[MetricIdentity]) -> dict[str, str]:
    """identity key -> unique column title (``ppl in``, ``ppl search·p``, ``acc next-line``)."""
    return dict(zip((i.key for i in identities), column_titles(list(identities)), strict=True))


def default_columns(identities: Sequence[MetricIdentity], primary: MetricIdentity | None,
                    search: bool) -> list[str]:
    """The columns a candidate table starts with: ids, status, origin, (generation), label,
    the primary metric first, then up to four other metrics, the time."""
    titles = metric_titles(identities)
    ordered = list(identities)
    if primary is not None and primary in ordered:
        ordered.remove(primary)
        ordered.insert(0, primary)
    metrics = [titles[i.key] for i in ordered[:5]]
    base = ["id", "#", "status", "origin", *(["gen"] if search else []), "candidate"]
    return [*base, *metrics, "time s"]


def _stamp(t: float | None) -> pd.Timestamp | None:
    return None if t is None else pd.Timestamp.fromtimestamp(t)


def candidate_table(candidates: Sequence[Candidate], identities: Sequence[MetricIdentity],
                    columns: Sequence[str] | None = None, *, numeric: bool = True
                    ) -> pd.DataFrame:
    """One row per candidate with the chosen ``columns`` (all when None): the base columns
    of :data:`BASE_TABLE_COLUMNS` and metric titles."""
    titles = metric_titles(identities)
    records = []
    for c in candidates:
        row: dict[str, Any] = {
            "id": c.id, "#": c.idx, "status": c.status, "origin": c.origin,
            "gen": c.generation,
            "candidate": f"{c.label} (reference)" if c.is_reference else c.label,
            "method": method_label(c.spec), "pattern": pattern_label(c.spec),
            "target": c.spec.get("sparsity"), "sparsity": c.sparsity,
            "parents": ", ".join(str(p) for p in c.parents) if c.parents else "",
            "time s": c.seconds, "worker": c.worker or "", "finished": _stamp(c.finished_at),
            "error": c.first_error_line or "",
        }
        for m in c.metrics:
            title = titles.get(m.key)
            if title is not None:
                row[title] = m.value
        records.append(row)
    all_columns = [*BASE_TABLE_COLUMNS, *titles.values()]
    df = pd.DataFrame.from_records(records, columns=all_columns)
    if "gen" in df:
        df["gen"] = df["gen"].astype("Int64")
    if not numeric:
        df["time s"] = df["time s"].map(duration)
    return df[[c for c in (columns or all_columns) if c in df.columns]]


def studies_table(studies: Sequence[Study], best: Mapping[int, Sequence[dict[str, Any]]],
                  best_acc: Mapping[int, Sequence[dict[str, Any]]],
                  overview: Mapping[int, Mapping[str, Any]], now: float | None = None
                  ) -> pd.DataFrame:
    """One row per study, newest first: kind, model, status, progress, the best value of its
    primary role (and the best held-out value when that is another role, e.g. a search's
    finalists), the best accuracy, compute time, last update and a link to its page."""
    now = time.time() if now is None else now
    rows = []
    for s in sorted(studies, key=lambda s: s.id, reverse=True):
        counts = s.counts
        used = counts.budget_used if counts else 0
        total = s.budget or (counts.total if counts else 0) or None
        primary = best_by_study(list(best.get(s.id, ())), s.primary_role)
        held_role = s.evaluation_roles[0] if s.evaluation_roles else None
        held = (best_by_study([r for r in best.get(s.id, ()) if r.get("role") == held_role],
                              held_role) if held_role and held_role != s.primary_role
                else None)
        acc = best_by_study(list(best_acc.get(s.id, ())), None)
        info = overview.get(s.id, {})
        status = s.shown_status + (" (cancel requested)" if s.cancel_requested and s.active
                                   else "")
        rows.append({
            "id": s.id, "study": s.name, "kind": s.kind, "model": s.model, "status": status,
            "progress": (used / total) if total else None,
            "done": f"{used}/{total}" if total else str(used),
            "failed": counts.failed if counts else 0,
            "candidates": counts.total if counts else 0,
            "best": primary[1]["value"] if primary else None,
            "best metric": primary[0].title if primary else "",
            "best id": primary[1]["candidate_id"] if primary else None,
            "held-out": held[1]["value"] if held else None,
            "held-out metric": held[0].title if held else "",
            "accuracy": acc[1]["value"] if acc else None,
            "accuracy metric": acc[0].title if acc else "",
            "compute": duration(info.get("compute_s")) if info.get("compute_s") else "",
            "elapsed": duration(s.elapsed(now)),
            "last update": _stamp(info.get("last_update")),
            "open": f"study?study={s.id}",
        })
    return pd.DataFrame(rows, columns=[
        "id", "study", "kind", "model", "status", "progress", "done", "failed", "candidates",
        "best", "best metric", "best id", "held-out", "held-out metric", "accuracy",
        "accuracy metric", "compute", "elapsed", "last update", "open"])


def best_by_study(rows: list[dict[str, Any]], role: str | None
                  ) -> tuple[MetricIdentity, dict[str, Any]] | None:
    """Among ``queries.best_metrics`` rows of one study, the identity the role ranks by
    (``choose_primary``) and its row."""
    found = [(MetricIdentity.of(r), r) for r in rows]
    identity = choose_primary([i for i, _ in found], role, found[0][0].name if found else "ppl")
    if identity is None:
        return None
    return identity, next(r for i, r in found if i == identity)


def _protocol_text(protocol: Mapping[str, Any]) -> str:
    return json.dumps(dict(protocol), sort_keys=True, default=str) if protocol else ""


def protocol_table(candidates: Sequence[Candidate], metric_filter: Any = None) -> pd.DataFrame:
    """Every number of these candidates with how it was measured: one row per (candidate,
    metric) with the identity, the windows or examples, the lm-eval version and the rest of
    the protocol."""
    rows = []
    for c in candidates:
        ms: list[Metric] = [m for m in c.metrics if metric_filter is None or metric_filter(m)]
        titles = column_titles([m.identity for m in ms])
        for m, title in zip(ms, titles, strict=True):
            p = m.protocol
            rows.append({
                "id": c.id, "candidate": c.label, "metric": title, "value": m.value,
                "dataset": m.dataset or "", "split": m.split or "", "seqlen": m.seqlen,
                "windows / examples": m.n_samples, "fidelity": m.fidelity or "",
                "role": m.role or "",
                "lm-eval": str(p.get("lm_eval_version") or ""),
                "few-shot": p.get("num_fewshot"),
                "stderr": p.get("stderr"),
                "protocol": _protocol_text(p),
            })
    df = pd.DataFrame(rows, columns=["id", "candidate", "metric", "value", "dataset", "split",
                                     "seqlen", "windows / examples", "fidelity", "role",
                                     "lm-eval", "few-shot", "stderr", "protocol"])
    for col in ("seqlen", "windows / examples", "few-shot"):
        df[col] = pd.to_numeric(df[col], errors="coerce").astype("Int64")
    df["stderr"] = pd.to_numeric(df["stderr"], errors="coerce")
    return df


def filter_frame(df: pd.DataFrame, f: CandidateFilter) -> pd.DataFrame:
    """The rows of a study frame that pass ``f`` — the same rule as the SQL of
    ``browse.candidate_page``, so charts and the paged table show the same candidates."""
    if df.empty:
        return df
    keep = pd.Series(True, index=df.index)
    if f.statuses is not None:
        keep &= df["status"].isin(f.statuses)
    if f.origins is not None:
        keep &= df["origin"].isin(f.origins)
    if f.generations is not None:
        gens = [float(g) for g in f.generations if g is not None]
        in_gen = df["generation"].isin(gens)
        if None in f.generations:
            in_gen |= df["generation"].isna()
        keep &= in_gen
    if not f.references:
        keep &= ~df["reference"].astype(bool)
    out = df[keep]
    if f.top_metric is not None and f.top_percent is not None:
        key = f.top_metric.key
        values = out[key].dropna() if key in out else pd.Series(dtype=float)
        if values.empty:
            return out.iloc[0:0]
        lower = f.top_metric.lower_is_better
        k = max(1, math.ceil(len(values) * max(0.0, min(100.0, f.top_percent)) / 100.0))
        threshold = values.sort_values(ascending=lower).iloc[k - 1]
        out = out[(out[key] <= threshold) if lower else (out[key] >= threshold)]
    return out


def worker_summary_table(summaries: Sequence[WorkerSummary], span: WorkerTimeline,
                         workers: Sequence[Worker]) -> pd.DataFrame:
    """One row per worker that ran candidates of the study: its device (``device_label``
    of its heartbeat row while it has one), candidates by status, busy time (its ended
    candidates), busy share of the study's span (running candidates included), mean
    seconds per candidate, first start and last finish (local times)."""
    devices = {w.name: w.device_label for w in workers}
    return pd.DataFrame([{
        "worker": s.name, "device": devices.get(s.name, ""), "done": s.done,
        "failed": s.failed, "skipped": s.skipped, "running": s.running,
        "busy": duration(s.busy_s), "busy %": _percent(span.utilisation(s.name)),
        "s / candidate": s.mean_s, "first start": _stamp(s.first_start),
        "last finish": _stamp(s.last_finish)} for s in summaries],
        columns=["worker", "device", "done", "failed", "skipped", "running", "busy",
                 "busy %", "s / candidate", "first start", "last finish"])


def _percent(share: float | None) -> float | None:
    return None if share is None else round(100.0 * share, 1)


def workers_table(workers: Sequence[Worker], now: float) -> pd.DataFrame:
    """The study's worker rows: name, device (``Worker.device_label``: GPU, memory, threads),
    host, pid, current candidate, seconds since its heartbeat and ``stale``."""
    df = pd.DataFrame([{
        "worker": w.name, "device": w.device_label, "host": w.host or "", "pid": w.pid,
        "candidate": w.candidate_id, "heartbeat age s": round(max(0.0, now - w.heartbeat), 1),
        "stale": bool(w.stale)} for w in workers],
        columns=["worker", "device", "host", "pid", "candidate", "heartbeat age s", "stale"])
    return df.astype({"pid": "Int64", "candidate": "Int64"})  # ids, not floats, beside None
