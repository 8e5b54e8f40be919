"""Allowed values, input validation and row decoding shared by writes and queries."""

from __future__ import annotations

import json
import math
import sqlite3
from collections.abc import Mapping, Sequence
from typing import Any

from prunestudio.schema import (
    FIDELITIES,
    FITNESS_METRIC,
    METRIC_KEYS,
    REFERENCE_METHODS,
    REFERENCE_ORIGINS,
    SEARCH_KINDS,
    Candidate,
    Study,
)
from prunestudio.schema.canonical import canonical_json

__all__ = [
    "rows",
    "decode_study",
    "decode_candidate",
    "decode_metric",
    "normalise_metric",
    "check_choice",
    "metrics_for",
    "in_budget_sql",
    "reference_sql",
    "study_record",
    "candidate_record",
]

# -- what a study's budget counts -----------------------------------------------------------
# Search studies (kinds gp, random) have a budget of REAL fitness evaluations: a candidate
# spends one unit when the search proposed it (generation set, origin not 'baseline') and it
# is 'done' with its own fitness metric (ppl, role 'search'). Not counted: mask-equivalent
# candidates (status 'skipped', fitness reused, info.equivalent_to set), candidates skipped
# once the budget was reached, failed ones, pending / running ones, the baselines (origin
# 'baseline', no generation); finalists are re-evaluations of counted candidates (more
# metrics on the same row), never new units. The engine's SearchHistory.real_evaluations
# applies the same rule (tests/store checks both agree). Any other kind has a budget of
# candidates: every candidate that reached an end state (done, failed, skipped) counts.
# (SEARCH_KINDS and FITNESS_METRIC: prunestudio.schema.constants)

def in_budget_sql(c: str = "c", kind: str = "s.kind") -> str:
    """SQL expression (0/1): candidate alias ``c`` spends one unit of the budget of its study,
    whose kind is the SQL expression ``kind``. The one definition, used per row
    (``candidates_since``'s ``in_budget``) and summed (``n_budget_used`` of the study lists).
    """
    kinds = ", ".join(f"'{k}'" for k in SEARCH_KINDS)
    name, role = FITNESS_METRIC
    return (
        f"(CASE WHEN {kind} IN ({kinds}) THEN"
        f" ({c}.status = 'done' AND {c}.generation IS NOT NULL AND {c}.origin != 'baseline'"
        # instr first: parsing the JSON of every done candidate would cost more
        f" AND ({c}.info IS NULL OR instr({c}.info, '\"equivalent_to\"') = 0"
        f" OR json_extract({c}.info, '$.equivalent_to') IS NULL)"
        f" AND EXISTS (SELECT 1 FROM metrics fm WHERE fm.candidate_id = {c}.id"
        f" AND fm.name = '{name}' AND fm.role = '{role}'))"
        f" ELSE {c}.status IN ('done', 'failed', 'skipped') END)"
    )


def reference_sql(c: str = "c") -> str:
    """SQL expression (0/1): candidate alias ``c`` is a reference (the unpruned model or a
    baseline) — the SQL form of ``prunestudio.schema.Candidate.is_reference``."""
    methods = ", ".join(f"'{m}'" for m in REFERENCE_METHODS)
    origins = ", ".join(f"'{o}'" for o in REFERENCE_ORIGINS)
    return (f"(COALESCE(json_extract({c}.spec, '$.method'), '') IN ({methods})"
            f" OR {c}.origin IN ({origins}))")


def check_choice(field: str, value: Any, allowed: Sequence[str]) -> str:
    if value not in allowed:
        raise ValueError(f"{field} must be one of {', '.join(allowed)}; got {value!r}")
    return value


def rows(conn: sqlite3.Connection, sql: str, params: Sequence[Any] = ()) -> list[dict[str, Any]]:
    """Run a SELECT and return its rows as dicts."""
    cur = conn.execute(sql, params)
    keys = [d[0] for d in cur.description]
    return [dict(zip(keys, r, strict=True)) for r in cur.fetchall()]


def _loads(text: str | None) -> Any:
    return None if text is None else json.loads(text)


def decode_study(row: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(row)
    out["config"] = _loads(out.get("config"))
    return out


def decode_candidate(row: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(row)
    for col in ("spec", "parents", "timings", "info"):
        if col in out:
            out[col] = _loads(out[col])
    return out


def decode_metric(row: Mapping[str, Any]) -> dict[str, Any]:
    """Map the stored '' / 0 placeholders of the key columns back to None."""
    out = dict(row)
    for col in ("dataset", "split", "fidelity", "role"):
        out[col] = out[col] or None
    out["seqlen"] = out["seqlen"] or None
    out["protocol"] = _loads(out["protocol"]) or {}
    return out


def _opt_text(m: Mapping[str, Any], key: str) -> str:
    value = m.get(key)
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ValueError(f"metric field {key!r} must be a string or None; got {value!r}")
    return value


def _opt_int(m: Mapping[str, Any], key: str, minimum: int) -> int | None:
    value = m.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ValueError(f"metric field {key!r} must be an integer >= {minimum}; got {value!r}")
    return int(value)


def normalise_metric(m: Mapping[str, Any]) -> dict[str, Any]:
    """Validate one metric dict and return the column values to store.

    Raises ValueError for unknown keys, a missing name/value, a non-finite value (record a
    failed candidate instead) or a fidelity outside ``FIDELITIES``.
    """
    unknown = set(m) - set(METRIC_KEYS)
    if unknown:
        raise ValueError(
            f"unknown metric field(s) {sorted(unknown)}; allowed: {', '.join(METRIC_KEYS)}"
        )
    name = m.get("name")
    if not isinstance(name, str) or not name:
        raise ValueError(f"metric 'name' must be a non-empty string; got {name!r}")
    value = m.get("value")
    if isinstance(value, (bool, str, bytes)) or value is None:
        raise ValueError(f"metric {name!r}: value must be a number; got {value!r}")
    if not isinstance(value, (int, float)):
        # numpy / torch scalars: accept anything float() takes that is a real number
        try:
            value = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise ValueError(f"metric {name!r}: value must be a number; got {value!r}") from None
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(
            f"metric {name!r}: value {value} is not finite; record the candidate as failed instead"
        )
    fidelity = _opt_text(m, "fidelity")
    if fidelity:
        check_choice(f"metric {name!r} fidelity", fidelity, FIDELITIES)
    protocol = m.get("protocol") or {}
    if not isinstance(protocol, Mapping):
        raise ValueError(f"metric {name!r}: protocol must be a dict; got {protocol!r}")
    return {
        "name": name,
        "value": value,
        "dataset": _opt_text(m, "dataset"),
        "split": _opt_text(m, "split"),
        "seqlen": _opt_int(m, "seqlen", 1) or 0,
        "n_samples": _opt_int(m, "n_samples", 0),
        "fidelity": fidelity,
        "role": _opt_text(m, "role"),
        "protocol": canonical_json(dict(protocol)),
    }


def metrics_for(conn: sqlite3.Connection, candidate_ids: Sequence[int]) -> dict[int, list[dict]]:
    """Decoded metrics of the given candidates, grouped by candidate id (chunked IN queries)."""
    out: dict[int, list[dict]] = {cid: [] for cid in candidate_ids}
    ids = list(out)
    for start in range(0, len(ids), 500):
        chunk = ids[start : start + 500]
        marks = ",".join("?" * len(chunk))
        for row in rows(conn, f"SELECT * FROM metrics WHERE candidate_id IN ({marks}) ORDER BY id",
                        chunk):
            out[row["candidate_id"]].append(decode_metric(row))
    return out


def study_record(row: Mapping[str, Any]) -> Study:
    """A study row (raw or decoded; with counts and ``stale`` when present) as a record."""
    out = dict(row)
    if isinstance(out.get("config"), str):
        out["config"] = _loads(out["config"])
    return Study.of(out)


def candidate_record(row: Mapping[str, Any]) -> Candidate:
    """A decoded candidate row (``metrics``: decoded metric dicts) as a record."""
    return Candidate.of(row)
