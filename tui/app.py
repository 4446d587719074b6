"""segdeck's Textual app: thin; the work happens in :mod:`segdeck.tui.screens.main` and its
controllers (:mod:`segdeck.tui.controllers`)."""

from __future__ import annotations

from pathlib import Path

from textual.app import App
from textual.binding import Binding

from segdeck.tui.screens.help import HelpScreen, binding_rows
from segdeck.tui.screens.main import MainScreen

HELP_EXTRA = (
    "Jobs run as their own processes (segdeck run …): quitting the TUI leaves them running; "
    "the job list finds them again in the *.segdeck output folders next to your images. "
    "cluster: Ctrl+T computes the threshold curve on a sample and puts the picked threshold "
    "into the form (t on a finished cluster job re-opens the curve it saved). "
    "Jobs with a model field: m lists the models with their cache state; d there downloads one. "
    "Preview (right of the form; F3 shows or hides it): the chosen folder's images ([ ] step, "
    "v image / overlay / label map of the selected job), or the selected job's newest output, "
    "followed while it runs. F2 / F4 hide or show the folders and the log row. "
    "Esc leaves a text field."
)


class SegdeckApp(App):
    """Folders, job form, running jobs. ``root``: the folder to browse."""

    TITLE = "segdeck"
    CSS_PATH = ["app.tcss", "screens/help.tcss"]
    BINDINGS = [
        Binding("question_mark", "help", "Help", key_display="?"),
        Binding("q", "quit", "Quit"),
    ]

    def __init__(self, root: str | Path = ".", **kwargs):
        super().__init__(**kwargs)
        self.root = Path(root).resolve()
        self.sub_title = str(self.root)

    def on_mount(self) -> None:
        self.push_screen(MainScreen(self.root))

    def action_help(self) -> None:
        if isinstance(self.screen, HelpScreen):
            return
        self.push_screen(HelpScreen(binding_rows(self, self.screen), HELP_EXTRA))


def main(root: str | Path = ".") -> int:
    from segdeck.tui.widgets.preview import prepare_terminal_graphics

    prepare_terminal_graphics()  # Kitty / Sixel queries must happen before Textual starts
    SegdeckApp(root).run()
    return 0
