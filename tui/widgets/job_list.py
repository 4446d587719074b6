"""Table of the jobs found in output folders or launched here: state, progress bar,
done / failed counts, ETA and input; the jobs of the folder chosen in the folder tree
come first."""

from __future__ import annotations

import os
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
    head = job if len(job) <= width // 2 else name[: max(1, width // 3)]
    tail = width - len(head) - 1
    return f"{head}…{name[len(name) - tail:]}" if tail > 0 else name[: width - 1] + "…"


def input_labels(inputs) -> dict[str, str]:
    """Short labels that tell the inputs apart: each input's name, with as many parent
    folders in front as it takes to differ from the others of the same name
    (``/a/photos`` and ``/b/photos`` -> ``a/photos``, ``b/photos``).

    Parameters
    ----------
    inputs : iterable of str
        Input paths (folders or files) as recorded in the job folders; ``""`` (unknown)
        gets ``""``.

    Returns
    -------
    dict
        input path -> label.
    """
    paths = {p: Path(p).parts for p in set(inputs) if p}
    labels: dict[str, str] = {"": ""}
    depth = {p: 1 for p in paths}
    while True:
        cur = {p: str(Path(*parts[-depth[p]:])) for p, parts in paths.items()}
        seen: dict[str, list[str]] = {}
        for p, label in cur.items():
            seen.setdefault(label, []).append(p)
        clashes = [p for group in seen.values() if len(group) > 1 for p in group if depth[p] < len(paths[p])]
        if not clashes:
            break
        for p in clashes:
            depth[p] += 1
    labels.update(cur)
    return labels


def short_input(label: str, width: int) -> str:
    """An input label in ``width`` cells: in full when it fits, else its end (the name,
    where inputs of the same job differ; a file's suffix) behind an ellipsis, with the
    start kept when there is room: ``holiday-photos-2024`` -> ``holid…2024`` in 10."""
    if len(label) <= width:
        return label
    if width < 2:
        return label[:width]
    head = (width - 1) // 2 if width >= 8 else 0
    tail = width - 1 - head
    return f"{label[:head]}…{label[len(label) - tail:]}"


def _norm(path: str | Path) -> str:
    return os.path.normpath(os.path.abspath(os.path.expanduser(str(path))))


class JobList(DataTable):
    """One row per job folder, keyed by the folder path.

    The job column takes the width the others leave (names in full when they fit,
    :func:`short_name` past that). The input column tells apart runs of the same job
    (the same folder name) on different inputs (:func:`input_labels`,
    :func:`short_input`); on a narrow table the columns shrink, and on an 80-column
    terminal the progress bar gives way to its percentage (the job summary beside the
    log shows the bar).

    Rows are newest first, the jobs of the folder chosen in the folder tree
    (:meth:`set_focus_input`: run on it or on a folder or file inside it) before the
    others.
    """

    COLUMNS = ("job", "state", "progress", "done", "failed", "ETA", "input")
    #: Widths in cells of the columns other than ``job`` (wide table).
    WIDTHS = {"state": 11, "progress": BAR_WIDTH + 5, "done": 9, "failed": 6, "ETA": 7, "input": 12}
    #: ... and on a table narrower than ``NARROW`` cells.
    NARROW_WIDTHS = {"state": 11, "progress": 6 + 5, "done": 7, "failed": 6, "ETA": 7, "input": 10}
    NARROW = 110
    MIN_JOB = 16
    #: The job column's width below which the progress column shows only the percentage.
    BAR_MIN_JOB = 24
    #: The progress column without a bar: ``100%``.
    PERCENT_WIDTH = 4

    @dataclass
    class Chosen(Message):
        """The cursor moved to a job."""

        job_dir: Path

    def __init__(self, **kwargs):
        super().__init__(cursor_type="row", zebra_stripes=True, **kwargs)
        self.snapshots: dict[Path, JobSnapshot] = {}
        self._order: list[Path] = []
        self.widths: dict[str, int] = {"job": 24, **self.WIDTHS}
        #: the folder (or input file) chosen in the folder tree: its jobs come first
        self.focus_input: str | None = None
        self._labels: dict[str, str] = {"": ""}

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
        if width - used < self.BAR_MIN_JOB:
            used -= others["progress"] - self.PERCENT_WIDTH
            others["progress"] = self.PERCENT_WIDTH
        return {"job": max(self.MIN_JOB, width - used), **others}

    def _layout_columns(self, width: int) -> bool:
        widths = self.column_widths(width)
        if widths == self.widths and self.columns:
            return False
        self.widths = widths
        self.clear(columns=True)
        for col in self.COLUMNS:
            if col in widths:
                label = "%" if col == "progress" and widths[col] <= self.PERCENT_WIDTH else col
                self.add_column(label, key=col, width=widths[col])
        self._order = []
        return True

    def _cells(self, s: JobSnapshot) -> dict:
        from segdeck.core.jobs.status import format_eta

        bar_style = {"failed": "yellow", "error": "red", "done": "green"}.get(s.state, "cyan")
        bar = self.widths["progress"] - 5
        cells = {
            "job": short_name(s.job_dir.name, self.widths["job"]),
            "state": Text(s.state, style=STATE_STYLES.get(s.state, "")),
            "progress": progress_bar(s.fraction, width=bar, style=bar_style) if bar > 0
            else Text(f"{min(1.0, max(0.0, s.fraction)) * 100:.0f}%", style=bar_style),
            "done": f"{s.done}/{s.total}",
            "failed": Text(str(s.failed), style="red" if s.failed else "dim"),
            "ETA": format_eta(s.eta_s) if s.state == "running" else "",
            "input": Text(short_input(self._labels.get(s.input) or Path(s.input).name, self.widths.get("input", 0)),
                          style="" if self.is_focus_job(s) else "dim"),
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

    def is_focus_job(self, snap: JobSnapshot) -> bool:
        """Whether ``snap`` ran on the chosen folder or on a folder or file inside it
        (every job, when no folder is chosen)."""
        if self.focus_input is None:
            return True
        if not snap.input:
            return False
        path = _norm(snap.input)
        return path == self.focus_input or path.startswith(self.focus_input.rstrip(os.sep) + os.sep)

    def ordered(self, snapshots: list[JobSnapshot]) -> list[JobSnapshot]:
        """``snapshots`` newest first (by start time), the chosen folder's jobs before
        the others."""
        newest = sorted(snapshots, key=lambda s: (s.started or 0.0, str(s.job_dir)), reverse=True)
        return sorted(newest, key=lambda s: not self.is_focus_job(s))

    def set_focus_input(self, path: str | Path | None) -> None:
        """The folder (or input file) chosen in the folder tree: its jobs move to the
        top, the others' input is dimmed; the selected job stays selected."""
        focus = None if path is None else _norm(path)
        if focus == self.focus_input:
            return
        self.focus_input = focus
        if self.snapshots:
            self._rebuild(self.ordered(list(self.snapshots.values())))

    def update_jobs(self, snapshots: list[JobSnapshot]) -> None:
        """Add new jobs, update changed rows (cheap: only cells that changed)."""
        snapshots = self.ordered(snapshots)
        order = [s.job_dir for s in snapshots]
        labels = input_labels(s.input for s in snapshots)
        if order != self._order or labels != self._labels:
            self._labels = labels
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
