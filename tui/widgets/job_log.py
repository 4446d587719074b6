"""The log pane: a job's events (failures in red) or the tail of its ``job.log``,
or the JSON lines of an annotation session."""

from __future__ import annotations

import time

from rich.text import Text
from textual.widgets import RichLog

from segdeck.tui.jobwatch import LogLine

LEVEL_STYLES = {"error": "bold red", "warning": "yellow", "done": "", "title": "bold", "info": "dim"}


def format_line(line: LogLine) -> Text:
    stamp = time.strftime("%H:%M:%S", time.localtime(line.t))
    return Text.assemble((stamp + " ", "grey50"), (line.text, LEVEL_STYLES.get(line.level, "")))


class JobLog(RichLog):
    """Rich log showing one source at a time (``source`` names it).

    Lines with a sequence number (``LogLine.seq`` >= 0: a job's events) are shown once:
    a line whose number is not above the last one shown is skipped.
    """

    def __init__(self, **kwargs):
        super().__init__(wrap=True, markup=False, highlight=False, max_lines=2000, **kwargs)
        self.source: object = None
        self.shown_seq = -1

    def show(self, source: object, lines: list[LogLine], title: str = "") -> None:
        """Replace the content with ``lines`` from ``source``."""
        self.source = source
        self.clear()
        self.shown_seq = -1
        self.border_title = title
        self._write_lines(lines)

    def append(self, source: object, lines: list[LogLine]) -> None:
        """Add lines if ``source`` is the one shown (lines shown already are skipped)."""
        if source != self.source:
            return
        self._write_lines(lines)

    def _write_lines(self, lines: list[LogLine]) -> None:
        for line in lines:
            if line.seq >= 0:
                if line.seq <= self.shown_seq:
                    continue
                self.shown_seq = line.seq
            self.write(format_line(line))

    def show_text(self, source: object, lines: list[str], title: str = "") -> None:
        """Show plain text lines (a ``job.log`` tail); ERROR / WARNING lines coloured."""
        self.source = source
        self.clear()
        self.shown_seq = -1
        self.border_title = title
        for raw in lines:
            style = "bold red" if " ERROR " in raw or raw.startswith("Traceback") else (
                "yellow" if " WARNING " in raw else "")
            self.write(Text(raw, style=style))
