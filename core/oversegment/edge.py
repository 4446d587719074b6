"""Edge-based segmentation: Canny edges, closed by morphology, split the image into
the connected regions between them.

Reference: J. Canny, "A Computational Approach to Edge Detection", IEEE TPAMI 8(6),
1986, doi:10.1109/TPAMI.1986.4767851.
"""

from __future__ import annotations

import numpy as np
from pydantic import Field, model_validator

from segdeck.core.oversegment._params import MethodParams


class Params(MethodParams):
    """Canny edges + morphological closing + connected components; edge pixels are label 0."""

    blur: int = Field(5, ge=0, le=31, description="Gaussian blur kernel size before edge detection (0: none; odd)")
    low_threshold: float = Field(50.0, ge=0.0, le=1000.0, description="Canny lower hysteresis threshold")
    high_threshold: float = Field(150.0, ge=0.0, le=1000.0, description="Canny upper hysteresis threshold")
    edge_width: int = Field(3, ge=1, le=31, description="edges are dilated to this width so that they close up")
    min_size: int = Field(30, ge=0, le=1_000_000, description="regions smaller than this (working pixels) become edge")

    @model_validator(mode="after")
    def _order(self) -> Params:
        if self.low_threshold > self.high_threshold:
            raise ValueError("low_threshold must not exceed high_threshold")
        return self


def segment(image: np.ndarray, params: Params) -> np.ndarray:
    """Split an image along its edges.

    Parameters
    ----------
    image : ndarray of shape (H, W, 3), uint8 RGB
    params : Params

    Returns
    -------
    ndarray of shape (H, W), int32
        0 on (dilated) edges and in regions below ``min_size``; 1..N the 4-connected
        regions between the edges.
    """
    import cv2

    gray = cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    if params.blur >= 2:
        k = params.blur | 1
        gray = cv2.GaussianBlur(gray, (k, k), 0)
    edges = cv2.Canny(gray, params.low_threshold, params.high_threshold, L2gradient=True)
    if params.edge_width > 1:
        kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (params.edge_width, params.edge_width))
        edges = cv2.dilate(edges, kernel)
    free = (edges == 0).astype(np.uint8)
    n, labels = cv2.connectedComponents(free, connectivity=4, ltype=cv2.CV_32S)
    if params.min_size > 1 and n > 1:
        area = np.bincount(labels.ravel(), minlength=n)
        small = area < params.min_size
        small[0] = True
        labels[small[labels]] = 0
    return labels
