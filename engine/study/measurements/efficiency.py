"""Size and speed (`evaluate.efficiency`): parameters, MACs per token, latency, tokens/s, peak
memory at the first evaluation set's seqlen. By default only where they can change: the dense
reference and models whose shape changed (`when = "always"` measures every candidate)."""

from __future__ import annotations

from typing import Literal

from prunestudio.engine.study.measurements.base import Measurement, Metric, NoSettings


class Settings(NoSettings):
    when: Literal["shape_changed", "always"] = "shape_changed"
    timing: bool = True  # latency, tokens/s and peak memory besides the counts


class Efficiency(Measurement):
    name = "efficiency"
    settings_model = Settings
    timing = "efficiency"

    def applies(self, ctx) -> bool:
        return (self.settings.when == "always" or ctx.pruned.shape is not None
                or ctx.spec.method == "dense")

    def measure(self, model, ctx) -> list[Metric]:
        from prunestudio.engine.evaluate.efficiency import efficiency_metrics

        seqlen = ctx.study.evaluations[0].windows.seqlen
        return efficiency_metrics(model.model, model.adapter, seqlen=seqlen,
                                  timing=self.settings.timing)
