"""OpenCV's graph segmentation (``cv2.ximgproc.segmentation.createGraphSegmentation``),
an implementation of the Felzenszwalb-Huttenlocher method in C++.

Reference: P. F. Felzenszwalb and D. P. Huttenlocher, "Efficient Graph-Based Image
Segmentation", IJCV 59(2), 2004, doi:10.1023/B:VISI.0000022288.19776.77.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, ConfigDict, Field


class Params(BaseModel):
    """cv2.ximgproc.segmentation GraphSegmentation."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    sigma: float = Field(0.5, ge=0.0, le=20.0, description="Gaussian pre-smoothing width in pixels")
    k: float = Field(300.0, gt=0.0, le=100_000.0, description="threshold constant: higher gives larger segments")
    min_size: int = Field(100, ge=1, le=1_000_000, description="minimum segment size in working pixels")


def segment(image: np.ndarray, params: Params) -> np.ndarray:
    """Graph segmentation.

    Parameters
    ----------
    image : ndarray of shape (H, W, 3), uint8 RGB
    params : Params

    Returns
    -------
    ndarray of shape (H, W), int32
        Labels 1..N, no edge pixels.
    """
    import cv2

    gs = cv2.ximgproc.segmentation.createGraphSegmentation(
        sigma=float(params.sigma), k=float(params.k), min_size=int(params.min_size)
    )
    labels = gs.processImage(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return labels.astype(np.int32) + 1
