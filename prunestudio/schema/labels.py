"""THE candidate label: one short line naming what a spec prunes and how.

Computed from a spec's canonical JSON form (what the engine records; options validated,
defaults filled in), so the engine (``CandidateSpec.label``), the store's records
(``Candidate.label``), ``prunestudio show``, the TUI and the web app all print the same text:

- ``dense``
- ``wanda 50%``, ``wanda 2:4``, ``sparsegpt 60% owl`` (``owl-band``: OWL's ratios
  kept within ±λ), ``wanda 50% dense-calib``
- ``symbolic div(W,D) 50% kinds[k+0.10,up-0.05]`` (a sparsity offset per layer kind, re-centred
  by the engine so the model as a whole is at 50 %)
- ``magnitude[matrix] 50%`` (magnitude names its scope), ``magnitude[row][ties=topk] 50%``
- ``symbolic mul(sqr(W),mms(G)) 50%`` (a symbolic metric shows its expression; a non-default
  scope as ``symbolic[matrix] ...``)
- ``structured[taylor_first/sum] 25% params``, ``structured[l1/sum/query_head] per-layer``
- ``wanda 50% +BR 10ep``, ``magnitude 50% +BR+GP 3ep n32`` (reconstructed: mode, epochs, and
  the windows it fitted on when not all)
- ``structured[combined(0.4,0.1,100)/sum] 20% params calib 8`` (AdaPruner: α, β, γ of the
  combined importance; pruned with 8 of the calibration windows)
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["kind_offsets_text", "spec_label", "realised_label"]


def kind_offsets_text(offsets: Mapping[str, Any] | None) -> str:
    """The canonical text of per-kind sparsity offsets, kinds sorted, zero offsets left out:
    ``k+0.10,up-0.05`` ('' when None or all zero). One text per allocation: labels show it and
    a search's genome identity ends with it."""
    if not isinstance(offsets, Mapping):
        return ""
    return ",".join(f"{k}{float(v):+.2f}" for k, v in sorted(offsets.items())
                    if round(float(v), 4) != 0)


def _pct(x: Any) -> str:
    try:
        return f"{float(x):.0%}"
    except (TypeError, ValueError):
        return str(x)


def _structured(spec: Mapping[str, Any], o: Mapping[str, Any]) -> str:
    importance = o.get("importance", "taylor_first")
    if importance == "combined":  # α·vector + β·element first + γ·element second order
        importance += "(" + ",".join(f"{float(o.get(k, 1.0)):.3g}"
                                     for k in ("alpha", "beta", "gamma")) + ")"
    what = f"{importance}/{o.get('aggregation', 'sum')}"
    unit = o.get("attention_unit", "kv_group")
    if unit != "kv_group":
        what += f"/{unit}"
    if not o.get("attention", True):
        what += "/mlp-only"
    elif not o.get("mlp", True):
        what += "/attention-only"
    per_layer = o.get("attention_ratios") is not None or o.get("mlp_ratios") is not None
    amount = ("per-layer" if per_layer
              else f"{_pct(spec.get('sparsity', 0.0))} {o.get('ratio', 'params')}")
    return f"structured[{what}] {amount}"


def spec_label(spec: Mapping[str, Any] | None) -> str:
    """The label of a candidate spec (a dict in the canonical form; ``?`` when not a spec); a
    recovered candidate's ends with its recovery (``wanda 50% +lora r8``)."""
    if not isinstance(spec, Mapping) or not spec.get("method"):
        return "?"
    parts = [_pruning_label(spec), _samples_label(spec),
             reconstruction_label(spec.get("reconstruction")), recovery_label(spec.get("recovery"))]
    return " ".join(p for p in parts if p)


def _pruning_label(spec: Mapping[str, Any]) -> str:
    method = str(spec["method"])
    if method == "dense":
        return "dense"
    options = spec.get("options")
    o: Mapping[str, Any] = options if isinstance(options, Mapping) else {}
    if method == "structured":
        return _structured(spec, o)
    head = method
    expression = o.get("expression")
    scope = o.get("scope")
    if expression is not None:  # a symbolic metric: its expression says what it is
        if scope and scope != "row":
            head += f"[{scope}]"
        head += f" {expression}"
    else:
        if scope:
            head += f"[{scope}]"
        if o.get("ties", "index") != "index":
            head += f"[ties={o['ties']}]"
    parts = [head]
    pattern = spec.get("pattern")
    if isinstance(pattern, Mapping) and pattern.get("kind") == "nm":
        parts.append(f"{pattern.get('n')}:{pattern.get('m')}")
    else:
        parts.append(_pct(spec.get("sparsity", 0.0)))
    if spec.get("layer_ratios") == "owl":
        parts.append("owl")
    elif spec.get("layer_ratios") == "owl_band":
        parts.append("owl-band")
    elif spec.get("layer_ratios") == "by_kind":
        parts.append(f"kinds[{kind_offsets_text(spec.get('kind_offsets')) or 'uniform'}]")
    calibration = spec.get("calibration")
    if isinstance(calibration, Mapping) and calibration.get("mode") == "dense":
        parts.append("dense-calib")
    return " ".join(parts)


def _samples_label(spec: Mapping[str, Any]) -> str:
    """``calib 8`` when the spec prunes with a subset of the calibration windows."""
    samples = spec.get("calibration_samples")
    return f"calib {len(samples)}" if isinstance(samples, (list, tuple)) else ""


def realised_label(info: Mapping[str, Any] | None) -> str | None:
    """What a structured candidate really removed, from its recorded ``info``
    (``info['structured']['realised_label']``), e.g. ``realised 0% query heads``."""
    if not isinstance(info, Mapping):
        return None
    structured = info.get("structured")
    if isinstance(structured, Mapping) and structured.get("realised_label"):
        return str(structured["realised_label"])
    return None


def recovery_label(recovery: Mapping[str, Any] | None) -> str:
    """The label suffix of a recovered spec: ``+lora r8`` (empty when not recovered)."""
    if not isinstance(recovery, Mapping):
        return ""
    return f"+{recovery.get('method', 'lora')} r{recovery.get('r', '?')}"


#: how a reconstruction mode is named in labels and tables (the paper's names)
RECONSTRUCTION_TITLES = {"lr": "LR", "br": "BR", "gp": "BR+GP"}


def reconstruction_label(recipe: Mapping[str, Any] | None) -> str:
    """The label suffix of a reconstructed spec: ``+BR 10ep``, ``+BR+GP 3ep n32`` (mode,
    epochs, and the windows it fitted on when not all); empty when not reconstructed."""
    if not isinstance(recipe, Mapping):
        return ""
    mode = str(recipe.get("mode", "br"))
    text = f"+{RECONSTRUCTION_TITLES.get(mode, mode)} {recipe.get('epochs', 10)}ep"
    if recipe.get("samples") is not None:
        text += f" n{recipe['samples']}"
    return text
