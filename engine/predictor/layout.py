"""The prunable structure of a loaded model as the predictor's search space counts it
(`space.Layout`): per decoder block the attention removal steps and MLP channels with the
parameters each removes, read with the same groups structured pruning cuts
(`engine.structured.groups.block_groups`, steps as `GroupSet.steps` counts them), so the
space's parameter accounting is what `prune_structured` realises."""

from __future__ import annotations

from prunestudio.engine.models.loading import LoadedModel
from prunestudio.engine.predictor.space import BlockLayout, Layout
from prunestudio.engine.structured.groups import block_groups
from prunestudio.engine.structured.plan import attention_unit_name, count_params


def model_layout(lm: LoadedModel, attention_unit: str = "kv_group") -> Layout:
    model, adapter = lm.model, lm.adapter
    blocks, unit = [], attention_unit
    for b in range(adapter.num_blocks(model)):
        att, mlp = block_groups(adapter, model, b, attention_unit)
        # one step of query_head mode: a query head out of every KV group; of a mixture of
        # experts' MLP: a channel out of every expert (GroupSet.steps)
        steps, per = att.steps()
        channels, per_channel = mlp.steps()
        unit = attention_unit_name(att)
        blocks.append(BlockLayout(steps, per, channels, per_channel))
    return Layout(tuple(blocks), count_params(model), unit)
