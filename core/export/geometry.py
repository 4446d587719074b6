"""Mask outlines as polygons along pixel edges (OpenCV contours).

A pixel ``(x, y)`` covers the square ``[x, x + 1) x [y, y + 1)``; the polygons here run
along those square edges (pixel *corners*, integer coordinates), not through pixel
centres, so a polygon encloses exactly the mask's pixels: pycocotools rasterises them
back to the same mask, and their shoelace area is the pixel count.

How: the mask (cropped to its box) is upsampled 2x with nearest neighbour, traced with
``cv2.findContours(RETR_CCOMP, CHAIN_APPROX_SIMPLE)`` (outer boundaries and holes,
8-connected), and each traced sub-pixel coordinate ``c`` maps to the corner
``ceil(c / 2)``: the left / top half of a pixel gives its left / top edge, the right /
bottom half its right / bottom edge.

Holes: COCO tools merge a list of polygons by *union* (``pycocotools.mask.merge``), so a
hole written as a ring of its own would be filled again. Each hole is therefore joined
to its outer ring by a zero-width cut (the ring runs to the hole, around it in the
opposite direction, and back along the same segment): one ring per connected part,
which pycocotools, OpenCV's ``fillPoly``, PIL (labelme) and Ultralytics all fill with
the hole left empty. The cut is visible as a line in polygon editors.
"""

from __future__ import annotations

import numpy as np


def _dedupe(ring: np.ndarray) -> np.ndarray:
    """Drop consecutive repeated points (and a closing repeat of the first one)."""
    if len(ring) < 2:
        return ring
    keep = np.ones(len(ring), bool)
    keep[1:] = np.any(ring[1:] != ring[:-1], axis=1)
    ring = ring[keep]
    if len(ring) > 1 and np.array_equal(ring[0], ring[-1]):
        ring = ring[:-1]
    return ring


def _join_holes(outer: np.ndarray, holes: list[np.ndarray]) -> np.ndarray:
    """One ring: ``outer`` with each hole spliced in at the outer vertex nearest to it.

    At that vertex the ring runs to the hole's nearest vertex, around the hole and back
    along the same segment. The two traversals of a cut cancel under the even-odd and the
    non-zero fill rules, so the cuts add no area, even where one crosses another hole
    (tools that also paint a polygon's edges, like ``cv2.fillPoly``, then fill the pixels
    under that cut). Nearest vertices come from a k-d tree: O(V log V) for V vertices,
    so a mask with thousands of holes stays fast.
    """
    from scipy.spatial import cKDTree

    tree = cKDTree(outer)
    attach: dict[int, list[np.ndarray]] = {}
    for hole in holes:
        dist, idx = tree.query(hole)
        j = int(np.argmin(dist))
        attach.setdefault(int(idx[j]), []).append(np.concatenate([hole[j:], hole[: j + 1]]))
    pieces, start = [], 0
    for i in sorted(attach):
        pieces.append(outer[start : i + 1])
        for loop in attach[i]:
            pieces += [loop, outer[i : i + 1]]
        start = i + 1
    pieces.append(outer[start:])
    return np.concatenate(pieces)


def mask_polygons(mask: np.ndarray, *, corners: bool = True, join_holes: bool = True) -> list[np.ndarray]:
    """Outline a mask as closed polygons.

    Parameters
    ----------
    mask : ndarray of shape (H, W), bool
    corners : bool
        True: vertices on pixel corners, the polygon encloses exactly the mask's pixel
        squares (COCO: pycocotools rasterises it back exactly). False: vertices on the
        centres of the boundary pixels, ``(x, y)`` = column, row (the convention of
        ``cv2.fillPoly``, PIL's ``ImageDraw.polygon`` and so labelme / X-AnyLabeling and
        Ultralytics, which fill a polygon *including* its boundary pixels).
    join_holes : bool
        Join each hole into its outer ring by a zero-width cut (default). False returns
        the outer rings only (holes filled).

    Returns
    -------
    list of ndarray of shape (K, 2), int64
        One ring per 8-connected part, vertices ``(x, y)``: pixel-corner coordinates
        (``0 .. W``, ``0 .. H``) or pixel centres (``0 .. W - 1``; a part of one or two
        pixels repeats its vertices), not closed (the last vertex is not the first again),
        at least 3 vertices. Empty for an empty mask.
    """
    import cv2

    mask = np.asarray(mask, dtype=bool)
    ys, xs = np.nonzero(mask)
    if ys.size == 0:
        return []
    x0, y0 = int(xs.min()), int(ys.min())
    crop = mask[y0 : int(ys.max()) + 1, x0 : int(xs.max()) + 1].astype(np.uint8)
    if corners:
        crop = np.repeat(np.repeat(crop, 2, axis=0), 2, axis=1)
    crop = cv2.copyMakeBorder(crop, 1, 1, 1, 1, cv2.BORDER_CONSTANT, value=0)
    contours, hierarchy = cv2.findContours(crop, cv2.RETR_CCOMP, cv2.CHAIN_APPROX_SIMPLE)
    if hierarchy is None:
        return []
    hierarchy = hierarchy[0]
    offset = np.array([x0, y0], np.int64)
    rings = []
    for c in contours:
        pts = c[:, 0, :].astype(np.int64) - 1  # undo the border
        rings.append(_dedupe(((pts + 1) // 2 if corners else pts) + offset))
    out = []
    for k, (_nxt, _prev, child, parent) in enumerate(hierarchy):
        if parent != -1:
            continue  # a hole: joined into its outer ring below
        ring = rings[k]
        holes = []
        while join_holes and child != -1:
            if len(rings[child]) >= (3 if corners else 1):
                holes.append(rings[child])
            child = hierarchy[child][0]
        if holes:
            ring = _join_holes(ring, holes)
        if len(ring) >= 3:
            out.append(ring)
        elif not corners:  # one pixel or two diagonal ones: repeat vertices (tools want >= 3)
            out.append(np.resize(ring, (3, 2)))
    return out


def polygon_area(ring: np.ndarray) -> float:
    """Shoelace area of a closed ring (K, 2) (absolute value, pixel units)."""
    x, y = ring[:, 0].astype(np.float64), ring[:, 1].astype(np.float64)
    return float(abs(np.dot(x, np.roll(y, -1)) - np.dot(y, np.roll(x, -1))) / 2.0)
