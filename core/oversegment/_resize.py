"""Run a segmenter at a bounded working resolution and map its labels back.

A 12-megapixel photo is downscaled (``cv2.INTER_AREA``, which averages pixels and
so does not alias) until its longest side is ``max_side``; the method runs there;
the label map is scaled back up with nearest-neighbour lookup, which never invents
labels and keeps every label (including the 0 = edge label) that the method
produced. An edge line one working pixel wide becomes ``1 / scale`` full-resolution
pixels wide: the same fraction of the picture as at the working size.

Tiny images go the other way: a side shorter than :data:`MIN_SIDE` is stretched to it
before the method runs (OpenCV's superpixel code crashes the process, or never returns,
on images a few pixels across), and the labels are sampled back down.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from segdeck.core.oversegment._labels import relabel

#: Shortest side a method ever sees, in pixels (smaller sides are stretched to it).
MIN_SIDE = 64


def working_shape(shape: tuple[int, ...], max_side: int | None, min_side: int = MIN_SIDE) -> tuple[int, int]:
    """(height, width) at which a method runs for an image of ``shape`` (H, W, ...).

    The longest side is brought down to ``max_side`` keeping the aspect ratio (images
    already within it, or ``max_side`` None, keep their size); then any side shorter
    than ``min_side`` is stretched to ``min_side`` on its own.
    """
    h, w = int(shape[0]), int(shape[1])
    if max_side is not None and max(h, w) > max_side:
        scale = max_side / max(h, w)
        h, w = max(1, int(round(h * scale))), max(1, int(round(w * scale)))
    return max(h, min_side), max(w, min_side)


def upscale_labels(labels: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Nearest-neighbour resize of a label map to ``shape`` (H, W), pixel-centre aligned.

    Upscaling keeps every label; downscaling (a stretched tiny image) may drop some.

    Parameters
    ----------
    labels : ndarray of shape (h, w), int
    shape : tuple (H, W)

    Returns
    -------
    ndarray of shape (H, W), same dtype
    """
    h, w = labels.shape
    H, W = shape
    if (h, w) == (H, W):
        return labels
    rows = np.minimum(((np.arange(H) + 0.5) * (h / H)).astype(np.intp), h - 1)
    cols = np.minimum(((np.arange(W) + 0.5) * (w / W)).astype(np.intp), w - 1)
    return labels[rows[:, None], cols[None, :]]


def run_at_working_size(
    fn: Callable[[np.ndarray], np.ndarray], image: np.ndarray, max_side: int | None
) -> np.ndarray:
    """Call ``fn`` on a downscaled copy of ``image`` and return full-resolution labels.

    Parameters
    ----------
    fn : callable
        ``fn(image) -> labels``: (h, w, 3) uint8 RGB in, (h, w) int label map out
        (0 = edge, 1..N segments).
    image : ndarray of shape (H, W, 3), uint8 RGB
    max_side : int or None
        Longest side of the working image in pixels; None runs at full resolution.
        Sides below :data:`MIN_SIDE` are stretched to it.

    Returns
    -------
    ndarray of shape (H, W), int32
        Labels renumbered 1..N (0 kept for edges).

    Raises
    ------
    RuntimeError
        If ``fn`` returns a label map of the wrong shape.
    """
    import cv2

    h, w = image.shape[:2]
    wh, ww = working_shape(image.shape, max_side)
    if (wh, ww) == (h, w):
        work = image
    else:
        shrink = wh <= h and ww <= w
        work = cv2.resize(image, (ww, wh), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    labels = np.asarray(fn(np.ascontiguousarray(work)))
    if labels.shape != (wh, ww):
        raise RuntimeError(f"segmenter returned labels of shape {labels.shape} for an image of {(wh, ww)}")
    if wh <= h and ww <= w:
        return upscale_labels(relabel(labels), (h, w))
    return relabel(upscale_labels(labels, (h, w)))  # sampled down: some labels may be gone
