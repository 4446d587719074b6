"""Read a job folder from outside (the TUI, ``segdeck jobs``): params, counts, state, ETA.

Works for jobs started by any process: everything comes from ``job.toml``,
``manifest.sqlite`` and ``events.jsonl``.
"""

from __future__ import annotations

import os
import time
import tomllib
from dataclasses import dataclass
from pathlib import Path

from segdeck.core.jobs.base import JOB_TOML, default_output_root
from segdeck.core.jobs.events import JobFinished, JobStarted, read_events
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
    try:
        with Manifest(job_dir, readonly=True) as m:
            counts, mean = m.counts(), m.mean_duration()
    except (FileNotFoundError, Exception):  # noqa: BLE001 - a manifest being created
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
        left = counts.total - counts.done - counts.failed
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
    )


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


def format_eta(seconds: float | None) -> str:
    if seconds is None:
        return "--:--"
    seconds = int(seconds)
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m:02d}:{s:02d}"


__all__ = ["JobInfo", "find_job_dirs", "format_eta", "pid_alive", "read_job", "time"]
