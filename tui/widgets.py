"""Small widgets: the machine panel, the best-so-far chart, the events log, status texts."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from rich.console import Group
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Label, RichLog, Sparkline, Static

from prunestudio.schema import Worker

from .formatting import bar, duration, eta, gib, metric_value, short_time, truncate
from .machine import MachineSnapshot
from .model import BestMetric, StudySummary
from .workers import workers_text

__all__ = [
    "BestChart",
    "EventLog",
    "MachinePanel",
    "event_text",
    "machine_text",
    "progress_text",
    "study_status_text",
    "warnings_text",
]

STUDY_STYLE = {"created": "dim", "running": "bold yellow", "finished": "green",
               "failed": "bold red", "cancelled": "magenta", "interrupted": "magenta",
               "stale": "bold red"}
LEVEL_STYLE = {"info": "", "warning": "yellow", "error": "bold red"}
LEVEL_SHORT = {"info": "info", "warning": "warn", "error": "err!"}


def _pct_bar(fraction: float | None, width: int, style: str) -> Text:
    return Text.assemble(("▕", "dim"), (bar(fraction, width), style), ("▏", "dim"))


def machine_text(s: MachineSnapshot, width: int = 80) -> Text:
    """The machine panel's lines: CPU / RAM, then one line per GPU and per GPU process."""
    out = Text(no_wrap=True, overflow="ellipsis")
    cpu = "—" if s.cpu_percent is None else f"{s.cpu_percent:3.0f}%"
    out.append(f"{truncate(s.host, 16)} ", style="bold")
    out.append(f"CPU {s.cpu_count or '?'}× ")
    out.append_text(_pct_bar(None if s.cpu_percent is None else s.cpu_percent / 100, 8, "cyan"))
    out.append(f" {cpu}  RAM ")
    ram = None if not s.ram_total or s.ram_used is None else s.ram_used / s.ram_total
    out.append_text(_pct_bar(ram, 8, "cyan"))
    out.append(f" {gib(s.ram_used)}/{gib(s.ram_total)} GiB")
    if s.load is not None and width >= 90:
        out.append("  load " + " ".join(f"{x:.2f}" for x in s.load), style="dim")
    for g in s.gpus:
        out.append("\n")
        out.append(f"GPU{g.index} ", style="bold")
        out.append(f"{truncate(g.name.replace('NVIDIA ', ''), 14):<14} ")
        out.append_text(_pct_bar(None if g.util is None else g.util / 100, 8, "green"))
        out.append(" —  " if g.util is None else f" {g.util:3.0f}% ")
        mem = None if not g.mem_total or g.mem_used is None else g.mem_used / g.mem_total
        out.append_text(_pct_bar(mem, 8, "magenta"))
        out.append(f" {gib(g.mem_used)}/{gib(g.mem_total)} GiB")
        if g.temperature is not None:
            out.append(f" {g.temperature:.0f}°C")
        if g.power is not None:
            limit = f"/{g.power_limit:.0f}" if g.power_limit else ""
            out.append(f" {g.power:.0f}{limit}W")
    for p in s.processes:
        out.append("\n")
        out.append(f"  gpu{p.gpu} pid {p.pid:<7d} {gib(p.mem):>5} GiB  ", style="dim")
        out.append(truncate(p.name, max(10, width - 36)))
    if s.gpu_note and not s.gpus:
        out.append("\n")
        out.append(s.gpu_note, style="dim italic")
    return out


class MachinePanel(Static):
    """GPU / CPU / RAM figures of this machine (:meth:`show` takes a
    :class:`MachineSnapshot`), then the workers of the running studies with their devices
    (:meth:`show_workers`), wherever they run: a GPU of another node shows up there."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(Text("sampling…", style="dim"), **kwargs)
        self.snapshot: MachineSnapshot | None = None
        self._workers: tuple[list[Worker], dict[int, str], float] = ([], {}, 0.0)

    def show(self, snapshot: MachineSnapshot) -> None:
        self.snapshot = snapshot
        self._render_all()

    def show_workers(self, workers: list[Worker], study_names: dict[int, str],
                     now: float) -> None:
        """The worker rows to list (each study's by name) and the clock their ages read."""
        self._workers = (workers, study_names, now)
        self._render_all()

    def _render_all(self) -> None:
        width = self.size.width or 80
        out = (machine_text(self.snapshot, width) if self.snapshot is not None
               else Text("sampling…", style="dim"))
        if self._workers[0]:
            out.append("\n")
            out.append_text(workers_text(*self._workers, width=width))
        self.update(out)

    def on_resize(self) -> None:
        if self.snapshot is not None or self._workers[0]:
            self._render_all()


def progress_text(s: StudySummary, width: int = 8) -> Text:
    """``███▌     37/100`` — the candidates that spent the budget over the budget (a gp /
    random search counts real fitness evaluations only: ``StudySummary.progress``)."""
    total = s.total
    frac = None if not total else min(1.0, s.progress / total)
    status = s.shown_status
    style = "green" if status == "finished" else STUDY_STYLE.get(status, "cyan")
    if status == "running":
        style = "cyan"
    return Text.assemble((bar(frac, width), style), f" {s.progress}/{total if total else '?'}")


def study_status_text(s: StudySummary) -> Text:
    status = s.shown_status
    text = Text(status, style=STUDY_STYLE.get(status, ""))
    if s.cancel_requested and s.active:
        text.append(" (cancelling)", style="magenta")
    return text


def best_text(best: BestMetric | None) -> str:
    return "" if best is None else metric_value(best.value)


def study_line(s: StudySummary, now: float, best: tuple[str, float, int] | None) -> Group:
    """The study screen's summary line: status, progress, counts, best, elapsed and ETA."""
    elapsed = s.elapsed(now)
    left = eta(elapsed, s.progress, s.total) if s.live else None
    head = Text.assemble((f"{s.name} ", "bold"), f"{s.kind} · ", study_status_text(s), " · ",
                         progress_text(s, 8), no_wrap=True, overflow="ellipsis")
    counts = [(s.n_running, "running", "yellow"), (s.n_failed, "failed", "red"),
              (s.n_skipped, "skipped", "dim"), (s.n_pending, "pending", "dim")]
    for n, label, style in counts:
        if n:
            head.append(f" · {n} {label}", style=style)
    line = Text(no_wrap=True, overflow="ellipsis")
    if best is not None:
        title, value, candidate_id = best
        line.append(f"best {title} ", style="bold")
        line.append(metric_value(value), style="bold green")
        line.append(f" (id {candidate_id}) · ")
    line.append(f"elapsed {duration(elapsed)}")
    if s.live:
        line.append(f" · ETA {duration(left)}")
    elif s.shown_status == "stale":
        line.append(" · runner gone (no heartbeat): resume the study with --resume",
                    style="red")
    if s.error:
        first = truncate(s.error.splitlines()[0], 60)
        if s.status in ("cancelled", "interrupted"):
            line.append(f" · {first}", style="magenta")
        else:
            line.append(f" · error: {first}", style="red")
    line.append(f" · {s.model}", style="dim")
    return Group(head, line)


class BestChart(Horizontal):
    """Best primary metric so far over candidate index, as a sparkline (log scale)."""

    def compose(self) -> ComposeResult:
        yield Label(Text("best so far\n—", style="dim"), id="chart-label")
        yield Sparkline([], id="chart-line")

    def show(self, title: str | None, series: Sequence[float], lower_is_better: bool) -> None:
        label = self.query_one("#chart-label", Label)
        line = self.query_one("#chart-line", Sparkline)
        if not series or title is None:
            label.update(Text("best so far\nno results yet", style="dim"))
            line.data = []
            return
        label.update(Text.assemble(
            (f"best {truncate(title, 14)}\n", "bold"),
            (metric_value(series[-1]), "bold green"), (f" ← {metric_value(series[0])}", "dim"),
        ))
        positive = all(v > 0 for v in series)
        data = [math.log(v) if positive else v for v in series]
        # bars grow as the best improves, whichever direction is better
        line.data = [-v for v in data] if lower_is_better else data
        if len(set(data)) == 1:
            line.data = [1.0 for _ in data]


MAX_WARNINGS = 3  # lines the study screen's warnings panel shows


def warnings_text(warnings: Sequence[str]) -> Text:
    """The study screen's warnings panel: ``warning: <text>`` per overfitting warning (one
    line each, cut at the screen's edge; ``prunestudio show`` prints them whole), at most
    :data:`MAX_WARNINGS` lines."""
    out = Text(no_wrap=True, overflow="ellipsis", style="yellow")
    shown = list(warnings) if len(warnings) <= MAX_WARNINGS else list(warnings[:MAX_WARNINGS - 1])
    for i, text in enumerate(shown):
        if i:
            out.append("\n")
        out.append("warning: ", style="bold yellow")
        out.append(text)
    if len(shown) < len(warnings):
        out.append(f"\n… {len(warnings) - len(shown)} more warnings: prunestudio show",
                   style="dim")
    return out


def event_text(e: dict[str, Any]) -> Text:
    level = str(e.get("level") or "info")
    out = Text.assemble((short_time(e.get("time")) + " ", "dim"),
                        (f"{LEVEL_SHORT.get(level, level[:4]):<4} ", LEVEL_STYLE.get(level, "")))
    out.append(str(e.get("message", "")), style=LEVEL_STYLE.get(level, ""))
    if e.get("progress") is not None:
        out.append(f" [{float(e['progress']):.0%}]", style="cyan")
    return out


class EventLog(RichLog):
    """The study's events (bounded: the newest ``max_lines``)."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_lines=500, wrap=False, markup=False, highlight=False, **kwargs)

    def add(self, events: Sequence[dict[str, Any]]) -> None:
        for e in events:
            self.write(event_text(e))

