"""Plotly figures of the web app, built from DataFrames (no Streamlit, no store).

Every point that stands for a candidate carries the candidate id as the first value of its
``customdata``: :func:`selected_ids` reads a selection event back into ids, which the pages
turn into deep links (``?candidate=ID``, ``?compare=...``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from prunestudio.app.display import value_text

__all__ = [
    "STATUS_COLOURS",
    "best_so_far",
    "candidate_scatter",
    "fitness_by_generation",
    "metric_bars",
    "fit_quality",
    "importance_bars",
    "pareto_front",
    "pareto_figure",
    "predicted_vs_measured",
    "ratio_heatmap",
    "selected_ids",
    "sparsity_curves",
    "timeline",
    "value_histogram",
]

STATUS_COLOURS = {"done": "#2ca02c", "failed": "#d62728", "running": "#ff7f0e",
                  "pending": "#9e9e9e", "skipped": "#c7c7c7"}
WEBGL_FROM = 2000  # points per chart above which scatters are drawn with WebGL
_MARGIN = {"l": 10, "r": 10, "t": 40, "b": 10}


def _layout(fig: go.Figure, title: str, *, log_y: bool = False, height: int = 380,
            x: str = "", y: str = "") -> go.Figure:
    fig.update_layout(title={"text": title, "x": 0.0}, height=height, margin=_MARGIN,
                      legend={"orientation": "h", "y": -0.18}, hovermode="closest",
                      xaxis_title=x, yaxis_title=y)
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def _scatter(n: int) -> type[go.Scatter] | type[go.Scattergl]:
    return go.Scattergl if n > WEBGL_FROM else go.Scatter


def selected_ids(event: Any) -> list[int]:
    """Candidate ids of the points of a Plotly selection event (``st.plotly_chart(...,
    on_select="rerun")``'s return value, or its ``selection`` dict), in selection order."""
    if event is None:
        return []
    selection = event.get("selection") if isinstance(event, Mapping) else getattr(
        event, "selection", None)
    if selection is None and isinstance(event, Mapping):
        selection = event
    points = (selection or {}).get("points") or []
    out: list[int] = []
    for p in points:
        data = p.get("customdata") if isinstance(p, Mapping) else None
        if isinstance(data, (list, tuple)):
            data = data[0] if data else None
        try:
            cid = int(data)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            continue
        if cid not in out:
            out.append(cid)
    return out


def _hover_data(df: pd.DataFrame, columns: Mapping[str, str]
                ) -> tuple[pd.Series, np.ndarray, str]:
    """Hover texts, customdata and template for the points of ``df``: the label and the
    text columns go into one string per point, the id and the numeric columns into a float
    customdata array (formatted by the browser). Plotly copies and validates object arrays
    element by element: keeping customdata numeric keeps a 10,000-point chart cheap."""
    text = "<b>" + df["label"].astype(str) + "</b>"
    numeric: list[tuple[str, str]] = []
    for col, title in columns.items():
        if col not in df:
            continue
        values = df[col]
        if pd.api.types.is_numeric_dtype(values) and not pd.api.types.is_bool_dtype(values):
            numeric.append((col, title))
        else:
            shown = values.fillna("").astype(str)
            text = text + np.where(shown != "", "<br>" + title + ": " + shown, "")
    cols = ["id", *(c for c, _ in numeric)]
    custom = df[cols].to_numpy(dtype=float) if len(df) else np.empty((0, len(cols)))
    lines = ["%{text}", "id %{customdata[0]}"]
    lines += [f"{title}: %{{customdata[{i + 1}]:.4g}}" for i, (_, title) in enumerate(numeric)]
    return text, custom, "<br>".join(lines) + "<extra></extra>"


def best_so_far(df: pd.DataFrame, lines: Sequence[tuple[str, str]], *, log_y: bool = False,
                x: str = "idx") -> go.Figure:
    """The best value so far over the candidate index, one step line per metric
    (``(column, title)``; the primary first): the search split and the held-out sets on the
    same axes. Only done candidates that are not references count; each metric's measured
    points are drawn too (a search's held-out metrics exist only for its finalists)."""
    fig = go.Figure()
    done = df[(df["status"] == "done") & ~df["reference"]].sort_values(x)
    for i, (col, title) in enumerate(lines):
        if col not in done:
            continue
        have = done[done[col].notna()]
        if have.empty:
            continue
        best = have[col].cummin()
        fig.add_trace(go.Scatter(x=have[x], y=best, mode="lines", line_shape="hv",
                                 name=f"best {title}", legendgroup=col,
                                 line={"width": 3 if i == 0 else 2}))
        fig.add_trace(_scatter(len(have))(
            x=have[x], y=have[col], mode="markers", name=title, legendgroup=col,
            marker={"size": 5, "opacity": 0.35 if i == 0 else 0.8},
            text=have["label"], customdata=have[["id"]].to_numpy(),
            hovertemplate="<b>%{text}</b><br>id %{customdata[0]}<br>" + title
                          + ": %{y:.4g}<extra></extra>"))
    return _layout(fig, "Best so far", log_y=log_y, x="candidate index", y="perplexity")


def candidate_scatter(df: pd.DataFrame, column: str, title: str, *, color_by: str = "origin",
                      log_y: bool = False, hover: Mapping[str, str] | None = None,
                      x: str = "idx") -> go.Figure:
    """Every candidate with a value of ``column`` as a point over its index, coloured by
    ``color_by`` (origin, status: one trace per value; generation: a colour scale); the
    references (dense, baselines) as a trace of diamonds. Hover: label, id and the
    ``hover`` columns."""
    fig = go.Figure()
    have = df[df[column].notna()] if column in df else df.iloc[0:0]
    text, custom, template = _hover_data(have, {
        "status": "status", "origin": "origin", "generation": "generation", column: title,
        **(hover or {})})
    kind = _scatter(len(have))
    reference = have["reference"].to_numpy(dtype=bool)
    if color_by == "generation" and have["generation"].notna().any():
        keep = ~reference
        fig.add_trace(kind(x=have[x][keep], y=have[column][keep], mode="markers", name=title,
                           text=text[keep], customdata=custom[keep], hovertemplate=template,
                           marker={"color": have["generation"][keep], "colorscale": "Viridis",
                                   "showscale": True, "size": 7,
                                   "colorbar": {"title": "gen"}}))
    else:
        group = color_by if color_by in have else "origin"
        groups = have[group].fillna("").astype(str).to_numpy()
        for value in sorted(set(groups[~reference])):
            mask = (groups == value) & ~reference
            colour = STATUS_COLOURS.get(value) if group == "status" else None
            fig.add_trace(kind(x=have[x][mask], y=have[column][mask], mode="markers",
                               name=value or "—", text=text[mask], customdata=custom[mask],
                               hovertemplate=template,
                               marker={"size": 7, **({"color": colour} if colour else {})}))
    if reference.any():
        fig.add_trace(kind(x=have[x][reference], y=have[column][reference], mode="markers",
                           name="references", text=text[reference],
                           customdata=custom[reference], hovertemplate=template,
                           marker={"symbol": "diamond", "size": 11, "color": "#444444"}))
    return _layout(fig, f"Every candidate: {title}", log_y=log_y, x="candidate index",
                   y=title)


def fitness_by_generation(df: pd.DataFrame, column: str, title: str, *,
                          log_y: bool = False) -> go.Figure:
    """Per generation: a box of the values of its done search candidates and the line of
    each generation's best."""
    fig = go.Figure()
    have = df[(df["status"] == "done") & df["generation"].notna() & ~df["reference"]]
    have = have[have[column].notna()] if column in have else have.iloc[0:0]
    if not have.empty:
        fig.add_trace(go.Box(x=have["generation"].astype(int), y=have[column], name=title,
                             boxpoints="outliers", marker={"size": 4}))
        best = have.groupby(have["generation"].astype(int))[column].min()
        fig.add_trace(go.Scatter(x=best.index, y=best.to_numpy(), mode="lines+markers",
                                 name=f"best {title}"))
    return _layout(fig, "Fitness per generation", log_y=log_y, x="generation", y=title)


def value_histogram(df: pd.DataFrame, column: str, title: str, *, log_x: bool = False,
                    references: pd.DataFrame | None = None) -> go.Figure:
    """The distribution of a metric over done candidates, references as vertical lines."""
    have = df[(df["status"] == "done") & ~df["reference"]]
    values = have[column].dropna() if column in have else pd.Series(dtype=float)
    if log_x:
        values = values[values > 0].map(math.log10)
    fig = go.Figure(go.Histogram(x=values, nbinsx=40, name=title))
    for _, r in (references if references is not None else df.iloc[0:0]).iterrows():
        v = r.get(column)
        if v is None or pd.isna(v):
            continue
        fig.add_vline(x=math.log10(v) if log_x and v > 0 else v, line_dash="dash",
                      annotation_text=str(r["label"])[:30], annotation_position="top")
    return _layout(fig, f"Distribution of {title}", x=f"log10 {title}" if log_x else title,
                   y="candidates")


def timeline(df: pd.DataFrame, now: float, *, last: int = 2000) -> go.Figure:
    """Candidates per worker over time (started → finished, or now while running), coloured
    by status; failures carry their reason on hover. Only the ``last`` started ones."""
    started = df[df["started_at"].notna()].sort_values("started_at").tail(last)
    fig = go.Figure()
    for status in sorted(started["status"].unique()):
        sub = started[started["status"] == status]
        end = sub["finished_at"].fillna(now)
        start = pd.to_datetime(sub["started_at"], unit="s")
        width = ((end - sub["started_at"]).clip(lower=0.05) * 1000.0).to_numpy()
        fig.add_trace(go.Bar(
            x=width, base=start, y=sub["worker"].replace("", "—"), orientation="h",
            name=status, marker={"color": STATUS_COLOURS.get(status)},
            text="<b>" + sub["label"] + "</b><br>" + sub["error"],
            customdata=sub[["id", "seconds"]].to_numpy(dtype=float),
            hovertemplate="%{text}<br>id %{customdata[0]} · %{customdata[1]:.3g} s"
                          "<extra></extra>"))
    fig.update_xaxes(type="date")
    fig.update_layout(barmode="overlay")
    return _layout(fig, "Candidates per worker", height=max(220, 90 + 40 * max(
        1, started["worker"].nunique())), x="time", y="worker")


def metric_bars(df: pd.DataFrame, title: str, *, log_y: bool = False) -> go.Figure:
    """Grouped bars: one group per metric (column ``metric``), one bar per candidate
    (``candidate``, with ``id`` and ``value``); the dense references in grey, an ``stderr``
    column as error bars."""
    fig = go.Figure()
    for (cand, cid, dense), sub in df.groupby(["candidate", "id", "dense"], sort=False):
        err = sub["stderr"] if "stderr" in sub and sub["stderr"].notna().any() else None
        fig.add_trace(go.Bar(
            x=sub["metric"], y=sub["value"], name=str(cand),
            marker={"color": "#9e9e9e", "pattern": {"shape": "/"}} if dense else {},
            error_y={"type": "data", "array": err.fillna(0).to_numpy()} if err is not None
            else None,
            customdata=np.full((len(sub), 1), cid), text=sub["value"].map(value_text),
            textposition="outside",
            hovertemplate=f"<b>{cand}</b><br>%{{x}}: %{{y:.4g}}<extra></extra>"))
    fig.update_layout(barmode="group")
    positive = df["value"][df["value"] > 0] if len(df) else df["value"]
    if log_y and len(positive):  # log bars grow from the axis' bottom: keep the lowest visible
        fig.update_yaxes(range=[math.log10(positive.min() / 2), math.log10(positive.max() * 2)])
    return _layout(fig, title, log_y=log_y, height=420)


def sparsity_curves(df: pd.DataFrame, title: str, *, log_y: bool = False) -> go.Figure:
    """One line per ``group`` (method and pattern) of ``value`` over ``sparsity``; points
    carry ``id`` and ``label``."""
    fig = go.Figure()
    for group, sub in df.sort_values("sparsity").groupby("group", sort=True):
        fig.add_trace(go.Scatter(
            x=sub["sparsity"], y=sub["value"], mode="lines+markers", name=str(group),
            text=sub["label"], customdata=sub[["id"]].to_numpy(),
            hovertemplate="<b>%{text}</b><br>id %{customdata[0]}<br>sparsity %{x:.3f}"
                          "<br>%{y:.4g}<extra></extra>"))
    fig.update_xaxes(tickformat=".0%")
    return _layout(fig, f"{title} vs sparsity", log_y=log_y, x="sparsity", y=title)


def pareto_front(x: Sequence[float], y: Sequence[float]) -> list[int]:
    """Indices of the points no other point beats on both axes (lower is better on both),
    ordered by x."""
    order = sorted(range(len(x)), key=lambda i: (x[i], y[i]))
    front, best = [], math.inf
    for i in order:
        if y[i] < best:
            front.append(i)
            best = y[i]
    return front


def pareto_figure(df: pd.DataFrame, x_title: str, y_title: str, *, hover: Sequence[str] = (),
                  log_x: bool = False, log_y: bool = False) -> go.Figure:
    """Every candidate (``x``, ``y``, ``label``, ``id``, ``study``) and the Pareto front;
    hover shows every column named in ``hover``."""
    fig = go.Figure()
    have = df[df["x"].notna() & df["y"].notna()]
    text, custom, template = _hover_data(have, {"x": x_title, "y": y_title,
                                                **{c: c for c in hover}})
    for study, mask in ((s, (have["study"] == s).to_numpy()) for s in have["study"].unique()):
        sub = have[mask]
        fig.add_trace(go.Scatter(x=sub["x"], y=sub["y"], mode="markers", name=str(study),
                                 text=text[mask], customdata=custom[mask],
                                 hovertemplate=template, marker={"size": 9}))
    if len(have):
        front = pareto_front(have["x"].tolist(), have["y"].tolist())
        sub = have.iloc[front]
        fig.add_trace(go.Scatter(x=sub["x"], y=sub["y"], mode="lines", line_shape="hv",
                                 name="Pareto front", line={"dash": "dot", "color": "black"},
                                 hoverinfo="skip"))
    if log_x:
        fig.update_xaxes(type="log")
    return _layout(fig, f"Pareto front: {y_title} vs {x_title}", log_y=log_y, height=440,
                   x=x_title, y=y_title)


def ratio_heatmap(rows: Mapping[str, Sequence[float | None]], title: str = "Per-layer ratios"
                  ) -> go.Figure:
    """Rows (matrices / heads / channels, target and realised) × blocks, 0 → 1."""
    names = list(rows)
    width = max((len(v) for v in rows.values()), default=0)
    z = [[(v[i] if i < len(v) else None) for i in range(width)] for v in rows.values()]
    fig = go.Figure(go.Heatmap(
        z=z, x=[f"{i}" for i in range(width)], y=names, zmin=0.0, zmax=1.0,
        colorscale="Blues", colorbar={"title": "ratio"},
        hovertemplate="block %{x}<br>%{y}: %{z:.3f}<extra></extra>"))
    return _layout(fig, title, height=120 + 40 * len(names), x="block")


def predicted_vs_measured(df: pd.DataFrame, title: str, *, value: str = "value") -> go.Figure:
    """Predicted against measured (columns ``measured``, ``predicted``, ``round``, ``id``,
    ``label``), one trace per round, with the line y = x: points on it are predicted exactly."""
    fig = go.Figure()
    if len(df):
        lo = float(min(df["measured"].min(), df["predicted"].min()))
        hi = float(max(df["measured"].max(), df["predicted"].max()))
        fig.add_trace(go.Scatter(x=[lo, hi], y=[lo, hi], mode="lines", name="y = x",
                                 line={"dash": "dash", "color": "#888888"}, hoverinfo="skip"))
    for rnd, sub in df.groupby("round", sort=True):
        fig.add_trace(go.Scatter(
            x=sub["measured"], y=sub["predicted"], mode="markers", name=str(rnd),
            text=sub["label"], customdata=sub[["id"]].to_numpy(),
            hovertemplate="<b>%{text}</b><br>id %{customdata[0]}<br>measured %{x:.4g}"
                          "<br>predicted %{y:.4g}<extra></extra>", marker={"size": 8}))
    return _layout(fig, title, x=f"measured {value}", y=f"predicted {value}")


def fit_quality(df: pd.DataFrame, title: str) -> go.Figure:
    """Held-out fit quality over rounds (columns ``round``, ``target``, ``r2``, ``spearman``,
    ``kendall``): one line per target and statistic."""
    fig = go.Figure()
    for target, sub in df.groupby("target", sort=True):
        for stat, dash in (("kendall", "solid"), ("r2", "dot"), ("spearman", "dash")):
            if sub[stat].notna().any():
                fig.add_trace(go.Scatter(x=sub["round"], y=sub[stat], mode="lines+markers",
                                         name=f"{target} {stat}", line={"dash": dash}))
    fig.update_xaxes(dtick=1)
    return _layout(fig, title, x="round", y="held-out folds")


def importance_bars(importance: Mapping[str, float], title: str, *, top: int = 20,
                    x: str = "gain") -> go.Figure:
    """The ``top`` features by importance (``x``: what it is, the axis title), largest
    first."""
    items = sorted(importance.items(), key=lambda kv: -kv[1])[:top]
    fig = go.Figure(go.Bar(x=[v for _, v in items][::-1], y=[k for k, _ in items][::-1],
                           orientation="h", hovertemplate="%{y}: %{x:.4g}<extra></extra>"))
    return _layout(fig, title, height=max(260, 22 * len(items) + 80), x=x)
