"""LLM-Pruner-style structured pruning (Ma et al. 2023): whole attention heads / KV groups and
MLP channels are removed and the model physically shrinks.

It works on whole blocks and changes shapes, so it does not go through `prune_model` (whose
per-layer masks a `WeightSnapshot` undoes): call
`prunestudio.engine.structured.prune_structured(lm, spec, stats)`, which returns a pruned copy.
"""

from __future__ import annotations

from prunestudio.engine.methods.base import MethodOptions, PruningMethod
from prunestudio.engine.structured.importance import needs as importance_needs
from prunestudio.engine.structured.options import StructuredOptions


class Structured(PruningMethod):
    name = "structured"
    description = ("LLM-Pruner-style structured pruning: removes heads / KV groups and MLP "
                   "channels (model shrinks); Taylor / magnitude / activation importance")
    options_model = StructuredOptions
    structured = True
    # For the method listing: the Taylor importances (the default) read gradients and the
    # diagonal Fisher, which prune_structured computes itself (not GBLM's G).
    needs_grad = True

    def needs(self, options: MethodOptions) -> frozenset[str]:
        # Taylor statistics (G and the diagonal Fisher) are computed by prune_structured itself.
        return frozenset({"x"}) if "x" in importance_needs(options.importance) else frozenset()

    def sparsity_from_options(self, options: MethodOptions) -> bool:
        return bool(options.per_layer)

    def spec_label(self, sparsity: float, options: MethodOptions) -> str:
        o: StructuredOptions = options  # type: ignore[assignment]
        what = f"{o.importance}/{o.aggregation}"
        if o.attention_unit != "kv_group":
            what += f"/{o.attention_unit}"
        if not o.attention:
            what += "/mlp-only"
        elif not o.mlp:
            what += "/attention-only"
        amount = "per-layer" if o.per_layer else f"{sparsity:.0%} {o.ratio}"
        return f"structured[{what}] {amount}"

    def prune_layer(self, lin, target, inputs, options) -> None:
        raise RuntimeError("structured pruning shrinks whole blocks: call "
                           "prunestudio.engine.structured.prune_structured(lm, spec, stats)")
