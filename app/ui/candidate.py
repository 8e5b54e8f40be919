"""Candidate page (``?candidate=ID``): label, spec, expression tree, per-layer ratio heatmap,
every metric with its protocol, parents, error with traceback, the export command."""

from __future__ import annotations

import streamlit as st
from prunestudio.app import charts, nav
from prunestudio.app.data import (
    load_artifacts,
    load_candidates,
    load_dense,
    load_study,
    reader,
)
from prunestudio.app.display import duration, export_command, layer_ratio_rows, stamp
from prunestudio.app.exprtree import expression_dot, render_tree
from prunestudio.app.tables import protocol_table

from prunestudio.schema import Candidate

__all__ = ["render"]


def _choose() -> int | None:
    st.title("Candidate")
    value = st.number_input("Candidate id", min_value=1, step=1, value=None,
                            key="candidate-id", placeholder="a candidate id (see a study)")
    if value is None:
        st.caption("Open a candidate from a study's charts or table, or type its id.")
        return None
    st.query_params["candidate"] = str(int(value))
    st.rerun()
    return int(value)


def _header(path: str, c: Candidate, study_name: str | None) -> None:
    st.subheader(f"{c.label} (reference)" if c.is_reference else c.label)
    bits = [f"#{c.idx} of study **{study_name or c.study_id}**", f"status **{c.status}**",
            f"origin {c.origin}"]
    if c.generation is not None:
        bits.append(f"generation {c.generation}")
    if c.worker:
        bits.append(f"worker {c.worker}")
    if c.seconds is not None:
        bits.append(f"took {duration(c.seconds)}")
    if c.finished_at:
        bits.append(f"finished {stamp(c.finished_at)}")
    st.markdown(" · ".join(bits))
    if c.equivalent_to is not None:
        st.info(f"Its mask equals candidate {c.equivalent_to}'s ({c.equivalence}): it reuses "
                "that candidate's fitness.")
        nav.link_candidate(c.equivalent_to, f"Open candidate {c.equivalent_to}")


def _parents(path: str, c: Candidate, token: int) -> None:
    if not c.parents:
        return
    st.subheader("Parents")
    parents = {p.id: p for p in load_candidates(path, tuple(c.parents), token)}
    for pid in c.parents:
        p = parents.get(pid)
        fit = p.fitness if p is not None else None
        text = f"id {pid}" + (f" · {p.label}" if p else " (not in this store)")
        if fit is not None:
            text += f" · {fit.identity.title} {fit.value:.4g}"
        nav.link_candidate(pid, text, icon=":material/account_tree:")


def render() -> None:
    path = nav.store_path()
    cid = nav.qp_int("candidate")
    if cid is None:
        cid = _choose()
        if cid is None:
            return
    token = reader(path).token()
    found = load_candidates(path, (cid,), token)
    if not found:
        st.title("Candidate")
        st.error(f"No candidate with id {cid} in this store.")
        return
    c = found[0]
    study = load_study(path, str(c.study_id), token)
    st.title(f"Candidate {c.id}")
    _header(path, c, study.name if study else None)
    cols = st.columns(3)
    with cols[0]:
        nav.link_study(c.study_id, f"Study {study.name if study else c.study_id}",
                       icon=":material/insights:")
    dense = load_dense(path, (c.study_id,), token).get(c.study_id)
    with cols[1]:
        if dense is not None and dense.id != c.id:
            nav.link_compare([c.id, dense.id], "Compare with dense",
                             icon=":material/compare_arrows:")

    if c.error:
        st.error(c.first_error_line or "failed")
        with st.expander("Error and traceback", expanded=True):
            st.code(c.error.rstrip(), language="text")

    st.subheader("Export")
    st.code(export_command(c.id, study.name if study else str(c.study_id), c.idx,
                           str(path)), language="bash")
    if c.status == "failed":
        st.caption("export refuses a failed candidate: it would re-prune it and fail again.")
    elif c.status != "done":
        st.caption(f"the candidate is {c.status}: export it once it is done.")

    if c.expression:
        st.subheader("Expression")
        st.code(c.expression, language="text")
        st.graphviz_chart(expression_dot(c.expression))
        with st.expander("As text"):
            st.code(render_tree(c.expression), language="text")

    rows = layer_ratio_rows(c.spec, c.info)
    if rows:
        st.subheader("Per-layer ratios")
        st.plotly_chart(charts.ratio_heatmap(rows, "Per-block ratios (rows: what is pruned, "
                                                   "target and realised)"),
                        key="candidate-heatmap")

    st.subheader(f"Metrics ({len(c.metrics)})")
    if c.metrics:
        table = protocol_table([c]).drop(columns=["id", "candidate"])
        st.dataframe(table, hide_index=True, key="candidate-metrics", column_config={
            "value": st.column_config.NumberColumn("value", format="%.5g"),
            "stderr": st.column_config.NumberColumn("stderr", format="%.4f")})
        with st.expander("Protocols (JSON)"):
            st.json([m.as_dict() for m in c.metrics], expanded=False)
    else:
        st.caption("No metrics recorded.")

    _parents(path, c, token)

    st.subheader("Spec")
    st.json(dict(c.spec), expanded=1)
    if c.timings:
        st.subheader("Timings")
        st.dataframe([{"phase": k, "seconds": v} for k, v in c.timings.items()],
                     hide_index=True, key="candidate-timings")
    if c.info:
        with st.expander("Info (as recorded)"):
            st.json(dict(c.info), expanded=False)
    artifacts = load_artifacts(path, c.id, token)
    if artifacts:
        st.subheader("Artifacts")
        st.dataframe([{"kind": a.kind, "path": a.path, "bytes": a.bytes,
                       "created": stamp(a.created_at)} for a in artifacts],
                     hide_index=True, key="candidate-artifacts")


if __name__ == "__main__":
    render()
