"""Chan-Vese two-phase level-set segmentation (scikit-image) of the gray image; each
connected piece of either phase becomes a segment.

Reference: T. F. Chan and L. A. Vese, "Active contours without edges", IEEE Trans.
Image Process. 10(2), 2001, doi:10.1109/83.902291.
"""

from __future__ import annotations

from typing import Literal

import numpy as np
from pydantic import Field

from segdeck.core.oversegment._labels import components, merge_small
from segdeck.core.oversegment._params import MethodParams


class Params(MethodParams):
    """Chan-Vese level set on the gray image (skimage.segmentation.chan_vese)."""

    mu: float = Field(0.25, ge=0.0, le=10.0, description="edge length weight: higher gives smoother, rounder boundaries")
    lambda1: float = Field(1.0, ge=0.0, le=100.0, description="weight of the inside (phase 1) fit")
    lambda2: float = Field(1.0, ge=0.0, le=100.0, description="weight of the outside (phase 2) fit")
    tol: float = Field(1e-3, gt=0.0, le=1.0, description="stop when the level set changes less than this")
    max_num_iter: int = Field(100, ge=1, le=5000, description="iteration cap (the level set rarely meets tol sooner on photos)")
    dt: float = Field(0.5, gt=0.0, le=10.0, description="time step")
    init_level_set: Literal["checkerboard", "disk", "small disk"] = Field("checkerboard", description="starting level set")
    level_set_side: int = Field(
        512, ge=0, le=100_000,
        description="longest side at which the level set evolves; it is then resized smoothly (0: the working resolution)",
    )
    smooth: float = Field(
        2.0, ge=0.0, le=50.0,
        description="Gaussian smoothing (level-set pixels) of the level set before the cut; removes checkerboard residue (0: none)",
    )
    min_size: int = Field(30, ge=0, le=1_000_000, description="pieces smaller than this (working pixels) join their nearest neighbour")


def segment(image: np.ndarray, params: Params) -> np.ndarray:
    """Chan-Vese segmentation.

    Parameters
    ----------
    image : ndarray of shape (H, W, 3), uint8 RGB
    params : Params

    The level set evolves on the gray image scaled to ``level_set_side`` (a two-phase
    model gains little from more pixels) and is resized (bilinear) before it is cut
    at zero, so boundaries stay smooth at the working resolution.

    Returns
    -------
    ndarray of shape (H, W), int32
        Labels 1..N: 4-connected pieces of the two phases. No edge pixels.
    """
    import cv2
    from skimage.segmentation import chan_vese

    from segdeck.core.oversegment._resize import working_shape

    h, w = image.shape[:2]
    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    lh, lw = working_shape(gray.shape, params.level_set_side or None)
    if (lh, lw) != (h, w):
        gray = cv2.resize(gray, (lw, lh), interpolation=cv2.INTER_AREA)
    _, phi, _ = chan_vese(
        gray.astype(np.float64) / 255.0, mu=params.mu, lambda1=params.lambda1, lambda2=params.lambda2,
        tol=params.tol, max_num_iter=params.max_num_iter, dt=params.dt,
        init_level_set=params.init_level_set, extended_output=True,
    )
    phi = phi.astype(np.float32)
    if params.smooth > 0:  # where the two phases fit equally well the checkerboard start survives
        phi = cv2.GaussianBlur(phi, (0, 0), params.smooth)
    if (lh, lw) != (h, w):  # the level set is smooth: resize it, then cut at 0
        phi = cv2.resize(phi, (w, h), interpolation=cv2.INTER_LINEAR)
    return merge_small(components((phi > 0).astype(np.int32)), params.min_size)
