"""LLM-Pruner-style structured pruning (Ma et al. 2023): whole attention heads / KV groups and
MLP channels are removed and the model physically shrinks.

A `ShapeChangingMethod`: it works on whole blocks and changes shapes, so it does not go through
`prune_model` (whose per-layer masks a `WeightSnapshot` undoes); `prune` returns a pruned copy
(`prunestudio.engine.structured.prune_structured`) and leaves the model intact.
"""

from __future__ import annotations

from prunestudio.engine.methods.base import MethodOptions, ShapeChangingMethod
from prunestudio.engine.structured.importance import needs as importance_needs

from prunestudio.schema.method_options import StructuredOptions


class Structured(ShapeChangingMethod):
    name = "structured"
    description = ("LLM-Pruner-style structured pruning: removes heads / KV groups and MLP "
                   "channels (model shrinks); Taylor / magnitude / activation importance")
    options_model = StructuredOptions
    # For the method listing: the Taylor importances (the default) read gradients and the
    # diagonal Fisher, which prune_structured computes itself (not GBLM's G).
    needs_grad = True

    def needs(self, options: MethodOptions) -> frozenset[str]:
        # Taylor statistics (G and the diagonal Fisher) are computed by prune_structured itself.
        return frozenset({"x"}) if "x" in importance_needs(options.importance) else frozenset()

    def sparsity_from_options(self, options: MethodOptions) -> bool:
        return bool(options.per_layer)

    def check(self, lm, spec) -> None:
        from prunestudio.engine.structured.checks import check_structured_spec

        check_structured_spec(lm, spec)

    def prune(self, lm, spec, stats, *, progress=None):
        from prunestudio.engine.structured.apply import prune_structured

        return prune_structured(lm, spec, stats, progress=progress)
