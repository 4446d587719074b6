"""The shape of every long operation: a params model, work items, a pure
``process`` and an atomic ``write``. The runner (:mod:`.runner`) owns the rest.

Writing a job
-------------
Subclass :class:`Job`, set ``name``, ``Params`` (a :class:`~segdeck.core.params.JobParams`)
and ``description``; override :meth:`Job.process` and :meth:`Job.write`, and when
needed :meth:`Job.setup` (load a model once), :meth:`Job.load` (I/O that the runner
overlaps with compute), :meth:`Job.finalize` (per-job outputs such as a COCO file)
and :meth:`Job.run_name`. Register it in :mod:`.registry` by dotted path.

Items need not be images: :meth:`Job.list_items` may return
:class:`~.items.Item` objects (a stable id plus paths and/or a CSV row, see
:func:`~.items.csv_items`), and :meth:`Job.check_input` says which inputs the job
takes (default: a folder with images, or one image). A long ``process`` reports
sub-steps with :meth:`Job.step` ("region 12/40"); the runner turns them into
:class:`~.events.ItemProgress` events, the ETA uses them, and a cancel request is
seen at each step.

The module that defines ``Params`` must import nothing heavy (torch, sam2): the CLI
and the TUI import it to build forms at start-up. Import heavy things inside
``setup`` / ``process``.
"""

from __future__ import annotations

import json
import re
import threading
import time
from abc import ABC, abstractmethod
from functools import cached_property
from pathlib import Path
from typing import Any, ClassVar

from segdeck.core import imageio
from segdeck.core.jobs.events import ItemProgress, Sink
from segdeck.core.jobs.items import Item
from segdeck.core.params import JobParams, params_digest

JOB_TOML = "job.toml"


def default_output_root(input_path: str | Path) -> Path:
    """The default output root for an input: a sibling folder ``<name>.segdeck``.

    ``/data/photos`` -> ``/data/photos.segdeck``; ``/data/a.jpg`` -> ``/data/a.segdeck``.
    :func:`segdeck.core.imageio.discover` never descends into such folders.
    """
    p = Path(input_path).resolve()
    name = p.name if p.is_dir() else p.stem
    return p.parent / f"{name}{imageio.OUTPUT_ROOT_SUFFIX}"


#: Sub-step events of one item are sent at most this often (seconds); the first and
#: the last step of an item, and steps with a partial result, always go out. Two per
#: second keep a bar alive without growing ``events.jsonl`` by more than ~20 MB a day.
STEP_EVENT_INTERVAL = 0.5


class ItemCancelled(Exception):  # noqa: N818 - a control-flow signal, not an error
    """Raised by :meth:`Job.step` when a cancel was requested: the runner leaves the
    item pending (it is redone by the next run) and ends the run as cancelled."""


def slug(text: str) -> str:
    """File-name-safe version of ``text`` (letters, digits, ``.-_=``)."""
    return re.sub(r"[^A-Za-z0-9.=_-]+", "-", text).strip("-")


class Job(ABC):
    """Base class of segdeck jobs.

    Parameters
    ----------
    params : JobParams
        Validated parameters (an instance of ``cls.Params``).
    input_path : path-like
        Folder of images (searched recursively) or a single image file.
    job_dir : path-like
        This run's folder; created by the runner.
    """

    name: ClassVar[str] = ""
    Params: ClassVar[type[JobParams]] = JobParams
    description: ClassVar[str] = ""
    #: What INPUT is, for ``segdeck run JOB --help`` (empty: a folder of images or one image).
    input_help: ClassVar[str] = ""

    # ---- what the TUI offers for this job (read by segdeck.tui.hooks; strings, so the
    # engine imports no UI). Adding a job with these needs no screen code.
    #: ``"module:function"`` computing a threshold curve on a sample before the job
    #: runs (empty: none), called as ``function(input_path, params, emit=callback)``;
    #: ``Ctrl+T`` on the job's form shows it and puts the picked value into
    #: :attr:`tui_curve_field`.
    tui_curve: ClassVar[str] = ""
    #: The form field the threshold picked on the curve goes into.
    tui_curve_field: ClassVar[str] = "threshold"
    #: Values of the ``method`` field without a threshold curve -> the reason (said at
    #: once on ``Ctrl+T``, before anything is computed).
    tui_no_curve_methods: ClassVar[dict[str, str]] = {}
    #: The form field holding a model registered in :mod:`segdeck.core.models` (its
    #: cache state is shown under it; ``m`` picks another); empty: none.
    tui_model_field: ClassVar[str] = "model"
    #: Other fields that hold a model under another name: dotted field ->
    #: (``"module:register_function"`` or ``""``, {model name: field value}); ``m``
    #: offers those models while the field is shown.
    tui_extra_model_fields: ClassVar[dict[str, tuple]] = {}
    #: ``"module:Class"`` of a screen opened with ``t`` on a selected job of this kind,
    #: called as ``Class(job_dir=Path)``; a dict it is dismissed with goes into the
    #: form (empty: none).
    tui_tool_screen: ClassVar[str] = ""
    #: A plain-words line under a field of the form: dotted field -> text.
    tui_field_notes: ClassVar[dict[str, str]] = {}
    #: Suffixes (lower case, with the dot) of input files other than images this job
    #: takes (e.g. ``(".csv",)``): the folder tree lists such files beside the folders,
    #: and picking one makes it the job's input when :meth:`check_input` accepts it.
    tui_input_files: ClassVar[tuple[str, ...]] = ()
    #: The ``segdeck annotate`` mode that ``a`` opens on an input file this job takes
    #: (e.g. ``"refs"``: ``segdeck annotate refs SPEC``); empty: none (``a`` on a folder
    #: or an image always opens ``annotate paint``).
    tui_annotate: ClassVar[str] = ""
    #: Form fields passed to that ``segdeck annotate`` window: dotted field -> its
    #: option (e.g. ``{"checkpoint": "--checkpoint"}``); a field the form has and that
    #: holds a value goes on the command line as ``OPTION VALUE``.
    tui_annotate_fields: ClassVar[dict[str, str]] = {}

    def __init__(self, params: JobParams, input_path: str | Path, job_dir: str | Path):
        if not isinstance(params, self.Params):
            raise TypeError(f"{self.name} needs {self.Params.__name__}, got {type(params).__name__}")
        self.params = params
        self.input_path = Path(input_path)
        self.job_dir = Path(job_dir)
        #: Set by the runner to its cancel event, so long steps inside ``setup`` or
        #: ``finalize`` (model training, clustering) can stop early.
        self.cancel = threading.Event()
        #: Set by the runner while an item is computed: ``(item, sink)`` for :meth:`step`.
        self._step_target: tuple[str, Sink] | None = None
        self._step_last = 0.0

    # ---- naming -------------------------------------------------------------------
    @classmethod
    def run_name(cls, params: JobParams) -> str:
        """Folder name of a run with these parameters: ``<job>-<key params>-<digest>``.

        Override :meth:`name_parts` to choose the readable part; the digest of the
        parameters keeps different settings apart, leaving out those
        :meth:`ignored_params` names (a changed option the run does not read reuses the
        folder instead of starting over).
        """
        parts = [cls.name, *cls.name_parts(params), params_digest(params, exclude=cls.ignored_params(params))]
        return slug("-".join(str(p) for p in parts if p != ""))

    @classmethod
    def ignored_params(cls, params: JobParams) -> set[str]:
        """Parameter fields this run does not read (left out of the folder digest):
        top-level names, or dotted ``section.field``. Default: none."""
        return set()

    @classmethod
    def name_parts(cls, params: JobParams) -> list[str]:
        """Readable pieces of the run folder name (e.g. ``["slic", "n400"]``)."""
        return []

    # ---- items --------------------------------------------------------------------
    @classmethod
    def check_input(cls, input_path: Path) -> None:
        """Check, before anything is created, that ``input_path`` is an input this job
        takes (``segdeck run`` calls it). Default: a file with an image suffix, or a
        folder with images somewhere below it. Jobs on other inputs (a CSV, a spec file)
        override it.

        Raises
        ------
        ValueError
            One line saying what is wrong with the input.
        """
        if not input_path.exists():
            raise ValueError(f"input {input_path} does not exist")
        if input_path.is_file() and not imageio.is_image_path(input_path):
            raise ValueError(f"{input_path}: not an image file (png, jpg, jpeg, tif, tiff) nor a folder of images")
        if input_path.is_dir() and not imageio.discover(input_path):
            # a typo'd folder must not end as "done: 0 done"
            raise ValueError(f"{input_path}: no images (png, jpg, jpeg, tif, tiff) in this folder or below")

    def list_items(self) -> list[str]:
        """Work items: image paths relative to the input folder, POSIX style, sorted.

        Override to return :class:`~.items.Item` objects (stable id + what :meth:`load`
        needs). Ids must be unique; the manifest stores them and outputs are named
        after them (:meth:`output_stem`).
        """
        root = self.input_path
        if root.is_file():
            return [root.name]
        return [p.relative_to(root).as_posix() for p in imageio.discover(root)]

    @cached_property
    def _input_is_file(self) -> bool:
        # asked once: a stat per item costs as much as hashing a thumbnail
        return self.input_path.is_file()

    def item_path(self, item: str) -> Path:
        """Absolute path of an item's input file (an :class:`~.items.Item` with paths:
        its first path, relative ones under the input folder)."""
        if isinstance(item, Item) and item.paths:
            first = item.paths[0]
            if first.is_absolute():
                return first
            return (self.input_path.parent if self._input_is_file else self.input_path) / first
        return self.input_path if self._input_is_file else self.input_path / item

    def expected_outputs(self, item: str) -> list[str] | None:
        """The outputs (relative to ``job_dir``) a done ``item`` has, or None when the
        job cannot tell without running it (default).

        Used only to rebuild a damaged manifest when ``events.jsonl`` does not record
        the item's outputs either.
        """
        return None

    def output_stem(self, item: str) -> str:
        """Collision-free flat name for an item's outputs (see :func:`imageio.flatten_name`)."""
        return imageio.flat_item_name(item)

    # ---- life cycle -----------------------------------------------------------------
    def setup(self, emit: Sink) -> None:
        """Prepare once before the first item (load a model, check files).

        Raise :class:`~segdeck.core.errors.SetupError` when the job cannot run.
        """

    def load(self, item: str) -> Any:
        """Read an item's input (runs in a prefetch thread). Default: the RGB image."""
        return imageio.load_rgb(self.item_path(item))

    @abstractmethod
    def process(self, item: str, data: Any) -> Any:
        """Compute the result for one item from what :meth:`load` returned. No file I/O.

        A long computation calls :meth:`step` between its sub-steps.
        """

    def step(self, done: int, total: int | None = None, what: str = "", *, partial: Any = None) -> None:
        """Report progress inside the item being processed: sub-step ``done`` of
        ``total`` (e.g. ``self.step(12, 40, "region")``), and give a cancel request a
        chance to stop the item.

        Call it from :meth:`process` (any thread). Events go out at most every
        ``STEP_EVENT_INTERVAL`` seconds (always for the first and the last step, and
        for every step with a ``partial`` result: JSON-serialisable data the runner
        records in ``events.jsonl`` and the front-ends show, e.g.
        ``partial={"region": 12, "caption": "a red car"}``).
        Called from :meth:`setup` or :meth:`finalize` it only checks the cancel (the
        runner ends the run as ``cancelled``); report those steps with
        :class:`~.events.Progress` events.

        Raises
        ------
        ItemCancelled
            When the run was asked to stop; let it propagate out of ``process`` (the
            item stays pending and no output is written).
        TypeError
            If ``partial`` is not JSON-serialisable.
        """
        if self.cancel.is_set():
            raise ItemCancelled(what or "cancelled")
        if partial is not None:
            try:
                json.dumps(partial)
            except (TypeError, ValueError) as exc:
                raise TypeError(f"Job.step: partial must be JSON data ({exc})") from None
        target = self._step_target
        if target is None:
            return
        item, sink = target
        now = time.monotonic()
        last = total is not None and done >= total
        if partial is not None or done <= 1 or last or now - self._step_last >= STEP_EVENT_INTERVAL:
            self._step_last = now
            sink(ItemProgress(item=str.__str__(item), done=int(done), total=total, what=what, partial=partial))

    @abstractmethod
    def write(self, item: str, result: Any) -> list[str]:
        """Write one item's result atomically into ``job_dir``; return the output paths
        relative to ``job_dir``. Runs in a writer thread, in item order."""

    def finalize(self, emit: Sink) -> list[str]:
        """Per-job outputs after the items (called after every run, also a partial or
        cancelled one, so they reflect what is done). Returns paths relative to ``job_dir``."""
        return []

    def teardown(self) -> None:
        """Release resources (models, pools)."""
