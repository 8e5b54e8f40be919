"""Save a structurally pruned model, and load it back in one call.

`export_pruned` writes a normal Hugging Face folder (`save_pretrained`). The config carries
`prunestudio_structured` with every layer's widths:

- uniform widths that the family's config can express (LLaMA-like: heads, KV heads, head_dim,
  intermediate_size; OPT / GPT-NeoX / GPT-2: the MLP width, heads untouched) — the config's
  fields are updated and plain `AutoModelForCausalLM.from_pretrained(path)` rebuilds it;
- otherwise (widths that differ per layer, or fewer heads on OPT / GPT-NeoX / GPT-2, whose
  configs derive the head size from hidden_size / heads) the config keeps the original widths,
  so a plain `from_pretrained` fails loudly on the shape mismatch, and

      from prunestudio.engine.structured import load_pruned
      model = load_pruned(path)

  rebuilds it: the model is created from the config with empty (meta) parameters, each layer is
  shrunk to its recorded widths, and the saved tensors are assigned. `load_pruned` also loads
  the plain case, so it is the one call that always works.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from prunestudio.engine.models.adapters import adapter_for
from prunestudio.engine.models.loading import detach_gguf_quantizer
from prunestudio.engine.structured.groups import StructureError, attention_groups, mlp_groups
from prunestudio.engine.structured.plan import CONFIG_KEY, BlockPlan, StructuredPlan, shrink
from torch import nn

LOADER_SNIPPET = ("from prunestudio.engine.structured import load_pruned\n"
                  "model = load_pruned({path!r})")


@dataclass(frozen=True)
class ExportInfo:
    path: Path
    plain_from_pretrained: bool
    nbytes: int

    @property
    def how_to_load(self) -> str:
        if self.plain_from_pretrained:
            return ("from transformers import AutoModelForCausalLM\n"
                    f"model = AutoModelForCausalLM.from_pretrained({str(self.path)!r})")
        return LOADER_SNIPPET.format(path=str(self.path))


EXPORT_CARD = "prunestudio.json"


def export_pruned(model: nn.Module, tokenizer, path: str | Path, *, card: dict | None = None,
                  final_path: str | Path | None = None) -> ExportInfo:
    """`save_pretrained` the (pruned) model and its tokenizer into `path` (new or empty: this
    function never deletes anything), with a note on how to load it (`prunestudio_load.txt`)
    and an optional JSON card (`prunestudio.json`) that lists every file written — how a later
    `export --force` recognises a folder holding nothing but a previous export.

    `final_path`: where the folder will live once moved into place (the caller writes into a
    temporary sibling and renames it); the loading note names that path."""
    out = Path(path)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; export_pruned writes only into a new or "
                              "empty folder")
    detach_gguf_quantizer(model)
    entry = getattr(model.config, CONFIG_KEY, None)
    plain = True if entry is None else bool(entry["plain_from_pretrained"])
    # For `load_pruned`, tensors keep the in-memory module names (no legacy renaming such as
    # GPT-NeoX's lm_head -> embed_out), so they can be assigned to the rebuilt modules as saved.
    model.save_pretrained(out, save_original_format=plain)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    shown = ExportInfo(Path(final_path) if final_path is not None else out, plain, 0)
    (out / "prunestudio_load.txt").write_text(shown.how_to_load + "\n")
    if card is not None:
        files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
        card = {**card, "files": sorted([*files, EXPORT_CARD])}
        (out / EXPORT_CARD).write_text(json.dumps(card, indent=2, default=str))
    nbytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return ExportInfo(shown.path, plain, nbytes)


def _read_state(path: Path) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    files = sorted(path.glob("*.safetensors"))
    if not files:
        raise StructureError(f"{path} holds no .safetensors weights")
    state: dict[str, torch.Tensor] = {}
    for f in files:
        state.update(load_file(str(f)))
    return state


def _resize_to(model: nn.Module, layers: list[dict[str, int]]) -> None:
    """Shrink a freshly built (meta) model to the recorded per-layer widths: drop the last
    units (on meta tensors only shapes matter)."""
    adapter = adapter_for(model)
    if len(layers) != adapter.num_blocks(model):
        raise StructureError(f"the config records {len(layers)} layers; the model has "
                             f"{adapter.num_blocks(model)}")
    for b, want in enumerate(layers):
        att = attention_groups(adapter, model, b, "kv_group")
        s = att.shape
        if want["head_dim"] != s.head_dim:
            raise StructureError(f"layer {b}: recorded head_dim {want['head_dim']} but the "
                                 f"config builds {s.head_dim}")
        steps = [StructuredPlan("kv_group", {b: BlockPlan(
            b, tuple(range(want["kv_heads"], s.n_kv_heads)),
            tuple(range(want["mlp"], mlp_groups(adapter, model, b).n_units)))})]
        rep = want["heads"] // want["kv_heads"]
        if rep < s.rep:  # then equal query heads per KV group
            part = torch.arange(want["kv_heads"] * s.rep).view(want["kv_heads"], s.rep)
            steps.append(StructuredPlan("query_head", {b: BlockPlan(
                b, tuple(int(h) for h in part[:, rep:].reshape(-1)))}))
        for plan in steps:
            shrink(model, adapter, plan)


def load_pruned(path: str | Path, *, dtype: torch.dtype | None = None,
                device: str | torch.device | None = None) -> nn.Module:
    """Load a model written by `export_pruned` (or any plain model folder), in eval mode."""
    from accelerate import init_empty_weights
    from transformers import AutoConfig, AutoModelForCausalLM

    path = Path(path)
    config = AutoConfig.from_pretrained(path)
    entry = getattr(config, CONFIG_KEY, None)
    if entry is None or entry.get("plain_from_pretrained"):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
    else:
        if entry.get("format") != 1:
            raise StructureError(f"{path}: unknown {CONFIG_KEY} format {entry.get('format')!r}")
        with init_empty_weights(include_buffers=False):
            model = AutoModelForCausalLM.from_config(config)
        _resize_to(model, entry["layers"])
        state = _read_state(path)
        result = model.load_state_dict(state, strict=False, assign=True)
        if result.unexpected_keys:
            raise StructureError(f"{path}: unexpected tensors {result.unexpected_keys[:5]}")
        if getattr(config, "tie_word_embeddings", False):
            model.tie_weights()
        missing = [n for n, p in model.named_parameters() if p.device.type == "meta"]
        if missing:
            raise StructureError(f"{path}: no saved tensor for {missing[:5]}")
        if dtype is not None:
            model = model.to(dtype)
    if device is not None:
        model = model.to(device)
    model.eval()
    return model
