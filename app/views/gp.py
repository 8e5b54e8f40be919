"""Views of a genetic-programming search (kind ``gp``, Pruner-Zero): the lineage of its best
metric (the parents tree) and the fitness per generation."""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import pandas as pd
import streamlit as st
from prunestudio.app import charts, nav
from prunestudio.app.data import load_lineage, reader
from prunestudio.app.display import value_text
from prunestudio.app.views.base import StudyContext, StudyView

from prunestudio.schema import Candidate, MetricIdentity

__all__ = ["GenerationsView", "LineageView", "generation_table", "lineage_dot"]

_ORIGIN_COLOURS = {"random": "#c6dbef", "mutation": "#fdd0a2", "crossover": "#d9f0a3",
                   "baseline": "#e0e0e0"}


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', "'")


def lineage_dot(records: Sequence[Candidate], distance: Mapping[int, int], root: int,
                metric: MetricIdentity | None, title: str = "") -> str:
    """Graphviz DOT of a candidate's ancestry: one node per candidate (index, generation,
    origin, expression, ``metric``), an edge from each parent to its child; the root bold."""
    known = {c.id: c for c in records}
    lines = ["digraph lineage {", "  rankdir=BT;",
             '  node [shape=box, style="rounded,filled", fontname="Helvetica", fontsize=10];']
    for c in records:
        m = c.metric(metric) if metric is not None else None
        what = c.expression or c.label
        text = (f"#{c.idx} (id {c.id}) · gen {'' if c.generation is None else c.generation}"
                f" · {c.origin}\\n{_quote(what)}")
        if m is not None:
            text += f"\\n{_quote(title or metric.title)} {value_text(m.value)}"
        elif c.status != "done":
            text += f"\\n({c.status})"
        colour = _ORIGIN_COLOURS.get(c.origin, "#ffffff")
        extra = ", penwidth=3" if c.id == root else ""
        lines.append(f'  c{c.id} [label="{text}", fillcolor="{colour}"{extra}];')
    for c in records:
        for p in c.parents or ():
            if p in known and distance.get(p, 99) > distance.get(c.id, 0):
                lines.append(f"  c{p} -> c{c.id};")
    lines.append("}")
    return "\n".join(lines)


def generation_table(df: pd.DataFrame, column: str | None) -> pd.DataFrame:
    """Per generation: candidates, done, failed, skipped, the best and median value of
    ``column`` (done, non-reference candidates) and the origins (vectorised: one groupby)."""
    have = df[df["generation"].notna()]
    columns = ["generation", "candidates", "done", "failed", "skipped", "best", "median",
               "origins"]
    if have.empty:
        return pd.DataFrame(columns=columns)
    gen = have["generation"].astype(int)
    status = pd.crosstab(gen, have["status"])
    out = pd.DataFrame({"candidates": gen.value_counts().sort_index()})
    for s in ("done", "failed", "skipped"):
        out[s] = status[s] if s in status else 0
    scored = have[(have["status"] == "done") & ~have["reference"].astype(bool)]
    if column and column in scored:
        by = scored.groupby(scored["generation"].astype(int))[column]
        out["best"], out["median"] = by.min(), by.median()
    else:
        out["best"] = out["median"] = float("nan")
    origins = pd.crosstab(gen, have["origin"])
    out["origins"] = [", ".join(f"{k} {int(v)}" for k, v in row.items() if v)
                      for _, row in origins.iterrows()]
    out = out.reset_index(names="generation")
    return out[columns]


class LineageView(StudyView):
    name, title, kinds, order = "lineage", "Lineage", ("gp",), 20

    def render(self, ctx: StudyContext) -> None:
        key = ctx.primary.key if ctx.primary is not None else None
        df = ctx.df
        if key is None or key not in df:
            st.info("No fitness recorded yet: the lineage shows once candidates are scored.")
            return
        done = df[(df["status"] == "done") & ~df["reference"] & df[key].notna()]
        if done.empty:
            st.info("No scored search candidate passes the filters.")
            return
        best = done.sort_values([key, "idx"], ascending=[ctx.primary.lower_is_better, True])
        top = best.head(30)
        options = [int(i) for i in top["id"]]
        labels = dict(zip(top["id"].astype(int), top["label"], strict=True))
        values = dict(zip(top["id"].astype(int), top[key], strict=True))
        chosen = st.selectbox(
            "Lineage of", options, index=0, key="lineage-of",
            format_func=lambda i: f"id {i} · {ctx.title(ctx.primary)} {value_text(values[i])}"
                                  f" · {labels[i]}")
        depth = st.slider("Generations back", 1, 12, 6, key="lineage-depth")
        token = reader(ctx.path).study_token(ctx.study.id)
        found, records = load_lineage(ctx.path, int(chosen), token, depth)
        distance = dict(found)
        st.graphviz_chart(lineage_dot(records, distance, int(chosen), ctx.primary,
                                      ctx.title(ctx.primary)), width="stretch")
        st.caption(f"{len(records)} candidates: the chosen one (bold) and its ancestors up to "
                   f"{depth} generations back; arrows go from parent to child.")
        table = pd.DataFrame([{
            "id": c.id, "#": c.idx, "steps back": distance.get(c.id), "gen": c.generation,
            "origin": c.origin, "status": c.status, "candidate": c.label,
            "parents": ", ".join(map(str, c.parents or ())),
            ctx.title(ctx.primary): (m.value if (m := c.metric(ctx.primary)) else None),
        } for c in records])
        st.dataframe(table, hide_index=True, key="lineage-table")
        for c in records[:6]:
            nav.link_candidate(c.id, f"Open id {c.id}: {c.label}", icon=":material/science:")


class GenerationsView(StudyView):
    name, title, kinds, order = "generations", "Generations", ("gp",), 30

    def render(self, ctx: StudyContext) -> None:
        key = ctx.primary.key if ctx.primary is not None else None
        if key is None or key not in ctx.df:
            st.info("No fitness recorded yet.")
            return
        fig = ctx.memo("generations", lambda: charts.fitness_by_generation(
            ctx.df, key, ctx.title(ctx.primary), log_y=ctx.log_y))
        st.plotly_chart(fig, key="generations-chart")
        table = ctx.memo("generation-table", lambda: generation_table(ctx.df, key))
        st.dataframe(table, hide_index=True, key="generations-table", column_config={
            "best": st.column_config.NumberColumn("best", format="%.4g"),
            "median": st.column_config.NumberColumn("median", format="%.4g")})
