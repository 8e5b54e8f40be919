"""Recovery after pruning: LoRA (peft) or QLoRA (bitsandbytes 4-bit base) fine-tuning on text of
the calibration source, adapters merged back so the recovered model is a plain transformers
model.

    settings = resolve_settings(RecoverySettings(steps=200), config.calibration)
    windows = cut_training_windows(settings, lm, held_out=[ev.windows for ev in ctx.evaluations])
    result = recover(lm, windows, settings, reporter)      # lm.model changed in place
    result.metrics()                                        # train_loss_before / _after

Training is a plain AdamW loop over peft's ``get_peft_model`` (adapters on every prunable linear
layer by default, base weights frozen), seeded: the adapter initialisation, the batch order and
dropout come from `settings.seed`, so a run repeats exactly on the same device and dtype. The
loss is next-token cross-entropy on the training windows. After training the adapters are merged
into the weights and removed (peft's delta per layer, then ``unload``: ``merge_and_unload``
done one layer at a time); a LoRA update is dense, so with `keep_sparsity` it is merged only
where the weights are not pruned (the recovered model keeps the candidate's zeros; its figures
are those of that model). A shape-changed (structured) model trains like any other.

QLoRA: the target layers are swapped for bitsandbytes ``Linear4bit`` (NF4, compute in the
model's dtype) while the adapters train; the full-precision weights wait aside (on the CPU when
the model is on a GPU) and receive the merged update afterwards, so the recovered model is again
full precision. Whether this platform runs a 4-bit layer forward and backward is probed once
(`qlora_support`); where it cannot, `method = "qlora"` fails with a message naming the platform
and the alternative (`lora`).

`recover_recorded` records a recovery as a new candidate (origin ``recovered``, the pruned
candidate its parent): its perplexities (and task accuracies) after recovery with the parent's
figures before, and the training loss before / after (role ``recovery``, the per-step curve in
the protocol). `recover_candidates` is the study loop's hook for a ``[recovery]`` section.
"""

from __future__ import annotations

import functools
import logging
import math
import time
import warnings
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from prunestudio.engine.data.windows import WindowError, Windows, build_windows
from prunestudio.engine.evaluate.perplexity import perplexity, window_nll
from prunestudio.engine.models.adapters import PrunableLinear
from prunestudio.engine.models.loading import LoadedModel, check_context
from prunestudio.engine.progress import Reporter

from prunestudio.schema import metric_key
from prunestudio.schema.recovery import RECOVERY_ROLE, RecoverySettings, recovery_label
from prunestudio.schema.spec import CandidateSpec
from prunestudio.schema.window_spec import WindowSpec

if TYPE_CHECKING:
    from prunestudio.engine.study.context import StudyContext
    from prunestudio.store import Store

    from prunestudio.schema.study_file import TasksSection

log = logging.getLogger(__name__)

__all__ = ["ORIGIN", "RecoveryError", "RecoveryResult", "check_qlora", "cut_training_windows",
           "mean_loss", "qlora_support", "recover", "recover_candidates", "recover_recorded",
           "recovered_spec", "resolve_settings", "target_linears"]

ORIGIN = "recovered"  # the origin of a recovered candidate


class RecoveryError(ValueError):
    """A recovery that cannot run as asked; the message says why and what to do instead."""


# -- settings and text ------------------------------------------------------------------------


def resolve_settings(settings: RecoverySettings, calibration: WindowSpec,
                     train: Mapping[str, Any] | None = None) -> RecoverySettings:
    """`settings` (a study's ``[recovery]`` section also works) with its training windows filled
    in: unless given, `n_windows` contiguous windows of `seqlen` tokens of the calibration
    source and split, from the calibration offset (document-sampled calibration: documents);
    `train` (``--train KEY=VALUE,...``) over those. A study calibrated on generated text
    (``self``) has no training text of its own: `train` must name a source."""
    from prunestudio.engine.studies.config import merge_window_overrides

    data = settings.model_dump(mode="json", include=set(RecoverySettings.model_fields))
    if settings.windows is None:
        cal = calibration
        windows: dict[str, Any] = {"source": cal.source, "split": cal.split,
                                   "seqlen": settings.seqlen, "n": settings.n_windows}
        if cal.selection == "documents":
            windows.update(selection="documents", seed=settings.seed)
        elif cal.generation is None:
            windows.update(selection="contiguous", offset=cal.offset, end=cal.end)
        data["windows"] = windows
    if train:
        data["windows"] = merge_window_overrides(data["windows"], dict(train))
        for key in ("n_windows", "seqlen"):
            data.pop(key, None)  # the windows say it
    if (calibration.generation is not None
            and data["windows"].get("source") == calibration.source):
        raise RecoveryError(f"the study calibrates on text generated from the model "
                            f"({calibration.source!r}), which recovery does not train on: name the "
                            "training text, e.g. --train source=pydoc,n=64 (or [recovery] "
                            "windows = {source = ...})")
    return RecoverySettings.model_validate(data)


def cut_training_windows(settings: RecoverySettings, lm: LoadedModel,
                         held_out: Sequence[Windows] = ()) -> Windows:
    """The training windows of resolved `settings`, checked against the model's context and
    refused when they overlap any `held_out` windows (evaluation sets, a search split)."""
    if settings.windows is None:
        raise RecoveryError("recovery settings without windows: resolve_settings first")
    check_context(lm, settings.windows.seqlen, "recovery training windows")
    try:
        windows = build_windows(settings.windows, lm.tokenizer)
    except WindowError as exc:
        raise RecoveryError(f"recovery training windows: {exc}") from None
    for other in held_out:
        clash = _overlap(windows, other)
        if clash is not None:
            raise RecoveryError(
                f"recovery training windows ({settings.windows.label()}, {windows.n} × "
                f"{windows.seqlen} tokens from token {settings.windows.offset}) must not "
                f"overlap held-out text: {clash} (move them with --train offset=N or end=N, "
                "or [recovery] windows in a study file)")
    return windows


def _overlap(train: Windows, other: Windows) -> str | None:
    """Where training windows meet held-out windows of the same text, or None."""
    a, b = train.spec, other.spec
    if (a.source, a.split) != (b.source, b.split):
        return None
    if a.selection == "documents" or b.selection == "documents":
        return (f"documents sampled from {a.label()}, which {b.label()} windows are held out "
                "from; train on another split or source")
    for a0, a1 in train.spans:
        for b0, b1 in other.spans:
            if a0 < b1 and b0 < a1:
                return (f"tokens [{a0}, {a1}) of {a.label()} meet held-out tokens "
                        f"[{b0}, {b1})")
    return None


def target_linears(lm: LoadedModel, targets: Sequence[str] | None) -> list[PrunableLinear]:
    """The prunable linear layers named by `targets` (kinds such as q / down, or module names
    such as q_proj / mlp.down_proj); None: all of them. A name matching nothing is an error
    listing what is allowed."""
    # LoRA adapts linear modules: a stacked expert (a slice of a 3-D parameter) is not one
    every = lm.adapter.all_prunable_linears(lm.model)
    linears = [lin for lin in every if not lin.is_expert]
    if targets is None:
        return linears
    unknown = [t for t in targets if not any(_matches(lin, t) for lin in linears)]
    experts = [t for t in unknown if any(_matches(lin, t) for lin in every if lin.is_expert)]
    if experts:
        raise RecoveryError(
            f"recovery target_modules {experts} name experts of this mixture-of-experts model; "
            "its experts are slices of 3-D parameters, which LoRA cannot adapt as linear "
            "modules; allowed: the attention and other linear layers, kinds "
            f"{', '.join(dict.fromkeys(lin.kind for lin in linears))}")
    if unknown:
        kinds = list(dict.fromkeys(lin.kind for lin in linears))
        rel = list(dict.fromkeys(lin.name.split(".", len(lm.adapter.blocks_path.split(".")) + 1)
                                 [-1] for lin in linears))
        raise RecoveryError(
            f"recovery target_modules {unknown} match no prunable linear layer of this "
            f"{lm.adapter.family} model; allowed: kinds {', '.join(kinds)} or module names "
            f"{', '.join(rel)}")
    return [lin for lin in linears if any(_matches(lin, t) for t in targets)]


def _matches(lin: PrunableLinear, target: str) -> bool:
    return target == lin.kind or lin.name == target or lin.name.endswith("." + target)


# -- QLoRA on this platform -------------------------------------------------------------------


@contextmanager
def _quiet_bitsandbytes() -> Iterator[None]:
    """bitsandbytes' CPU backend warns once, at import, that an optional faster kernel package
    (`kernels`) is missing; its fallback works."""
    logger = logging.getLogger("bitsandbytes")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def _platform(device: torch.device, dtype: torch.dtype) -> str:
    try:
        import bitsandbytes

        bnb = f"bitsandbytes {bitsandbytes.__version__}"
    except Exception:  # noqa: BLE001 - named as missing below
        bnb = "no bitsandbytes"
    return f"device {device}, {str(dtype).removeprefix('torch.')}, {bnb}, torch {torch.__version__}"


@functools.lru_cache(maxsize=8)
def _probe(device: str, dtype: torch.dtype) -> str | None:
    try:
        with _quiet_bitsandbytes():
            import bitsandbytes as bnb
    except Exception as exc:  # noqa: BLE001 - any import failure means "not here"
        return f"bitsandbytes does not load ({type(exc).__name__}: {exc}); pip install bitsandbytes"
    try:
        gen = torch.Generator().manual_seed(0)
        layer = bnb.nn.Linear4bit(64, 32, bias=False, compute_dtype=dtype, quant_type="nf4")
        layer.weight = bnb.nn.Params4bit(torch.randn(32, 64, generator=gen).to(dtype),
                                         requires_grad=False, quant_type="nf4")
        layer = layer.to(device)
        x = torch.randn(2, 64, generator=gen).to(device=device, dtype=dtype).requires_grad_()
        y = layer(x)
        y.float().square().sum().backward()
        if not (torch.isfinite(y).all() and x.grad is not None and torch.isfinite(x.grad).all()):
            return "a 4-bit layer gave non-finite outputs or gradients"
    except Exception as exc:  # noqa: BLE001 - whatever fails, the platform cannot do it
        return f"a 4-bit layer cannot run forward and backward ({type(exc).__name__}: {exc})"
    return None


def qlora_support(device: torch.device | str, dtype: torch.dtype = torch.float32) -> str | None:
    """None when a bitsandbytes 4-bit (NF4) layer runs forward and backward on `device` in
    `dtype` here; else why not. Probed once per (device, dtype) with a tiny layer."""
    return _probe(str(torch.device(device)), dtype)


def check_qlora(device: torch.device | str, dtype: torch.dtype = torch.float32) -> None:
    """Raise RecoveryError naming the platform and the alternative when QLoRA cannot run."""
    reason = qlora_support(device, dtype)
    if reason is not None:
        raise RecoveryError(
            f"recovery method 'qlora' is not supported on this platform "
            f"({_platform(torch.device(device), dtype)}): {reason}. Use method 'lora' (the "
            "same adapters on the full-precision pruned model; --method lora)")


# -- training ---------------------------------------------------------------------------------


@dataclass
class RecoveryResult:
    settings: RecoverySettings
    windows: Windows
    losses: list[float]  # training loss of each optimizer step (its batch, train mode)
    loss_before: float  # mean next-token loss on all training windows, eval mode, before
    loss_after: float  # the same on the recovered (merged) model
    seconds: float
    trainable_params: int
    targets: list[str]
    zeros_kept: int = 0  # pruned (zero) weights the merged update left at zero
    info: dict[str, Any] = field(default_factory=dict)

    @property
    def steps(self) -> int:
        return len(self.losses)

    def summary(self) -> str:
        s = self.settings
        return (f"{s.method} r{s.r}, {self.steps} steps × {s.batch_size} windows of "
                f"{self.windows.seqlen}: training loss {self.loss_before:.4f} → "
                f"{self.loss_after:.4f}")

    def protocol(self) -> dict[str, Any]:
        spec, s = self.windows.spec, self.settings
        return {"selection": spec.selection, "offset": spec.offset,
                "tokens_hash": self.windows.tokens_hash, "text_hash": self.windows.text_hash,
                "method": s.method, "r": s.r, "alpha": s.alpha, "steps": self.steps,
                "batch_size": s.batch_size, "lr": s.lr, "seed": s.seed,
                "loss": "mean next-token cross-entropy over every training window, eval mode"}

    def metrics(self) -> list[dict[str, Any]]:
        """train_loss_before / train_loss_after (role 'recovery'); the per-step curve rides in
        the protocol of train_loss_after."""
        spec = self.windows.spec
        base = {"dataset": spec.source, "split": spec.split, "seqlen": self.windows.seqlen,
                "n_samples": self.windows.n, "fidelity": "full", "role": RECOVERY_ROLE}
        curve = [float(f"{v:.6g}") for v in self.losses]
        return [
            {**base, "name": "train_loss_before", "value": self.loss_before,
             "protocol": self.protocol()},
            {**base, "name": "train_loss_after", "value": self.loss_after,
             "protocol": {**self.protocol(), "curve": curve, "first_step": curve[0],
                          "last_step": curve[-1], "seconds": round(self.seconds, 3),
                          "trainable_params": self.trainable_params,
                          "keep_sparsity": self.settings.keep_sparsity,
                          "zeros_kept": self.zeros_kept}},
        ]


@torch.no_grad()
def mean_loss(model, windows: Windows, device, batch_size: int = 4) -> float:
    """Mean next-token cross-entropy (fp32) over every window, in eval mode."""
    was_training = model.training
    model.eval()
    try:
        nll = window_nll(model, windows.ids, device, batch_size)
    finally:
        model.train(was_training)
    return float(nll.sum()) / (windows.n * (windows.seqlen - 1))


def _lr_factor(settings: RecoverySettings, total: int):
    warm = settings.warmup_steps

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / warm
        if settings.schedule == "constant":
            return 1.0
        progress = (step - warm) / max(1, total - warm)
        if settings.schedule == "linear":
            return max(0.0, 1.0 - progress)
        return 0.5 * (1.0 + math.cos(math.pi * progress))

    return factor


def _batches(n: int, batch_size: int, steps: int, gen: torch.Generator) -> Iterator[torch.Tensor]:
    """`steps` batches of window indices: seeded permutations of all windows, one after the
    other (a batch may span two passes); every window once per pass."""
    size = min(batch_size, n)
    stream = torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        while len(stream) < size:
            stream = torch.cat([stream, torch.randperm(n, generator=gen)])
        yield stream[:size]
        stream = stream[size:]


def _set_module(model: torch.nn.Module, name: str, module: torch.nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, module)


def _weight_view(module: torch.nn.Module, transposed: bool) -> torch.Tensor:
    w = module.weight.data
    return w.t() if transposed else w


def _quantize(lm: LoadedModel, targets: list[PrunableLinear]) -> dict[str, torch.nn.Module]:
    """Swap each target for a bitsandbytes NF4 Linear4bit on the model's device; return the
    full-precision originals (moved to the CPU when the model is on a GPU)."""
    with _quiet_bitsandbytes():
        import bitsandbytes as bnb

    originals: dict[str, torch.nn.Module] = {}
    for lin in targets:
        orig = lin.module
        w = lin.weight.detach().contiguous().clone()  # (out, in), Conv1D transposed back
        q = bnb.nn.Linear4bit(w.shape[1], w.shape[0], bias=orig.bias is not None,
                              compute_dtype=lm.dtype, quant_type="nf4", device="cpu")
        q.weight = bnb.nn.Params4bit(w.cpu(), requires_grad=False, quant_type="nf4")
        if orig.bias is not None:
            q.bias = torch.nn.Parameter(orig.bias.detach().clone(), requires_grad=False)
        q = q.to(lm.device)
        if lm.device.type != "cpu":
            orig.to("cpu")
        originals[lin.name] = orig
        _set_module(lm.model, lin.name, q)
    return originals


def recover(lm: LoadedModel, windows: Windows, settings: RecoverySettings,
            reporter: Reporter | None = None) -> RecoveryResult:
    """Fine-tune `lm.model` (pruned; changed in place) with LoRA / QLoRA adapters on `windows`,
    merge them (with `keep_sparsity` only where the weights are not pruned). Its modules, parameter
    names and shapes, training mode and requires_grad flags are as before."""
    with _quiet_bitsandbytes():  # peft imports bitsandbytes when it is installed
        from peft import LoraConfig, get_peft_model

    reporter = reporter or Reporter()
    model, device = lm.model, lm.device
    targets = target_linears(lm, settings.target_modules)
    if settings.method == "qlora":
        check_qlora(device, lm.dtype)
    transposed = any(lin.transposed for lin in targets)
    names = [lin.name for lin in targets]
    modules = {lin.name: lin.module for lin in targets}
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    was_training = model.training
    t0 = time.perf_counter()
    loss_before = mean_loss(model, windows, device, settings.batch_size)
    total = settings.total_steps
    cuda = [device] if device.type == "cuda" else []
    losses: list[float] = []
    originals: dict[str, torch.nn.Module] = {}
    peft_model = None
    merged = False
    zeros_kept = 0
    with torch.random.fork_rng(devices=cuda):
        torch.manual_seed(settings.seed)
        try:
            if settings.method == "qlora":
                originals = _quantize(lm, targets)
            config = LoraConfig(r=settings.r, lora_alpha=settings.alpha,
                                lora_dropout=settings.dropout, target_modules=names, bias="none",
                                fan_in_fan_out=transposed and not originals)
            with warnings.catch_warnings():  # transformers' deprecation notes, seen by peft
                warnings.simplefilter("ignore", FutureWarning)
                peft_model = get_peft_model(model, config)
            params = [p for p in peft_model.parameters() if p.requires_grad]
            trainable = sum(p.numel() for p in params)
            optimizer = torch.optim.AdamW(params, lr=settings.lr,
                                          weight_decay=settings.weight_decay)
            schedule = torch.optim.lr_scheduler.LambdaLR(optimizer, _lr_factor(settings, total))
            gen = torch.Generator().manual_seed(settings.seed)
            peft_model.train()
            every = max(1, total // 10)
            with reporter.task(f"recover {settings.method} r{settings.r}", total) as bar:
                for step, idx in enumerate(_batches(windows.n, settings.batch_size, total, gen)):
                    x = windows.ids[idx].to(device)
                    loss = peft_model(input_ids=x, labels=x, use_cache=False).loss
                    if not torch.isfinite(loss):
                        raise RecoveryError(
                            f"recovery training loss is {float(loss)} at step {step + 1}: "
                            f"lower the learning rate (lr = {settings.lr:g}) or keep "
                            "max_grad_norm on")
                    loss.backward()
                    if settings.max_grad_norm is not None:
                        torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm)
                    optimizer.step()
                    schedule.step()
                    optimizer.zero_grad(set_to_none=True)
                    losses.append(float(loss.detach()))
                    bar(step + 1, total)
                    if (step + 1) % every == 0 or step + 1 == total:
                        reporter.message(f"recover step {step + 1}/{total}: loss "
                                         f"{losses[-1]:.4f}")
            peft_model.eval()
            # merge: each layer's LoRA update (peft's delta, B·A·alpha/r) added to its weight,
            # one layer at a time, then the adapters removed (peft's merge_and_unload, but
            # masked to the pruned weights' support with keep_sparsity, and for QLoRA into the
            # full-precision weights rather than the 4-bit ones)
            inner = peft_model.base_model.model
            with torch.no_grad():
                for n in names:
                    delta = inner.get_submodule(n).get_delta_weight("default").detach()
                    if originals:  # a Linear4bit base: the delta is (out, in)
                        w = _weight_view(originals[n], transposed)
                    else:  # the layer's own weight; fan_in_fan_out gives Conv1D's layout
                        w = modules[n].weight.data
                    delta = delta.to(device=w.device, dtype=w.dtype)
                    if settings.keep_sparsity:
                        keep = w != 0
                        zeros_kept += int(keep.numel() - keep.sum())
                        delta = delta * keep
                    w.add_(delta)
                    del delta
            peft_model.unload()
            for n in names:
                if n in originals:
                    _set_module(model, n, originals.pop(n).to(device))
            merged = True
        finally:
            if not merged:  # failed: leave the model as it was given (adapters removed)
                if peft_model is not None:
                    peft_model.unload()
                for n, orig in originals.items():
                    _set_module(model, n, orig.to(device))
            for n, p in model.named_parameters():
                p.requires_grad_(flags.get(n, p.requires_grad))
            model.train(was_training)
            _drop_peft_traces(model)
    for n, module in modules.items():  # the same module objects, back in place
        if model.get_submodule(n) is not module:
            raise RuntimeError(f"recovery left another module at {n}")
    loss_after = mean_loss(model, windows, device, settings.batch_size)
    return RecoveryResult(settings, windows, losses, loss_before, loss_after,
                          time.perf_counter() - t0, trainable, names, zeros_kept)


def _drop_peft_traces(model: torch.nn.Module) -> None:
    """Attributes peft may leave on a model it wrapped (the recovered model is plain)."""
    for attr in ("peft_config", "_hf_peft_config_loaded"):
        if attr in vars(model):
            delattr(model, attr)


# -- recording a recovered candidate ----------------------------------------------------------


def recovered_spec(parent: CandidateSpec | dict[str, Any], settings: RecoverySettings
                   ) -> CandidateSpec:
    """The spec of `parent` recovered with (resolved) `settings`."""
    data = parent.canonical() if isinstance(parent, CandidateSpec) else dict(parent)
    if data.get("recovery") is not None:
        raise RecoveryError("candidate is already recovered; recover its parent instead "
                            "(a second recovery on top of a first is not supported)")
    return CandidateSpec.model_validate({**data, "recovery": settings.recipe()})


def _key(m: dict[str, Any]) -> str:
    """A metric's identity: the schema's one rule (missing parts are equal however written)."""
    return metric_key(m)


def _same(m: dict[str, Any], ref: dict[str, Any]) -> bool:
    return _key(m) == _key(ref)


def _recorded(parent_metrics: list[dict[str, Any]], fresh_like: dict[str, Any]
              ) -> dict[str, Any] | None:
    """The parent's recorded metric with this identity, measured on the same tokens (when the
    protocol says which)."""
    for m in parent_metrics:
        if not _same(m, fresh_like) or "reused_from" in (m.get("protocol") or {}):
            continue
        want = (fresh_like.get("protocol") or {}).get("tokens_hash")
        have = (m.get("protocol") or {}).get("tokens_hash")
        if want is None or have is None or want == have:
            return m
    return None


def _identity_template(ev) -> dict[str, Any]:
    spec = ev.windows.spec
    return {"name": "ppl", "role": ev.role, "dataset": spec.source, "split": spec.split,
            "seqlen": ev.windows.seqlen, "fidelity": ev.fidelity,
            "protocol": {"tokens_hash": ev.windows.tokens_hash}}


def _ppl_metrics(lm: LoadedModel, ctx: StudyContext, reporter: Reporter) -> list[dict[str, Any]]:
    out = []
    for ev in ctx.evaluations:
        with reporter.task(f"ppl {ev.role}", ev.windows.n) as bar:
            result = perplexity(lm.model, ev.windows, lm.device, ev.batch_size, bar)
        out.append(result.metric(fidelity=ev.fidelity, role=ev.role, windows=ev.windows))
    return out


def _task_metrics(lm: LoadedModel, tasks: TasksSection | None, reporter: Reporter
                  ) -> list[dict[str, Any]]:
    if tasks is None:
        return []
    from prunestudio.engine.study.measurements.tasks import task_accuracy

    return task_accuracy(lm, tasks, reporter)


def _sparsity_metrics(lm: LoadedModel, spec: CandidateSpec, shape) -> list[dict[str, Any]]:
    """What the recovered model is: a shape-changed parent's size (unchanged by recovery), an
    in-place parent's realised sparsity after the merge."""
    if shape is not None:
        return shape.metrics()
    if spec.method == "dense":
        return []
    linears = lm.adapter.all_prunable_linears(lm.model)
    zeros = sum(int((lin.weight == 0).sum()) for lin in linears)
    total = sum(lin.weight.numel() for lin in linears)
    return [{"name": "sparsity", "value": zeros / total if total else 0.0,
             "role": "pruned_layers",
             "protocol": {"target": spec.sparsity, "n_layers": len(linears),
                          "after": "recovery (merged adapters)",
                          "keep_sparsity": bool(spec.recovery and spec.recovery.keep_sparsity),
                          "scope": "prunable linear layers (embeddings and lm_head excluded)"}}]


def check_new_recovery(store: Store, study_id: int, spec: CandidateSpec) -> None:
    """Refuse a recovery the study already holds done (same parent spec and recipe)."""
    found = store.candidate_by_hash(study_id, spec.hash())
    if found is not None and found["status"] == "done":
        raise RecoveryError(
            f"candidate {found['id']} already is this recovery ({spec.label} "
            f"{recovery_label(spec.recovery.recipe())}, the same settings); change a setting "
            "(e.g. --seed or --steps) to record another")


def recover_recorded(store: Store, study: dict[str, Any], parent: dict[str, Any],
                     ctx: StudyContext, lm: LoadedModel, shape, settings: RecoverySettings,
                     reporter: Reporter | None = None) -> dict[str, Any]:
    """Recover the pruned model `lm` of the recorded candidate `parent` and record the result
    as a new candidate of `study` (origin 'recovered', parents [parent id]); return it.

    `settings` are resolved (`resolve_settings`). Before: the parent's recorded figures with the
    same identity on the same tokens; measured now on `lm` (and added to the parent, which
    lacked them) otherwise. After: the same figures of the recovered model, each carrying its
    before-value and the parent id in its protocol, plus the training loss before / after.
    A failure during training or measuring is recorded on the new candidate and re-raised."""
    reporter = reporter or Reporter()
    parent_spec = CandidateSpec.model_validate(parent["spec"])
    spec = recovered_spec(parent_spec, settings)
    check_new_recovery(store, study["id"], spec)
    target_linears(lm, settings.target_modules)  # refused before anything is recorded
    if settings.method == "qlora":
        check_qlora(lm.device, lm.dtype)
    held_out = [ev.windows for ev in ctx.evaluations]
    if ctx.search_split is not None:
        held_out.append(ctx.search_split.windows)
    windows = cut_training_windows(settings, lm, held_out)

    # before: the parent's recorded figures, or measured now (and added to the parent)
    before: dict[tuple, dict[str, Any]] = {}
    missing = []
    for ev in ctx.evaluations:
        like = _identity_template(ev)
        found = _recorded(parent["metrics"], like)
        if found is None:
            missing.append(ev.role)
        else:
            before[_key(found)] = {**found, "from": "parent record"}
    fresh: list[dict[str, Any]] = []
    if missing:
        reporter.message(f"parent {parent['id']} has no recorded PPL on "
                         f"{', '.join(missing)}: measuring it before recovery")
        fresh += [m for m in _ppl_metrics(lm, ctx, reporter) if m["role"] in missing]
    tasks = ctx.tasks
    if tasks is not None:
        task_before = [m for m in parent["metrics"] if m.get("role") == "task"]
        if not task_before:
            reporter.message(f"parent {parent['id']} has no recorded task accuracy: measuring "
                             "it before recovery")
            fresh += _task_metrics(lm, tasks, reporter)
        for m in task_before:
            before[_key(m)] = {**m, "from": "parent record"}
    if fresh:
        have = {_key(m) for m in parent["metrics"]}
        new = [m for m in fresh if _key(m) not in have]
        if new:
            store.add_metrics(parent["id"], new)
        for m in fresh:
            before[_key(m)] = {**m, "from": "measured before recovery"}

    cid, _ = store.add_candidate(study["id"], spec.canonical(), origin=ORIGIN,
                                 parents=[parent["id"]])
    if not store.start_candidate(cid):
        raise RecoveryError(
            f"candidate {cid} (this recovery) is marked running: another `prunestudio recover` "
            "is at work on it, or one was killed with SIGKILL; give another setting (e.g. "
            "--seed) for a new candidate")
    label = f"{spec.label} {recovery_label(spec.recovery.recipe())}"
    store.add_event(study["id"], f"candidate {cid} {label}: recovering candidate "
                    f"{parent['id']} ({settings.method}, {settings.total_steps} steps)",
                    candidate_id=cid)
    timings: dict[str, float] = {}
    info: dict[str, Any] = {"label": label, "parent": parent["id"],
                            "recovery": {"windows": windows.spec.model_dump(mode="json")}}
    try:
        t0 = time.perf_counter()
        result = recover(lm, windows, settings, reporter)
        timings["recover"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        after = _ppl_metrics(lm, ctx, reporter)
        timings["evaluate"] = time.perf_counter() - t0
        if tasks is not None:
            t0 = time.perf_counter()
            after += _task_metrics(lm, tasks, reporter)
            timings["tasks"] = time.perf_counter() - t0
        for m in after:
            b = before.get(_key(m))
            if b is not None and b.get("n_samples") != m.get("n_samples"):
                b = None  # e.g. a task measured with another limit: not comparable
            m["protocol"] = {**(m.get("protocol") or {}), "recovered_from": parent["id"],
                             "before": None if b is None else b["value"]}
        metrics = [*_sparsity_metrics(lm, spec, shape), *after, *result.metrics()]
    except BaseException as exc:  # Ctrl-C / SIGTERM too: never left 'running'
        from prunestudio.engine.study.executor import error_text

        what = ("interrupted" if isinstance(exc, KeyboardInterrupt)
                else f"failed: {type(exc).__name__}: {exc}")
        store.fail_candidate(cid, error=error_text(exc) if isinstance(exc, Exception)
                             else f"interrupted ({type(exc).__name__}) during recovery",
                             timings=timings, info=info)
        store.add_event(study["id"], f"candidate {cid} {label} {what}; the same `prunestudio "
                        "recover` runs it again", level="error", candidate_id=cid)
        raise
    timings["total"] = sum(timings.values())
    from prunestudio.engine.study.context import input_identity

    info.update(input_identity(ctx))
    info["recovery"].update(loss_before=result.loss_before, loss_after=result.loss_after,
                            steps=result.steps, trainable_params=result.trainable_params,
                            targets=len(result.targets), zeros_kept=result.zeros_kept,
                            before={f"{b['role']} {b['name']}": {"value": b["value"],
                                                                  "from": b["from"]}
                                    for b in before.values()})
    store.finish_candidate(cid, metrics=metrics, timings=timings, info=info)
    changes = ", ".join(f"{m['role']} {m['name']} {m['protocol']['before']:.3f} → "
                        f"{m['value']:.3f}" for m in after
                        if m["protocol"].get("before") is not None)
    store.add_event(study["id"], f"candidate {cid} {label}: {result.summary()}"
                    + (f"; {changes}" if changes else ""), candidate_id=cid)
    return store.candidate(cid)


# -- the study loop's hook --------------------------------------------------------------------


def _rank_value(cand, role: str | None) -> float | None:
    values = [m.value for m in cand.metrics if m.name == "ppl" and m.role == role
              and m.fidelity == "full"]
    return min(values) if values else None


def recover_candidates(store: Store, study_id: int, section, ctx: StudyContext,
                       reporter: Reporter | None = None) -> list[int]:
    """After a study ran: recover its `section.best` best candidates (by PPL on the first
    evaluation set, fidelity full; references, failed and already recovered candidates
    excluded) with the study's ``[recovery]`` section, each recorded as a new candidate.
    Uses the study's loaded context (in-place pruning is undone with its weight snapshot).
    A failing recovery is recorded on its candidate and the next one goes on. Returns the new
    candidate ids."""
    from prunestudio.engine.study.executor import prune_candidate

    reporter = reporter or Reporter()
    study = store.get_study(study_id)
    role = ctx.evaluations[0].role if ctx.evaluations else None
    ranked = []
    for c in store.candidate_records(study_id, status="done"):
        if c.is_reference or c.origin == ORIGIN or c.spec.get("recovery") is not None:
            continue
        value = _rank_value(c, role)
        if value is not None and math.isfinite(value):
            ranked.append((value, c.idx, c.id))
    settings = resolve_settings(section, ctx.calibration.spec)
    out = []
    for _, _, cid in sorted(ranked)[:section.best]:
        parent = store.candidate(cid)
        spec = CandidateSpec.model_validate(parent["spec"])
        try:
            check_new_recovery(store, study_id, recovered_spec(spec, settings))
        except RecoveryError as exc:
            store.add_event(study_id, f"recovery of candidate {cid} skipped: {exc}",
                            candidate_id=cid)
            continue
        try:
            pruned = prune_candidate(ctx, spec, reporter, ctx.snapshot)
            new = recover_recorded(store, study, parent, ctx, pruned.lm, pruned.shape,
                                   settings, reporter)
            out.append(new["id"])
        except Exception as exc:  # noqa: BLE001 - recorded; the next candidate goes on
            log.warning("recovery of candidate %s failed: %s", cid, exc)
        finally:
            ctx.snapshot.mark(lin.name for lin in ctx.lm.adapter.all_prunable_linears(
                ctx.lm.model))
            ctx.snapshot.restore()
    return out


def recover_pruned(ctx: StudyContext, lm: LoadedModel, spec: CandidateSpec,
                   reporter: Reporter | None = None) -> RecoveryResult | None:
    """Apply a spec's recovery to its freshly pruned model `lm` (in place; None when the spec
    is not recovered): what re-pruning a recorded recovered candidate (`export`, `eval`) needs
    after `pruned_model`, so that it rebuilds the recovered model, not its parent's."""
    if spec.recovery is None:
        return None
    held_out = [ev.windows for ev in ctx.evaluations]
    windows = cut_training_windows(spec.recovery, lm, held_out)
    result = recover(lm, windows, spec.recovery, reporter)
    if lm is ctx.lm:  # in place: the snapshot restores every recovered layer
        ctx.snapshot.mark(result.targets)
    return result
