"""Felzenszwalb-Huttenlocher graph-based segmentation, in two implementations:
``felzenszwalb`` (scikit-image) and ``graph`` (OpenCV's C++
``cv2.ximgproc.segmentation.createGraphSegmentation``, faster on large images).

Both merge neighbouring regions while the difference between them is small compared
with their internal variation; ``scale`` (scikit-image) and ``k`` (OpenCV) are the
same threshold constant: higher gives larger segments.

Reference: P. F. Felzenszwalb and D. P. Huttenlocher, "Efficient Graph-Based Image
Segmentation", IJCV 59(2), 2004, doi:10.1023/B:VISI.0000022288.19776.77.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field

from segdeck.core.oversegment._params import MethodParams


class FelzenszwalbParams(MethodParams):
    """skimage.segmentation.felzenszwalb on the RGB image."""

    scale: float = Field(100.0, gt=0.0, le=100_000.0, description="observation scale: higher gives larger segments")
    sigma: float = Field(0.8, ge=0.0, le=20.0, description="Gaussian pre-smoothing width in pixels")
    min_size: int = Field(50, ge=1, le=1_000_000, description="minimum segment size in working pixels (merged in post-processing)")


class GraphParams(MethodParams):
    """cv2.ximgproc.segmentation GraphSegmentation."""

    sigma: float = Field(0.5, ge=0.0, le=20.0, description="Gaussian pre-smoothing width in pixels")
    k: float = Field(300.0, gt=0.0, le=100_000.0, description="threshold constant: higher gives larger segments")
    min_size: int = Field(100, ge=1, le=1_000_000, description="minimum segment size in working pixels")


#: method name -> params model (the registry's per-method lookup)
PARAMS: dict[str, type[BaseModel]] = {"felzenszwalb": FelzenszwalbParams, "graph": GraphParams}


def segment_felzenszwalb(image: np.ndarray, params: FelzenszwalbParams) -> np.ndarray:
    """Felzenszwalb segmentation with scikit-image.

    Parameters
    ----------
    image : ndarray of shape (H, W, 3), uint8 RGB
    params : FelzenszwalbParams

    Returns
    -------
    ndarray of shape (H, W), int32
        Labels 1..N, no edge pixels.
    """
    from skimage.segmentation import felzenszwalb

    labels = felzenszwalb(image, scale=params.scale, sigma=params.sigma, min_size=params.min_size, channel_axis=-1)
    return labels.astype(np.int32) + 1


def segment_graph(image: np.ndarray, params: GraphParams) -> np.ndarray:
    """Felzenszwalb segmentation with OpenCV. Same contract as :func:`segment_felzenszwalb`."""
    import cv2

    gs = cv2.ximgproc.segmentation.createGraphSegmentation(
        sigma=float(params.sigma), k=float(params.k), min_size=int(params.min_size)
    )
    labels = gs.processImage(cv2.cvtColor(image, cv2.COLOR_RGB2BGR))
    return labels.astype(np.int32) + 1
