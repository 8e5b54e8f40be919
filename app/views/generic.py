"""The views every study gets, whatever its kind: progress (best so far, every candidate),
the SQL-paged candidate table, and the timeline of candidates per worker with failures."""

from __future__ import annotations

import streamlit as st
from prunestudio.app import charts, nav
from prunestudio.app.data import (
    csv_bytes,
    load_events,
    load_failures,
    load_page,
    load_worker_summary,
    load_workers,
    reader,
)
from prunestudio.app.display import duration, stamp
from prunestudio.app.tables import (
    BASE_TABLE_COLUMNS,
    candidate_table,
    default_columns,
    metric_titles,
    worker_summary_table,
    workers_table,
)
from prunestudio.app.views.base import ANY_KIND, StudyContext, StudyView
from prunestudio.store.browse import BASE_SORTS

from prunestudio.schema import Worker
from prunestudio.schema.workers import running_until

__all__ = ["CandidatesView", "ProgressView", "TimelineView"]

PAGE_SIZES = (50, 100, 250, 1000)


def show_selection(event: object, ctx: StudyContext) -> None:
    """Links for the candidates picked in a chart (deep links to their pages)."""
    ids = charts.selected_ids(event)
    nav.selection_links(ids, ctx.labels(ids))


class ProgressView(StudyView):
    name, title, kinds, order = "progress", "Progress", (ANY_KIND,), 0

    def render(self, ctx: StudyContext) -> None:
        df = ctx.df
        if ctx.frame.df.empty:
            st.info("No candidates recorded yet.")
            return
        if df.empty:
            st.info("No candidate passes the filters (sidebar).")
            return
        lines = ctx.ppl_lines()
        if lines:
            fig = ctx.memo("best-so-far", lambda: charts.best_so_far(df, lines, log_y=ctx.log_y))
            event = st.plotly_chart(fig, key="best-so-far", on_select="rerun",
                                    selection_mode=("points",))
            show_selection(event, ctx)
        identities = ctx.identities
        if not identities:
            st.caption("No metrics recorded yet.")
            return
        keys = [i.key for i in identities]
        default = ctx.primary.key if ctx.primary is not None else keys[0]
        key = st.selectbox("Metric", keys, index=keys.index(default), key="scatter-metric",
                           format_func=lambda k: ctx.titles.get(k, k))
        hover = {k: ctx.titles[k] for k, _ in lines if k != key}
        hover.update({"seconds": "time s", "worker": "worker", "error": "error"})
        fig = ctx.memo("scatter", lambda: charts.candidate_scatter(
            df, key, ctx.titles.get(key, key), color_by=ctx.color_by, log_y=ctx.log_y,
            hover=hover), key)
        event = st.plotly_chart(fig, key="scatter", on_select="rerun",
                                selection_mode=("points", "box", "lasso"))
        drawn = int(df[key].notna().sum()) if key in df else 0
        st.caption(f"{drawn} candidates drawn; {len(df) - drawn} without this metric "
                   "(pending, running, failed or not measured). Click or lasso points to "
                   "open or compare them.")
        show_selection(event, ctx)


class CandidatesView(StudyView):
    name, title, kinds, order = "candidates", "Candidates", (ANY_KIND,), 10

    def render(self, ctx: StudyContext) -> None:
        identities = ctx.identities
        titles = metric_titles(identities)
        by_title = {t: i for i, t in zip(identities, titles.values(), strict=True)}
        options = [*BASE_TABLE_COLUMNS, *titles.values()]
        defaults = default_columns(identities, ctx.primary, ctx.study.is_search)
        columns = st.multiselect("Columns", options, default=defaults, key="table-columns")
        sorts = [*BASE_SORTS, *titles.values()]
        default_sort = titles.get(ctx.primary.key) if ctx.primary is not None else "idx"
        c1, c2, c3, c4 = st.columns([3, 1, 1, 1])
        sort_name = c1.selectbox("Sort by", sorts, index=sorts.index(default_sort or "idx"),
                                 key="table-sort")
        sort = by_title.get(sort_name, sort_name)
        descending = c2.toggle("Descending", value=False, key="table-desc")
        size = c3.selectbox("Rows per page", PAGE_SIZES, index=1, key="table-size")
        token = reader(ctx.path).study_token(ctx.study.id)
        asked = max(1, int(st.session_state.get("table-page") or 1))
        found, total = load_page(ctx.path, ctx.study.id, token, ctx.filters, sort, descending,
                                 (asked - 1) * size, size)
        pages = max(1, -(-total // size))
        if asked > pages:  # the filters shrank the table: back to its last page
            asked = pages
            found, total = load_page(ctx.path, ctx.study.id, token, ctx.filters, sort,
                                     descending, (asked - 1) * size, size)
            st.session_state["table-page"] = asked
        page = int(c4.number_input("Page", min_value=1, max_value=pages, step=1,
                                   key="table-page"))
        table = candidate_table(found, identities, columns or defaults)
        config = {t: st.column_config.NumberColumn(t, format="%.4g") for t in titles.values()}
        config["time s"] = st.column_config.NumberColumn("time s", format="%.1f")
        config["finished"] = st.column_config.DatetimeColumn("finished",
                                                             format="YYYY-MM-DD HH:mm:ss")
        event = st.dataframe(table, hide_index=True, key="candidates-table",
                             on_select="rerun", selection_mode="multi-row",
                             column_config=config)
        st.caption(f"Rows {min(total, (page - 1) * size + 1)}–{min(total, page * size)} of "
                   f"{total} passing the filters (page {page} of {pages}, read from the store "
                   "one page at a time).")
        rows = list(getattr(getattr(event, "selection", None), "rows", None) or [])
        ids = [found[i].id for i in rows if i < len(found)]
        nav.selection_links(ids, {c.id: c.label for c in found})
        st.download_button(
            "Download CSV (every row passing the filters)",
            data=lambda: csv_bytes(ctx.path, ctx.study.id, ctx.filters, sort, descending,
                                   list(columns or defaults)),
            file_name=f"{ctx.study.name}-candidates.csv", mime="text/csv", on_click="ignore",
            key="table-csv", icon=":material/download:")


class TimelineView(StudyView):
    name, title, kinds, order = "timeline", "Timeline", (ANY_KIND,), 90

    def render(self, ctx: StudyContext) -> None:
        df = ctx.df
        r = reader(ctx.path)
        token = r.study_token(ctx.study.id)
        workers = load_workers(ctx.path, ctx.study.id)  # not cached: liveness moves with time
        until = running_until(ctx.now, workers)  # a dead runner's candidates stopped then
        if df["started_at"].notna().any() if len(df) else False:
            fig = ctx.memo("timeline", lambda: charts.timeline(df, until), int(until // 10))
            event = st.plotly_chart(fig, key="timeline",
                                    on_select="rerun", selection_mode=("points",))
            show_selection(event, ctx)
        else:
            st.caption("No candidate has started yet.")
        failures = load_failures(ctx.path, ctx.study.id, token)
        st.subheader("Failures")
        if not failures:
            st.caption("No candidate failed.")
        else:
            st.dataframe(
                [{"reason": f["reason"], "candidates": f["n"], "first id": f["first_id"],
                  "workers": f["workers"] or ""} for f in failures],
                hide_index=True, key="failures-table")
            for f in failures[:5]:
                nav.link_candidate(int(f["first_id"]),
                                   f"First failure ({f['n']}×): {str(f['reason'])[:90]}",
                                   icon=":material/error:")
        render_workers(ctx, token, workers, until)
        events = load_events(ctx.path, ctx.study.id, r.token())
        st.subheader("Events")
        if not events:
            st.caption("No events.")
        else:
            st.dataframe([{"time": stamp(e.time), "level": e.level, "message": e.message,
                           "candidate": e.candidate_id} for e in events],
                         hide_index=True, key="events-table")


def render_workers(ctx: StudyContext, token: int | None, workers: list[Worker],
                   until: float) -> None:
    """Per worker: what it ran (one GROUP BY over the study, not the chart's last
    candidates) and its heartbeat row with its device, so every worker's GPU shows, wherever
    it runs. ``until``: up to when running candidates count (``running_until``)."""
    all_rows = ctx.frame.df
    running = bool(len(all_rows)) and bool((all_rows["status"] == "running").any())
    # `now` only matters while a candidate runs: a finished study is read once per change
    now = float(int(until // 10) * 10) if running else 0.0
    data = load_worker_summary(ctx.path, ctx.study.id, token, now)
    st.subheader("Per worker")
    if not data.summaries:
        st.caption("No worker has taken a candidate yet.")
    else:
        st.dataframe(worker_summary_table(data.summaries, data.span, workers),
                     hide_index=True, key="worker-summary-table", column_config={
                         "s / candidate": st.column_config.NumberColumn(format="%.1f"),
                         "busy %": st.column_config.NumberColumn(format="%.1f %%"),
                         "first start": st.column_config.DatetimeColumn(
                             format="YYYY-MM-DD HH:mm:ss"),
                         "last finish": st.column_config.DatetimeColumn(
                             format="YYYY-MM-DD HH:mm:ss")})
        n = len(data.summaries)
        busy = sum(s.busy_s for s in data.summaries)
        st.caption(f"{n} worker{'s' if n != 1 else ''} ran this study's candidates · "
                   f"{duration(busy) or '0s'} busy in all · busy % is the share of the "
                   "study's span (first start to last finish, or now) each worker ran a "
                   "candidate.")
    if workers:
        st.subheader("Workers")
        st.dataframe(workers_table(workers, ctx.now), hide_index=True, key="workers-table")
        live = sum(not w.stale for w in workers)
        st.caption(f"{len(workers)} worker row{'s' if len(workers) != 1 else ''} "
                   f"({live} live) · last heartbeat {stamp(max(w.heartbeat for w in workers))}"
                   " · each runs on the device shown (a Ray actor per GPU, on any node).")
