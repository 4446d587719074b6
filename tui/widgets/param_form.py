"""The parameter form, generated from a job's pydantic params model.

One row per leaf field of :func:`segdeck.core.params.field_specs`: an ``Input`` for
int / float / str / list values, a ``Switch`` for bools, a ``Select`` for ``Literal``
choices; the description and range as a hint; the pydantic error (if any) under the
field. Nested sections are grouped under their name. A model with a ``method``
choice field and sections named like its choices (the ``segment`` job) shows only the
section of the chosen method.

Sections are collapsible and built when first opened (the chosen method's section
opens by itself), so a model with many sections builds quickly; an unopened field
keeps its value (default, preset) and is validated like the others. Every change
validates the whole model and posts :class:`ParamForm.Validated`.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import groupby
from typing import TYPE_CHECKING, Any

from textual import events
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.geometry import Size
from textual.message import Message
from textual.widget import Widget
from textual.widgets import Collapsible, Input, Label, Select, Static, Switch

from segdeck.tui.launch import toml_value

if TYPE_CHECKING:  # pydantic and core.params load with the first form, not at start-up
    from pydantic import BaseModel

    from segdeck.core.params import FieldSpec

METHOD_FIELD = "method"

#: A field's ``json_schema_extra`` entry that keeps it out of the form.
HIDDEN_MARK = ("tui", "hidden")
#: The value typed into a text field to find out whether the model overwrites it.


#: Width of the label column in cells (the .tcss ``.field-name`` width); a longer
#: name gets a line of its own above its input instead of being wrapped mid-word.
LABEL_WIDTH = 18


def format_float(value: float) -> str:
    """Text for a float in a form field: short and exact where it can be.

    ``repr`` when it is at most 10 characters (``0.5``, ``1e-05``, ``1234567.0``),
    else 6 significant digits: ``0.3413333333333333`` -> ``0.341333``.
    """
    text = repr(float(value))
    return text if len(text) <= 10 else f"{value:.6g}"


def field_id(name: str) -> str:
    """Widget id of a parameter's input (dots are not allowed in ids)."""
    return "p-" + name.replace(".", "--")


def _one_line_toml(value: Any) -> str:
    """``value`` as a TOML value on one line (what ``--set`` and the form parse back).

    A list is an inline array, ``["kmeans", "gmm"]`` (``tomli_w`` writes arrays over
    several lines, which a one-line input cannot show or edit); other values as
    :func:`~segdeck.tui.launch.toml_value` writes them.

    Raises
    ------
    TypeError, ValueError
        A value TOML cannot hold (``None`` inside a list, an unknown type).
    """
    if isinstance(value, list | tuple):
        return "[" + ", ".join(_one_line_toml(v) for v in value) + "]"
    return toml_value(value)


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


def _field_info(model: type[BaseModel], dotted: str):
    """The pydantic ``FieldInfo`` of a dotted (nested) field, or None."""
    import typing

    info = None
    cls: Any = model
    for part in dotted.split("."):
        fields = getattr(cls, "model_fields", None)
        if not isinstance(fields, dict) or part not in fields:
            return None
        info = fields[part]
        cls = info.annotation
        if typing.get_origin(cls) is not None:  # Optional[Section]: the section class
            cls = next((a for a in typing.get_args(cls) if hasattr(a, "model_fields")), None)
    return info


def _marked_hidden(model: type[BaseModel], dotted: str) -> bool:
    info = _field_info(model, dotted)
    extra = getattr(info, "json_schema_extra", None)
    return isinstance(extra, dict) and extra.get(HIDDEN_MARK[0]) == HIDDEN_MARK[1]


_HIDDEN_CACHE: dict[type, frozenset[str]] = {}


def form_hidden_fields(model: type[BaseModel]) -> frozenset[str]:
    """Dotted names of the fields of ``model`` that the form does not show: those marked
    ``json_schema_extra={"tui": "hidden"}`` and the derived ones
    (:data:`segdeck.core.params.DERIVED`, e.g. ``checkpoint_sha256``, always the sha256
    of the ``checkpoint`` file). They stay in the model, so validation fills them in for
    ``job.toml`` and the run name.

    Parameters
    ----------
    model : type of pydantic.BaseModel
        A job's params model.

    Returns
    -------
    frozenset of str
        Remembered per model class.
    """
    if model not in _HIDDEN_CACHE:
        from segdeck.core.params import field_specs

        _HIDDEN_CACHE[model] = frozenset(
            spec.name for spec in field_specs(model) if spec.derived or _marked_hidden(model, spec.name))
    return _HIDDEN_CACHE[model]


class FieldInput(Input):
    """An ``Input`` that handles its own editing keys in the order they arrive, and
    leaves the field on Escape.

    Textual runs a widget's key *bindings* (Backspace, Delete, arrows, Home/End …) only
    after the key event has bubbled up to the app, while printable keys are inserted
    by the widget at once; so when keys arrive together (fast typing, a paste of keys
    through tmux ``send-keys``) a Backspace was applied after the digits that followed
    it: Backspace 1 2 on a selected ``1024`` gave ``1``, on ``1`` it gave ``16`` for
    Backspace 6 7. Here the bound action runs inside the key handler, in order.

    Escape (leaving the field) is the screen's priority binding: it must act before
    the keys that follow it are sent to this widget.
    """

    def _watch_value(self, value: str) -> None:
        # Input sets its virtual size to the text's width on every change, a reactive
        # that re-lays-out the whole screen (~25 ms with the main screen's widgets, per
        # key). This field's own size is fixed (1fr x 1): update the scroll range only.
        size = Size(self.content_width, 1)
        if size != self.virtual_size:
            self.set_reactive(Widget.virtual_size, size)
            self._scroll_update(size)
            self.refresh()
        super()._watch_value(value)

    async def _on_key(self, event: events.Key) -> None:
        bindings = self._bindings.key_to_bindings.get(event.key)
        if bindings and not event.is_printable:
            event.stop()
            event.prevent_default()
            self._restart_blink()
            for binding in bindings:
                await self.run_action(binding.action)
            return
        await super()._on_key(event)


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
        self._values: dict[str, Any] = {}  # typed value of every field without a widget yet
        self._widgets: dict[str, Widget] = {}
        self._errs: dict[str, Static] = {}
        self._rows: dict[str, Widget] = {}
        self._sections: dict[str, Collapsible] = {}
        self._notes: dict[str, Static] = {}
        self._note_text: dict[str, tuple[str, bool]] = {}

    # ---- building ------------------------------------------------------------------
    async def set_model(self, model: type[BaseModel] | None, values: dict | None = None) -> None:
        """Rebuild the form for ``model`` filled with defaults overridden by ``values``."""
        from segdeck.core.params import field_specs

        self._loading = True
        # no params while the form is rebuilt: those of the previous model must never be
        # read together with the new model (revalidate sets them once the fields exist)
        self.params, self.errors = None, {}
        await self.remove_children()
        self.model = model
        hidden = form_hidden_fields(model) if model is not None else frozenset()
        self.specs = [s for s in field_specs(model) if s.name not in hidden] if model is not None else []
        self._values = {s.name: s.default for s in self.specs}
        self._widgets, self._errs, self._rows, self._sections = {}, {}, {}, {}
        self._notes, self._note_text = {}, {}
        _, self._method_sections = method_sections(self.specs)
        if model is None:
            self.params, self.errors = None, {}
            self._loading = False
            return
        if values:
            self.apply_values(values)
        chosen = self._current_method()
        widgets: list[Widget] = []
        for group, members in groupby(self.specs, key=lambda s: s.group):
            members = list(members)
            if not group:
                widgets.extend(self._field_row(spec) for spec in members)
                continue
            open_now = group == chosen
            rows = [self._field_row(spec) for spec in members] if open_now else []
            sec = Collapsible(*rows, title=f"{group}  ({len(members)})", collapsed=not open_now,
                              id=f"sec-{group.replace('.', '--')}", classes="section")
            sec.group, sec.members, sec.built = group, members, open_now
            sec.display = group not in self._method_sections or open_now
            self._sections[group] = sec
            widgets.append(sec)
        await self.mount_all(widgets)
        self._loading = False
        self.revalidate()

    async def open_section(self, group: str) -> None:
        """Expand a section, building its fields the first time."""
        sec = self._sections.get(group)
        if sec is None:
            return
        if not sec.built:
            sec.built = True
            rows = [self._field_row(spec) for spec in sec.members]
            await sec.query_one(Collapsible.Contents).mount_all(rows)
        sec.collapsed = False
        self.revalidate()

    async def on_collapsible_expanded(self, event: Collapsible.Expanded) -> None:
        event.stop()
        group = getattr(event.collapsible, "group", None)
        if group is not None and not event.collapsible.built:
            await self.open_section(group)

    def on_collapsible_collapsed(self, event: Collapsible.Collapsed) -> None:
        event.stop()

    def _field_row(self, spec: FieldSpec) -> Vertical:
        fid = field_id(spec.name)
        leaf = spec.name.rpartition(".")[2]
        value = self._values.pop(spec.name, spec.default)
        if spec.kind == "bool":
            widget = Switch(value=bool(value), id=fid)
        elif spec.kind == "choice":
            options = [(str(c), c) for c in spec.choices]
            widget = Select(options, value=value if value in spec.choices else Select.NULL,
                            allow_blank=spec.optional or spec.default not in spec.choices, id=fid,
                            compact=True)
        else:
            widget = FieldInput(value=self._text(spec, value), id=fid, placeholder=spec.kind, compact=True)
        hint = spec.description
        rng = range_text(spec)
        if rng:
            hint = f"{hint}  {rng}" if hint else rng
        err = Static("", classes="error", id=f"err-{fid}", markup=False)
        note_text, note_bad = self._note_text.get(spec.name, ("", False))
        note = Static(note_text, classes="note", id=f"note-{fid}", markup=False)
        note.set_class(bool(note_text), "shown")
        note.set_class(note_bad, "bad")
        self._notes[spec.name] = note
        if len(leaf) < LABEL_WIDTH:
            lines = [Horizontal(Label(leaf, classes="field-name"), widget, classes="field-line")]
        else:  # too long for the column: its own line, never wrapped mid-word
            lines = [Label(leaf, classes="field-name-long"),
                     Horizontal(Label("", classes="field-name"), widget, classes="field-line")]
        row = Vertical(
            *lines,
            Static(hint, classes="hint", markup=False),
            note,
            err,
            classes="field",
            id=f"row-{fid}",
        )
        self._widgets[spec.name], self._errs[spec.name], self._rows[spec.name] = widget, err, row
        return row

    @staticmethod
    def _text(spec: FieldSpec, value: Any) -> str:
        if value is None:
            return ""
        if isinstance(value, float):
            return format_float(value)
        if spec.kind in ("int", "float", "str"):
            return str(value)
        try:
            return _one_line_toml(value)
        except (TypeError, ValueError):
            return str(value)

    def set_note(self, name: str, text: str, bad: bool = False) -> None:
        """A line under field ``name`` (e.g. a model's cache state); ``""`` hides it."""
        self._note_text[name] = (text, bad)
        note = self._notes.get(name)
        if note is None:
            return
        if str(note.content) != text:
            note.update(text)
        note.set_class(bool(text), "shown")
        note.set_class(bad, "bad")

    def spec(self, name: str) -> FieldSpec | None:
        """The field spec named ``name`` (dotted), or None."""
        return next((s for s in self.specs if s.name == name), None)

    def raw_value(self, name: str) -> Any:
        """The current, unvalidated value of a field (None for an unknown name)."""
        spec = self.spec(name)
        return None if spec is None else self._raw(spec)

    # ---- values --------------------------------------------------------------------
    def widget_for(self, name: str) -> Widget | None:
        """The input widget of a field, or None while its section is unopened."""
        return self._widgets.get(name)

    def apply_values(self, values: dict) -> None:
        """Set fields from a nested dict (a preset, a tool screen's result); unknown
        keys are ignored."""
        from segdeck.core.params import get_dotted

        for spec in self.specs:
            try:
                value = get_dotted(values, spec.name)
            except (KeyError, TypeError, AttributeError):
                continue
            self._set_value(spec, value)
        self._update_visibility()
        self.revalidate()

    def reset_defaults(self) -> None:
        for spec in self.specs:
            self._set_value(spec, spec.default)
        self._update_visibility()
        self.revalidate()

    def _set_value(self, spec: FieldSpec, value: Any) -> None:
        widget = self.widget_for(spec.name)
        if widget is None:
            self._values[spec.name] = value
        elif isinstance(widget, Switch):
            widget.value = bool(value)
        elif isinstance(widget, Select):
            widget.value = value if value in spec.choices else Select.NULL
        else:
            widget.value = self._text(spec, value)

    def _raw(self, spec: FieldSpec) -> Any:
        widget = self.widget_for(spec.name)
        if widget is None:
            return self._values.get(spec.name, spec.default)
        if isinstance(widget, Switch):
            return widget.value
        if isinstance(widget, Select):
            return None if widget.value is Select.NULL else widget.value
        text = widget.value.strip()
        if text == "" and (spec.optional or spec.kind != "str"):
            return None if spec.optional else text
        if spec.kind in ("int", "float", "str"):
            return widget.value if spec.kind == "str" else text
        from segdeck.core.params import parse_scalar

        return parse_scalar(text)

    def visible_specs(self) -> list[FieldSpec]:
        """Fields that belong to the current choice of method (all of them otherwise)."""
        if not self._method_sections:
            return list(self.specs)
        chosen = self._current_method()
        return [s for s in self.specs if s.group not in self._method_sections or s.group == chosen]

    def _current_method(self) -> str | None:
        if not self._method_sections:
            return None
        spec = next(s for s in self.specs if s.name == METHOD_FIELD)
        value = self._raw(spec)
        return None if value is None else str(value)

    def data(self) -> dict:
        """The nested dict of the visible fields' current (unvalidated) values."""
        from segdeck.core.params import set_dotted

        data: dict = {}
        for spec in self.visible_specs():
            set_dotted(data, spec.name, self._raw(spec))
        return data

    def launch_values(self) -> dict[str, Any]:
        """Dotted name -> validated value of every visible field (for ``--set``)."""
        from segdeck.core.params import get_dotted

        if self.params is None:
            return {}
        dumped = self.params.model_dump(mode="json")
        return {s.name: get_dotted(dumped, s.name) for s in self.visible_specs()}

    def value(self, name: str) -> Any:
        """Validated value of a field, or None."""
        from segdeck.core.params import get_dotted

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
        from pydantic import ValidationError

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
        for name, label in self._errs.items():
            msg = errors.get(name, "")
            if str(label.content) != msg:
                label.update(msg)
            label.set_class(bool(msg), "shown")
            self._rows[name].set_class(bool(msg), "invalid")
        for name in errors:  # an error in an unopened section: open it
            group = name.rpartition(".")[0]
            sec = self._sections.get(group)
            if sec is not None and not sec.built and sec.display:
                self.call_later(self.open_section, group)
        self.post_message(self.Validated(self, self.params, dict(errors)))

    def _update_visibility(self) -> None:
        if not self._method_sections:
            return
        chosen = self._current_method()
        for group in self._method_sections:
            sec = self._sections.get(group)
            if sec is None:
                continue
            sec.display = group == chosen
            if group == chosen and (not sec.built or sec.collapsed):
                self.call_later(self.open_section, group)

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
