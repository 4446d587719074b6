"""The parameter form, generated from a job's pydantic params model.

One row per leaf field of :func:`segdeck.core.params.field_specs`: an ``Input`` for
int / float / str / list values, a ``Switch`` for bools, a ``Select`` for ``Literal``
choices; the description and range as a hint; the pydantic error (if any) under the
field. Nested sections are grouped under their name. A model with a ``method``
choice field and sections named like its choices (the ``segment`` job) shows only the
section of the chosen method.

Every change validates the whole model and posts :class:`ParamForm.Validated`.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby
from typing import Any

from pydantic import BaseModel, ValidationError
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.message import Message
from textual.widgets import Input, Label, Select, Static, Switch

from segdeck.core.params import FieldSpec, field_specs, get_dotted, parse_scalar, set_dotted
from segdeck.tui.launch import toml_value

METHOD_FIELD = "method"


def field_id(name: str) -> str:
    """Widget id of a parameter's input (dots are not allowed in ids)."""
    return "p-" + name.replace(".", "--")


def range_text(spec: FieldSpec) -> str:
    """``[1, 500]``, ``(0, 1]``, ``>= 0`` ... or ``""`` when unbounded."""
    lo = spec.ge if spec.ge is not None else spec.gt
    hi = spec.le if spec.le is not None else spec.lt
    if lo is not None and hi is not None:
        return f"{'[' if spec.ge is not None else '('}{lo:g}, {hi:g}{']' if spec.le is not None else ')'}"
    if lo is not None:
        return f"{'>=' if spec.ge is not None else '>'} {lo:g}"
    if hi is not None:
        return f"{'<=' if spec.le is not None else '<'} {hi:g}"
    return ""


def method_sections(specs: list[FieldSpec]) -> tuple[str | None, set[str]]:
    """The method field's name and the sections that belong to one method choice.

    A model qualifies when it has a top-level choice field named ``method`` and at
    least one nested section whose name is one of the choices.
    """
    method = next((s for s in specs if s.name == METHOD_FIELD and s.kind == "choice"), None)
    if method is None:
        return None, set()
    groups = {s.group for s in specs if s.group}
    sections = {str(c) for c in method.choices} & groups
    return (METHOD_FIELD, sections) if sections else (None, set())


class ParamForm(VerticalScroll):
    """Form for one job's parameters."""

    @dataclass
    class Validated(Message):
        """Posted after every change: ``params`` is the model, or None with ``errors``."""

        form: ParamForm
        params: BaseModel | None
        errors: dict

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.model: type[BaseModel] | None = None
        self.specs: list[FieldSpec] = []
        self.params: BaseModel | None = None
        self.errors: dict[str, str] = {}
        self._method_sections: set[str] = set()
        self._loading = False

    # ---- building ------------------------------------------------------------------
    async def set_model(self, model: type[BaseModel] | None, values: dict | None = None) -> None:
        """Rebuild the form for ``model`` filled with defaults overridden by ``values``."""
        self._loading = True
        await self.remove_children()
        self.model = model
        self.specs = field_specs(model) if model is not None else []
        _, self._method_sections = method_sections(self.specs)
        if model is None:
            self.params, self.errors = None, {}
            self._loading = False
            return
        widgets = []
        for group, members in groupby(self.specs, key=lambda s: s.group):
            rows = [self._field_row(spec) for spec in members]
            if group:
                widgets.append(Vertical(Static(group, classes="section-title", markup=False), *rows,
                                        classes="section", id=f"sec-{group.replace('.', '--')}"))
            else:
                widgets.extend(rows)
        await self.mount_all(widgets)
        if values:
            self.apply_values(values)
        self._loading = False
        self._update_visibility()
        self.revalidate()

    def _field_row(self, spec: FieldSpec) -> Vertical:
        fid = field_id(spec.name)
        leaf = spec.name.rpartition(".")[2]
        if spec.kind == "bool":
            widget = Switch(value=bool(spec.default), id=fid)
        elif spec.kind == "choice":
            options = [(str(c), c) for c in spec.choices]
            widget = Select(options, value=spec.default if spec.default in spec.choices else Select.NULL,
                            allow_blank=spec.optional or spec.default not in spec.choices, id=fid,
                            compact=True)
        else:
            widget = Input(value=self._text(spec, spec.default), id=fid, placeholder=spec.kind, compact=True)
        hint = spec.description
        rng = range_text(spec)
        if rng:
            hint = f"{hint}  {rng}" if hint else rng
        return Vertical(
            Horizontal(Label(leaf, classes="field-name"), widget, classes="field-line"),
            Static(hint, classes="hint", markup=False),
            Static("", classes="error", id=f"err-{fid}", markup=False),
            classes="field",
            id=f"row-{fid}",
        )

    @staticmethod
    def _text(spec: FieldSpec, value: Any) -> str:
        if value is None:
            return ""
        if spec.kind in ("int", "float", "str"):
            return str(value)
        try:
            return toml_value(value)
        except (TypeError, ValueError):
            return str(value)

    # ---- values --------------------------------------------------------------------
    def widget_for(self, name: str):
        return self.query_one(f"#{field_id(name)}")

    def apply_values(self, values: dict) -> None:
        """Set widgets from a nested dict (a preset, a tool screen's result); unknown
        keys are ignored."""
        for spec in self.specs:
            try:
                value = get_dotted(values, spec.name)
            except (KeyError, TypeError, AttributeError):
                continue
            self._set_widget(spec, value)
        self._update_visibility()
        self.revalidate()

    def reset_defaults(self) -> None:
        for spec in self.specs:
            self._set_widget(spec, spec.default)
        self._update_visibility()
        self.revalidate()

    def _set_widget(self, spec: FieldSpec, value: Any) -> None:
        widget = self.widget_for(spec.name)
        if isinstance(widget, Switch):
            widget.value = bool(value)
        elif isinstance(widget, Select):
            widget.value = value if value in spec.choices else Select.NULL
        else:
            widget.value = self._text(spec, value)

    def _raw(self, spec: FieldSpec) -> Any:
        widget = self.widget_for(spec.name)
        if isinstance(widget, Switch):
            return widget.value
        if isinstance(widget, Select):
            return None if widget.value is Select.NULL else widget.value
        text = widget.value.strip()
        if text == "" and (spec.optional or spec.kind != "str"):
            return None if spec.optional else text
        if spec.kind in ("int", "float", "str"):
            return widget.value if spec.kind == "str" else text
        return parse_scalar(text)

    def visible_specs(self) -> list[FieldSpec]:
        """Fields that belong to the current choice of method (all of them otherwise)."""
        if not self._method_sections:
            return list(self.specs)
        chosen = self._current_method()
        return [s for s in self.specs if s.group not in self._method_sections or s.group == chosen]

    def _current_method(self) -> str | None:
        try:
            widget = self.widget_for(METHOD_FIELD)
        except Exception:  # noqa: BLE001 - form being rebuilt
            return None
        return None if widget.value is Select.NULL else str(widget.value)

    def data(self) -> dict:
        """The nested dict of the visible fields' current (unvalidated) values."""
        data: dict = {}
        for spec in self.visible_specs():
            set_dotted(data, spec.name, self._raw(spec))
        return data

    def launch_values(self) -> dict[str, Any]:
        """Dotted name -> validated value of every visible field (for ``--set``)."""
        if self.params is None:
            return {}
        dumped = self.params.model_dump(mode="json")
        return {s.name: get_dotted(dumped, s.name) for s in self.visible_specs()}

    def value(self, name: str) -> Any:
        """Validated value of a field, or None."""
        if self.params is None:
            return None
        try:
            return get_dotted(self.params, name)
        except (AttributeError, KeyError):
            return None

    # ---- validation ----------------------------------------------------------------
    def revalidate(self) -> None:
        if self.model is None or self._loading:
            return
        errors: dict[str, str] = {}
        try:
            self.params = self.model.model_validate(self.data())
        except ValidationError as exc:
            self.params = None
            for err in exc.errors():
                loc = ".".join(str(p) for p in err["loc"]) or "(params)"
                name = next((s.name for s in self.specs if loc == s.name or loc.startswith(s.name + ".")), "")
                errors.setdefault(name, err["msg"])
        self.errors = errors
        for spec in self.specs:
            label = self.query_one(f"#err-{field_id(spec.name)}", Static)
            msg = errors.get(spec.name, "")
            label.update(msg)
            label.set_class(bool(msg), "shown")
            self.query_one(f"#row-{field_id(spec.name)}").set_class(bool(msg), "invalid")
        self.post_message(self.Validated(self, self.params, dict(errors)))

    def _update_visibility(self) -> None:
        if not self._method_sections:
            return
        chosen = self._current_method()
        for group in self._method_sections:
            for sec in self.query(f"#sec-{group.replace('.', '--')}"):
                sec.display = group == chosen

    def on_input_changed(self, event: Input.Changed) -> None:
        event.stop()
        self.revalidate()

    def on_switch_changed(self, event: Switch.Changed) -> None:
        event.stop()
        self.revalidate()

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        if event.select.id == field_id(METHOD_FIELD):
            self._update_visibility()
        self.revalidate()

    def compose(self) -> ComposeResult:
        return iter(())
