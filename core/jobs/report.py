"""One reporter: every job event becomes text here, and only here.

``job.log`` (the runner's log sink), ``segdeck run`` (rich progress bar and lines) and
the TUI's log pane all call :func:`event_line`, so an event reads the same wherever it
is shown. Each front-end decides *which* events it shows as lines (the CLI shows
``ItemDone`` and ``ItemProgress`` on its bar, ``job.log`` leaves sub-steps out) and how
it styles a :attr:`ReportLine.level`, never how the text is worded.

Stdlib only (the TUI imports it at start-up).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from segdeck.core.jobs.events import (
    Event,
    ItemDone,
    ItemFailed,
    ItemProgress,
    JobFinished,
    JobStarted,
    Message,
    Progress,
)

__all__ = ["LEVELS", "ReportLine", "counts_text", "event_line", "failure_text", "step_text"]

#: Levels of a line, for styling: a run's start/successful end, an item done, plain
#: information, something to look at, something that went wrong.
LEVELS = ("title", "done", "info", "warning", "error")


@dataclass(frozen=True)
class ReportLine:
    """One event as text: ``t`` (Unix time), one-line ``text``, ``level`` (see :data:`LEVELS`)."""

    t: float
    text: str
    level: str


def failure_text(item: str, error: str) -> str:
    """``"<item>: <error>"``, or just the error when it already names the item."""
    return error if item in error else f"{item}: {error}"


#: A partial result is cut to this many characters in a line.
PARTIAL_CHARS = 80


def step_text(event: ItemProgress) -> str:
    """Sub-step progress of an item: ``"img7: region 12/40"`` (``"img7: region 12"``
    when the total is unknown), then its partial result if any: text as it is, other
    data as compact JSON, cut to ``PARTIAL_CHARS``."""
    what = f"{event.what} " if event.what else ""
    total = f"/{event.total}" if event.total else ""
    text = f"{event.item}: {what}{event.done}{total}"
    if event.partial is not None:
        part = event.partial if isinstance(event.partial, str) else json.dumps(
            event.partial, ensure_ascii=False, separators=(",", ":"))
        part = " ".join(part.split())
        if len(part) > PARTIAL_CHARS:
            part = part[: PARTIAL_CHARS - 1] + "…"
        text += f": {part}"
    return text


def counts_text(done: int, failed: int, skipped: int, skipped_failed: int = 0) -> str:
    """What a run did: ``"3 done, 1 failed, 2 already done[, 1 failed before (not retried)]"``."""
    text = f"{done} done, {failed} failed, {skipped} already done"
    if skipped_failed:
        text += f", {skipped_failed} failed before (not retried)"
    return text


def event_line(event: Event) -> ReportLine | None:
    """The text of one event (None for an event type this reporter does not know).

    Parameters
    ----------
    event : Event
        Any event of :mod:`segdeck.core.jobs.events`.

    Returns
    -------
    ReportLine or None
    """
    if isinstance(event, JobStarted):
        text = f"started {event.job}: {event.total} items, {event.todo} to do (pid {event.pid})"
        return ReportLine(event.t, text, "title")
    if isinstance(event, ItemDone):
        return ReportLine(event.t, f"done {event.item} in {event.seconds:.2f} s", "done")
    if isinstance(event, ItemFailed):
        return ReportLine(event.t, f"failed {failure_text(event.item, event.error)}", "error")
    if isinstance(event, ItemProgress):
        return ReportLine(event.t, step_text(event), "info")
    if isinstance(event, Message):
        level = event.level if event.level in ("warning", "error") else "info"
        return ReportLine(event.t, event.text, level)
    if isinstance(event, Progress):
        if event.unit == "bytes":
            total = f"/{event.total / 1e6:.1f}" if event.total else ""
            return ReportLine(event.t, f"{event.what}: {event.done / 1e6:.1f}{total} MB", "info")
        total = f"/{event.total:g}" if event.total else ""
        return ReportLine(event.t, f"{event.what}: {event.done:g}{total}", "info")
    if isinstance(event, JobFinished):
        extra = f" ({event.error})" if event.error else ""
        level = {"done": "title", "failed": "warning", "cancelled": "warning"}.get(event.status, "error")
        counts = counts_text(event.done, event.failed, event.skipped, event.skipped_failed)
        return ReportLine(event.t, f"finished: {event.status}, {counts}, {event.seconds:.1f} s{extra}", level)
    return None
