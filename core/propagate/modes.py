"""Mask modes of group propagation: which object IDs the label maps carry.

- ``original``: the labeller's IDs, unchanged.
- ``position``: IDs by 2×2 quadrant (1 top-left, 2 top-right, 3 bottom-left,
  4 bottom-right). Each object's centroid (mean pixel coordinate, x = column, y = row)
  is compared with the mean of the object centroids of that image (each object counts
  once, whatever its area). Ties go left and up: an object whose ``cx`` equals the mean
  ``x`` is *left*, one whose ``cy`` equals the mean ``y`` is *top*; so a lone object is
  1, and two objects side by side at the same height are 1 and 2. Objects falling into
  the same quadrant (more than four objects, or several on one side) are merged under
  that quadrant's ID. The rule is applied to the reference label maps before they
  condition the model (so the model tracks quadrant IDs) and again to every predicted
  label map (a rotated specimen gets its IDs by where its parts are in that image).
- ``binary``: every object becomes 1 (applied to the predictions; the references keep
  their IDs so that each object is tracked on its own).

All functions take and return (H, W) integer label maps (0 = background) as int32.
"""

from __future__ import annotations

import numpy as np

__all__ = ["QUADRANT_NAMES", "apply_mode", "binary_labels", "position_labels", "reference_labels"]

#: Category names of the ``position`` IDs.
QUADRANT_NAMES = {1: "top-left", 2: "top-right", 3: "bottom-left", 4: "bottom-right"}


def binary_labels(labels: np.ndarray) -> np.ndarray:
    """Every object -> 1.

    Parameters
    ----------
    labels : ndarray of shape (H, W), integer

    Returns
    -------
    ndarray of shape (H, W), int32
        1 where ``labels > 0``, else 0.
    """
    return (np.asarray(labels) > 0).astype(np.int32)


def position_labels(labels: np.ndarray) -> np.ndarray:
    """Relabel objects by the quadrant of their centroid (see the module docstring).

    Parameters
    ----------
    labels : ndarray of shape (H, W), integer
        0 = background, other values objects.

    Returns
    -------
    ndarray of shape (H, W), int32
        Values in 0..4: 1 top-left, 2 top-right, 3 bottom-left, 4 bottom-right.

    Raises
    ------
    ValueError
        If ``labels`` is not 2-D.
    """
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"expected a (H, W) label map, got shape {labels.shape}")
    out = np.zeros(labels.shape, np.int32)
    ids = np.unique(labels)
    ids = ids[ids != 0]
    if ids.size == 0:
        return out
    flat = labels.ravel()
    idx = np.searchsorted(ids, flat)
    obj = (flat != 0)
    idx = np.where(obj, idx, 0)
    h, w = labels.shape
    ys, xs = np.divmod(np.arange(flat.size, dtype=np.int64), w)
    count = np.bincount(idx[obj], minlength=ids.size).astype(np.float64)
    cx = np.bincount(idx[obj], weights=xs[obj], minlength=ids.size) / count
    cy = np.bincount(idx[obj], weights=ys[obj], minlength=ids.size) / count
    mx, my = cx.mean(), cy.mean()
    quadrant = 1 + (cx > mx).astype(np.int32) + 2 * (cy > my).astype(np.int32)
    out.ravel()[obj] = quadrant[idx[obj]]
    return out


def reference_labels(labels: np.ndarray, mode: str) -> np.ndarray:
    """A reference label map as given to the model under ``mode`` (int32).

    ``position`` relabels by quadrant; ``original`` and ``binary`` keep the IDs.

    Raises
    ------
    ValueError
        Unknown mode.
    """
    if mode == "position":
        return position_labels(labels)
    if mode in ("original", "binary"):
        return np.asarray(labels).astype(np.int32, copy=False)
    raise ValueError(f"unknown mask mode {mode!r} (original, position, binary)")


def apply_mode(labels: np.ndarray, mode: str) -> np.ndarray:
    """A predicted label map as written under ``mode`` (int32).

    Raises
    ------
    ValueError
        Unknown mode.
    """
    if mode == "original":
        return np.asarray(labels).astype(np.int32, copy=False)
    if mode == "position":
        return position_labels(labels)
    if mode == "binary":
        return binary_labels(labels)
    raise ValueError(f"unknown mask mode {mode!r} (original, position, binary)")
