"""Perplexity on every [[evaluation]] set (the Wanda / SparseGPT protocol, `evaluate.perplexity`).

Settings: `protocol` — extra protocol keys recorded with each figure (e.g. a search's
``stage = "finalist"``)."""

from __future__ import annotations

from typing import Any

from prunestudio.engine.evaluate.perplexity import perplexity
from prunestudio.engine.study.measurements.base import Measurement, Metric, NoSettings


class Settings(NoSettings):
    protocol: dict[str, Any] = {}


class Perplexity(Measurement):
    name = "perplexity"
    settings_model = Settings
    timing = "evaluate"

    def measure(self, model, ctx) -> list[Metric]:
        out = []
        for ev in ctx.study.evaluations:
            with ctx.reporter.task(f"ppl {ev.role}", ev.windows.n) as bar:
                ppl = perplexity(model.model, ev.windows, model.device, ev.batch_size, bar)
            metric = ppl.metric(fidelity=ev.fidelity, role=ev.role, windows=ev.windows)
            metric["protocol"].update(self.settings.protocol)
            out.append(metric)
        return out
