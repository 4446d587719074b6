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
    {dotted field: ("module:register_function" or "", {model name: field value}[, {other
    field: [values]}])} for fields that hold a model under another name (the cluster
    job's deep features and backbone): ``m`` offers the models of the first such field
    that is shown and whose conditions hold (each other field's current value is one of
    the listed ones), and puts the chosen one's value into it. A job (with its chosen
    method) with no such field gets a one-line answer.
``tui_field_notes`` (:func:`field_notes`)
    {dotted field: text}: a line under the field in plain words.

``tui_input_files`` (:func:`input_files`)
    suffixes (``".csv"``, ``".toml"``) of input files other than images the job takes:
    the folder tree lists such files; picking one makes it the input, and the form's
    status line says why not when the picked job's ``check_input`` refuses it
    (:func:`input_problem`, run in a thread worker).
``tui_annotate`` (:func:`annotate_mode`)
    the ``segdeck annotate`` mode that ``a`` opens on an input file the job takes
    (``"refs"``: ``segdeck annotate refs SPEC``, reference labelling of a spec file).

``tui_annotate_fields`` (:func:`annotate_fields`)
    {dotted form field: option} passed to that window from the form of the job
    (``{"checkpoint": "--checkpoint"}``: fine-tuned weights when no registered model is
    cached); a field the form has and that holds a value goes on as ``OPTION VALUE``.

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


def extra_model_fields(cls: type | None) -> dict[str, tuple]:
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


def input_files(cls: type | None) -> tuple[str, ...]:
    """Suffixes of the input files other than images the job takes (lower case, with the dot)."""
    return tuple(str(x).lower() for x in getattr(cls, "tui_input_files", ()) or ()) if cls is not None else ()


def annotate_mode(cls: type | None) -> str:
    """The ``segdeck annotate`` mode for an input file the job takes ("" for none)."""
    return getattr(cls, "tui_annotate", "") or "" if cls is not None else ""


def annotate_fields(cls: type | None) -> dict[str, str]:
    """The job's form fields passed to its annotate window: dotted field -> option."""
    return dict(getattr(cls, "tui_annotate_fields", {}) or {}) if cls is not None else {}


def checks_input(cls: type | None) -> bool:
    """Whether the job has its own ``check_input`` (it takes something other than a
    folder of images or an image, so a folder's image count does not answer it)."""
    if cls is None:
        return False
    from segdeck.core.jobs.base import Job

    own = getattr(cls.check_input, "__func__", cls.check_input)
    return own is not getattr(Job.check_input, "__func__", Job.check_input)


def input_problem(cls: type, path) -> str | None:
    """Why job ``cls`` does not take ``path`` (its ``check_input``'s one line), or None
    when it does. Reads the input (a folder walk, a CSV header): call it off the UI
    thread. Any exception of a broken ``check_input`` counts as a refusal."""
    from pathlib import Path

    try:
        cls.check_input(Path(path))
    except Exception as exc:  # noqa: BLE001 - ValueError is the contract; a broken plug-in must not stop the TUI
        text = str(exc).strip().splitlines()
        return text[0] if text else type(exc).__name__
    return None


__all__ = ["ANNOTATE_MODE", "annotate_fields", "annotate_mode", "checks_input", "curve", "curve_field", "extra_model_fields",
           "field_notes", "input_files", "input_problem", "load", "model_field", "no_curve_reason", "offers_models",
           "tool_screen"]
