"""Model picker: the registered models with their cache state; download one, pick one.

``ModelScreen(choices, current)`` lists every model of
:func:`segdeck.core.models.list_models` (only ``choices`` when given: the values a job's
``model`` field accepts) with cached / in package (weights inside an installed Python package, copied into the
cache on first use) / not cached, size, description and path.
Enter dismisses with the highlighted model's name (None on Escape); ``d`` starts
``segdeck models download NAME`` as a child process (:mod:`segdeck.tui.models`) whose
progress shows in the table; offline it fails with one line, shown under the table.
"""

from __future__ import annotations

from dataclasses import dataclass

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.message import Message
from textual.screen import ModalScreen
from textual.widgets import DataTable, Static

from segdeck.tui import models as downloads

POLL_S = 0.5


@dataclass
class DownloadStarted(Message):
    """A download's process was started (``error``: the one line saying why it was not)."""

    name: str
    error: str | None


class ModelScreen(ModalScreen[str | None]):
    """The model cache: ``d`` downloads, Enter uses the highlighted model, Esc closes."""

    CSS_PATH = "models.tcss"

    BINDINGS = [
        Binding("enter", "use", "Use this model"),
        Binding("d", "download", "Download"),
        Binding("r", "refresh", "Refresh", show=False),
        Binding("escape", "close", "Close"),
    ]

    COLUMNS = ("model", "family", "cached", "size", "description", "path / download")

    def __init__(self, choices: list[str] | None = None, current: str | None = None):
        super().__init__()
        self.choices = list(choices) if choices else None
        self.current = current
        self.rows: list[tuple] = []  # (spec, cached, path)
        self._announced: dict[str, str] = {}

    def compose(self) -> ComposeResult:
        from segdeck.core.models import cache_dir

        with Vertical(id="models-box"):
            yield Static(f"models — cache: {cache_dir()}", id="models-title", markup=False)
            yield DataTable(id="models-table", cursor_type="row", zebra_stripes=True)
            yield Static("", id="models-status", markup=False)
            yield Static("↑/↓ move · Enter use · d download · r refresh · Esc close", id="models-foot")

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for col in self.COLUMNS:
            table.add_column(col, key=col)
        self.refresh_rows()
        if self.current is not None:
            names = [spec.name for spec, _, _ in self.rows]
            if self.current in names:
                table.move_cursor(row=names.index(self.current))
        table.focus()
        self.set_interval(POLL_S, self._poll)

    # ---- data -----------------------------------------------------------------------
    def refresh_rows(self) -> None:
        """Re-read the registry and the cache (a few ``stat`` calls) and redraw."""
        from segdeck.core.models import list_models

        rows = list_models()
        if self.choices is not None:
            by_name = {spec.name: (spec, cached, path) for spec, cached, path in rows}
            rows = [by_name[n] for n in self.choices if n in by_name]
        self.rows = rows
        table = self.query_one(DataTable)
        cursor = table.cursor_row
        table.clear()
        for spec, cached, path in rows:
            table.add_row(*self._cells(spec, cached, path), key=spec.name)
        if rows:
            table.move_cursor(row=min(max(cursor, 0), len(rows) - 1))
        self._show_status()

    def _cells(self, spec, cached: bool, path) -> list:
        from segdeck.core.models import package_file

        size = downloads.human_bytes(spec.display_bytes)
        if spec.bytes is None and spec.display_bytes is not None:
            size = "~" + size
        dl = downloads.download_state(spec.name)
        if dl is not None and dl.state == "running":
            where = Text(dl.text(), style="bold cyan")
        elif dl is not None and dl.state == "failed" and not cached:
            where = Text("download failed", style="red")
        else:
            packaged = None if cached else package_file(spec)
            where = Text(str(path) if cached else str(packaged or ""), style="dim")
        if cached:
            state = Text("cached", style="green")
        elif package_file(spec) is not None:  # inside an installed Python package: no network needed
            state = Text("in package", style="yellow")
        else:
            state = Text("not cached", style="dim")
        name = Text(spec.name, style="bold" if spec.name == self.current else "")
        return [name, spec.family, state, size, spec.description, where]

    @property
    def highlighted(self) -> str | None:
        table = self.query_one(DataTable)
        if not self.rows or not 0 <= table.cursor_row < len(self.rows):
            return None
        return self.rows[table.cursor_row][0].name

    def status_line(self) -> tuple[str, bool]:
        """The line under the table for the highlighted model (text, is_error)."""
        name = self.highlighted
        if name is None:
            return "no model registered", True
        spec, cached, path = next(r for r in self.rows if r[0].name == name)
        dl = downloads.download_state(name)
        if dl is not None and (dl.state == "running" or (dl.state == "failed" and not cached)):
            return f"{name}: download {dl.text()}", dl.state == "failed"
        if cached:
            return f"{name}: cached at {path}", False
        from segdeck.core.models import package_file

        packaged = package_file(spec)
        if packaged is not None:
            return (f"{name}: in the installed package {spec.extra['package']} ({packaged}) — d copies it into "
                    "the cache, checked (the first run that uses it does too)"), False
        return f"{name}: not cached — d downloads it ({spec.url})", False

    def _show_status(self) -> None:
        text, bad = self.status_line()
        status = self.query_one("#models-status", Static)
        status.update(text)
        status.set_class(bad, "bad")

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        self._show_status()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        # Enter on the focused table
        event.stop()
        self.action_use()

    def _poll(self) -> None:
        """While a download runs: redraw its row; announce ends once."""
        changed = False
        for spec, _, _ in self.rows:
            dl = downloads.download_state(spec.name)
            if dl is None:
                continue
            key = f"{dl.state}:{dl.done}:{dl.line}"
            if self._announced.get(spec.name) == key:
                continue
            previous = self._announced.get(spec.name, "")
            self._announced[spec.name] = key
            changed = True
            if dl.state == "done" and not previous.startswith("done"):
                self.notify(f"{spec.name} downloaded")
            elif dl.state == "failed" and not previous.startswith("failed"):
                self.notify(f"{spec.name}: {dl.line}", severity="error", timeout=10)
        if changed:
            self.refresh_rows()

    # ---- actions --------------------------------------------------------------------
    def action_use(self) -> None:
        name = self.highlighted
        if name is not None:
            self.dismiss(name)

    def action_download(self) -> None:
        name = self.highlighted
        if name is None:
            return
        if any(spec.name == name and cached for spec, cached, _ in self.rows):
            self.notify(f"{name} is already cached")
            return
        self._start(name)

    @work(thread=True, exclusive=True, group="model-download")
    def _start(self, name: str) -> None:
        # starting a process (and importing the spec) is kept off the UI thread
        try:
            downloads.start_download(name)
        except Exception as exc:  # noqa: BLE001 - one line for any start failure
            self.post_message(DownloadStarted(name, f"could not start the download: {exc}"))
            return
        self.post_message(DownloadStarted(name, None))

    def on_download_started(self, message: DownloadStarted) -> None:
        if message.error is not None:
            self.notify(message.error, severity="error")
            return
        self.refresh_rows()

    def action_refresh(self) -> None:
        self.refresh_rows()

    def action_close(self) -> None:
        self.dismiss(None)
