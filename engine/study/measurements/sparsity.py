"""What the pruning realised: for in-place methods the sparsity of the pruned layers and its
largest error against the target; for shape-changing methods their realised ratios
(`ShapeInfo.metrics()`, e.g. parameters and groups removed)."""

from __future__ import annotations

from prunestudio.engine.study.measurements.base import Measurement, Metric


class Sparsity(Measurement):
    name = "sparsity"
    timing = None

    def measure(self, model, ctx) -> list[Metric]:
        pruned, spec = ctx.pruned, ctx.spec
        if pruned.shape is not None:
            return pruned.shape.metrics()
        result = pruned.result
        if spec.method == "dense" or result is None or not result.layer_sparsity:
            return []
        values = list(result.layer_sparsity.values())
        protocol = {
            "target": spec.sparsity,
            "n_layers": len(values),
            "min_layer": min(values),
            "max_layer": max(values),
            "max_abs_error": result.max_target_error,
            "scope": "prunable linear layers (embeddings and lm_head excluded)",
        }
        return [
            {"name": "sparsity", "value": result.overall_sparsity, "role": "pruned_layers",
             "protocol": protocol},
            {"name": "sparsity_max_error", "value": result.max_target_error,
             "role": "pruned_layers", "protocol": {"target": spec.sparsity}},
        ]
