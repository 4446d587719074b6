"""A job at a glance: its full name, state, counts, time per item and failures.

The manifest is read in a thread worker (:meth:`JobSummary.show`); the text is built by
:func:`summary_text`, a pure function of a :class:`~segdeck.tui.jobwatch.JobSnapshot`
and the manifest's :class:`~segdeck.core.jobs.manifest.ItemRecord` rows.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import work
from textual.message import Message
from textual.widgets import Static

from segdeck.tui.jobwatch import JobSnapshot

#: Failed items listed (the rest are counted).
MAX_FAILURES = 3


def format_seconds(s: float | None) -> str:
    """``0.42 s``, ``12 s``, ``3 min 5 s``, ``2 h 04 min``; ``-`` for None."""
    if s is None:
        return "-"
    if s < 10:
        return f"{s:.2f} s"
    if s < 60:
        return f"{s:.0f} s"
    m, sec = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m} min {sec} s"
    h, m = divmod(m, 60)
    return f"{h} h {m:02d} min"


def summary_text(snap: JobSnapshot, records: list | None) -> Text:
    """The summary of one job.

    Parameters
    ----------
    snap : JobSnapshot
        State and counts as the jobs list shows them.
    records : list of ItemRecord or None
        The manifest's rows (None: not readable yet).

    Returns
    -------
    rich.text.Text
        Lines: folder name (in full), state and counts, while running the latest
        sub-step of an item (``now: img7: region 12/40``) and the ETA, time per item
        (median and mean, seconds) with the total, the first failed items with their
        errors.
    """
    from segdeck.tui.widgets.job_list import STATE_STYLES

    t = Text()
    t.append(snap.job_dir.name + "\n", style="bold")
    t.append(snap.state, style=STATE_STYLES.get(snap.state, ""))
    todo = max(0, snap.total - snap.done - snap.failed)
    t.append(f"  {snap.done} done · {snap.failed} failed · {todo} to do · {snap.total} items\n")
    if snap.state == "running" and (snap.step or snap.eta_s is not None):
        from segdeck.core.jobs.status import format_eta

        now = f"now: {snap.step}" if snap.step else "now:"
        t.append(f"{now} · ETA {format_eta(snap.eta_s)}\n", style="cyan")
    durations = [r.duration for r in records or [] if r.state == "done" and r.duration is not None]
    if durations:
        t.append(f"per item: median {format_seconds(statistics.median(durations))}, "
                 f"mean {format_seconds(statistics.fmean(durations))}; "
                 f"total {format_seconds(sum(durations))}\n")
    elif records is not None:
        t.append("per item: - (nothing done yet)\n", style="dim")
    if snap.input:
        t.append(f"input: {snap.input}\n", style="dim")
    if snap.error:
        t.append(f"error: {snap.error}\n", style="bold red")
    failed = [r for r in records or [] if r.state == "failed"]
    for r in failed[:MAX_FAILURES]:
        first = (r.error or "failed").strip().splitlines()[0] if (r.error or "").strip() else "failed"
        t.append(f"✗ {r.item}: {first}\n", style="red")
    if len(failed) > MAX_FAILURES:
        t.append(f"… and {len(failed) - MAX_FAILURES} more failed (l: job.log)\n", style="red")
    t.rstrip()
    return t


class JobSummary(Static):
    """The selected job's summary (updated on each poll while it changes)."""

    @dataclass
    class Ready(Message):
        """The manifest rows of a job, read in the worker."""

        snap: JobSnapshot
        records: list | None

    def __init__(self, **kwargs):
        super().__init__("select a job", **kwargs)
        self.job_dir: Path | None = None
        self.snapshot: JobSnapshot | None = None
        self._records: list | None = None
        self._read_at = 0.0

    #: Seconds between manifest reads for the same job (a running job changes often).
    READ_EVERY_S = 2.0

    def show(self, snap: JobSnapshot) -> None:
        """Summarize ``snap``'s job (the manifest is read off the UI thread, at most
        every ``READ_EVERY_S`` seconds for the same job; the counts update at once)."""
        import time

        same = self.job_dir == snap.job_dir
        if not same:
            self._records = None
        self.job_dir, self.snapshot = snap.job_dir, snap
        self._set_text(summary_text(snap, self._records))
        now = time.monotonic()
        if same and now - self._read_at < self.READ_EVERY_S and snap.state in ("running", "starting"):
            return
        self._read_at = now
        self._read(snap)

    @work(thread=True, exclusive=True, group="summary")
    def _read(self, snap: JobSnapshot) -> None:
        from segdeck.core.jobs.manifest import Manifest

        try:
            with Manifest(snap.job_dir, readonly=True) as m:
                records = m.records()
        except Exception:  # noqa: BLE001 - no manifest yet, or locked: counts only
            records = None
        self.post_message(self.Ready(snap, records))

    def on_job_summary_ready(self, message: Ready) -> None:
        message.stop()
        if message.snap.job_dir == self.job_dir:
            self._records = message.records
            self._set_text(summary_text(self.snapshot or message.snap, message.records))

    def _set_text(self, text: Text) -> None:
        if not isinstance(self.content, Text) or self.content.plain != text.plain or self.content.spans != text.spans:
            self.update(text, layout=False)  # a fixed-size pane (app.tcss): no re-layout


__all__ = ["JobSummary", "format_seconds", "summary_text"]
