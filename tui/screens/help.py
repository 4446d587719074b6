"""``?``: a modal listing the key bindings of the screen underneath and of the app."""

from __future__ import annotations

from rich.table import Table
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static


def binding_rows(*sources) -> list[tuple[str, str]]:
    """(key, description) for every described binding of the given DOM nodes / classes,
    first occurrence of a key wins."""
    rows: list[tuple[str, str]] = []
    seen: set[str] = set()
    for source in sources:
        for b in getattr(source, "BINDINGS", []):
            if isinstance(b, tuple):
                b = Binding(*b)
            if not b.description or b.key in seen:
                continue
            seen.add(b.key)
            key = b.key_display or b.key
            rows.append((key.replace("question_mark", "?").replace("ctrl+", "Ctrl+"), b.description))
    return rows


class HelpScreen(ModalScreen[None]):
    """Key bindings; Escape, q or ? closes it."""

    BINDINGS = [("escape", "close", "Close"), ("q", "close", "Close"), ("question_mark", "close", "Close")]

    def __init__(self, rows: list[tuple[str, str]], extra: str = ""):
        super().__init__()
        self.rows = rows
        self.extra = extra

    def compose(self) -> ComposeResult:
        table = Table(show_header=True, header_style="bold", box=None, padding=(0, 2))
        table.add_column("key", style="bold cyan", no_wrap=True)
        table.add_column("action")
        for key, desc in self.rows:
            table.add_row(key, desc)
        with Vertical(id="help-box"):
            yield Static("segdeck — keys", id="help-title")
            yield Static(table, id="help-table")
            if self.extra:
                yield Static(self.extra, id="help-extra", markup=False)
            yield Static("Esc / q / ? closes", id="help-foot")

    def action_close(self) -> None:
        self.dismiss(None)
