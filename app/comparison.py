"""The Compare page's data, from full candidate records (pure pandas; no Streamlit, no store).

Numbers are grouped by metric identity only (titles from ``column_titles``): two values share
a bar group, a curve or an axis only when they were measured the same way.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
from prunestudio.app.display import method_label, pattern_label

from prunestudio.schema import TASK_ROLE, Candidate, MetricIdentity, column_titles

__all__ = ["axis_identities", "bar_rows", "name_of", "points", "titles_of"]


def name_of(c: Candidate, study: str | None = None) -> str:
    """How a candidate is named in legends: ``id 12 · wanda 50%`` (``· study`` when given)."""
    text = f"id {c.id} · {c.label}"
    return f"{text} · {study}" if study else text


def titles_of(candidates: Sequence[Candidate]) -> dict[MetricIdentity, str]:
    """Every metric identity of these candidates (first seen first) -> its unique title."""
    identities = list(dict.fromkeys(m.identity for c in candidates for m in c.metrics))
    return dict(zip(identities, column_titles(identities), strict=True))


def bar_rows(candidates: Sequence[Candidate], dense: Mapping[int, Candidate],
             titles: Mapping[MetricIdentity, str], *, tasks: bool,
             studies: Mapping[int, str] | None = None) -> pd.DataFrame:
    """Rows for grouped bars: perplexities (``tasks=False``: every ``ppl`` identity) or task
    accuracies (``tasks=True``: the metrics of role 'task', the measurement on the most
    examples) of the candidates, then of the dense model of each of their studies."""
    shown = list(candidates)
    seen = {c.id for c in shown}
    for d in dense.values():
        if d.id not in seen and any(c.study_id == d.study_id for c in candidates):
            shown.append(d)
            seen.add(d.id)
    rows = []
    for c in shown:
        if tasks:
            metrics = list(c.task_metrics.values())
        else:
            metrics = [m for m in c.metrics if m.name == "ppl"]
        for m in metrics:
            stderr = m.protocol.get("stderr")
            rows.append({"candidate": name_of(c, (studies or {}).get(c.study_id)),
                         "id": c.id, "dense": c.is_dense,
                         "metric": titles.get(m.identity, m.identity.title), "value": m.value,
                         "stderr": float(stderr) if isinstance(stderr, (int, float)) else None})
    return pd.DataFrame(rows, columns=["candidate", "id", "dense", "metric", "value", "stderr"])


def axis_identities(candidates: Sequence[Candidate]) -> tuple[list[MetricIdentity],
                                                               list[MetricIdentity]]:
    """(perplexity identities, cost identities — anything else that is neither a task score
    nor a perplexity: params, latency, MACs, sparsity ...) found in the candidates."""
    found = list(dict.fromkeys(m.identity for c in candidates for m in c.metrics))
    ppl = [i for i in found if i.name == "ppl"]
    cost = [i for i in found if i.name != "ppl" and i.role != TASK_ROLE]
    return ppl, cost


def points(candidates: Sequence[Candidate], y: MetricIdentity | None,
           x: MetricIdentity | None = None, titles: Mapping[MetricIdentity, str] | None = None,
           studies: Mapping[int, str] | None = None) -> pd.DataFrame:
    """One row per candidate: id, label, study, method · pattern (``group``), sparsity (the
    recorded realised one, else the spec's target), ``y`` (and ``x``) values, and one column
    per metric title (for hovers)."""
    titles = titles or titles_of(candidates)
    rows = []
    for c in candidates:
        sparsity = c.sparsity
        target = c.spec.get("sparsity")
        row = {"id": c.id, "label": c.label, "study": (studies or {}).get(c.study_id,
                                                                          str(c.study_id)),
               "status": c.status, "origin": c.origin,
               "group": f"{method_label(c.spec)} · {pattern_label(c.spec)}",
               "sparsity": sparsity if sparsity is not None else (
                   float(target) if isinstance(target, (int, float)) else None),
               "y": (m.value if (m := c.metric(y)) else None) if y is not None else None,
               "x": (m.value if (m := c.metric(x)) else None) if x is not None else None}
        for m in c.metrics:
            row[titles.get(m.identity, m.identity.title)] = m.value
        rows.append(row)
    base = ["id", "label", "study", "status", "origin", "group", "sparsity", "y", "x"]
    df = pd.DataFrame(rows)
    if df.empty:
        return pd.DataFrame(columns=base)
    return df
