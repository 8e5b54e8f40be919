"""The detail of one candidate: spec, expression tree, per-layer ratios, every metric with its
protocol, parents, timings and error text."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from rich.console import Group, RenderableType
from rich.text import Text
from textual.containers import VerticalScroll
from textual.widgets import Static

from prunestudio.schema import Candidate, column_titles
from prunestudio.schema.expression_tree import render_tree

from .formatting import duration, layer_ratios, metric_value

__all__ = ["CandidateDetail", "render_candidate", "spec_lines", "ratio_lines"]

STATUS_STYLE = {
    "running": "bold yellow", "pending": "dim", "done": "green", "failed": "bold red",
    "skipped": "dim italic",
}
_BLOCKS = "▁▂▃▄▅▆▇█"


def _scalar(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, str):
        return value
    if value is None:
        return "null"
    return str(value)


def spec_lines(value: Any, indent: int = 0, skip: tuple[str, ...] = ()) -> list[str]:
    """A spec as ``key: value`` lines, nested dicts indented; long number lists abbreviated
    (they are drawn under "layer ratios")."""
    pad = "  " * indent
    out: list[str] = []
    if not isinstance(value, Mapping):
        return [pad + _scalar(value)]
    for key, v in value.items():
        if key in skip:
            continue
        if isinstance(v, Mapping):
            if not v:
                out.append(f"{pad}{key}: {{}}")
            elif all(not isinstance(x, (Mapping, list)) for x in v.values()) and len(v) <= 4:
                inner = " ".join(f"{k}={_scalar(x)}" for k, x in v.items())
                out.append(f"{pad}{key}: {inner}")
            else:
                out.append(f"{pad}{key}:")
                out.extend(spec_lines(v, indent + 1))
        elif isinstance(v, list) and len(v) > 8:
            out.append(f"{pad}{key}: [{len(v)} values]")
        elif isinstance(v, list):
            out.append(f"{pad}{key}: [{', '.join(_scalar(x) for x in v)}]")
        else:
            out.append(f"{pad}{key}: {_scalar(v)}")
    return out


def ratio_lines(name: str, ratios: list[float], per_line: int = 8) -> list[Text]:
    """A block chart of per-layer ratios (0 → ▁, 1 → █) and the values, ``per_line`` a row."""
    chart = "".join(_BLOCKS[min(7, max(0, int(r * 8)))] for r in ratios)
    mean = sum(ratios) / len(ratios)
    out = [Text.assemble((f"{name} ", "bold"), (chart, "cyan")),
           Text(f"  {len(ratios)} layers · min {min(ratios):.3f} · mean {mean:.3f}"
                f" · max {max(ratios):.3f}")]
    for start in range(0, len(ratios), per_line):
        chunk = " ".join(f"{r:.3f}" for r in ratios[start : start + per_line])
        out.append(Text(f"  L{start:<3d} {chunk}", style="dim"))
    return out


def _seconds(value: Any) -> str:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return f"{value:.2f}s" if value < 60 else duration(value)
    return _scalar(value)


def _section(title: str) -> Text:
    return Text(title, style="bold underline")


def _protocol(protocol: Mapping[str, Any]) -> str:
    return " · ".join(f"{k}={_scalar(v)!r}" if isinstance(v, str) and not v.strip()
                      else f"{k}={_scalar(v)}" for k, v in protocol.items())


def render_candidate(
    c: Candidate, *, idx_of: Callable[[int], int | None] = lambda _: None,
    export_command: str | None = None,
) -> RenderableType:
    """Everything about the candidate ``c`` (a store record)."""
    parts: list[RenderableType] = []
    gen = c.generation
    parts.append(Text.assemble(
        (f"#{c.idx} ", "bold"), (f"(id {c.id}) ", "dim"),
        (c.status, STATUS_STYLE.get(c.status, "")), f" · origin {c.origin}",
        f" · gen {gen}" if gen is not None else "",
        (f" · worker {c.worker}", "dim") if c.worker else "",
    ))
    label = f"{c.label} (reference)" if c.is_reference else c.label
    parts.append(Text(label, style="bold cyan"))
    if c.error:
        parts += [_section("Error"), Text(c.error.rstrip(), style="red")]

    spec = dict(c.spec)
    if c.expression:
        parts += [_section("Expression"), Text(c.expression, style="italic"),
                  Text(render_tree(c.expression), style="magenta")]
    ratios = layer_ratios(spec)
    if ratios:
        parts.append(_section("Layer ratios"))
        for name, values in ratios.items():
            parts.extend(ratio_lines(name, values))
    parts += [_section("Spec"), Text("\n".join(spec_lines(spec)) or "{}")]

    parts.append(_section(f"Metrics ({len(c.metrics)})"))
    if not c.metrics:
        parts.append(Text("none recorded", style="dim"))
    titles = column_titles([m.identity for m in c.metrics])
    for m, title in zip(c.metrics, titles, strict=True):
        parts.append(Text.assemble((f"{title} ", "bold"), (metric_value(m.value), "green")))
        where = m.identity.description + (f" · n={m.n_samples}" if m.n_samples is not None
                                          else "")
        parts.append(Text(f"  {where}", style="dim"))
        if m.protocol:
            parts.append(Text(f"  {_protocol(m.protocol)}", style="dim italic"))

    if c.parents:
        named = [f"#{idx_of(p)} (id {p})" if idx_of(p) is not None else f"id {p}"
                 for p in c.parents]
        parts += [_section("Parents"), Text(", ".join(named))]
    if c.timings:
        parts += [_section("Timings"), Text(" · ".join(
            f"{k} {_seconds(v)}" for k, v in c.timings.items()))]
    if c.info:
        parts += [_section("Info"), Text("\n".join(spec_lines(c.info)))]
    if export_command:
        parts += [_section("Export (x)"), Text(export_command, style="dim")]
    return Group(*parts)


class CandidateDetail(VerticalScroll):
    """Scrollable detail pane; :meth:`show` replaces its content."""

    def compose(self):  # type: ignore[no-untyped-def]
        yield Static(Text("Select a candidate", style="dim"), id="detail-body")

    def show(self, renderable: RenderableType) -> None:
        self.query_one("#detail-body", Static).update(renderable)
