"""Overlays: region fills, contours and per-region text labels drawn on an image.

Drawing happens on RGB arrays (OpenCV drawing functions do not care about channel
order; colours here are given as RGB). Nothing is shown or written here.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from segdeck.core.regions import RegionStats


def label_colors(n: int, seed: int = 0) -> np.ndarray:
    """A colour per label.

    Parameters
    ----------
    n : int
        Largest label.
    seed : int
        Colours are random but reproducible for a seed.

    Returns
    -------
    ndarray of shape (n + 1, 3), uint8
        Row ``k`` is the RGB colour of label ``k``; row 0 (background) is black.
    """
    rng = np.random.default_rng(seed)
    colors = rng.integers(40, 256, size=(n + 1, 3), dtype=np.int64).astype(np.uint8)
    colors[0] = 0
    return colors


def boundaries(labels: np.ndarray, thickness: int = 1) -> np.ndarray:
    """Pixels on the border between two different labels (or label and background).

    Parameters
    ----------
    labels : ndarray of shape (H, W), int
    thickness : int
        Border width in pixels (>= 1); grown symmetrically by dilation.

    Returns
    -------
    ndarray of shape (H, W), bool
    """
    import cv2

    labels = np.asarray(labels)
    edge = np.zeros(labels.shape, dtype=bool)
    dx = labels[:, 1:] != labels[:, :-1]
    dy = labels[1:, :] != labels[:-1, :]
    edge[:, 1:] |= dx
    edge[1:, :] |= dy
    if thickness > 1:
        k = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (thickness, thickness))
        edge = cv2.dilate(edge.view(np.uint8), k).astype(bool)
    return edge


def auto_thickness(shape: Sequence[int]) -> int:
    """A contour width that stays visible when the image is viewed whole: 1 px per ~1000 px of the longest side."""
    return max(1, int(round(max(shape[:2]) / 1000)))


def _put_text(canvas: np.ndarray, text: str, org: tuple[int, int], scale: float, color) -> None:
    import cv2

    thick = max(1, int(round(scale * 2)))
    cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick + 2, cv2.LINE_AA)
    cv2.putText(canvas, text, org, cv2.FONT_HERSHEY_SIMPLEX, scale, color, thick, cv2.LINE_AA)


def _draw_texts(canvas: np.ndarray, stats: Sequence[RegionStats], max_text_labels: int) -> None:
    """Label regions largest first, skipping a label that would overlap one already
    placed or that is much wider than its region (so the overlay stays readable)."""
    import cv2

    h, w = canvas.shape[:2]
    scale = max(0.35, max(h, w) / 2500)
    taken = np.zeros((h, w), dtype=bool)
    placed = 0
    for stat in sorted(stats, key=lambda s: -s.area):
        if placed >= max_text_labels:
            break
        label = region_text(stat)
        (tw, th), base = cv2.getTextSize(label, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)
        x0, _, x1, _ = stat.bbox
        if (x1 - x0) * 1.5 < tw:
            continue
        x = min(max(0, int(round(stat.centroid[0] - tw / 2))), max(0, w - tw))
        y = min(max(th, int(round(stat.centroid[1] + th / 2))), h - 1 - base)
        box = (slice(max(0, y - th - 2), min(h, y + base + 2)), slice(max(0, x - 2), min(w, x + tw + 2)))
        if taken[box].any():
            continue
        taken[box] = True
        _put_text(canvas, label, (x, y), scale, (255, 255, 255))
        placed += 1


def region_text(stat: RegionStats) -> str:
    """The label drawn for a region: area, intensity and ratio, e.g. ``A1520 I68400 R45.0``."""
    return f"A{stat.area} I{stat.intensity:.0f} R{stat.ratio:.1f}"


def draw_overlay(
    image: np.ndarray,
    labels: np.ndarray,
    stats: Sequence[RegionStats] = (),
    *,
    fill_alpha: float = 0.3,
    contour_thickness: int = 0,
    contour_color: tuple[int, int, int] = (255, 255, 0),
    text: bool = True,
    max_text_labels: int = 300,
    seed: int = 0,
) -> np.ndarray:
    """Draw regions over an image.

    Parameters
    ----------
    image : ndarray of shape (H, W, 3), uint8 RGB
    labels : ndarray of shape (H, W), int
        0 = background (not filled), 1..N regions.
    stats : sequence of RegionStats
        Regions to annotate with :func:`region_text` at their centroid (largest first,
        at most ``max_text_labels``).
    fill_alpha : float
        Opacity of the per-region colour fill, 0..1 (0: contours only).
    contour_thickness : int
        Contour width in pixels; 0 chooses :func:`auto_thickness`.
    contour_color : tuple of 3 int
        RGB colour of the contours.
    text : bool
        Draw the per-region text labels.
    max_text_labels : int
        Cap on text labels so that thousands of small regions stay readable.
    seed : int
        Seed of the fill colours.

    Returns
    -------
    ndarray of shape (H, W, 3), uint8 RGB
        A new image; the input is not modified.

    Raises
    ------
    ValueError
        If the shapes of ``image`` and ``labels`` differ.
    """
    image = np.asarray(image)
    labels = np.asarray(labels)
    if image.shape[:2] != labels.shape or image.ndim != 3:
        raise ValueError(f"image {image.shape} and labels {labels.shape} do not match")
    canvas = image.copy()
    n = int(labels.max()) if labels.size else 0
    if fill_alpha > 0 and n > 0:
        import cv2

        tint = label_colors(n, seed)[labels]
        blended = cv2.addWeighted(canvas, 1.0 - fill_alpha, tint, fill_alpha, 0.0)
        np.copyto(canvas, blended, where=(labels > 0)[:, :, None])
    thickness = contour_thickness or auto_thickness(labels.shape)
    canvas[boundaries(labels, thickness)] = contour_color
    if text and stats and max_text_labels > 0:
        _draw_texts(canvas, stats, max_text_labels)
    return canvas
