"""Region statistics and the two-stage region filters.

Every pixel gets an *aggregate* value from its gray level,
``aggregate = 100 - gray / 255 * 100`` (0 = white, 100 = black; gray is the
ITU-R BT.601 luma of the RGB image, as ``cv2.COLOR_RGB2GRAY`` computes it).
A region (a mask, or one label of a label map) then has

* area ``A``: its number of pixels,
* intensity ``I``: the sum of the aggregate over its pixels,
* ratio ``R = I / A``: its mean aggregate (0..100).

The filters (behaviour of the SAM-HQ batch tool's two-stage filtering):

1. *Region filters* keep a region when it passes every enabled test:
   ``A >= min_area`` (area filter), ``I >= min_intensity`` and ``R >= min_ratio``
   (intensity/ratio filter). Both tests can be switched off separately.
2. *Pixel filter*: inside the regions kept by phase 1, only pixels whose aggregate
   lies in ``[min_aggregate, max_aggregate]`` are kept; ``A``, ``I`` and ``R`` are
   recomputed on those pixels. A region left with no pixel is dropped.

Everything works on whole arrays (``np.bincount``, reductions along axes); there
is no Python loop over pixels. Masks are bool arrays (N, H, W); label maps are
(H, W) integer arrays with 0 = background.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
from pydantic import Field, model_validator

from segdeck.core.params import JobParams


class RegionFilterParams(JobParams):
    """Two-stage region filters: per-region area / intensity / ratio, then per-pixel aggregate range."""

    enabled: bool = Field(True, description="apply the region filters at all (off: keep every region as segmented)")
    area_filter: bool = Field(True, description="phase 1: drop regions smaller than min_area")
    min_area: int = Field(199, ge=0, le=100_000_000, description="phase 1: minimum region area A in pixels")
    intensity_ratio_filter: bool = Field(
        True, description="phase 1: drop regions below min_intensity or min_ratio"
    )
    min_intensity: float = Field(
        0.0, ge=0.0, le=1e12, description="phase 1: minimum intensity I (sum of pixel aggregates, 0..100 each)"
    )
    min_ratio: float = Field(44.0, ge=0.0, le=100.0, description="phase 1: minimum ratio R = I / A (mean aggregate)")
    pixel_filter: bool = Field(True, description="phase 2: keep only pixels whose aggregate is in the range below")
    min_aggregate: float = Field(35.0, ge=0.0, le=100.0, description="phase 2: lowest pixel aggregate kept (0 white .. 100 black)")
    max_aggregate: float = Field(100.0, ge=0.0, le=100.0, description="phase 2: highest pixel aggregate kept")

    @model_validator(mode="after")
    def _range_order(self) -> RegionFilterParams:
        if self.min_aggregate > self.max_aggregate:
            raise ValueError(
                f"min_aggregate ({self.min_aggregate}) must not exceed max_aggregate ({self.max_aggregate})"
            )
        return self


@dataclass(frozen=True)
class RegionStats:
    """Statistics of one region.

    Attributes
    ----------
    label : int
        The region's label (1-based) in the label map or mask list it describes.
    area : int
        ``A``, pixels.
    intensity : float
        ``I``, sum of the pixel aggregates (each 0..100).
    ratio : float
        ``R = I / A`` (0..100); 0 for an empty region.
    bbox : tuple of 4 int
        ``(x0, y0, x1, y1)``, XYXY in pixels; ``x1`` and ``y1`` are exclusive (one past
        the last pixel), so the width is ``x1 - x0``.
    centroid : tuple of 2 float
        ``(x, y)`` mean pixel coordinate.
    scores : mapping of str to float
        Extra per-region values carried along (e.g. SAM's ``predicted_iou``).
    """

    label: int
    area: int
    intensity: float
    ratio: float
    bbox: tuple[int, int, int, int]
    centroid: tuple[float, float]
    scores: Mapping[str, float] = field(default_factory=dict)

    def as_row(self) -> dict[str, float | int]:
        """Flat dict for a CSV row: label, area, intensity, ratio, x0, y0, x1, y1, cx, cy, scores."""
        x0, y0, x1, y1 = self.bbox
        row: dict[str, float | int] = {
            "label": self.label,
            "area": self.area,
            "intensity": round(self.intensity, 3),
            "ratio": round(self.ratio, 4),
            "x0": x0,
            "y0": y0,
            "x1": x1,
            "y1": y1,
            "cx": round(self.centroid[0], 2),
            "cy": round(self.centroid[1], 2),
        }
        for key, value in self.scores.items():
            row[key] = round(float(value), 6)
        return row


@dataclass(frozen=True)
class FilterResult:
    """Output of :func:`filter_masks` / :func:`filter_labels`.

    Attributes
    ----------
    regions : ndarray
        Kept masks, bool (K, H, W) (from :func:`filter_masks`), or the kept label map,
        int32 (H, W) relabelled 1..K (from :func:`filter_labels`).
    stats : list of RegionStats
        One per kept region, ``label`` 1..K, computed on the final pixels.
    source : ndarray of shape (K,), int
        For each kept region, its index in the input masks (0-based) or its label in
        the input label map.
    """

    regions: np.ndarray
    stats: list[RegionStats]
    source: np.ndarray


def aggregate_map(image: np.ndarray) -> np.ndarray:
    """Per-pixel aggregate ``100 - gray / 255 * 100``.

    Parameters
    ----------
    image : ndarray of shape (H, W, 3) uint8 RGB, or (H, W) uint8 gray

    Returns
    -------
    ndarray of shape (H, W), dtype float32
        Values in 0 (white) .. 100 (black).

    Raises
    ------
    ValueError
        If ``image`` is not uint8 (H, W) or (H, W, 3).
    """
    import cv2

    image = np.asarray(image)
    if image.dtype != np.uint8 or not (image.ndim == 2 or (image.ndim == 3 and image.shape[2] == 3)):
        raise ValueError(f"expected an (H, W, 3) or (H, W) uint8 image, got {image.dtype} {image.shape}")
    gray = image if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_RGB2GRAY)
    return (100.0 - gray.astype(np.float32) * (100.0 / 255.0)).astype(np.float32)


def _check_aggregate(aggregate: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    aggregate = np.asarray(aggregate, dtype=np.float32)
    if aggregate.shape != tuple(shape):
        raise ValueError(f"aggregate map shape {aggregate.shape} does not match regions {tuple(shape)}")
    return aggregate


def _scores_for(scores: Mapping[str, np.ndarray] | None, n: int) -> list[dict[str, float]]:
    out: list[dict[str, float]] = [{} for _ in range(n)]
    for key, values in (scores or {}).items():
        values = np.asarray(values, dtype=np.float64).ravel()
        if values.shape[0] != n:
            raise ValueError(f"score {key!r} has {values.shape[0]} values for {n} regions")
        for i in range(n):
            out[i][key] = float(values[i])
    return out


def _build_stats(labels_out, area, intensity, x0, y0, x1, y1, cx, cy, scores) -> list[RegionStats]:
    stats = []
    for k in range(len(labels_out)):
        a = int(area[k])
        stats.append(
            RegionStats(
                label=int(labels_out[k]),
                area=a,
                intensity=float(intensity[k]),
                ratio=float(intensity[k] / a) if a else 0.0,
                bbox=(int(x0[k]), int(y0[k]), int(x1[k]), int(y1[k])),
                centroid=(float(cx[k]), float(cy[k])),
                scores=scores[k],
            )
        )
    return stats


def mask_stats(
    masks: np.ndarray,
    aggregate: np.ndarray,
    scores: Mapping[str, np.ndarray] | None = None,
) -> list[RegionStats]:
    """Statistics of each mask.

    Parameters
    ----------
    masks : ndarray of shape (N, H, W), bool
    aggregate : ndarray of shape (H, W), float
        From :func:`aggregate_map`.
    scores : mapping of str to array of shape (N,), optional
        Extra per-mask values copied into :attr:`RegionStats.scores`.

    Returns
    -------
    list of RegionStats
        ``label`` is the mask's index + 1. An empty mask has area 0 and bbox (0, 0, 0, 0).

    Raises
    ------
    ValueError
        Shapes that do not match.
    """
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise ValueError(f"expected masks of shape (N, H, W), got {masks.shape}")
    n, h, w = masks.shape
    aggregate = _check_aggregate(aggregate, (h, w))
    if n == 0:
        return []
    col = masks.sum(axis=1, dtype=np.int64)  # (N, W): pixels per column
    row = masks.sum(axis=2, dtype=np.int64)  # (N, H): pixels per row
    area = col.sum(axis=1)
    # intensity: per mask, the sum of the aggregate under it (one vectorised pass per mask)
    flat_agg = aggregate.ravel().astype(np.float64)
    intensity = np.array([flat_agg[m.ravel()].sum() for m in masks], dtype=np.float64)
    safe = np.maximum(area, 1)
    cx = col @ np.arange(w, dtype=np.float64) / safe
    cy = row @ np.arange(h, dtype=np.float64) / safe
    has_col, has_row = col > 0, row > 0
    x0 = np.where(area > 0, has_col.argmax(axis=1), 0)
    x1 = np.where(area > 0, w - has_col[:, ::-1].argmax(axis=1), 0)
    y0 = np.where(area > 0, has_row.argmax(axis=1), 0)
    y1 = np.where(area > 0, h - has_row[:, ::-1].argmax(axis=1), 0)
    return _build_stats(np.arange(1, n + 1), area, intensity, x0, y0, x1, y1, cx, cy, _scores_for(scores, n))


def label_stats(
    labels: np.ndarray,
    aggregate: np.ndarray,
    scores: Mapping[str, np.ndarray] | None = None,
) -> list[RegionStats]:
    """Statistics of each label of a label map.

    Parameters
    ----------
    labels : ndarray of shape (H, W), non-negative int
        0 = background (ignored), 1..N regions.
    aggregate : ndarray of shape (H, W), float
        From :func:`aggregate_map`.
    scores : mapping of str to array of shape (N,), optional
        Extra per-label values (index ``k`` belongs to label ``k + 1``).

    Returns
    -------
    list of RegionStats
        One per label value present in the map (labels that do not occur are skipped),
        in increasing label order.

    Raises
    ------
    ValueError
        Shapes that do not match, or negative labels.
    """
    from scipy import ndimage

    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"expected a (H, W) label map, got shape {labels.shape}")
    h, w = labels.shape
    aggregate = _check_aggregate(aggregate, (h, w))
    if labels.size == 0 or int(labels.max()) <= 0:
        return []
    if int(labels.min()) < 0:
        raise ValueError("label maps cannot hold negative labels")
    lab = labels.ravel().astype(np.intp, copy=False)
    n = int(lab.max())
    area = np.bincount(lab, minlength=n + 1)
    intensity = np.bincount(lab, weights=aggregate.ravel(), minlength=n + 1)
    # per-label coordinate sums: counts per (label, row) and (label, column) via bincount
    sx = np.bincount(lab, weights=np.tile(np.arange(w, dtype=np.float64), h), minlength=n + 1)
    sy = np.bincount(lab, weights=np.repeat(np.arange(h, dtype=np.float64), w), minlength=n + 1)
    present = np.flatnonzero(area[1:] > 0) + 1
    slices = ndimage.find_objects(labels.astype(np.int32, copy=False), max_label=n)
    boxes = np.array(
        [(s[1].start, s[0].start, s[1].stop, s[0].stop) for s in (slices[k - 1] for k in present)],
        dtype=np.int64,
    ).reshape(-1, 4)
    a = area[present]
    all_scores = _scores_for(scores, n)
    return _build_stats(
        present, a, intensity[present], boxes[:, 0], boxes[:, 1], boxes[:, 2], boxes[:, 3],
        sx[present] / a, sy[present] / a, [all_scores[k - 1] for k in present],
    )


def _phase1_keep(area: np.ndarray, intensity: np.ndarray, params: RegionFilterParams) -> np.ndarray:
    keep = np.ones(area.shape, dtype=bool)
    if params.area_filter:
        keep &= area >= params.min_area
    if params.intensity_ratio_filter:
        ratio = np.where(area > 0, intensity / np.maximum(area, 1), 0.0)
        keep &= (intensity >= params.min_intensity) & (ratio >= params.min_ratio)
    return keep


def _pixel_ok(aggregate: np.ndarray, params: RegionFilterParams) -> np.ndarray:
    return (aggregate >= params.min_aggregate) & (aggregate <= params.max_aggregate)


def filter_masks(
    masks: np.ndarray,
    aggregate: np.ndarray,
    params: RegionFilterParams | None = None,
    scores: Mapping[str, np.ndarray] | None = None,
) -> FilterResult:
    """Apply the two-stage filters to a set of (possibly overlapping) masks.

    Parameters
    ----------
    masks : ndarray of shape (N, H, W), bool
    aggregate : ndarray of shape (H, W), float
        From :func:`aggregate_map`.
    params : RegionFilterParams, optional
        Defaults: the SAM-HQ batch tool's (199 / 0.0 / 44.0, pixels 35..100).
    scores : mapping of str to array of shape (N,), optional
        Per-mask values carried into the stats of the kept masks.

    Returns
    -------
    FilterResult
        ``regions``: kept masks (K, H, W) bool after the pixel filter; ``source``:
        their indices in ``masks``; ``stats`` recomputed on the kept pixels.
    """
    params = params or RegionFilterParams()
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise ValueError(f"expected masks of shape (N, H, W), got {masks.shape}")
    aggregate = _check_aggregate(aggregate, masks.shape[1:])
    n = masks.shape[0]
    idx = np.arange(n)
    if params.enabled and n:
        stats0 = mask_stats(masks, aggregate)
        area = np.array([s.area for s in stats0], dtype=np.int64)
        inten = np.array([s.intensity for s in stats0], dtype=np.float64)
        idx = idx[_phase1_keep(area, inten, params)]
        masks = masks[idx]
        if params.pixel_filter:
            masks = masks & _pixel_ok(aggregate, params)[None]
            nonempty = masks.any(axis=(1, 2))
            masks, idx = masks[nonempty], idx[nonempty]
    kept_scores = {k: np.asarray(v)[idx] for k, v in (scores or {}).items()}
    return FilterResult(regions=masks, stats=mask_stats(masks, aggregate, kept_scores), source=idx)


def filter_labels(
    labels: np.ndarray,
    aggregate: np.ndarray,
    params: RegionFilterParams | None = None,
) -> FilterResult:
    """Apply the two-stage filters to a label map.

    Parameters
    ----------
    labels : ndarray of shape (H, W), non-negative int
        0 = background / edge, 1..N regions.
    aggregate : ndarray of shape (H, W), float
        From :func:`aggregate_map`.
    params : RegionFilterParams, optional

    Returns
    -------
    FilterResult
        ``regions``: int32 (H, W) label map of the kept pixels relabelled 1..K in the
        order of their input labels (dropped regions and pixels become 0);
        ``source``: the input label of each kept region.
    """
    params = params or RegionFilterParams()
    labels = np.asarray(labels)
    if labels.ndim != 2:
        raise ValueError(f"expected a (H, W) label map, got shape {labels.shape}")
    aggregate = _check_aggregate(aggregate, labels.shape)
    if labels.size and int(labels.min()) < 0:
        raise ValueError("label maps cannot hold negative labels")
    n = int(labels.max()) if labels.size else 0
    lab = labels.astype(np.intp, copy=False)
    keep_label = np.zeros(n + 1, dtype=bool)
    if params.enabled:
        area = np.bincount(lab.ravel(), minlength=n + 1)
        inten = np.bincount(lab.ravel(), weights=aggregate.ravel(), minlength=n + 1)
        keep_label[1:] = _phase1_keep(area[1:], inten[1:], params) & (area[1:] > 0)
        kept = keep_label[lab]
        if params.pixel_filter:
            kept &= _pixel_ok(aggregate, params)
        lab = np.where(kept, lab, 0)
    keep_label = np.bincount(lab.ravel(), minlength=n + 1) > 0
    keep_label[0] = False
    lut = np.cumsum(keep_label) * keep_label
    out = lut[lab].astype(np.int32)
    source = np.flatnonzero(keep_label)
    return FilterResult(regions=out, stats=label_stats(out, aggregate), source=source)


def masks_to_label_map(masks: np.ndarray, order: str = "area") -> np.ndarray:
    """Paint masks into one label map; mask ``i`` gets label ``i + 1``.

    Parameters
    ----------
    masks : ndarray of shape (N, H, W), bool
    order : {"area", "index"}
        ``"area"``: where masks overlap, the smaller mask is drawn over the larger one
        (so small parts inside big ones stay visible); ``"index"``: later masks win.

    Returns
    -------
    ndarray of shape (H, W), int32
        0 where no mask covers a pixel. A mask hidden entirely by smaller ones does not
        appear.
    """
    masks = np.asarray(masks, dtype=bool)
    if masks.ndim != 3:
        raise ValueError(f"expected masks of shape (N, H, W), got {masks.shape}")
    n, h, w = masks.shape
    out = np.zeros((h, w), np.int32)
    if n == 0:
        return out
    if order == "area":
        areas = masks.reshape(n, -1).sum(axis=1)
        seq = np.argsort(-areas, kind="stable")
    elif order == "index":
        seq = np.arange(n)
    else:
        raise ValueError(f"order must be 'area' or 'index', got {order!r}")
    for i in seq:  # one vectorised assignment per mask
        out[masks[i]] = i + 1
    return out
