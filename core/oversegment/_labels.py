"""Label-map helpers shared by the over-segmentation methods (vectorised, no pixel loops)."""

from __future__ import annotations

import numpy as np


def relabel(labels: np.ndarray) -> np.ndarray:
    """Renumber the labels present to 1..N in increasing order; 0 stays 0.

    Parameters
    ----------
    labels : ndarray of shape (H, W), non-negative int

    Returns
    -------
    ndarray of shape (H, W), int32
    """
    labels = np.asarray(labels)
    if labels.size == 0:
        return labels.astype(np.int32)
    lab = labels.astype(np.intp, copy=False)
    if int(lab.min()) < 0:
        raise ValueError("labels must be non-negative")
    present = np.zeros(int(lab.max()) + 1, dtype=bool)
    present[lab.ravel()] = True
    present[0] = False
    lut = (np.cumsum(present) * present).astype(np.int32)
    return lut[lab]


def components(classes: np.ndarray, connectivity: int = 1) -> np.ndarray:
    """Spatially connected segments of a class map (pixels of one class that touch).

    Parameters
    ----------
    classes : ndarray of shape (H, W), int
        Any integer class per pixel (e.g. a k-means cluster index).
    connectivity : {1, 2}
        1: 4-neighbourhood, 2: 8-neighbourhood.

    Returns
    -------
    ndarray of shape (H, W), int32
        Labels 1..N, one per connected piece of each class.
    """
    from skimage.measure import label

    classes = np.asarray(classes)
    shifted = classes.astype(np.int64) - int(classes.min()) + 1  # no pixel is background
    return label(shifted, background=0, connectivity=connectivity).astype(np.int32)


def merge_small(labels: np.ndarray, min_size: int) -> np.ndarray:
    """Give the pixels of segments smaller than ``min_size`` to the nearest larger segment.

    Label 0 (edges) is left alone and never grows.

    Parameters
    ----------
    labels : ndarray of shape (H, W), non-negative int
    min_size : int
        Minimum segment area in pixels; <= 1 returns the labels unchanged.

    Returns
    -------
    ndarray of shape (H, W), int32
        Relabelled 1..N.
    """
    from scipy import ndimage

    labels = relabel(labels)
    if min_size <= 1 or labels.size == 0 or labels.max() == 0:
        return labels
    area = np.bincount(labels.ravel())
    small = (area < min_size)[labels] & (labels > 0)
    if not small.any():
        return labels
    if small.sum() == (labels > 0).sum():  # every segment is small: keep the largest
        small &= labels != int(np.argmax(area[1:]) + 1)
    kept = np.where(small, 0, labels)
    _, (iy, ix) = ndimage.distance_transform_edt(kept == 0, return_indices=True)
    out = kept.copy()
    out[small] = kept[iy[small], ix[small]]
    return relabel(out)
