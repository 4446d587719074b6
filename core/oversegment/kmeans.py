"""k-means colour clustering (``cv2.kmeans``) followed by connected components, so
that each label is one spatial segment (one piece of one colour cluster).

Reference: S. Lloyd, "Least squares quantization in PCM", IEEE Trans. Inf. Theory
28(2), 1982, doi:10.1109/TIT.1982.1056489; k-means++ seeding: D. Arthur and
S. Vassilvitskii, SODA 2007.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from segdeck.core.oversegment._labels import components, merge_small
from segdeck.core.oversegment._params import MethodParams


class Params(MethodParams):
    """k-means on pixel colours (optionally with position), then connected pieces."""

    k: int = Field(8, ge=2, le=256, description="number of colour clusters")
    color_space: Literal["lab", "rgb", "hsv"] = Field("lab", description="colour space the clusters are formed in")
    spatial_weight: float = Field(0.0, ge=0.0, le=10.0, description="weight of pixel position (x, y) against colour (0: colour only)")
    attempts: int = Field(3, ge=1, le=20, description="k-means restarts; the best compactness wins")
    max_iter: int = Field(20, ge=1, le=1000, description="iterations per attempt")
    epsilon: float = Field(1.0, gt=0.0, le=100.0, description="stop when centres move less than this")
    blur: int = Field(5, ge=0, le=31, description="Gaussian blur kernel before clustering, against noise (0: none)")
    smooth: int = Field(5, ge=0, le=31, description="majority filter window on the cluster map, removes speckle (0: none)")
    min_size: int = Field(30, ge=0, le=1_000_000, description="pieces smaller than this (working pixels) join their nearest neighbour")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="random seed (cv2.setRNGSeed) for reproducible clusters")


def features(image: np.ndarray, color_space: str, spatial_weight: float = 0.0) -> np.ndarray:
    """Per-pixel feature rows (float32, (H*W, 3 or 5)) for clustering."""
    import cv2

    code = {"lab": cv2.COLOR_RGB2LAB, "hsv": cv2.COLOR_RGB2HSV_FULL}.get(color_space)
    img = cv2.cvtColor(image, code) if code is not None else image
    feats = img.reshape(-1, 3).astype(np.float32)
    if spatial_weight > 0:
        h, w = image.shape[:2]
        scale = spatial_weight * 255.0 / max(h, w)
        yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
        feats = np.hstack([feats, (xx.reshape(-1, 1) * scale), (yy.reshape(-1, 1) * scale)])
    return feats


def kmeans(data: np.ndarray, k: int, params: Params) -> np.ndarray:
    """Cluster index (int32, (M,)) per row of ``data`` with ``cv2.kmeans`` (k-means++ seeding)."""
    import cv2

    k = max(1, min(k, data.shape[0]))
    cv2.setRNGSeed(int(params.seed))
    criteria = (cv2.TERM_CRITERIA_EPS + cv2.TERM_CRITERIA_MAX_ITER, params.max_iter, params.epsilon)
    _, labels, _ = cv2.kmeans(np.ascontiguousarray(data, np.float32), k, None, criteria, params.attempts, cv2.KMEANS_PP_CENTERS)
    return labels.ravel().astype(np.int32)


def majority_filter(classes: np.ndarray, k: int, window: int) -> np.ndarray:
    """Replace each class index by the most frequent one in a ``window`` x ``window``
    neighbourhood (one box filter per class; ties go to the lower index).

    Parameters
    ----------
    classes : ndarray of shape (H, W), int in 0..k-1
    k : int
        Number of classes.
    window : int
        Odd window side in pixels; < 2 returns ``classes`` unchanged.
    """
    import cv2

    if window < 2:
        return classes
    window |= 1
    best = np.zeros(classes.shape, np.float32)
    out = classes.copy()
    for c in range(k):
        votes = cv2.blur((classes == c).astype(np.float32), (window, window), borderType=cv2.BORDER_REFLECT)
        better = votes > best
        out[better] = c
        best[better] = votes[better]
    return out


def segment(image: np.ndarray, params: Params) -> np.ndarray:
    """k-means colour segmentation.

    Parameters
    ----------
    image : ndarray of shape (H, W, 3), uint8 RGB
    params : Params

    The image is blurred (``blur``), pixels are clustered by colour, the cluster map is
    cleaned by a majority filter (``smooth``), and each connected piece of a cluster
    becomes a segment.

    Returns
    -------
    ndarray of shape (H, W), int32
        Labels 1..N: 4-connected pieces of each colour cluster, pieces below
        ``min_size`` merged into the nearest larger one. No edge pixels.
    """
    import cv2

    h, w = image.shape[:2]
    if params.blur >= 2:
        image = cv2.GaussianBlur(image, (params.blur | 1, params.blur | 1), 0)
    clusters = kmeans(features(image, params.color_space, params.spatial_weight), params.k, params).reshape(h, w)
    clusters = majority_filter(clusters, params.k, params.smooth)
    return merge_small(components(clusters), params.min_size)
