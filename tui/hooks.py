"""What the main screen offers for a job, read from the job class.

A job declares its TUI behaviour with ``tui_*`` class attributes
(:class:`segdeck.core.jobs.base.Job`, strings and plain data so the engine imports no
UI); the main screen and its controllers read them through the functions here, so a
new job gets a threshold curve, a tool screen, a model field or notes under its
fields without any screen code.

``tui_curve`` (:func:`curve`)
    ``"module:function"`` computing a threshold curve before the job runs, called (in a
    thread worker) as ``function(input_path, params, emit=callback)`` with the form's
    validated params (``callback`` takes ``Progress`` events, shown in the status line;
    it raises to stop the computation when the user presses Esc); it raises
    ``ValueError`` when the chosen method has no threshold. ``Ctrl+T`` (or ``t``
    outside a text field) on the form of such a job shows the curve in
    :class:`~segdeck.tui.screens.threshold.ThresholdScreen`; the picked value goes into
    the form's ``tui_curve_field`` (:func:`curve_field`; ``Ctrl+R`` then runs it).
``tui_no_curve_methods`` (:func:`no_curve_reason`)
    ``{method: reason}``: ``Ctrl+T`` says so at once instead of computing first.
``tui_tool_screen`` (:func:`tool_screen`)
    ``"module:Class"`` of a screen opened with ``t`` on a selected job of that kind
    (when the Jobs list has the focus, or the form's job has no curve; for ``cluster``:
    the curve the job saved, to pick a threshold for a re-run). The class is called as
    ``Class(job_dir=Path)``; when it is dismissed with a dict, the dict (nested, like a
    preset) is applied to the form of that job so the user can re-run with the picked
    values (``Ctrl+R``).
``tui_model_field`` (:func:`model_field`)
    the form field holding a model registered in :mod:`segdeck.core.models` (default
    ``model``): its cache state shows under it; ``m`` opens
    :class:`~segdeck.tui.screens.models.ModelScreen` (cache state, downloads) and Enter
    there puts the model into the field.
``tui_extra_model_fields`` (:func:`extra_model_fields`)
    {dotted field: ("module:register_function" or "", {model name: field value})} for
    fields that hold a model under another name (the cluster job's deep backbone): ``m``
    offers those models while the field is shown and puts the chosen one's value into
    it. A job (with its chosen method) with no such field gets a one-line answer.
``tui_field_notes`` (:func:`field_notes`)
    {dotted field: text}: a line under the field in plain words.

``ANNOTATE_MODE``
    the mode ``a`` passes to ``segdeck annotate MODE PATH --method M``; the process's
    stdout JSON lines are shown in the log pane.
"""

from __future__ import annotations

import importlib

ANNOTATE_MODE = "paint"


def load(target: str):
    """The object named by ``"module:attribute"``.

    Raises
    ------
    ImportError, AttributeError
        The module or the attribute is not there.
    """
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def curve(cls: type | None) -> str:
    """``"module:function"`` of the job's threshold curve ("" for none or no job)."""
    return getattr(cls, "tui_curve", "") or "" if cls is not None else ""


def curve_field(cls: type | None) -> str:
    """The form field the threshold picked on the job's curve goes into."""
    return getattr(cls, "tui_curve_field", "threshold") if cls is not None else "threshold"


def no_curve_reason(cls: type | None, method) -> str | None:
    """Why the job's ``method`` has no threshold curve (None: it has one, or may)."""
    return dict(getattr(cls, "tui_no_curve_methods", {}) or {}).get(str(method)) if cls is not None else None


def tool_screen(cls: type | None) -> str:
    """``"module:Class"`` of the job's tool screen ("" for none or no job)."""
    return getattr(cls, "tui_tool_screen", "") or "" if cls is not None else ""


def model_field(cls: type | None) -> str:
    """The job's form field holding a registered model ("" for none or no job)."""
    return getattr(cls, "tui_model_field", "") or "" if cls is not None else ""


def extra_model_fields(cls: type | None) -> dict[str, tuple[str, dict[str, str]]]:
    """The job's fields holding a model under another name (see the module docstring)."""
    return dict(getattr(cls, "tui_extra_model_fields", {}) or {}) if cls is not None else {}


def offers_models(cls: type | None) -> bool:
    """Whether the job has a field holding a model (its model field is one of its
    parameters, or it declares other model fields)."""
    if cls is None:
        return False
    field = model_field(cls)
    params = getattr(cls, "Params", None)
    top = field.split(".")[0] if field else ""
    return bool(top and params is not None and top in getattr(params, "model_fields", {})) or bool(
        extra_model_fields(cls))


def field_notes(cls: type | None) -> dict[str, str]:
    """The job's notes under form fields: dotted field -> text."""
    return dict(getattr(cls, "tui_field_notes", {}) or {}) if cls is not None else {}


__all__ = ["ANNOTATE_MODE", "curve", "curve_field", "extra_model_fields", "field_notes", "load", "model_field",
           "no_curve_reason", "offers_models", "tool_screen"]
