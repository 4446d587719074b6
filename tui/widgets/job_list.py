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
    """A run folder name in ``width`` cells: in full when it fits, else with an
    ellipsis in the middle that keeps the job's name in front and as much of the end
    as fits (the parameters that tell runs apart, and the digest):
    ``segment-chan_vese-it500-dt0.1-da249312`` -> ``segment-…it500-dt0.1-da249312``.
    """
    if len(name) <= width:
        return name
    if width < 2:
        return name[:width]
    job = name.split("-", 1)[0] + "-"
    head = job if len(job) <= width // 3 else name[: max(1, width // 3)]
    tail = width - len(head) - 1
    return f"{head}…{name[len(name) - tail:]}" if tail > 0 else name[: width - 1] + "…"


class JobList(DataTable):
    """One row per job folder, keyed by the folder path.

    The job column takes the width the others leave (names in full when they fit,
    :func:`short_name` past that); on a narrow table the input column goes and the
    progress bar shrinks (the job summary beside the log shows both).
    """

    COLUMNS = ("job", "state", "progress", "done", "failed", "ETA", "input")
    #: Widths in cells of the columns other than ``job`` (wide table).
    WIDTHS = {"state": 11, "progress": BAR_WIDTH + 5, "done": 9, "failed": 6, "ETA": 7, "input": 12}
    #: ... and on a table narrower than ``NARROW`` cells.
    NARROW_WIDTHS = {"state": 11, "progress": 6 + 5, "done": 7, "failed": 6, "ETA": 7}
    NARROW = 110
    MIN_JOB = 16

    @dataclass
    class Chosen(Message):
        """The cursor moved to a job."""

        job_dir: Path

    def __init__(self, **kwargs):
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.snapshots: dict[Path, JobSnapshot] = {}
        self._order: list[Path] = []
        self.widths: dict[str, int] = {"job": 24, **self.WIDTHS}

    def on_mount(self) -> None:
        self._layout_columns(self.size.width or 100)

    def on_resize(self, event) -> None:
        if self._layout_columns(event.size.width):
            self._rebuild(list(self.snapshots.values()))

    def column_widths(self, width: int) -> dict[str, int]:
        """Widths of the shown columns for a table ``width`` cells wide (the job
        column gets the rest: every other column has 1 cell of padding each side)."""
        others = dict(self.WIDTHS if width >= self.NARROW else self.NARROW_WIDTHS)
        used = sum(others.values()) + 2 * (len(others) + 1) + 2  # padding, scrollbar
        return {"job": max(self.MIN_JOB, width - used), **others}

    def _layout_columns(self, width: int) -> bool:
        widths = self.column_widths(width)
        if widths == self.widths and self.columns:
            return False
        self.widths = widths
        self.clear(columns=True)
        for col in self.COLUMNS:
            if col in widths:
                self.add_column(col, key=col, width=widths[col])
        self._order = []
        return True

    def _cells(self, s: JobSnapshot) -> dict:
        from segdeck.core.jobs.status import format_eta

        bar_style = {"failed": "yellow", "error": "red", "done": "green"}.get(s.state, "cyan")
        cells = {
            "job": short_name(s.job_dir.name, self.widths["job"]),
            "state": Text(s.state, style=STATE_STYLES.get(s.state, "")),
            "progress": progress_bar(s.fraction, width=self.widths["progress"] - 5, style=bar_style),
            "done": f"{s.done}/{s.total}",
            "failed": Text(str(s.failed), style="red" if s.failed else "dim"),
            "ETA": format_eta(s.eta_s) if s.state == "running" else "",
            "input": Path(s.input).name if s.input else "",
        }
        return {k: v for k, v in cells.items() if k in self.widths}

    def _rebuild(self, snapshots: list[JobSnapshot]) -> None:
        selected = self.selected_job
        order = [s.job_dir for s in snapshots]
        self.clear()
        for s in snapshots:
            cells = self._cells(s)
            self.add_row(*(cells[c] for c in self.COLUMNS if c in cells), key=str(s.job_dir))
        self._order = order
        if selected in order:
            self.move_cursor(row=order.index(selected))

    def update_jobs(self, snapshots: list[JobSnapshot]) -> None:
        """Add new jobs, update changed rows (cheap: only cells that changed)."""
        order = [s.job_dir for s in snapshots]
        if order != self._order:
            self._rebuild(snapshots)
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

    def on_focus(self) -> None:
        # the focus comes here: the selected job is "chosen" again (the preview follows it)
        job = self.selected_job
        if job is not None:
            self.post_message(self.Chosen(job))

    def on_data_table_row_highlighted(self, event: DataTable.RowHighlighted) -> None:
        event.stop()
        if event.row_key is not None and event.row_key.value:
            self.post_message(self.Chosen(Path(event.row_key.value)))
