"""LLM-Pruner-style structured pruning that physically shrinks the model.

    from prunestudio.engine.structured import prune_structured, export_pruned, load_pruned

    pruned_lm, info = prune_structured(lm, spec, stats)   # lm stays intact
    export_pruned(pruned_lm.model, pruned_lm.tokenizer, "out/")
    model = load_pruned("out/")        # any exported model, uniform widths or not

Modules: groups (coupled units per architecture), importance (scores), prune (selection,
shrink, config), run (prune_structured), export (save / load).
"""

from prunestudio.engine.structured.export import ExportInfo, export_pruned, load_pruned
from prunestudio.engine.structured.groups import StructureError
from prunestudio.engine.structured.run import StructuredInfo, is_structured, prune_structured

__all__ = ["ExportInfo", "StructureError", "StructuredInfo", "export_pruned", "is_structured",
           "load_pruned", "prune_structured"]
