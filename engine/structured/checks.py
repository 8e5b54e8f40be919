"""`check_structured_spec`: reject a structured spec the model cannot realise, once, before any
candidate runs (the study's preflight), with a message naming the option, its value and what
is allowed. It computes exactly the unit counts `prune_structured` would (same groups, same
`prune.unit_count` rounding, same `prune.plan_counts` checks), so a spec it accepts cannot
fail on them later.
"""

from __future__ import annotations

from typing import Any

from prunestudio.engine.models.loading import LoadedModel
from prunestudio.engine.structured.apply import is_structured, structured_options
from prunestudio.engine.structured.families import layout_for
from prunestudio.engine.structured.groups import block_groups
from prunestudio.engine.structured.plan import (
    CONFIG_KEY,
    count_params,
    plan_counts,
    pruned_blocks,
)
from torch import nn

from prunestudio.schema.spec import CandidateSpec


def _structure_of(source: Any) -> tuple[nn.Module, Any]:
    """(model, adapter) to read a structure from: a LoadedModel, a model, or a transformers
    config (then a parameterless model on the meta device, resized to the per-layer widths a
    pruned model's config records)."""
    from prunestudio.engine.models.adapters import adapter_for

    if isinstance(source, LoadedModel):
        return source.model, source.adapter
    if isinstance(source, nn.Module):
        return source, adapter_for(source)
    from transformers import PretrainedConfig

    if isinstance(source, PretrainedConfig):
        from accelerate import init_empty_weights
        from prunestudio.engine.structured.export import _resize_to
        from transformers import AutoModelForCausalLM

        adapter_for(source.model_type)  # a clear error for unsupported architectures first
        with init_empty_weights(include_buffers=False):
            model = AutoModelForCausalLM.from_config(source)
        entry = getattr(source, CONFIG_KEY, None)
        if entry is not None and not entry.get("plain_from_pretrained"):
            _resize_to(model, entry["layers"])
        return model, adapter_for(model)
    raise TypeError("check_structured_spec reads the structure from a LoadedModel, a model or "
                    f"a transformers config; got {type(source).__name__}")


def check_structured_spec(source: LoadedModel | nn.Module | Any, spec: CandidateSpec) -> None:
    """Raise `StructureError` (a ValueError) now if `spec` cannot be realised on the model,
    naming the option, its value and what is allowed; do nothing for specs that are not
    structured. Call it once per spec before any candidate runs, so that a study with an
    impossible structured spec fails fast instead of failing every candidate.

    `source`: the study's `LoadedModel` (or its model), or a transformers config (checked on a
    parameterless meta-device model, before loading any weights). Cheap: no importance, no
    calibration, nothing changes. Checks the block range, the per-layer ratio lists, the
    attention layout, and that no ratio removes every unit of a block (with the rounding the
    run uses) or more parameters than the pruned blocks hold, and that the family's layout
    allows what is asked (structured pruning needs a family adapter; e.g. Falcon with alibi
    takes MLP pruning only) — exactly the counts and refusals `prune_structured` would meet."""
    if not is_structured(spec):
        return
    opts = structured_options(spec)
    model, adapter = _structure_of(source)
    layout_for(adapter, model)  # a family whose heads and channels are known (else: which are)
    n = adapter.num_blocks(model)
    blocks = range(n) if opts.per_layer else pruned_blocks(n, opts)
    groups = {b: block_groups(adapter, model, b, opts.attention_unit) for b in blocks}
    plan_counts(groups, opts, spec.sparsity, count_params(model), n)
