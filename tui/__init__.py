"""Prune Studio's Textual TUI: watch and steer studies live (``prunestudio tui [STORE]``).

Entry points: :func:`main` (argv in, exit code out), :func:`run_tui` (a store path) and
:func:`cmd_tui` (the ``prunestudio tui`` handler, an argparse namespace). Importing this
package is cheap: Textual and the app are imported when the TUI starts.
"""

from __future__ import annotations

from .cli import cmd_tui, main, run_tui

__all__ = ["cmd_tui", "main", "run_tui"]
