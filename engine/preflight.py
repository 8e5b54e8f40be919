"""Checks made once, right after the model loads and the windows are cut, before any study is
created or any candidate runs: a spec that cannot run on this model fails here with one clear
message, instead of every candidate failing with a low-level error (and exit code 0).
"""

from __future__ import annotations

from collections.abc import Iterable

from prunestudio.engine.models.loading import LoadedModel

from prunestudio.schema.spec import CandidateSpec


class PreflightError(ValueError):
    """The study cannot run on this model as configured (the message lists why)."""


def nm_problem(lm: LoadedModel, spec: CandidateSpec) -> str | None:
    """Why an N:M pattern cannot apply to this model's prunable layers, or None."""
    if spec.pattern.kind != "nm":
        return None
    m = int(spec.pattern.m or 0)
    widths = sorted({lin.in_features for lin in lm.adapter.all_prunable_linears(lm.model)})
    bad = [w for w in widths if w % m]
    if not bad:
        return None
    fits = [f"{mm // 2}:{mm}" for mm in (4, 8, 16, 32) if all(w % mm == 0 for w in widths)]
    return (f"pattern {spec.pattern.label}: groups of {m} consecutive input columns need input "
            f"widths that are multiples of {m}, but this model's prunable layers have "
            f"width(s) {', '.join(map(str, bad))} (all widths: {', '.join(map(str, widths))}); "
            + (f"patterns that fit: {', '.join(fits)}" if fits else
               "choose M dividing every width"))


def check_token_ids(lm: LoadedModel, windows, what: str) -> None:
    """Refuse windows holding token ids the model has no embedding for (a tokenizer that does
    not belong to the model): every candidate would fail with an IndexError otherwise."""
    embeddings = lm.model.get_input_embeddings()
    rows = getattr(embeddings, "num_embeddings", None)
    if rows is None or windows.ids.numel() == 0:
        return
    top = int(windows.ids.max())
    if top >= rows:
        raise PreflightError(
            f"{what}: the tokenizer produced token id {top}, but the model's input embedding "
            f"has {rows} rows (ids 0..{rows - 1}); the tokenizer does not belong to this model "
            "— give the model's own tokenizer (its folder's tokenizer files)")


def experts_problem(lm: LoadedModel, spec: CandidateSpec) -> str | None:
    """Why a spec cannot run on a model whose experts are stacked 3-D parameters, or None."""
    rec = spec.reconstruction
    if rec is None or rec.mode != "lr":
        return None
    if not any(lin.is_expert for lin in lm.adapter.prunable_linears(lm.model, 0)):
        return None
    return ("reconstruction mode 'lr' fits each linear layer as a module on its own inputs, and "
            "this model's experts are slices of 3-D parameters, not modules; allowed on a "
            "mixture-of-experts model: reconstruction mode 'br' or 'gp' (block-wise)")


def kinds_problem(lm: LoadedModel, spec: CandidateSpec) -> str | None:
    """Why per-kind offsets (layer_ratios by_kind) cannot apply to this model, or None."""
    if spec.layer_ratios != "by_kind":
        return None
    from prunestudio.engine.pruning import kind_ratios

    try:
        kind_ratios(lm, spec.sparsity, spec.kind_offsets or {})
    except ValueError as exc:
        return str(exc)
    return None


def check_specs(lm: LoadedModel, specs: Iterable[CandidateSpec]) -> None:
    """Raise PreflightError listing every distinct reason a spec cannot run on `lm`."""
    from prunestudio.engine.methods import ShapeChangingMethod, get_method

    problems: dict[str, list[str]] = {}
    for spec in specs:
        reasons = []
        method = get_method(spec.method)
        if isinstance(method, ShapeChangingMethod):
            try:
                method.check(lm, spec)
            except ValueError as exc:
                reasons.append(str(exc))
        else:
            reasons += [r for r in (nm_problem(lm, spec), experts_problem(lm, spec),
                                    kinds_problem(lm, spec)) if r]
        for r in reasons:
            problems.setdefault(r, []).append(spec.label)
    if problems:
        lines = [f"- {reason} (candidates: {', '.join(labels)})"
                 for reason, labels in problems.items()]
        raise PreflightError("the study cannot run on this model; nothing was recorded:\n"
                             + "\n".join(lines))
