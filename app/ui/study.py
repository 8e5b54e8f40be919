"""Study page (``?study=ID`` or name): the study's header, filters that apply to every chart
and table, and its views — the generic ones and those its kind registered (see
:mod:`prunestudio.app.views`)."""

from __future__ import annotations

import time

import streamlit as st
from prunestudio.app import PAGE_SCRIPTS, nav
from prunestudio.app.data import load_studies, load_study, reader, study_frame
from prunestudio.app.display import duration, value_text
from prunestudio.app.tables import best_by_study, filter_frame, metric_titles
from prunestudio.app.views import StudyContext, views_for
from prunestudio.store.browse import CandidateFilter

from prunestudio.schema import CANDIDATE_STATUSES, Study

__all__ = ["render"]

COLOR_BY = ("origin", "status", "generation")


def _choose_study(path: str) -> str | None:
    data = load_studies(path, reader(path).token(), int(time.time() // 15))
    if not data.studies:
        st.info("No studies in this store yet.")
        return None
    names = {str(s.id): f"{s.name} ({s.kind}, {s.shown_status})" for s in data.studies}
    choice = st.selectbox("Study", list(names), index=None, format_func=names.__getitem__,
                          placeholder="choose a study", key="study-choice")
    if choice is not None:
        st.query_params["study"] = choice
        st.rerun()
    return choice


def _filters(study: Study, frame_df: object, primary_key: str | None,
             identities: dict) -> tuple[CandidateFilter, bool, str]:
    """The sidebar: filters for every chart and table, log-y, colour."""
    import pandas as pd

    df: pd.DataFrame = frame_df  # type: ignore[assignment]
    side = st.sidebar
    side.subheader("Filters")
    statuses = side.multiselect("Status", list(CANDIDATE_STATUSES), key="f-status",
                                placeholder="all")
    origins_found = sorted(df["origin"].dropna().unique()) if len(df) else []
    origins = side.multiselect("Origin", origins_found, key="f-origin", placeholder="all")
    generations: tuple[int | None, ...] | None = None
    gens = df["generation"].dropna() if len(df) else []
    if len(gens):
        lo, hi = int(gens.min()), int(gens.max())
        if hi > lo:
            picked = side.slider("Generations", lo, hi, (lo, hi), key="f-gen")
            if picked != (lo, hi):
                generations = (*range(picked[0], picked[1] + 1), None)
    top = side.slider("Top k % (by the primary metric)", 1, 100, 100, key="f-top",
                      help="keep the best k % of the candidates that have the primary metric")
    references = side.toggle("Show dense and baselines", value=True, key="f-refs")
    side.subheader("Display")
    log_y = side.toggle("Log y axis", value=False, key="log-y")
    color_by = side.radio("Colour points by", COLOR_BY, key="color-by", horizontal=True)
    primary = identities.get(primary_key) if primary_key else None
    f = CandidateFilter(
        statuses=tuple(statuses) or None, origins=tuple(origins) or None,
        generations=generations, top_metric=primary if top < 100 else None,
        top_percent=float(top) if top < 100 and primary is not None else None,
        references=references)
    return f, log_y, color_by


def _header(path: str, study: Study) -> None:
    data = load_studies(path, reader(path).token(), int(time.time() // 15))
    record = next((s for s in data.studies if s.id == study.id), study)
    counts = record.counts
    bits = [f"kind **{record.kind}**", f"model `{record.model}`",
            f"status **{record.shown_status}**"]
    if record.seed is not None:
        bits.append(f"seed {record.seed}")
    if record.host:
        bits.append(f"host {record.host}")
    st.markdown(" · ".join(bits))
    if record.error:
        st.error(f"Study error: {record.error}")
    if record.cancel_requested and record.active:
        st.warning(f"Cancel requested: {record.cancel_requested}")
    total = record.budget or (counts.total if counts else 0)
    used = counts.budget_used if counts else 0
    if total:
        st.progress(min(1.0, used / total), text=f"{used} of {total} "
                    f"{'real evaluations' if record.is_search else 'candidates'}")
    best = best_by_study(list(data.best.get(study.id, ())), record.primary_role)
    cols = st.columns(6)
    cols[0].metric("Candidates", counts.total if counts else 0)
    cols[1].metric("Done", counts.done if counts else 0)
    cols[2].metric("Failed", counts.failed if counts else 0)
    cols[3].metric("Running / pending",
                   f"{counts.running if counts else 0} / {counts.pending if counts else 0}")
    cols[4].metric(f"Best {best[0].title}" if best else "Best", value_text(best[1]["value"])
                   if best else "—")
    cols[5].metric("Elapsed", duration(record.elapsed(time.time())) or "—")
    if best:
        nav.link_candidate(int(best[1]["candidate_id"]),
                           f"Best candidate: id {best[1]['candidate_id']}",
                           icon=":material/emoji_events:")


def _body(path: str, study_id: int, f: CandidateFilter, log_y: bool, color_by: str) -> None:
    r = reader(path)
    study = load_study(path, str(study_id), r.token())
    if study is None:
        st.error(f"Study {study_id} is gone from the store.")
        return
    frame = study_frame(path, study_id)
    identities = list(frame.identities.values())
    primary = study.primary_metric(identities)
    _header(path, study)
    df = frame.memo(("filtered", f), lambda: filter_frame(frame.df, f))
    ctx = StudyContext(path=path, study=study, frame=frame, df=df, filters=f, primary=primary,
                       titles=metric_titles(identities), log_y=log_y, color_by=color_by)
    views = views_for(ctx)
    st.caption(f"{len(df)} of {len(frame.df)} candidates pass the filters · views: "
               + ", ".join(v.title for v in views))
    for view, tab in zip(views, st.tabs([v.title for v in views]), strict=True):
        with tab:
            try:
                view.render(ctx)
            except Exception as exc:  # one broken view must not hide the others
                st.error(f"The {view.title} view failed: {type(exc).__name__}: {exc}")


def render() -> None:
    path = nav.store_path()
    key = nav.qp_text("study")
    if key is None:
        st.title("Study")
        key = _choose_study(path)
        if key is None:
            return
    study = load_study(path, key, reader(path).token())
    if study is None:
        st.title("Study")
        st.error(f"No study {key!r} in this store.")
        st.page_link(PAGE_SCRIPTS["studies"], label="All studies", icon=":material/table_rows:")
        return
    st.title(f"Study {study.name}")
    frame = study_frame(path, study.id)
    primary = study.primary_metric(list(frame.identities.values()))
    f, log_y, color_by = _filters(study, frame.df, primary.key if primary else None,
                                  frame.identities)
    listed = load_studies(path, reader(path).token(), int(time.time() // 15)).studies
    record = next((s for s in listed if s.id == study.id), study)  # with its liveness
    interval = nav.live_interval(record.live or record.status == "created")
    nav.run_live(lambda: _body(path, study.id, f, log_y, color_by), interval)


if __name__ == "__main__":
    render()
