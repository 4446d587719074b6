"""Sequential segmentation: one image encode, then one SAM click per point, each
region claiming its pixels so that later regions never overlap earlier ones.

For each :class:`~.points.PointProposal` in order:

1. skipped when its pixel is already claimed (``claimed[y, x]``);
2. one positive point prompt through the engine's click path
   (:meth:`segdeck.core.sam.SamEngine.predict`, the fast decoder on the embedding of
   the single :meth:`~segdeck.core.sam.SamEngine.set_image`); with ``multimask`` the
   highest-scoring of the candidate masks (SAM's advice for a single ambiguous
   point), else the single-mask output;
3. region = mask minus the claimed pixels (the "overall ignored mask");
4. kept when its area is at least ``min_area`` pixels: it gets the next index
   (1, 2, ... -> "D1", "D2", ...) and its pixels are claimed. A smaller region is
   dropped and claims nothing.

The result is a label map (region ``k`` has label ``k``; regions never overlap) and one
:class:`Region` record per kept region. Works with SAM 2.1 and SAM-HQ engines (any
object with ``set_image(image)`` and ``predict(points=, labels=, multimask=)``
returning ``.masks`` (M, H, W) bool and ``.scores`` (M,)).

Kirillov et al., "Segment Anything", ICCV 2023; Ravi et al., "SAM 2: Segment Anything
in Images and Videos", 2024.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from segdeck.core.describe.points import PointProposal

__all__ = ["Region", "SweepCancelled", "SweepResult", "mask_box", "sweep"]


class SweepCancelled(Exception):  # noqa: N818 - a control-flow signal
    """Raised by :func:`sweep` when its ``cancel`` event is set between two points."""


@dataclass(frozen=True)
class Region:
    """One kept region of a sweep.

    Attributes
    ----------
    index : int
        1-based; the region's label in :attr:`SweepResult.labels` and its name
        ``D<index>``.
    source : {"contour", "grid"}
        Where its point came from.
    point : tuple of int
        ``(x, y)`` pixel of the positive prompt.
    box : tuple of 4 int
        XYXY pixels of the region (after claiming); ``x1``, ``y1`` exclusive.
    area : int
        Pixels of the region (after claiming).
    score : float
        SAM's predicted IoU of the mask the region came from.
    """

    index: int
    source: str
    point: tuple[int, int]
    box: tuple[int, int, int, int]
    area: int
    score: float

    @property
    def name(self) -> str:
        """``"D<index>"``."""
        return f"D{self.index}"

    def to_json(self) -> dict:
        """JSON-ready dict (lists for point and box)."""
        d = asdict(self)
        d["point"], d["box"] = list(self.point), list(self.box)
        return d

    @classmethod
    def from_json(cls, d: dict) -> Region:
        """Inverse of :meth:`to_json`."""
        return cls(
            index=int(d["index"]), source=str(d["source"]), point=tuple(int(v) for v in d["point"]),
            box=tuple(int(v) for v in d["box"]), area=int(d["area"]), score=float(d["score"]),
        )


@dataclass
class SweepResult:
    """What a sweep found.

    Attributes
    ----------
    labels : ndarray of shape (H, W), int32
        0 = unclaimed, ``k`` = region ``k`` (:attr:`Region.index`).
    regions : list of Region
        In index order.
    prompted : int
        Points given to SAM.
    skipped_claimed : int
        Points skipped because their pixel was already claimed.
    dropped_small : int
        Prompts whose region (after claiming) was below ``min_area``.
    """

    labels: np.ndarray
    regions: list[Region]
    prompted: int = 0
    skipped_claimed: int = 0
    dropped_small: int = 0

    def mask(self, index: int) -> np.ndarray:
        """(H, W) bool pixels of region ``index``."""
        return self.labels == index


def mask_box(mask: np.ndarray) -> tuple[int, int, int, int]:
    """XYXY box of a non-empty (H, W) bool mask, ``x1`` and ``y1`` exclusive.

    Raises
    ------
    ValueError
        For an empty mask.
    """
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    if len(rows) == 0:
        raise ValueError("mask_box of an empty mask")
    return int(cols[0]), int(rows[0]), int(cols[-1]) + 1, int(rows[-1]) + 1


def sweep(
    engine,
    image: np.ndarray,
    points: Sequence[PointProposal],
    *,
    min_area: int = 100,
    multimask: bool = True,
    on_step: Callable[[int, int], None] | None = None,
    cancel: threading.Event | None = None,
) -> SweepResult:
    """Segment an image region by region from point prompts, without overlaps.

    Parameters
    ----------
    engine : SamEngine
        From :func:`segdeck.core.sam.open_engine` (SAM 2.1 or SAM-HQ); its
        ``set_image`` runs once here (a cached embedding is reused).
    image : ndarray of shape (H, W, 3), uint8 RGB
    points : sequence of PointProposal
        In prompt order (:func:`~.points.propose_points`); ``(x, y)`` pixels inside the
        image.
    min_area : int
        Smallest region kept, in pixels after removing claimed pixels (>= 1).
    multimask : bool
        Take the best-scoring of SAM's candidate masks (True) or its single-mask output.
    on_step : callable, optional
        ``on_step(done, total)`` after each point (``total = len(points)``), e.g. a
        job's ``step(done, total, "region")``; may raise to stop the sweep.
    cancel : threading.Event, optional
        Checked before each point.

    Returns
    -------
    SweepResult

    Raises
    ------
    ValueError
        A bad image, a point outside it, or ``min_area < 1``.
    SweepCancelled
        When ``cancel`` is set.
    """
    image = np.asarray(image)
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    if min_area < 1:
        raise ValueError(f"min_area must be >= 1 pixel, got {min_area}")
    h, w = image.shape[:2]
    for p in points:
        if not (0 <= p.x < w and 0 <= p.y < h):
            raise ValueError(f"point ({p.x}, {p.y}) is outside the {w}x{h} image")
    labels = np.zeros((h, w), np.int32)
    claimed = np.zeros((h, w), bool)
    result = SweepResult(labels=labels, regions=[])
    if points:
        engine.set_image(image)
    total = len(points)
    for done, p in enumerate(points, 1):
        if cancel is not None and cancel.is_set():
            raise SweepCancelled("sweep cancelled")
        if claimed[p.y, p.x]:
            result.skipped_claimed += 1
        else:
            res = engine.predict(points=np.array([[p.x, p.y]], np.float32), labels=np.array([1]), multimask=multimask)
            best = int(np.argmax(res.scores)) if len(res.scores) else 0
            region = np.asarray(res.masks[best], bool) & ~claimed
            result.prompted += 1
            area = int(np.count_nonzero(region))
            if area >= min_area:
                index = len(result.regions) + 1
                claimed |= region
                labels[region] = index
                result.regions.append(Region(
                    index=index, source=p.source, point=(p.x, p.y), box=mask_box(region), area=area,
                    score=float(res.scores[best]),
                ))
            else:
                result.dropped_small += 1
        if on_step is not None:
            on_step(done, total)
    return result
