"""The form's model field: its cache note and the model picker (``m``)."""

from __future__ import annotations

import importlib

from segdeck.tui.controllers.base import Controller
from segdeck.tui.hooks import EXTRA_MODEL_FIELDS, MODEL_FIELD
from segdeck.tui.widgets.param_form import ParamForm


class ModelPicker(Controller):
    """Says under the form's model field whether that model is cached (or downloading)
    and opens :class:`~segdeck.tui.screens.models.ModelScreen` to pick another."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self._downloads_running = False

    @property
    def form(self) -> ParamForm:
        return self.screen.query_one(ParamForm)

    def model_field(self, job: str | None) -> tuple[str, dict[str, str] | None] | None:
        """The form's field that holds a registered model, shown now.

        Parameters
        ----------
        job : str or None
            The form's job.

        Returns
        -------
        tuple or None
            ``(field, names)`` with ``names`` mapping model names to the field's values
            (None: the value is the model's name), or None when the job (or its chosen
            method) has none.
        """
        form = self.form
        visible = {s.name for s in form.visible_specs()}
        if form.spec(MODEL_FIELD) is not None and MODEL_FIELD in visible:
            return MODEL_FIELD, None
        for field, (register, names) in EXTRA_MODEL_FIELDS.get(job or "", {}).items():
            if field in visible:
                if register:
                    module, _, attr = register.partition(":")
                    try:
                        getattr(importlib.import_module(module), attr)()
                    except Exception:  # noqa: BLE001 - not installed here: no models to offer
                        continue
                return field, names
        return None

    def update_note(self) -> None:
        """Under a ``model`` field: cached or not (a ``stat``), and the key to change that."""
        form = self.form
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

    def follow_downloads(self) -> None:
        """Called on each poll: while a model download runs (and once after), its
        progress goes under the field."""
        from segdeck.tui.models import any_running

        running = any_running()
        if running or self._downloads_running:
            self.update_note()
        self._downloads_running = running

    def pick(self, job: str | None) -> None:
        """Open the model cache screen; Enter there puts the model into the form's
        model field. Only offered where the job (with its chosen method) has one."""
        from segdeck.tui.screens.models import ModelScreen

        form = self.form
        found = self.model_field(job)
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
        screen = self.screen

        def picked(name) -> None:
            self.update_note()
            if name is None or screen.job_name != job:
                return
            if choices is not None and name not in choices:
                self.notify(f"{job} cannot use {name} for {field}", severity="warning")
                return
            form.apply_values(nested(field, names[name] if names is not None else name))
            self.notify(f"{field} = {names[name] if names is not None else name}")

        self.app.push_screen(ModelScreen(choices, None if current is None else str(current)), picked)


def nested(dotted: str, value) -> dict:
    """``"a.b", 1`` -> ``{"a": {"b": 1}}`` (for :meth:`ParamForm.apply_values`)."""
    out: dict = {}
    node = out
    *head, last = dotted.split(".")
    for part in head:
        node = node.setdefault(part, {})
    node[last] = value
    return out


__all__ = ["ModelPicker", "nested"]
