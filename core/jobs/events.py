"""Progress events: small dataclasses a job runner sends to sinks.

Sinks are plain callables ``sink(event)``. :class:`JsonlSink` appends them to
``events.jsonl`` in the job folder (one JSON object per line, flushed), which is how
the TUI follows a job started by any process. :func:`read_events` parses that file
back, tolerating a half-written last line.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

EVENTS_NAME = "events.jsonl"


@dataclass(frozen=True)
class Event:
    """Base event: ``t`` is a Unix time in seconds."""

    t: float = field(default_factory=time.time, kw_only=True)

    @property
    def kind(self) -> str:
        return type(self).__name__


@dataclass(frozen=True)
class JobStarted(Event):
    """A run began: ``total`` items in the job, ``todo`` of them still to process."""

    job: str
    total: int
    todo: int
    pid: int


@dataclass(frozen=True)
class ItemDone(Event):
    """One item finished; ``seconds`` of compute; ``outputs`` relative to the job folder."""

    item: str
    seconds: float
    outputs: list[str]


@dataclass(frozen=True)
class ItemFailed(Event):
    """One item failed with a one-line ``error``; the run goes on."""

    item: str
    error: str


@dataclass(frozen=True)
class Message(Event):
    """A log line (``level``: info, warning, error)."""

    text: str
    level: str = "info"


@dataclass(frozen=True)
class Progress(Event):
    """Fine-grained progress inside a long step (a download, a training epoch).
    ``unit`` is ``"bytes"`` for the model manager's downloads and checks (shown in MB),
    empty for counts."""

    what: str
    done: float
    total: float | None = None
    unit: str = ""


@dataclass(frozen=True)
class ItemProgress(Event):
    """Progress inside one item (``Job.step``): sub-step ``done`` of ``total`` (None
    when unknown), e.g. ``what="region"``, 12 of 40. Sent at most every
    ``STEP_EVENT_INTERVAL`` seconds per item, plus the first and the last step, and
    every step that carries a ``partial`` result (JSON data: a region's caption, a
    frame's score), which ``events.jsonl`` thus records."""

    item: str
    done: int
    total: int | None = None
    what: str = ""
    partial: Any = None

    @property
    def fraction(self) -> float | None:
        """``done / total`` clipped to [0, 1], or None when the total is unknown."""
        if not self.total:
            return None
        return min(1.0, max(0.0, self.done / self.total))


@dataclass(frozen=True)
class JobFinished(Event):
    """The run ended. ``status``: ``done`` (all items ok), ``failed`` (some items
    failed), ``cancelled`` or ``error`` (the job could not run; see ``error``).
    ``skipped``: items done by an earlier run; ``skipped_failed``: items that failed in
    an earlier run and were not retried (``--skip-failed``)."""

    status: str
    done: int
    failed: int
    skipped: int
    seconds: float
    error: str | None = None
    skipped_failed: int = 0


EVENT_TYPES: dict[str, type[Event]] = {
    cls.__name__: cls for cls in (JobStarted, ItemDone, ItemFailed, ItemProgress, Message, Progress, JobFinished)
}

Sink = Callable[[Event], None]


def event_to_json(event: Event) -> str:
    data = asdict(event)
    data["kind"] = event.kind
    return json.dumps(data, ensure_ascii=False)


def event_from_json(line: str) -> Event | None:
    """Parse one JSON line; None for a malformed or unknown line."""
    try:
        data = json.loads(line)
        cls = EVENT_TYPES[data.pop("kind")]
        return cls(**data)
    except (ValueError, KeyError, TypeError):
        return None


class JsonlSink:
    """Append events to ``<job_dir>/events.jsonl``; thread-safe; flushes every line."""

    def __init__(self, job_dir: str | Path):
        self.path = Path(job_dir) / EVENTS_NAME
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "a", encoding="utf-8")
        self._lock = threading.Lock()

    def __call__(self, event: Event) -> None:
        with self._lock:
            self._fh.write(event_to_json(event) + "\n")
            self._fh.flush()

    def close(self) -> None:
        with self._lock:
            self._fh.close()


class MultiSink:
    """Send every event to several sinks.

    The first sink is the record (``events.jsonl``): its errors propagate. An error in
    any later sink (a progress bar, a UI) is logged once per sink and that sink is
    skipped from then on, so a display problem never stops a batch.
    """

    def __init__(self, sinks: Iterable[Sink]):
        self.sinks = list(sinks)
        self._broken: set[int] = set()

    def __call__(self, event: Event) -> None:
        for i, sink in enumerate(self.sinks):
            if i in self._broken:
                continue
            if i == 0:
                sink(event)
                continue
            try:
                sink(event)
            except Exception:  # noqa: BLE001 - a display sink must not stop the job
                self._broken.add(i)
                logging.getLogger("segdeck.jobs").exception("progress sink %r failed; it is switched off", sink)


def read_events(job_dir: str | Path, offset: int = 0) -> tuple[list[Event], int]:
    """Read events appended since byte ``offset``.

    Returns
    -------
    events : list of Event
    offset : int
        Where to continue next time (a half-written last line is left for later).
    """
    path = Path(job_dir) / EVENTS_NAME
    try:
        with open(path, "rb") as fh:
            fh.seek(offset)
            data = fh.read()
    except FileNotFoundError:
        return [], offset
    events: list[Event] = []
    consumed = 0
    for raw in data.splitlines(keepends=True):
        if not raw.endswith(b"\n"):
            break
        consumed += len(raw)
        event = event_from_json(raw.decode("utf-8", errors="replace"))
        if event is not None:
            events.append(event)
    return events, offset + consumed
