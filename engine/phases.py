"""Per-phase wall-clock accounting of the pruning hot path, for `prunestudio bench --search`.

`ScoreMethod.prune_layer` and `prune_layers` lap "score", "select" and "apply" on the clock a
benchmark started with `phase_clock()`; with no clock started (every study, every other
caller) a lap is one context-variable read. On a GPU the clock synchronises the device before
reading the time, so a phase is charged with its own kernels.
"""

from __future__ import annotations

import time
from collections import defaultdict
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

import torch


class PhaseClock:
    """Seconds per phase since the clock started; `lap(phase)` charges the time since the
    previous lap (or `restart`) to `phase`."""

    def __init__(self, device: torch.device | str | None = None) -> None:
        device = torch.device(device) if device is not None else None
        self._cuda = device if device is not None and device.type == "cuda" else None
        self.seconds: dict[str, float] = defaultdict(float)
        self._t = self._now()

    def _now(self) -> float:
        if self._cuda is not None:
            torch.cuda.synchronize(self._cuda)
        return time.perf_counter()

    def restart(self) -> None:
        self._t = self._now()

    def lap(self, phase: str) -> None:
        now = self._now()
        self.seconds[phase] += now - self._t
        self._t = now


_CLOCK: ContextVar[PhaseClock | None] = ContextVar("prunestudio_phase_clock", default=None)


@contextmanager
def phase_clock(device: torch.device | str | None = None) -> Iterator[PhaseClock]:
    """Start a clock that the hot path laps until the block ends."""
    clock = PhaseClock(device)
    token = _CLOCK.set(clock)
    try:
        yield clock
    finally:
        _CLOCK.reset(token)


def restart_clock() -> None:
    clock = _CLOCK.get()
    if clock is not None:
        clock.restart()


def lap(phase: str) -> None:
    clock = _CLOCK.get()
    if clock is not None:
        clock.lap(phase)
