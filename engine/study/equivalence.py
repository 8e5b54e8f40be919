"""Mask equivalence as hooks around evaluation (see `search.fitness` for why it is exact).

- before pruning (driver, free): `by_rank_key` — a symbolic metric that is an evaluated metric
  under strictly increasing outer transforms gets its fitness without any pruning;
- after pruning, before measuring (executor): the job carries `known_masks`; a pruned model
  whose zero-pattern hash is known comes back ``equivalent`` and is not measured;
- finalists: `held_out_from` takes the held-out figures of a candidate with the same pruned
  model instead of measuring them again.

Every reuse is recorded as metrics whose protocol says ``reused_from``, ``equivalence`` and the
mask hash; an evaluated item is then 'skipped' with ``info.equivalent_to``.
"""

from __future__ import annotations

from typing import Any

from prunestudio.engine.search.fitness_reuse import reused_metric
from prunestudio.engine.search.state import Individual, SearchHistory
from prunestudio.engine.study.proposers.base import Reuse

from prunestudio.schema import METRIC_KEYS, SEARCH_ROLE


def metric_fields(m: dict[str, Any]) -> dict[str, Any]:
    return {k: m.get(k) for k in METRIC_KEYS}


def by_rank_key(history: SearchHistory, mode: str, rank_key: str) -> Individual | None:
    return history.equivalent_by_rank_key(rank_key) if mode == "rank_key+mask" else None


def known_masks(history: SearchHistory, mode: str) -> dict[str, int]:
    """Zero-pattern hash → the first evaluated candidate with it (none when mode is off)."""
    out: dict[str, int] = {}
    if mode == "off":
        return out
    for ind in history.individuals:
        if ind.evaluated and ind.mask_hash:
            out.setdefault(ind.mask_hash, ind.id)
    return out


def fitness_reuse(cid: int, ref: Individual, ref_metrics: list[dict[str, Any]], how: str,
                  mask_hash: str | None, info: dict[str, Any]) -> Reuse:
    """Candidate `cid` takes the fitness of the evaluated candidate `ref` (notes added by the
    caller)."""
    source = next(m for m in ref_metrics if m["name"] == "ppl" and m["role"] == SEARCH_ROLE)
    info = {**info, "equivalent_to": ref.id, "equivalence": how, "mask_hash": mask_hash,
            "evaluation": "reused"}
    reason = (f"mask-equivalent to candidate {ref.id} ({ref.expression or ref.method}, by "
              f"{'rank key' if how == 'rank_key' else 'identical pruned weights'}): fitness "
              "reused, not evaluated again")
    return Reuse(ref.id, [reused_metric(metric_fields(source), ref.id, how, mask_hash)], info,
                 reason)


def held_out_from(ind: Individual, history: SearchHistory,
                  metrics_of: dict[int, list[dict[str, Any]]],
                  wanted: set[tuple[str, str]], extra: dict[str, Any]) -> Reuse | None:
    """A candidate whose pruned model equals `ind`'s and has every wanted (role, fidelity)
    perplexity: its figures, marked as reused (e.g. the Wanda seed and the Wanda baseline)."""
    if not ind.mask_hash:
        return None
    for other in history.individuals:
        if other.id == ind.id or other.mask_hash != ind.mask_hash:
            continue
        full = [m for m in metrics_of.get(other.id, [])
                if m["name"] == "ppl" and (m["role"], m["fidelity"]) in wanted]
        if {(m["role"], m["fidelity"]) for m in full} != wanted:
            continue
        metrics = []
        for m in full:
            m = metric_fields(m)
            m["protocol"] = {**(m["protocol"] or {}), **extra, "reused_from": other.id,
                             "equivalence": "mask", "mask_hash": ind.mask_hash}
            metrics.append(m)
        return Reuse(other.id, metrics)
    return None
