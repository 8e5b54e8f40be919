"""Modal dialogs: confirm a cancel, show (and copy) a candidate's export command."""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Label, Static

from .model import StudySummary

__all__ = ["ConfirmCancel", "ExportDialog"]


class ConfirmCancel(ModalScreen[bool]):
    """Ask before writing a cancel request for a study. Dismisses with True to cancel."""

    BINDINGS = [
        Binding("y", "answer(True)", "Yes, cancel it"),
        Binding("n,escape", "answer(False)", "No"),
    ]

    def __init__(self, study: StudySummary) -> None:
        super().__init__()
        self.study = study

    def compose(self) -> ComposeResult:
        s = self.study
        with Vertical(id="dialog"):
            yield Label(Text(f"Cancel study {s.name}?", style="bold"), id="dialog-title")
            yield Static(
                f"The runner stops after its current candidate ({s.n_running} running, "
                f"{s.progress} of {s.total or '?'} finished). Finished candidates stay in "
                "the store, and the study can be resumed later.",
                id="dialog-body",
            )
            with Horizontal(id="dialog-buttons"):
                yield Button("Cancel study (y)", variant="error", id="yes")
                yield Button("Keep running (n)", variant="primary", id="no")

    def on_mount(self) -> None:
        self.query_one("#no", Button).focus()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


class ExportDialog(ModalScreen[None]):
    """The shell command that exports a candidate (already copied to the clipboard)."""

    BINDINGS = [Binding("escape,enter,q", "close", "Close")]

    def __init__(self, title: str, command: str) -> None:
        super().__init__()
        self.title_text = title
        self.command = command

    def compose(self) -> ComposeResult:
        with Vertical(id="dialog"):
            yield Label(Text(self.title_text, style="bold"), id="dialog-title")
            yield Static(Text(self.command, style="bold cyan"), id="export-command")
            yield Static(
                "Copied to the clipboard (terminals with OSC 52). Run it where the store "
                "lives; the pruned model is written to the folder given.",
                id="dialog-body",
            )
            with Horizontal(id="dialog-buttons"):
                yield Button("Close (esc)", variant="primary", id="close")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(None)

    def action_close(self) -> None:
        self.dismiss(None)
