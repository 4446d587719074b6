"""Drive the annotation windows over a folder: prepare images in the background, run the
sessions, save what was painted and report every saved file as a JSON line on stdout.

Vocabulary (the same in the CLI, the code and ARCHITECTURE.md):

- **mode**: the command ``segdeck annotate {paint,grabcut,sam}``, the first window a run
  shows; it only picks the default method.
- **method** (``--method``, :attr:`Options.method`): where an image's segments come
  from: an over-segmentation method of the registry (``slic``, ...), ``sam-auto``
  (SAM's automatic masks), or an interactive method, ``grabcut`` or ``sam``, whose
  window makes one mask first that is then painted. (The CLI's help calls it the
  "segment source".)
- **session**: one window over one image (:mod:`segdeck.annotate.state`, ``grabcut``,
  ``sam``, ``paint``), ending with an :class:`~segdeck.annotate.state.Outcome`; also
  the saved ``NAME.session.npz`` that restores a painting.

The parts: :mod:`segdeck.annotate.files` (the files written per image, and the background
writer), :mod:`segdeck.annotate.prepare` (images loaded and segmented ahead of the one
shown) and this module (:func:`run_annotate`, the loop over images that acts on each
session's outcome).

Output folder (default ``<INPUT>.segdeck/annotate-<method>/``): see
:mod:`segdeck.annotate.files`. Each saved file is reported on stdout as ``{"event":
"saved", "kind": "labels" | "mask" | "session", "file": ..., "image": ..., ...}``;
unreadable images as ``{"event": "error", "image": ..., "error": "one line"}``; the end as
``{"event": "done", "images": N, "saved_images": K, "failed": F, "out_dir": ...}``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from segdeck.annotate.files import Saver
from segdeck.annotate.prepare import INTERACTIVE_METHODS, SAM_AUTO, Preparer, make_preparer
from segdeck.annotate.state import MaskState, Outcome, PaintState
from segdeck.core import imageio
from segdeck.core.errors import SegdeckError

if TYPE_CHECKING:
    from pydantic import BaseModel

    from segdeck.annotate.gui import Gui
    from segdeck.annotate.keymap import Keymap
    from segdeck.annotate.sam import SamEngine
    from segdeck.annotate.template import TemplateSpec

__all__ = ["INTERACTIVE_METHODS", "SAM_AUTO", "Options", "emit_json", "run_annotate"]

_print_lock = threading.Lock()


def emit_json(obj: dict) -> None:
    """Print one JSON object as a line on stdout (thread-safe, flushed)."""
    with _print_lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


@dataclass
class Options:
    """Everything a run of ``segdeck annotate`` needs besides the images.

    Attributes
    ----------
    method : str
        Where the segments come from (module docstring): a registry method,
        ``"sam-auto"``, ``"grabcut"`` or ``"sam"``.
    params : pydantic model or None
        The method's parameters (the registry method's model, or
        :class:`~segdeck.core.sam.params.GeneratorParams` for ``sam-auto``); None for the
        interactive methods or the method's defaults.
    out_dir : Path
        Where the files go (:mod:`segdeck.annotate.files`).
    root : Path
        The input folder; image names are flattened relative to it.
    max_side : int
        Longest side the segmentation / GrabCut / SAM work at.
    max_window : (int, int)
        Largest window (width, height) in screen pixels.
    keymap : Keymap or None
        None: the shipped default.
    template : TemplateSpec or None
        Template painting (key t).
    engine : SamEngine or None
        The SAM engine of ``sam`` and ``sam-auto``.
    frames_log : Path or None
        Tests: a line per frame drawn.
    """

    method: str
    params: BaseModel | None = None
    out_dir: Path = Path(".")
    root: Path = Path(".")
    max_side: int = 1024
    max_window: tuple[int, int] = (1280, 800)
    keymap: Keymap | None = None
    template: TemplateSpec | None = None
    engine: SamEngine | None = None
    frames_log: Path | None = None

    @property
    def interactive(self) -> bool:
        """Whether a GrabCut / SAM window makes each image's mask before painting."""
        return self.method in INTERACTIVE_METHODS


def _meta(opts: Options) -> dict:
    """What a saved session records about the run."""
    params = opts.params.model_dump(mode="json") if opts.params is not None else {}
    return {"method": opts.method, "params": params, "segdeck": "annotate"}


def run_annotate(paths: list[Path], opts: Options, *, gui: Gui | None = None,
                 report: Callable[[dict], None] = emit_json, log: Callable[[str], None] | None = None) -> int:
    """Run the windows over ``paths`` until the user quits or passes the last image.

    Each image: the prepared segments (or, for an interactive method, the mask its
    GrabCut / SAM session finishes with) are painted in the paint session; the
    paint session's :class:`~segdeck.annotate.state.Outcome` says what comes next
    (:func:`_next_index`).

    Parameters
    ----------
    paths : list of Path
        The images, in order.
    opts : Options
    gui : Gui, optional
        The window calls (tests pass a fake).
    report : callable
        Called with every event dict (default: a JSON line on stdout).
    log : callable, optional
        One line for the user (default: stderr).

    Returns
    -------
    int
        Exit code: 0, or 1 when an image could not be loaded or saved.
    """
    from segdeck.annotate.gui import Gui
    from segdeck.annotate.paint import PaintWindow

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    gui = gui or Gui()
    saver = Saver(report)
    prep = make_preparer(paths, opts, saver)
    engine_lock = threading.Lock()
    failed = 0
    n = len(paths)
    i = 0
    colour = 1  # the paint colour carries over from image to image
    open_windows: set[str] = set()
    try:
        while 0 <= i < n:
            fut = prep.future(i)
            if not fut.done() and not opts.interactive:
                # open the window now (Qt starts meanwhile) and keep it responsive while loading
                _placeholder(gui, paths[i], opts, i, n)
                open_windows.add(PaintWindow.SEG)
                while not fut.done():
                    gui.pump(30)
            p = prep.get(i)
            title = imageio.flatten_name(p.path, opts.root)
            if p.error:
                failed += 1
                log(p.error)
                report({"event": "error", "image": str(p.path), "error": p.error})
                i += 1
                continue
            labels, seg_color, original = p.labels, p.seg_color, p.original
            handed_over = labels is None  # an interactive method: its session makes the mask first
            if handed_over:
                for name in open_windows:
                    gui.close(name)
                open_windows.clear()
                outcome, session = _mask_session(p.extra["work"], opts, gui, engine_lock, title, i, n)
                if outcome is not Outcome.FINISH:
                    break
                from segdeck.annotate.grabcut import mask_to_segments

                labels = mask_to_segments(session.full_mask((p.image.shape[1], p.image.shape[0])))
                seg_color = np.array([0, 0, 0], np.uint8)
                if opts.method == "sam" and i + 1 < n:
                    _prefetch_embedding(prep, i + 1, opts, engine_lock)
            state = PaintState(labels, seg_color, original=original, keymap=opts.keymap, colour=colour,
                               unsaved=handed_over)
            if handed_over:
                state.seg_color[1] = state.colour  # the handed-over mask comes painted
            if p.restored:
                state.message = "session restored"
            win = PaintWindow(state, p.image, title=title, index=i + 1, total=n, max_window=opts.max_window,
                              gui=gui, frames_log=opts.frames_log, template=opts.template,
                              keep_open=not opts.interactive, fit_view=p.extra.get("fit_view"))
            open_windows.update(win.windows)
            outcome = win.run()
            colour = state.colour
            if outcome is Outcome.SAVE_NEXT:
                saver.save(opts.out_dir, title, p.path, state, _meta(opts))
                prep.invalidate(i)
            next_i = _next_index(outcome, i)
            if next_i is None:
                break
            i = next_i
    finally:
        for name in open_windows:
            gui.close(name)
        prep.close()
        saver.wait()
    report({"event": "done", "images": n, "saved_images": len(saver.pending), "failed": failed + len(saver.errors),
            "out_dir": str(opts.out_dir)})
    return 1 if (failed or saver.errors) else 0


def _next_index(outcome: Outcome, i: int) -> int | None:
    """The image after a paint session on image ``i`` ended with ``outcome``; None stops the run."""
    if outcome in (Outcome.SAVE_NEXT, Outcome.NEXT):
        return i + 1
    if outcome is Outcome.PREVIOUS:
        return max(i - 1, 0)
    return None  # QUIT, ERROR


def _mask_session(work: np.ndarray, opts: Options, gui: Gui, engine_lock: threading.Lock, title: str,
                  i: int, n: int) -> tuple[Outcome, MaskState]:
    """Run the GrabCut or SAM session of an interactive method on the working image.

    Returns
    -------
    outcome : Outcome
        ``FINISH`` when the user finished with a mask.
    state : MaskState
        The session's state (:meth:`~segdeck.annotate.state.MaskState.full_mask`).
    """
    kwargs = {"title": title, "index": i + 1, "total": n, "max_window": opts.max_window, "gui": gui,
              "frames_log": opts.frames_log}
    if opts.method == "grabcut":
        from segdeck.annotate.grabcut import GrabCutState, GrabCutWindow

        state = GrabCutState(work, keymap=opts.keymap)
        win = GrabCutWindow(state, **kwargs)
    else:
        from segdeck.annotate.sam import SamState, SamWindow

        state = SamState(work, opts.engine, keymap=opts.keymap, engine_lock=engine_lock)
        _embed_in_background(opts.engine, work, engine_lock)  # ready by the first predict
        win = SamWindow(state, **kwargs)
    return win.run(), state


def _placeholder(gui: Gui, path: Path, opts: Options, i: int, n: int) -> None:
    """Show a 'loading' frame of the image's display size in the segment window."""
    from segdeck.annotate.gui import STATUS_BAR, View, put_status
    from segdeck.annotate.paint import PaintWindow

    try:
        size = imageio.image_size(path)
    except SegdeckError:
        size = opts.max_window
    view = View(size, opts.max_window)
    frame = np.full((view.dh + STATUS_BAR, view.dw, 3), 48, np.uint8)
    put_status(frame[view.dh :], f"{i + 1}/{n} {imageio.flatten_name(path, opts.root)} | loading and segmenting ...")
    gui.open(PaintWindow.SEG, lambda *a: None, (0, 0))
    gui.show(PaintWindow.SEG, frame)
    if opts.frames_log:
        with open(opts.frames_log, "a") as fh:
            fh.write(f"{time.time():.4f} placeholder:{PaintWindow.SEG}\n")


def _embed_in_background(engine: SamEngine, image: np.ndarray, lock: threading.Lock) -> None:
    """Start computing ``image``'s SAM embedding now; predict() finds it in the engine's cache."""

    def work():
        with lock:
            engine.set_image(image)

    threading.Thread(target=work, name="segdeck-sam-embed", daemon=True).start()


def _prefetch_embedding(prep: Preparer, j: int, opts: Options, lock: threading.Lock) -> None:
    """Compute image ``j``'s SAM embedding on a background thread (the engine caches it)."""

    def work():
        p = prep.future(j).result()
        if p.error or p.labels is not None:
            return
        with lock:
            opts.engine.set_image(p.extra["work"])

    threading.Thread(target=work, name="segdeck-sam-prefetch", daemon=True).start()
