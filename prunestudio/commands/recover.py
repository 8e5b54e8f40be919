"""`prunestudio recover CANDIDATE`: LoRA / QLoRA fine-tuning of a recorded candidate's pruned
model on text of its study's calibration source, recorded as a new candidate (origin
`recovered`, the pruned candidate its parent) with its perplexities before and after."""

from __future__ import annotations

import argparse
import json
from typing import Any

from prunestudio.commands import options
from prunestudio.commands.exit_codes import EXIT_OK

NAME = "recover"
HELP = "LoRA / QLoRA recovery of a candidate, recorded as a new candidate"
DESCRIPTION = (
    "Re-prune CANDIDATE from its spec on a fresh load of its study's model (refused if the "
    "model or text fingerprints changed), fine-tune LoRA adapters (peft; --method qlora: on a "
    "bitsandbytes 4-bit base where this platform runs one) on windows of the study's "
    "calibration source that overlap no evaluation text, merge them (the pruned zeros put "
    "back), and record the result as a new candidate linked to CANDIDATE: perplexity on the "
    "study's evaluation sets (and its [tasks]) after recovery beside the values before, and "
    "the training loss before / after.")
OPTIONS = ("allow_changed_inputs", "device", "dtype", "store", "lock_timeout", "json_output",
           "quiet")

# flag dest -> RecoverySettings field (given flags only: the settings' defaults stay one place)
_FIELDS = {"method": "method", "r": "r", "alpha": "alpha", "lora_dropout": "dropout",
           "lr": "lr", "weight_decay": "weight_decay", "schedule": "schedule",
           "warmup_steps": "warmup_steps", "steps": "steps", "epochs": "epochs",
           "batch_size": "batch_size", "seqlen": "seqlen", "n_windows": "n_windows",
           "seed": "seed", "keep_sparsity": "keep_sparsity"}


def arguments(p: argparse.ArgumentParser) -> None:
    options.candidate_id(p)
    p.add_argument("--method", default=None, choices=["lora", "qlora"],
                   help="lora (default) or qlora (4-bit NF4 base during training; bitsandbytes)")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps (default 100)")
    p.add_argument("--epochs", type=float, default=None,
                   help="passes over the training windows (instead of --steps)")
    p.add_argument("--r", type=int, default=None, help="LoRA rank (default 8)")
    p.add_argument("--alpha", type=float, default=None, help="LoRA alpha (default 16)")
    p.add_argument("--lora-dropout", type=float, default=None, help="default 0.05")
    p.add_argument("--lr", type=float, default=None, help="AdamW learning rate (default 1e-4)")
    p.add_argument("--weight-decay", type=float, default=None)
    p.add_argument("--schedule", default=None, choices=["constant", "linear", "cosine"])
    p.add_argument("--warmup-steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None, help="windows per step (default 4)")
    p.add_argument("--seqlen", type=int, default=None,
                   help="tokens per training window (default 128)")
    p.add_argument("--windows", dest="n_windows", type=int, default=None,
                   help="number of training windows (default 64)")
    p.add_argument("--train", default=None, metavar="KEY=VALUE,...",
                   help="the training windows, over the default (the calibration source and "
                   "split from its calibration offset), e.g. offset=4096 or source=shakespeare,"
                   "split=macbeth,n=32,seqlen=128")
    p.add_argument("--target-modules", default=None, metavar="NAME,...",
                   help="layers with adapters: kinds (q,k,v,o,gate,up,down,fc1,fc2,qkv) or "
                   "module names (default: every prunable linear layer)")
    p.add_argument("--max-grad-norm", default=None, metavar="NORM",
                   help="gradient clipping (default 1.0; 'none': off)")
    p.add_argument("--seed", type=int, default=None,
                   help="adapter initialisation, batch order, dropout (default 0)")
    p.add_argument("--keep-sparsity", default=None, action=argparse.BooleanOptionalAction,
                   help="put the pruned zeros back after merging (default: on)")


def settings_from_args(args: argparse.Namespace) -> dict[str, Any]:
    """The given flags as [recovery] keys (windows handled by the caller)."""
    data = {key: getattr(args, dest) for dest, key in _FIELDS.items()
            if getattr(args, dest, None) is not None}
    if args.target_modules is not None:
        data["target_modules"] = [t.strip() for t in args.target_modules.split(",")]
    if args.max_grad_norm is not None:
        text = str(args.max_grad_norm).strip().lower()
        data["max_grad_norm"] = None if text in ("none", "off", "0") else args.max_grad_norm
    return data


def _resolved(resolve, settings, calibration, train):
    """`resolve_settings` with a bad ``--train`` reported like a bad flag (exit 2)."""
    from pydantic import ValidationError

    from prunestudio.schema.recovery import RecoverySettings
    from prunestudio.schema.study_file import ConfigError, format_validation_error

    try:
        return resolve(settings, calibration, train)
    except ValidationError as exc:
        raise ConfigError("invalid recovery settings (prunestudio recover flags):\n"
                          + format_validation_error(exc, RecoverySettings)) from None


def _validated(data: dict[str, Any]):
    from pydantic import ValidationError

    from prunestudio.schema.recovery import RecoverySettings
    from prunestudio.schema.study_file import ConfigError, format_validation_error

    try:
        return RecoverySettings.model_validate(data)
    except ValidationError as exc:
        raise ConfigError("invalid recovery settings (prunestudio recover flags):\n"
                          + format_validation_error(exc, RecoverySettings)) from None


def handle(args: argparse.Namespace) -> int:
    # everything that can be refused is refused before the model loads; bad flags (e.g.
    # --r 0) before the engine (torch) is even imported
    given = settings_from_args(args)
    _validated(given)

    import prunestudio.engine  # noqa: F401 - installs the catalog the settings' windows need
    from prunestudio.commands.prune import parse_key_values
    from prunestudio.engine.candidate_jobs import recorded_candidate, recorded_config, reprune
    from prunestudio.engine.interrupts import sigterm_as_interrupt
    from prunestudio.engine.models.loading import resolve_device
    from prunestudio.engine.recovery import (
        RecoveryError,
        check_new_recovery,
        check_qlora,
        recover_recorded,
        recovered_spec,
        resolve_settings,
    )
    from prunestudio.schema.spec import CandidateSpec
    from prunestudio.store import open_store

    train = parse_key_values(args.train, "--train") if args.train else {}
    cand, study = recorded_candidate(args.store, args.candidate, "recover",
                                     lock_timeout=args.lock_timeout)
    parent_spec = CandidateSpec.model_validate(cand["spec"])
    if parent_spec.recovery is not None:
        parents = ", ".join(map(str, cand.get("parents") or [])) or "?"
        raise RecoveryError(f"candidate {cand['id']} is already recovered (from candidate "
                            f"{parents}); recover the pruned candidate instead")
    config = options.ModelChoice.from_args(args).apply(recorded_config(study))
    settings = _resolved(resolve_settings, _validated(given), config.calibration, train)
    spec = recovered_spec(parent_spec, settings)
    with open_store(args.store, readonly=True, timeout=args.lock_timeout) as store:
        check_new_recovery(store, study["id"], spec)
    if settings.method == "qlora":
        check_qlora(resolve_device(config.model.device))

    reporter = options.make_reporter(args.quiet)
    ctx, spec, lm, _, structured = reprune(args, cand, study, config, reporter, "recover")
    if config.is_search:  # the search split is held-out text too
        from prunestudio.engine.study.measurements.fitness import cut_search_split

        ctx.search_split = cut_search_split(config, ctx)
    reporter.message(f"recovering candidate {cand['id']} ({spec.label}): {settings.method} "
                     f"r{settings.r}, {settings.total_steps} steps on "
                     f"{settings.windows.label()} from token {settings.windows.offset}")
    with sigterm_as_interrupt(), open_store(args.store, timeout=args.lock_timeout) as store:
        new = recover_recorded(store, study, cand, ctx, lm, structured, settings, reporter)
    if args.json:
        print(json.dumps({k: new[k] for k in ("id", "study_id", "idx", "origin", "parents",
                                              "status", "spec", "info", "metrics")}, indent=2))
        return EXIT_OK
    print(f"candidate {new['id']}: {new['info']['label']} (recovered from candidate "
          f"{cand['id']})")
    for m in new["metrics"]:
        before = (m.get("protocol") or {}).get("before")
        if m["name"] == "train_loss_after":
            rec = new["info"]["recovery"]
            print(f"  training loss      {rec['loss_before']:.4f} → {rec['loss_after']:.4f}"
                  f"  ({rec['steps']} steps, {m['dataset']}:{m['split']}, {m['n_samples']} × "
                  f"{m['seqlen']} tokens)")
        elif "recovered_from" in (m.get("protocol") or {}):
            what = f"{m['role']} {m['name']}"
            shown = f"{before:.4f} → " if before is not None else "(no before) "
            print(f"  {what:<18} {shown}{m['value']:.4f}  ({m['dataset']}, {m['fidelity']})")
    return EXIT_OK
