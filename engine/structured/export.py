"""Save a structurally pruned model, and load it back in one call.

`export_pruned` writes a normal Hugging Face folder (`save_pretrained`, safetensors). The config
carries `prunestudio_structured` with every layer's widths:

- uniform widths that the family's config can express (`plan.plain_config_fields`): the MLP
  width (intermediate_size, ffn_dim, n_inner, ffn_hidden_size; per expert for Mixtral) always;
  fewer heads only where the config class declares num_attention_heads, num_key_value_heads
  and head_dim (LLaMA, Mistral, Qwen 3, Gemma, Mixtral) and its own validation accepts them —
  the config's fields are updated and plain `AutoModelForCausalLM.from_pretrained(path)`
  rebuilds it;
- otherwise (widths that differ per layer, or fewer heads on a family whose config derives the
  head size from hidden_size / heads: Qwen2, OLMo 2, Phi-3, Phi-2, Falcon, OPT, GPT-NeoX,
  GPT-2; or Gemma 2 / 3 heads that do not divide hidden_size) the config keeps the original
  widths and the folder is made self-describing: it ships `modeling_prunestudio.py` (a copy of
  `engine/structured/modeling_prunestudio.py` naming the model's own transformers classes), and
  config.json gains `auto_map` and `pruned_widths` (per block: num_attention_heads,
  num_key_value_heads, head_dim, intermediate_size), so plain transformers loads it:

      model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=True)

  (the remote class builds the family's model, shrinks every block to its recorded widths and
  lets `from_pretrained` load the safetensors; it needs torch and transformers, not Prune
  Studio). Without `trust_remote_code` the config still reads as the family's own and a plain
  `from_pretrained` fails loudly on the shape mismatch. With Prune Studio installed,

      from prunestudio.engine.structured import load_pruned
      model = load_pruned(path)

  rebuilds it too (also exports written before the remote code existed): the model is created
  from the config with empty (meta) parameters, each layer is shrunk to its recorded widths,
  and the saved tensors are assigned. `load_pruned` also loads the plain case, so it is the one
  call that always works.

Recovered models: pass a peft model with `merge_lora=True` (its LoRA adapters are merged into
the weights with `merge_and_unload`, in place), or merge first and pass the plain model.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from prunestudio.engine.models.adapters import adapter_for
from prunestudio.engine.models.loading import detach_gguf_quantizer
from prunestudio.engine.structured.groups import StructureError, attention_groups, mlp_groups
from prunestudio.engine.structured.plan import (
    CONFIG_KEY,
    BlockPlan,
    StructuredPlan,
    layer_widths,
    shrink,
)
from torch import nn

LOADER_SNIPPET = ("from prunestudio.engine.structured import load_pruned\n"
                  "model = load_pruned({path!r})")
PLAIN_SNIPPET = ("from transformers import AutoModelForCausalLM\n"
                 "model = AutoModelForCausalLM.from_pretrained({path!r})")
REMOTE_SNIPPET = ("from transformers import AutoModelForCausalLM\n"
                  "model = AutoModelForCausalLM.from_pretrained({path!r}, trust_remote_code=True)")
REMOTE_CODE_FILE = "modeling_prunestudio.py"  # the file shipped in the folder (and its template)
REMOTE_CONFIG_CLASS = "PruneStudioConfig"
REMOTE_MODEL_CLASS = "PruneStudioForCausalLM"
WIDTHS_KEY = "pruned_widths"  # config.json: per-block widths the remote code builds
EXPORT_CARD = "prunestudio.json"


@dataclass(frozen=True)
class ExportInfo:
    """Where an export went, how big it is and what loads it: plain `from_pretrained`
    (`plain_from_pretrained`), `from_pretrained(..., trust_remote_code=True)` (`remote_code`),
    or only Prune Studio's `load_pruned` (neither)."""

    path: Path
    plain_from_pretrained: bool
    nbytes: int
    remote_code: bool = False

    @property
    def loader(self) -> str:
        """transformers, transformers+remote_code or prunestudio."""
        if self.plain_from_pretrained:
            return "transformers"
        return "transformers+remote_code" if self.remote_code else "prunestudio"

    @property
    def how_to_load(self) -> str:
        path = str(self.path)
        if self.plain_from_pretrained:
            return PLAIN_SNIPPET.format(path=path)
        if self.remote_code:
            return (REMOTE_SNIPPET.format(path=path) + "\n# or, with Prune Studio installed:\n"
                    + LOADER_SNIPPET.format(path=path))
        return LOADER_SNIPPET.format(path=path)

    def card_entry(self) -> dict:
        """What the export card (`prunestudio.json`) records under "load"."""
        entry = {"loader": self.loader, "code": self.how_to_load,
                 "prunestudio": LOADER_SNIPPET.format(path=str(self.path))}
        if self.remote_code:
            entry["remote_code"] = {"file": REMOTE_CODE_FILE, "config_key": WIDTHS_KEY,
                                    "needs": "torch and transformers (not prunestudio)"}
        return entry


# ------------------------------------------------------------------ remote code


def _transformers_class(cls: type) -> str:
    """The name of the first class in `cls`'s MRO that transformers exports (a remote-code
    class reloaded from an earlier export resolves to the family's own class)."""
    import transformers

    for klass in cls.__mro__:
        if (klass.__module__.startswith("transformers.")
                and getattr(transformers, klass.__name__, None) is klass):
            return klass.__name__
    raise StructureError(f"{cls.__name__} extends no class that transformers exports; the "
                         "export's remote code cannot rebuild it (use load_pruned, "
                         "remote_code=False)")


def remote_code_source(family: str, base_config: str, base_model: str) -> str:
    """The text of `modeling_prunestudio.py` for one family and its transformers classes."""
    text = Path(__file__).with_name(REMOTE_CODE_FILE).read_text()
    for const, value in (("FAMILY", family), ("BASE_CONFIG", base_config),
                         ("BASE_MODEL", base_model)):
        text, n = re.subn(rf'^{const} = "[^"\n]*"$', f"{const} = {json.dumps(value)}", text,
                          count=1, flags=re.M)
        if n != 1:  # the template changed without this function
            raise RuntimeError(f"{REMOTE_CODE_FILE}: no `{const} = \"...\"` line to fill in")
    return text


def remote_widths(layers: list[dict[str, int]]) -> dict[str, list[int]]:
    """`pruned_widths` of config.json from `layer_widths` (one value per block and field)."""
    fields = {"num_attention_heads": "heads", "num_key_value_heads": "kv_heads",
              "head_dim": "head_dim", "intermediate_size": "mlp"}
    return {name: [int(w[key]) for w in layers] for name, key in fields.items()}


def _write_remote_code(out: Path, model: nn.Module, entry: dict) -> None:
    """Ship `modeling_prunestudio.py` and point config.json at it (`auto_map`,
    `architectures`), with the per-block widths it builds (`pruned_widths`)."""
    source = remote_code_source(entry["family"], _transformers_class(type(model.config)),
                                _transformers_class(type(model)))
    (out / REMOTE_CODE_FILE).write_text(source)
    path = out / "config.json"
    config = json.loads(path.read_text())
    module = REMOTE_CODE_FILE.removesuffix(".py")
    config["auto_map"] = {"AutoConfig": f"{module}.{REMOTE_CONFIG_CLASS}",
                          "AutoModelForCausalLM": f"{module}.{REMOTE_MODEL_CLASS}"}
    config["architectures"] = [REMOTE_MODEL_CLASS]
    config[WIDTHS_KEY] = remote_widths(entry["layers"])
    path.write_text(json.dumps(config, indent=2, sort_keys=True) + "\n")


# ------------------------------------------------------------------ export


def _merge_lora(model: nn.Module, merge_lora: bool) -> nn.Module:
    """The plain model to save: a peft model's LoRA adapters merged (in place) when asked."""
    if hasattr(model, "merge_and_unload") and hasattr(model, "peft_config"):
        if not merge_lora:
            raise ValueError("the model carries peft (LoRA) adapters: pass merge_lora=True to "
                             "merge them into its weights (peft merge_and_unload, in place), or "
                             "merge them first and export the plain model")
        model = model.merge_and_unload()
    left = [name for name, m in model.named_modules() if hasattr(m, "lora_A")]
    if left:
        raise ValueError(f"the model still holds LoRA layers ({', '.join(left[:3])}, ...): "
                         "merge them into the weights before exporting (peft merge_and_unload)")
    return model


def _check_not_quantized(model: nn.Module) -> None:
    qc = getattr(model.config, "quantization_config", None)
    method = qc.get("quant_method") if isinstance(qc, dict) else getattr(qc, "quant_method", None)
    method = getattr(method, "value", method)
    if method is not None and str(method) != "gguf":
        raise ValueError(f"the model's weights are quantized ({method}); export a full-precision "
                         "model (for QLoRA recovery: merge the adapters into a bf16 / fp32 copy "
                         "of the pruned model)")


def export_pruned(model: nn.Module, tokenizer, path: str | Path, *, card: dict | None = None,
                  final_path: str | Path | None = None, remote_code: bool = True,
                  merge_lora: bool = False) -> ExportInfo:
    """`save_pretrained` the (pruned) model and its tokenizer into `path` (new or empty: this
    function never deletes anything), with a note on how to load it (`prunestudio_load.txt`)
    and an optional JSON card (`prunestudio.json`) that lists every file written — how a later
    `export --force` recognises a folder holding nothing but a previous export — and what loads
    the folder ("load": `ExportInfo.card_entry`).

    `model`: an in-memory model, pruned or not (e.g. `prune_structured`'s, or a recovered one).
    Per-block widths its config cannot express get the remote code (see the module docstring)
    unless `remote_code=False` (then only `load_pruned` loads the folder). A peft model (LoRA
    recovery) needs `merge_lora=True`: its adapters are merged into the weights in place
    (`merge_and_unload`) and the merged model is saved.

    `final_path`: where the folder will live once moved into place (the caller writes into a
    temporary sibling and renames it); the loading note names that path."""
    out = Path(path)
    if out.exists() and any(out.iterdir()):
        raise FileExistsError(f"{out} is not empty; export_pruned writes only into a new or "
                              "empty folder")
    model = _merge_lora(model, merge_lora)
    _check_not_quantized(model)
    detach_gguf_quantizer(model)
    entry = getattr(model.config, CONFIG_KEY, None)
    plain = True if entry is None else bool(entry["plain_from_pretrained"])
    if entry is not None:
        actual = layer_widths(model, adapter_for(model))
        if actual != entry["layers"]:
            raise StructureError(f"config.{CONFIG_KEY} records widths {entry['layers']} but the "
                                 f"model has {actual}; export the model the entry describes")
    remote = remote_code and not plain
    # For `load_pruned`, tensors keep the in-memory module names (no legacy renaming such as
    # GPT-NeoX's lm_head -> embed_out), so they can be assigned to the rebuilt modules as saved.
    model.save_pretrained(out, save_original_format=plain)
    if remote:
        _write_remote_code(out, model, entry)
    if tokenizer is not None:
        tokenizer.save_pretrained(out)
    shown = ExportInfo(Path(final_path) if final_path is not None else out, plain, 0, remote)
    (out / "prunestudio_load.txt").write_text(shown.how_to_load + "\n")
    if card is not None:
        files = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
        card = {**card, "load": shown.card_entry(), "files": sorted([*files, EXPORT_CARD])}
        (out / EXPORT_CARD).write_text(json.dumps(card, indent=2, default=str))
    nbytes = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    return ExportInfo(shown.path, plain, nbytes, remote)


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
        mlp = mlp_groups(adapter, model, b)
        if mlp.partition is not None:  # experts: the last channels of every expert
            drop = mlp.partition[:, want["mlp"]:].reshape(-1).tolist()
        else:
            drop = range(want["mlp"], mlp.n_units)
        steps = [StructuredPlan("kv_group", {b: BlockPlan(
            b, tuple(range(want["kv_heads"], s.n_kv_heads)), tuple(sorted(drop)))})]
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
    # trust_remote_code=False: the family's own classes (an export's remote code is for
    # loading without Prune Studio; here the meta model is shrunk by `_resize_to`)
    config = AutoConfig.from_pretrained(path, trust_remote_code=False)
    entry = getattr(config, CONFIG_KEY, None)
    if entry is None or entry.get("plain_from_pretrained"):
        model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype, trust_remote_code=False)
    else:
        if entry.get("format") != 1:
            raise StructureError(f"{path}: unknown {CONFIG_KEY} format {entry.get('format')!r}")
        with init_empty_weights(include_buffers=False):
            model = AutoModelForCausalLM.from_config(config, trust_remote_code=False)
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
