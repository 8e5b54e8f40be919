"""Fitness of a search candidate, and evaluating less by mask equivalence.

Fitness = perplexity on the search split (role ``search``, fidelity ``proxy``) of the model
pruned with the candidate's metric. Two metrics that rank every comparison group's weights the
same way give the same masks, hence the same pruned model and the same fitness. The runner
checks, cheapest first:

1. **rank key** (`rank_key`, symbolic, free): the metric is an evaluated metric under strictly
   increasing outer transforms (``sqrt(mul(W,sqrt(X)))`` vs Wanda) — no pruning at all;
2. **zero-pattern hash** (`zero_pattern_hash`, after pruning): a hash of which weights are zero
   in every prunable layer. The dense weights are fixed per study, so equal hashes mean an
   identical pruned model (exact, whatever the calibration mode) — the perplexity forward,
   the expensive part, is skipped.

A reused fitness is recorded as a metric whose protocol says ``reused_from`` (the candidate
actually evaluated), ``equivalence`` (``rank_key`` or ``mask``) and the mask hash; the candidate
is 'skipped' with ``info.equivalent_to``. Budgets count real evaluations only.
"""

from __future__ import annotations

import hashlib
import math
from typing import Any

import numpy as np
import torch
from prunestudio.engine.masks import zero_pattern
from prunestudio.engine.models.loading import LoadedModel

from prunestudio.schema import METRIC_KEYS


class NonFiniteFitnessError(ValueError):
    """The pruned model's search perplexity is NaN or inf: the candidate fails."""


@torch.no_grad()
def zero_pattern_hash(lm: LoadedModel) -> str:
    """Hex digest of the zero pattern of every prunable weight (layer name, shape, bits).

    Cheap next to a perplexity forward (one comparison and a bit-pack per weight)."""
    h = hashlib.blake2b(digest_size=16)
    for lin in lm.adapter.all_prunable_linears(lm.model):
        zero = zero_pattern(lin.weight)
        h.update(f"|{lin.name}|{zero.shape}|".encode())
        h.update(np.packbits(zero).tobytes())
    return h.hexdigest()


def check_fitness(value: float, what: str) -> float:
    if not math.isfinite(value):
        raise NonFiniteFitnessError(f"{what}: search perplexity is {value} (not finite); the "
                                    "pruned model diverged")
    return value


def reused_metric(source: dict[str, Any], source_id: int, how: str,
                  mask_hash: str | None) -> dict[str, Any]:
    """The fitness metric of `source` (candidate `source_id`) carried to an equivalent one."""
    metric = {k: source.get(k) for k in METRIC_KEYS}
    metric["protocol"] = {**(source.get("protocol") or {}), "reused_from": source_id,
                          "equivalence": how, "mask_hash": mask_hash}
    return metric
