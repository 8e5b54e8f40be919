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


def handle(args: argparse.Namespace) -> int:
    from prunestudio.engine.runner import launch_study
    from prunestudio.engine.studies.config import load_config
    from prunestudio.schema.study_file import ConfigError

    config = None
    if args.resume is None:
        config = options.ModelChoice.from_args(args).apply(load_config(args.config))
    elif args.config:
        raise ConfigError("give either CONFIG.toml or --resume STUDY, not both")
    study_id, status = launch_study(config, args.store, name=args.name, resume=args.resume,
                                 reporter=options.make_reporter(args.quiet),
                                 allow_changed_inputs=args.allow_changed_inputs,
                                 lock_timeout=args.lock_timeout)
    return finish_study(args, study_id, status)
