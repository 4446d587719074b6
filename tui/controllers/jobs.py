"""The jobs: their classes, the poll of the job folders, launching and cancelling.

Jobs run as ``segdeck run`` processes in their own session (they outlive the TUI); this
controller follows every job folder under the root through a
:class:`~segdeck.tui.jobwatch.JobWatcher` polled from a thread worker, and keeps the
job list, the log pane, the job summary and the followed preview up to date.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from textual import work
from textual.message import Message

from segdeck.tui import hooks, launch
from segdeck.tui.controllers.base import Controller
from segdeck.tui.jobwatch import JobSnapshot, JobWatcher, cancel_job
from segdeck.tui.widgets.job_list import JobList
from segdeck.tui.widgets.job_log import JobLog
from segdeck.tui.widgets.job_summary import JobSummary
from segdeck.tui.widgets.preview import PreviewPane

#: Seconds between two polls of the job folders.
POLL_S = 0.5


@dataclass
class JobsLoaded(Message):
    """Job classes imported in the background: name -> class (or an error line)."""

    jobs: dict
    errors: dict


@dataclass
class JobsPolled(Message):
    """A poll of the job folders (``snapshots`` None: the poll failed, reason in
    ``new_lines["__error__"]``)."""

    snapshots: list | None
    new_lines: dict


@dataclass
class InputChecked(Message):
    """Which jobs take ``path`` as their input: ``problems`` maps a job name to why
    not (its ``check_input``'s line), None for a job that takes it."""

    path: Path
    problems: dict


class JobsController(Controller):
    """Job classes, polling, run / re-run / cancel of the jobs under ``root``.

    Parameters
    ----------
    root : Path
        The folder whose job folders are followed.
    **kwargs
        Passed to :class:`~segdeck.tui.controllers.base.Controller`.
    """

    def __init__(self, root: Path, **kwargs):
        super().__init__(**kwargs)
        self.watcher = JobWatcher([root])
        #: Importable job classes by name (set by the screen from :class:`JobsLoaded`).
        self.jobs: dict[str, type] = {}
        self._polling = False
        self._select_next: Path | None = None

    def start(self) -> None:
        """Import the job classes and start polling (after the first frame)."""
        self._load_jobs()
        self.set_interval(POLL_S, self.tick)
        self.tick(force_scan=True)

    # ---- job classes -----------------------------------------------------------------
    @work(thread=True, exclusive=True, group="load-jobs")
    def _load_jobs(self) -> None:
        from segdeck.core.jobs.registry import JOBS, get_job_class

        jobs, errors = {}, {}
        for name in JOBS:
            try:
                jobs[name] = get_job_class(name)
            except Exception as exc:  # noqa: BLE001 - a job module that does not import is listed as missing
                errors[name] = f"{type(exc).__name__}: {exc}"
        self.post_message(JobsLoaded(jobs, errors))

    def on_jobs_loaded(self, message: JobsLoaded) -> None:
        # the screen sets :attr:`jobs` when it fills its job picker (both at once: the
        # picker never lags behind the classes)
        for name, error in message.errors.items():
            # a job whose module is not in this install is simply not offered; one that
            # is there but fails to import is worth a word
            if not error.startswith("ModuleNotFoundError"):
                self.notify(f"job {name} is unavailable: {error}", severity="warning", timeout=8)

    # ---- inputs ----------------------------------------------------------------------
    def check_input(self, path: Path, names: list[str]) -> None:
        """Ask the jobs ``names`` whether they take ``path`` (in a thread worker: a
        check may walk a folder or read a CSV); the answer comes as :class:`InputChecked`."""
        self._check_input(path, {n: self.jobs[n] for n in names if n in self.jobs})

    @work(thread=True, group="input-check")
    def _check_input(self, path: Path, jobs: dict) -> None:
        verdicts: dict = {}  # one call per distinct check_input (the image jobs share one)
        problems = {}
        for name, cls in jobs.items():
            check = getattr(cls.check_input, "__func__", cls.check_input)
            if check not in verdicts:
                verdicts[check] = hooks.input_problem(cls, path)
            problems[name] = verdicts[check]
        self.post_message(InputChecked(path, problems))

    # ---- polling ---------------------------------------------------------------------
    def tick(self, force_scan: bool = False) -> None:
        """Poll the job folders unless a poll is under way (``force_scan``: look for
        new folders now)."""
        if self._polling:
            return
        self._polling = True
        self._poll(force_scan)

    @work(thread=True, group="poll")
    def _poll(self, force_scan: bool) -> None:
        try:
            launch.reap()
            snaps, new_lines = self.watcher.poll(force_scan=force_scan)
        except Exception as exc:  # noqa: BLE001 - keep polling; show the reason once
            snaps, new_lines = None, {"__error__": str(exc)}
        self.post_message(JobsPolled(snaps, new_lines))

    def on_jobs_polled(self, message: JobsPolled) -> None:
        self._polling = False
        if message.snapshots is None:
            self.log.error(message.new_lines.get("__error__"))
            return
        screen = self.screen
        jobs = screen.query_one(JobList)
        had_none = jobs.selected_job is None
        self._announce_finished(jobs.snapshots, message.snapshots)
        jobs.update_jobs(message.snapshots)
        preview = screen.query_one(PreviewPane)
        if self._select_next is not None and self._select_next in jobs.snapshots:
            jobs.select_job(self._select_next)
            self._select_next = None
            self.show_job_log(jobs.selected_job)
            if preview.display:  # a job launched here: watch its outputs come
                preview.follow_job(jobs.selected_job)
        elif had_none and jobs.selected_job is not None:
            self.show_job_log(jobs.selected_job)
        log = screen.query_one(JobLog)
        for job_dir, lines in message.new_lines.items():
            log.append(job_dir, lines)
        snap = jobs.selected_snapshot
        if snap is not None:
            summary = screen.query_one(JobSummary)
            if summary.job_dir != snap.job_dir or snap != summary.snapshot:
                summary.show(snap)
            if preview.display and preview.following == snap.job_dir and (
                    snap.state in ("running", "starting") or snap.job_dir in message.new_lines):
                # throttled while it runs; its last look (finished) always goes through
                preview.follow_job(snap.job_dir, poll=snap.state in ("running", "starting"))

    def _announce_finished(self, before: dict, snapshots: list) -> None:
        """A toast when a job seen running (or starting) here has ended."""
        for snap in snapshots:
            old = before.get(snap.job_dir)
            if old is None or old.state not in ("running", "starting") or not snap.finished:
                continue
            text = f"{snap.job_dir.name}: {snap.state}, {snap.done} done, {snap.failed} failed"
            if snap.error:
                text += f"\n{snap.error}"
            severity = {"done": "information", "cancelled": "warning", "failed": "warning"}.get(snap.state, "error")
            self.notify(text, severity=severity, timeout=6)

    def show_job_log(self, job_dir: Path | None) -> None:
        """Show ``job_dir``'s event lines in the log pane (unless they are shown)."""
        if job_dir is None:
            return
        log = self.screen.query_one(JobLog)
        if log.source == job_dir:
            return
        log.show(job_dir, self.watcher.lines(job_dir), title=f"Log — {job_dir.name}")

    # ---- run, re-run, cancel -----------------------------------------------------------
    def selected(self) -> JobSnapshot | None:
        """The job list's selected job (None, and a word to the user, when none)."""
        snap = self.screen.query_one(JobList).selected_snapshot
        if snap is None:
            self.notify("no job selected", severity="warning")
        return snap

    def run(self, name: str, params, input_path: Path, values: dict) -> None:
        """Launch job ``name`` on ``input_path`` with the form's ``params`` (validated)
        and ``values`` (what differs from the defaults, for the command line)."""
        from segdeck.core.jobs.runner import job_dir_for

        job_dir = job_dir_for(self.jobs[name], params, input_path, None).resolve()
        snap = self.screen.query_one(JobList).snapshots.get(job_dir)
        if snap is not None and snap.state in ("running", "starting"):
            self.notify(f"{job_dir.name} is already running", severity="warning")
            return
        self._start(launch.run_command(name, input_path, values), job_dir, name, input_path)

    def resume(self) -> None:
        """Run the selected job again with its saved parameters (``job.toml``): an
        interrupted or cancelled run resumes, finished items are skipped."""
        snap = self.selected()
        if snap is None:
            return
        if snap.state in ("running", "starting"):
            self.notify(f"{snap.job_dir.name} is already running", severity="warning")
            return
        if snap.job not in self.jobs or not snap.input:
            self.notify(f"cannot re-run {snap.job_dir.name}: job {snap.job!r} is not available", severity="error")
            return
        if not Path(snap.input).exists():
            self.notify(f"the input {snap.input} is gone", severity="error")
            return
        cmd = launch.run_command(snap.job, snap.input, {}, out=snap.job_dir.parent)
        cmd += ["--config", str(snap.job_dir / "job.toml")]
        self._start(cmd, snap.job_dir, snap.job, Path(snap.input))

    def _start(self, cmd: list[str], job_dir: Path, name: str, input_path: Path) -> None:
        try:
            proc = launch.launch_job(cmd, job_dir)
        except OSError as exc:
            self.notify(f"could not start the job: {exc}", severity="error")
            return
        self.watcher.add(job_dir, pid=proc.pid, job=name, input=str(input_path))
        self._select_next = job_dir
        self.notify(f"started {name} on {input_path.name} (pid {proc.pid})")
        self.tick(force_scan=True)

    def cancel(self) -> None:
        """SIGINT the selected job's process: it stops after the current item."""
        snap = self.selected()
        if snap is None:
            return
        if snap.state not in ("running", "starting") or not snap.pid:
            self.notify(f"{snap.job_dir.name} is not running ({snap.state})", severity="warning")
            return
        self.watcher.request_cancel(snap.job_dir)
        if cancel_job(snap.pid):
            self.notify(f"cancelling {snap.job_dir.name}: it stops after the current item")
        else:
            self.notify("the job process is already gone", severity="warning")


__all__ = ["POLL_S", "InputChecked", "JobsController", "JobsLoaded", "JobsPolled"]
