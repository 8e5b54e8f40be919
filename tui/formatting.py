"""Plain text formatting shared by the screens: numbers, durations, bars, layer ratios.

(Candidate labels are the schema's: ``prunestudio.schema.Candidate.label``.)

Pure functions of their arguments (no clock, no Textual), so they are easy to test and the
snapshots stay deterministic.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = [
    "bar",
    "duration",
    "eta",
    "gib",
    "metric_value",
    "short_time",
    "layer_ratios",
    "truncate",
]

_EIGHTHS = " ▏▎▍▌▋▊▉█"


def bar(fraction: float | None, width: int) -> str:
    """A horizontal bar of ``width`` cells filled to ``fraction`` (eighth-cell resolution)."""
    if width <= 0:
        return ""
    if fraction is None or not math.isfinite(fraction):
        return "·" * width
    cells = max(0.0, min(1.0, fraction)) * width
    full = int(cells)
    part = int(round((cells - full) * 8))
    if part == 8:
        full, part = full + 1, 0
    text = "█" * full
    if full < width:
        text += _EIGHTHS[part] if part else " "
    return text.ljust(width)


def duration(seconds: float | None) -> str:
    """Compact duration: ``42s``, ``3m05s``, ``2h07m``, ``3d04h``; ``—`` when unknown."""
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return "—"
    s = int(round(seconds))
    if s < 60:
        return f"{s}s"
    m, s = divmod(s, 60)
    if m < 60:
        return f"{m}m{s:02d}s"
    h, m = divmod(m, 60)
    if h < 24:
        return f"{h}h{m:02d}m"
    d, h = divmod(h, 24)
    return f"{d}d{h:02d}h"


def eta(elapsed: float | None, done: int, total: int | None) -> float | None:
    """Seconds left at the mean rate so far, or None when it cannot be estimated."""
    if elapsed is None or total is None or done <= 0 or elapsed <= 0:
        return None
    left = total - done
    if left <= 0:
        return 0.0
    return elapsed / done * left


def gib(n_bytes: float | None) -> str:
    return "—" if n_bytes is None else f"{n_bytes / 2**30:.1f}"


def metric_value(value: float | None) -> str:
    """Four significant figures, switching to exponent notation for huge or tiny values."""
    if value is None:
        return ""
    if not math.isfinite(value):
        return str(value)
    a = abs(value)
    if a != 0 and (a >= 1e6 or a < 1e-3):
        return f"{value:.3g}"
    if a >= 1000:
        return f"{value:.0f}"
    return f"{value:.4g}" if a < 1 else f"{value:.{max(0, 3 - int(math.log10(a)))}f}"


def short_time(timestamp: float | None) -> str:
    """Local wall-clock time ``HH:MM:SS`` of a Unix timestamp."""
    if timestamp is None:
        return "--:--:--"
    return time.strftime("%H:%M:%S", time.localtime(timestamp))


def truncate(text: str, width: int) -> str:
    return text if len(text) <= width else text[: max(0, width - 1)] + "…"



def layer_ratios(spec: Mapping[str, Any]) -> dict[str, list[float]]:
    """Per-layer ratio lists found in a spec: ``{"ratios": [...]}`` for one list, or one
    entry per layer type (``{"attn": [...], "mlp": [...]}``). Looks at the top level and at
    ``options``; keys named like ``*ratio*`` holding numbers (or dicts of number lists)."""
    found: dict[str, list[float]] = {}
    for where in (spec, spec.get("options") or {}):
        if not isinstance(where, Mapping):
            continue
        for key, value in where.items():
            if "ratio" not in str(key):
                continue
            if _numbers(value):
                found[str(key)] = [float(v) for v in value]
            elif isinstance(value, Mapping):
                for sub, inner in value.items():
                    if _numbers(inner):
                        found[f"{key}.{sub}"] = [float(v) for v in inner]
    return found


def _numbers(value: Any) -> bool:
    return (
        isinstance(value, Sequence) and not isinstance(value, str) and len(value) > 0
        and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value)
    )
