"""Felzenszwalb-Huttenlocher graph-based segmentation (scikit-image).

Reference: P. F. Felzenszwalb and D. P. Huttenlocher, "Efficient Graph-Based Image
Segmentation", IJCV 59(2), 2004, doi:10.1023/B:VISI.0000022288.19776.77.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class Params(BaseModel):
    """skimage.segmentation.felzenszwalb on the RGB image."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    scale: float = Field(100.0, gt=0.0, le=100_000.0, description="observation scale: higher gives larger segments")
    sigma: float = Field(0.8, ge=0.0, le=20.0, description="Gaussian pre-smoothing width in pixels")
    min_size: int = Field(50, ge=1, le=1_000_000, description="minimum segment size in working pixels (merged in post-processing)")


def segment(image: np.ndarray, params: Params) -> np.ndarray:
    """Felzenszwalb segmentation.

    Parameters
    ----------
    image : ndarray of shape (H, W, 3), uint8 RGB
    params : Params

    Returns
    -------
    ndarray of shape (H, W), int32
        Labels 1..N, no edge pixels.
    """
    from skimage.segmentation import felzenszwalb

    labels = felzenszwalb(image, scale=params.scale, sigma=params.sigma, min_size=params.min_size, channel_axis=-1)
    return labels.astype(np.int32) + 1
