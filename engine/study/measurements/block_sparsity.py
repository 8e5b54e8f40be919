"""Realised sparsity per decoder block: how evenly a candidate's zeros are spread over depth
(uniform ratios give a spread near 0; OWL or per-block ratios show their profile).

Value: the spread (largest − smallest block sparsity); the per-block figures are in the
protocol. Ask for it with ``[study] measurements = ["block_sparsity"]``."""

from __future__ import annotations

import torch
from prunestudio.engine.study.measurements.base import Measurement, Metric


class BlockSparsity(Measurement):
    name = "block_sparsity"
    timing = None

    @torch.no_grad()
    def measure(self, model, ctx) -> list[Metric]:
        adapter, per_block = model.adapter, []
        for b in range(adapter.num_blocks(model.model)):
            lins = adapter.prunable_linears(model.model, b)
            zeros = sum(int((lin.weight == 0).sum()) for lin in lins)
            per_block.append(zeros / max(1, sum(lin.weight.numel() for lin in lins)))
        if not per_block:
            return []
        return [{"name": "block_sparsity", "value": max(per_block) - min(per_block),
                 "role": "pruned_layers", "protocol": {
                     "statistic": "max - min of the blocks' realised sparsity",
                     "per_block": per_block, "min": min(per_block), "max": max(per_block),
                     "target": ctx.spec.sparsity,
                     "scope": "prunable linear layers of each decoder block"}}]
