"""The model's prunable structure (`engine.predictor.layout`): per block the attention units
and MLP channels structured pruning can remove and the parameters each holds. Value: the
parameters all those units hold; the layout is in the protocol. The accuracy-predictor search
measures it on the dense model and builds its search space from it."""

from __future__ import annotations

from typing import Literal

from prunestudio.engine.study.measurements.base import Measurement, Metric, NoSettings


class Settings(NoSettings):
    attention_unit: Literal["kv_group", "query_head"] = "kv_group"


class StructureLayout(Measurement):
    name = "structure_layout"
    settings_model = Settings
    timing = None

    def measure(self, model, ctx) -> list[Metric]:
        from prunestudio.engine.predictor.layout import model_layout

        layout = model_layout(model, self.settings.attention_unit)
        prunable = sum(b.att_units * b.att_params + b.mlp_units * b.mlp_params
                       for b in layout.blocks)
        return [{"name": "prunable_params", "value": float(prunable), "role": "structure",
                 "protocol": {"layout": layout.to_dict(),
                              "scope": "attention units and MLP channels of every block"}}]
