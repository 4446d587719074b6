"""Near-duplicate clustering that survives flips, crops and rotations and does not chain.

Pipeline (method ``dup``)
-------------------------
1. **Flip-invariant hashing.** Every image gets two 64-bit perceptual hashes, of the
   image and of its mirror image (:func:`segdeck.core.cluster.features.phash_codes`);
   a pair's distance is the smaller of ``hamming(a, b)`` and ``hamming(a, mirror(b))``.
2. **Loose candidates**, by three routes: pairs within ``radius`` bits of the whole-image
   hashes (:func:`segdeck.core.cluster.similarity.hamming_pairs`: brute force, multi-index
   hashing or, for very large folders, an approximate HNSW index); an image's hash within
   ``crop_radius`` bits of one of 225 windows of the other, 70-94 % of each side
   (cropped copies, :func:`crop_pairs`); centre hashes within ``centre_radius`` bits
   (copies rotated with black or filled corners, :func:`centre_pairs`).
3. **Verification.** Pairs within ``sure_radius`` bits of the whole hashes are accepted as
   they are. The others are pre-filtered by thumbnail correlation (``min_ncc``) and
   checked with ORB features on histogram-equalised images (:data:`EQUALIZE`; on the
   mirrored image when the mirrored hash was the closer one): Lowe's ratio test, then a
   RANSAC fit of a similarity transform
   (``cv2.estimateAffinePartial2D``); the pair is accepted with at least ``min_inliers``
   inliers, at least 30 % of the matches, and a plausible transform (rotation up to
   ``max_rotation``, scale change up to ``max_scale``). Tiles of one photo share colours
   and texture and fool global hashes; they do not share a geometrically consistent set
   of keypoints. A rejected pair with close hashes and correlated thumbnails is checked
   once more on smaller, blurred images (:data:`RETRY_SIDE`). Low-texture images (fewer
   than :data:`DENSE_MAX_KEYS` keypoints) that ORB cannot check are accepted when their
   hashes are close (:data:`DENSE_RADIUS`) and their 32-pixel images correlate (``dense_min_cc``, :func:`dense_similarity`).
   Why each rejected pair was rejected is kept (:attr:`PairDecisions.reason`;
   ``benchmarks/cluster_diagnose.py`` tabulates it per edit family).
4. **A linkage that does not chain.** Accepted pairs form a sparse graph clustered by
   average linkage with missing pairs counted as "different"
   (:func:`segdeck.core.cluster.graph.average_linkage`): two groups merge only when
   more than ``1 - max_distance`` (default 25 %) of their cross pairs are accepted edges.

References: Zauner 2010 (pHash); Rublee et al., ICCV 2011 (ORB); Fischler & Bolles,
CACM 1981 (RANSAC); Sokal & Michener 1958 (UPGMA average linkage).
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from segdeck.core.cluster import features, graph, similarity


class DupParams(BaseModel):
    """Parameters of the near-duplicate method."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    radius: int = Field(20, ge=0, le=32, description="candidate pairs: flip-invariant pHash distance at most this (bits of 64)")
    sure_radius: int = Field(4, ge=0, le=32, description="pairs this close are accepted without geometric verification (bits)")
    min_inliers: int = Field(8, ge=4, le=500, description="RANSAC inliers needed to accept a verified pair")
    max_distance: float = Field(0.75, gt=0.0, le=1.0, description="average linkage: merge while the mean cross-pair distance is below this")
    verify_per_link: int = Field(3, ge=1, le=50, description="between two groups of sure pairs, verify at most this many (closest) candidate pairs")
    max_rotation: float = Field(20.0, ge=0.0, le=180.0, description="verified pairs: largest rotation between the images (degrees)")
    max_scale: float = Field(1.7, ge=1.0, le=10.0, description="verified pairs: largest scale change (after resizing both to orb_side)")
    orb_side: int = Field(128, ge=32, le=1024, description="longer side (pixels) of the image ORB runs on")
    orb_features: int = Field(150, ge=20, le=5000, description="ORB keypoints per image")
    orb_levels: int = Field(3, ge=1, le=8, description="ORB pyramid levels (scale factor 1.2 each); near-duplicates need few")
    min_ncc: float = Field(0.35, ge=-1.0, le=1.0, description="pairs between groups whose 16x16 thumbnails (whole images or their centres, the better) correlate less than this are rejected unverified (-1: off)")
    crop_radius: int = Field(10, ge=-1, le=32, description="cropped copies: an image's hash within this many bits of a window's hash of another, then verified (-1: off)")
    centre_radius: int = Field(18, ge=-1, le=32, description="rotated copies (black or filled corners): centre hashes within this many bits, then verified (-1: off)")
    dense_min_cc: float = Field(0.95, ge=-1.0, le=1.01, description="low-texture pairs (too few ORB keypoints): accepted when their aligned 32x32 images correlate at least this much (above 1: off)")
    align_min_score: float = Field(1.01, ge=0.0, le=1.01, description="pairs ORB rejected: accepted when their Fourier-Mellin alignment scores at least this (core/cluster/align.py; above 1: off; 0.75 finds a few more heavily edited copies for about 1 s more per 1,000 images)")
    neighbour_k: int = Field(3, ge=0, le=50, description="look-alike candidates: each image's k most correlated 16x16 thumbnails (whole or centre), then verified (0: off)")
    neighbour_min_ncc: float = Field(0.6, ge=-1.0, le=1.0, description="look-alike candidates: thumbnail correlation at least this")
    neighbour_max_images: int = Field(3_000, ge=0, le=10_000_000, description="above this many images the look-alike candidates are skipped (logged): all pairs are correlated")
    crop_max_images: int = Field(3_000, ge=0, le=10_000_000, description="above this many images the crop candidates are skipped (logged): their search grows with n^2 (2,000 photos: ~10 s)")


def thumb_ncc(thumbs: np.ndarray, a: np.ndarray, b: np.ndarray, mirrored: np.ndarray, chunk: int = 65536) -> np.ndarray:
    """Normalised cross-correlation of grayscale thumbnails of image pairs.

    Parameters
    ----------
    thumbs : ndarray of uint8, shape (n, s, s)
        From :func:`segdeck.core.cluster.features.thumbnails`.
    a, b : ndarray of int, shape (m,)
        Pair indices.
    mirrored : ndarray of bool, shape (m,)
        Compare ``a`` with the mirror image of ``b``.
    chunk : int
        Pairs per vectorised step (bounds memory: a million candidate pairs of 16 x 16
        thumbnails at once took gigabytes).

    Returns
    -------
    ndarray of float32, shape (m,)
        Values in [-1, 1]; 1 for thumbnails equal up to brightness and contrast.
    """
    if not len(a):
        return np.zeros(0, np.float32)
    ids = np.unique(np.concatenate([a, b]))
    pos = np.full(len(thumbs), -1, np.int64)
    pos[ids] = np.arange(len(ids))
    th = thumbs[ids].astype(np.float32)

    def unit(x):
        x = x.reshape(len(x), -1)
        x = x - x.mean(1, keepdims=True)
        return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-6)

    u, um = unit(th), unit(th[:, :, ::-1])
    out = np.empty(len(a), np.float32)
    for s in range(0, len(a), chunk):  # (chunk, s * s) temporaries, not (m, s * s)
        pa, pb, mi = pos[a[s:s + chunk]], pos[b[s:s + chunk]], mirrored[s:s + chunk]
        ub = np.where(mi[:, None], um[pb], u[pb])
        out[s:s + chunk] = np.einsum("ij,ij->i", u[pa], ub)
    return out


#: RANSAC iterations of the verification. A pair is accepted only when at least 30 % of
#: its ratio-test matches are inliers; with 2-point samples (similarity transform) a model
#: with that inlier share is drawn with 99.99 % probability in 100 iterations
#: (1 - (1 - 0.3**2)**100), so OpenCV's default of 2000 only burns time on pairs that
#: would be rejected anyway.
RANSAC_ITERS = 100

#: Lowe's ratio test of the verification: a match is kept when its best descriptor
#: distance is below this fraction of the second best. Higher keeps more matches of
#: heavily edited copies (JPEG, blur) at the price of more random matches on textures.
LOWE_RATIO = 0.8

#: Smallest share of the ratio-test matches that must be RANSAC inliers. Random matches
#: between tiles of one photo fit a transform with few of their matches; a near-duplicate
#: pair keeps most. Lower finds more heavily edited copies, admits more look-alikes.
MIN_INLIER_FRACTION = 0.3

#: RANSAC reprojection threshold (pixels, at ``orb_side``): matches within this distance
#: of the fitted transform are inliers. Larger tolerates resampling and small
#: perspective changes, and lets random matches fit more easily.
REPROJ_PX = 3.0

#: Edge distance of an accepted pair in the final average linkage: ``EDGE_SCALE * bits / 64``
#: (so at most ``EDGE_SCALE``, well below ``max_distance``; missing pairs count 1). It
#: only orders merges (closer hashes first); it never decides whether a pair is accepted.
EDGE_SCALE = 0.2


#: An image with fewer ORB keypoints than this (at ``orb_side``) is *low-texture*: smooth
#: gradients, sky, skin. ORB cannot verify its pairs (too few matches), so a pair with such
#: an image that fails ORB is checked densely instead (:func:`dense_similarity`).
DENSE_MAX_KEYS = 40

#: Pairs get the dense check only when their hashes (whole images or centres) are within
#: this many bits; window candidates (cropped copies) never: a smooth image correlates
#: with many other smooth images once a shift, a window or a loose hash distance is
#: allowed. On two development sets (held-out generator, seeds 1 and 2) dense matches
#: of whole/centre pairs within 12 bits were 106 right, 0 wrong; at 13-20 bits 30 right,
#: 9 wrong; window pairs within 4 bits 13 right, 5 wrong.
DENSE_RADIUS = 12

#: Side (pixels) of the square images the dense check compares. Smaller tolerates more
#: misalignment (rotation, crop error) and blurs away the detail that distinguishes
#: look-alike smooth tiles.
DENSE_SIDE = 32

#: Largest shift (pixels at :data:`DENSE_SIDE`) the dense check searches: the central
#: ``DENSE_SIDE - 2 * DENSE_SHIFT`` square of one image is slid over the other.
DENSE_SHIFT = 3


#: Second ORB pass: a pair rejected by the first check gets another one on smaller,
#: slightly blurred images (longer side :data:`RETRY_SIDE` pixels, Gaussian sigma
#: :data:`RETRY_BLUR`) when its hashes are within :data:`RETRY_RADIUS` bits and its
#: thumbnails (whole or centres) correlate at least :data:`RETRY_MIN_NCC`. Blurred,
#: resized and text-covered copies lose the fine corners ORB matches at ``orb_side``;
#: at the coarser scale the two images' corners agree again. On the held-out generator's
#: development seeds 1 and 2 (crop radius 10) this pass accepted 25 + 12 true pairs the
#: first one rejected and no false one, re-checking about 10 % of the pairs.
RETRY_SIDE = 96
RETRY_BLUR = 1.0
RETRY_RADIUS = 14
RETRY_MIN_NCC = 0.5


def dense_similarity(ga: np.ndarray, gb: np.ndarray) -> float:
    """Correlation of two low-texture images that should show the same content.

    Both are resized to :data:`DENSE_SIDE` squares; the central part of each (without a
    :data:`DENSE_SHIFT` margin) is slid over the other (``cv2.matchTemplate``,
    normalised cross-correlation about the mean, ``TM_CCOEFF_NORMED``), best shift and
    direction kept. Meant for pairs already aligned by their candidate route (whole
    images, a window of the larger image against a cropped copy, the centres of a
    rotated copy): small residual shifts and rotations of smooth images barely change it,
    different content does.

    Parameters
    ----------
    ga, gb : ndarray of uint8, shape (H, W)
        Grayscale images (already cut to corresponding regions).

    Returns
    -------
    float
        In [-1, 1]; 0 for a flat image.
    """
    import cv2

    a = cv2.resize(ga, (DENSE_SIDE, DENSE_SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)
    b = cv2.resize(gb, (DENSE_SIDE, DENSE_SIDE), interpolation=cv2.INTER_AREA).astype(np.float32)
    m = DENSE_SHIFT
    best = 0.0
    for x, y in ((a, b), (b, a)):
        t = x[m:-m, m:-m]
        if t.std() < 1e-3 or y.std() < 1e-3:
            return 0.0
        best = max(best, float(cv2.matchTemplate(y, t, cv2.TM_CCOEFF_NORMED).max()))
    return best


#: Equalise the histogram of each image before ORB (:func:`orb_keys`). On the held-out
#: generator's development seeds 1 and 2 it cut the pairs lost by the verification from
#: 46 to 17 (recall 0.91/0.92 -> 0.96/0.94) with no new false pair: low-contrast tiles had
#: 0-10 FAST keypoints at the fixed threshold and could not be checked.
EQUALIZE = True


def orb_detector(n_features: int = 100, levels: int = 4):
    """The ``cv2.ORB`` detector :func:`orb_keys` uses (small patches for small images)."""
    import cv2

    return cv2.ORB_create(nfeatures=n_features, edgeThreshold=15, patchSize=15, fastThreshold=5, nlevels=levels)


def orb_keys(
    gray: np.ndarray, side: int = 128, n_features: int = 100, levels: int = 4, detector=None,
    equalize: bool | None = None,
) -> tuple[np.ndarray, np.ndarray]:
    """ORB keypoints of a grayscale image resized so its longer side is ``side``.

    With ``equalize`` (default :data:`EQUALIZE`) the resized image's histogram is equalised first
    (``cv2.equalizeHist``): the FAST threshold of the detector is absolute, so a
    low-contrast image (haze, shade, a darkened copy) would otherwise give a handful of
    keypoints and could not be verified; equalisation is also invariant to the monotonic
    brightness, contrast and gamma edits a copy may carry.

    ``detector`` (from :func:`orb_detector` with the same ``n_features`` and ``levels``)
    saves creating one per call, which costs about a third of the detection itself at
    this size; a detector must not be shared between threads.

    Returns
    -------
    xy : ndarray of float32, shape (N, 2)
        Keypoint positions (x, y) in the resized image.
    des : ndarray of uint8, shape (N, 32)
    """
    import cv2

    h, w = gray.shape[:2]
    s = side / max(h, w)
    if abs(s - 1) > 1e-3:
        gray = cv2.resize(gray, (max(1, round(w * s)), max(1, round(h * s))),
                          interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    if EQUALIZE if equalize is None else equalize:
        gray = cv2.equalizeHist(np.ascontiguousarray(gray))
    orb = detector if detector is not None else orb_detector(n_features, levels)
    kps, des = orb.detectAndCompute(gray, None)
    if des is None or not kps:
        return np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8)
    return np.array([k.pt for k in kps], np.float32), des


def ransac_inliers(
    ka: tuple[np.ndarray, np.ndarray],
    kb: tuple[np.ndarray, np.ndarray],
    ratio: float = LOWE_RATIO,
    max_rotation: float = 20.0,
    max_scale: float = 1.7,
    min_inlier_fraction: float = MIN_INLIER_FRACTION,
) -> int:
    """Inliers of a plausible RANSAC similarity transform between two ORB keypoint sets.

    Parameters
    ----------
    ka, kb : (xy, des)
        From :func:`orb_keys` (both images resized to the same longer side).
    ratio : float
        Lowe's ratio test threshold.
    max_rotation : float
        Largest rotation (degrees) of a plausible transform.
    max_scale : float
        The transform's scale must lie in [1 / max_scale, max_scale].
    min_inlier_fraction : float
        Fewer inliers than this fraction of the ratio-test matches count as no match.

    Returns
    -------
    int
        Number of ratio-test matches consistent with one rotation + scale + translation
        (:data:`REPROJ_PX` reprojection threshold); 0 when fewer than 6 matches survive or the
        transform is implausible (random matches on textures fit wild transforms:
        collapsed scales, large rotations).
    """
    import cv2

    (xa, da), (xb, db) = ka, kb
    if len(da) < 5 or len(db) < 5:
        return 0
    matches = cv2.BFMatcher(cv2.NORM_HAMMING).knnMatch(da, db, k=2)
    good = [m[0] for m in matches if len(m) == 2 and m[0].distance < ratio * m[1].distance]
    if len(good) < 6:
        return 0
    src = xa[[m.queryIdx for m in good]]
    dst = xb[[m.trainIdx for m in good]]
    m, mask = cv2.estimateAffinePartial2D(src, dst, method=cv2.RANSAC, ransacReprojThreshold=REPROJ_PX, maxIters=RANSAC_ITERS)
    if m is None or mask is None:
        return 0
    inliers = int(mask.sum())
    scale = float(np.hypot(m[0, 0], m[1, 0]))
    angle = abs(float(np.degrees(np.arctan2(m[1, 0], m[0, 0]))))
    if not (1.0 / max_scale <= scale <= max_scale) or angle > max_rotation:
        return 0
    if inliers < min_inlier_fraction * len(good):
        return 0
    return inliers


def orient_pairs(a: np.ndarray, b: np.ndarray, mirrored: np.ndarray) -> list[tuple[tuple[int, bool], tuple[int, bool]]]:
    """Which orientation of each image a pair is verified on: ``((a, flip_a), (b, flip_b))``.

    A mirrored pair can be checked as (a, mirror of b) or as (mirror of a, b): the two are
    mirror images of each other. The choice that reuses keypoints some other pair already
    needs is taken (greedy), so fewer images get ORB twice.
    """
    need: set[tuple[int, bool]] = set()
    out: list = [None] * len(a)
    pending = []
    for t, (x, y, m) in enumerate(zip(a.tolist(), b.tolist(), mirrored.tolist(), strict=True)):
        if m:
            pending.append(t)
        else:
            out[t] = ((x, False), (y, False))
            need.update(out[t])
    for _ in range(2):  # first the pairs one choice of which is free, then the rest
        rest = []
        for t in pending:
            x, y = int(a[t]), int(b[t])
            opts = (((x, False), (y, True)), ((x, True), (y, False)))
            cost = [sum(e not in need for e in o) for o in opts]
            if _ == 0 and min(cost) > 0:
                rest.append(t)
                continue
            out[t] = opts[int(cost[1] < cost[0])]
            need.update(out[t])
        pending = rest
    return out


@dataclass
class PairDecisions:
    """Candidate pairs of the ``dup`` pipeline and what became of them.

    Attributes
    ----------
    i, j : ndarray of int64, shape (m,)
        Candidate pairs (``i < j``), within ``radius`` bits.
    d : ndarray of int64, shape (m,)
        Flip-invariant Hamming distance of each pair (bits of 64).
    mirrored : ndarray of bool, shape (m,)
        The mirrored hash was the closer one.
    route : ndarray of int8, shape (m,)
        How the pair was found: 0 whole-image hashes; 1 one image's hash against a window
        of the other (a cropped copy, :func:`crop_pairs`); 2 centre hashes (a rotated
        copy, :func:`centre_pairs`); 3 correlated thumbnails (:func:`neighbour_pairs`).
    stage : ndarray of str (object), shape (m,)
        Why a pair was accepted: ``"sure"`` (within ``sure_radius``), ``"verified"``
        (its own ORB + RANSAC check passed), ``"dense"`` (a low-texture pair aligned by
        :func:`dense_similarity`), ``"link"`` (between two groups whose checked pairs
        mostly passed); ``""`` for a rejected pair.
    window_ok : ndarray of bool, shape (m,)
        One image's hash also matched a window of the other and passed the window-aligned
        thumbnail check of :func:`crop_pairs` (true for every route-1 pair; a whole or
        centre pair with it skips the ``min_ncc`` pre-filter).
    reason : ndarray of str (object), shape (m,)
        Why a pair was rejected: ``"prefilter"`` (thumbnails did not correlate,
        ``min_ncc``), ``"verify"`` (checked and failed), ``"unchecked"`` (its link ran out of
        ``verify_per_link`` rounds before the pair's turn), ``"nogray"`` (no images to
        verify with); ``""`` for an accepted pair.
    checked : int
        Pairs that went through the geometric verification.
    dense : int
        Pairs that went through the dense alignment.
    retried : int
        Pairs checked a second time at :data:`RETRY_SIDE` (also counted in ``checked``).
    aligned : int
        Pairs ORB rejected that went through the Fourier-Mellin alignment
        (``align_min_score``; :mod:`segdeck.core.cluster.align`).
    """

    i: np.ndarray
    j: np.ndarray
    d: np.ndarray
    mirrored: np.ndarray
    stage: np.ndarray
    route: np.ndarray | None = None
    checked: int = 0
    dense: int = 0
    retried: int = 0
    aligned: int = 0
    reason: np.ndarray | None = None
    window_ok: np.ndarray | None = None

    def __post_init__(self):
        if self.window_ok is None:
            self.window_ok = np.zeros(len(self.i), bool)
        if self.route is None:
            self.route = np.zeros(len(self.i), np.int8)
        if self.reason is None:
            self.reason = np.full(len(self.i), "", dtype=object)

    @property
    def accepted(self) -> np.ndarray:
        """bool (m,): the pair is an edge of the clustering."""
        return self.stage != ""


def candidate_pairs(codes: np.ndarray, radius: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Step 1-2: pairs within ``radius`` bits of the flip-invariant hash distance.

    Returns
    -------
    i, j : int64 (m,), d : int64 (m,) distance in bits, mirrored : bool (m,)
    """
    i, j, d = similarity.hamming_pairs(codes[:, 0], radius, codes_b=codes)
    direct = similarity.popcount64(codes[i, 0] ^ codes[j, 0]).astype(np.int64)
    return i, j, d, direct > d


def crop_pairs(
    codes: np.ndarray,
    windows: np.ndarray,
    radius: int,
    gray: Callable[[int], np.ndarray],
    thumbs: np.ndarray,
    min_ncc: float,
    exclude: np.ndarray | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Step 2b: candidates of cropped copies, through window hashes.

    A pair is a candidate when one image's whole hash is within ``radius`` bits of a
    window's hash of the other (:func:`segdeck.core.cluster.features.window_boxes`),
    and the smaller image's thumbnail correlates (at least ``min_ncc``) with that window
    of the larger one, cut from ``gray`` and resized to the thumbnail size: the
    pre-filter of :func:`thumb_ncc`, aligned on the window.

    Parameters
    ----------
    codes : ndarray of uint64, shape (n, 2)
        Whole-image hash and mirrored hash.
    windows : ndarray of uint64, shape (n, 2 w)
        :func:`segdeck.core.cluster.features.window_codes` of each image.
    radius : int
    gray : callable
        ``gray(k)`` -> (H, W) uint8 image ``k``.
    thumbs : ndarray of uint8, shape (n, s, s)
    min_ncc : float
    exclude : ndarray of int64, optional
        Pair keys ``i * n + j`` already candidates (skipped).

    Returns
    -------
    i, j : int64 (m,) with i < j; d : int64 (m,) bits; mirrored : bool (m,)
    """
    import cv2

    n = len(codes)
    empty = (np.zeros(0, np.int64),) * 3 + (np.zeros(0, bool),)
    if radius < 0 or n < 2:
        return empty
    i, j, _ = similarity.hamming_pairs(codes[:, 0], radius, codes_b=windows)
    key = i * np.int64(n) + j
    if exclude is not None and len(i):
        keep = ~np.isin(key, exclude)
        i, j = i[keep], j[keep]
    if not len(i):
        return empty
    # which direction and window matched: (whole of j vs window of i) or (whole of i vs window of j)
    d_ij = similarity.popcount64(codes[j, 0][:, None] ^ windows[i]).astype(np.int64)  # (m, 2w)
    d_ji = similarity.popcount64(codes[i, 0][:, None] ^ windows[j]).astype(np.int64)
    both = np.concatenate([d_ij, d_ji], axis=1)
    best = both.argmin(1)
    d = both[np.arange(len(i)), best]
    w2 = windows.shape[1]
    big = np.where(best < w2, i, j)  # the image whose window matched
    small = np.where(best < w2, j, i)
    col = best % w2
    mirrored = col % 2 == 1
    side = thumbs.shape[1]
    ok = np.ones(len(i), bool)
    if min_ncc > -1.0:
        boxes: dict[tuple[int, int], list] = {}
        images: dict[int, np.ndarray] = {}  # gray() may read a cache: once per image
        for t in range(len(i)):
            k = int(big[t])
            g = images.get(k)
            if g is None:
                g = images[k] = gray(k)
            shape = g.shape[:2]
            if shape not in boxes:
                boxes[shape] = features.window_boxes(*shape)
            y0, y1, x0, x1 = boxes[shape][col[t] // 2]
            win = cv2.resize(g[y0:y1, x0:x1], (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)
            th = thumbs[small[t]].astype(np.float32)
            if mirrored[t]:
                win = win[:, ::-1]
            a, b = win.ravel() - win.mean(), th.ravel() - th.mean()
            ok[t] = float(a @ b) / (np.linalg.norm(a) * np.linalg.norm(b) + 1e-6) >= min_ncc
    return i[ok], j[ok], d[ok], mirrored[ok]


def centre_pairs(centres: np.ndarray, radius: int, exclude: np.ndarray | None = None
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Step 2c: candidates of rotated copies, through centre hashes.

    Parameters
    ----------
    centres : ndarray of uint64, shape (n, 2)
        :func:`segdeck.core.cluster.features.centre_codes` of each image (centre, mirrored).
    radius : int
        Largest flip-invariant Hamming distance of the centre hashes (bits of 64); -1: none.
    exclude : ndarray of int64, optional
        Pair keys ``i * n + j`` already candidates (skipped).

    Returns
    -------
    i, j : int64 (m,) with i < j; d : int64 (m,) bits; mirrored : bool (m,)
    """
    n = len(centres)
    if radius < 0 or n < 2:
        return (np.zeros(0, np.int64),) * 3 + (np.zeros(0, bool),)
    i, j, d = similarity.hamming_pairs(centres[:, 0], radius, codes_b=centres)
    if exclude is not None and len(i):
        keep = ~np.isin(i * np.int64(n) + j, exclude)
        i, j, d = i[keep], j[keep], d[keep]
    direct = similarity.popcount64(centres[i, 0] ^ centres[j, 0]).astype(np.int64)
    return i, j, d, direct > d


def neighbour_pairs(thumbs: np.ndarray, centre_thumbs: np.ndarray, k: int, min_ncc: float,
                    exclude: np.ndarray | None = None, chunk: int = 1024
                    ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Step 2d: look-alike candidates, each image's ``k`` most correlated thumbnails.

    Copies that combine a crop with a rotation, or two rotations, change every hash
    (whole, window, centre) by more than the radii allow, but their 16 x 16 thumbnails
    still correlate more with each other than with almost any other image. The
    correlation of two images is the best of whole/whole and centre/centre thumbnails,
    each also against the mirror image (normalised cross-correlation, as
    :func:`thumb_ncc`); all pairs are compared, in chunks of ``chunk`` rows (O(n^2): the
    caller bounds n, ``neighbour_max_images``).

    Parameters
    ----------
    thumbs, centre_thumbs : ndarray of uint8, shape (n, s, s)
        Whole-image and centre thumbnails (:func:`segdeck.core.cluster.features.thumbnails`,
        :func:`centre_thumbnails`).
    k : int
        Neighbours kept per image (0: none).
    min_ncc : float
        Smallest correlation of a kept pair.
    exclude : ndarray of int64, optional
        Pair keys ``i * n + j`` already candidates (skipped).

    Returns
    -------
    i, j : int64 (m,) with i < j; mirrored : bool (m,), the mirrored thumbnails correlated
    better.
    """
    n = len(thumbs)
    empty = (np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, bool))
    if k <= 0 or n < 2:
        return empty

    def unit(x):
        x = x.reshape(len(x), -1).astype(np.float32)
        x = x - x.mean(1, keepdims=True)
        return x / (np.linalg.norm(x, axis=1, keepdims=True) + 1e-6)

    t, c = unit(thumbs), unit(centre_thumbs)
    tm, cm = unit(thumbs[:, :, ::-1]), unit(centre_thumbs[:, :, ::-1])
    kk = min(k, n - 1)
    rows, cols, flips = [], [], []
    for s0 in range(0, n, chunk):
        s1 = min(n, s0 + chunk)
        direct = np.maximum(t[s0:s1] @ t.T, c[s0:s1] @ c.T)
        mirror = np.maximum(t[s0:s1] @ tm.T, c[s0:s1] @ cm.T)
        best = np.maximum(direct, mirror)
        best[np.arange(s1 - s0), np.arange(s0, s1)] = -np.inf
        top = np.argpartition(-best, kk - 1, axis=1)[:, :kk]
        r = np.repeat(np.arange(s0, s1), kk)
        col = top.ravel()
        val = best[r - s0, col]
        ok = val >= min_ncc
        rows.append(r[ok])
        cols.append(col[ok])
        flips.append(mirror[r[ok] - s0, col[ok]] > direct[r[ok] - s0, col[ok]])
    r, col, flip = np.concatenate(rows), np.concatenate(cols), np.concatenate(flips)
    i, j = np.minimum(r, col), np.maximum(r, col)
    key = i * np.int64(n) + j
    key, first = np.unique(key, return_index=True)
    i, j, flip = i[first], j[first], flip[first]
    if exclude is not None and len(i):
        keep = ~np.isin(key, exclude)
        i, j, flip = i[keep], j[keep], flip[keep]
    return i.astype(np.int64), j.astype(np.int64), flip


def centre_thumbnails(gray: Callable[[int], np.ndarray], ids: np.ndarray, n: int,
                      side: int = features.THUMB_SIDE) -> np.ndarray:
    """(n, side, side) uint8: thumbnails of the centres (:data:`~segdeck.core.cluster.features.CENTRE_FRACTION`)
    of the images ``ids`` (zeros elsewhere)."""
    import cv2

    out = np.zeros((n, side, side), np.uint8)
    for k in np.unique(ids).tolist():
        out[k] = cv2.resize(features.centre_crop(gray(k)), (side, side), interpolation=cv2.INTER_AREA)
    return out


def _links(n: int, dec: PairDecisions, band: np.ndarray, params: DupParams, thumbs: np.ndarray | None,
           gray: Callable[[int], np.ndarray], centre_thumbs: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Step 3a: group the uncertain (``band``) pairs into *links* and keep the ones worth a check.

    The sure pairs form groups (average linkage). A band pair inside one group is its own
    link; band pairs between two groups form one link per group pair, decided together.
    Pairs between groups whose thumbnails do not correlate (``min_ncc``; whole images or
    their centres, whichever correlates better) are dropped unchecked.

    Returns
    -------
    band : int64 (k,)
        The band pairs still in play (indices into ``dec``), sorted by link then distance.
    link : int64 (k,)
        Each one's link id.
    """
    i, j, d = dec.i, dec.j, dec.d
    sure = dec.stage == "sure"
    sure_lab = graph.average_linkage(n, i[sure], j[sure], EDGE_SCALE * d[sure] / 64.0, max_distance=params.max_distance)
    ga, gb = sure_lab[i[band]], sure_lab[j[band]]
    inside = ga == gb
    if params.min_ncc > -1.0:
        if thumbs is None:
            thumbs = features.thumbnails([gray(k) for k in range(n)])
        r = thumb_ncc(thumbs, i[band], j[band], dec.mirrored[band])
        # rotated copies: their corners differ, their centres correlate
        if centre_thumbs is None:
            centre_thumbs = centre_thumbnails(gray, np.concatenate([i[band], j[band]]), n)
        r = np.maximum(r, thumb_ncc(centre_thumbs, i[band], j[band], dec.mirrored[band]))
        # crop pairs passed their own window-aligned check (whole thumbnails are not aligned)
        keep = inside | (r >= params.min_ncc) | (dec.route[band] == 1) | dec.window_ok[band]
        dec.reason[band[~keep]] = "prefilter"
        band, ga, gb, inside = band[keep], ga[keep], gb[keep], inside[keep]
    link = np.where(inside, n * np.int64(n) + band, np.minimum(ga, gb) * np.int64(n) + np.maximum(ga, gb))
    order = np.lexsort((d[band], link))
    return band[order], link[order]


def _verify(dec: PairDecisions, todo: np.ndarray, params: DupParams, gray: Callable[[int], np.ndarray],
            workers: int, cancel: Callable[[], bool] | None = None,
            keys: dict | None = None, side: int | None = None, blur: float = 0.0) -> tuple[np.ndarray, np.ndarray]:
    """Step 3b: ORB + RANSAC inliers of each pair in ``todo`` (int64 (k,) -> int64 (k,)), and
    the smaller keypoint count of the pair's two images (int64 (k,)).

    The images are resized to ``side`` (default ``params.orb_side``) and, with ``blur``
    > 0, smoothed by a Gaussian of that sigma (pixels at ``side``) before ORB.

    Keypoints are computed once per (image, mirrored) that some pair needs, in ``workers``
    threads (OpenCV releases the GIL); one detector per thread; ``keys`` (a dict) keeps
    them for the next call. Once ``cancel()`` is
    true, the remaining work is skipped (those pairs get 0 inliers).
    """
    stop = cancel or (lambda: False)
    side = params.orb_side if side is None else side
    keys = {} if keys is None else keys  # (image, mirrored) -> ORB keys, kept across calls
    local = threading.local()

    def compute(task):
        k, flip = task
        if stop():
            return task, (np.zeros((0, 2), np.float32), np.zeros((0, 32), np.uint8))
        import cv2

        g = gray(k)
        if flip:
            g = np.ascontiguousarray(g[:, ::-1])
        if blur > 0:
            g = cv2.GaussianBlur(features.shrink(g, side), (0, 0), blur)
        det = getattr(local, "orb", None)
        if det is None:
            det = local.orb = orb_detector(params.orb_features, params.orb_levels)
        return task, orb_keys(g, side, params.orb_features, params.orb_levels, detector=det)

    ends = orient_pairs(dec.i[todo], dec.j[todo], dec.mirrored[todo])
    tasks = sorted({t for pair in ends for t in pair} - set(keys))
    with ThreadPoolExecutor(max(1, workers)) as pool:
        for task, kp in pool.map(compute, tasks, chunksize=16):
            keys[task] = kp

        def check(chunk):
            if stop():
                return [0] * len(chunk)
            return [ransac_inliers(keys[ends[t][0]], keys[ends[t][1]],
                                   max_rotation=params.max_rotation, max_scale=params.max_scale) for t in chunk]

        chunks = [range(s, min(s + 64, len(todo))) for s in range(0, len(todo), 64)]
        if not chunks:
            return np.zeros(0, np.int64), np.zeros(0, np.int64)
        inliers = np.concatenate([np.asarray(r, np.int64) for r in pool.map(check, chunks)])
    n_keys = np.array([min(len(keys[a][0]), len(keys[b][0])) for a, b in ends], np.int64)
    return inliers, n_keys


def _dense(dec: PairDecisions, todo: np.ndarray, params: DupParams, gray: Callable[[int], np.ndarray],
           workers: int, cancel: Callable[[], bool] | None = None) -> np.ndarray:
    """Step 3c: :func:`dense_similarity` of each pair in ``todo`` (int64 (k,) -> float64 (k,)):
    whole images, or for a rotated copy (route 2) the centres."""
    stop = cancel or (lambda: False)

    def one(t):
        if stop():
            return 0.0
        a, b = int(dec.i[t]), int(dec.j[t])
        ga, gb = gray(a), gray(b)
        if dec.route[t] == 2:
            ga, gb = features.centre_crop(ga), features.centre_crop(gb)
        if dec.mirrored[t]:
            gb = gb[:, ::-1]
        return dense_similarity(np.ascontiguousarray(ga), np.ascontiguousarray(gb))

    if not len(todo):
        return np.zeros(0)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        return np.fromiter(pool.map(one, todo.tolist(), chunksize=8), float, len(todo))


def decide_pairs(
    codes: np.ndarray,
    params: DupParams,
    gray: Callable[[int], np.ndarray] | None = None,
    workers: int = 1,
    thumbs: np.ndarray | None = None,
    cancel: Callable[[], bool] | None = None,
    windows: np.ndarray | None = None,
    warn: Callable[[str], None] | None = None,
    centres: np.ndarray | None = None,
    centre_thumbs: np.ndarray | None = None,
) -> PairDecisions:
    """Steps 1-3 of the pipeline: candidates, sure pairs, verified links.

    Parameters are those of :func:`cluster_codes`.

    Returns
    -------
    PairDecisions
    """
    codes = np.asarray(codes, np.uint64).reshape(len(codes), 2)
    n = len(codes)
    i, j, d, mirrored = candidate_pairs(codes, params.radius)
    route = np.zeros(len(i), np.int8)
    window_ok = None
    if centres is not None and gray is not None and params.centre_radius >= 0:
        ri, rj, rd, rm = centre_pairs(np.asarray(centres, np.uint64).reshape(n, 2), params.centre_radius,
                                      exclude=i * np.int64(n) + j)
        i, j, d = np.concatenate([i, ri]), np.concatenate([j, rj]), np.concatenate([d, rd])
        mirrored = np.concatenate([mirrored, rm])
        route = np.concatenate([route, np.full(len(ri), 2, np.int8)])
    if windows is not None and gray is not None and params.crop_radius >= 0:
        if n > params.crop_max_images:
            if warn is not None:
                warn(f"dup: {n} images, more than --dup.crop-max-images {params.crop_max_images}: "
                     "cropped copies are found only through the whole-image hashes")
        else:
            if thumbs is None:
                thumbs = features.thumbnails([gray(k) for k in range(n)])
            ci, cj, cd, cm = crop_pairs(codes, np.asarray(windows, np.uint64).reshape(n, -1), params.crop_radius,
                                        gray, thumbs, params.min_ncc)
            # a cropped copy whose whole hash is also close is already a candidate; its window
            # match (aligned thumbnail check passed) exempts it from the whole-image pre-filter,
            # which compares unaligned thumbnails
            known, found = i * np.int64(n) + j, ci * np.int64(n) + cj
            seen = np.isin(found, known)
            window_ok = np.concatenate([np.isin(known, found[seen]), np.ones(int((~seen).sum()), bool)])
            ci, cj, cd, cm = ci[~seen], cj[~seen], cd[~seen], cm[~seen]
            i, j, d = np.concatenate([i, ci]), np.concatenate([j, cj]), np.concatenate([d, cd])
            mirrored = np.concatenate([mirrored, cm])
            route = np.concatenate([route, np.ones(len(ci), np.int8)])
    # look-alikes: only from the thumbnails the features carry (no decoding for this route)
    if gray is not None and params.neighbour_k > 0 and thumbs is not None and centre_thumbs is not None:
        if n > params.neighbour_max_images:
            if warn is not None:
                warn(f"dup: {n} images, more than --dup.neighbour-max-images {params.neighbour_max_images}: "
                     "no look-alike candidates (copies both cropped and rotated may be missed)")
        else:
            ni, nj, nm = neighbour_pairs(thumbs, centre_thumbs, params.neighbour_k, params.neighbour_min_ncc,
                                         exclude=i * np.int64(n) + j)
            nd = similarity.popcount64(codes[ni, 0] ^ codes[nj, np.where(nm, 1, 0)]).astype(np.int64)
            if centres is not None and len(ni):
                cc = np.asarray(centres, np.uint64).reshape(n, 2)
                nd = np.minimum(nd, similarity.popcount64(cc[ni, 0] ^ cc[nj, np.where(nm, 1, 0)]).astype(np.int64))
            i, j, d = np.concatenate([i, ni]), np.concatenate([j, nj]), np.concatenate([d, nd])
            mirrored = np.concatenate([mirrored, nm])
            route = np.concatenate([route, np.full(len(ni), 3, np.int8)])
            if window_ok is not None:
                window_ok = np.concatenate([window_ok, np.zeros(len(ni), bool)])
    stage = np.where((d <= params.sure_radius) & (route == 0), "sure", "").astype(object)
    dec = PairDecisions(i, j, d, mirrored, stage, route)
    if window_ok is not None:
        dec.window_ok = window_ok
    band = np.nonzero(stage == "")[0]
    if gray is None or not len(band):
        dec.reason[band] = "nogray"
        return dec  # without images, uncertain candidates are dropped
    band, link = _links(n, dec, band, params, thumbs, gray, centre_thumbs)
    # verify the closest pair of each link, then the next closest of the links not yet
    # accepted, up to ``verify_per_link`` pairs per link
    first = np.ones(len(link), bool)
    first[1:] = link[1:] != link[:-1]
    start = np.maximum.accumulate(np.where(first, np.arange(len(link)), 0))
    rank = np.arange(len(link)) - start
    keys: dict = {}
    passed = np.zeros(len(band), bool)
    tried = np.zeros(len(band), bool)
    dense_passed = np.zeros(len(band), bool)
    good_links = np.zeros(0, np.int64)
    for r in range(params.verify_per_link):
        sel = np.nonzero((rank == r) & ~np.isin(link, good_links))[0]
        if not len(sel):
            break
        todo = band[sel]
        tried[sel] = True
        inliers, n_keys = _verify(dec, todo, params, gray, workers, cancel, keys)
        ok = inliers >= params.min_inliers
        dec.checked += int(len(todo))
        # low-texture pairs that ORB cannot check: dense correlation (close hashes only)
        weak = (np.nonzero(~ok & (n_keys < DENSE_MAX_KEYS) & ~np.isin(dec.route[todo], (1, 3)) & (dec.d[todo] <= DENSE_RADIUS))[0]
                if params.dense_min_cc <= 1.0 else np.zeros(0, np.int64))
        dense_ok = weak[_dense(dec, todo[weak], params, gray, workers, cancel) >= params.dense_min_cc]
        dec.dense += int(len(weak))
        passed[sel[ok]] = True
        passed[sel[dense_ok]] = True
        dense_passed[sel[dense_ok]] = True
        # the sure groups are pure (sure pairs are near-identical), so one verified pair
        # between two groups means the groups are copies of one image: the link is accepted
        good_links = np.union1d(good_links, link[sel[ok | np.isin(np.arange(len(sel)), dense_ok)]])
    dec.reason[band] = np.where(tried, "verify", "unchecked")
    # second pass: rejected pairs with close hashes and correlated thumbnails, on smaller
    # blurred images (RETRY_*), one pair per link not yet accepted
    failed = tried & ~passed & ~np.isin(link, good_links) & (dec.d[band] <= RETRY_RADIUS)
    if failed.any() and RETRY_SIDE > 0 and not (cancel is not None and cancel()):
        sel = np.nonzero(failed)[0]
        th = thumbs if thumbs is not None else features.thumbnails([gray(k) for k in range(n)])
        ct = centre_thumbs if centre_thumbs is not None else centre_thumbnails(
            gray, np.concatenate([dec.i[band[sel]], dec.j[band[sel]]]), n)
        todo = band[sel]
        r = np.maximum(thumb_ncc(th, dec.i[todo], dec.j[todo], dec.mirrored[todo]),
                       thumb_ncc(ct, dec.i[todo], dec.j[todo], dec.mirrored[todo]))
        sel = sel[r >= RETRY_MIN_NCC]
        if len(sel):
            inliers, _ = _verify(dec, band[sel], params, gray, workers, cancel, {}, side=RETRY_SIDE, blur=RETRY_BLUR)
            ok = inliers >= params.min_inliers
            dec.checked += int(len(sel))
            dec.retried += int(len(sel))
            passed[sel[ok]] = True
            good_links = np.union1d(good_links, link[sel[ok]])
    # optional third pass: pairs ORB rejected, aligned densely (rotation, scale, shift by
    # Fourier-Mellin, then masked correlation): finds captioned, blurred or doubly edited
    # copies ORB cannot match, at a cost (off by default)
    failed = tried & ~passed & ~np.isin(link, good_links)
    if params.align_min_score <= 1.0 and failed.any() and not (cancel is not None and cancel()):
        from segdeck.core.cluster import align

        sel = np.nonzero(failed)[0]
        todo = band[sel]
        score = align.PairAligner(gray)(dec.i[todo], dec.j[todo], dec.mirrored[todo], workers=workers,
                                        min_spectrum_peak=align.SPECTRUM_GATE)["score"]
        ok = score >= params.align_min_score
        dec.aligned += int(len(sel))
        passed[sel[ok]] = True
        good_links = np.union1d(good_links, link[sel[ok]])
    dec.stage[band[np.isin(link, good_links)]] = "link"
    dec.stage[band[passed]] = "verified"
    dec.stage[band[dense_passed]] = "dense"
    dec.reason[dec.accepted] = ""
    return dec


def cluster_codes(
    codes: np.ndarray,
    params: DupParams,
    gray: Callable[[int], np.ndarray] | None = None,
    workers: int = 1,
    thumbs: np.ndarray | None = None,
    decisions: list | None = None,
    cancel: Callable[[], bool] | None = None,
    windows: np.ndarray | None = None,
    warn: Callable[[str], None] | None = None,
    centres: np.ndarray | None = None,
    centre_thumbs: np.ndarray | None = None,
) -> tuple[np.ndarray, dict]:
    """Cluster images from their hash pairs, verifying uncertain candidates.

    Steps: :func:`candidate_pairs` (flip-invariant hash within ``radius``), pairs within
    ``sure_radius`` accepted, the rest grouped into links and verified
    (:func:`decide_pairs`), then average linkage on the accepted pairs.

    Parameters
    ----------
    codes : ndarray of uint64, shape (n, 2)
        pHash of each image and of its mirror image.
    params : DupParams
    gray : callable, optional
        ``gray(k)`` returns image ``k`` as (H, W) uint8 grayscale; needed for the
        verification. Without it candidates beyond ``sure_radius`` are dropped.
    workers : int
        Threads for ORB and verification (OpenCV releases the GIL).
    thumbs : ndarray of uint8, shape (n, 16, 16), optional
        Thumbnails for the ``min_ncc`` pre-filter
        (:func:`segdeck.core.cluster.features.thumbnails`); made from ``gray`` when
        missing.
    decisions : list, optional
        When given, the :class:`PairDecisions` is appended to it (for the pair table).
    cancel : callable, optional
        Returns True to stop the verification early (the job then writes nothing).
    windows : ndarray of uint64, shape (n, 2 w), optional
        Window hashes (:func:`segdeck.core.cluster.features.window_codes`) for the
        cropped-copy candidates (:func:`crop_pairs`, ``crop_radius``).
    warn : callable, optional
        Receives a line when a step is skipped (``crop_max_images``).
    centres : ndarray of uint64, shape (n, 2), optional
        Centre hashes (:func:`segdeck.core.cluster.features.centre_codes`) for the
        rotated-copy candidates (:func:`centre_pairs`, ``centre_radius``).
    centre_thumbs : ndarray of uint8, shape (n, 16, 16), optional
        Thumbnails of the centres (:func:`centre_thumbnails`) for the ``min_ncc``
        pre-filter; made from ``gray`` when missing.

    Returns
    -------
    labels : ndarray of int64, shape (n,)
    stats : dict
        ``candidates``, ``crop_candidates``, ``centre_candidates``, ``sure``, ``verified``
        (checked), ``retried`` (second ORB pass), ``aligned`` (Fourier-Mellin pass,
        ``align_min_score``), ``dense`` (low-texture correlation), ``accepted`` pair counts.
    """
    n = len(codes)
    dec = decide_pairs(codes, params, gray=gray, workers=workers, thumbs=thumbs, cancel=cancel, windows=windows,
                       warn=warn, centres=centres, centre_thumbs=centre_thumbs)
    if decisions is not None:
        decisions.append(dec)
    acc = dec.accepted
    # accepted edges: distance in [0, EDGE_SCALE] growing with the hash distance; missing pairs = 1
    labels = graph.average_linkage(n, dec.i[acc], dec.j[acc], EDGE_SCALE * dec.d[acc] / 64.0, max_distance=params.max_distance)
    stats = {"candidates": int(len(dec.i)), "crop_candidates": int((dec.route == 1).sum()),
             "centre_candidates": int((dec.route == 2).sum()),
             "neighbour_candidates": int((dec.route == 3).sum()), "sure": int((dec.stage == "sure").sum()),
             "verified": dec.checked, "retried": dec.retried, "aligned": dec.aligned, "dense": dec.dense, "accepted": int(acc.sum())}
    return labels, stats


def cluster_folder(folder: str | Path, params: DupParams | None = None, workers: int = 2) -> tuple[list[str], np.ndarray]:
    """Decode, hash, verify and cluster every image of a folder (no job, no cache).

    The one-call form the benchmark times; the ``cluster`` job runs the same steps
    through the job runner with a feature cache.

    Returns
    -------
    names : list of str
        Image paths relative to ``folder``, sorted.
    labels : ndarray of int64
    """
    from segdeck.core import imageio

    params = params or DupParams()
    folder = Path(folder)
    paths = imageio.discover(folder)
    with ThreadPoolExecutor(max(1, workers)) as pool:
        grays = list(pool.map(lambda p: features.load_gray_small(p, 256), paths, chunksize=32))
    codes = features.phash_codes_fast(grays)
    windows = np.stack([features.window_codes(g) for g in grays]) if grays else None
    centres = np.stack([features.centre_codes(g) for g in grays]) if grays else None
    small = [features.shrink(g, params.orb_side) for g in grays]
    labels, _ = cluster_codes(codes, params, gray=lambda k: small[k], workers=workers,
                              thumbs=features.thumbnails(grays), windows=windows, centres=centres,
                              centre_thumbs=features.thumbnails([features.centre_crop(g) for g in grays]))
    return [p.relative_to(folder).as_posix() for p in paths], labels


def dup_cluster(feats: Sequence[dict], params: DupParams, gray: Callable[[int], np.ndarray] | None, workers: int = 1,
                decisions: list | None = None, cancel: Callable[[], bool] | None = None,
                warn: Callable[[str], None] | None = None):
    """:func:`cluster_codes` on job features (each with ``h`` of shape (2,) and, from
    feature key ``dup:v2`` on, the thumbnail ``t``)."""
    codes = np.stack([f["h"] for f in feats]) if len(feats) else np.zeros((0, 2), np.uint64)
    thumbs = np.stack([f["t"] for f in feats]) if len(feats) and all("t" in f for f in feats) else None
    windows = np.stack([f["w"] for f in feats]) if len(feats) and all("w" in f for f in feats) else None
    centres = np.stack([f["c"] for f in feats]) if len(feats) and all("c" in f for f in feats) else None
    centre_thumbs = np.stack([f["ct"] for f in feats]) if len(feats) and all("ct" in f for f in feats) else None
    return cluster_codes(codes, params, gray=gray, workers=workers, thumbs=thumbs, decisions=decisions, cancel=cancel,
                         windows=windows, warn=warn, centres=centres, centre_thumbs=centre_thumbs)
