"""Pure display helpers of the web app: number and time formats, the export command, what a
spec's pattern and per-layer ratios look like on screen. No Streamlit, no store."""

from __future__ import annotations

import math
import shlex
import time
from collections.abc import Mapping, Sequence
from datetime import datetime
from typing import Any

__all__ = [
    "duration",
    "export_command",
    "layer_ratio_rows",
    "method_label",
    "pattern_label",
    "stamp",
    "value_text",
]


def value_text(value: float | None) -> str:
    """A metric value in 4 significant digits (``28.67``, ``1157``, ``0.3500``, ``1.02e+08``);
    empty for None / NaN."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return ""
    v = float(value)
    if v != 0 and (abs(v) >= 1e6 or abs(v) < 1e-3):
        return f"{v:.3g}"
    if abs(v) >= 1000:
        return f"{v:.0f}"
    return f"{v:.4g}" if abs(v) >= 1 else f"{v:.4f}"


def duration(seconds: float | None) -> str:
    """``42s``, ``3m05s``, ``2h07m``, ``3d04h``; empty for None."""
    if seconds is None or (isinstance(seconds, float) and math.isnan(seconds)):
        return ""
    s = max(0, int(round(float(seconds))))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def stamp(t: float | None) -> str:
    """A store timestamp in local time, ``2026-01-01 00:03:12``; empty for None."""
    if t is None:
        return ""
    return datetime.fromtimestamp(float(t)).strftime("%Y-%m-%d %H:%M:%S")


def ago(t: float | None, now: float | None = None) -> str:
    """``12s ago``; empty for None."""
    if t is None:
        return ""
    return f"{duration((time.time() if now is None else now) - float(t))} ago"


def export_command(candidate_id: int, study_name: str, idx: int, store: str) -> str:
    """The command that exports a candidate (the TUI's form: ``prunestudio export ID
    exports/STUDY-IDX --store PATH``)."""
    folder = f"exports/{study_name}-{idx}"
    return (f"prunestudio export {candidate_id} {shlex.quote(folder)} "
            f"--store {shlex.quote(store)}")


def method_label(spec: Mapping[str, Any]) -> str:
    """A spec's method with what sets it apart, without its amount (the grouping of
    ``PPL vs sparsity`` curves): ``wanda``, ``magnitude[row]``, ``symbolic mul(W,G)``,
    ``sparsegpt dense-calib``, ``structured[taylor_mix/sum]``."""
    method = str(spec.get("method") or "?")
    options = spec.get("options") if isinstance(spec.get("options"), Mapping) else {}
    if method == "structured":
        return f"structured[{options.get('importance', 'taylor_first')}/" \
               f"{options.get('aggregation', 'sum')}]"
    if options.get("expression") is not None:
        text = f"{method} {options['expression']}"
    else:
        text = method + (f"[{options['scope']}]" if options.get("scope") else "")
        if options.get("ties", "index") != "index":
            text += f"[ties={options['ties']}]"
    calibration = spec.get("calibration")
    if isinstance(calibration, Mapping) and calibration.get("mode") == "dense":
        text += " dense-calib"
    return text


def pattern_label(spec: Mapping[str, Any]) -> str:
    """The sparsity pattern of a spec as shown in groups: ``unstructured``, ``2:4``,
    ``structured``, ``dense``; ``+owl`` when the layer ratios are OWL's (``+owl-band`` for
    its banded variant), ``+kinds`` when they are set per layer kind."""
    method = spec.get("method")
    if method == "dense":
        return "dense"
    if method == "structured":
        return "structured"
    pattern = spec.get("pattern")
    text = "unstructured"
    if isinstance(pattern, Mapping) and pattern.get("kind") == "nm":
        text = f"{pattern.get('n')}:{pattern.get('m')}"
    if spec.get("layer_ratios") == "owl":
        text += "+owl"
    elif spec.get("layer_ratios") == "owl_band":
        text += "+owl-band"
    elif spec.get("layer_ratios") == "by_kind":
        text += "+kinds"
    return text


def _numbers(value: Any) -> bool:
    return (isinstance(value, Sequence) and not isinstance(value, str) and len(value) > 0
            and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value))


def layer_ratio_rows(spec: Mapping[str, Any], info: Mapping[str, Any] | None = None
                     ) -> dict[str, list[float | None]]:
    """Per-block ratios to draw as a heatmap (rows × blocks): the spec's per-block targets
    (structured ``attention_ratios`` / ``mlp_ratios``), what a structured candidate really
    removed per block (``info.structured.realised`` — the pruned blocks only; others None)
    and OWL's per-block sparsities (``info.block_ratios``)."""
    out: dict[str, list[float | None]] = {}
    options = spec.get("options") if isinstance(spec.get("options"), Mapping) else {}
    names = {"attention_ratios": "attention target", "mlp_ratios": "mlp target"}
    for key, title in names.items():
        value = options.get(key)
        if _numbers(value):
            out[title] = [float(v) for v in value]
    info = info or {}
    structured = info.get("structured")
    if isinstance(structured, Mapping):
        realised = structured.get("realised")
        n_blocks = len(structured.get("layers") or ()) or None
        if isinstance(realised, Mapping):
            for kind in ("attention", "mlp"):
                r = realised.get(kind)
                if not isinstance(r, Mapping) or not r.get("enabled", True):
                    continue
                blocks, per_block = r.get("blocks"), r.get("realised_per_block")
                if not (_numbers(per_block) and isinstance(blocks, Sequence)):
                    continue
                n = n_blocks or (max(blocks) + 1 if blocks else len(per_block))
                row: list[float | None] = [None] * n
                for b, v in zip(blocks, per_block, strict=False):
                    if 0 <= int(b) < n:
                        row[int(b)] = float(v)
                unit = str(r.get("unit") or kind).replace("_", " ")
                out[f"{kind} realised ({unit})"] = row
    if _numbers(info.get("block_ratios")):
        out["block sparsity (owl)"] = [float(v) for v in info["block_ratios"]]
    return out
