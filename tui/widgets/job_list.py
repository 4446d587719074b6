"""Table of the jobs found in output folders or launched here: state, progress bar,
done / failed counts, ETA."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual.message import Message
from textual.widgets import DataTable

from segdeck.tui.jobwatch import JobSnapshot

STATE_STYLES = {
    "running": "bold cyan",
    "starting": "cyan",
    "done": "green",
    "failed": "yellow",
    "cancelled": "yellow",
    "interrupted": "magenta",
    "error": "bold red",
    "new": "dim",
}

BAR_WIDTH = 12


def progress_bar(fraction: float, width: int = BAR_WIDTH, style: str = "cyan") -> Text:
    """A one-line bar ``━━━━╺──── 42%`` as rich Text."""
    fraction = min(1.0, max(0.0, fraction))
    filled = int(round(fraction * width))
    return Text.assemble(("━" * filled, style), ("─" * (width - filled), "grey37"), f" {fraction * 100:3.0f}%")


def short_name(name: str, width: int) -> str:
    """Shorten a run folder name to ``width`` keeping its end (the parameter digest)."""
    if len(name) <= width:
        return name
    tail = name.rsplit("-", 1)[-1][: max(4, width // 3)]
    head = width - len(tail) - 1
    return f"{name[:head]}…{tail}"


class JobList(DataTable):
    """One row per job folder, keyed by the folder path."""

    COLUMNS = ("job", "state", "progress", "done", "failed", "ETA", "input")
    #: Column widths in cells (the job folder name is the widest).
    WIDTHS = {"job": 24, "state": 11, "progress": BAR_WIDTH + 5, "done": 9, "failed": 6, "ETA": 7, "input": 9}

    @dataclass
    class Chosen(Message):
        """The cursor moved to a job."""

        job_dir: Path

    def __init__(self, **kwargs):
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.snapshots: dict[Path, JobSnapshot] = {}
        self._order: list[Path] = []

    def on_mount(self) -> None:
        for col in self.COLUMNS:
            self.add_column(col, key=col, width=self.WIDTHS[col])

    def _cells(self, s: JobSnapshot) -> dict:
        from segdeck.core.jobs.status import format_eta

        bar_style = {"failed": "yellow", "error": "red", "done": "green"}.get(s.state, "cyan")
        return {
            "job": short_name(s.job_dir.name, self.WIDTHS["job"]),
            "state": Text(s.state, style=STATE_STYLES.get(s.state, "")),
            "progress": progress_bar(s.fraction, style=bar_style),
            "done": f"{s.done}/{s.total}",
            "failed": Text(str(s.failed), style="red" if s.failed else "dim"),
            "ETA": format_eta(s.eta_s) if s.state == "running" else "",
            "input": Path(s.input).name if s.input else "",
        }

    def update_jobs(self, snapshots: list[JobSnapshot]) -> None:
        """Add new jobs, update changed rows (cheap: only cells that changed)."""
        order = [s.job_dir for s in snapshots]
        if order != self._order:
            selected = self.selected_job
            self.clear()
            for s in snapshots:
                cells = self._cells(s)
                self.add_row(*(cells[c] for c in self.COLUMNS), key=str(s.job_dir))
            self._order = order
            if selected in order:
                self.move_cursor(row=order.index(selected))
        else:
            for s in snapshots:
                old = self.snapshots.get(s.job_dir)
                if old == s:
                    continue
                for col, value in self._cells(s).items():
                    self.update_cell(str(s.job_dir), col, value)
        self.snapshots = {s.job_dir: s for s in snapshots}

    @property
    def selected_job(self) -> Path | None:
        if not self._order or self.cursor_row < 0 or self.cursor_row >= len(self._order):
            return None
        return self._order[self.cursor_row]

    @property
    def selected_snapshot(self) -> JobSnapshot | None:
        job = self.selected_job
        return self.snapshots.get(job) if job else None

    def select_job(self, job_dir: Path) -> None:
        if job_dir in self._order:
            self.move_cursor(row=self._order.index(job_dir))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        if event.row_key is not None and event.row_key.value:
            self.post_message(self.Chosen(Path(event.row_key.value)))
