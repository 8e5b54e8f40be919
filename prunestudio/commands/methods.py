"""`prunestudio methods`: the registered pruning methods, their options and statistics."""

from __future__ import annotations

import argparse

from prunestudio.commands.exit_codes import EXIT_OK

NAME = "methods"
HELP = "list the registered pruning methods and their options"


def handle(args: argparse.Namespace) -> int:
    from prunestudio.engine.methods import get_method, method_names

    for name in method_names():
        method = get_method(name)
        fields = method.options_model.model_fields
        opts = ", ".join(f"{k} (required)" if f.is_required() else f"{k}={f.default!r}"
                         for k, f in fields.items()) or "no options"
        needs = [n for n, flag in (("X", method.needs_x), ("H", method.needs_hessian),
                                   ("G", method.needs_grad)) if flag]
        print(f"{name:<11} {method.description}\n{'':<11} options: {opts}; "
              f"statistics: {', '.join(needs) or 'none'}")
    return EXIT_OK
