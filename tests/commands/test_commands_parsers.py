"""The console script's parsers: one module per command, one definition of every shared
option, and nothing heavy imported to list or read results."""

from __future__ import annotations

import argparse
import subprocess
import sys

import pytest

from prunestudio.cli import build_parser
from prunestudio.commands import COMMANDS


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    (action,) = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    return dict(action.choices)


def test_every_command_module_owns_its_parser_and_handler():
    subs = _subparsers()
    assert [c.NAME for c in COMMANDS] == list(subs)
    assert set(subs) == {"run", "prune", "studies", "show", "export", "eval", "recover", "bench",
                         "backup", "methods", "tui", "web"}
    for command in COMMANDS:
        assert subs[command.NAME].get_default("handler") is command.handle


@pytest.mark.parametrize("flag", ["--store", "--lock-timeout", "--json", "--quiet", "--device",
                                  "--dtype", "--model", "--allow-changed-inputs", "--name"])
def test_a_shared_option_is_the_same_in_every_command(flag):
    seen = {}
    for name, sub in _subparsers().items():
        for action in sub._actions:
            if flag in action.option_strings:
                seen[name] = (action.default, action.help, action.type, action.metavar,
                              action.nargs, type(action))
    assert len(seen) >= 2, seen
    assert len(set(seen.values())) == 1, seen


def _modules_after(code: str) -> list[str]:
    probe = (f"import sys\n{code}\n"
             "print([m for m in ('torch', 'transformers', 'pydantic', "
             "'prunestudio.engine.runner', 'prunestudio.engine.studies.config') "
             "if m in sys.modules])")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True,
                         check=True).stdout
    return out.strip().splitlines()[-1]


def test_importing_the_cli_imports_no_torch():
    assert _modules_after("import prunestudio.cli") == "[]"


@pytest.mark.parametrize("command", ["studies", "show", "tui", "methods", "run", "prune",
                                     "export", "eval", "recover", "bench", "backup", "web"])
def test_help_imports_no_torch(command):
    code = ("from prunestudio.cli import main\n"
            f"try:\n    main([{command!r}, '--help'])\nexcept SystemExit as exc:\n"
            "    assert exc.code == 0, exc.code")
    assert _modules_after(code) == "[]"


def test_studies_reads_a_store_without_torch(tmp_path):
    from prunestudio.store import open_store

    db = tmp_path / "s.db"
    open_store(db).close()
    code = ("from prunestudio.cli import main\n"
            f"assert main(['studies', '--store', {str(db)!r}, '--json']) == 0")
    assert _modules_after(code) == "[]"
