"""View of a random search (kind ``random``): the distribution of its fitness against the
baselines, and when its best was found."""

from __future__ import annotations

import streamlit as st
from prunestudio.app import charts
from prunestudio.app.display import value_text
from prunestudio.app.views.base import StudyContext, StudyView

__all__ = ["DistributionView"]


class DistributionView(StudyView):
    name, title, kinds, order = "distribution", "Distribution", ("random",), 20

    def render(self, ctx: StudyContext) -> None:
        key = ctx.primary.key if ctx.primary is not None else None
        if key is None or key not in ctx.df:
            st.info("No fitness recorded yet.")
            return
        df = ctx.df
        log_x = st.toggle("Log scale", value=True, key="distribution-log")
        refs = df[df["reference"] & df[key].notna()]
        st.plotly_chart(charts.value_histogram(df, key, ctx.title(ctx.primary), log_x=log_x,
                                               references=refs), key="distribution-chart")
        done = df[(df["status"] == "done") & ~df["reference"] & df[key].notna()]
        if done.empty:
            return
        best = done.sort_values([key, "idx"], ascending=[ctx.primary.lower_is_better, True])
        row = best.iloc[0]
        position = int((done["idx"] <= row["idx"]).sum())
        st.markdown(f"Best **{value_text(row[key])}** ({row['label']}) found at evaluation "
                    f"**{position}** of {len(done)}.")
        for _, r in refs.iterrows():
            better = int((done[key] < r[key]).sum() if ctx.primary.lower_is_better
                         else (done[key] > r[key]).sum())
            st.markdown(f"- {better} of {len(done)} candidates beat the baseline "
                        f"{r['label']} ({value_text(r[key])})")
