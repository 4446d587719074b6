"""The main screen: folders, job picker + parameter form + Run, job list, log.

This module is the screen's layout, its key bindings and the form; the work behind
the keys lives in controllers (:mod:`segdeck.tui.controllers`), widgets without a look
mounted in the screen, whose thread workers only post messages:
:class:`~segdeck.tui.controllers.jobs.JobsController` (job classes, polling, run /
re-run / cancel), :class:`~segdeck.tui.controllers.curve.CurveController` (the
threshold curve), :class:`~segdeck.tui.controllers.annotate.AnnotateController`
(``segdeck annotate``) and :class:`~segdeck.tui.controllers.models.ModelPicker` (the
model field). The preview pane, the job summary and the log are widgets of their own
(:mod:`segdeck.tui.widgets`); the styles are in ``app.tcss``.

What a job offers here (a threshold curve, a tool screen, a model field, notes under
fields) is declared by the job class (its ``tui_*`` attributes, read through
:mod:`segdeck.tui.hooks`): no job name appears in this screen's code.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from textual import on
from textual.actions import SkipAction
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.screen import Screen
from textual.widgets import Button, Footer, Header, Input, Select, Static

from segdeck.tui import hooks, launch
from segdeck.tui.controllers.annotate import (
    ANNOTATE_SOURCE,
    AnnotateController,
    AnnotateFinished,
    AnnotateOutput,
)
from segdeck.tui.controllers.curve import CurveController, CurveProgress, CurveReady
from segdeck.tui.controllers.jobs import (
    POLL_S,
    InputChecked,
    JobsController,
    JobsLoaded,
    JobsPolled,
)
from segdeck.tui.controllers.models import ModelPicker, nested
from segdeck.tui.hooks import ANNOTATE_MODE
from segdeck.tui.jobwatch import JobSnapshot, tail_log
from segdeck.tui.launch import annotate_line
from segdeck.tui.widgets.folder_tree import FolderTree
from segdeck.tui.widgets.job_list import JobList
from segdeck.tui.widgets.job_log import JobLog
from segdeck.tui.widgets.job_summary import JobSummary
from segdeck.tui.widgets.param_form import ParamForm
from segdeck.tui.widgets.preview import PreviewPane


class MainScreen(Screen):
    """Folders | job form; job list; log.

    Parameters
    ----------
    root : Path
        The folder to browse; the job folders under it are followed.
    **kwargs
        Passed to :class:`textual.screen.Screen`.
    """
    BINDINGS = [
        Binding("ctrl+r", "run", "Run", priority=True),
        Binding("x", "cancel_job", "Cancel job"),
        Binding("e", "resume_job", "Resume/re-run job", show=False),
        Binding("o", "open_output", "Open output"),
        Binding("l", "toggle_log", "Log/job.log"),
        Binding("a", "annotate", "Annotate"),
        Binding("w", "view_results", "View results"),
        Binding("ctrl+t", "threshold", "Threshold picker", priority=True),
        Binding("t", "job_tool", "Threshold picker / job tool", show=False),
        Binding("m", "models", "Models"),
        Binding("s", "switch_job", "Switch job"),
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
        self.input_path: Path = self.root
        self.input_count: int | None = None
        #: The input is a file (a CSV, a spec file) picked in the folder tree, not a folder.
        self.input_is_file = False
        #: input path -> {job name: why it does not take it, None when it does}
        self.input_problems: dict[Path, dict[str, str | None]] = {}
        self._checking: set[Path] = set()
        #: The job ``s`` switches to: one that takes the selected input the form's job refuses.
        self.offered_job: str | None = None
        self.presets: dict[str, dict] = {}
        self._applied_preset: str | None = None
        self._set_job_lock = asyncio.Lock()
        self.jobs_ctl = JobsController(self.root, id="jobs-ctl")
        self.curve = CurveController(id="curve-ctl")
        self.annotator = AnnotateController(id="annotate-ctl")
        self.models = ModelPicker(id="models-ctl")

    @property
    def jobs(self) -> dict[str, type]:
        """The importable job classes by name (empty until they are loaded)."""
        return self.jobs_ctl.jobs

    @property
    def watcher(self):
        """The :class:`~segdeck.tui.jobwatch.JobWatcher` of the job folders."""
        return self.jobs_ctl.watcher

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
        yield self.jobs_ctl
        yield self.curve
        yield self.annotator
        yield self.models

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
        self.call_after_refresh(self.jobs_ctl.start)

    # ---- job picker ------------------------------------------------------------------
    def on_jobs_loaded(self, message: JobsLoaded) -> None:
        self.jobs_ctl.jobs = message.jobs
        select = self.query_one("#job-select", Select)
        select.set_options([(name, name) for name in self.jobs])
        if not self.jobs:
            self.query_one("#job-desc", Static).update("no job is available in this install")
            return
        select.value = next(iter(self.jobs))  # the registry's first (segment), extra jobs after
        # the input files the jobs take (a CSV, a spec file) are listed in the folder tree
        self.query_one(FolderTree).set_file_suffixes({x for c in self.jobs.values() for x in hooks.input_files(c)})

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
        self.models.job_cls = cls
        self.models.update_note()  # now, not on the form's first Validated message
        for field, text in hooks.field_notes(cls).items():
            if form.spec(field) is not None:
                form.set_note(field, text)
        threshold = hooks.curve_field(cls)
        if hooks.curve(cls) and form.spec(threshold) is not None:
            form.set_note(threshold, "Ctrl+T: pick it from the curve of a sample; "
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
    def job_class(self) -> type | None:
        """The class of the form's job (None: no job picked)."""
        name = self.job_name
        return self.jobs.get(name) if name else None

    @property
    def job_name(self) -> str | None:
        value = self.query_one("#job-select", Select).value
        return None if value is Select.NULL else str(value)

    # ---- form state ------------------------------------------------------------------
    def on_param_form_validated(self, message: ParamForm.Validated) -> None:
        self._update_run_state()
        self.models.update_note()

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
        else:
            reason = self._input_reason() or ""
        if form.model is not None:  # the offer does not need valid values
            offer = self._offer()
            if offer != self.offered_job:
                self.offered_job = offer
                self.refresh_bindings()
            if offer and reason and not (form.params is None and reason.startswith("invalid")):
                # the key first, then the form's job's reason in short: a status line
                # is one line, cut at a narrow terminal
                reason = f"s: switch to {offer} · " + (reason if reason.startswith(f"{self.job_name}: ")
                                                         else f"{self.job_name}: {reason}")
        run.disabled = bool(reason)
        status.set_class(bool(reason), "bad")
        text = reason or f"ready: {self.input_path.name or self.input_path} → Ctrl+R"
        if str(status.content) != text:  # one fixed-size line: no re-layout of the screen
            status.update(text, layout=False)
            status.tooltip = text if reason else None  # the whole line, where a mouse is

    def _input_reason(self) -> str | None:
        """Why the form's job cannot run on the selected input (None: it can). A folder
        for an image job: its image count answers; a file, or a job with its own
        ``check_input``: the job's check, run in a worker (:meth:`_request_check`)."""
        name, cls, path = self.job_name, self.job_class, self.input_path
        if not (self.input_is_file or hooks.checks_input(cls)):
            return "no images in the selected folder" if self.input_count == 0 else None
        problems = self.input_problems.get(path)
        if problems is None or name not in problems:
            self._request_check(path)
            return "checking the input…"
        why = problems[name]
        if why is None:
            return None
        return f"{name}: {self._short_why(why)}"  # the reason in the 37 cells of 80 columns

    def _short_why(self, why: str) -> str:
        """A job's refusal without the input's path in front (the input line shows it):
        the status line is one line, 37 cells beside Run on an 80-column terminal."""
        for prefix in (str(self.input_path), self.input_path.name):
            if prefix and why.startswith(prefix + ": "):
                return why[len(prefix) + 2:]
        return why

    def takers(self) -> list[str] | None:
        """The jobs that take the selected input, in the picker's order (None: not known
        yet). A file: the jobs' checks; a folder: its image count for the image jobs, the
        checks for the jobs with their own."""
        problems = self.input_problems.get(self.input_path)
        out = []
        for name, cls in self.jobs.items():
            if self.input_is_file or hooks.checks_input(cls):
                if problems is None or name not in problems:
                    return None
                if problems[name] is None:
                    out.append(name)
            elif self.input_count is None:
                return None
            elif self.input_count > 0:
                out.append(name)
        return out

    def _offer(self) -> str | None:
        """The job ``s`` switches to: the first job that takes the selected input when
        the form's job does not (None: it does, no job does, or not known yet)."""
        name = self.job_name
        takers = self.takers()
        if name is None or not takers or name in takers:
            return None
        if self.input_is_file or hooks.checks_input(self.job_class):
            problems = self.input_problems.get(self.input_path) or {}
            if problems.get(name, "") is None:
                return None
        return takers[0]

    async def action_switch_job(self) -> None:
        """Show the form of the job that takes the selected input (:meth:`_offer`)."""
        offer = self._offer()
        if offer is None:
            self.notify("the form's job takes this input" if self.job_name in (self.takers() or [])
                        else "no job takes this input", severity="warning")
            return
        self.query_one("#job-select", Select).value = offer
        await self.set_job(offer)

    def _request_check(self, path: Path) -> None:
        """Ask every job (a file) or the jobs with their own check (a folder) whether
        they take ``path``; :meth:`on_input_checked` gets the answer."""
        if path in self._checking or not self.jobs:
            return
        self._checking.add(path)
        names = [n for n, c in self.jobs.items() if self.input_is_file or hooks.checks_input(c)]
        self.jobs_ctl.check_input(path, names)

    def on_input_checked(self, message: InputChecked) -> None:
        self._checking.discard(message.path)
        self.input_problems.setdefault(message.path, {}).update(message.problems)
        if message.path == self.input_path:
            self._update_input_line()
            self._update_run_state()

    def on_folder_tree_folder_chosen(self, message: FolderTree.FolderChosen) -> None:
        self.input_path, self.input_count = message.path, message.count
        self.input_is_file = message.is_file
        self.query_one(JobList).set_focus_input(message.path)
        self._update_input_line()
        self._update_run_state()
        if self.query_one(FolderTree).has_focus and not message.is_file:
            self._preview_folder(message.path)

    def on_descendant_focus(self, event) -> None:
        # back in the folder tree: the preview shows the chosen folder's images again
        if isinstance(event.widget, FolderTree) and self.query_one(PreviewPane).following is not None \
                and not self.input_is_file:
            self._preview_folder(self.input_path)

    def _preview_folder(self, folder: Path, force: bool = False) -> None:
        """The preview shows ``folder``'s images (while it is shown, or ``force``);
        ``v`` finds their overlays in the selected job's folder when that job ran on
        this folder (or one above it)."""
        preview = self.query_one(PreviewPane)
        if not preview.display and not force:
            return
        if self.input_is_file and folder == self.input_path:  # a CSV or spec file: its folder's images
            folder = folder.parent
        snap = self.query_one(JobList).selected_snapshot
        job_dir = root = None
        if snap is not None and snap.input and folder.is_relative_to(Path(snap.input)):
            job_dir, root = snap.job_dir, Path(snap.input)
        preview.open_folder(folder, job_dir, root)

    def _update_input_line(self) -> None:
        if self.input_is_file:
            problems = self.input_problems.get(self.input_path) or {}
            takers = [n for n, p in problems.items() if p is None]
            n = f"input for: {', '.join(takers)}" if takers else ("no job takes it" if problems else "file")
        else:
            n = "counting…" if self.input_count is None else f"{self.input_count} images"
        # under the root: from the root's name on, so the "(...)" part fits at 80 columns
        shown = self.input_path
        if self.input_path.is_relative_to(self.root) and self.root.name:
            shown = Path(self.root.name) / self.input_path.relative_to(self.root)
        self.query_one("#input-line", Static).update(f"input: {shown} ({n})")

    # ---- polling ---------------------------------------------------------------------
    def on_jobs_polled(self, message: JobsPolled) -> None:
        # after the jobs controller has shown the poll: a model download's progress
        self.models.follow_downloads()

    def on_job_list_chosen(self, message: JobList.Chosen) -> None:
        self.jobs_ctl.show_job_log(message.job_dir)
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
        form = self.query_one(ParamForm)
        name = self.job_name
        if self.query_one("#run", Button).disabled or name is None or form.params is None:
            self.notify(self.query_one("#form-status", Static).content or "cannot run yet", severity="warning")
            return
        self.jobs_ctl.run(name, form.params, self.input_path, form.launch_values())

    def action_resume_job(self) -> None:
        """Run the selected job again with its saved parameters (``job.toml``): an
        interrupted or cancelled run resumes, finished items are skipped."""
        self.jobs_ctl.resume()

    def action_cancel_job(self) -> None:
        """SIGINT the selected job's process: it stops after the current item."""
        self.jobs_ctl.cancel()

    def _selected(self) -> JobSnapshot | None:
        return self.jobs_ctl.selected()

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
            self.jobs_ctl.show_job_log(job)

    def action_rescan(self) -> None:
        self.input_problems.clear()  # files and folders may have changed: ask the jobs again
        self.query_one(FolderTree).rescan()
        self.jobs_ctl.tick(force_scan=True)

    def action_job_tool(self) -> None:
        """The form's threshold picker (the job's ``tui_curve``) or else the tool screen
        the selected job's kind declares (``tui_tool_screen``)."""
        jobs = self.query_one(JobList)
        selected = jobs.selected_snapshot
        on_job = jobs.has_focus and selected is not None and bool(hooks.tool_screen(self.jobs.get(selected.job)))
        if hooks.curve(self.job_class) and not on_job:
            self.action_threshold()
            return
        snap = self._selected()
        if snap is None:
            return
        target = hooks.tool_screen(self.jobs.get(snap.job))
        if not target:
            self.notify(f"no tool screen for {snap.job} jobs", severity="warning")
            return
        try:
            screen_cls = hooks.load(target)
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
            return True if hooks.curve(self.job_class) else None
        if action == "switch_job":  # in the footer only while a job is offered
            return bool(self.offered_job)
        return True

    # ---- threshold picker --------------------------------------------------------
    def action_threshold(self) -> None:
        """Compute the form's job's threshold curve on a sample (the curve controller's
        worker), then show the picker; the picked value goes into the ``threshold`` field."""
        name, cls = self.job_name, self.job_class
        form = self.query_one(ParamForm)
        if not hooks.curve(cls):
            self.notify(f"{name or 'this job'} has no threshold picker", severity="warning")
            return
        method = form.raw_value("method")
        why = hooks.no_curve_reason(cls, method)
        if why:
            self.notify(f"no threshold curve: method {method} does not use a similarity threshold ({why})",
                        severity="warning", timeout=8)
            return
        if form.params is None:
            self.notify("fix the parameters first: " + (self.query_one("#form-status", Static).content or ""),
                        severity="warning")
            return
        if self.curve.busy:
            self.notify("the threshold curve is being computed", severity="warning")
            return
        if self.input_count == 0:
            self.notify("no images in the selected folder", severity="warning")
            return
        form.loading = True
        self.notify(f"computing the threshold curve ({form.params.method}) on a sample of {self.input_path.name}…",
                    timeout=4)
        self.curve.start(name, hooks.curve(cls), self.input_path, form.params.model_copy(deep=True))

    def on_curve_progress(self, message: CurveProgress) -> None:
        if self.curve.busy:
            self.query_one("#form-status", Static).update(message.text)

    def action_escape(self) -> None:
        """Esc: stop the threshold curve while it is computed; in a text field of the
        form, leave the field (the focus goes to the form, so one-letter keys such as
        ``j`` work again); anywhere else the key goes on (a Select's menu closes).

        A priority binding: it runs before the keys typed after it reach the field.
        """
        if self.curve.stop():
            return
        focused = self.focused
        form = self.query_one(ParamForm)
        if isinstance(focused, Input) and form in focused.ancestors:
            self.set_focus(form, scroll_visible=False)  # now: Widget.focus() waits a turn
            return
        raise SkipAction()

    def on_curve_ready(self, message: CurveReady) -> None:
        from segdeck.tui.screens.threshold import ThresholdScreen

        form = self.query_one(ParamForm)
        form.loading = False
        self._update_run_state()
        if message.error is None and message.curve is None:
            self.notify("threshold curve stopped", severity="warning")
            return
        if message.error is not None or message.curve is None:
            self.notify(f"no threshold curve: {message.error}", severity="error", timeout=8)
            return
        field = hooks.curve_field(self.jobs.get(message.job))
        current = form.value(field)
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
            self.query_one(ParamForm).apply_values(nested(field, float(value)))
            self.notify(f"threshold {value:.4g} set; Ctrl+R runs the job")

        self.app.push_screen(screen, picked)

    # ---- models, annotate ------------------------------------------------------------
    def model_field(self) -> tuple[str, dict[str, str] | None] | None:
        """The form's field that holds a registered model, shown now (see
        :meth:`ModelPicker.model_field`)."""
        return self.models.model_field()

    def action_models(self) -> None:
        """The model cache: state, downloads; Enter puts the model into the form's
        model field. Only offered where the job (with its chosen method) has one."""
        self.models.pick(self.job_name, self.jobs)

    def action_annotate(self) -> None:
        """Open ``segdeck annotate`` on the selected folder (``paint``), or on the selected
        input file in the mode a job that takes it declares (``tui_annotate``: ``refs``
        on a propagation spec); its saved files go to the log."""
        from segdeck.core.oversegment import METHODS

        if self.input_is_file:
            self._annotate_file(self.input_path)
            return
        form = self.query_one(ParamForm)
        method = form.value("method")
        spec = form.spec("method")
        # annotate's own default unless the user picked another method: the cluster
        # form's "dup" is no segment source, and the segment job's default (slico) is
        # not annotate's (slic), whose sessions and annotate-<method>/ folder the CLI
        # uses; passing it would start a second set of sessions beside the CLI's
        if str(method) not in METHODS or (spec is not None and method == spec.default):
            method = None
        self.annotator.launch(ANNOTATE_MODE, self.input_path, str(method) if method else None)

    def _annotate_file(self, path: Path) -> None:
        """``segdeck annotate MODE FILE`` for the first job (the form's first) that takes
        ``path`` and declares an annotate mode for it."""
        names = sorted(self.jobs, key=lambda n: n != self.job_name)
        known = self.input_problems.get(path, {})  # the worker's answers, when they are in
        for name in names:
            mode = hooks.annotate_mode(self.jobs[name])
            if not mode:
                continue
            why = known[name] if name in known else hooks.input_problem(self.jobs[name], path)
            if why is None:
                self.annotator.launch(mode, path, None, self._annotate_options(name))
                return
        self.notify(f"no annotate window for {path.name} (a folder or an image opens annotate paint)",
                    severity="warning")

    def _annotate_options(self, name: str) -> list[str]:
        """``[OPTION, VALUE, ...]`` from the form for job ``name``'s annotate window: the
        fields it declares (``tui_annotate_fields``) that the form has and that hold a
        value; none when the form is another job's."""
        if name != self.job_name:
            return []
        form = self.query_one(ParamForm)
        options: list[str] = []
        for field, option in hooks.annotate_fields(self.jobs.get(name)).items():
            if form.spec(field) is None:
                continue
            value = form.value(field)
            if value is not None and str(value) != "":
                options += [option, str(value)]
        return options

    def action_view_results(self) -> None:
        """Open ``segdeck view`` on the selected job's folder: its results in a window."""
        snap = self._selected()
        if snap is None:
            return
        if not launch.view_available():
            self.notify("the view command is not available in this install", severity="warning")
            return
        self.annotator.start(launch.view_command(snap.job_dir), "view", f"view {snap.job_dir}")

    def on_annotate_finished(self, message: AnnotateFinished) -> None:
        self.action_rescan()  # painted / total counts in the tree


__all__ = ["ANNOTATE_SOURCE", "POLL_S", "AnnotateOutput", "CurveReady", "MainScreen", "annotate_line"]
