"""Studies page: every study of the store with kind, model, status, progress, best values,
compute time and last update; live while studies run; click through to a study or compare
the best candidates of several."""

from __future__ import annotations

import time

import streamlit as st
from prunestudio.app import nav
from prunestudio.app.data import load_studies, reader
from prunestudio.app.tables import studies_table

__all__ = ["render"]

STALE_BUCKET_S = 15


def _table(path: str) -> None:
    token = reader(path).token()
    now = time.time()
    data = load_studies(path, token, int(now // STALE_BUCKET_S))
    if not data.studies:
        st.info("No studies in this store yet. Run one with `prunestudio run` or "
                "`prunestudio prune`; it shows here as soon as it is recorded.")
        return
    df = studies_table(data.studies, data.best, data.best_acc, data.overview, now)
    running = sum(s.live for s in data.studies)
    cols = st.columns(4)
    cols[0].metric("Studies", len(data.studies))
    cols[1].metric("Running", running)
    cols[2].metric("Candidates", int(df["candidates"].sum()))
    cols[3].metric("Failed candidates", int(df["failed"].sum()))
    event = st.dataframe(
        df, hide_index=True, width="stretch", key="studies-table",
        on_select="rerun", selection_mode="multi-row",
        column_order=["id", "study", "kind", "status", "progress", "done", "best",
                      "best metric", "held-out", "held-out metric", "accuracy",
                      "accuracy metric", "failed", "compute", "elapsed", "last update",
                      "model", "open"],
        column_config={
            "progress": st.column_config.ProgressColumn("progress", min_value=0.0,
                                                        max_value=1.0, format="percent"),
            "best": st.column_config.NumberColumn("best", format="%.4g",
                                                  help="best value of the study's primary "
                                                       "role (references excluded)"),
            "held-out": st.column_config.NumberColumn(
                "best held-out", format="%.4g",
                help="best value of the first evaluation set, when the study is ranked by "
                     "another role (a search's finalists)"),
            "accuracy": st.column_config.NumberColumn("best accuracy", format="%.3f"),
            "last update": st.column_config.DatetimeColumn("last update",
                                                           format="YYYY-MM-DD HH:mm:ss"),
            "open": st.column_config.LinkColumn("open", display_text="open ↗"),
        })
    rows = list(getattr(getattr(event, "selection", None), "rows", None) or [])
    picked = df.iloc[rows] if rows else df.iloc[0:0]
    if picked.empty:
        st.caption("Select rows to open a study or to compare their best candidates.")
    else:
        cols = st.columns([3, 2])
        with cols[0]:
            for _, r in picked.head(8).iterrows():
                nav.link_study(int(r["id"]), f"Open study {r['study']}",
                               icon=":material/insights:")
        with cols[1]:
            best = [int(x) for x in picked["best id"].dropna()]
            if best:
                nav.link_compare(best, f"Compare the best of {len(best)} "
                                 f"stud{'y' if len(best) == 1 else 'ies'}",
                                 icon=":material/compare_arrows:")
    with st.expander("Open a study", expanded=False):
        for _, r in df.head(50).iterrows():
            nav.link_study(int(r["id"]), f"{r['study']} · {r['kind']} · {r['status']}")


def render() -> None:
    path = nav.store_path()
    st.title("Studies")
    token = reader(path).token()
    data = load_studies(path, token, int(time.time() // STALE_BUCKET_S))
    interval = nav.live_interval(any(s.live or s.status == "created"
                                      for s in data.studies))
    nav.run_live(lambda: _table(path), interval)


if __name__ == "__main__":
    render()
