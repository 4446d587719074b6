"""Follow job folders cheaply from the TUI: incremental ``events.jsonl`` reads (byte
offsets), a manifest count per change, a folder scan now and then.

Nothing here imports Textual; the TUI calls :meth:`JobWatcher.poll` from a thread
worker and posts the returned snapshots to the UI thread.
"""

from __future__ import annotations

import dataclasses
import os
import signal
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

from segdeck.core.jobs import report
from segdeck.core.jobs.events import (
    EVENTS_NAME,
    Event,
    ItemDone,
    ItemFailed,
    ItemProgress,
    JobFinished,
    JobStarted,
    read_events,
)
from segdeck.core.jobs.manifest import Counts, Manifest

# Names of files in a job folder (segdeck.core.jobs.base.JOB_TOML, runner.LOG_NAME); not
# imported from there so that this module stays light (numpy, pydantic load later).
JOB_TOML = "job.toml"
LOG_NAME = "job.log"


def find_job_dirs(*roots):
    from segdeck.core.jobs.status import find_job_dirs as find

    return find(*roots)


def recent_job_dirs(limit: int) -> list[Path]:
    """The ``limit`` most recently used job folders of the recent-jobs registry
    (resolved; empty when ``limit`` is 0 or the registry cannot be read)."""
    if limit <= 0:
        return []
    from segdeck.core.jobs.registry import recent

    try:
        return [Path(p).resolve() for p in recent(limit)]
    except Exception:  # noqa: BLE001 - the registry is a convenience: never stop the polling
        return []


def pid_alive(pid: int | None) -> bool:
    from segdeck.core.jobs.status import pid_alive as alive

    return alive(pid)

#: Log lines kept per job (older ones are still in events.jsonl / job.log).
LOG_LINES = 500
#: Seconds of item and sub-step events the ETA's rate is measured over (the CLI bar's
#: ``rich.progress.Progress(speed_estimate_period=30)``).
RATE_WINDOW_S = 30.0


@dataclass(frozen=True)
class LogLine:
    """One line of a job's log: ``level`` is info, done, warning, error or title.

    ``seq`` numbers a job's event lines in the order they were read (1, 2, …; never
    reused for that job, also not after ``events.jsonl`` was replaced); -1 for lines
    that do not come from a job's events. The log pane uses it to show each line once
    when the same lines reach it twice (a job shown from :meth:`JobWatcher.lines`
    while the poll that read them is still on its way).
    """

    t: float
    text: str
    level: str = "info"
    seq: int = -1


@dataclass(frozen=True)
class JobSnapshot:
    """What the job list shows for one job folder.

    Attributes
    ----------
    state : str
        ``starting`` (launched here, no event yet), ``running``, ``done``, ``failed``,
        ``cancelled``, ``error``, ``interrupted`` (killed without finishing) or ``new``.
    eta_s : float or None
        Seconds left while running, as the CLI bar (``segdeck run``) computes it: the
        items left (less the share of the items being computed that their sub-steps
        say is done) over the rate of the last :data:`RATE_WINDOW_S` seconds of item
        and sub-step events of this run. With fewer than two such events: the mean
        item time of the manifest times the items left, else the run's rate so far
        (elapsed time over the done share of its first item).
    step : str or None
        While running: the latest sub-step of an item being computed, worded by the
        reporter (``"img7: region 12/40"``); None when the job reports none.
    in_progress : float
        How much of the items being computed is done, from their latest sub-steps
        (0.3 for "region 12/40"); part of :attr:`fraction`.
    shown : float
        The highest :attr:`fraction` an earlier snapshot of the same run had, 0..1: the
        bar never goes back within a run. A cancel puts the item being computed back
        to pending (its sub-steps are redone by a re-run), and the manifest's done
        count can lag an ``ItemDone`` event by a moment; the bar keeps its position,
        while :attr:`done` is the manifest's count. A new run starts again from 0.
    """

    job_dir: Path
    job: str
    input: str
    state: str
    total: int
    done: int
    failed: int
    pid: int | None
    eta_s: float | None
    error: str | None
    started: float | None
    step: str | None = None
    in_progress: float = 0.0
    shown: float = 0.0

    @property
    def fraction(self) -> float:
        """Finished share of the items, 0..1 (the sub-steps of the items being
        computed included, as on the CLI bar), never below :attr:`shown`."""
        if not self.total:
            return 1.0 if self.finished else 0.0
        return min(1.0, max(self.shown, (self.done + self.failed + self.in_progress) / self.total))

    @property
    def finished(self) -> bool:
        return self.state in ("done", "failed", "cancelled", "error", "interrupted")


def event_line(event: Event) -> LogLine | None:
    """One event as a log-pane line, worded by the one reporter.

    The text and the level are :func:`segdeck.core.jobs.report.event_line`'s (its
    :data:`~segdeck.core.jobs.report.LEVELS` are :class:`LogLine`'s levels), so a line
    reads here as in ``job.log`` and ``segdeck run``. Like ``job.log``, the log pane
    leaves an item's sub-steps (``ItemProgress``) out: at up to two a second per item
    they would push the job's other lines out of the :data:`LOG_LINES` kept.

    Parameters
    ----------
    event : Event
        Any event of :mod:`segdeck.core.jobs.events`.

    Returns
    -------
    LogLine or None
        None for sub-steps and for event types the reporter does not know.
    """
    if isinstance(event, ItemProgress):
        return None
    line = report.event_line(event)
    return None if line is None else LogLine(line.t, line.text, line.level)


@dataclass
class _Tracked:
    job_dir: Path
    job: str = "?"
    input: str = ""
    offset: int = 0
    size: int = -1
    last_start: JobStarted | None = None
    last_finish: JobFinished | None = None
    counts: Counts = field(default_factory=Counts)
    mean: float | None = None
    lines: deque = field(default_factory=lambda: deque(maxlen=LOG_LINES))
    seq: int = 0  # number of event lines read so far (LogLine.seq of the last one)
    launched_pid: int | None = None
    launched_at: float | None = None
    cancel_requested: bool = False
    # the latest sub-step of each item being computed in the current run, in order
    steps: dict = field(default_factory=dict)
    finished_this_run: int = 0
    # (event time, items finished in this run + the done share of the items being
    # computed) at each item or sub-step event of the last RATE_WINDOW_S seconds
    samples: deque = field(default_factory=deque)
    # the highest bar share a snapshot of the current run showed (JobSnapshot.shown)
    shown: float = 0.0


class JobWatcher:
    """Track job folders under some roots plus folders launched here.

    Parameters
    ----------
    roots : list of path-like
        Folders to scan with :func:`~segdeck.core.jobs.status.find_job_dirs`.
    rescan_s : float
        Seconds between folder scans (the cheap per-job reads happen every poll).
    recent : int
        Also follow this many of the most recently used job folders of the recent-jobs
        registry (:func:`segdeck.core.jobs.registry.recent`): jobs run with ``--out``
        anywhere else, from any terminal. 0: only the roots.
    """

    def __init__(self, roots: list[str | Path], rescan_s: float = 3.0, recent: int = 200):
        self.roots = [Path(r) for r in roots]
        self.rescan_s = rescan_s
        self.recent = recent
        self._jobs: dict[Path, _Tracked] = {}
        self._last_scan = 0.0
        self._rescan_every = rescan_s
        self._lock = threading.Lock()  # guards _jobs and each job's lines

    # ---- registration ------------------------------------------------------------
    def add(self, job_dir: str | Path, *, pid: int | None = None, job: str = "?", input: str = "") -> None:
        """Follow ``job_dir`` (it may not exist yet: a job just launched with ``pid``)."""
        key = Path(job_dir).resolve()
        with self._lock:
            tracked = self._jobs.get(key) or _Tracked(key, job=job, input=input)
            if pid is not None:
                tracked.launched_pid, tracked.launched_at = pid, time.time()
                tracked.cancel_requested = False
            self._jobs[key] = tracked

    def request_cancel(self, job_dir: str | Path) -> None:
        """Note that the user cancelled this job (a process stopped before its first
        event then reads as ``cancelled``, not ``error``)."""
        with self._lock:
            tracked = self._jobs.get(Path(job_dir).resolve())
            if tracked is not None:
                tracked.cancel_requested = True

    def lines(self, job_dir: str | Path) -> list[LogLine]:
        """The kept log lines of a job (oldest first)."""
        with self._lock:
            tracked = self._jobs.get(Path(job_dir).resolve())
            return list(tracked.lines) if tracked else []

    # ---- polling -------------------------------------------------------------------
    def poll(self, force_scan: bool = False) -> tuple[list[JobSnapshot], dict[Path, list[LogLine]]]:
        """Update every tracked job.

        Returns
        -------
        snapshots : list of JobSnapshot
            Every job, newest first.
        new_lines : dict
            job folder -> log lines appended since the last poll.
        """
        now = time.time()
        if force_scan or now - self._last_scan >= self._rescan_every:
            self._last_scan = now
            try:
                found = list(find_job_dirs(*self.roots))
            except OSError:
                found = []
            found += recent_job_dirs(self.recent)
            # a slow scan (huge folder trees, network disks) is repeated less often
            self._rescan_every = max(self.rescan_s, 20 * (time.time() - now))
            with self._lock:
                for d in found:
                    if d not in self._jobs:
                        self._jobs[d] = _Tracked(d)
                for d, t in list(self._jobs.items()):  # folders deleted since: forget them
                    recent = t.launched_at is not None and now - t.launched_at < 60
                    if not recent and not d.exists():
                        del self._jobs[d]
        new_lines: dict[Path, list[LogLine]] = {}
        with self._lock:
            tracked_all = list(self._jobs.values())
        for tracked in tracked_all:
            added = self._update(tracked)
            if added:
                new_lines[tracked.job_dir] = added
        snaps = [self._snapshot(t) for t in tracked_all]
        snaps.sort(key=lambda s: (s.started or 0.0, str(s.job_dir)), reverse=True)
        return snaps, new_lines

    def _update(self, tracked: _Tracked) -> list[LogLine]:
        d = tracked.job_dir
        if tracked.job == "?" and (d / JOB_TOML).is_file():
            _read_job_toml(tracked)
        try:
            size = (d / EVENTS_NAME).stat().st_size
        except OSError:
            return []
        running = tracked.last_start is not None and (
            tracked.last_finish is None or tracked.last_finish.t < tracked.last_start.t
        )
        if size == tracked.size and not running:
            return []
        added: list[LogLine] = []
        if size != tracked.size:
            if size < tracked.offset:  # truncated or replaced: start again
                tracked.offset = 0
            events, offset = read_events(d, tracked.offset)
            with self._lock:
                if tracked.offset == 0:
                    tracked.lines.clear()
                    tracked.steps.clear()
                    tracked.samples.clear()
                    tracked.shown = 0.0
                tracked.offset, tracked.size = offset, size
                for ev in events:
                    if isinstance(ev, JobStarted):
                        tracked.last_start = ev
                        tracked.steps.clear()
                        tracked.samples.clear()
                        tracked.finished_this_run = 0
                        tracked.shown = 0.0
                        if tracked.job == "?":
                            tracked.job = ev.job
                    elif isinstance(ev, JobFinished):
                        tracked.last_finish = ev
                        tracked.steps.clear()
                        tracked.samples.clear()
                    elif isinstance(ev, (ItemProgress, ItemDone, ItemFailed)):
                        _count_progress(tracked, ev)
                    line = event_line(ev)
                    if line is not None:
                        tracked.seq += 1
                        line = dataclasses.replace(line, seq=tracked.seq)
                        tracked.lines.append(line)
                        added.append(line)
        try:
            with Manifest(d, readonly=True) as m:
                tracked.counts, tracked.mean = m.counts(), m.mean_duration()
        except Exception:  # noqa: BLE001 - a manifest being created or locked: keep the last counts
            pass
        return added

    def _snapshot(self, t: _Tracked) -> JobSnapshot:
        start, finish = t.last_start, t.last_finish
        pid = start.pid if start else None
        state, error = "new", None
        if t.launched_pid is not None and (start is None or start.t < (t.launched_at or 0) - 1.0):
            # launched here, its JobStarted not written yet
            state = "starting" if pid_alive(t.launched_pid) else "error"
            pid = t.launched_pid if state == "starting" else None
            if state == "error" and t.cancel_requested:
                state = "cancelled"
            elif state == "error":
                from segdeck.tui.launch import last_stderr_line

                error = last_stderr_line(t.job_dir) or "the job process exited before starting"
        elif start and (finish is None or finish.t < start.t):
            state = "running" if pid_alive(pid) else "interrupted"
        elif finish:
            state, error = finish.status, finish.error
        if state not in ("running", "starting"):
            pid = None
        c = t.counts
        total = c.total or (start.total if start else 0)
        eta, step, in_progress = None, None, 0.0
        if state == "running":
            with self._lock:
                steps = list(t.steps.values())
                samples = (t.samples[0], t.samples[-1]) if len(t.samples) > 1 else None
            in_progress = sum(e.fraction or 0.0 for e in steps)
            if steps:
                step = report.step_text(steps[-1])
            left = max(0.0, total - c.done - c.failed - in_progress)
            rate = None
            if samples is not None and samples[1][0] > samples[0][0] and samples[1][1] > samples[0][1]:
                rate = (samples[1][1] - samples[0][1]) / (samples[1][0] - samples[0][0])
            if rate:
                eta = left / rate
            elif t.mean:
                eta = left * t.mean
            elif in_progress > 0 and start is not None:
                # one sub-step seen, nothing done yet: the rate of the run so far
                eta = left * max(0.0, time.time() - start.t) / (t.finished_this_run + in_progress)
        snap = JobSnapshot(
            job_dir=t.job_dir, job=t.job, input=t.input, state=state, total=total, done=c.done,
            failed=c.failed, pid=pid, eta_s=eta, error=error,
            started=start.t if start else t.launched_at, step=step, in_progress=in_progress,
            shown=t.shown if state not in ("new", "starting") else 0.0,  # a relaunch: from 0
        )
        if state not in ("new", "starting"):
            t.shown = snap.fraction
        return snap


def _count_progress(t: _Tracked, ev: Event) -> None:
    """Follow an item or sub-step event: the latest sub-step of each item being
    computed, the items finished in this run, and a rate sample (see :data:`RATE_WINDOW_S`)."""
    if isinstance(ev, ItemProgress):
        t.steps.pop(ev.item, None)  # the latest item last
        t.steps[ev.item] = ev
    else:
        t.steps.pop(ev.item, None)
        t.finished_this_run += 1
    t.samples.append((ev.t, t.finished_this_run + sum(e.fraction or 0.0 for e in t.steps.values())))
    while t.samples and t.samples[0][0] < ev.t - RATE_WINDOW_S:
        t.samples.popleft()


def _read_job_toml(t: _Tracked) -> None:
    import tomllib

    try:
        doc = tomllib.loads((t.job_dir / JOB_TOML).read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError):
        return
    t.job = str(doc.get("job", t.job))
    t.input = str(doc.get("input", t.input))


def tail_log(job_dir: str | Path, max_lines: int = 200, max_bytes: int = 256_000) -> list[str]:
    """Last lines of ``job.log`` (tracebacks live there), reading at most ``max_bytes``."""
    path = Path(job_dir) / LOG_NAME
    try:
        with open(path, "rb") as fh:
            fh.seek(0, os.SEEK_END)
            size = fh.tell()
            fh.seek(max(0, size - max_bytes))
            data = fh.read()
    except OSError:
        return []
    lines = data.decode("utf-8", errors="replace").splitlines()
    if size > max_bytes and lines:
        lines = lines[1:]
    return lines[-max_lines:]


def cancel_job(pid: int) -> bool:
    """Ask a job process to stop after its current item (SIGINT). False if it is gone."""
    try:
        os.kill(pid, signal.SIGINT)
    except ProcessLookupError:
        return False
    return True
