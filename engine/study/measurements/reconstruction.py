"""What a reconstructed candidate's fit did (Shin et al. 2024): its calibration errors.

Role ``reconstruction``, on the calibration windows it fitted on: ``calib_error`` (against the
dense model's hidden states, after the fit; the overfitting report's calibration error),
``calib_error_before``, ``recon_error_before`` / ``recon_error_after`` (against the mode's own
target); per-block values and the per-epoch curves ride in their protocols. Runs only for a
spec with ``reconstruction`` (every grid candidate asks for it).
"""

from __future__ import annotations

from prunestudio.engine.study.measurements.base import MeasureContext, Measurement, Metric


class Reconstruction(Measurement):
    name = "reconstruction"
    timing = None  # its seconds are part of pruning (and in calib_error's protocol)

    def applies(self, ctx: MeasureContext) -> bool:
        result = ctx.pruned.result
        return result is not None and result.reconstruction is not None

    def measure(self, model, ctx: MeasureContext) -> list[Metric]:
        windows = ctx.study.calibration
        spec = windows.spec
        protocol = {"calibration": spec.model_dump(mode="json")}
        return ctx.pruned.result.reconstruction.metrics(spec.source, spec.split,
                                                        windows.tokens_hash, protocol)
