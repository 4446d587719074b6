"""The main screen: folders, job picker + parameter form + Run, job list, log.

Jobs run as ``segdeck run`` processes in their own session (they outlive the TUI);
this screen follows every job folder under the root through a
:class:`~segdeck.tui.jobwatch.JobWatcher` polled from a thread worker.

The integration hooks (which job has a threshold curve, a tool screen, a model field,
notes under fields) are tables in :mod:`segdeck.tui.hooks`; the preview pane, the job
summary and the log are widgets of their own (:mod:`segdeck.tui.widgets`).
"""

from __future__ import annotations

import asyncio
import importlib
import threading
from dataclasses import dataclass
from pathlib import Path

from textual import on, work
from textual.actions import SkipAction
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Select, Static

from segdeck.tui import launch
from segdeck.tui.hooks import (
    ANNOTATE_MODE,
    CURVE_JOBS,
    EXTRA_MODEL_FIELDS,
    FIELD_NOTES,
    JOB_SCREENS,
    MODEL_FIELD,
    NO_CURVE_METHODS,
    THRESHOLD_FIELD,
)
from segdeck.tui.jobwatch import JobSnapshot, JobWatcher, LogLine, cancel_job, tail_log
from segdeck.tui.launch import annotate_line
from segdeck.tui.widgets.folder_tree import FolderTree
from segdeck.tui.widgets.job_list import JobList
from segdeck.tui.widgets.job_log import JobLog
from segdeck.tui.widgets.job_summary import JobSummary
from segdeck.tui.widgets.param_form import ParamForm
from segdeck.tui.widgets.preview import PreviewPane

ANNOTATE_SOURCE = "annotate"
POLL_S = 0.5


@dataclass
class JobsLoaded(Message):
    """Job classes imported in the background: name -> class (or an error line)."""

    jobs: dict
    errors: dict


@dataclass
class JobsPolled(Message):
    """A poll of the job folders."""

    snapshots: list
    new_lines: dict


@dataclass
class CurveReady(Message):
    """A threshold curve computed in the background (or the one-line reason it failed)."""

    job: str
    curve: object | None
    error: str | None


@dataclass
class CurveProgress(Message):
    """Progress of the threshold curve's sample (one line for the status bar)."""

    text: str


class _CurveCancelled(Exception):
    """Raised from the progress callback when the user stops the curve."""


@dataclass
class AnnotateOutput(Message):
    """Lines from an annotation process (``level`` error for its failures)."""

    lines: list


class MainScreen(Screen):
    """Folders | job form; job list; log."""

    BINDINGS = [
        Binding("ctrl+r", "run", "Run", priority=True),
        Binding("x", "cancel_job", "Cancel job"),
        Binding("e", "resume_job", "Resume/re-run job", show=False),
        Binding("o", "open_output", "Open output"),
        Binding("l", "toggle_log", "Log/job.log"),
        Binding("a", "annotate", "Annotate"),
        Binding("ctrl+t", "threshold", "Threshold picker", priority=True),
        Binding("t", "job_tool", "Threshold picker / job tool", show=False),
        Binding("m", "models", "Models"),
        Binding("escape", "escape", "Leave the field / stop the threshold curve", show=False, priority=True),
        Binding("f5", "rescan", "Rescan folders and jobs", show=False),
        Binding("f2", "toggle_pane('folders')", "Show/hide folders", show=False),
        Binding("f3", "toggle_pane('preview')", "Show/hide preview", show=False),
        Binding("f4", "toggle_pane('info')", "Show/hide log", show=False),
        Binding("v", "preview_view", "Preview: image/overlay/labels", show=False),
        Binding("left_square_bracket", "preview_step(-1)", "Preview: previous", show=False, key_display="["),
        Binding("right_square_bracket", "preview_step(1)", "Preview: next", show=False, key_display="]"),
        Binding("f", "focus('folders')", "Focus folders", show=False),
        Binding("p", "focus('form')", "Focus parameters", show=False),
        Binding("j", "focus('jobs')", "Focus jobs", show=False),
    ]

    def __init__(self, root: Path, **kwargs):
        super().__init__(**kwargs)
        self.root = Path(root).resolve()
        self.watcher = JobWatcher([self.root])
        self.jobs: dict[str, type] = {}
        self.input_path: Path = self.root
        self.input_count: int | None = None
        self._polling = False
        self._select_next: Path | None = None
        self._annotate_lines: list[LogLine] = []
        self.presets: dict[str, dict] = {}
        self._applied_preset: str | None = None
        self._curve_busy = False
        self._curve_cancel = threading.Event()
        self._downloads_running = False
        self._set_job_lock = asyncio.Lock()

    # ---- layout ----------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        # the size classes before the children exist: set later, they restyle every node
        self._apply_size(self.app.size.width, self.app.size.height)
        yield Header()
        with Horizontal(id="top"):
            yield FolderTree(self.root, id="folders")
            with Vertical(id="job-pane"):
                with Horizontal(id="picker"):
                    yield Select([], prompt="job", id="job-select", allow_blank=True, compact=True)
                    yield Select([], prompt="preset", id="preset-select", allow_blank=True, compact=True)
                yield Static("loading jobs…", id="job-desc", markup=False)
                yield Static("", id="input-line", markup=False)
                yield ParamForm(id="form")
                with Horizontal(id="run-bar"):
                    yield Button("Run ^r", id="run", variant="success", disabled=True, compact=True)
                    yield Static("", id="form-status", markup=False)
            yield PreviewPane(id="preview")
        yield JobList(id="jobs")
        with Horizontal(id="info"):
            yield JobLog(id="log")
            yield JobSummary(id="summary")
        yield Footer(show_command_palette=False)

    def on_mount(self) -> None:
        self.query_one("#folders").border_title = "Folders"
        self.query_one("#job-pane").border_title = "Job"
        self.query_one("#jobs").border_title = "Jobs"
        self.query_one("#log").border_title = "Log"
        self.query_one("#preview").border_title = "Preview"
        self.query_one("#summary").border_title = "Job"
        self._update_input_line()
        self.query_one("#folders").focus()
        # background work starts after the first frame is on screen
        self.call_after_refresh(self._start_background)

    def _start_background(self) -> None:
        self._load_jobs()
        self.set_interval(POLL_S, self._tick)
        self._tick(force_scan=True)

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

    async def on_jobs_loaded(self, message: JobsLoaded) -> None:
        self.jobs = message.jobs
        for name, error in message.errors.items():
            # a job whose module is not in this install is simply not offered; one that
            # is there but fails to import is worth a word
            if not error.startswith("ModuleNotFoundError"):
                self.notify(f"job {name} is unavailable: {error}", severity="warning", timeout=8)
        select = self.query_one("#job-select", Select)
        select.set_options([(name, name) for name in self.jobs])
        if not self.jobs:
            self.query_one("#job-desc", Static).update("no job is available in this install")
            return
        first = "segment" if "segment" in self.jobs else next(iter(self.jobs))
        select.value = first

    @on(Select.Changed, "#job-select")
    async def _job_changed(self, event: Select.Changed) -> None:
        event.stop()
        name = None if event.value is Select.NULL else str(event.value)
        await self.set_job(name)

    async def set_job(self, name: str | None) -> None:
        """Show the form of job ``name`` (None: no job).

        One form is built at a time: a job picked while the previous form is still
        mounting waits for it (two interleaved rebuilds removed Selects in the middle
        of their mounting, which Textual does not survive); a pick made stale by a
        later one is skipped.
        """
        async with self._set_job_lock:
            if name != self.job_name and self.job_name is not None:
                return  # the picker moved on: its own set_job follows
            await self._set_job(name)

    async def _set_job(self, name: str | None) -> None:
        from segdeck.core.errors import SegdeckError
        from segdeck.core.params import load_presets

        cls = self.jobs.get(name) if name else None
        desc = self.query_one("#job-desc", Static)
        desc.update((cls.description or cls.__doc__ or name or "").strip().splitlines()[0] if cls else "pick a job")
        preset_select = self.query_one("#preset-select", Select)
        try:
            self.presets = load_presets(name) if cls else {}
        except SegdeckError as exc:
            self.presets = {"default": {}}
            self.notify(str(exc), severity="error")
        preset_select.set_options([(p, p) for p in self.presets])
        # the form is built with the defaults: the "default" preset is applied already
        self._applied_preset = "default" if "default" in self.presets else None
        if self._applied_preset:
            preset_select.value = "default"
        form = self.query_one(ParamForm)
        await form.set_model(cls.Params if cls else None)
        for field, text in FIELD_NOTES.get(name or "", {}).items():
            if form.spec(field) is not None:
                form.set_note(field, text)
        if name in CURVE_JOBS and form.spec(THRESHOLD_FIELD) is not None:
            form.set_note(THRESHOLD_FIELD, "Ctrl+T: pick it from the curve of a sample; "
                                           "empty = chosen automatically when the job runs")
        self.refresh_bindings()
        self._update_run_state()

    @on(Select.Changed, "#preset-select")
    def _preset_changed(self, event: Select.Changed) -> None:
        event.stop()
        form = self.query_one(ParamForm)
        if event.value is Select.NULL or form.model is None or event.value == self._applied_preset:
            return
        self._applied_preset = str(event.value)
        form.reset_defaults()
        form.apply_values(self.presets.get(str(event.value), {}))

    @property
    def job_name(self) -> str | None:
        value = self.query_one("#job-select", Select).value
        return None if value is Select.NULL else str(value)

    # ---- form state ------------------------------------------------------------------
    def on_param_form_validated(self, message: ParamForm.Validated) -> None:
        self._update_run_state()
        self._update_model_note()

    def _update_model_note(self) -> None:
        """Under a ``model`` field: cached or not (a ``stat``), and the key to change that."""
        form = self.query_one(ParamForm)
        if form.spec(MODEL_FIELD) is None:
            return
        name = form.raw_value(MODEL_FIELD)
        if not name:
            form.set_note(MODEL_FIELD, "")
            return
        from segdeck.core.errors import SegdeckError
        from segdeck.core.models import model_path
        from segdeck.tui.models import download_state

        try:
            cached = model_path(str(name)) is not None
        except SegdeckError:
            form.set_note(MODEL_FIELD, f"{name} is not a registered model", bad=True)
            return
        dl = download_state(str(name))
        if cached:
            form.set_note(MODEL_FIELD, f"{name}: cached ✓  (m: models)")
        elif dl is not None and dl.state == "running":
            form.set_note(MODEL_FIELD, f"{name}: download {dl.text()}  (m: models)")
        else:
            form.set_note(MODEL_FIELD, f"{name}: not cached; the job downloads it first (m: models, download)", bad=True)

    def _update_run_state(self) -> None:
        form = self.query_one(ParamForm)
        status = self.query_one("#form-status", Static)
        run = self.query_one("#run", Button)
        reason = ""
        if form.model is None:
            reason = "pick a job"
        elif form.params is None:
            bad = [k or "(form)" for k in form.errors]
            general = form.errors.get("")
            reason = f"invalid: {', '.join(bad)}" + (f" — {general}" if general else "")
        elif self.input_count == 0:
            reason = "no images in the selected folder"
        run.disabled = bool(reason)
        status.set_class(bool(reason), "bad")
        text = reason or f"ready: {self.input_path.name or self.input_path} → Ctrl+R"
        if str(status.content) != text:  # one fixed-size line: no re-layout of the screen
            status.update(text, layout=False)

    def on_folder_tree_folder_chosen(self, message: FolderTree.FolderChosen) -> None:
        self.input_path, self.input_count = message.path, message.count
        self._update_input_line()
        self._update_run_state()
        if self.query_one(FolderTree).has_focus:
            self._preview_folder(message.path)

    def on_descendant_focus(self, event) -> None:
        # back in the folder tree: the preview shows the chosen folder's images again
        if isinstance(event.widget, FolderTree) and self.query_one(PreviewPane).following is not None:
            self._preview_folder(self.input_path)

    def _preview_folder(self, folder: Path, force: bool = False) -> None:
        """The preview shows ``folder``'s images (while it is shown, or ``force``);
        ``v`` finds their overlays in the selected job's folder when that job ran on
        this folder (or one above it)."""
        preview = self.query_one(PreviewPane)
        if not preview.display and not force:
            return
        snap = self.query_one(JobList).selected_snapshot
        job_dir = root = None
        if snap is not None and snap.input and folder.is_relative_to(Path(snap.input)):
            job_dir, root = snap.job_dir, Path(snap.input)
        preview.open_folder(folder, job_dir, root)

    def _update_input_line(self) -> None:
        n = "counting…" if self.input_count is None else f"{self.input_count} images"
        self.query_one("#input-line", Static).update(f"input: {self.input_path}  ({n})")

    # ---- polling ---------------------------------------------------------------------
    def _tick(self, force_scan: bool = False) -> None:
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
        from segdeck.tui.models import any_running

        running = any_running()
        if running or self._downloads_running:  # a model download's progress under the field
            self._update_model_note()
        self._downloads_running = running
        if message.snapshots is None:
            self.log.error(message.new_lines.get("__error__"))
            return
        jobs = self.query_one(JobList)
        had_none = jobs.selected_job is None
        self._announce_finished(jobs.snapshots, message.snapshots)
        jobs.update_jobs(message.snapshots)
        if self._select_next is not None and self._select_next in jobs.snapshots:
            jobs.select_job(self._select_next)
            self._select_next = None
            self._show_job_log(jobs.selected_job)
            preview = self.query_one(PreviewPane)
            if preview.display:  # a job launched here: watch its outputs come
                preview.follow_job(jobs.selected_job)
        elif had_none and jobs.selected_job is not None:
            self._show_job_log(jobs.selected_job)
        log = self.query_one(JobLog)
        for job_dir, lines in message.new_lines.items():
            log.append(job_dir, lines)
        snap = jobs.selected_snapshot
        if snap is not None:
            summary = self.query_one(JobSummary)
            if summary.job_dir != snap.job_dir or snap != summary.snapshot:
                summary.show(snap)
            preview = self.query_one(PreviewPane)
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

    def on_job_list_chosen(self, message: JobList.Chosen) -> None:
        self._show_job_log(message.job_dir)
        jobs = self.query_one(JobList)
        snap = jobs.snapshots.get(message.job_dir)
        if snap is not None:
            self.query_one(JobSummary).show(snap)
        preview = self.query_one(PreviewPane)
        if snap is not None and snap.input and self.input_path.is_relative_to(Path(snap.input)):
            preview.set_job_dir(message.job_dir, Path(snap.input))
        if preview.display and (jobs.has_focus or preview.following is not None or not preview.images):
            preview.follow_job(message.job_dir)

    # ---- layout ----------------------------------------------------------------------
    #: Below these terminal sizes the screen gets the ``narrow`` / ``short`` classes
    #: (app.tcss: the preview pane hides, the form loses its hint lines).
    NARROW = 110
    SHORT = 32

    def on_resize(self, event) -> None:
        if (event.size.width < self.NARROW) != self.has_class("narrow") or (
                event.size.height < self.SHORT) != self.has_class("short"):
            self._apply_size(event.size.width, event.size.height)

    def _apply_size(self, width: int, height: int) -> None:
        self.set_class(width < self.NARROW, "narrow")
        self.set_class(height < self.SHORT, "short")

    def action_toggle_pane(self, pane: str) -> None:
        """Show or hide a pane (F2 folders, F3 preview, F4 log + job summary); the
        others take its room. A pane hidden by a small terminal is shown on request."""
        widget = self.query_one(f"#{pane}")
        hidden_by_size = pane == "preview" and self.has_class("narrow") and not widget.has_class("shown")
        if hidden_by_size or widget.has_class("hidden"):
            widget.remove_class("hidden")
            widget.add_class("shown")
        else:
            widget.add_class("hidden")
            widget.remove_class("shown")
        if pane == "preview" and widget.has_class("shown"):  # (display follows the CSS later)
            snap = self.query_one(JobList).selected_snapshot
            if snap is not None:
                widget.follow_job(snap.job_dir)
            else:
                self._preview_folder(self.input_path, force=True)

    def action_preview_view(self) -> None:
        """Cycle the preview between the image, its overlay and its label map."""
        preview = self.query_one(PreviewPane)
        if preview.following is not None:  # from a job's outputs back to the folder's images
            self._preview_folder(self.input_path)
            return
        preview.cycle_view()

    def action_preview_step(self, delta: int) -> None:
        self.query_one(PreviewPane).step(int(delta))

    def _show_job_log(self, job_dir: Path | None) -> None:
        if job_dir is None:
            return
        log = self.query_one(JobLog)
        if log.source == job_dir:
            return
        log.show(job_dir, self.watcher.lines(job_dir), title=f"Log — {job_dir.name}")

    # ---- actions ---------------------------------------------------------------------
    def action_focus(self, widget_id: str) -> None:
        widget = self.query_one(f"#{widget_id}")
        if isinstance(widget, ParamForm):  # the first field, not the scroll container
            first = next((w for w in widget.query("Input, Select, Switch") if w.focusable), None)
            widget = first or widget
        widget.focus()

    @on(Button.Pressed, "#run")
    def _run_pressed(self, event: Button.Pressed) -> None:
        event.stop()
        self.action_run()

    def action_run(self) -> None:
        """Launch the selected job on the selected folder with the form's values."""
        from segdeck.core.jobs.runner import job_dir_for

        form = self.query_one(ParamForm)
        name = self.job_name
        if self.query_one("#run", Button).disabled or name is None or form.params is None:
            self.notify(self.query_one("#form-status", Static).content or "cannot run yet", severity="warning")
            return
        cls = self.jobs[name]
        job_dir = job_dir_for(cls, form.params, self.input_path, None).resolve()
        snap = self.query_one(JobList).snapshots.get(job_dir)
        if snap is not None and snap.state in ("running", "starting"):
            self.notify(f"{job_dir.name} is already running", severity="warning")
            return
        cmd = launch.run_command(name, self.input_path, form.launch_values())
        self._start(cmd, job_dir, name, self.input_path)

    def action_resume_job(self) -> None:
        """Run the selected job again with its saved parameters (``job.toml``): an
        interrupted or cancelled run resumes, finished items are skipped."""
        snap = self._selected()
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
        self._tick(force_scan=True)

    def _selected(self) -> JobSnapshot | None:
        snap = self.query_one(JobList).selected_snapshot
        if snap is None:
            self.notify("no job selected", severity="warning")
        return snap

    def action_cancel_job(self) -> None:
        """SIGINT the selected job's process: it stops after the current item."""
        snap = self._selected()
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

    def action_open_output(self) -> None:
        """Open the selected job's folder in the file manager, or show and copy its path."""
        snap = self._selected()
        if snap is None:
            return
        path = str(snap.job_dir)
        if launch.open_in_file_manager(path):
            self.notify(f"opening {path}")
            return
        self.app.copy_to_clipboard(path)
        self.notify(f"{path}\n(path copied to the clipboard)", title="output folder", timeout=8)

    def action_toggle_log(self) -> None:
        """Switch the log pane between the job's events and the tail of its job.log."""
        log = self.query_one(JobLog)
        job = self.query_one(JobList).selected_job
        if job is None:
            return
        if log.source == job:
            log.show_text(("job.log", job), tail_log(job), title=f"job.log — {job.name}")
        else:
            log.source = None
            self._show_job_log(job)

    def action_rescan(self) -> None:
        self.query_one(FolderTree).rescan()
        self._tick(force_scan=True)

    def action_job_tool(self) -> None:
        """The form's threshold picker (``CURVE_JOBS``) or else the tool screen registered
        for the selected job's kind (``JOB_SCREENS``)."""
        jobs = self.query_one(JobList)
        on_job = jobs.has_focus and jobs.selected_snapshot is not None and jobs.selected_snapshot.job in JOB_SCREENS
        if self.job_name in CURVE_JOBS and not on_job:
            self.action_threshold()
            return
        snap = self._selected()
        if snap is None:
            return
        target = JOB_SCREENS.get(snap.job)
        if target is None:
            self.notify(f"no tool screen for {snap.job} jobs", severity="warning")
            return
        module, _, attr = target.partition(":")
        try:
            screen_cls = getattr(importlib.import_module(module), attr)
        except (ImportError, AttributeError):
            self.notify(f"the {snap.job} tool screen is not available in this install", severity="warning")
            return
        job_dir, job_name = snap.job_dir, snap.job

        async def apply(result) -> None:
            if not isinstance(result, dict):
                return
            if self.job_name != job_name and job_name in self.jobs:
                self.query_one("#job-select", Select).value = job_name
                await self.set_job(job_name)
            self.query_one(ParamForm).apply_values(result)
            self.notify("values applied to the form; Ctrl+R runs it")

        try:
            screen = screen_cls(job_dir=job_dir)
        except (ValueError, OSError) as exc:
            self.notify(str(exc), severity="warning")
            return
        self.app.push_screen(screen, apply)

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        if action == "threshold":  # dimmed in the footer for jobs without a curve
            return True if self.job_name in CURVE_JOBS else None
        return True

    # ---- threshold picker --------------------------------------------------------
    def action_threshold(self) -> None:
        """Compute the form's job's threshold curve on a sample (thread worker), then
        show the picker; the picked value goes into the ``threshold`` field."""
        name = self.job_name
        form = self.query_one(ParamForm)
        if name not in CURVE_JOBS:
            self.notify(f"{name or 'this job'} has no threshold picker", severity="warning")
            return
        method = form.raw_value("method")
        why = NO_CURVE_METHODS.get(name, {}).get(str(method))
        if why:
            self.notify(f"no threshold curve: method {method} does not use a similarity threshold ({why})",
                        severity="warning", timeout=8)
            return
        if form.params is None:
            self.notify("fix the parameters first: " + (self.query_one("#form-status", Static).content or ""),
                        severity="warning")
            return
        if self._curve_busy:
            self.notify("the threshold curve is being computed", severity="warning")
            return
        if self.input_count == 0:
            self.notify("no images in the selected folder", severity="warning")
            return
        self._curve_busy = True
        form.loading = True
        self.notify(f"computing the threshold curve ({form.params.method}) on a sample of {self.input_path.name}…",
                    timeout=4)
        self._compute_curve(name, self.input_path, form.params.model_copy(deep=True))

    @work(thread=True, exclusive=True, group="curve")
    def _compute_curve(self, name: str, input_path: Path, params) -> None:
        from segdeck.core.errors import SegdeckError
        from segdeck.core.jobs.events import Progress

        cancel = self._curve_cancel
        cancel.clear()
        last = [-1]

        def emit(event) -> None:
            if cancel.is_set():
                raise _CurveCancelled
            if isinstance(event, Progress) and event.total:
                pct = int(100 * event.done / event.total)
                if pct != last[0]:
                    last[0] = pct
                    self.post_message(CurveProgress(f"{event.what}: {event.done:g}/{event.total:g} (Esc stops)"))

        module, _, attr = CURVE_JOBS[name].partition(":")
        try:
            fn = getattr(importlib.import_module(module), attr)
            curve = fn(input_path, params, emit=emit)
        except _CurveCancelled:
            self.post_message(CurveReady(name, None, None))
        except (ValueError, SegdeckError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            self.post_message(CurveReady(name, None, first))
        except Exception as exc:  # noqa: BLE001 - one line, never a traceback in the UI
            first = (str(exc).strip().splitlines() or [""])[0]
            self.post_message(CurveReady(name, None, f"{type(exc).__name__}: {first}".rstrip(": ")))
        else:
            self.post_message(CurveReady(name, curve, None))

    def on_curve_progress(self, message: CurveProgress) -> None:
        if self._curve_busy:
            self.query_one("#form-status", Static).update(message.text)

    def action_escape(self) -> None:
        """Esc: stop the threshold curve while it is computed; in a text field of the
        form, leave the field (the focus goes to the form, so one-letter keys such as
        ``j`` work again); anywhere else the key goes on (a Select's menu closes).

        A priority binding: it runs before the keys typed after it reach the field.
        """
        if self._curve_busy:
            self._curve_cancel.set()
            return
        focused = self.focused
        form = self.query_one(ParamForm)
        if isinstance(focused, Input) and form in focused.ancestors:
            self.set_focus(form, scroll_visible=False)  # now: Widget.focus() waits a turn
            return
        raise SkipAction()

    def on_curve_ready(self, message: CurveReady) -> None:
        from segdeck.tui.screens.threshold import ThresholdScreen

        self._curve_busy = False
        form = self.query_one(ParamForm)
        form.loading = False
        self._update_run_state()
        if message.error is None and message.curve is None:
            self.notify("threshold curve stopped", severity="warning")
            return
        if message.error is not None or message.curve is None:
            self.notify(f"no threshold curve: {message.error}", severity="error", timeout=8)
            return
        current = form.value(THRESHOLD_FIELD)
        try:
            screen = ThresholdScreen(message.curve, start=current if isinstance(current, (int, float)) else None)
        except ValueError as exc:
            self.notify(f"no threshold curve: {exc}", severity="error")
            return
        job = message.job

        async def picked(value) -> None:
            if value is None:
                return
            if self.job_name != job:
                self.notify(f"the job changed: threshold {value:.4g} not applied", severity="warning")
                return
            self.query_one(ParamForm).apply_values({THRESHOLD_FIELD: float(value)})
            self.notify(f"threshold {value:.4g} set; Ctrl+R runs the job")

        self.app.push_screen(screen, picked)

    # ---- models --------------------------------------------------------------------
    def model_field(self) -> tuple[str, dict[str, str] | None] | None:
        """The form's field that holds a registered model, shown now: ``(field, names)``
        with ``names`` mapping model names to the field's values (None: the value is
        the model's name), or None when the job (or its chosen method) has none."""
        form = self.query_one(ParamForm)
        visible = {s.name for s in form.visible_specs()}
        if form.spec(MODEL_FIELD) is not None and MODEL_FIELD in visible:
            return MODEL_FIELD, None
        for field, (register, names) in EXTRA_MODEL_FIELDS.get(self.job_name or "", {}).items():
            if field in visible:
                if register:
                    module, _, attr = register.partition(":")
                    try:
                        getattr(importlib.import_module(module), attr)()
                    except Exception:  # noqa: BLE001 - not installed here: no models to offer
                        continue
                return field, names
        return None

    def action_models(self) -> None:
        """The model cache: state, downloads; Enter puts the model into the form's
        model field. Only offered where the job (with its chosen method) has one."""
        from segdeck.tui.screens.models import ModelScreen

        form = self.query_one(ParamForm)
        job = self.job_name
        found = self.model_field()
        if found is None:
            method = form.raw_value("method")
            what = f"{job} with method {method}" if job and method is not None else (job or "this job")
            self.notify(f"{what} uses no model: m lists models for jobs with a model field "
                        "(automask, segment with a SAM method, cluster with method deep)", severity="warning")
            return
        field, names = found
        spec = form.spec(field)
        if names is not None:
            choices = list(names)
            value = form.raw_value(field)
            current = next((n for n, v in names.items() if v == value), None)
        else:
            choices = [str(c) for c in spec.choices] if spec.kind == "choice" else None
            current = form.raw_value(field)

        def picked(name) -> None:
            self._update_model_note()
            if name is None or self.job_name != job:
                return
            if choices is not None and name not in choices:
                self.notify(f"{job} cannot use {name} for {field}", severity="warning")
                return
            form.apply_values(_nested(field, names[name] if names is not None else name))
            self.notify(f"{field} = {names[name] if names is not None else name}")

        self.app.push_screen(ModelScreen(choices, None if current is None else str(current)), picked)

    def action_annotate(self) -> None:
        """Open ``segdeck annotate`` on the selected folder; its saved files go to the log."""
        if not launch.annotate_available():
            self.notify("the annotate command is not available in this install", severity="warning")
            return
        from segdeck.core.oversegment import METHODS

        form = self.query_one(ParamForm)
        method = form.value("method")
        spec = form.spec("method")
        # annotate's own default unless the user picked another method: the cluster
        # form's "dup" is no segment source, and the segment job's default (slico) is
        # not annotate's (slic), whose sessions and annotate-<method>/ folder the CLI
        # uses; passing it would start a second set of sessions beside the CLI's
        if str(method) not in METHODS or (spec is not None and method == spec.default):
            method = None
        cmd = launch.annotate_command(ANNOTATE_MODE, self.input_path, str(method) if method else None)
        try:
            proc = launch.start_annotate(cmd)
        except OSError as exc:
            self.notify(f"could not start annotate: {exc}", severity="error")
            return
        self._annotate_lines = [LogLine(_now(), f"annotate {ANNOTATE_MODE} {self.input_path}", "title")]
        self.query_one(JobLog).show(ANNOTATE_SOURCE, self._annotate_lines, title="Log — annotate")
        self._follow_annotate(proc)

    @work(thread=True, group="annotate")
    def _follow_annotate(self, proc) -> None:
        for raw in proc.stdout:
            raw = raw.strip()
            if raw:
                self.post_message(AnnotateOutput([annotate_line(raw)]))
        rc = proc.wait()
        err = launch.stderr_tail(proc)
        if rc != 0:
            reason = err[-1] if err else f"exit code {rc}"
            self.post_message(AnnotateOutput([LogLine(_now(), f"annotate failed: {reason}", "error")]))
        else:
            self.post_message(AnnotateOutput([LogLine(_now(), "annotate finished", "title")]))
        self.app.call_from_thread(self.action_rescan)  # painted / total counts in the tree

    def on_annotate_output(self, message: AnnotateOutput) -> None:
        self._annotate_lines.extend(message.lines)
        self.query_one(JobLog).append(ANNOTATE_SOURCE, message.lines)
        for line in message.lines:
            if line.level == "error":
                self.notify(line.text, severity="error")


def _nested(dotted: str, value) -> dict:
    """``"a.b", 1`` -> ``{"a": {"b": 1}}`` (for :meth:`ParamForm.apply_values`)."""
    out: dict = {}
    node = out
    *head, last = dotted.split(".")
    for part in head:
        node = node.setdefault(part, {})
    node[last] = value
    return out


def _now() -> float:
    import time

    return time.time()


__all__ = ["CURVE_JOBS", "JOB_SCREENS", "MODEL_FIELD", "CurveReady", "MainScreen", "annotate_line"]
