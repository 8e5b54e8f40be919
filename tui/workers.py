"""Workers on screen: the study screen's per-worker timeline (one text lane per worker) and
the machine panel's list of workers (device, host, current candidate, heartbeat age).

Pure renderers of the store's records (``WorkerTimeline``, ``WorkerSummary``, ``Worker``) plus
the timeline panel widget. Times come from the store and the app's clock, never the wall
clock, so snapshots stay deterministic.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import VerticalScroll
from textual.widgets import Static

from prunestudio.schema import Worker, WorkerLane, WorkerTimeline
from prunestudio.schema.workers import dominant_status

from .feed import WorkersView
from .formatting import duration, short_time, truncate

__all__ = ["LANE_STYLE", "WorkerTimelinePanel", "lane_cells", "timeline_text", "workers_text"]

LANE_STYLE = {"done": "green", "failed": "bold red", "running": "bold yellow",
              "skipped": "dim"}
_SHADES = "░▒▓█"  # how much of a cell's time the worker was busy: <30%, <60%, <90%, more
_STATS_WIDTH = 28  # " cand busy s/cand  now" columns after the bar


def lane_cells(lane: WorkerLane, timeline: WorkerTimeline, width: int) -> Text:
    """The lane as ``width`` cells: each covers an equal share of the timeline's bins,
    shaded by how busy the worker was there and coloured by the status that stretch is
    drawn in (``dominant_status``: running, then failures from a quarter of the time, else
    the longest)."""
    n = timeline.n_bins
    out = Text()
    for j in range(width):
        lo, hi = j * n // width, max(j * n // width + 1, (j + 1) * n // width)
        busy: dict[str, float] = {}
        for b in range(lo, min(hi, n)):
            for status, seconds in lane.bins[b].items():
                busy[status] = busy.get(status, 0.0) + seconds
        total = sum(busy.values())
        if total <= 0:
            out.append(" ")
            continue
        frac = total / ((hi - lo) * timeline.bin_s) if timeline.bin_s > 0 else 1.0
        shade = _SHADES[sum(frac >= t for t in (0.3, 0.6, 0.9))]
        out.append(shade, style=LANE_STYLE.get(dominant_status(busy) or "done", ""))
    return out


def _now_cell(worker: Worker | None) -> tuple[str, str]:
    """What the worker does now: its candidate's id, idle (or driver: a parallel study's
    driver runs none), stale (no recent heartbeat: gone) or ended (no worker row: it
    stopped)."""
    if worker is None:
        return "ended", "dim"
    if worker.stale:
        return "stale", "bold red"
    if worker.candidate_id is not None:
        return f"id {worker.candidate_id}", "bold"
    if (worker.device or {}).get("role") == "driver":
        return "driver", "dim"  # it writes the store; the actors run the candidates
    return "idle", "dim"


def timeline_text(view: WorkersView, width: int) -> Text:
    """The timeline panel: a title with the legend, a header with the span's start and end
    times, then one lane per worker with its candidates, busy share of the span, mean time
    per candidate, what it does now and, where the width allows, its device."""
    tl = view.timeline
    out = Text(no_wrap=True, overflow="ellipsis")
    out.append("Workers ", style="bold")
    out.append(f"{len(tl.lanes)} · ", style="dim")
    if tl.start is None:
        out.append("no candidate has started yet", style="dim")
        return out
    bar_w, name_w, dev_w = _widths(view, width)
    out.append(f"over {duration(tl.span_s)} · 1 cell ≈ {duration(tl.span_s / bar_w)} · ",
               style="dim")
    for status in ("done", "failed", "running"):
        out.append("█", style=LANE_STYLE[status])
        out.append(f" {status} ", style="dim")
    left, right = short_time(tl.start), short_time(tl.end)
    axis = (left + right.rjust(bar_w - len(left))) if bar_w >= len(left) + len(right) + 1 \
        else left.ljust(bar_w)
    out.append("\n")
    out.append(f"{'worker':<{name_w}} ", style="dim")
    out.append(f"▕{axis}▏", style="dim")
    out.append(f" {'cand':>5} {'busy':>4} {'s/cand':>6}  {'now':<8}", style="dim")
    if dev_w:
        out.append(" device", style="dim")
    for lane in tl.lanes:
        summary = view.summaries.get(lane.name)
        worker = view.workers.get(lane.name)
        share = tl.utilisation(lane.name)
        out.append("\n")
        out.append(f"{truncate(lane.name, name_w):<{name_w}} ", style="bold")
        out.append("▕", style="dim")
        out.append_text(lane_cells(lane, tl, bar_w))
        out.append("▏", style="dim")
        mean = summary.mean_s if summary is not None else None
        out.append(f" {summary.candidates if summary else 0:>5}"
                   f" {'' if share is None else f'{share:.0%}':>4}"
                   f" {duration(mean) if mean is not None else '—':>6}  ")
        text, style = _now_cell(worker)
        out.append(f"{text:<8}", style=style)
        if dev_w and worker is not None:
            out.append(f" {truncate(worker.device_label, dev_w)}", style="cyan")
    return out


def _widths(view: WorkersView, width: int) -> tuple[int, int, int]:
    """(bar, name, device) widths for a panel ``width`` cells wide: the bar takes what the
    name and figures leave; the device label (20 cells or more) only where the bar keeps 32
    (the machine panel of the studies screen lists every worker's device anyway)."""
    names = [lane.name for lane in view.timeline.lanes]
    name_w = max(8, min(20, max((len(n) for n in names), default=0)))
    avail = width - name_w - 3 - _STATS_WIDTH
    labels = [w.device_label for w in view.workers.values() if w.name in names]
    longest = max((len(label) for label in labels), default=0)
    dev_w = min(longest, avail - 33) if longest and avail - 33 >= 20 else 0
    return max(8, avail - (dev_w + 1 if dev_w else 0)), name_w, dev_w


def workers_text(workers: Iterable[Worker], study_names: Mapping[int, str], now: float,
                 width: int = 80) -> Text:
    """The machine panel's worker lines, grouped by study: each worker's name, host, current
    candidate, how long ago it beat (in red when stale: its runner is gone) and its device
    (``Worker.device_label``, last: it gets what the width leaves), so a GPU of another node
    shows up here too."""
    found = sorted(workers, key=lambda w: (w.study_id or 0, w.name))
    out = Text(no_wrap=True, overflow="ellipsis")
    if not found:
        return out
    name_w = max(8, min(20, max(len(w.name) for w in found)))
    host_w = max(4, min(14, max(len(w.host or "?") for w in found)))
    study = None
    for w in found:
        if w.study_id != study:
            study = w.study_id
            if out:
                out.append("\n")
            count = sum(x.study_id == study for x in found)
            out.append(f"workers of {study_names.get(study or 0, f'study {study}')}",
                       style="bold")
            out.append(f" ({count})", style="dim")
        out.append("\n")
        out.append(f"  {truncate(w.name, name_w):<{name_w}} ")
        out.append(f"{truncate(w.host or '?', host_w):<{host_w}} ", style="dim")
        text, style = _now_cell(w)
        out.append(f"{text:<8} ", style=style)
        out.append(f"{duration(max(0.0, now - w.heartbeat)):>6} ",
                   style="red" if w.stale else "dim")
        room = width - (name_w + host_w + 19)
        if w.device_label:
            out.append(truncate(w.device_label, max(3, room)), style="cyan")
        else:
            out.append("—", style="dim")
    return out


class WorkerTimelinePanel(VerticalScroll):
    """The study screen's worker timeline (hidden until toggled); :meth:`show` takes a
    :class:`~.feed.WorkersView` and draws it on the panel's width."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.view: WorkersView | None = None

    def compose(self) -> ComposeResult:
        yield Static(Text("reading the workers…", style="dim"), id="timeline-body")

    def show(self, view: WorkersView) -> None:
        self.view = view
        width = self.scrollable_content_region.width or 78
        self.query_one("#timeline-body", Static).update(timeline_text(view, width))

    def on_resize(self) -> None:
        if self.view is not None:
            self.show(self.view)

