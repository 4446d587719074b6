"""Point proposals for a region sweep: where to prompt SAM, in which order.

Pure functions on arrays (no model, no I/O). Two sources, in this order:

1. **Contours** of an edge map (Canny) or a threshold map (Otsu), largest enclosed
   area first, one *interior point* per contour (:func:`interior_point`: the contour's
   centroid when it lies inside the filled contour, else the pixel farthest from the
   contour's boundary by the Euclidean distance transform), at most
   ``max_contour_points`` of them. Large, salient objects are prompted first, so
   they claim their pixels before the smaller ones (see :mod:`.sweep`).
2. A **grid** of ``columns x rows`` cell centres, row by row (top to bottom, left to
   right), which covers whatever the contours missed.

Points are integer ``(x, y)`` pixels (column, row) of the image. A point that lands on
pixels already claimed by an earlier region is skipped at sweep time
(:func:`segdeck.core.describe.sweep.sweep`), not here: claiming depends on the masks.

Canny, "A computational approach to edge detection", IEEE TPAMI 1986; Otsu, "A
threshold selection method from gray-level histograms", IEEE TSMC 1979; Suzuki & Abe,
"Topological structural analysis of digitized binary images by border following",
CVGIP 1985 (OpenCV's ``findContours``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
from pydantic import Field

from segdeck.core.params import JobParams

__all__ = [
    "PointParams",
    "PointProposal",
    "contour_map",
    "contour_points",
    "grid_points",
    "interior_point",
    "propose_points",
]

Source = Literal["contour", "grid"]


@dataclass(frozen=True)
class PointProposal:
    """One point to prompt.

    Attributes
    ----------
    x, y : int
        Pixel column and row of the image (0-based).
    source : {"contour", "grid"}
        Where the point came from.
    rank : int
        0-based position within its source (contour rank by area, or grid cell index
        ``row * columns + column``).
    contour_area : float or None
        Area (pixels, OpenCV's ``contourArea``) of the contour the point stands for;
        None for grid points.
    """

    x: int
    y: int
    source: Source
    rank: int
    contour_area: float | None = None

    @property
    def xy(self) -> tuple[int, int]:
        """``(x, y)``."""
        return (self.x, self.y)


class PointParams(JobParams):
    """Where the sweep prompts: contour points first (largest first), then a grid."""

    contours: bool = Field(True, description="propose one interior point per contour (largest contours first)")
    contour_map: Literal["edges", "threshold"] = Field(
        "edges", description="contours of the Canny edge map (edges) or of the Otsu threshold map, both polarities (threshold)")
    canny_low: int = Field(50, ge=0, le=1000, description="edges: Canny's lower hysteresis threshold (gray levels)")
    canny_high: int = Field(150, ge=1, le=1000, description="edges: Canny's upper hysteresis threshold (gray levels)")
    blur: int = Field(5, ge=0, le=51, description="Gaussian blur kernel side before the map (pixels, odd; 0: none)")
    max_contour_points: int = Field(30, ge=0, le=10_000, description="at most this many contour points (the largest contours)")
    min_contour_area: float = Field(100.0, ge=0, description="contours enclosing fewer pixels give no point")
    grid_columns: int = Field(6, ge=0, le=1000, description="grid points across (0: no grid)")
    grid_rows: int = Field(6, ge=0, le=1000, description="grid points down (0: no grid)")


def _gray(image: np.ndarray) -> np.ndarray:
    import cv2

    image = np.asarray(image)
    if image.ndim == 2:
        gray = image
    elif image.ndim == 3 and image.shape[2] == 3:
        gray = cv2.cvtColor(np.ascontiguousarray(image), cv2.COLOR_RGB2GRAY)
    else:
        raise ValueError(f"image must be (H, W, 3) RGB or (H, W) gray, got shape {image.shape}")
    if gray.dtype != np.uint8:
        raise ValueError(f"image must be uint8, got {gray.dtype}")
    return gray


def contour_map(
    image: np.ndarray,
    kind: Literal["edges", "threshold"] = "edges",
    *,
    canny_low: int = 50,
    canny_high: int = 150,
    blur: int = 5,
) -> list[np.ndarray]:
    """Binary maps whose outer contours are the proposals.

    Parameters
    ----------
    image : ndarray of shape (H, W, 3) uint8 RGB, or (H, W) uint8 gray
    kind : {"edges", "threshold"}
        ``"edges"``: Canny edges (thresholds ``canny_low``, ``canny_high``), dilated by
        one pixel so that edge chains close around objects; one map.
        ``"threshold"``: Otsu's threshold; two maps, the bright pixels and the dark
        ones, so objects lighter and darker than their surroundings both count.
    canny_low, canny_high : int
        Canny's hysteresis thresholds (gray levels, 0..255 for uint8).
    blur : int
        Side of the Gaussian kernel applied first (pixels; even values are rounded up
        to odd; 0 or 1: no blur).

    Returns
    -------
    list of ndarray of shape (H, W), uint8 (0 / 255)

    Raises
    ------
    ValueError
        Not a uint8 RGB or gray image, or an unknown ``kind``.
    """
    import cv2

    gray = _gray(image)
    if blur > 1:
        k = blur | 1
        gray = cv2.GaussianBlur(gray, (k, k), 0)
    if kind == "edges":
        edges = cv2.Canny(gray, canny_low, canny_high)
        return [cv2.dilate(edges, np.ones((3, 3), np.uint8))]
    if kind == "threshold":
        _, bright = cv2.threshold(gray, 0, 255, cv2.THRESH_BINARY + cv2.THRESH_OTSU)
        return [bright, cv2.bitwise_not(bright)]
    raise ValueError(f"contour map must be 'edges' or 'threshold', got {kind!r}")


def interior_point(mask: np.ndarray) -> tuple[int, int]:
    """A point inside a region: its centroid when that pixel is in the region, else the
    pixel farthest from the region's boundary.

    The centroid of a C-shaped or ring-shaped region lies in its hole; the maximum of
    the Euclidean distance transform (distance to the nearest pixel outside, the image
    border counting as outside) is then the most interior pixel, the centre of the
    largest inscribed disc. Ties go to the first pixel in row-major order.

    Parameters
    ----------
    mask : ndarray of shape (H, W), bool
        The region (non-zero = inside).

    Returns
    -------
    (x, y) : tuple of int
        Column and row of the point; ``mask[y, x]`` is True.

    Raises
    ------
    ValueError
        Not a 2-D mask, or an empty one.
    """
    import cv2

    mask = np.asarray(mask)
    if mask.ndim != 2:
        raise ValueError(f"mask must be (H, W), got shape {mask.shape}")
    inside = mask.astype(bool)
    ys, xs = np.nonzero(inside)
    if len(xs) == 0:
        raise ValueError("interior_point of an empty mask")
    cx, cy = int(round(float(xs.mean()))), int(round(float(ys.mean())))
    if inside[cy, cx]:
        return cx, cy
    padded = np.pad(inside.astype(np.uint8), 1)  # the image border is outside
    dist = cv2.distanceTransform(padded, cv2.DIST_L2, cv2.DIST_MASK_PRECISE)[1:-1, 1:-1]
    y, x = np.unravel_index(int(np.argmax(dist)), dist.shape)
    return int(x), int(y)


def contour_points(
    image: np.ndarray,
    kind: Literal["edges", "threshold"] = "edges",
    *,
    max_points: int = 30,
    min_area: float = 100.0,
    canny_low: int = 50,
    canny_high: int = 150,
    blur: int = 5,
) -> list[PointProposal]:
    """One interior point per outer contour of :func:`contour_map`, largest first.

    Each outer contour (OpenCV ``RETR_EXTERNAL``) is filled (for the threshold map:
    intersected with the map, so a component's holes, which are other regions, are
    not its interior); its area is OpenCV's
    ``contourArea`` (pixels); contours below ``min_area`` are dropped, the rest sorted
    by decreasing area (ties: the order ``findContours`` returns), and the first
    ``max_points`` give :func:`interior_point` of their filled polygon.

    Parameters
    ----------
    image : ndarray of shape (H, W, 3) uint8 RGB, or (H, W) uint8 gray
    kind, canny_low, canny_high, blur
        See :func:`contour_map`.
    max_points : int
        Cap on the points returned (>= 0).
    min_area : float
        Smallest contour area that gives a point (pixels).

    Returns
    -------
    list of PointProposal
        ``source="contour"``, ``rank`` 0.. in decreasing contour area.

    Raises
    ------
    ValueError
        Bad image or ``kind``; a negative ``max_points``.
    """
    import cv2

    if max_points < 0:
        raise ValueError(f"max_points must be >= 0, got {max_points}")
    maps = contour_map(image, kind, canny_low=canny_low, canny_high=canny_high, blur=blur)
    if max_points == 0:
        return []
    found: list[tuple[float, int, np.ndarray, int]] = []
    for m, binary in enumerate(maps):
        contours, _ = cv2.findContours(binary, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        for c in contours:
            area = float(cv2.contourArea(c))
            if area >= min_area and area > 0:
                found.append((area, len(found), c, m))
    found.sort(key=lambda t: (-t[0], t[1]))
    h, w = maps[0].shape
    points = []
    for area, _, c, m in found[:max_points]:
        filled = np.zeros((h, w), np.uint8)
        cv2.drawContours(filled, [c], -1, 1, thickness=cv2.FILLED)
        if kind == "threshold":  # the component's own pixels: its holes are other regions
            filled &= maps[m] > 0
        x, y = interior_point(filled)
        points.append(PointProposal(x, y, "contour", len(points), area))
    return points


def grid_points(shape: tuple[int, ...], columns: int, rows: int) -> list[PointProposal]:
    """Centres of a ``columns x rows`` grid of equal cells over an image, row by row.

    Point ``(i, j)`` (column ``i``, row ``j``) is ``x = floor((i + 0.5) * W / columns)``,
    ``y = floor((j + 0.5) * H / rows)``; the order is top row first, left to right.

    Parameters
    ----------
    shape : tuple
        ``(H, W, ...)`` of the image.
    columns, rows : int
        Grid size (>= 0; either 0 gives no points).

    Returns
    -------
    list of PointProposal
        ``source="grid"``, ``rank = j * columns + i``.

    Raises
    ------
    ValueError
        Negative grid sizes.
    """
    if columns < 0 or rows < 0:
        raise ValueError(f"grid size must be >= 0, got {columns} x {rows}")
    h, w = int(shape[0]), int(shape[1])
    out = []
    for j in range(rows):
        y = min(h - 1, int((j + 0.5) * h / rows))
        for i in range(columns):
            x = min(w - 1, int((i + 0.5) * w / columns))
            out.append(PointProposal(x, y, "grid", j * columns + i))
    return out


def propose_points(image: np.ndarray, params: PointParams | None = None) -> list[PointProposal]:
    """Every point of a sweep, in prompt order: contour points, then grid points.

    Parameters
    ----------
    image : ndarray of shape (H, W, 3), uint8 RGB
    params : PointParams, optional
        Defaults: :class:`PointParams` defaults.

    Returns
    -------
    list of PointProposal
    """
    p = params or PointParams()
    points: list[PointProposal] = []
    if p.contours:
        points += contour_points(
            image, p.contour_map, max_points=p.max_contour_points, min_area=p.min_contour_area,
            canny_low=p.canny_low, canny_high=p.canny_high, blur=p.blur,
        )
    points += grid_points(np.asarray(image).shape, p.grid_columns, p.grid_rows)
    return points
