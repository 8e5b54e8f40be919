#!/usr/bin/env python
"""Run a method's public reference code and Prune Studio side by side: per-layer agreement.

    .venv/bin/python scripts/compare_reference.py owl --reference ~/src/OWL
    .venv/bin/python scripts/compare_reference.py gblm --reference ~/src/GBLM-Pruner --pattern 2:4
    .venv/bin/python scripts/compare_reference.py llm_pruner --reference ~/src/LLM-Pruner \
        --taylor param_second --json llm_pruner.json

METHOD is one of owl, gblm, llm_pruner; PATH is the user's own clone of its public code
(luuyin/OWL, VILA-Lab/GBLM-Pruner, horseee/LLM-Pruner). Nothing of it is copied into this
project: its modules are imported from PATH for the run. Both sides prune copies of one loaded
model (`--model`, default: the embedded SmolLM2-135M) with the same calibration windows (the
project's: `--calib-*`, by default the default study's 16 × 128 tokens of pydoc), then the
script reports

  - per layer (owl, gblm: every linear of every block): each side's realised sparsity, mask
    agreement (share of positions where both keep or both prune), max |ΔW| and the relative
    Frobenius difference ‖W_ref − W_ours‖ / ‖W_dense‖ (neither method updates weights, so a
    difference is exactly where the masks differ); per block the same, weighted;
  - per block (llm_pruner): KV groups / query heads / MLP channels each side removed, unit
    agreement (share of units with the same decision), max |ΔW| over the weights both kept
    (0 unless a side altered a kept weight), parameters left;
  - perplexity of the dense model and of both pruned models on the same evaluation windows
    (the project's protocol, `--eval-*`), with the paired standard error of their difference;

as markdown tables, and everything as JSON with `--json OUT`. Exit status 2, with the reason,
when the input is wrong (unknown METHOD, PATH not a checkout of that method, settings the
reference does not have) or when the reference cannot run on this installation; nothing is
reported then.

What each adapter runs (the reference's own functions, driven as its scripts drive them):
  owl         lib/prune_all.py `prune_wanda_outlier` (Wanda scores, OWL's layer ratios from
              outlier share > M × mean: `--owl-m` = its --Hyper_m, `--owl-lambda` = --Lamda);
              Prune Studio: wanda with layer_ratios = "owl" (same M, λ). Unstructured only.
              Its block ratios ("target ref") are read from the function's local
              `all_layer_ratio` as it returns (a profile hook; nothing of it changes).
  gblm        gradient_computation.py's `gradient_computation` class driven as its __main__
              does (model.train(), one loss.backward() per calibration window with labels =
              inputs, `update_gradient`, zero_grad; sqrt then fp16, saved to a temporary file
              passed as `gradient_path`, scale 100), then lib/prune.py `prune_gblm`;
              Prune Studio: gblm. Unstructured, 2:4, 4:8 (N:M at sparsity 0.5, as its main.py).
              `--gblm-gradient-dtype float32` keeps the reference's G in fp32 (not as it
              saves it), to tell that rounding apart from everything else.
  llm_pruner  llama3.py `main` with --block_wise, --pruner_type taylor, `--taylor` (default
              param_second), --grouping_strategy sum, one iterative step, --num_examples =
              --calib-n; `--sparsity` is its --pruning_ratio (a *group* ratio in the pruned
              blocks [--block-start, --block-end)); Prune Studio: structured with ratio =
              "groups", attention_unit = "kv_group", the matching Taylor importance
              (vectorize → taylor_vector, param_first → taylor_first, param_second →
              taylor_second, param_mix → taylor_mix), aggregation sum; `--parts mlp` or
              `attention` empties the other block range on its side and turns that part off
              on ours. llama3.py is that repository's entry point for transformers' own
              LlamaForCausalLM with grouped KV heads (attention groups rooted at k_proj);
              hf_prune.py loads its vendored LLaMA-1 modeling file and roots heads at q_proj,
              which cannot hold SmolLM2's 9 query / 3 KV heads. The pruner
              (LLMPruner/pruner/hf_llama_pruner.py, its vendored torch_pruning) is the same.
              A note flags any block where the reference removed query heads other than
              those of the KV groups it removed (query head h reads KV head h // rep).

Compatibility shims (the references were written for transformers 4.3x; their files are never
edited — only objects of this process are adjusted, for the reference's run only, and every
shim a run used is listed in its report under "compatibility shims used"):
  position_embeddings  transformers 5 LLaMA decoder layers need the model-level rotary
                       embedding as `position_embeddings`; the references call
                       `layer(x, attention_mask=..., position_ids=...)`. Each decoder layer's
                       forward is wrapped: when `position_embeddings` is missing it is computed
                       from `model.model.rotary_emb(x, position_ids)`, as the model itself
                       does. Such calls must carry one sample (they do): a transformers 5 layer
                       returns a tensor, and the references' `layer(...)[0]` then takes that
                       sample where it used to take the tuple's first element.
  model.seqlen         set to --calib-seqlen (their get_llm sets 2048; the capture buffers
                       are (n, model.seqlen, hidden)).
  hf_device_map        `model.hf_device_map = {}` when absent (they load with
                       device_map="auto"; an empty map keeps everything where it is).
  get_loaders          OWL's and GBLM's `get_loaders("c4", ...)` return the project's
                       calibration windows as [(ids[i:i+1], ids[i:i+1].clone())] (targets
                       unmasked, as GBLM's gradient script makes them; OWL never reads them).
  transformers.AdamW   GBLM's lib/prune.py and gradient_computation.py import it (removed in
                       transformers 5): torch.optim.AdamW stands in during their import only;
                       the pruning never uses it.
  matplotlib, datasets stand-in modules during the import, only when not installed (a plotting
                       helper the pruning never calls; the data loaders replaced above).
  llama3.main I/O      LoggerWithDepth → an in-memory logger (no prune_log/ folder);
                       AutoTokenizer / LlamaForCausalLM.from_pretrained → a copy of the loaded
                       tokenizer and model (no fp16 device_map="auto" reload); model.half() →
                       no-op (both sides keep --dtype); get_examples("bookcorpus", ...) → the
                       calibration windows (its seq_len=64 is --calib-seqlen here);
                       PPLMetric → skipped (the project's perplexity measures both sides on
                       the same windows). Its dependency graph is traced with LLaMA-1 token
                       ids up to 17632, so the model's vocabulary must be larger.

The reference's own output (prints, progress bars) is captured; `--show-reference-output`
prints it. Default dtype is float32 on every device, so neither side's rounding hides a
difference (the references ran fp16 on GPUs; `--dtype` changes it for both).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import io
import json
import math
import os
import sys
import tempfile
import time
import traceback
import types
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # shared cores: no OpenMP spin-waiting
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

METHODS = ("owl", "gblm", "llm_pruner")
TAYLOR = {"vectorize": "taylor_vector", "param_first": "taylor_first",
          "param_second": "taylor_second", "param_mix": "taylor_mix"}
# llm_pruner: a group ratio. Its README's 0.25 selects no whole KV group of SmolLM2's 3 (its
# MetaPruner rounds k_proj channels down to groups; prune_local then fails on the empty
# selection); 0.35 removes one KV group and 538 of 1536 MLP channels in each of blocks 4..27 on
# both sides: about 22 % of all parameters.
DEFAULT_SPARSITY = {"owl": 0.7, "gblm": 0.5, "llm_pruner": 0.35}
GBLM_SCALE = 100  # gradient_computation.py --scale default
LLM_PRUNER_MAX_TOKEN_ID = 17632  # the largest id in llama3.py's hard-coded forward_prompts


class Refusal(Exception):
    """Wrong input, or a reference that cannot run here: the message, exit status 2."""


@dataclass(frozen=True)
class Checkout:
    """What a checkout of a method's public code must hold: (file, what it must define)."""

    title: str
    files: tuple[tuple[str, str], ...]


CHECKOUTS = {
    "owl": Checkout("OWL (luuyin/OWL)", (
        ("lib/prune_all.py", "def prune_wanda_outlier"),
        ("lib/layerwrapper.py", "class WrappedGPT"),
        ("lib/data.py", "def get_loaders"))),
    "gblm": Checkout("GBLM-Pruner (VILA-Lab/GBLM-Pruner)", (
        ("lib/prune.py", "def prune_gblm"),
        ("gradient_computation.py", "class gradient_computation"),
        ("lib/layerwrapper.py", "class WrappedGPT"),
        ("lib/data.py", "def get_loaders"))),
    "llm_pruner": Checkout("LLM-Pruner (horseee/LLM-Pruner)", (
        ("llama3.py", "def main"),
        ("LLMPruner/pruner/hf_llama_pruner.py", "class TaylorImportance"),
        ("LLMPruner/torch_pruning/__init__.py", ""))),
}


# ------------------------------------------------------------------ the command line


def _args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        description=__doc__.split("\n\n")[0],
        epilog="Shims and protocol: see the module docstring (scripts/compare_reference.py).")
    p.add_argument("method", metavar="METHOD", help=f"one of {', '.join(METHODS)}")
    p.add_argument("--reference", required=True, metavar="PATH",
                   help="your clone of the method's public code")
    p.add_argument("--model", default="default", help="model source (default: the embedded "
                   "SmolLM2-135M); LLaMA-shaped models only")
    p.add_argument("--device", default="auto")
    p.add_argument("--dtype", default="float32", help="both sides (default float32)")
    p.add_argument("--sparsity", type=float, default=None,
                   help="owl / gblm: fraction of weights (default 0.7 / 0.5); llm_pruner: its "
                   "--pruning_ratio, a group ratio in the pruned blocks (default 0.35: its "
                   "README's 0.25 removes no whole KV group of SmolLM2's 3)")
    p.add_argument("--pattern", default="unstructured", help="unstructured, or N:M (gblm)")
    p.add_argument("--calib-source", default="pydoc")
    p.add_argument("--calib-n", type=int, default=16)
    p.add_argument("--calib-seqlen", type=int, default=128)
    p.add_argument("--calib-offset", type=int, default=0)
    p.add_argument("--eval-source", default="pydoc")
    p.add_argument("--eval-n", type=int, default=32)
    p.add_argument("--eval-seqlen", type=int, default=256)
    p.add_argument("--eval-offset", type=int, default=40000)
    p.add_argument("--owl-m", type=float, default=5.0, help="OWL --Hyper_m (its LLaMA scripts: 5)")
    p.add_argument("--owl-lambda", type=float, default=0.08, help="OWL --Lamda")
    p.add_argument("--taylor", default="param_second", choices=sorted(TAYLOR),
                   help="llm_pruner: its --taylor")
    p.add_argument("--block-start", type=int, default=4, help="llm_pruner: first pruned block")
    p.add_argument("--block-end", type=int, default=-2,
                   help="llm_pruner: end of the pruned blocks, exclusive; negative counts from "
                   "the end (default -2: LLaMA-7B's 4..30 of 32)")
    p.add_argument("--gblm-gradient-dtype", default="float16", choices=["float16", "float32"],
                   help="gblm: the dtype the reference's gradient file holds (default float16, "
                   "as gradient_computation.py saves it; float32 isolates the rest)")
    p.add_argument("--parts", default="both", choices=["both", "attention", "mlp"],
                   help="llm_pruner: prune attention (KV groups), MLP channels or both (an "
                   "empty --block_attention / --block_mlp range on its side)")
    p.add_argument("--seed", type=int, default=0, help="the reference's --seed")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--json", metavar="OUT", help="also write the whole report here")
    p.add_argument("--show-reference-output", action="store_true",
                   help="print what the reference printed")
    return p.parse_args(argv)


@dataclass(frozen=True)
class Settings:
    method: str
    reference: Path
    sparsity: float
    nm: tuple[int, int] | None


def check_request(args: argparse.Namespace) -> Settings:
    """Everything that can be refused before a model is loaded (Refusal: exit 2)."""
    if args.method not in METHODS:
        raise Refusal(f"unknown METHOD {args.method!r}; allowed: {', '.join(METHODS)}")
    ref = check_checkout(args.method, args.reference)
    nm = parse_pattern(args.pattern)
    sparsity = DEFAULT_SPARSITY[args.method] if args.sparsity is None else args.sparsity
    if not 0 < sparsity < 1:
        raise Refusal(f"--sparsity must lie in (0, 1); got {sparsity}")
    if nm is not None:
        if args.method != "gblm":
            what = ("OWL's layer ratios apply to unstructured sparsity (its N:M path is plain "
                    "Wanda N:M)" if args.method == "owl" else
                    "LLM-Pruner removes whole heads and channels")
            raise Refusal(f"--pattern {args.pattern}: {what}; use --pattern unstructured")
        if nm not in ((2, 4), (4, 8)):
            raise Refusal(f"--pattern {args.pattern}: GBLM-Pruner's main.py allows "
                          "unstructured, 2:4 and 4:8")
        if args.sparsity is not None and sparsity != 0.5:
            raise Refusal(f"--pattern {args.pattern} fixes sparsity at 0.5 (GBLM-Pruner's "
                          f"main.py asserts it); got --sparsity {sparsity}")
        sparsity = 0.5
    if args.calib_n < 1 or args.calib_seqlen < 2:
        raise Refusal("--calib-n must be ≥ 1 and --calib-seqlen ≥ 2")
    if args.method == "owl" and args.calib_n > 128:
        raise Refusal(f"--calib-n {args.calib_n}: OWL's prepare_calibration_input holds at "
                      "most 128 calibration samples (a fixed buffer of 128)")
    return Settings(args.method, ref, sparsity, nm)


def parse_pattern(text: str) -> tuple[int, int] | None:
    t = text.strip().lower()
    if t in ("unstructured", "u"):
        return None
    a, sep, b = t.partition(":")
    if sep and a.isdigit() and b.isdigit() and 0 < int(a) < int(b):
        return int(a), int(b)
    raise Refusal(f"--pattern {text!r} is not valid: use 'unstructured' or N:M with N < M")


def check_checkout(method: str, path: str | os.PathLike) -> Path:
    """The checkout's root, or a Refusal naming the file (and definition) it lacks."""
    root = Path(path).expanduser()
    spec = CHECKOUTS[method]
    if not root.is_dir():
        raise Refusal(f"--reference {str(path)!r} is not a directory; give your clone of "
                      f"{spec.title}")
    for rel, needle in spec.files:
        f = root / rel
        if not f.is_file():
            raise Refusal(f"--reference {str(path)!r} is not a checkout of {spec.title}: "
                          f"expected the file {rel} ({f} is missing)")
        if needle and needle not in f.read_text(errors="replace"):
            raise Refusal(f"--reference {str(path)!r}: {rel} has no `{needle}`, which the "
                          f"adapter for {spec.title} drives (another version or another "
                          "repository?)")
    return root.resolve()


def checkout_commit(root: Path) -> str | None:
    """The checked-out commit, read from .git without running git (None: not a git clone)."""
    git = root / ".git"
    try:
        head = (git / "HEAD").read_text().strip()
        if not head.startswith("ref: "):
            return head
        ref = head[5:]
        if (git / ref).is_file():
            return (git / ref).read_text().strip()
        for line in (git / "packed-refs").read_text().splitlines():
            if line.endswith(" " + ref):
                return line.split()[0]
    except OSError:
        return None
    return None


# ------------------------------------------------------------ pure comparison helpers


def mask_agreement(pruned_a, pruned_b) -> float:
    """Share of positions where both masks keep or both prune (bool tensors, True = pruned)."""
    if pruned_a.shape != pruned_b.shape:
        raise ValueError(f"mask shapes differ: {tuple(pruned_a.shape)} and "
                         f"{tuple(pruned_b.shape)}")
    return float((pruned_a == pruned_b).float().mean()) if pruned_a.numel() else 1.0


def weight_difference(w_a, w_b, w_dense) -> tuple[float, float]:
    """(max |w_a − w_b|, ‖w_a − w_b‖_F / ‖w_dense‖_F), in float64."""
    d = w_a.double() - w_b.double()
    if d.numel() == 0:
        return 0.0, 0.0
    ref = float(w_dense.double().norm())
    return float(d.abs().max()), (float(d.norm()) / ref if ref else 0.0)


def sparsity_of(w) -> float:
    return float((w == 0).sum()) / w.numel() if w.numel() else 0.0


def kept_indices(dense, pruned, dim: int) -> list[int]:
    """Indices along `dim` of the slices of `dense` that `pruned` kept, in order.

    Structured pruning removes slices and keeps the rest unchanged, in their order: slices are
    matched by an exact fingerprint of their bits (integer arithmetic, so no rounding), then
    checked element for element. A pruned tensor that is not such a subset is an error (a
    side that altered kept weights)."""
    import torch

    others = [n for i, n in enumerate(dense.shape) if i != dim]
    if dense.dim() != pruned.dim() or others != [
            n for i, n in enumerate(pruned.shape) if i != dim]:
        raise ValueError(f"shapes {tuple(dense.shape)} and {tuple(pruned.shape)} differ "
                         f"outside dim {dim}")
    d = dense.movedim(dim, 0).reshape(dense.shape[dim], math.prod(others))
    p = pruned.movedim(dim, 0).reshape(pruned.shape[dim], math.prod(others))
    fd, fp = _fingerprints(d), _fingerprints(p)
    kept, j = [], 0
    for i, f in enumerate(fd):
        if j < len(fp) and f == fp[j]:
            kept.append(i)
            j += 1
    if j != len(fp) or not torch.equal(d[kept], p):
        raise ValueError(f"the pruned tensor {tuple(pruned.shape)} is not an ordered subset of "
                         f"the dense one {tuple(dense.shape)} along dim {dim}")
    return kept


def _fingerprints(rows) -> list[int]:
    """One integer per row from its bit pattern (int64 arithmetic wraps, exactly)."""
    import torch

    ints = {1: torch.int8, 2: torch.int16, 4: torch.int32, 8: torch.int64}[rows.element_size()]
    bits = rows.contiguous().view(ints).to(torch.int64)
    g = torch.Generator().manual_seed(0)
    coeff = torch.randint(1, 2**31 - 1, (rows.shape[1],), generator=g, dtype=torch.int64)
    return (bits * coeff.to(bits.device)).sum(1).tolist()


def unit_agreement(removed_a: set[int], removed_b: set[int], n_units: int) -> float:
    """Share of the `n_units` units with the same decision (both removed or both kept)."""
    if n_units <= 0:
        return 1.0
    return 1.0 - len(set(removed_a) ^ set(removed_b)) / n_units


def groups_of(kept_rows: list[int], size: int, n_units: int) -> set[int]:
    """Units (consecutive runs of `size` rows) removed, given the kept rows; a unit kept in
    part is an error."""
    kept: dict[int, int] = {}
    for r in kept_rows:
        kept[r // size] = kept.get(r // size, 0) + 1
    partial = sorted(u for u, c in kept.items() if c != size)
    if partial:
        raise ValueError(f"units {partial} are kept in part (rows of {size})")
    return set(range(n_units)) - set(kept)


def summarise_layers(rows: list[dict]) -> dict[str, Any]:
    """Mean / min mask agreement over layers, weighted overall figures, max |ΔW|."""
    if not rows:
        return {}
    worst = min(rows, key=lambda r: r["agreement"])
    numel = sum(r["numel"] for r in rows)

    def weighted(key: str) -> float:
        return sum(r[key] * r["numel"] for r in rows) / numel

    return {"layers": len(rows), "agreement_mean": sum(r["agreement"] for r in rows) / len(rows),
            "agreement_min": worst["agreement"], "agreement_min_layer": worst["layer"],
            "agreement_all_weights": weighted("agreement"),
            "sparsity_ref": weighted("sparsity_ref"), "sparsity_ours": weighted("sparsity_ours"),
            "max_abs_dw": max(r["max_abs_dw"] for r in rows),
            "identical_masks": all(r["agreement"] == 1.0 for r in rows)}


def per_block(rows: list[dict]) -> list[dict]:
    """Per-layer rows (with "block") grouped by block, weighted by the layers' sizes."""
    out: dict[int, dict] = {}
    for r in rows:
        b = out.setdefault(r["block"], {"block": r["block"], "numel": 0, "agreement": 0.0,
                                        "sparsity_ref": 0.0, "sparsity_ours": 0.0})
        b["numel"] += r["numel"]
        for k in ("agreement", "sparsity_ref", "sparsity_ours"):
            b[k] += r[k] * r["numel"]
    for b in out.values():
        for k in ("agreement", "sparsity_ref", "sparsity_ours"):
            b[k] /= b["numel"]
    return [out[k] for k in sorted(out)]


# ------------------------------------------------------------ tables


def _fmt(x: Any, spec: str = ".4f") -> str:
    if x is None:
        return "—"
    if isinstance(x, float):
        return format(x, spec)
    return str(x)


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [[_fmt(c) for c in r] for r in rows]
    widths = [max([len(h)] + [len(r[i]) for r in cells]) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w)
                              in enumerate(zip(r, widths, strict=True))) + " |" for r in cells]
    return "\n".join([line, rule, *body])


def format_report(rep: dict) -> str:
    out = [f"## {rep['title']}", ""]
    ref = rep["reference"]
    out.append(f"reference: {ref['path']}" + (f" @ {ref['commit'][:12]}" if ref.get("commit")
                                               else " (not a git clone: commit unknown)"))
    out.append(f"model: {rep['model']['description']} ({rep['model']['dtype']}, "
               f"{rep['model']['device']})")
    out.append(f"settings: {rep['settings_label']}")
    c, e = rep["calibration"], rep["evaluation"]
    out.append(f"calibration (both sides): {c['source']} {c['n']} × {c['seqlen']} from token "
               f"{c['offset']}, tokens {c['tokens_hash']}")
    out.append(f"evaluation: {e['source']} {e['n']} × {e['seqlen']} from token {e['offset']}, "
               f"tokens {e['tokens_hash']}")
    out.append("")
    if rep["kind"] == "unstructured":
        out.append(markdown_table(
            ["layer", "sparsity ref", "sparsity ours", "mask agreement", "max |ΔW|",
             "rel ‖ΔW‖F"],
            [[r["layer"], r["sparsity_ref"], r["sparsity_ours"], r["agreement"],
              r["max_abs_dw"], r["rel_fro_dw"]] for r in rep["layers"]]))
        out.append("")
        out.append(markdown_table(
            ["block", "target ref", "target ours", "sparsity ref", "sparsity ours",
             "mask agreement"],
            [[b["block"], b.get("target_ref"), b.get("target_ours"), b["sparsity_ref"],
              b["sparsity_ours"], b["agreement"]] for b in rep["blocks"]]))
        s = rep["summary"]
        out += ["", f"summary: mask agreement mean {s['agreement_mean']:.4f}, min "
                f"{s['agreement_min']:.4f} ({s['agreement_min_layer']}), all weights "
                f"{s['agreement_all_weights']:.4f}; sparsity ref {s['sparsity_ref']:.4f}, ours "
                f"{s['sparsity_ours']:.4f}; max |ΔW| {s['max_abs_dw']:.3g}"
                + ("; identical masks" if s["identical_masks"] else "")]
    else:
        out.append(markdown_table(
            ["block", "KV groups removed ref", "ours", "agree", "query heads removed ref",
             "ours", "MLP channels removed ref", "ours", "agree", "max |ΔW| kept", "params ref",
             "params ours"],
            [[b["block"], _ids(b["kv_removed_ref"]), _ids(b["kv_removed_ours"]),
              b["kv_agreement"], _ids(b["heads_removed_ref"]), _ids(b["heads_removed_ours"]),
              len(b["mlp_removed_ref"]), len(b["mlp_removed_ours"]), b["mlp_agreement"],
              b["max_abs_dw_kept"], b["params_ref"], b["params_ours"]]
             for b in rep["layers"]]))
        s = rep["summary"]
        out += ["", f"summary: KV-group agreement mean {s['kv_agreement_mean']:.4f}, min "
                f"{s['kv_agreement_min']:.4f}; query-head agreement mean "
                f"{s['heads_agreement_mean']:.4f}; MLP-channel agreement mean "
                f"{s['mlp_agreement_mean']:.4f}, min {s['mlp_agreement_min']:.4f} (block "
                f"{s['mlp_agreement_min_block']}); same structure in every block: "
                f"{'yes' if s['identical_structure'] else 'no'}; parameters removed ref "
                f"{s['param_ratio_ref']:.2%}, ours {s['param_ratio_ours']:.2%}; max |ΔW| over "
                f"kept weights {s['max_abs_dw_kept']:.3g}"]
    for note in rep.get("notes", []):
        out.append(f"note: {note}")
    out.append("")
    p = rep["ppl"]
    out.append(markdown_table(
        ["model", "PPL", "± SE"],
        [["dense", p["dense"]["ppl"], p["dense"]["ppl_se"]],
         ["reference", p["reference"]["ppl"], p["reference"]["ppl_se"]],
         ["Prune Studio", p["ours"]["ppl"], p["ours"]["ppl_se"]]]))
    d = p["difference"]
    out += ["", f"PPL ours / reference = {d['ratio']:.4f} (Δ log PPL {d['log_diff']:+.4f} ± "
            f"{_fmt(d['paired_log_se'], '.4f')} paired SE over the windows)"]
    out += ["", "compatibility shims used:"]
    out += [f"  - {name}: {text}" for name, text in rep["shims"].items()] or ["  (none)"]
    out.append(f"time: reference {rep['seconds']['reference']:.1f} s, Prune Studio "
               f"{rep['seconds']['ours']:.1f} s")
    return "\n".join(out)


def _ids(values: list[int]) -> str:
    return "[" + ",".join(map(str, values)) + "]" if values else "—"


# ------------------------------------------------------------ importing the reference


class ShimLog(dict):
    """name → description of every compatibility shim a run used."""

    def use(self, name: str, text: str) -> None:
        self.setdefault(name, text)


def load_package(name: str, folder: Path) -> types.ModuleType:
    """`folder` (a reference's `lib/`, which has no __init__.py) as a package of a unique
    name, so that OWL's and GBLM-Pruner's `lib` never meet a `lib` of anything else; its
    relative imports resolve inside it."""
    pkg = types.ModuleType(name)
    pkg.__path__ = [str(folder)]
    pkg.__package__ = name
    sys.modules[name] = pkg
    return pkg


def load_file(name: str, path: Path) -> types.ModuleType:
    import importlib.util

    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


STUB_REASONS = {"datasets": "its data loaders, replaced by the calibration windows",
                "matplotlib": "a plotting helper the pruning never calls"}


@contextlib.contextmanager
def import_shims(shims: ShimLog, stubs: tuple[str, ...] = (), *, adamw: bool = False
                 ) -> Iterator[None]:
    """During the reference's import only: stand-ins for the modules in `stubs` (ones it
    imports but never uses here) when they are not installed, and `transformers.AdamW`
    (removed in transformers 5) when `adamw`."""
    import importlib.util

    import torch
    import transformers

    added: list[str] = []
    for mod in stubs:
        why = STUB_REASONS[mod]
        if importlib.util.find_spec(mod) is None and mod not in sys.modules:
            stub = types.ModuleType(mod)
            if mod == "datasets":
                stub.load_dataset = _refuse_download
            else:
                stub.pyplot = types.ModuleType("matplotlib.pyplot")
                sys.modules["matplotlib.pyplot"] = stub.pyplot
                added.append("matplotlib.pyplot")
            sys.modules[mod] = stub
            added.append(mod)
            shims.use(mod, f"not installed: an empty stand-in module during the reference's "
                      f"import ({why})")
    had_adamw = "AdamW" in vars(transformers)
    if adamw and not hasattr_safe(transformers, "AdamW"):
        transformers.AdamW = torch.optim.AdamW
        shims.use("transformers.AdamW", "the reference does `from transformers import AdamW` "
                  "(removed in transformers 5): torch.optim.AdamW stands in during its import "
                  "only; the pruning never uses it")
    try:
        yield
    finally:
        if adamw and not had_adamw and "AdamW" in vars(transformers):
            del transformers.AdamW
        for mod in added:
            sys.modules.pop(mod, None)


def hasattr_safe(module, name: str) -> bool:
    try:
        getattr(module, name)
    except (AttributeError, ImportError):
        return False
    return True


def _refuse_download(*args, **kwargs):
    raise RuntimeError("compare_reference: the reference tried to load a dataset; its loaders "
                       "should have been replaced by the calibration windows")


@contextlib.contextmanager
def patched(obj, name: str, value) -> Iterator[None]:
    missing = object()
    old = obj.__dict__.get(name, missing) if hasattr(obj, "__dict__") else getattr(obj, name)
    setattr(obj, name, value)
    try:
        yield
    finally:
        if old is missing:
            delattr(obj, name)
        else:
            setattr(obj, name, old)


@contextlib.contextmanager
def legacy_model(model, seqlen: int, shims: ShimLog) -> Iterator[None]:
    """`model.seqlen` and `model.hf_device_map`, which the references' get_llm sets."""
    had_seqlen = "seqlen" in model.__dict__
    old_seqlen = model.__dict__.get("seqlen")
    model.seqlen = seqlen
    shims.use("model.seqlen", f"set to {seqlen} (--calib-seqlen; their get_llm sets 2048 and "
              "sizes the capture buffers with it)")
    had_map = hasattr(model, "hf_device_map")
    if not had_map:
        model.hf_device_map = {}
        shims.use("hf_device_map", "`model.hf_device_map = {}` (they load with "
                  "device_map='auto'; an empty map keeps every layer where it is)")
    try:
        yield
    finally:
        if had_seqlen:
            model.seqlen = old_seqlen
        else:
            model.__dict__.pop("seqlen", None)
        if not had_map:
            del model.hf_device_map


@contextlib.contextmanager
def legacy_layer_calls(model, shims: ShimLog) -> Iterator[dict]:
    """Decoder layers called as in transformers 4.3x — `layer(x, attention_mask=...,
    position_ids=...)` — get the `position_embeddings` transformers 5 needs, computed from the
    model's own rotary embedding. Yields a counter of the calls it completed."""
    import torch

    inner = model.model
    rotary = getattr(inner, "rotary_emb", None)
    layers = list(inner.layers)
    count = {"calls": 0}
    saved = []

    def wrap(layer):
        original = layer.forward

        def forward(hidden_states, *args, **kwargs):
            if kwargs.get("position_embeddings") is None and len(args) < 5:
                if rotary is None:
                    raise RuntimeError("the model has no model.rotary_emb to compute "
                                       "position_embeddings from")
                if hidden_states.shape[0] != 1:
                    raise RuntimeError(
                        f"a direct layer call with batch {hidden_states.shape[0]}: a "
                        "transformers 5 layer returns a tensor, so the reference's "
                        "`layer(...)[0]` would take batch element 0, not the output")
                pos = kwargs.get("position_ids")
                if pos is None:
                    pos = torch.arange(hidden_states.shape[1],
                                       device=hidden_states.device).unsqueeze(0)
                kwargs["position_embeddings"] = rotary(hidden_states, pos)
                count["calls"] += 1
            return original(hidden_states, *args, **kwargs)

        return forward

    for layer in layers:
        saved.append(layer.__dict__.get("forward"))
        layer.forward = wrap(layer)
    try:
        yield count
    finally:
        for layer, old in zip(layers, saved, strict=True):
            if old is None:
                layer.__dict__.pop("forward", None)
            else:
                layer.forward = old
        if count["calls"]:
            shims.use("position_embeddings", (
                f"{count['calls']} decoder-layer calls without `position_embeddings` (the "
                "reference passes attention_mask / position_ids only, as transformers 4.3x "
                "allowed) got them from model.model.rotary_emb(x, position_ids), as the "
                "transformers 5 model computes them; each call carried one sample, so the "
                "reference's `layer(...)[0]` on the returned tensor takes that sample"))


@contextlib.contextmanager
def locals_on_return(func, names: tuple[str, ...]) -> Iterator[dict]:
    """Read-only observation: the values of `names` in `func`'s frame when it returns (a
    profile hook; nothing of the function changes). Used to report OWL's own block ratios."""
    code = func.__code__
    seen: dict = {}
    previous = sys.getprofile()

    def hook(frame, event, arg):
        if event == "return" and frame.f_code is code:
            seen.update({n: frame.f_locals[n] for n in names if n in frame.f_locals})

    sys.setprofile(hook)
    try:
        yield seen
    finally:
        sys.setprofile(previous)


@contextlib.contextmanager
def captured(sink: io.StringIO) -> Iterator[None]:
    with contextlib.redirect_stdout(sink), contextlib.redirect_stderr(sink):
        yield


def reference_failure(exc: BaseException, root: Path, title: str, output: str,
                      hint: str = "") -> Refusal:
    """A Refusal saying precisely where and why the reference failed (the innermost frame
    inside its checkout), with `hint` and the end of what it printed."""
    frames = traceback.extract_tb(exc.__traceback__)
    inside = [f for f in frames if _within(f.filename, root)]
    where = inside[-1] if inside else (frames[-1] if frames else None)
    at = ""
    if where is not None:
        name = where.filename
        if _within(name, root):
            name = str(Path(name).resolve().relative_to(root))
        at = f" at {name}:{where.lineno} in {where.name}" + (
            f" (`{where.line.strip()}`)" if where.line else "")
    last = "\n".join(output.strip().splitlines()[-5:])
    tail = f"; its last output:\n{last}" if last else ""
    return Refusal(f"{title} could not run on this installation: {type(exc).__name__}: "
                   f"{exc}{at}{hint}{tail}")


def _within(filename: str, root: Path) -> bool:
    try:
        Path(filename).resolve().relative_to(root)
    except (ValueError, OSError):
        return False
    return True


def calib_loader(ids, device) -> list[tuple]:
    """The references' dataloader format: (input (1, seqlen), target) per sample."""
    return [(ids[i : i + 1].to(device), ids[i : i + 1].clone().to(device))
            for i in range(ids.shape[0])]


# ------------------------------------------------------------ the adapters


def run_owl(ref: Path, model, tokenizer, calib_ids, settings: Settings, args, device,
            shims: ShimLog) -> dict:
    with import_shims(shims, ("datasets",)):
        load_package("prunestudio_ref_owl_lib", ref / "lib")
        import importlib

        prune_all = importlib.import_module("prunestudio_ref_owl_lib.prune_all")
    loader = calib_loader(calib_ids, device)
    shims.use("get_loaders", "their get_loaders('c4', ...) returns the project's calibration "
              "windows as [(ids[i:i+1], ids[i:i+1].clone())] (OWL never reads the targets)")
    ns = argparse.Namespace(sparsity_ratio=settings.sparsity, Lamda=args.owl_lambda,
                            Hyper_m=args.owl_m, nsamples=calib_ids.shape[0], seed=args.seed,
                            model="llama (prunestudio compare_reference)", use_variant=False)
    with (legacy_model(model, calib_ids.shape[1], shims), legacy_layer_calls(model, shims),
          patched(prune_all, "get_loaders", lambda *a, **k: (loader, None)),
          locals_on_return(prune_all.prune_wanda_outlier, ("all_layer_ratio",)) as seen):
        prune_all.prune_wanda_outlier(ns, model, tokenizer, device, prune_n=0, prune_m=0)
    density = seen.get("all_layer_ratio")
    # its per-block sparsity: 1 − the adjusted density, 0.01 where that is ≤ 0 (as it prunes)
    return {"block_ratios": None if density is None else
            [max(float(1 - d), 0.0) or 0.01 for d in density]}


def run_gblm(ref: Path, model, tokenizer, calib_ids, settings: Settings, args, device,
             shims: ShimLog) -> None:
    import importlib

    import torch

    with import_shims(shims, ("datasets", "matplotlib"), adamw=True):
        grad_mod = load_file("prunestudio_ref_gblm_gradient_computation",
                             ref / "gradient_computation.py")
        load_package("prunestudio_ref_gblm_lib", ref / "lib")
        prune = importlib.import_module("prunestudio_ref_gblm_lib.prune")
    loader = calib_loader(calib_ids, device)
    shims.use("get_loaders", "their get_loaders('c4', ...) returns the project's calibration "
              "windows as [(ids[i:i+1], ids[i:i+1].clone())] (targets = inputs, as "
              "gradient_computation.py's get_c4 makes them)")
    # gradient_computation.py's __main__, on these windows: model.train(), one backward per
    # sample, update_gradient, zero_grad (its AdamW's); then sqrt and fp16 as it saves them
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    model.requires_grad_(True)  # as from_pretrained leaves a model
    model.train()
    try:
        grad_up = grad_mod.gradient_computation(model, GBLM_SCALE)
        for n, (input_ids, labels) in enumerate(loader, start=1):
            loss = model(input_ids=input_ids, labels=labels).loss
            loss.backward()
            grad_up.update_gradient(model, n)
            model.zero_grad(set_to_none=True)
    finally:
        model.eval()
        for name, p in model.named_parameters():
            p.requires_grad_(flags[name])
            p.grad = None
    dtype = getattr(torch, args.gblm_gradient_dtype)  # float16: as its __main__ saves them
    gradients = {k: torch.sqrt(v).to(dtype=dtype) for k, v in grad_up.gradients_l2.items()}
    with tempfile.TemporaryDirectory(prefix="compare_reference_gblm_") as tmp:
        path = Path(tmp) / "gradients_aggregrate_norm_l2_model.pth"
        with open(path, "wb") as f:
            torch.save(gradients, f)
        ns = argparse.Namespace(gradient_path=str(path), gradient_inv=False,
                                nsamples=calib_ids.shape[0], seed=args.seed,
                                sparsity_ratio=settings.sparsity, use_variant=False)
        n, m = settings.nm or (0, 0)
        with (legacy_model(model, calib_ids.shape[1], shims), legacy_layer_calls(model, shims),
              patched(prune, "get_loaders", lambda *a, **k: (loader, None))):
            prune.prune_gblm(ns, model, tokenizer, device, prune_n=n, prune_m=m, layer_no=-1)


class _Logger:
    """LoggerWithDepth's interface, in memory."""

    lines: list[str] = []

    def __init__(self, *args, **kwargs):
        self.best_checkpoint_path = os.devnull
        _Logger.lines = []

    def log(self, text) -> None:
        _Logger.lines.append(str(text))


def run_llm_pruner(ref: Path, model, tokenizer, calib_ids, settings: Settings, args, device,
                   shims: ShimLog, blocks: range) -> dict:
    import torch

    sys.path.insert(0, str(ref))
    try:
        with import_shims(shims, ("datasets",)):
            mod = load_file("prunestudio_ref_llmpruner_llama3", ref / "llama3.py")
    except BaseException:
        sys.path.remove(str(ref))
        raise
    tok = copy.deepcopy(tokenizer)
    examples = calib_ids.clone()

    class _From:
        def __init__(self, obj):
            self.obj = obj

        def from_pretrained(self, *a, **k):
            return self.obj

    model.half = lambda *a, **k: model  # both sides keep --dtype
    shims.use("llama3.main I/O", (
        "LoggerWithDepth → in-memory logger (no prune_log/); AutoTokenizer / "
        "LlamaForCausalLM.from_pretrained → copies of the loaded tokenizer and model (no fp16 "
        "device_map='auto' reload); model.half() → no-op (both sides keep the dtype); "
        f"get_examples('bookcorpus', ...) → the calibration windows ({calib_ids.shape[0]} × "
        f"{calib_ids.shape[1]}; its seq_len=64 is --calib-seqlen here); PPLMetric → skipped "
        "(the project's perplexity measures both sides)"))
    ns = argparse.Namespace(
        base_model="(the loaded model)", save_ckpt_log_name="compare_reference",
        pruning_ratio=settings.sparsity, pruner_type="taylor", temperature=1.0, top_p=0.95,
        max_seq_len=128, channel_wise=False, block_wise=True, layer_wise=False, layer=12,
        block_attention_layer_start=blocks.start,
        block_attention_layer_end=blocks.stop if args.parts != "mlp" else blocks.start,
        block_mlp_layer_start=blocks.start,
        block_mlp_layer_end=blocks.stop if args.parts != "attention" else blocks.start,
        iterative_steps=1, grouping_strategy="sum", global_pruning=False, taylor=args.taylor,
        num_examples=calib_ids.shape[0], device=str(device), test_before_train=False,
        eval_device=str(device), test_after_train=False, seed=args.seed, save_model=False,
        torch_version=float(".".join(torch.__version__.split(".")[:2])))
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    try:
        with contextlib.ExitStack() as stack:
            for name, value in (("LoggerWithDepth", _Logger), ("AutoTokenizer", _From(tok)),
                                ("LlamaForCausalLM", _From(model)),
                                ("get_examples", lambda *a, **k: examples.to(device)),
                                ("PPLMetric", lambda *a, **k: {})):
                stack.enter_context(patched(mod, name, value))
            mod.main(ns)
    finally:
        sys.path.remove(str(ref))
        model.__dict__.pop("half", None)
        model.zero_grad(set_to_none=True)
        for p in model.parameters():
            if hasattr(p, "acc_grad"):
                del p.acc_grad
        for name, p in model.named_parameters():
            p.requires_grad_(flags.get(name, False))
        model.eval()
    return {"log": list(_Logger.lines)}


def llm_pruner_hint(exc: BaseException, lm, settings: Settings, args) -> str:
    """Why LLM-Pruner's prune_local fails when its ratio selects no whole KV group."""
    frames = traceback.extract_tb(exc.__traceback__)
    if not frames or frames[-1].name != "prune_local" or args.parts == "mlp":
        return ""
    cfg = lm.model.config
    heads = cfg.num_attention_heads
    kv = getattr(cfg, "num_key_value_heads", None) or heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    channels = kv * head_dim
    n_pruned = channels - int(channels * (1 - settings.sparsity))
    if n_pruned // head_dim:
        return ""
    return (f". Its MetaPruner removes {channels} - int({channels} × (1 - "
            f"{settings.sparsity})) = {n_pruned} k_proj channels, rounded down to whole KV "
            f"groups of {head_dim}: none, and prune_local cannot take an empty selection. "
            f"--sparsity {math.ceil(1000 / kv) / 1000} or more removes one of the {kv} KV "
            "groups per block; --parts mlp compares the MLP channels alone")


# ------------------------------------------------------------ comparing the results


def compare_unstructured(dense_lm, ref_model, ours_model) -> list[dict]:
    rows = []
    for lin in dense_lm.adapter.all_prunable_linears(dense_lm.model):
        w0 = lin.weight
        wr = ref_model.get_submodule(lin.name).weight.data
        wo = ours_model.get_submodule(lin.name).weight.data
        if lin.transposed:
            wr, wo = wr.t(), wo.t()
        max_abs, rel = weight_difference(wr, wo, w0)
        rows.append({"layer": lin.name, "block": lin.block, "kind": lin.kind,
                     "numel": w0.numel(), "sparsity_ref": sparsity_of(wr),
                     "sparsity_ours": sparsity_of(wo),
                     "agreement": mask_agreement(wr == 0, wo == 0), "max_abs_dw": max_abs,
                     "rel_fro_dw": rel})
    return rows


LINEARS = ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
           "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj")


def shrunk(dense, pruned) -> tuple[int | None, list[int]]:
    """(the dimension a structured side shrank, the indices it kept along it); (None, [])
    when the shapes are equal. Shrinking two dimensions at once is an error."""
    dims = [d for d in range(dense.dim()) if dense.shape[d] != pruned.shape[d]]
    if len(dims) > 1:
        raise ValueError(f"{tuple(dense.shape)} → {tuple(pruned.shape)}: pruned along more "
                         "than one dimension")
    return (dims[0], kept_indices(dense, pruned, dims[0])) if dims else (None, [])


def common_difference(w0, wa, wb, ka, kb) -> tuple[float, float]:
    """max |ΔW| and ‖ΔW‖_F over the entries both sides kept; `ka` / `kb` are `shrunk`'s
    answers for `wa` / `wb` against the dense `w0`."""
    import torch

    sel = {"a": wa, "b": wb}
    kept = {"a": ka, "b": kb}
    for dim in {k[0] for k in (ka, kb) if k[0] is not None}:
        full = list(range(w0.shape[dim]))
        keep = {s: (k[1] if k[0] == dim else full) for s, k in kept.items()}
        both = sorted(set(keep["a"]) & set(keep["b"]))
        for s in sel:
            pos = {v: i for i, v in enumerate(keep[s])}
            index = torch.tensor([pos[v] for v in both], dtype=torch.long)
            sel[s] = sel[s].index_select(dim, index.to(sel[s].device))
    d = sel["a"].double() - sel["b"].double()
    return (float(d.abs().max()) if d.numel() else 0.0), float(d.norm())


def compare_structured(dense_lm, ref_model, ours_model) -> tuple[list[dict], list[str]]:
    """Per block: the units each side removed (read off the shapes), their agreement, ΔW over
    the weights both kept; notes on blocks whose coupled layers disagree, or whose removed
    query heads are not those of the removed KV groups (query head h reads KV head h // rep)."""
    cfg = dense_lm.model.config
    heads = cfg.num_attention_heads
    kv = getattr(cfg, "num_key_value_heads", None) or heads
    rep = heads // kv
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // heads
    # (units read from this layer's kept rows or columns, rows per unit)
    units = {"self_attn.k_proj": ("kv", head_dim), "self_attn.v_proj": ("kv", head_dim),
             "self_attn.q_proj": ("heads", head_dim), "self_attn.o_proj": ("heads", head_dim),
             "mlp.gate_proj": ("mlp", 1), "mlp.up_proj": ("mlp", 1),
             "mlp.down_proj": ("mlp", 1)}
    rows, notes = [], []
    for i, block in enumerate(dense_lm.adapter.blocks(dense_lm.model)):
        n_units = {"kv": kv, "heads": heads, "mlp": block.mlp.gate_proj.out_features}
        pruned = {"ref": ref_model.model.layers[i], "ours": ours_model.model.layers[i]}
        kept = {side: {name: shrunk(block.get_submodule(name).weight.data,
                                    b.get_submodule(name).weight.data) for name in LINEARS}
                for side, b in pruned.items()}
        removed: dict[str, dict[str, set[int]]] = {}
        for side in pruned:
            removed[side] = {}
            for name in LINEARS:
                unit, size = units[name]
                dim, idx = kept[side][name]
                got = set() if dim is None else groups_of(idx, size, n_units[unit])
                if unit not in removed[side]:
                    removed[side][unit] = got
                elif got != removed[side][unit]:
                    notes.append(f"{side} block {i}: {name} removed {unit} {sorted(got)}, its "
                                 f"coupled layers {sorted(removed[side][unit])}")
            expected = {g * rep + j for g in removed[side]["kv"] for j in range(rep)}
            if rep > 1 and removed[side]["kv"] and removed[side]["heads"] != expected:
                notes.append(
                    f"{side} block {i}: removed KV group(s) {sorted(removed[side]['kv'])} but "
                    f"query head(s) {sorted(removed[side]['heads'])}; with {rep} query heads "
                    f"per KV head (query head h reads KV head h // {rep}) those groups' "
                    f"query heads are {sorted(expected)}: the kept query heads are re-paired "
                    "with other KV heads")
        max_dw, fro2, ref2 = 0.0, 0.0, 0.0
        for name in LINEARS:
            w0 = block.get_submodule(name).weight.data
            m, f = common_difference(w0, pruned["ref"].get_submodule(name).weight.data,
                                     pruned["ours"].get_submodule(name).weight.data,
                                     kept["ref"][name], kept["ours"][name])
            max_dw, fro2 = max(max_dw, m), fro2 + f * f
            ref2 += float(w0.double().norm()) ** 2
        r, o = removed["ref"], removed["ours"]
        rows.append({
            "block": i,
            "kv_removed_ref": sorted(r["kv"]), "kv_removed_ours": sorted(o["kv"]),
            "kv_agreement": unit_agreement(r["kv"], o["kv"], kv),
            "heads_removed_ref": sorted(r["heads"]), "heads_removed_ours": sorted(o["heads"]),
            "heads_agreement": unit_agreement(r["heads"], o["heads"], heads),
            "mlp_units": n_units["mlp"],
            "mlp_removed_ref": sorted(r["mlp"]), "mlp_removed_ours": sorted(o["mlp"]),
            "mlp_agreement": unit_agreement(r["mlp"], o["mlp"], n_units["mlp"]),
            "max_abs_dw_kept": max_dw,
            "rel_fro_dw_kept": math.sqrt(fro2 / ref2) if ref2 else 0.0,
            "params_ref": sum(p.numel() for p in pruned["ref"].parameters()),
            "params_ours": sum(p.numel() for p in pruned["ours"].parameters()),
        })
    return rows, notes


def summarise_blocks(rows: list[dict], params: dict[str, int]) -> dict[str, Any]:
    worst = min(rows, key=lambda r: r["mlp_agreement"])
    return {
        "blocks": len(rows),
        "kv_agreement_mean": sum(r["kv_agreement"] for r in rows) / len(rows),
        "kv_agreement_min": min(r["kv_agreement"] for r in rows),
        "heads_agreement_mean": sum(r["heads_agreement"] for r in rows) / len(rows),
        "mlp_agreement_mean": sum(r["mlp_agreement"] for r in rows) / len(rows),
        "mlp_agreement_min": worst["mlp_agreement"], "mlp_agreement_min_block": worst["block"],
        "identical_structure": all(r["kv_removed_ref"] == r["kv_removed_ours"]
                                   and r["heads_removed_ref"] == r["heads_removed_ours"]
                                   and r["mlp_removed_ref"] == r["mlp_removed_ours"]
                                   for r in rows),
        "kv_removed_ref": sum(len(r["kv_removed_ref"]) for r in rows),
        "kv_removed_ours": sum(len(r["kv_removed_ours"]) for r in rows),
        "mlp_removed_ref": sum(len(r["mlp_removed_ref"]) for r in rows),
        "mlp_removed_ours": sum(len(r["mlp_removed_ours"]) for r in rows),
        "max_abs_dw_kept": max(r["max_abs_dw_kept"] for r in rows),
        "params_dense": params["dense"], "params_ref": params["ref"],
        "params_ours": params["ours"],
        "param_ratio_ref": 1 - params["ref"] / params["dense"],
        "param_ratio_ours": 1 - params["ours"] / params["dense"],
    }


def _ppl_dict(res) -> dict[str, Any]:
    return {"ppl": res.ppl, "ppl_se": res.ppl_se, "log_ppl_se": res.log_ppl_se,
            "n_windows": res.n_windows, "seqlen": res.seqlen}


# ------------------------------------------------------------ main


def main(argv: list[str] | None = None) -> int:
    args = _args(argv)
    try:
        settings = check_request(args)
        return _run(args, settings)
    except Refusal as exc:
        print(f"compare_reference: {exc}", file=sys.stderr)
        return 2


def _run(args: argparse.Namespace, settings: Settings) -> int:
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from prunestudio.engine.calibration import StatsCache, calibration_hash
    from prunestudio.engine.data.windows import WindowError, build_windows, check_disjoint
    from prunestudio.engine.evaluate.perplexity import paired_log_se, perplexity
    from prunestudio.engine.models.loading import (
        check_context,
        load_model,
        quiet_libraries,
    )
    from prunestudio.engine.pruning import prune_model
    from prunestudio.engine.structured import prune_structured

    from prunestudio.schema.spec import CandidateSpec, OWLConfig, Pattern
    from prunestudio.schema.window_spec import WindowSpec

    undo = quiet_libraries()
    try:
        lm = load_model(args.model, device=args.device, dtype=args.dtype)
    except ValueError as exc:
        raise Refusal(str(exc)) from None
    finally:
        undo()
    model_type = lm.model.config.model_type
    if lm.adapter.family != "llama" or not hasattr(lm.model, "model") or not hasattr(
            lm.model.model, "layers"):
        raise Refusal(f"the references handle LLaMA-shaped models (model.model.layers); "
                      f"{args.model!r} is {model_type} ({lm.adapter.family} family)")
    if settings.method == "llm_pruner":
        if model_type != "llama":
            raise Refusal(f"LLM-Pruner's llama3.py prunes transformers' LlamaForCausalLM (its "
                          f"RMSNorm pruner is registered for LlamaRMSNorm); {args.model!r} is "
                          f"{model_type}")
        vocab = lm.model.get_input_embeddings().weight.shape[0]
        if vocab <= LLM_PRUNER_MAX_TOKEN_ID:
            raise Refusal(f"LLM-Pruner's llama3.py traces its dependency graph with "
                          f"hard-coded LLaMA token ids up to {LLM_PRUNER_MAX_TOKEN_ID} "
                          f"(`forward_prompts`); this model's vocabulary has {vocab} tokens")
    try:
        calib = build_windows(WindowSpec(source=args.calib_source, seqlen=args.calib_seqlen,
                                         n=args.calib_n, offset=args.calib_offset),
                              lm.tokenizer)
        evalw = build_windows(WindowSpec(source=args.eval_source, seqlen=args.eval_seqlen,
                                         n=args.eval_n, offset=args.eval_offset), lm.tokenizer)
        check_disjoint(calib, evalw)
        check_context(lm, calib, "calibration")
        check_context(lm, evalw, "evaluation")
    except (WindowError, ValueError) as exc:
        raise Refusal(str(exc)) from None
    n_blocks = lm.adapter.num_blocks(lm.model)
    blocks = None
    if settings.method == "llm_pruner":
        end = args.block_end + n_blocks if args.block_end < 0 else args.block_end
        if not 0 <= args.block_start < end <= n_blocks:
            raise Refusal(f"block range [{args.block_start}, {args.block_end}) = "
                          f"[{args.block_start}, {end}) is empty or outside the model's "
                          f"{n_blocks} blocks (--block-start, --block-end)")
        blocks = range(args.block_start, end)

    # Prune Studio's side ------------------------------------------------------------------
    calib_hash = calibration_hash(calib.ids, calib.tokens_hash)
    t0 = time.perf_counter()
    if settings.method == "llm_pruner":
        spec = CandidateSpec(method="structured", sparsity=settings.sparsity, options={
            "importance": TAYLOR[args.taylor], "aggregation": "sum", "ratio": "groups",
            "attention_unit": "kv_group", "block_start": blocks.start,
            "block_end": blocks.stop, "attention": args.parts != "mlp",
            "mlp": args.parts != "attention"})
        stats = StatsCache(lm, calib.ids, calib_hash, use_disk=False)
        ours_lm, ours_info = prune_structured(lm, spec, stats)
        ours_model = ours_lm.model
        ours_extra = {"param_ratio": ours_info.param_ratio,
                      "realised": ours_info.realised_label}
    else:
        pattern = (Pattern() if settings.nm is None
                   else Pattern(kind="nm", n=settings.nm[0], m=settings.nm[1]))
        owl = settings.method == "owl"
        spec = CandidateSpec(method="wanda" if owl else "gblm", sparsity=settings.sparsity,
                             pattern=pattern, layer_ratios="owl" if owl else "uniform",
                             owl=OWLConfig(M=args.owl_m, lam=args.owl_lambda) if owl else None)
        ours_model = copy.deepcopy(lm.model)
        ours_lm = dataclasses.replace(lm, model=ours_model)
        stats = StatsCache(ours_lm, calib.ids, calib_hash, use_disk=False)
        result = prune_model(ours_lm, spec, stats)
        ours_extra = {"block_ratios": result.block_ratios}
    t_ours = time.perf_counter() - t0

    # the reference's side -----------------------------------------------------------------
    title = CHECKOUTS[settings.method].title
    ref_model = copy.deepcopy(lm.model)
    shims = ShimLog()
    sink = io.StringIO()
    t0 = time.perf_counter()
    ref_extra: dict = {}
    try:
        with captured(sink):
            if settings.method == "owl":
                ref_extra = run_owl(settings.reference, ref_model, lm.tokenizer, calib.ids, settings, args,
                        lm.device, shims)
            elif settings.method == "gblm":
                run_gblm(settings.reference, ref_model, lm.tokenizer, calib.ids, settings,
                         args, lm.device, shims)
            else:
                ref_extra = run_llm_pruner(settings.reference, ref_model, lm.tokenizer,
                                           calib.ids, settings, args, lm.device, shims, blocks)
    except Refusal:
        raise
    except Exception as exc:
        if args.show_reference_output:
            print(sink.getvalue())
        hint = llm_pruner_hint(exc, lm, settings, args) if settings.method == "llm_pruner" else ""
        raise reference_failure(exc, settings.reference, title, sink.getvalue(), hint) from None
    t_ref = time.perf_counter() - t0
    if args.show_reference_output:
        print(sink.getvalue())

    # comparison ---------------------------------------------------------------------------
    notes: list[str] = []
    try:
        if settings.method == "llm_pruner":
            kind = "structured"
            rows, notes = compare_structured(lm, ref_model, ours_model)

            def params(m):
                return sum(p.numel() for p in m.parameters())

            summary = summarise_blocks(rows, {"dense": params(lm.model),
                                              "ref": params(ref_model),
                                              "ours": params(ours_model)})
            block_rows: list[dict] = []
        else:
            kind = "unstructured"
            rows = compare_unstructured(lm, ref_model, ours_model)
            summary = summarise_layers(rows)
            block_rows = per_block(rows)
            for b in block_rows:
                for side, extra in (("ref", ref_extra), ("ours", ours_extra)):
                    ratios = extra.get("block_ratios")
                    b[f"target_{side}"] = ratios[b["block"]] if ratios else settings.sparsity
    except ValueError as exc:
        raise Refusal(f"the pruned models cannot be compared: {exc}") from None
    said = [line for line in ref_extra.get("log", []) if line.startswith("#Param")]
    if said:
        notes.append(f"the reference's own log: {said[-1]}")
    results = {}
    for name, model in (("dense", lm.model), ("reference's pruned", ref_model),
                        ("Prune Studio's pruned", ours_model)):
        try:
            with torch.no_grad():
                results[name] = perplexity(model, evalw, lm.device)
        except Exception as exc:
            raise Refusal(f"the {name} model could not be evaluated: {type(exc).__name__}: "
                          f"{exc}") from None
    ppl_dense, ppl_ref, ppl_ours = results.values()

    if settings.method == "owl":
        label = (f"wanda + OWL ratios, sparsity {settings.sparsity}, M {args.owl_m}, λ "
                 f"{args.owl_lambda}, unstructured (per output row)")
    elif settings.method == "gblm":
        label = (f"gblm, sparsity {settings.sparsity}, "
                 + (f"{settings.nm[0]}:{settings.nm[1]}" if settings.nm else
                    "unstructured (per output row)") + f", gradient scale {GBLM_SCALE}, the "
                 f"reference's G stored as {args.gblm_gradient_dtype}"
                 + (" (as gradient_computation.py)" if args.gblm_gradient_dtype == "float16"
                    else " (NOT as gradient_computation.py, which saves float16)"))
    else:
        label = (f"structured, group ratio {settings.sparsity} (LLM-Pruner --pruning_ratio) in "
                 f"blocks [{blocks.start}, {blocks.stop}) of {n_blocks}, taylor {args.taylor} "
                 f"(ours: {TAYLOR[args.taylor]}), aggregation sum, KV groups; ours: "
                 f"{ours_extra['realised']}")
    log_diff = math.log(ppl_ours.ppl) - math.log(ppl_ref.ppl)
    report = {
        "title": f"{title} vs Prune Studio",
        "method": settings.method, "kind": kind,
        "reference": {"path": str(settings.reference),
                      "commit": checkout_commit(settings.reference),
                      "files": [f for f, _ in CHECKOUTS[settings.method].files]},
        "model": {"source": args.model, "description": lm.description,
                  "dtype": str(lm.dtype).removeprefix("torch."), "device": str(lm.device),
                  "blocks": n_blocks},
        "settings": {"sparsity": settings.sparsity, "pattern": args.pattern,
                     "owl_m": args.owl_m, "owl_lambda": args.owl_lambda,
                     "taylor": args.taylor, "gblm_gradient_dtype": args.gblm_gradient_dtype,
                     "blocks": [blocks.start, blocks.stop] if blocks else None,
                     "seed": args.seed, "spec": spec.model_dump(mode="json")},
        "settings_label": label,
        "calibration": {"source": args.calib_source, "n": calib.n, "seqlen": calib.seqlen,
                        "offset": args.calib_offset, "tokens_hash": calib.tokens_hash},
        "evaluation": {"source": args.eval_source, "n": evalw.n, "seqlen": evalw.seqlen,
                       "offset": args.eval_offset, "tokens_hash": evalw.tokens_hash},
        "layers": rows, "blocks": block_rows, "summary": summary, "notes": notes,
        "ppl": {"dense": _ppl_dict(ppl_dense), "reference": _ppl_dict(ppl_ref),
                "ours": _ppl_dict(ppl_ours),
                "difference": {"ratio": ppl_ours.ppl / ppl_ref.ppl, "log_diff": log_diff,
                               "paired_log_se": paired_log_se(ppl_ours.window_mean_nll,
                                                              ppl_ref.window_mean_nll)}},
        "shims": dict(shims),
        "seconds": {"reference": t_ref, "ours": t_ours},
        "ours": {k: v for k, v in ours_extra.items() if k != "realised"},
        "reference_extra": {k: v for k, v in ref_extra.items() if k != "log"},
        "reference_log": ref_extra.get("log", []),
    }
    print(format_report(report))
    if args.json:
        Path(args.json).write_text(json.dumps(report, indent=2, default=str))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
