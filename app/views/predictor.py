"""View of an accuracy-predictor search (kind ``predictor``): how well each round's LightGBM
predictor ranks architectures it did not train on, what it found important, how the space
narrowed, and how its final picks measured up. Reads the fits the study recorded
(``store.browse.predictor_fits``); the app never predicts."""

from __future__ import annotations

import pandas as pd
import streamlit as st
from prunestudio.app import charts
from prunestudio.app.data import load_predictor_fits, reader
from prunestudio.app.display import value_text
from prunestudio.app.views.base import StudyContext, StudyView

__all__ = ["PredictorView"]

TARGETS = {"log_ppl": "log PPL (search split)", "accuracy": "accuracy"}


def _fits_frame(fits: list[dict], labels: dict[int, str]) -> tuple[pd.DataFrame, pd.DataFrame]:
    """(out-of-fold predictions per candidate and round, fit quality per round and target)."""
    points, quality = [], []
    for f in fits:
        p = f["payload"]
        if f["target"] not in TARGETS:
            continue
        quality.append({"round": f["round"], "target": f["target"], "n_train": f["n_train"],
                        "r2": p.get("r2"), "spearman": p.get("spearman"),
                        "kendall": p.get("kendall")})
        for cid, pred, meas in zip(p.get("candidate_ids") or [], p.get("oof") or [],
                                   p.get("measured") or [], strict=False):
            points.append({"round": f["round"], "target": f["target"], "id": int(cid),
                           "label": labels.get(int(cid), f"#{cid}"), "predicted": pred,
                           "measured": meas})
    return pd.DataFrame(points), pd.DataFrame(quality)


def _selection_frame(fits: list[dict], labels: dict[int, str]) -> pd.DataFrame:
    rows = []
    for f in fits:
        if f["target"] != "selection":
            continue
        for r in f["payload"].get("top_k") or []:
            if r.get("predicted_log_ppl") is None or r.get("measured_log_ppl") is None:
                continue
            rows.append({"round": "selection", "id": int(r["id"]),
                         "label": labels.get(int(r["id"]), f"#{r['id']}"),
                         "predicted": r["predicted_log_ppl"], "measured": r["measured_log_ppl"]})
    return pd.DataFrame(rows)


def _ranges(fits: list[dict]) -> pd.DataFrame:
    rows = []
    for f in fits:
        if f["target"] != "log_ppl":
            continue
        for ch in f["payload"].get("narrowed") or []:
            rows.append({"round": f["round"], "feature": ch.get("feature"),
                         "gain": ch.get("gain"), "before": str(ch.get("before")),
                         "after": str(ch["after"]) if "after" in ch else "",
                         "note": ch.get("skipped", "")})
    return pd.DataFrame(rows)


class PredictorView(StudyView):
    name, title, kinds, order = "predictor", "Predictor", ("predictor",), 15

    def render(self, ctx: StudyContext) -> None:
        fits = load_predictor_fits(ctx.path, ctx.study.id, reader(ctx.path).token())
        if not fits:
            st.info("No predictor fitted yet: the first round is still being measured.")
            return
        ids = {int(c) for f in fits for c in f["payload"].get("candidate_ids") or []}
        labels = ctx.labels(sorted(ids))
        points, quality = _fits_frame(fits, labels)
        selection = _selection_frame(fits, labels)
        last = quality[quality["target"] == "log_ppl"].tail(1)
        cols = st.columns(4)
        if len(last):
            row = last.iloc[0]
            cols[0].metric("Rounds fitted", int(quality["round"].nunique()))
            cols[1].metric("Kendall τ (last round, log PPL)", value_text(row["kendall"]))
            cols[2].metric("R² (last round, log PPL)", value_text(row["r2"]))
        sel = next((f["payload"] for f in fits if f["target"] == "selection"), None)
        if sel is not None:
            cols[3].metric("Kendall τ of the top k", value_text(sel.get("kendall")))
        target = st.radio("Target", [t for t in TARGETS if t in set(quality["target"])],
                          format_func=TARGETS.__getitem__, horizontal=True,
                          key="predictor-target")
        shown = points[points["target"] == target] if len(points) else points
        if target == "log_ppl" and len(selection):
            shown = pd.concat([shown, selection], ignore_index=True)
        st.plotly_chart(ctx.memo("predictor-pvm", lambda: charts.predicted_vs_measured(
            shown, f"Predicted vs measured {TARGETS[target]} (held-out folds; the top k after "
                   "the last round)", value=TARGETS[target]), target),
            key="predictor-pvm")
        st.plotly_chart(ctx.memo("predictor-quality", lambda: charts.fit_quality(
            quality, "Fit quality per round (held-out folds)")), key="predictor-quality")
        rounds = sorted({f["round"] for f in fits if f["target"] == target})
        chosen = st.select_slider("Importances of round", rounds, value=rounds[-1],
                                  key="predictor-round") if len(rounds) > 1 else rounds[0]
        importance = next(f["payload"].get("importance") or {} for f in fits
                          if f["target"] == target and f["round"] == chosen)
        st.plotly_chart(charts.importance_bars(importance, f"Feature importance (gain), round "
                                               f"{chosen}"), key="predictor-importance")
        ranges = _ranges(fits)
        st.subheader("Ranges narrowed per round")
        if ranges.empty:
            st.caption("No range narrowed yet.")
        else:
            st.dataframe(ranges, hide_index=True, width="stretch", key="predictor-ranges")
        if sel is not None and sel.get("winner"):
            w = sel["winner"]
            st.markdown(f"Winner: candidate **{w['id']}** ({labels.get(int(w['id']), '')}), "
                        f"search PPL **{value_text(w.get('search_ppl'))}**, chosen among "
                        f"{sel.get('scored')} architectures the predictor scored.")
