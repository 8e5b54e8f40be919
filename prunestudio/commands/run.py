"""`prunestudio run [CONFIG.toml]`: run (or resume) a study described by a TOML file."""

from __future__ import annotations

import argparse

from prunestudio.commands import options
from prunestudio.commands.results import finish_study

NAME = "run"
HELP = "run a study from a TOML file (no file: the default study)"
DESCRIPTION = ("Run a study described by CONFIG.toml. Without CONFIG, the default study: "
               "dense + magnitude / Wanda / SparseGPT / GBLM at 50%% unstructured and 2:4 on the "
               "embedded SmolLM2-135M (offline). A config with study.kind = \"gp\" or \"random\" runs "
               "a search over symbolic metrics (see configs/gp-smollm2.toml).")
OPTIONS = ("model_source", "quiet", "allow_changed_inputs", "device", "dtype", "store", "lock_timeout", "json_output")


def arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("config", nargs="?", default=None, metavar="CONFIG.toml")
    options.study_name(p)
    p.add_argument("--resume", default=None, metavar="STUDY",
                   help="resume a killed or cancelled study (id or name) with its recorded config")
    cluster = p.add_argument_group(
        "workers (Ray: pip install 'prunestudio[cluster]')",
        "Evaluate candidates on N Ray actors, each holding the model: one per GPU, or CPU "
        "actors with a thread budget each. The store stays in this process (its only writer). "
        "Default: one worker per visible GPU when there are several and Ray is installed, "
        "else this process.")
    cluster.add_argument("--workers", type=_positive, default=None, metavar="N",
                         help="number of Ray workers (a local Ray is started for the run)")
    cluster.add_argument("--ray-address", default=None, metavar="ADDRESS",
                         help="join an existing Ray cluster (e.g. HEAD:6379, or 'auto'); "
                              "without --workers: one worker per GPU of the cluster")
    cluster.add_argument("--threads-per-worker", type=_positive, default=None, metavar="T",
                         help="CPU workers: torch threads each (default: the CPUs / N)")


def _positive(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 1; got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number ≥ 1; got {value}")
    return value


def handle(args: argparse.Namespace) -> int:
    from prunestudio.engine.runner import launch_study
    from prunestudio.engine.studies.config import load_config
    from prunestudio.engine.study.ray_executor import choose_plan
    from prunestudio.schema.study_file import ConfigError

    config = None
    if args.resume is None:
        config = options.ModelChoice.from_args(args).apply(load_config(args.config))
    elif args.config:
        raise ConfigError("give either CONFIG.toml or --resume STUDY, not both")
    reporter = options.make_reporter(args.quiet)
    plan = choose_plan(args.workers, args.ray_address, args.threads_per_worker,
                       device=args.device or (config.model.device if config else "auto"),
                       reporter=reporter)
    study_id, status = launch_study(config, args.store, name=args.name, resume=args.resume,
                                 reporter=reporter,
                                 allow_changed_inputs=args.allow_changed_inputs,
                                 lock_timeout=args.lock_timeout, plan=plan)
    return finish_study(args, study_id, status)
