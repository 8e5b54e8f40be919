"""View of an AdaPruner search (kind ``tpe``: Optuna's TPE or random sampler over calibration
windows × the coefficients of the combined Taylor importance): how fast it converged against
every other ``tpe`` study of the same model and objective (TPE against its random-sampler
twin), which parameters mattered (fANOVA on an Optuna study rebuilt from the recorded
trials), which windows the best trials used, the objective against each coefficient, and
the best trials. Reads each trial's ``info.tpe`` (params, distributions, windows, α, β, γ)
and its objective (``store.browse.sibling_trials``); the app never samples."""

from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from prunestudio.app import charts
from prunestudio.app.data import load_sibling_trials, reader
from prunestudio.app.display import value_text
from prunestudio.app.views.base import StudyContext, StudyView

__all__ = ["Convergence", "TpeView", "best_trials", "convergence", "encoded_width",
           "fanova_importances", "fanova_records", "grouped_importances", "study_label",
           "trials_frame", "window_shares"]

INFO_KEY = "tpe"  # the trial record in a candidate's info
MIN_TRIALS = 5  # done trials fANOVA needs before it says anything
TOLERANCE = 0.01  # "converged": within 1 % of the study's final best
TOP_SHARE = 0.2  # the best 20 % of the trials, for the window frequencies
BEST_ROWS = 5
AUTO_FANOVA_CELLS = 20_000  # trials × encoded columns fitted without being asked (~1 s)
SLOT_PREFIX = "sample_"
# (parameter column, title, log x); gamma only where the study searched the factor
SLICES = (("alpha", "α (vector-wise Taylor)", False),
          ("beta", "β (element-wise first order)", False),
          ("factor", "alignment factor f", True),
          ("gamma", "γ = β·f (element-wise second order)", True))
TRIAL_COLUMNS = ("study_id", "study", "seed", "sampler", "id", "trial", "status", "origin",
                 "value", "alpha", "beta", "gamma", "factor", "windows", "params",
                 "distributions")


# -- pure helpers -----------------------------------------------------------------------------


def _number(value: Any) -> float:
    try:
        out = float(value)
    except (TypeError, ValueError):
        return math.nan
    return out if math.isfinite(out) else math.nan


def trials_frame(rows: Sequence[Mapping[str, Any]]) -> pd.DataFrame:
    """One row per recorded trial (``browse.sibling_trials`` rows): study, sampler, trial
    number, status, objective ``value`` (NaN: not measured), α, β, γ, the factor, the
    windows (a sorted tuple), the sampler's ``params`` and ``distributions`` (JSON)."""
    records = []
    for r in rows:
        info = r.get("info") if isinstance(r.get("info"), Mapping) else {}
        params = info.get("params") if isinstance(info.get("params"), Mapping) else {}
        dists = info.get("distributions")
        records.append({
            "study_id": int(r["study_id"]), "study": str(r["study"]), "seed": r.get("seed"),
            "sampler": str(info.get("sampler") or r.get("origin") or ""),
            "id": int(r["id"]), "trial": int(r["generation"]), "status": str(r["status"]),
            "origin": str(r.get("origin") or ""), "value": _number(r.get("value")),
            "alpha": _number(info.get("alpha")), "beta": _number(info.get("beta")),
            "gamma": _number(info.get("gamma")), "factor": _number(params.get("factor")),
            "windows": tuple(sorted(int(w) for w in info.get("samples") or ())),
            "params": dict(params),
            "distributions": dict(dists) if isinstance(dists, Mapping) else {}})
    return pd.DataFrame(records, columns=list(TRIAL_COLUMNS))


def done_trials(trials: pd.DataFrame) -> pd.DataFrame:
    """The trials that were measured (status done, a finite objective)."""
    return trials[(trials["status"] == "done") & trials["value"].notna()]


def study_label(trials: pd.DataFrame) -> str:
    """``<study name> (<sampler>, seed <seed>)`` of one study's trials (the sampler most of
    them name)."""
    first = trials.iloc[0]
    sampler = Counter(s for s in trials["sampler"] if s).most_common(1)
    seed = first["seed"]
    seed_text = "—" if seed is None or pd.isna(seed) else str(int(seed))
    return f"{first['study']} ({sampler[0][0] if sampler else '?'}, seed {seed_text})"


@dataclass(frozen=True)
class Convergence:
    """The best objective so far over the trial numbers (``trials``, ``best``: one entry per
    measured trial), the ``final`` best and the first trial whose best so far came within the
    tolerance of it (``within``)."""

    trials: list[int]
    best: list[float]
    final: float | None
    within: int | None


def convergence(trials: Sequence[int], values: Sequence[float], *, lower_is_better: bool = True,
                tolerance: float = TOLERANCE) -> Convergence:
    """Best so far of ``values`` over ``trials`` (ordered by trial; missing or non-finite
    values skipped), and the first trial within ``tolerance`` (relative) of the final best."""
    pairs = sorted((int(t), float(v)) for t, v in zip(trials, values, strict=True)
                   if v is not None and math.isfinite(float(v)))
    curve: list[float] = []
    best: float | None = None
    for _, v in pairs:
        best = v if best is None else (min(best, v) if lower_is_better else max(best, v))
        curve.append(best)
    if best is None:
        return Convergence([], [], None, None)
    slack = tolerance * abs(best)
    within = next(t for (t, _), b in zip(pairs, curve, strict=True)
                  if (b <= best + slack if lower_is_better else b >= best - slack))
    return Convergence([t for t, _ in pairs], curve, best, within)


def _distributions(trial: pd.Series) -> dict[str, Any]:
    from optuna.distributions import json_to_distribution

    return {k: json_to_distribution(v) for k, v in trial["distributions"].items()
            if k in trial["params"]}


def encoded_width(trials: pd.DataFrame) -> int:
    """The columns fANOVA's forest fits on: one per float parameter, one per choice of a
    categorical one (the window slots make it wide), from the first trial's space."""
    from optuna.distributions import CategoricalDistribution

    if trials.empty:
        return 0
    dists = _distributions(trials.iloc[0])
    return sum(len(d.choices) if isinstance(d, CategoricalDistribution) else 1
               for d in dists.values())


def fanova_records(trials: pd.DataFrame) -> tuple[tuple[str, str, float], ...]:
    """What fANOVA is fitted on, hashable (a cache key): ``(params JSON, distributions JSON,
    objective)`` of every measured trial that recorded its parameters, by trial."""
    out = []
    for _, t in done_trials(trials).sort_values("trial").iterrows():
        dists = {k: v for k, v in t["distributions"].items() if k in t["params"]}
        if dists:
            out.append((json.dumps({k: t["params"][k] for k in dists}, sort_keys=True),
                        json.dumps(dists, sort_keys=True), float(t["value"])))
    return tuple(out)


def fanova_importances(records: Sequence[tuple[str, str, float]], *,
                       lower_is_better: bool = True) -> dict[str, float]:
    """Optuna's fANOVA importances (seed 0) of the parameters, on an in-memory study rebuilt
    from the trials' :func:`fanova_records` (params, distributions, objective). Raises what
    Optuna raises (too few trials, no varying parameter, no sklearn)."""
    import optuna
    from optuna.distributions import json_to_distribution

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    if not records:
        raise ValueError("no trial records its parameters")
    study = optuna.create_study(direction="minimize" if lower_is_better else "maximize",
                                sampler=optuna.samplers.RandomSampler(seed=0))
    for params, dists, value in records:
        study.add_trial(optuna.trial.create_trial(
            params=json.loads(params), value=value, distributions={
                k: json_to_distribution(v) for k, v in json.loads(dists).items()}))
    found = optuna.importance.get_param_importances(
        study, evaluator=optuna.importance.FanovaImportanceEvaluator(seed=0))
    return {str(k): float(v) for k, v in found.items()}


@st.cache_data(max_entries=16, show_spinner="Fitting fANOVA…")
def _fanova(records: tuple[tuple[str, str, float], ...], lower_is_better: bool
            ) -> dict[str, float] | str:
    """:func:`fanova_importances`, once per set of measured trials (a trial that starts or a
    store change elsewhere fits nothing again), or why there are none."""
    try:
        return fanova_importances(records, lower_is_better=lower_is_better)
    except Exception as exc:  # too few distinct values, no sklearn, ...
        return f"{type(exc).__name__}: {exc}"


def grouped_importances(importances: Mapping[str, float]) -> dict[str, float]:
    """The window slots (``sample_0``…: interchangeable, each one choice among the pool)
    summed into one ``windows (k slots)`` entry; the coefficients as they are."""
    slots = {k: v for k, v in importances.items() if k.startswith(SLOT_PREFIX)}
    out = {k: v for k, v in importances.items() if not k.startswith(SLOT_PREFIX)}
    if slots:
        out[f"windows ({len(slots)} slot{'s' if len(slots) != 1 else ''})"] = sum(
            slots.values())
    return out


def _ranked(trials: pd.DataFrame, lower_is_better: bool) -> pd.DataFrame:
    """Measured trials, best objective first (ties: the earlier trial)."""
    return done_trials(trials).sort_values(["value", "trial"],
                                           ascending=[lower_is_better, True])


def window_shares(trials: pd.DataFrame, *, lower_is_better: bool = True,
                  top: float = TOP_SHARE) -> pd.DataFrame:
    """Per calibration window used by a measured trial: in how many of the best ``top``
    share of the measured trials it appears (``best_n``, and as a share ``best``) and in how
    many of all of them (``all_n``, ``all``); by window."""
    ranked = _ranked(trials, lower_is_better)
    columns = ["window", "best_n", "best", "all_n", "all"]
    if ranked.empty:
        return pd.DataFrame(columns=columns)
    k = max(1, math.ceil(top * len(ranked)))
    best = Counter(w for ws in ranked["windows"].head(k) for w in ws)
    every = Counter(w for ws in ranked["windows"] for w in ws)
    return pd.DataFrame([{"window": w, "best_n": best.get(w, 0), "best": best.get(w, 0) / k,
                          "all_n": n, "all": n / len(ranked)} for w, n in sorted(every.items())],
                        columns=columns)


def best_trials(trials: pd.DataFrame, labels: Mapping[int, str], *, lower_is_better: bool = True,
                n: int = BEST_ROWS) -> pd.DataFrame:
    """The ``n`` best measured trials: trial, candidate id, label, objective, α, β, γ and the
    windows."""
    top = _ranked(trials, lower_is_better).head(n)
    return pd.DataFrame({
        "trial": top["trial"].astype(int).to_list(), "id": top["id"].astype(int).to_list(),
        "label": [labels.get(int(i), f"#{i}") for i in top["id"]],
        "objective": top["value"].to_list(), "alpha": top["alpha"].to_list(),
        "beta": top["beta"].to_list(), "gamma": top["gamma"].to_list(),
        "windows": [", ".join(str(w) for w in ws) for ws in top["windows"]]})


def searched(trials: pd.DataFrame) -> set[str]:
    """The parameters the sampler searched (names in the trials' distributions)."""
    return {k for d in trials["distributions"] for k in d}


# -- figures --------------------------------------------------------------------------------


def _convergence_figure(curves: Sequence[tuple[str, Convergence, bool]],
                        references: Sequence[tuple[str, float]], title: str, y: str,
                        log_y: bool) -> go.Figure:
    """One step line per study (this one thicker), the study's references as dashed lines."""
    fig = go.Figure()
    for label, conv, own in curves:
        fig.add_trace(go.Scatter(
            x=conv.trials, y=conv.best, mode="lines+markers", line_shape="hv", name=label,
            line={"width": 3 if own else 1.5}, marker={"size": 5 if own else 3},
            hovertemplate=f"{label}<br>trial %{{x}}<br>best %{{y:.4g}}<extra></extra>"))
    for label, value in references:
        fig.add_hline(y=value, line_dash="dash", line_color="#888888",
                      annotation_text=label[:40], annotation_position="top right")
    fig.update_layout(title={"text": title, "x": 0.0}, height=400,
                      margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      legend={"orientation": "h", "y": -0.2}, xaxis_title="trial",
                      yaxis_title=y)
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def _slice_figure(trials: pd.DataFrame, column: str, title: str, y: str, *, log_x: bool,
                  log_y: bool) -> go.Figure:
    """The objective of every measured trial against one parameter, coloured by trial."""
    fig = go.Figure(go.Scatter(
        x=trials[column], y=trials["value"], mode="markers", name=title,
        text=[f"trial {t}" for t in trials["trial"]], customdata=trials[["id"]].to_numpy(),
        marker={"size": 8, "color": trials["trial"], "colorscale": "Viridis",
                "showscale": True, "colorbar": {"title": "trial"}},
        hovertemplate="<b>%{text}</b><br>id %{customdata[0]}<br>" + column
                      + " %{x:.4g}<br>objective %{y:.4g}<extra></extra>"))
    fig.update_layout(title={"text": f"Objective vs {title}", "x": 0.0}, height=320,
                      margin={"l": 10, "r": 10, "t": 40, "b": 10}, xaxis_title=title,
                      yaxis_title=y, showlegend=False)
    if log_x:
        fig.update_xaxes(type="log")
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def _windows_figure(shares: pd.DataFrame, k: int, n: int) -> go.Figure:
    fig = go.Figure()
    fig.add_trace(go.Bar(x=shares["window"], y=shares["best"], name=f"best {k} trials",
                         customdata=shares[["best_n"]].to_numpy(),
                         hovertemplate="window %{x}: in %{customdata[0]} of the best trials"
                                       "<extra></extra>"))
    fig.add_trace(go.Bar(x=shares["window"], y=shares["all"], name=f"all {n} trials",
                         marker={"color": "#bbbbbb"}, customdata=shares[["all_n"]].to_numpy(),
                         hovertemplate="window %{x}: in %{customdata[0]} trials"
                                       "<extra></extra>"))
    fig.update_layout(title={"text": f"Calibration windows of the best {TOP_SHARE:.0%} of the "
                                     "trials", "x": 0.0}, height=320, barmode="group",
                      margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      legend={"orientation": "h", "y": -0.25}, xaxis_title="window",
                      yaxis_title="share of the trials using it")
    fig.update_yaxes(tickformat=".0%")
    return fig


# -- the view -------------------------------------------------------------------------------


class TpeView(StudyView):
    name, title, kinds, order = "tpe", "TPE", ("tpe",), 15

    def render(self, ctx: StudyContext) -> None:
        objective = ctx.primary
        if objective is None:
            st.info("No objective recorded yet: the dense model is measured first.")
            return
        token = reader(ctx.path).token()
        rows = load_sibling_trials(ctx.path, ctx.study.id, objective, INFO_KEY, token)
        trials = ctx.memo("tpe-trials", lambda: trials_frame(rows), token)
        own = trials[trials["study_id"] == ctx.study.id]
        if own.empty:
            st.info("No trial recorded yet: the dense model and the baselines come first.")
            return
        lower = objective.lower_is_better
        y = ctx.title(objective)
        self._convergence(ctx, trials, token, lower, y)
        done = done_trials(own)
        space = searched(own)
        self._importances(ctx, done, lower)
        if any(k.startswith(SLOT_PREFIX) for k in space):
            self._windows(done, lower)
        self._slices(ctx, done, space, y, lower)
        st.subheader(f"The {BEST_ROWS} best trials")
        table = best_trials(own, ctx.labels(done["id"].astype(int).to_list()),
                            lower_is_better=lower)
        st.dataframe(table, hide_index=True, key="tpe-best-trials", column_config={
            "objective": st.column_config.NumberColumn("objective", format="%.4g"),
            **{c: st.column_config.NumberColumn(c, format="%.3g")
               for c in ("alpha", "beta", "gamma")}})

    def _convergence(self, ctx: StudyContext, trials: pd.DataFrame, token: int, lower: bool,
                     y: str) -> None:
        objective_key = ctx.primary.key if ctx.primary is not None else ""

        def build() -> tuple[go.Figure, pd.DataFrame]:
            curves, summary = [], []
            for sid, sub in trials.groupby("study_id", sort=False):
                done = done_trials(sub)
                own = int(sid) == ctx.study.id
                if done.empty and not own:  # another study without this objective
                    continue
                conv = convergence(done["trial"].to_list(), done["value"].to_list(),
                                   lower_is_better=lower)
                label = study_label(sub)
                curves.append((label, conv, own))
                summary.append({
                    "study": label, "trials": f"{len(done)}/{len(sub)}",
                    "final best": conv.final,
                    "best at trial": (None if conv.final is None else int(
                        done.loc[done["value"] == conv.final, "trial"].min())),
                    f"within {TOLERANCE:.0%} at trial": conv.within})
            frame = ctx.frame.df
            refs = []
            if objective_key in frame:
                for _, r in frame[frame["reference"] & (frame["status"] == "done")
                                  & frame[objective_key].notna()].iterrows():
                    refs.append((str(r["label"]), float(r[objective_key])))
            fig = _convergence_figure(
                curves, refs, "Best so far per trial (every tpe study of this model and "
                "objective)", y, ctx.log_y)
            return fig, pd.DataFrame(summary)

        fig, summary = ctx.memo("tpe-convergence", build, token)
        st.plotly_chart(fig, key="tpe-best")
        st.dataframe(summary, hide_index=True, key="tpe-convergence", column_config={
            "final best": st.column_config.NumberColumn("final best", format="%.4g")})
        st.caption(f"Dashed: this study's references. \"within {TOLERANCE:.0%}\": the first "
                   f"trial whose best so far came within {TOLERANCE:.0%} of the study's own "
                   "final best. "
                   "Every recorded trial counts (the sidebar filters do not apply here).")

    def _importances(self, ctx: StudyContext, done: pd.DataFrame, lower: bool) -> None:
        st.subheader("Parameter importances (fANOVA)")
        with_params = done[[bool(p) for p in done["params"]]]
        if len(with_params) < MIN_TRIALS:
            st.caption(f"fANOVA needs at least {MIN_TRIALS} measured trials; "
                       f"{len(with_params)} so far.")
            return
        width = encoded_width(with_params)
        if len(with_params) * width > AUTO_FANOVA_CELLS and not st.toggle(
                f"Compute the fANOVA importances ({len(with_params)} trials × {width} encoded "
                "columns: may take a while)", key="tpe-fanova"):
            return

        found = _fanova(ctx.memo("tpe-fanova-records", lambda: fanova_records(with_params),
                                 len(with_params)), lower)
        if isinstance(found, str):
            st.caption(f"No fANOVA importances: {found}")
            return
        grouped = grouped_importances(found)
        st.plotly_chart(charts.importance_bars(
            grouped, f"fANOVA importance ({len(with_params)} trials)", x="share of the "
            "objective's variance"), key="tpe-importance")
        slots = sorted((k for k in found if k.startswith(SLOT_PREFIX)),
                       key=lambda k: int(k[len(SLOT_PREFIX):]) if k[len(SLOT_PREFIX):]
                       .isdigit() else 0)
        if slots:
            st.caption(f"The {len(slots)} window slots ({slots[0]}…{slots[-1]}: "
                       "interchangeable, each picks one window of the pool) are summed into "
                       "one bar; which windows the best trials used is drawn below.")

    def _windows(self, done: pd.DataFrame, lower: bool) -> None:
        shares = window_shares(done, lower_is_better=lower)
        if shares.empty:
            return
        k = max(1, math.ceil(TOP_SHARE * len(done)))
        st.plotly_chart(_windows_figure(shares, k, len(done)), key="tpe-windows")

    def _slices(self, ctx: StudyContext, done: pd.DataFrame, space: set[str], y: str,
                lower: bool) -> None:
        """One scatter per coefficient the study searched (γ: where it searched the factor,
        only γ > 0; f and γ on log x)."""
        shown = []
        for column, title, log_x in SLICES:
            wanted = "factor" if column == "gamma" else column
            if wanted not in space:
                continue
            have = done[done[column].notna()]
            if log_x:
                have = have[have[column] > 0]
            if not have.empty:
                shown.append((column, title, log_x, have))
        if not shown:
            return
        st.subheader("Objective vs the coefficients")
        cols = st.columns(2)
        for i, (column, title, log_x, have) in enumerate(shown):
            fig = ctx.memo(f"tpe-slice-{column}", lambda have=have, column=column, title=title,
                           log_x=log_x: _slice_figure(have, column, title, y, log_x=log_x,
                                                      log_y=ctx.log_y), len(have))
            cols[i % 2].plotly_chart(fig, key=f"tpe-slice-{column}")
        best = _ranked(done, lower).head(1)
        if len(best):
            r = best.iloc[0]
            st.caption(f"Best trial {int(r['trial'])}: objective {value_text(r['value'])}, "
                       f"α {r['alpha']:.3g}, β {r['beta']:.3g}, γ {r['gamma']:.3g}.")
