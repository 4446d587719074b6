"""Superpixels from OpenCV's ``ximgproc`` module: SLIC, SLICO, MSLIC, SEEDS and LSC.

References
----------
SLIC: R. Achanta et al., "SLIC Superpixels Compared to State-of-the-Art Superpixel
Methods", IEEE TPAMI 34(11), 2012, doi:10.1109/TPAMI.2012.120 (SLICO is its
zero-parameter variant). MSLIC: Y.-J. Liu et al., "Manifold SLIC", CVPR 2016,
doi:10.1109/CVPR.2016.77. SEEDS: M. Van den Bergh et al., "SEEDS: Superpixels
Extracted via Energy-Driven Sampling", ECCV 2012, doi:10.1007/978-3-642-33786-4_2.
LSC: Z. Li and J. Chen, "Superpixel Segmentation using Linear Spectral Clustering",
CVPR 2015, doi:10.1109/CVPR.2015.7298741.
"""

from __future__ import annotations

import numpy as np
from pydantic import BaseModel, Field

from segdeck.core.oversegment._params import MethodParams


class SlicParams(MethodParams):
    """SLIC superpixels (OpenCV ximgproc)."""

    region_size: int = Field(24, ge=4, le=1000, description="average superpixel side in working-resolution pixels")
    ruler: float = Field(10.0, ge=0.1, le=1000.0, description="compactness: higher gives squarer superpixels")
    iterations: int = Field(10, ge=1, le=100, description="clustering iterations")
    min_element_size: int = Field(25, ge=0, le=100, description="superpixels smaller than this percent of region_size^2 are merged")


class SlicoParams(MethodParams):
    """SLICO: SLIC with adaptive compactness (no ruler to tune)."""

    region_size: int = Field(24, ge=4, le=1000, description="average superpixel side in working-resolution pixels")
    iterations: int = Field(10, ge=1, le=100, description="clustering iterations")
    min_element_size: int = Field(25, ge=0, le=100, description="superpixels smaller than this percent of region_size^2 are merged")


class MslicParams(MethodParams):
    """MSLIC: manifold SLIC, smaller superpixels where the content is dense."""

    region_size: int = Field(24, ge=4, le=1000, description="average superpixel side in working-resolution pixels")
    ruler: float = Field(10.0, ge=0.1, le=1000.0, description="compactness: higher gives squarer superpixels")
    iterations: int = Field(10, ge=1, le=100, description="clustering iterations")
    min_element_size: int = Field(25, ge=0, le=100, description="superpixels smaller than this percent of region_size^2 are merged")


class SeedsParams(MethodParams):
    """SEEDS superpixels: hill-climbing on colour histograms."""

    num_superpixels: int = Field(400, ge=2, le=100_000, description="desired number of superpixels")
    num_levels: int = Field(4, ge=1, le=10, description="block levels: more gives more accurate boundaries")
    prior: int = Field(2, ge=0, le=5, description="boundary smoothness prior (0: none)")
    histogram_bins: int = Field(5, ge=2, le=32, description="colour histogram bins per channel")
    double_step: bool = Field(False, description="run each block level twice (slower, more accurate)")
    iterations: int = Field(4, ge=1, le=100, description="refinement iterations")


class LscParams(MethodParams):
    """LSC superpixels: linear spectral clustering."""

    region_size: int = Field(24, ge=4, le=1000, description="average superpixel side in working-resolution pixels")
    ratio: float = Field(0.075, ge=0.0, le=1.0, description="compactness factor")
    iterations: int = Field(10, ge=1, le=100, description="clustering iterations")
    min_element_size: int = Field(25, ge=0, le=100, description="superpixels smaller than this percent of region_size^2 are merged")


#: method name -> params model (read by the registry).
PARAMS: dict[str, type[BaseModel]] = {
    "slic": SlicParams,
    "slico": SlicoParams,
    "mslic": MslicParams,
    "seeds": SeedsParams,
    "lsc": LscParams,
}


def _lab(image: np.ndarray) -> np.ndarray:
    import cv2

    return cv2.cvtColor(image, cv2.COLOR_RGB2LAB)


def slic_labels(
    image: np.ndarray, algorithm: str, region_size: int, ruler: float = 10.0, iterations: int = 10,
    min_element_size: int = 25,
) -> np.ndarray:
    """SLIC / SLICO / MSLIC labels 1..N of an (H, W, 3) uint8 RGB image (computed in CIELAB)."""
    import cv2

    algo = {"slic": cv2.ximgproc.SLIC, "slico": cv2.ximgproc.SLICO, "mslic": cv2.ximgproc.MSLIC}[algorithm]
    region = min(region_size, max(2, min(image.shape[:2])))
    sp = cv2.ximgproc.createSuperpixelSLIC(_lab(image), algorithm=algo, region_size=region, ruler=float(ruler))
    sp.iterate(iterations)
    if min_element_size > 0:
        sp.enforceLabelConnectivity(min_element_size)
    return sp.getLabels().astype(np.int32) + 1


def _slic_family(image: np.ndarray, algorithm: str, params) -> np.ndarray:
    return slic_labels(
        image, algorithm, params.region_size, getattr(params, "ruler", 10.0), params.iterations,
        params.min_element_size,
    )


def segment_slic(image: np.ndarray, params: SlicParams) -> np.ndarray:
    """SLIC superpixels.

    Parameters
    ----------
    image : ndarray of shape (H, W, 3), uint8 RGB
    params : SlicParams

    Returns
    -------
    ndarray of shape (H, W), int32
        Superpixel labels 1..N (no edge pixels).
    """
    return _slic_family(image, "slic", params)


def segment_slico(image: np.ndarray, params: SlicoParams) -> np.ndarray:
    """SLICO superpixels (adaptive compactness). Same contract as :func:`segment_slic`."""
    return _slic_family(image, "slico", params)


def segment_mslic(image: np.ndarray, params: MslicParams) -> np.ndarray:
    """Manifold SLIC superpixels. Same contract as :func:`segment_slic`."""
    return _slic_family(image, "mslic", params)


def segment_seeds(image: np.ndarray, params: SeedsParams) -> np.ndarray:
    """SEEDS superpixels.

    Parameters
    ----------
    image : ndarray of shape (H, W, 3), uint8 RGB
    params : SeedsParams

    Returns
    -------
    ndarray of shape (H, W), int32
        Superpixel labels 1..N.
    """
    import cv2

    h, w = image.shape[:2]
    sp = cv2.ximgproc.createSuperpixelSEEDS(
        w, h, 3, params.num_superpixels, params.num_levels, params.prior, params.histogram_bins, params.double_step
    )
    sp.iterate(cv2.cvtColor(image, cv2.COLOR_RGB2HSV), params.iterations)
    return sp.getLabels().astype(np.int32) + 1


def segment_lsc(image: np.ndarray, params: LscParams) -> np.ndarray:
    """LSC superpixels.

    Parameters
    ----------
    image : ndarray of shape (H, W, 3), uint8 RGB
    params : LscParams

    Returns
    -------
    ndarray of shape (H, W), int32
        Superpixel labels 1..N.
    """
    import cv2

    region = min(params.region_size, max(2, min(image.shape[:2])))
    sp = cv2.ximgproc.createSuperpixelLSC(_lab(image), region_size=region, ratio=float(params.ratio))
    sp.iterate(params.iterations)
    if params.min_element_size > 0:
        sp.enforceLabelConnectivity(params.min_element_size)
    return sp.getLabels().astype(np.int32) + 1
