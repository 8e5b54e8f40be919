"""Prune Studio's Textual TUI: watch and steer studies live (``prunestudio tui [STORE]``).

Entry points: :func:`main` (argv in, exit code out) and :func:`run_tui` (a store path); the
``prunestudio tui`` command (its flags and handler) is :mod:`prunestudio.commands.tui`.
Importing this package is cheap: Textual and the app are imported when the TUI starts.
"""

from __future__ import annotations

from .launch import main, run_tui

__all__ = ["main", "run_tui"]
