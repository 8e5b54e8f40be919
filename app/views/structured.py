"""View of a grid of structured candidates (heads, KV groups, MLP channels removed): the
per-block ratios of the best candidates side by side, and size against perplexity."""

from __future__ import annotations

import pandas as pd
import streamlit as st
from prunestudio.app import charts, nav
from prunestudio.app.data import load_candidates, reader
from prunestudio.app.display import layer_ratio_rows, value_text
from prunestudio.app.views.base import StudyContext, StudyView

__all__ = ["StructureView"]

SHOWN = 15


class StructureView(StudyView):
    name, title, kinds, order = "structure", "Structure", ("grid",), 25

    def applies(self, ctx: StudyContext) -> bool:
        df = ctx.frame.df
        return bool(len(df)) and bool(df["method"].str.startswith("structured").any())

    def render(self, ctx: StudyContext) -> None:
        df = ctx.df
        structured = df[df["method"].str.startswith("structured") & (df["status"] == "done")]
        if structured.empty:
            st.info("No finished structured candidate passes the filters.")
            return
        key = ctx.primary.key if ctx.primary is not None else None
        if key in structured:
            structured = structured.sort_values([key, "idx"], na_position="last")
        top = structured.head(SHOWN)
        token = reader(ctx.path).study_token(ctx.study.id)
        records = load_candidates(ctx.path, tuple(int(i) for i in top["id"]), token or 0)
        rows = {c.id: layer_ratio_rows(c.spec, c.info) for c in records}
        kinds = sorted({k for r in rows.values() for k in r})
        if kinds:
            kind = st.radio("Ratios", kinds, horizontal=True, key="structure-kind")
            heat = {}
            for c in records:
                values = rows[c.id].get(kind)
                if values is None:
                    continue
                m = c.metric(ctx.primary) if ctx.primary is not None else None
                heat[f"id {c.id} · {value_text(m.value) if m else '—'}"] = values
            st.plotly_chart(charts.ratio_heatmap(heat, f"{kind} per block (best "
                                                       f"{len(heat)} first)"),
                            key="structure-heatmap")
        params = next((i for i in ctx.identities if i.name == "params"), None)
        if params is not None and key is not None:
            points = pd.DataFrame({"x": df[params.key], "y": df[key], "label": df["label"],
                                   "id": df["id"], "study": ctx.study.name,
                                   "status": df["status"]})
            event = st.plotly_chart(
                charts.pareto_figure(points, ctx.title(params), ctx.title(ctx.primary),
                                     hover=("status",), log_y=ctx.log_y),
                key="structure-pareto", on_select="rerun", selection_mode=("points", "box"))
            ids = charts.selected_ids(event)
            nav.selection_links(ids, ctx.labels(ids))
