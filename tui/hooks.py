"""Integration hooks of the main screen: which job has a threshold curve, a tool
screen, a model field; plain-words notes under fields. Tables, so a job module can be
wired into the TUI without touching the screen's code
(:mod:`segdeck.tui.screens.main` reads them when the keys are pressed).

Integration hooks
-----------------
``CURVE_JOBS``
    job name -> ``"module:function"`` computing a threshold curve before the job runs,
    called (in a thread worker) as ``function(input_path, params, emit=callback)`` with
    the form's validated params (``callback`` takes ``Progress`` events, shown in the
    status line; it raises to stop the computation when the user presses Esc); it
    raises ``ValueError`` when the chosen method has no threshold.
    ``Ctrl+T`` (or ``t`` outside a text field) on the form of such a job shows the curve
    in :class:`~segdeck.tui.screens.threshold.ThresholdScreen`; the picked value goes
    into the form's ``threshold`` field (``Ctrl+R`` then runs it).
``JOB_SCREENS``
    job name -> ``"module:Class"`` of a screen opened with ``t`` on a selected job of
    that name (when the Jobs list has the focus, or the form's job has no curve; for
    ``cluster``: the curve the job saved, to pick a threshold for a re-run). The class is called as
    ``Class(job_dir=Path)``; when it is dismissed with a dict, the dict (nested, like a
    preset) is applied to the form of that job so the user can re-run with the picked
    values (``Ctrl+R``).
``MODEL_FIELD``
    a form field of this name (a model registered in :mod:`segdeck.core.models`) shows
    its cache state under it; ``m`` opens :class:`~segdeck.tui.screens.models.ModelScreen`
    (cache state, downloads) and Enter there puts the model into the field.
``ANNOTATE_MODE``
    the mode ``a`` passes to ``segdeck annotate MODE PATH --method M``; the process's
    stdout JSON lines are shown in the log pane.
``EXTRA_MODEL_FIELDS``
    job -> {dotted field: ("module:register_function" or "", {model name: field value})}
    for fields that hold a model under another name (the cluster job's deep backbone):
    ``m`` offers those models while the field is shown and puts the chosen one's value
    into it. A job (with its chosen method) with no such field gets a one-line answer.
``NO_CURVE_METHODS``
    job -> {method: reason}: ``Ctrl+T`` says so at once instead of computing first.
``FIELD_NOTES``
    job -> {dotted field: text}: a line under the field in plain words.
"""

from __future__ import annotations

#: Threshold curves offered with Ctrl+T on a job's form (see the module docstring).
CURVE_JOBS: dict[str, str] = {
    "cluster": "segdeck.core.cluster.job:sample_curve",
}
#: Screens offered with ``t`` for a selected job (see the module docstring).
JOB_SCREENS: dict[str, str] = {
    "cluster": "segdeck.tui.screens.threshold:JobThresholdScreen",
}
MODEL_FIELD = "model"
#: Other form fields that hold a registered model, by job: dotted field -> (module that
#: registers the models or "", {model name: field value}). ``m`` offers those models
#: while the field is shown (cluster: the deep method's backbone network).
EXTRA_MODEL_FIELDS: dict[str, dict[str, tuple[str, dict[str, str]]]] = {
    "cluster": {
        "deep.backbone": ("segdeck.core.cluster.deep:register_backbones",
                          {"torchvision-vgg19": "vgg19", "torchvision-resnet18": "resnet18"}),
    },
}
#: A plain-words line under a job's field (job -> {dotted field: text}).
FIELD_NOTES: dict[str, dict[str, str]] = {
    "cluster": {
        "method": "dup: near-duplicates (verified feature matches). phash, ssim, minhash, orb, tm "
                  "(threshold methods): a similarity score per image pair, pairs above the "
                  "threshold are linked into clusters. deep: learned image features, clusters "
                  "chosen by model selection.",
    },
}
#: Methods of a ``CURVE_JOBS`` job that have no threshold curve, with the reason
#: (said at once on Ctrl+T, before anything is computed).
NO_CURVE_METHODS: dict[str, dict[str, str]] = {
    "cluster": {
        "dup": "dup groups near-duplicates it verifies by matching features; it has no similarity threshold",
        "deep": "deep picks its clusters by model selection (see the deep section)",
    },
}
THRESHOLD_FIELD = "threshold"
ANNOTATE_MODE = "paint"

__all__ = ["ANNOTATE_MODE", "CURVE_JOBS", "EXTRA_MODEL_FIELDS", "FIELD_NOTES", "JOB_SCREENS", "MODEL_FIELD",
           "NO_CURVE_METHODS", "THRESHOLD_FIELD"]
