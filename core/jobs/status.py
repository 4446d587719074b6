"""Read a job folder from outside (the TUI, ``segdeck jobs``): params, counts, state, ETA.

Works for jobs started by any process: everything comes from ``job.toml``,
``manifest.sqlite`` and ``events.jsonl``.
"""

from __future__ import annotations

import os
import sqlite3
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from segdeck.core.jobs.base import JOB_TOML, default_output_root
from segdeck.core.jobs.events import (
    EVENTS_NAME,
    ItemDone,
    ItemFailed,
    ItemProgress,
    JobFinished,
    JobStarted,
    read_events,
)
from segdeck.core.jobs.manifest import Counts, Manifest


@dataclass(frozen=True)
class JobInfo:
    """A snapshot of one job folder.

    Attributes
    ----------
    state : {"running", "done", "failed", "cancelled", "error", "interrupted", "new"}
        ``interrupted``: the last run stopped without finishing (killed).
    eta_s : float or None
        Seconds left, from the mean item time, while running.
    error : str or None
        Why the last run ended in ``error`` (one line), or None.
    last_failure : str or None
        The most recent failed item's one-line error (``"<item>: <error>"`` unless the
        error names the item), or None when no item is ``failed``.
    """

    job_dir: Path
    job: str
    input: str
    params: dict
    counts: Counts
    state: str
    pid: int | None
    started: float | None
    eta_s: float | None
    error: str | None
    last_failure: str | None = None
    damaged: str | None = None

    @property
    def reason(self) -> str | None:
        """Why the job is not ``done``/``running``, in one line (None when nothing to say):
        a damaged manifest, else the job-level error, else the last item failure, else a
        note for a killed run."""
        if self.damaged:
            return (f"manifest.sqlite is damaged ({self.damaged}); run the job again to rebuild it "
                    "from the outputs on disk (or with --fresh to start over)")
        if self.state in ("error", "failed", "cancelled", "interrupted"):
            why = self.error or self.last_failure
            if self.state == "failed" and self.last_failure and self.counts.failed:
                why = f"{self.counts.failed} failed, last: {self.last_failure}"
            if why:
                return why
        if self.state == "interrupted":
            return "the process stopped without finishing (killed?); run it again to resume"
        return None


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie child of ours counts as finished
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(") ")[-1][:1] != "Z"
    except OSError:
        return True


def read_job(job_dir: str | Path) -> JobInfo:
    """Snapshot a job folder (must contain ``job.toml``).

    Raises
    ------
    FileNotFoundError
        If ``job.toml`` is missing.
    """
    job_dir = Path(job_dir)
    doc = tomllib.loads((job_dir / JOB_TOML).read_text(encoding="utf-8"))
    last_failure = damaged = None
    try:
        with Manifest(job_dir, readonly=True) as m:
            counts, mean = m.counts(), m.mean_duration()
            if counts.failed:
                last_failure = m.last_failure()
    except sqlite3.DatabaseError as exc:
        counts, mean = Counts(), None
        if not isinstance(exc, sqlite3.OperationalError):  # "locked" or being created is no damage
            damaged = str(exc) or type(exc).__name__
    except Exception:  # noqa: BLE001 - a manifest being created
        counts, mean = Counts(), None
    events, _ = read_events(job_dir)
    last_start = next((e for e in reversed(events) if isinstance(e, JobStarted)), None)
    last_finish = next((e for e in reversed(events) if isinstance(e, JobFinished)), None)
    pid = last_start.pid if last_start else None
    state, error = "new", None
    if last_start and (last_finish is None or last_finish.t < last_start.t):
        state = "running" if pid_alive(pid) else "interrupted"
    elif last_finish:
        state, error = last_finish.status, last_finish.error
    eta = None
    if state == "running" and mean:
        left = counts.total - counts.done - counts.failed - _items_in_progress(events, last_start)
        eta = max(0.0, left * mean)
    return JobInfo(
        job_dir=job_dir,
        job=doc.get("job", "?"),
        input=doc.get("input", ""),
        params=doc.get("params", {}),
        counts=counts,
        state=state,
        pid=pid if state == "running" else None,
        started=last_start.t if last_start else None,
        eta_s=eta,
        error=error,
        last_failure=last_failure,
        damaged=damaged,
    )


def _items_in_progress(events: list, last_start: JobStarted | None) -> float:
    """How much of the items being computed is done, from their last ``ItemProgress``
    (sub-steps) of the current run: 0.3 for "region 12/40"."""
    if last_start is None:
        return 0.0
    open_items: dict[str, float] = {}
    for event in events:
        if event.t < last_start.t:
            continue
        if isinstance(event, ItemProgress) and event.fraction is not None:
            open_items[event.item] = event.fraction
        elif isinstance(event, (ItemDone, ItemFailed)):
            open_items.pop(event.item, None)
    return sum(open_items.values())


def find_job_dirs(*roots: str | Path, max_depth: int = 3) -> list[Path]:
    """Job folders (holding ``job.toml``) under the given roots and under the
    ``*.segdeck`` output roots beside them, newest first."""
    found: set[Path] = set()

    def scan(folder: Path, depth: int) -> None:
        if depth < 0 or not folder.is_dir():
            return
        if (folder / JOB_TOML).is_file():
            found.add(folder.resolve())
            return
        try:
            children = [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")]
        except OSError:
            return
        for child in children:
            scan(child, depth - 1)

    for root in roots:
        root = Path(root)
        scan(root, max_depth)
        scan(default_output_root(root), 2)  # the runner's rule: "." and single files included
    return sorted(found, key=lambda p: (p / JOB_TOML).stat().st_mtime, reverse=True)


def _last_activity(job_dir: Path) -> float:
    """Unix time of a job folder's last write (events, else job.toml); 0 if unreadable."""
    for name in (EVENTS_NAME, JOB_TOML):
        try:
            return (job_dir / name).stat().st_mtime
        except OSError:
            continue
    return 0.0


def _is_under(path: Path, root: Path) -> bool:
    return path == root or root in path.parents


def list_job_dirs(
    *roots: str | Path, include_recent: bool = True, all_recent: bool = False, limit: int = 200
) -> list[Path]:
    """The job folders to show for ``roots``: those :func:`find_job_dirs` finds, plus the
    recently run ones (:func:`segdeck.core.jobs.registry.recent`, jobs written anywhere
    with ``--out``) whose input or folder lies in one of the roots (every recent job
    with ``all_recent`` or without roots). Most recently active first (``events.jsonl``
    modification time).

    Parameters
    ----------
    roots : path-like
        Input folders (or images) to list the jobs of.
    include_recent : bool
        Add the recent-jobs registry's folders (default).
    all_recent : bool
        Add every recent job, whatever its input.
    limit : int
        At most this many recent folders are considered.

    Returns
    -------
    list of Path
        Resolved job folders, without duplicates.
    """
    from segdeck.core.jobs.registry import recent

    found = {p.resolve() for p in find_job_dirs(*roots)} if roots else set()
    if include_recent:
        wanted = [] if all_recent else [Path(r).resolve() for r in roots]
        for job_dir in recent(limit):
            if not wanted:
                found.add(job_dir)
                continue
            try:
                doc = tomllib.loads((job_dir / JOB_TOML).read_text(encoding="utf-8"))
                source = Path(str(doc.get("input", ""))).resolve() if doc.get("input") else None
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
                source = None
            if any(_is_under(job_dir, w) or (source is not None and _is_under(source, w)) for w in wanted):
                found.add(job_dir)
    return sorted(found, key=_last_activity, reverse=True)


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


__all__ = ["JobInfo", "find_job_dirs", "format_eta", "list_job_dirs", "pid_alive", "read_job", "time"]
