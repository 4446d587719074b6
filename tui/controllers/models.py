"""The form's model field: its cache note and the model picker (``m``)."""

from __future__ import annotations

from segdeck.tui import hooks
from segdeck.tui.controllers.base import Controller
from segdeck.tui.widgets.param_form import ParamForm


class ModelPicker(Controller):
    """Says under the form's model field whether that model is cached (or downloading)
    and opens :class:`~segdeck.tui.screens.models.ModelScreen` to pick another.

    Which fields hold a model is the job's declaration (``tui_model_field``,
    ``tui_extra_model_fields``, see :mod:`segdeck.tui.hooks`); the screen sets
    :attr:`job_cls` when its form changes job.
    """

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        #: The class of the form's job (None: no job).
        self.job_cls: type | None = None
        self._downloads_running = False

    @property
    def form(self) -> ParamForm:
        return self.screen.query_one(ParamForm)

    def model_field(self) -> tuple[str, dict[str, str] | None] | None:
        """The form's field that holds a registered model, shown now.

        Returns
        -------
        tuple or None
            ``(field, names)`` with ``names`` mapping model names to the field's values
            (None: the value is the model's name), or None when the job (or its chosen
            method) has none.
        """
        form = self.form
        visible = {s.name for s in form.visible_specs()}
        main = hooks.model_field(self.job_cls)
        if main and form.spec(main) is not None and main in visible:
            return main, None
        for field, (register, names, *rest) in hooks.extra_model_fields(self.job_cls).items():
            when = rest[0] if rest else {}
            if any(form.raw_value(other) not in values for other, values in when.items()):
                continue
            if field in visible:
                if register:
                    try:
                        hooks.load(register)()
                    except Exception:  # noqa: BLE001 - not installed here: no models to offer
                        continue
                return field, names
        return None

    def update_note(self) -> None:
        """Under the job's model field: cached or not (a ``stat``), and the key to change that."""
        form = self.form
        field = hooks.model_field(self.job_cls)
        if not field or form.spec(field) is None:
            return
        name = form.raw_value(field)
        if not name:
            form.set_note(field, "")
            return
        from segdeck.core.errors import SegdeckError
        from segdeck.core.models import model_path
        from segdeck.tui.models import download_state

        try:
            cached = model_path(str(name)) is not None
        except SegdeckError:
            form.set_note(field, f"{name} is not a registered model", bad=True)
            return
        dl = download_state(str(name))
        if cached:
            form.set_note(field, f"{name}: cached ✓  (m: models)")
        elif dl is not None and dl.state == "running":
            form.set_note(field, f"{name}: download {dl.text()}  (m: models)")
        else:
            form.set_note(field, f"{name}: not cached; the job downloads it first (m: models, download)", bad=True)

    def follow_downloads(self) -> None:
        """Called on each poll: while a model download runs (and once after), its
        progress goes under the field."""
        from segdeck.tui.models import any_running

        running = any_running()
        if running or self._downloads_running:
            self.update_note()
        self._downloads_running = running

    def pick(self, job: str | None, jobs: dict[str, type]) -> None:
        """Open the model cache screen; Enter there puts the model into the form's
        model field. Only offered where the job (with its chosen method) has one.

        Parameters
        ----------
        job : str or None
            The form's job (the pick is dropped when the form changed job meanwhile).
        jobs : dict
            The job classes by name (a form without a model field names those with one).
        """
        from segdeck.tui.screens.models import ModelScreen

        form = self.form
        found = self.model_field()
        if found is None:
            method = form.raw_value("method")
            what = f"{job} with method {method}" if job and method is not None else (job or "this job")
            with_models = ", ".join(n for n, c in jobs.items() if hooks.offers_models(c)) or "none here"
            self.notify(f"{what} uses no model: m lists models for jobs with a model field ({with_models}; "
                        "some only with a method that uses one)", severity="warning")
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
