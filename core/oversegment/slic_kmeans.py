"""Superpixels, then k-means on the superpixels' mean colours: large colour-coherent
segments that follow superpixel boundaries (what the predecessor tool segdeck replaces
called "slickmeans": SLIC superpixels, then their mean colours clustered by k-means).

References: see :mod:`.superpixel` (SLIC/SLICO) and :mod:`.kmeans`.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from segdeck.core.oversegment._labels import components, merge_small
from segdeck.core.oversegment._params import MethodParams


class Params(MethodParams):
    """SLICO / SLIC superpixels, k-means on their mean colours, connected pieces."""

    algorithm: Literal["slico", "slic", "mslic"] = Field("slico", description="superpixel algorithm of the first stage")
    region_size: int = Field(16, ge=4, le=1000, description="average superpixel side in working-resolution pixels")
    ruler: float = Field(10.0, ge=0.1, le=1000.0, description="compactness of slic / mslic superpixels")
    iterations: int = Field(10, ge=1, le=100, description="superpixel iterations")
    k: int = Field(8, ge=2, le=256, description="number of colour clusters over the superpixels")
    color_space: Literal["lab", "rgb", "hsv"] = Field("lab", description="colour space of the superpixel means")
    attempts: int = Field(3, ge=1, le=20, description="k-means restarts")
    min_size: int = Field(30, ge=0, le=1_000_000, description="pieces smaller than this (working pixels) join their nearest neighbour")
    seed: int = Field(0, ge=0, le=2**31 - 1, description="random seed for k-means")


def segment(image: np.ndarray, params: Params) -> np.ndarray:
    """Superpixel-then-k-means segmentation.

    Parameters
    ----------
    image : ndarray of shape (H, W, 3), uint8 RGB
    params : Params

    Returns
    -------
    ndarray of shape (H, W), int32
        Labels 1..N; each a connected union of superpixels of one colour cluster.
    """
    from segdeck.core.oversegment.kmeans import Params as KParams
    from segdeck.core.oversegment.kmeans import features, kmeans
    from segdeck.core.oversegment.superpixel import slic_labels

    sp = slic_labels(image, params.algorithm, params.region_size, params.ruler, params.iterations)  # 1..S
    n = int(sp.max())
    feats = features(image, params.color_space).astype(np.float64)
    flat = sp.ravel()
    count = np.maximum(np.bincount(flat, minlength=n + 1), 1)
    means = np.stack([np.bincount(flat, weights=feats[:, c], minlength=n + 1) / count for c in range(3)], axis=1)
    kp = KParams(k=params.k, attempts=params.attempts, seed=params.seed, min_size=0)
    cluster_of = np.zeros(n + 1, np.int32)
    cluster_of[1:] = kmeans(means[1:].astype(np.float32), params.k, kp)
    return merge_small(components(cluster_of[sp]), params.min_size)
