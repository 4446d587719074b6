"""Prepare images in the background: load, restore a saved session or make the segments.

What is made depends on the run's method (the vocabulary is in :mod:`segdeck.annotate.app`):

- an over-segmentation method of the registry (:func:`segdeck.core.oversegment.segment`):
  the image's segments, large JPEGs through a reduced-size decode
  (:func:`segment_jpeg_fast`);
- ``sam-auto`` (:data:`SAM_AUTO`): the SAM engine's automatic masks as segments
  (:func:`automask_labels`);
- ``grabcut`` / ``sam`` (:data:`INTERACTIVE_METHODS`): only the working-size image; a
  window makes the mask first.

A saved session of the image (:mod:`segdeck.annotate.files`) is restored instead of
segmenting again. :class:`Preparer` works one image ahead of the one shown.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from segdeck.annotate.files import Saver, load_session, session_path
from segdeck.core import imageio
from segdeck.core.errors import SegdeckError

if TYPE_CHECKING:
    from segdeck.annotate.app import Options

#: Methods whose segments a window makes first (one mask, then painting).
INTERACTIVE_METHODS = ("grabcut", "sam")
#: The method whose segments are SAM's automatic masks.
SAM_AUTO = "sam-auto"


def automask_labels(masks: np.ndarray) -> np.ndarray:
    """SAM automatic masks as a segment map: :func:`segdeck.core.regions.masks_to_label_map`
    (larger masks first, smaller ones drawn over them; mask ``i`` is segment ``i + 1``),
    and pixels no mask covers become segments of their own (4-connected components).

    Parameters
    ----------
    masks : ndarray of shape (N, H, W), bool

    Returns
    -------
    ndarray of shape (H, W), int32
        Segment ids >= 1 (ids of masks hidden by smaller ones are skipped).
    """
    import cv2

    from segdeck.core.regions import masks_to_label_map

    labels = masks_to_label_map(masks, order="area")
    free = labels == 0
    if free.any():
        _, cc = cv2.connectedComponents(free.astype(np.uint8), connectivity=4)
        labels[free] = cc[free] + labels.max()
    return labels


@dataclass
class Prepared:
    """One image made ready in the background.

    Attributes
    ----------
    path : Path
    image : ndarray (H, W, 3) uint8 RGB or None
        None when ``error`` is set.
    labels, original : ndarray (H, W) int32 or None
        Segments (after cuts) and the segments as made; None for an interactive method
        (the window makes them) and ``original`` None for a fresh segmentation.
    seg_color : ndarray (N + 1,) uint8 or None
        Colour index per segment of a restored session.
    restored : bool
        Came from a saved session.
    error : str or None
        One line for the user (unreadable image, out of memory, ...).
    seconds : float
        Time the preparation took.
    extra : dict
        ``"work"``: the working-size image of an interactive method; ``"fit_view"``:
        the whole-image display (:meth:`~segdeck.annotate.paint.PaintDisplay.prepare_fit_view`).
    """

    path: Path
    image: np.ndarray | None = None
    labels: np.ndarray | None = None
    original: np.ndarray | None = None
    seg_color: np.ndarray | None = None
    restored: bool = False
    error: str | None = None
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


class Preparer:
    """Loads and segments images on worker threads, one ahead of the one shown.

    Parameters
    ----------
    paths : list of Path
    make : callable
        ``make(path) -> Prepared``; :class:`~segdeck.core.errors.SegdeckError`,
        ``ValueError`` and ``MemoryError`` become a ``Prepared`` with ``error`` set.
    workers, ahead : int
        Worker threads; images prepared beyond the one asked for.
    finish : callable, optional
        ``finish(prepared)`` on the worker after a successful ``make``.
    """

    def __init__(self, paths: list[Path], make: Callable[[Path], Prepared], *, workers: int = 2, ahead: int = 1,
                 finish: Callable[[Prepared], None] | None = None):
        self.paths = paths
        self.make = make
        self.finish = finish
        self.ahead = ahead
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="segdeck-prepare")
        self.futures: dict[int, Future] = {}
        self.lock = threading.Lock()

    def _safe(self, path: Path) -> Prepared:
        """``make(path)`` with its errors turned into ``Prepared.error`` and its time measured."""
        t0 = time.perf_counter()
        try:
            p = self.make(path)
            if self.finish is not None and p.image is not None:
                self.finish(p)
        except SegdeckError as exc:
            p = Prepared(path, error=str(exc))
        except ValueError as exc:
            p = Prepared(path, error=f"{path}: {exc}")
        except MemoryError:
            p = Prepared(path, error=f"{path}: out of memory")
        p.seconds = time.perf_counter() - t0
        return p

    def future(self, i: int) -> Future:
        """The future of image ``i``, submitted on first use."""
        with self.lock:
            fut = self.futures.get(i)
            if fut is None:
                fut = self.pool.submit(self._safe, self.paths[i])
                self.futures[i] = fut
            return fut

    def get(self, i: int) -> Prepared:
        """The prepared image ``i`` (waits for it) and starts preparing the next ones."""
        fut = self.future(i)
        for j in range(i + 1, min(i + 1 + self.ahead, len(self.paths))):
            self.future(j)
        with self.lock:  # keep memory bounded: forget far-away images
            for j in list(self.futures):
                if j < i - 1 or j > i + self.ahead:
                    self.futures.pop(j).cancel()
        return fut.result()

    def invalidate(self, i: int) -> None:
        """Forget image ``i`` (its session was saved: going back reloads it)."""
        with self.lock:
            self.futures.pop(i, None)

    def close(self) -> None:
        """Stop the workers; pending preparations are cancelled."""
        self.pool.shutdown(wait=False, cancel_futures=True)


def make_preparer(paths: list[Path], opts: Options, saver: Saver) -> Preparer:
    from segdeck.annotate.grabcut import working_image
    from segdeck.core.oversegment import method_names, segment

    """The :class:`Preparer` of a run: each image restored from its saved session or
    made by ``opts.method`` (see the module docstring), waiting for a pending save of
    the same image first, with its whole-image display prepared too.

    Parameters
    ----------
    paths : list of Path
    opts : Options
    saver : Saver
        The run's writer (a save of an image must end before the image is reloaded).

    Returns
    -------
    Preparer
    """
    registry = set(method_names())

    def make(path: Path) -> Prepared:
        saver.wait_for(path)
        flat = imageio.flatten_name(path, opts.root)
        spath = session_path(opts.out_dir, flat)
        if opts.method in registry and not spath.is_file():
            fast = segment_jpeg_fast(path, opts)
            if fast is not None:
                return fast
        image = imageio.load_rgb(path)
        if spath.is_file():
            try:
                labels, original, seg_color, _ = load_session(spath)
                if labels.shape == image.shape[:2]:
                    return Prepared(path, image, labels, original, seg_color, restored=True)
            except ValueError:
                pass
        if opts.method in registry:
            labels = segment(image, opts.method, opts.params, max_side=opts.max_side)
            return Prepared(path, image, labels)
        if opts.method == SAM_AUTO:
            work = working_image(image, opts.max_side)
            res = opts.engine.generate(work, opts.params)
            small = automask_labels(np.asarray(res.masks).reshape(-1, *work.shape[:2]))
            import cv2

            labels = cv2.resize(small, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
            return Prepared(path, image, labels.astype(np.int32))
        return Prepared(path, image, extra={"work": working_image(image, opts.max_side)})

    def fit_view(p: Prepared) -> None:
        """The whole-image display (image, labels, boundaries), so showing it costs nothing."""
        from segdeck.annotate.gui import View
        from segdeck.annotate.paint import PaintDisplay

        if p.labels is None:
            return
        view = View((p.image.shape[1], p.image.shape[0]), opts.max_window)
        p.extra["fit_view"] = PaintDisplay.prepare_fit_view(p.image, p.labels, view)

    return Preparer(paths, make, finish=fit_view)


def segment_jpeg_fast(path: Path, opts: Options) -> Prepared | None:
    """Segment a large JPEG without waiting for its full decode.

    The full-resolution decode (:func:`segdeck.core.imageio.load_rgb`) runs on a second
    thread while this one decodes a DCT-scaled copy
    (:func:`segdeck.core.imageio.decode_reduced`: 1/2..1/8 size, EXIF orientation
    applied), shrinks it to the working size and runs the registry method
    there; the labels are then scaled to full resolution. Returns None (caller takes
    the plain path) for anything that is not a plain colour / gray JPEG or is not larger
    than the working size.
    """
    if path.suffix.lower() not in (".jpg", ".jpeg"):
        return None
    import cv2

    from segdeck.core.oversegment import segment
    from segdeck.core.oversegment._resize import upscale_labels, working_shape

    try:
        W, H = imageio.image_size(path)
    except SegdeckError:
        return None
    if max(W, H) <= 2 * opts.max_side:
        return None
    small = imageio.decode_reduced(path, opts.max_side)
    if small is None:
        return None
    result: dict = {}

    def full():
        try:
            result["image"] = imageio.load_rgb(path)
        except BaseException as exc:  # reported from the caller's thread
            result["error"] = exc

    t = threading.Thread(target=full, name="segdeck-decode", daemon=True)
    t.start()
    wh, ww = working_shape((H, W), opts.max_side)
    work = cv2.resize(small, (ww, wh), interpolation=cv2.INTER_AREA)
    labels_small = segment(work, opts.method, opts.params, max_side=None)
    t.join()
    if "error" in result:
        raise result["error"]
    image = result["image"]
    if image.shape[:2] != (H, W):
        return None
    return Prepared(path, image, upscale_labels(labels_small, (H, W)).astype(np.int32, copy=False))
