"""Compare page (``?compare=1,2,3``): any set of candidates across studies — perplexity per
role and accuracy per task against dense, perplexity vs sparsity per method and pattern, the
Pareto front of a cost (parameters, latency, MACs) vs perplexity, and every number's
protocol."""

from __future__ import annotations

import time

import streamlit as st
from prunestudio.app import charts, nav
from prunestudio.app.comparison import axis_identities, bar_rows, points, titles_of
from prunestudio.app.data import (
    FrameSnapshot,
    load_candidates,
    load_dense,
    load_studies,
    load_study,
    reader,
    study_frame,
)
from prunestudio.app.display import value_text
from prunestudio.app.tables import protocol_table

__all__ = ["render"]

SUGGESTED = 25  # best candidates offered per study
EVERY_MAX = 1000  # candidates drawn when "every candidate of these studies" is on


def _chooser(path: str, ids: list[int], names: dict[int, str]) -> None:
    """Pick candidates: ids typed in, or the best of chosen studies; the URL follows."""
    with st.expander("Choose candidates", expanded=not ids):
        typed = st.text_input("Candidate ids", value=",".join(map(str, ids)),
                              key="compare-ids", placeholder="e.g. 3, 17, 42")
        picked_studies = st.multiselect("Add from studies", list(names), key="compare-studies",
                                        format_func=names.__getitem__)
        added: list[int] = []
        for sid in picked_studies:
            frame = study_frame(path, sid)
            df = frame.df
            done = df[(df["status"] == "done")]
            key = _primary_key(path, sid, frame)
            if key is not None and key in done:
                done = done.sort_values([key, "idx"], na_position="last")
            top = done.head(SUGGESTED)
            labels = {int(r["id"]): f"id {int(r['id'])} · {r['label']}"
                      + (f" · {value_text(r[key])}" if key and key in r else "")
                      for _, r in top.iterrows()}
            added += st.multiselect(f"Best of {names[sid]}", list(labels), key=f"compare-{sid}",
                                    format_func=labels.__getitem__)
        if st.button("Compare", key="compare-go", type="primary"):
            chosen = nav.parse_ids(typed) + [i for i in added if i not in nav.parse_ids(typed)]
            st.query_params["compare"] = ",".join(map(str, chosen))
            st.rerun()


def _primary_key(path: str, study_id: int, frame: FrameSnapshot) -> str | None:
    study = load_study(path, str(study_id), reader(path).token())
    if study is None:
        return None
    identity = study.primary_metric(list(frame.identities.values()))
    return identity.key if identity is not None else None


def render() -> None:
    path = nav.store_path()
    st.title("Compare")
    token = reader(path).token()
    data = load_studies(path, token, int(time.time() // 15))
    names = {s.id: s.name for s in data.studies}
    ids = nav.qp_ids("compare")
    _chooser(path, ids, names)
    if not ids:
        st.info("Choose candidates above, select points on a study's charts, or open a link "
                "such as `?compare=3,17,42`.")
        return
    records = load_candidates(path, tuple(ids), token)
    missing = [i for i in ids if i not in {c.id for c in records}]
    if missing:
        st.warning(f"Not in this store: {', '.join(map(str, missing))}")
    if not records:
        return
    study_ids = tuple(dict.fromkeys(c.study_id for c in records))
    dense = load_dense(path, study_ids, token)
    log_y = st.sidebar.toggle("Log y axis", value=False, key="compare-log-y")
    every = st.sidebar.toggle("Every candidate of these studies (curves, Pareto)", value=False,
                              key="compare-every")

    st.caption(f"{len(records)} candidates from {len(study_ids)} "
               f"stud{'y' if len(study_ids) == 1 else 'ies'}: "
               + ", ".join(names.get(s, str(s)) for s in study_ids))
    cols = st.columns(min(4, len(records)))
    for i, c in enumerate(records[:8]):
        with cols[i % len(cols)]:
            nav.link_candidate(c.id, f"id {c.id} · {c.label}", icon=":material/science:")

    titles = titles_of([*records, *dense.values()])
    st.subheader("Perplexity against dense")
    bars = bar_rows(records, dense, titles, tasks=False, studies=names)
    if bars.empty:
        st.caption("No perplexity recorded for these candidates.")
    else:
        st.plotly_chart(charts.metric_bars(bars, "Perplexity per evaluation set",
                                           log_y=log_y), key="compare-ppl")
    st.subheader("Accuracy against dense")
    acc = bar_rows(records, dense, titles, tasks=True, studies=names)
    if acc.empty:
        st.caption("No task accuracy recorded for these candidates "
                   "(`prunestudio eval ID --tasks offline` adds one).")
    else:
        st.plotly_chart(charts.metric_bars(acc, "Accuracy per task (error bars: stderr)"),
                        key="compare-acc")

    pool = list(records)
    if every:
        extra: list[int] = []
        for sid in study_ids:
            df = study_frame(path, sid).df
            extra += [int(i) for i in df.loc[df["status"] == "done", "id"]]
        pool = load_candidates(path, tuple(dict.fromkeys([*ids, *extra]))[:EVERY_MAX], token)
    pool_titles = titles_of(pool)
    ppl_ids, cost_ids = axis_identities(pool)
    if not ppl_ids:
        st.caption("No perplexity to draw curves of.")
    else:
        y = st.selectbox("Perplexity", ppl_ids, key="compare-y",
                         format_func=lambda i: pool_titles.get(i, i.title))
        st.subheader("Perplexity vs sparsity")
        curve = points(pool, y, titles=pool_titles, studies=names)
        curve = curve[curve["y"].notna() & curve["sparsity"].notna()].rename(
            columns={"y": "value"})
        st.plotly_chart(charts.sparsity_curves(curve, pool_titles.get(y, y.title),
                                               log_y=log_y), key="compare-curves")
        st.subheader("Pareto front")
        if not cost_ids:
            st.caption("No cost metric (params, latency, MACs) recorded for these candidates.")
        else:
            default = next((i for i, c in enumerate(cost_ids) if c.name == "params"), 0)
            x = st.selectbox("Cost", cost_ids, index=default, key="compare-x",
                             format_func=lambda i: pool_titles.get(i, i.title))
            log_x = st.toggle("Log x axis", value=False, key="compare-log-x")
            front = points(pool, y, x, pool_titles, names)
            hover = [c for c in front.columns if c not in ("id", "label", "x", "y")]
            event = st.plotly_chart(
                charts.pareto_figure(front, pool_titles.get(x, x.title),
                                     pool_titles.get(y, y.title), hover=hover, log_x=log_x,
                                     log_y=log_y),
                key="compare-pareto", on_select="rerun", selection_mode=("points", "box"))
            picked = charts.selected_ids(event)
            nav.selection_links(picked, {c.id: c.label for c in pool})

    st.subheader("Protocols")
    table = protocol_table([*records, *(d for d in dense.values()
                                        if d.id not in {c.id for c in records})])
    st.dataframe(table, hide_index=True, key="compare-protocols", column_config={
        "value": st.column_config.NumberColumn("value", format="%.5g"),
        "stderr": st.column_config.NumberColumn("stderr", format="%.4f")})
    st.download_button("Download CSV", data=table.to_csv(index=False).encode(),
                       file_name="comparison.csv", mime="text/csv", on_click="ignore",
                       key="compare-csv")


if __name__ == "__main__":
    render()
