"""Quickshift mode seeking in colour + position space (scikit-image).

Reference: A. Vedaldi and S. Soatto, "Quick Shift and Kernel Methods for Mode
Seeking", ECCV 2008, doi:10.1007/978-3-540-88693-8_52.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field

from segdeck.core.oversegment._params import MethodParams


class Params(MethodParams):
    """skimage.segmentation.quickshift (on CIELAB colour)."""

    ratio: float = Field(1.0, ge=0.0, le=1.0, description="colour vs position balance: higher weighs colour more")
    kernel_size: float = Field(5.0, gt=0.0, le=50.0, description="Gaussian kernel width for the density estimate (pixels)")
    max_dist: float = Field(10.0, gt=0.0, le=1000.0, description="cut-off distance: higher gives fewer, larger segments")
    sigma: float = Field(0.0, ge=0.0, le=20.0, description="Gaussian pre-smoothing width (0: none)")
    seed: int = Field(42, ge=0, le=2**31 - 1, description="random seed for tie-breaking")


def segment(image: np.ndarray, params: Params) -> np.ndarray:
    """Quickshift segmentation.

    Parameters
    ----------
    image : ndarray of shape (H, W, 3), uint8 RGB
    params : Params

    Returns
    -------
    ndarray of shape (H, W), int32
        Labels 1..N, no edge pixels.
    """
    from skimage.segmentation import quickshift

    labels = quickshift(
        image, ratio=params.ratio, kernel_size=params.kernel_size, max_dist=params.max_dist,
        sigma=params.sigma, convert2lab=True, rng=params.seed, channel_axis=-1,
    )
    return labels.astype(np.int32) + 1
