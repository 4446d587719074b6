"""Windows started from the TUI (``segdeck annotate MODE PATH``, ``segdeck view PATH``):
the process, its output in the log pane.

A thread worker reads the process's stdout and posts :class:`AnnotateOutput` lines;
when it ends, :class:`AnnotateFinished` bubbles to the screen (which rescans the
folders: painted / total counts in the tree).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from textual import work
from textual.message import Message

from segdeck.tui import launch
from segdeck.tui.controllers.base import Controller
from segdeck.tui.jobwatch import LogLine
from segdeck.tui.launch import annotate_line
from segdeck.tui.widgets.job_log import JobLog

#: The log pane's source key for the annotate lines.
ANNOTATE_SOURCE = "annotate"


@dataclass
class AnnotateOutput(Message):
    """Lines from an annotation process (``level`` error for its failures)."""

    lines: list


@dataclass
class AnnotateFinished(Message):
    """The annotation process ended (``rc``: its exit status)."""

    rc: int


class AnnotateController(Controller):
    """Starts ``segdeck annotate MODE PATH [--method M]`` (:meth:`launch`) or another
    window command (:meth:`start`, e.g. ``segdeck view PATH``) and follows its output."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        #: The log lines of the last annotate process (the log pane shows them).
        self.log_lines: list[LogLine] = []

    def launch(self, mode: str, input_path: Path, method: str | None, options=()) -> bool:
        """Start the process on ``input_path`` and show its output in the log pane.

        Parameters
        ----------
        mode : str
            The annotate mode (``paint``).
        input_path : Path
            The folder (or image) to annotate.
        method : str or None
            The oversegmentation method; None: annotate's default.
        options : sequence of str
            More options for the command line (``["--checkpoint", "ft.pt"]``: the form's
            values a job declares in ``tui_annotate_fields``).

        Returns
        -------
        bool
            False when the process could not start (the user was told why).
        """
        if not launch.annotate_available():
            self.notify("the annotate command is not available in this install", severity="warning")
            return False
        options = [str(o) for o in options]
        return self.start(launch.annotate_command(mode, input_path, method) + options, "annotate",
                          " ".join([f"annotate {mode} {input_path}", *options]))

    def start(self, cmd: list[str], what: str, title: str) -> bool:
        """Start the window command ``cmd`` and show its output in the log pane.

        Parameters
        ----------
        cmd : list of str
            The command line (e.g. :func:`segdeck.tui.launch.view_command`).
        what : str
            Its short name in the log lines: "``what`` finished", "``what`` failed: …".
        title : str
            The first log line (what was started, on what).

        Returns
        -------
        bool
            False when the process could not start (the user was told why).
        """
        try:
            proc = launch.start_annotate(cmd)
        except OSError as exc:
            self.notify(f"could not start {what}: {exc}", severity="error")
            return False
        self.log_lines = [LogLine(time.time(), title, "title")]
        self.screen.query_one(JobLog).show(ANNOTATE_SOURCE, self.log_lines, title=f"Log — {what}")
        self._follow(proc, what)
        return True

    @work(thread=True, group="annotate")
    def _follow(self, proc, what: str) -> None:
        for raw in proc.stdout:
            raw = raw.strip()
            if raw:
                self.post_message(AnnotateOutput([annotate_line(raw)]))
        rc = proc.wait()
        err = launch.stderr_tail(proc)
        if rc != 0:
            reason = err[-1] if err else f"exit code {rc}"
            self.post_message(AnnotateOutput([LogLine(time.time(), f"{what} failed: {reason}", "error")]))
        else:
            self.post_message(AnnotateOutput([LogLine(time.time(), f"{what} finished", "title")]))
        self.post_message(AnnotateFinished(rc))

    def on_annotate_output(self, message: AnnotateOutput) -> None:
        message.stop()
        self.log_lines.extend(message.lines)
        self.screen.query_one(JobLog).append(ANNOTATE_SOURCE, message.lines)
        for line in message.lines:
            if line.level == "error":
                self.notify(line.text, severity="error")


__all__ = ["ANNOTATE_SOURCE", "AnnotateController", "AnnotateFinished", "AnnotateOutput"]
