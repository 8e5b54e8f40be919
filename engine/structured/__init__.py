"""LLM-Pruner-style structured pruning that physically shrinks the model.

    from prunestudio.engine.structured import prune_structured, export_pruned, load_pruned

    check_structured_spec(lm, spec)                       # once per spec, before any run
    pruned_lm, info = prune_structured(lm, spec, stats)   # lm stays intact
    info.realised_label, info.structure_key, info.metrics()  # what was really removed
    export_pruned(pruned_lm.model, pruned_lm.tokenizer, "out/")
    model = load_pruned("out/")        # any exported model, uniform widths or not
    # or, without Prune Studio: AutoModelForCausalLM.from_pretrained("out/",
    #                                                     trust_remote_code=True)

Modules: families (one layout entry per model family: where heads and MLP channels live),
units (Member / GroupSet data), groups (coupled units of a block), importance (scores), plan
(selection, shrink, config, realised ratios, structure key), apply (prune_structured), checks
(check_structured_spec), export (save / load; the shipped modeling_prunestudio.py).

Families: llama (LLaMA, Mistral, Qwen 2 / 3, SmolLM3, Granite), gemma, olmo2, phi3, phi,
falcon, moe (Mixtral; Qwen2-MoE attention only), opt, gpt_neox, gpt2. A model found by generic
discovery is refused with the list (`families.layout_for`).
"""

from prunestudio.engine.structured.apply import StructuredInfo, is_structured, prune_structured
from prunestudio.engine.structured.checks import check_structured_spec
from prunestudio.engine.structured.export import ExportInfo, export_pruned, load_pruned
from prunestudio.engine.structured.groups import StructureError
from prunestudio.engine.structured.plan import unit_count

__all__ = ["ExportInfo", "StructureError", "StructuredInfo", "check_structured_spec",
           "export_pruned", "is_structured", "load_pruned", "prune_structured", "unit_count"]
