"""View of a grid study (kind ``grid``): every method × pattern × sparsity against dense, and
perplexity vs sparsity curves per method and pattern."""

from __future__ import annotations

import pandas as pd
import streamlit as st
from prunestudio.app import charts
from prunestudio.app.views.base import StudyContext, StudyView

__all__ = ["MethodsView", "dense_ratios"]

MAX_ROWS = 300


def dense_ratios(df: pd.DataFrame, columns: list[tuple[str, str]]) -> pd.DataFrame:
    """One row per done candidate (best primary first): label, method, pattern, target
    sparsity and, per ``(column, title)``, the value and its ratio to the study's dense model
    (``×dense``)."""
    done = df[df["status"] == "done"]
    dense = done[done["dense"]]
    out = pd.DataFrame({"id": done["id"], "candidate": done["label"], "method": done["method"],
                        "pattern": done["pattern"], "target": done["target"]})
    for col, title in columns:
        if col not in done:
            continue
        out[title] = done[col]
        base = dense[col].dropna()
        if len(base):
            out[f"{title} ×dense"] = done[col] / float(base.iloc[0])
    if columns and columns[0][1] in out:
        out = out.sort_values(columns[0][1], na_position="last")
    return out


class MethodsView(StudyView):
    name, title, kinds, order = "methods", "Methods", ("grid",), 20

    def applies(self, ctx: StudyContext) -> bool:
        df = ctx.frame.df
        return bool(len(df)) and bool((~df["method"].str.startswith(("structured",
                                                                      "dense"))).any())

    def render(self, ctx: StudyContext) -> None:
        lines = ctx.ppl_lines()
        table = dense_ratios(ctx.df, lines)
        config = {c: st.column_config.NumberColumn(c, format="%.4g") for c in table.columns
                  if c not in ("id", "candidate", "method", "pattern")}
        config["target"] = st.column_config.NumberColumn("target", format="%.2f")
        st.dataframe(table.head(MAX_ROWS), hide_index=True, key="methods-table",
                     column_config=config)
        if not lines:
            return
        keys = [k for k, _ in lines]
        key = st.selectbox("Curve metric", keys, key="methods-metric",
                           format_func=lambda k: ctx.titles.get(k, k))
        done = ctx.df[(ctx.df["status"] == "done") & ~ctx.df["dense"] & ctx.df[key].notna()]
        points = pd.DataFrame({
            "group": done["method"] + " · " + done["pattern"], "sparsity": done["target"],
            "value": done[key], "label": done["label"], "id": done["id"]})
        st.plotly_chart(charts.sparsity_curves(points, ctx.titles.get(key, key),
                                               log_y=ctx.log_y), key="methods-curves")
        st.caption("x: each candidate's target sparsity (spec); the Compare page plots the "
                   "realised sparsity.")
