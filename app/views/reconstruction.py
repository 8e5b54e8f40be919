"""View of a grid study with reconstruction-error minimisation (Shin et al. 2024): each
unstructured method crossed with the reconstruction modes (none, LR layer-wise, BR block-wise,
BR+GP block-wise with the dense model's own hidden states as targets).

Three sections: the paper's table (method × mode: held-out PPL per evaluation role and the
calibration error, "none" being the same spec without reconstruction), the normalised error
per block before and after each block's fit (from the metrics' protocols), and the
overfitting report (calibration error against held-out PPL along every epochs / samples sweep,
with the schema's ``overfitting_warnings``: the one rule ``show``, the TUI and the study's
events use too). Reads every candidate with its protocols (``store.browse.
reconstruction_candidates``); the app never reconstructs anything.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import pandas as pd
import plotly.graph_objects as go
import streamlit as st
from plotly.subplots import make_subplots
from prunestudio.app.data import load_reconstruction
from prunestudio.app.views.base import StudyContext, StudyView

from prunestudio.schema import SEARCH_ROLE, Candidate
from prunestudio.schema.canonical import canonical_json
from prunestudio.schema.labels import RECONSTRUCTION_TITLES, spec_label
from prunestudio.schema.overfitting import (
    CALIBRATION_ERROR,
    RECONSTRUCTION_ROLE,
    overfitting_warnings,
    sweep_points,
)

__all__ = ["ERRORS", "ReconstructionView", "base_key", "block_errors", "mode_table",
           "ppl_roles", "recipe_of", "recipe_text", "sweep_frame"]

MODES = ("none", "lr", "br", "gp")
MODE_TITLES = {"none": "none", **RECONSTRUCTION_TITLES}
CALIB_TITLE = "calib error"
SHOWN = 4  # candidates drawn per block by default
# which error the per-block chart draws: title -> (metric, protocol key before, metric,
# protocol key after)
ERRORS = {
    "against the dense model's hidden states (calib_error)":
        ("calib_error_before", "per_block", CALIBRATION_ERROR, "per_block"),
    "against the mode's own target (recon_error)":
        ("recon_error_after", "per_block_before", "recon_error_after", "per_block_after"),
}
SWEEP_TITLES = {"epochs": "epochs", "samples": "windows fitted on"}


# -- pure helpers -----------------------------------------------------------------------------


def recipe_of(c: Candidate) -> Mapping[str, Any] | None:
    """The reconstruction recipe of a candidate's spec (None: not reconstructed)."""
    recipe = c.spec.get("reconstruction")
    return recipe if isinstance(recipe, Mapping) else None


def base_key(spec: Mapping[str, Any]) -> str:
    """The spec without its reconstruction, canonical: a reconstructed candidate and the
    candidate it was pruned as ("none") share it."""
    return canonical_json({k: v for k, v in spec.items() if k != "reconstruction"})


def recipe_text(recipe: Mapping[str, Any] | None) -> str:
    """``10ep``, ``3ep n32`` (the windows fitted on when not all); ``""`` without a recipe."""
    if recipe is None:
        return ""
    text = f"{recipe.get('epochs')}ep"
    return text + (f" n{recipe['samples']}" if recipe.get("samples") is not None else "")


def _value(c: Candidate, name: str, role: str) -> float:
    """`Candidate.value`, NaN where not recorded (a table cell)."""
    v = c.value(name, role)
    return math.nan if v is None else v


def _metric(c: Candidate, name: str) -> Any:
    found = c.find(name, RECONSTRUCTION_ROLE)
    return min(found, key=lambda m: m.fidelity != "full", default=None)


def ppl_roles(study_roles: Sequence[str], candidates: Sequence[Candidate]) -> list[str]:
    """The study's evaluation roles in config order, then any other PPL role found (never
    the search role)."""
    roles = list(study_roles)
    for c in candidates:
        for role in c.ppl_by_role:
            if role not in roles and role != SEARCH_ROLE:
                roles.append(role)
    return roles


def _sweep_order(recipe: tuple[Any, Any]) -> tuple[float, float]:
    epochs, samples = recipe
    return (float(epochs) if epochs is not None else math.inf,
            math.inf if samples is None else float(samples))


def mode_table(candidates: Sequence[Candidate], roles: Sequence[str]) -> pd.DataFrame:
    """The paper's table: one row per pruned spec (method, sparsity, pattern) and recipe
    (epochs, windows), in the order the study recorded them, the dense model first; per
    evaluation role one ``<role> PPL · <mode>`` column per mode found (``none``: the same spec
    without reconstruction, repeated on each of its recipes' rows), then ``calib error ·
    <mode>``. Done candidates only; NaN where a cell was not measured."""
    done = [c for c in candidates if c.status == "done"]
    bases: dict[str, dict[str, Any]] = {}
    modes: set[str] = set()
    for c in sorted(done, key=lambda c: c.idx):
        if c.is_dense:
            continue
        recipe = recipe_of(c)
        entry = bases.setdefault(base_key(c.spec), {
            "label": spec_label({k: v for k, v in c.spec.items() if k != "reconstruction"}),
            "none": None, "recipes": {}})
        if recipe is None:
            entry["none"] = c
            modes.add("none")
            continue
        mode = str(recipe.get("mode"))
        modes.add(mode)
        entry["recipes"].setdefault((recipe.get("epochs"), recipe.get("samples")), {})[mode] = c
    dense = next((c for c in sorted(done, key=lambda c: c.idx) if c.is_dense), None)
    if dense is not None:
        modes.add("none")
    shown = [m for m in MODES if m in modes] + sorted(modes - set(MODES))
    calib = [m for m in shown if any(
        m in cells and not math.isnan(_value(cells[m], CALIBRATION_ERROR, RECONSTRUCTION_ROLE))
        for b in bases.values() for cells in b["recipes"].values())]
    columns = ["candidate", "recipe",
               *(f"{r} PPL · {MODE_TITLES.get(m, m)}" for r in roles for m in shown),
               *(f"{CALIB_TITLE} · {MODE_TITLES.get(m, m)}" for m in calib)]

    def row(label: str, recipe: str, cells: Mapping[str, Candidate]) -> dict[str, Any]:
        out: dict[str, Any] = {"candidate": label, "recipe": recipe}
        for r in roles:
            for m in shown:
                out[f"{r} PPL · {MODE_TITLES.get(m, m)}"] = (
                    _value(cells[m], "ppl", r) if m in cells else math.nan)
        for m in calib:
            out[f"{CALIB_TITLE} · {MODE_TITLES.get(m, m)}"] = (
                _value(cells[m], CALIBRATION_ERROR, RECONSTRUCTION_ROLE) if m in cells
                else math.nan)
        return out

    rows = [row(dense.label, "", {"none": dense})] if dense is not None else []
    for entry in bases.values():
        none = {"none": entry["none"]} if entry["none"] is not None else {}
        if not entry["recipes"]:
            rows.append(row(entry["label"], "", none))
        for key in sorted(entry["recipes"], key=_sweep_order):
            epochs, samples = key
            rows.append(row(entry["label"], recipe_text({"epochs": epochs, "samples": samples}),
                            {**none, **entry["recipes"][key]}))
    return pd.DataFrame(rows, columns=columns)


def block_errors(c: Candidate, error: str) -> tuple[list[float], list[float]]:
    """The per-block normalised errors of a reconstructed candidate before and after each
    block's fit (``error``: a key of :data:`ERRORS`), from its metrics' protocols; ``[]``
    where not recorded."""
    before_name, before_key, after_name, after_key = ERRORS[error]

    def listed(name: str, key: str) -> list[float]:
        m = _metric(c, name)
        values = m.protocol.get(key) if m is not None else None
        if not isinstance(values, Sequence) or isinstance(values, str):
            return []
        return [float(v) if isinstance(v, (int, float)) else math.nan for v in values]

    return listed(before_name, before_key), listed(after_name, after_key)


def sweep_frame(points: Sequence[tuple[Any, Candidate]], roles: Sequence[str]) -> pd.DataFrame:
    """One row per point of a sweep (``sweep_points``' value, candidate): the value as shown
    (None: ``all``), candidate id, calibration error and each role's PPL."""
    return pd.DataFrame([{
        "value": "all" if v is None else str(v), "id": c.id,
        "calib": _value(c, CALIBRATION_ERROR, RECONSTRUCTION_ROLE),
        **{r: _value(c, "ppl", r) for r in roles}} for v, c in points],
        columns=["value", "id", "calib", *roles])


# -- figures --------------------------------------------------------------------------------


def _blocks_figure(lines: Sequence[tuple[str, int, list[float], list[float]]], title: str,
                   log_y: bool) -> go.Figure:
    """Per selected candidate: the error per block after its fit (solid) and before (dashed,
    same colour)."""
    palette = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2",
               "#7f7f7f", "#bcbd22", "#17becf")
    fig = go.Figure()
    for i, (label, cid, before, after) in enumerate(lines):
        colour = palette[i % len(palette)]
        for values, part, dash in ((after, "after", "solid"), (before, "before", "dash")):
            if not values:
                continue
            fig.add_trace(go.Scatter(
                x=list(range(len(values))), y=values, mode="lines+markers",
                name=f"{label} · {part}", line={"color": colour, "dash": dash},
                marker={"size": 4}, customdata=[[cid]] * len(values),
                hovertemplate=f"{label} ({part})<br>block %{{x}}<br>error %{{y:.4g}}"
                              "<extra></extra>"))
    blocks = max((len(v) for _, _, before, after in lines for v in (before, after)),
                 default=1)
    fig.update_layout(title={"text": title, "x": 0.0}, height=400,
                      margin={"l": 10, "r": 10, "t": 40, "b": 10},
                      legend={"orientation": "h", "y": -0.2}, xaxis_title="block",
                      yaxis_title="normalised error ‖ŷ − y‖² / ‖y‖²")
    fig.update_xaxes(tick0=0, dtick=max(1, math.ceil(blocks / 16)))
    if log_y:
        fig.update_yaxes(type="log")
    return fig


def _sweep_figure(frame: pd.DataFrame, roles: Sequence[str], title: str, x: str,
                  flagged: set[tuple[str, int]], log_y: bool) -> go.Figure:
    """Side by side, each on its own scale: the calibration error (what reconstruction
    minimises) and each role's held-out PPL along a sweep; a red ring on a point where a
    warning says that role's PPL rose (``flagged``: (role, candidate id))."""
    shown = [r for r in roles if frame[r].notna().any()]
    panels = [("calib", "calibration error"), *((r, f"{r} PPL") for r in shown)]
    fig = make_subplots(rows=1, cols=len(panels), subplot_titles=[t for _, t in panels],
                        horizontal_spacing=0.08)
    ids = frame[["id"]].to_numpy()
    for i, (column, name) in enumerate(panels, start=1):
        fig.add_trace(go.Scatter(
            x=frame["value"], y=frame[column], name=name, mode="lines+markers",
            customdata=ids, showlegend=False,
            line={"color": "#555555", "width": 2} if column == "calib" else {"width": 2},
            hovertemplate=f"{x} %{{x}}: {name} %{{y:.4g}}<br>id %{{customdata[0]}}"
                          "<extra></extra>"), row=1, col=i)
        rose = frame[[(column, int(c)) in flagged for c in frame["id"]]]
        if len(rose):
            fig.add_trace(go.Scatter(
                x=rose["value"], y=rose[column], mode="markers", name=f"{name} rose",
                showlegend=False, hoverinfo="skip",
                marker={"size": 14, "color": "rgba(0,0,0,0)",
                        "line": {"color": "#d62728", "width": 2}}), row=1, col=i)
        fig.update_xaxes(type="category", title_text=x, row=1, col=i)
    fig.update_layout(title={"text": title, "x": 0.0}, height=300,
                      margin={"l": 10, "r": 10, "t": 60, "b": 10})
    if log_y:
        fig.update_yaxes(type="log")
    return fig


# -- the view -------------------------------------------------------------------------------


def _records(ctx: StudyContext) -> list[Candidate]:
    return load_reconstruction(ctx.path, ctx.study.id, ctx.frame.token)


class ReconstructionView(StudyView):
    name, title, kinds, order = "reconstruction", "Reconstruction", ("grid",), 22

    def applies(self, ctx: StudyContext) -> bool:
        return bool(len(ctx.frame.df)) and bool(_records(ctx))

    def render(self, ctx: StudyContext) -> None:
        records = _records(ctx)
        done = [c for c in records if c.status == "done"]
        roles = ppl_roles(ctx.study.evaluation_roles, done)
        token = ctx.frame.token
        st.caption("Reconstruction-error minimisation (Shin et al. 2024): after a block's mask "
                   "is chosen its remaining weights are fitted to a dense target; LR: each "
                   "layer, BR: the block, BR+GP: the block against the dense model's own "
                   "hidden states. Every recorded candidate counts (the sidebar filters do "
                   "not apply here).")
        self._table(ctx, done, roles, token)
        self._blocks(ctx, done, token)
        self._overfitting(ctx, done, roles, token)

    def _table(self, ctx: StudyContext, done: list[Candidate], roles: list[str],
               token: int | None) -> None:
        st.subheader("Held-out PPL and calibration error per mode")
        table = ctx.memo("reconstruction-table", lambda: mode_table(done, roles), token)
        if table.empty:
            st.info("No finished candidate yet.")
            return
        st.dataframe(table, hide_index=True, key="reconstruction-table", column_config={
            c: st.column_config.NumberColumn(c, format="%.4g") for c in table.columns
            if c not in ("candidate", "recipe")})
        st.caption("none: the same spec without reconstruction. calib error: "
                   "‖ŷ − y‖² / ‖y‖² of the pruned model's block outputs against the dense "
                   "model's hidden states on the calibration windows, mean over blocks, after "
                   "reconstruction.")

    def _blocks(self, ctx: StudyContext, done: list[Candidate], token: int | None) -> None:
        st.subheader("Normalised error per block, before and after the fit")
        reconstructed = [c for c in done if recipe_of(c) is not None]
        if not reconstructed:
            st.info("No reconstructed candidate has finished yet.")
            return
        by_id = {c.id: c for c in reconstructed}
        error = st.radio("Error", list(ERRORS), horizontal=True, key="reconstruction-error")
        chosen = st.multiselect("Candidates", list(by_id), default=list(by_id)[:SHOWN],
                                format_func=lambda i: f"id {i} · {by_id[i].label}",
                                key="reconstruction-blocks-ids")

        def build() -> tuple[go.Figure, int]:
            lines = [(by_id[i].label, i, *block_errors(by_id[i], error)) for i in chosen]
            drawn = sum(1 for _, _, before, after in lines if before or after)
            return _blocks_figure(lines, f"Per-block error {error.split(' (')[0]}",
                                  ctx.log_y), drawn

        fig, drawn = ctx.memo("reconstruction-blocks", build, token, error, tuple(chosen))
        if chosen and not drawn:
            st.caption("The chosen candidates recorded no per-block errors.")
        st.plotly_chart(fig, key="reconstruction-blocks")
        st.caption("Solid: after the block's fit; dashed: before it (the pruned block on the "
                   "same inputs).")

    def _overfitting(self, ctx: StudyContext, done: list[Candidate], roles: list[str],
                     token: int | None) -> None:
        st.subheader("Overfitting report")
        warnings = ctx.memo("reconstruction-warnings", lambda: overfitting_warnings(
            done, ctx.study.evaluation_roles or roles), token)
        for w in warnings:
            st.warning(w.text)
        flagged = {(w.role, w.high_candidate) for w in warnings}
        sweeps = [(variable, label, points) for variable in ("epochs", "samples")
                  for label, points in sweep_points(done, variable).items()]
        if not sweeps:
            st.caption("No sweep: every recipe has one epochs value and one window count, so "
                       "there is nothing to compare along.")
            return
        if not warnings:
            st.caption("No overfitting found: along every sweep, wherever the calibration "
                       "error fell, no held-out PPL rose.")
        for i, (variable, label, points) in enumerate(sweeps):
            fig = ctx.memo(
                f"reconstruction-sweep-{i}",
                lambda points=points, label=label, variable=variable: _sweep_figure(
                    sweep_frame(points, roles), roles,
                    f"{label}: vs {SWEEP_TITLES[variable]}", SWEEP_TITLES[variable],
                    flagged, ctx.log_y), token)
            st.plotly_chart(fig, key=f"reconstruction-sweep-{i}")
        st.caption("Each panel on its own scale: the calibration error (what reconstruction "
                   "minimises), then each held-out PPL. A warning marks a step where the "
                   "first fell and a PPL rose (ringed in red).")
