"""Dense alignment of two near-duplicate images: Fourier-Mellin registration, then NCC.

A verifier for candidate pairs of the ``dup`` method (:mod:`segdeck.core.cluster.dedup`)
that, unlike keypoint matching, does not need many keypoints: it estimates the
similarity transform (rotation, scale, translation) between two images from their
Fourier spectra, warps one onto the other and scores the pair by the normalised
cross-correlation (NCC) of the overlap, black fill of rotated copies left out, and by
the agreement of the two spectra's phases. Entry points: :func:`prepare` (per image),
:func:`align_pairs` (batched pairs), :func:`align` (one pair), :class:`PairAligner`
(pairs by index, each image prepared once); accept a pair at :data:`ACCEPT_SCORE`.

Method (Reddy & Chatterji 1996)
-------------------------------
1. **Per image** (:func:`prepare`, once): the grayscale image is resized so its longer side
   is :data:`ALIGN_SIDE` pixels (aspect kept) and centred on a square canvas. Black fill
   (dark triangles at the corners of a copy rotated on the same canvas, :func:`fill_mask`)
   is marked invalid and replaced by the mean. The zero-mean content, multiplied by a
   Hann window, gives the spectrum's magnitude ``|F|`` (translation-invariant),
   weighted by the paper's high-pass ``(1 - X)(2 - X)``, ``X = cos(pi u) cos(pi v)``, and
   resampled on a log-polar grid (``side`` angles over [0, 180) degrees: ``|F|`` is
   centrally symmetric; ``side`` log-spaced radii). The phase-only spectrum of
   that log-polar image is stored, as is the phase-only spectrum of the windowed canvas.
2. **Per pair** (:func:`align_pairs`, batched): a rotation of the image is a cyclic
   shift of the log-polar magnitude along the angle axis, a scale change a shift along
   the log-radius axis; phase correlation of the two log-polar images gives both (peak
   searched only within ``max_angle`` and ``max_scale``, sub-bin by a parabola through
   the peak and its neighbours). The second image is rotated and scaled accordingly, and
   phase correlation of the two canvases gives the translation (cross-power spectrum
   weighted by a Gaussian low-pass, :data:`TRANSLATION_LOWPASS`). The warped second
   image and its validity mask are laid over the first.
3. **Score**: the mean of two measures in [0, 1]: ``ncc``, the Pearson correlation of the
   pixels valid in both (the warped image's support, fill excluded) after a light blur
   (:data:`NCC_BLUR`, tolerates perspective and JPEG), and ``peak``, the height of the
   translation's phase-correlation peak (how many frequencies agree in phase). Smooth
   look-alikes (neighbouring tiles of one photo: sky, a blurred background, a black
   surround) reach a high ``ncc`` after alignment but a low ``peak``; text overlays and
   perspective lower ``peak`` more than ``ncc``; on the development pairs the mean
   separates better than either (``benchmarks/cluster_align.py``). Pairs whose overlap
   covers less than ``min_overlap`` of the smaller image score 0.

Cost: a pair is two small inverse FFTs, one forward FFT, two warps and an NCC at
:data:`ALIGN_SIDE` = 48 px, batched over pairs in numpy; an image is one resize, two
FFTs and a log-polar resampling (:func:`prepare_many` batches the FFTs).
``benchmarks/cluster_align.py`` prints both next to ORB + RANSAC measured in the same
run: on a loaded 2-core machine about 0.4x ORB's keypoints per image and 0.35x a
RANSAC check per pair (0.15-0.25 ms a pair, one thread).

Conventions
-----------
The transform maps the first image ``a`` onto the second image ``b`` in the sense of
``cv2.getRotationMatrix2D``: ``b`` looks like ``a`` rotated by ``angle`` degrees
counter-clockwise as displayed (y axis down), scaled by ``scale`` (``scale > 1``: the
content is larger in ``b``, measured in each image's own pixels) and shifted so that
``a``'s centre lands at ``b``'s centre plus ``(dx, dy)`` (pixels of ``b``, x right,
y down)::

    x_b - c_b = scale * R(angle) (x_a - c_a) + (dx, dy)

with ``c`` the image centre ``((w - 1) / 2, (h - 1) / 2)`` and ``R(angle)`` the rotation
matrix of ``cv2.getRotationMatrix2D`` (``[[cos, sin], [-sin, cos]]``). Mirror images are
not aligned: like :func:`segdeck.core.cluster.dedup.orient_pairs`, the caller passes the
mirrored image (``prepare(gray[:, ::-1])``, or ``mirrored`` to :class:`PairAligner`) for
pairs whose mirrored hash was closer.

Reference: B. S. Reddy and B. N. Chatterji, "An FFT-based technique for translation,
rotation, and scale-invariant image registration", IEEE Transactions on Image Processing
5(8), 1266-1271, 1996.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

#: Side (pixels) of the square canvas everything is computed on. Larger gives finer
#: angle and scale estimates and sharper NCC (less tolerance to perspective and blur) at
#: a cost growing with its square; on the development pairs 48 separated a little better
#: than 40, 56, 64 or 80 (``benchmarks/cluster_align.py``). ``side=32`` (with
#: ``--side 32`` in the benchmark; the log-polar grid and the blur scale with the side)
#: costs about 0.4x per pair and 0.6x per image; alone it passes fewer rotated crops
#: (combo 0.855 instead of 0.874 at 0.3 % false accepts, threshold 0.70), together with
#: ORB about the same (every family >= 0.979 at threshold 0.75, no false accept beyond
#: ORB's).
ALIGN_SIDE = 48

#: The log-polar grid has ``side`` rows, angles over [0, 180) degrees (3.75 degrees a
#: row at 48 before sub-bin refinement), and ``side`` columns, log-spaced radii from
#: :data:`LP_MIN_RADIUS` to ``side / 2`` (about 5.4 % scale change a column at 48).

#: Smallest radius (frequency bins) of the log-polar grid: the lowest frequencies hold
#: the window's own spectrum and the image's overall shading, not its structure.
LP_MIN_RADIUS = 2.0

#: Grey level at or below which a pixel may be fill (:func:`fill_mask`): JPEG leaves
#: black corners at 0..6, their edges a little brighter.
FILL_LEVEL = 12

#: Gaussian sigma (pixels of a 48-px canvas, scaled with the side) applied before the
#: NCC: tolerance to perspective, small residual misalignment, blur and JPEG differences,
#: at the price of detail that tells look-alike textures apart.
NCC_BLUR = 0.75

#: Default largest rotation searched (degrees, either sense). Near-duplicates are
#: rotated by a few degrees; a wider search finds more spurious alignments of
#: look-alikes (rows of coins match at 15 degrees). Rounded up to whole log-polar rows.
MAX_ANGLE = 12.0

#: Default largest zoom searched between the two canvases (and its inverse): a crop of
#: 15 % per side, resized back, zooms by 1 / 0.7 = 1.43.
MAX_SCALE = 1.6

#: Score from which a pair counts as a near-duplicate. On the development pairs of
#: ``benchmarks/cluster_align.py`` (held-out generator, seeds 1 and 2, images as the
#: ``dup`` job verifies them) it accepted 0.3 % of neighbouring tiles of one photo
#: (repetitive brick walls, rows of coins) and 0.88-1.0 of each edit family; 0.75
#: accepted none of them and 0.80-1.0 of each family.
ACCEPT_SCORE = 0.68

#: Default smallest overlap (fraction of the smaller image's valid area) for a score.
MIN_OVERLAP = 0.35

#: Images whose valid pixels vary less than this (grey-level standard deviation at
#: :data:`ALIGN_SIDE`) are flat: they score 0 against anything.
MIN_STD = 2.0

#: Width (fraction of the spectrum's radius) of the Gaussian low-pass applied to the
#: translation's cross-power spectrum: high frequencies (noise, JPEG, blur, text) carry
#: phase that agrees poorly between near-duplicates; down-weighting them sharpens the peak.
TRANSLATION_LOWPASS = 0.35


@dataclass(frozen=True)
class Prepared:
    """Per-image data of :func:`prepare` (everything a pair needs that one image decides).

    Attributes
    ----------
    size : tuple of int
        ``(w, h)`` of the original image in pixels.
    factor : float
        Canvas pixels per original pixel (``ALIGN_SIDE / max(w, h)``).
    centre : tuple of float
        ``(x, y)`` of the content's centre on the canvas (canvas pixels).
    image_valid : ndarray of float32, shape (S, S, 2)
        Channel 0 (:attr:`image`): blurred grey levels on the canvas minus their mean
        over the valid pixels (0 outside the content), for the NCC; channel 1
        (:attr:`valid`): 1 where the canvas holds image content that is not fill, else
        0. Two channels of one array: one warp moves both.
    window : ndarray of float32, shape (S, S)
        Zero-mean content times a Hann window (0 outside), for the spectra.
    spectrum : ndarray of complex64, shape (S, S // 2 + 1)
        Phase-only ``rfft2`` of ``window``.
    logpolar : ndarray of complex64, shape (S, S // 2 + 1)
        Phase-only ``rfft2`` of ``log(1 + |F| H)`` (``F`` the spectrum of ``window``,
        ``H`` the high-pass) resampled on the log-polar grid.
    n_valid : int
        Number of valid canvas pixels.
    flat : bool
        The image has (almost) no contrast: every pair with it scores 0.

    Notes
    -----
    About 46 KB per image at the default side: prepare the images some pair needs, not
    a whole large folder at once (:class:`PairAligner` does so).
    """

    size: tuple[int, int]
    factor: float
    centre: tuple[float, float]
    image_valid: np.ndarray
    window: np.ndarray
    spectrum: np.ndarray
    logpolar: np.ndarray
    n_valid: int
    flat: bool

    @property
    def image(self) -> np.ndarray:
        """(S, S) float32 view: zero-mean blurred grey levels (channel 0 of ``image_valid``)."""
        return self.image_valid[:, :, 0]

    @property
    def valid(self) -> np.ndarray:
        """(S, S) float32 view: 1 on valid content, 0 elsewhere (channel 1 of ``image_valid``)."""
        return self.image_valid[:, :, 1]


@dataclass(frozen=True)
class Alignment:
    """Result of :func:`align` for one pair (conventions in the module docstring).

    Attributes
    ----------
    score : float
        ``(ncc + peak) / 2`` in [0, 1]; 0 when ``reason`` is not empty.
    ncc : float
        NCC of the aligned overlap (valid pixels of both), clipped to [0, 1].
    peak : float
        Height of the translation's phase-correlation peak over the highest possible
        (1: every weighted frequency's phase agrees), clipped to [0, 1].
    angle : float
        Rotation from ``a`` to ``b`` in degrees, counter-clockwise as displayed.
    scale : float
        Size of ``b``'s content over ``a``'s, each in its own pixels.
    dx, dy : float
        Where ``a``'s centre lands in ``b``, relative to ``b``'s centre (pixels of ``b``).
    overlap : float
        Overlap of the aligned images over the smaller one's valid area, in [0, 1].
    reason : str
        Why the score is 0 without an NCC: ``"flat"`` (an image without contrast),
        ``"spectrum"`` (below ``min_spectrum_peak``), ``"overlap"`` (overlap below
        ``min_overlap``); empty otherwise.
    """

    score: float
    angle: float
    scale: float
    dx: float
    dy: float
    overlap: float
    reason: str = ""
    ncc: float = 0.0
    peak: float = 0.0


def _grids(side: int = ALIGN_SIDE):
    """Constant arrays of one canvas size (cached): log-polar sampling maps, high-pass
    filter, radial Hann window and translation low-pass."""
    key = side
    got = _GRID_CACHE.get(key)
    if got is not None:
        return got
    n = side  # log-polar rows (angles) and columns (radii)
    theta = np.pi * np.arange(n) / n
    log_r = np.linspace(np.log(LP_MIN_RADIUS), np.log(side / 2.0), n)
    r = np.exp(log_r)
    # bilinear sampling of the unshifted spectrum (frequency (0, 0) at bin (0, 0), negative
    # frequencies wrapped), as a gather of 4 bins with weights per log-polar sample; bins of
    # the left half are read from the right half |F(-u, -v)| = |F(u, v)| (real images), so
    # the half spectrum of ``rfft2`` is enough
    half = side // 2 + 1
    map_x = (r[None, :] * np.cos(theta)[:, None]).ravel()
    map_y = (-r[None, :] * np.sin(theta)[:, None]).ravel()
    x0, y0 = np.floor(map_x), np.floor(map_y)
    fx, fy = map_x - x0, map_y - y0
    x0, y0 = x0.astype(np.int64), y0.astype(np.int64)
    idx = []
    for dy in (0, 1):
        for dx in (0, 1):
            yy, xx = (y0 + dy) % side, (x0 + dx) % side
            left = xx >= half
            yy = np.where(left, (side - yy) % side, yy)
            xx = np.where(left, side - xx, xx)
            idx.append(yy * half + xx)
    lp_idx = np.stack(idx)
    lp_w = np.stack([(1 - fy) * (1 - fx), (1 - fy) * fx, fy * (1 - fx), fy * fx]).astype(np.float32)
    f = np.fft.fftfreq(side)
    x = np.cos(np.pi * f)[:, None] * np.cos(np.pi * f)[None, :half]
    highpass = ((1.0 - x) * (2.0 - x)).astype(np.float32)  # on the rfft2 half spectrum
    radial = np.hanning(n + 2)[1:-1].astype(np.float32)[None, :]
    fy = np.fft.fftfreq(side)[:, None]
    fx = np.fft.rfftfreq(side)[None, :]
    lowpass = np.exp(-(fx ** 2 + fy ** 2) / (2 * (TRANSLATION_LOWPASS * 0.5) ** 2)).astype(np.float32)
    got = {"lp_idx": lp_idx, "lp_w": lp_w, "highpass": highpass, "radial": radial, "lowpass": lowpass,
           "dlog": float(log_r[1] - log_r[0])}
    _GRID_CACHE[key] = got
    return got


_GRID_CACHE: dict = {}


def _phase_only(z: np.ndarray) -> np.ndarray:
    return (z / np.maximum(np.abs(z), 1e-6)).astype(np.complex64)


def _run(line: np.ndarray) -> int:
    """Length of the leading run of True in a 1-D bool array."""
    return len(line) if line.all() else int(np.argmin(line))


def fill_mask(gray: np.ndarray) -> np.ndarray:
    """Fill pixels of a grayscale image: the black corners of a copy rotated on its canvas.

    At each corner, the dark (<= :data:`FILL_LEVEL`) runs along the two edges span a
    right triangle; it is fill when at least 90 % of it is dark, the band just past its
    hypotenuse is mostly not dark and the rectangle the runs span holds little more dark
    than the triangle (a straight cut, not a dark object that touches the corner, such
    as a black coat or a round shadow: JPEG leaves both at the same grey levels).

    Parameters
    ----------
    gray : ndarray, shape (H, W)
        Grey levels 0..255 (any real dtype).

    Returns
    -------
    ndarray of bool, shape (H, W)
        True on fill.
    """
    g = np.asarray(gray)
    h, w = g.shape
    fill = np.zeros((h, w), bool)
    if min(g[0, 0], g[0, -1], g[-1, 0], g[-1, -1]) > FILL_LEVEL:
        return fill  # no dark corner pixel: no fill (the common case, checked cheaply)
    dark = g <= FILL_LEVEL
    for sy in (1, -1):
        for sx in (1, -1):
            d = dark[::sy, ::sx]
            if h < 2 or w < 2 or not (d[0, 0] and d[0, 1] and d[1, 0]):
                continue
            f = fill[::sy, ::sx]
            p, q = _run(d[0]), _run(d[:, 0])
            if p < 2 or q < 2 or p == w or q == h:
                continue
            bh, bw = min(h, int(q * 1.5) + 1), min(w, int(p * 1.5) + 1)
            yy, xx = np.mgrid[0:bh, 0:bw]
            u = (xx + 0.5) / p + (yy + 0.5) / q
            tri = u < 1.0
            if d[:bh, :bw][tri].mean() < 0.9:
                continue
            band = (u >= 1.2) & (u < 1.5)
            if band.any() and d[:bh, :bw][band].mean() > 0.5:
                continue
            if d[:q, :p].sum() > 1.15 * p * q / 2 + np.hypot(p, q):  # dark beyond a straight cut
                continue
            f[:bh, :bw] |= tri
    return fill


def prepare(gray: np.ndarray, side: int = ALIGN_SIDE) -> Prepared:
    """Everything :func:`align_pairs` needs of one image, computed once (the one-image
    form of :func:`prepare_many`).

    Parameters
    ----------
    gray : ndarray of uint8, shape (H, W)
        Grayscale image, any size (an (H, W, 3) array is averaged to grey).
    side : int
        Canvas side in pixels (:data:`ALIGN_SIDE`); both images of a pair must use the same.

    Returns
    -------
    Prepared

    Raises
    ------
    ValueError
        An empty image or one that is not 2-D (or 3-D with channels).
    """
    return prepare_many([gray], side)[0]


def _hann(w: int, h: int) -> np.ndarray:
    """(h, w) float32 2-D Hann window (``cv2.createHanningWindow``), cached."""
    got = _HANN_CACHE.get((w, h))
    if got is None:
        import cv2

        got = _HANN_CACHE[(w, h)] = cv2.createHanningWindow((w, h), cv2.CV_32F)
    return got


_HANN_CACHE: dict = {}


def _canvas(gray, side: int):
    """Per-image part of :func:`prepare_many`: resize, fill, canvases (no FFT)."""
    import cv2

    g = np.asarray(gray)
    if g.ndim == 3:
        g = g.mean(axis=2)
    if g.ndim != 2 or g.shape[0] < 1 or g.shape[1] < 1:
        raise ValueError(f"align.prepare: expected an (H, W) grayscale image, got shape {np.shape(gray)}")
    h, w = g.shape
    f = side / max(h, w)
    nw, nh = max(1, min(side, round(w * f))), max(1, min(side, round(h * f)))
    if g.dtype != np.uint8:
        g = g.astype(np.float32)
    small = cv2.resize(g, (nw, nh), interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR).astype(np.float32)
    small = small.reshape(nh, nw)  # cv2 drops a unit axis
    fill = fill_mask(small)
    if fill.any():  # interpolation and JPEG smear the fill's edge: one pixel more
        fill = cv2.dilate(fill.astype(np.uint8), np.ones((3, 3), np.uint8)).astype(bool)
        valid_small = ~fill
        n_valid = int(valid_small.sum())
        mean_, std_ = cv2.meanStdDev(small, mask=valid_small.astype(np.uint8))
    else:
        valid_small, n_valid = None, nh * nw
        mean_, std_ = cv2.meanStdDev(small)
    mean = float(mean_[0, 0]) if n_valid else 0.0
    flat = n_valid < 16 or float(std_[0, 0]) < MIN_STD
    x0, y0 = (side - nw) // 2, (side - nh) // 2
    layers = np.zeros((side, side, 2), np.float32)  # image, valid
    window = np.zeros((side, side), np.float32)
    z = small - mean
    blurred = cv2.GaussianBlur(small if valid_small is None else np.where(valid_small, small, mean).astype(np.float32),
                               (0, 0), NCC_BLUR * side / 48.0) - mean
    if valid_small is not None:
        z[~valid_small] = 0.0
        blurred[~valid_small] = 0.0
        layers[y0:y0 + nh, x0:x0 + nw, 1] = valid_small
    else:
        layers[y0:y0 + nh, x0:x0 + nw, 1] = 1.0
    layers[y0:y0 + nh, x0:x0 + nw, 0] = blurred
    window[y0:y0 + nh, x0:x0 + nw] = z * _hann(nw, nh) if nh > 2 and nw > 2 else z
    return dict(size=(w, h), factor=f, centre=(x0 + (nw - 1) / 2.0, y0 + (nh - 1) / 2.0), image_valid=layers,
                window=window, n_valid=n_valid, flat=flat)


def prepare_many(grays: Sequence[np.ndarray], side: int = ALIGN_SIDE) -> list[Prepared]:
    """:func:`prepare` of many images, the spectra batched (cheaper per image).

    Parameters
    ----------
    grays : sequence of ndarray of uint8, shape (H, W)
        Grayscale images, any sizes.
    side : int
        Canvas side in pixels (:data:`ALIGN_SIDE`).

    Returns
    -------
    list of Prepared
        One per image, in order.

    Raises
    ------
    ValueError
        An empty image or one that is not 2-D (or 3-D with channels), or ``side``
        outside 16..1024.
    """
    if not 16 <= int(side) <= 1024:
        raise ValueError(f"align.prepare: side {side} outside 16..1024 pixels")
    if not len(grays):
        return []
    if len(grays) > PREPARE_CHUNK:  # cache-sized batches
        return [p for s in range(0, len(grays), PREPARE_CHUNK) for p in prepare_many(grays[s:s + PREPARE_CHUNK], side)]
    grids = _grids(side)
    parts = [_canvas(g, side) for g in grays]
    fft = _fft()
    windows = np.stack([p["window"] for p in parts])
    half = fft.rfft2(windows, axes=(-2, -1))
    spec = _phase_only(half)
    mag = np.log1p(np.abs(half).astype(np.float32) * grids["highpass"]).reshape(len(parts), -1)
    lp = np.zeros((len(parts), side * side), np.float32)
    for idx, wt in zip(grids["lp_idx"], grids["lp_w"], strict=True):  # bilinear: 4 bins per sample
        lp += mag[:, idx] * wt
    lp = lp.reshape(len(parts), side, side)
    lp = (lp - lp.mean(axis=(1, 2), keepdims=True)) * grids["radial"]
    logpolar = _phase_only(fft.rfft2(lp, axes=(-2, -1)))
    return [Prepared(spectrum=spec[k], logpolar=logpolar[k], **p) for k, p in enumerate(parts)]


def _parabola(lo: np.ndarray, mid: np.ndarray, hi: np.ndarray) -> np.ndarray:
    den = lo - 2 * mid + hi
    with np.errstate(divide="ignore", invalid="ignore"):
        off = np.where(den < -1e-12, 0.5 * (lo - hi) / den, 0.0)
    return np.clip(off, -0.5, 0.5)


def _fft():
    """``scipy.fft``, always: about 3x faster than ``numpy.fft`` on batches of small
    float32 transforms, and one library for every call, so a pair's score never depends
    on what the process imported before (the rounding of the two differs; a pair scoring
    exactly at ``--dup.align-min-score`` could flip). Importing it costs about 0.2 s once."""
    import scipy.fft

    return scipy.fft


def _rotation_scale(pa: np.ndarray, pb: np.ndarray, max_angle: float, max_scale: float, dlog: float,
                    candidates: int = 1):
    """Phase correlation of log-polar spectra, batched: (k, A, R/2+1) x2 -> canvas angle
    (degrees, cv2 sense, a -> b) and scale (b over a) of the ``candidates`` highest peaks
    of each pair (at least 2 bins apart), each of shape (k, candidates), and the height
    of the highest peak (k,) (1: the two log-polar spectra agree in every phase)."""
    n_a = n_r = pa.shape[-2]  # the log-polar grid is square (side x side)
    corr = _fft().irfft2(pb * np.conj(pa), s=(n_a, n_r), axes=(-2, -1))
    ka = min(n_a // 2 - 1, int(np.ceil(max_angle / (180.0 / n_a))))
    kr = min(n_r // 2 - 1, int(np.ceil(np.log(max_scale) / dlog)))
    rows = np.arange(-ka, ka + 1) % n_a
    cols = np.arange(-kr, kr + 1) % n_r
    sub = corr[:, rows][:, :, cols]
    k = len(sub)
    ar = np.arange(k)
    angles, scales = [], []
    height = sub.reshape(k, -1).max(axis=1)
    for _ in range(candidates):
        flat_idx = sub.reshape(k, -1).argmax(axis=1)
        ri, ci = np.divmod(flat_idx, len(cols))
        r0, c0 = rows[ri], cols[ci]
        dr = _parabola(corr[ar, (r0 - 1) % n_a, c0], corr[ar, r0, c0], corr[ar, (r0 + 1) % n_a, c0])
        dc = _parabola(corr[ar, r0, (c0 - 1) % n_r], corr[ar, r0, c0], corr[ar, r0, (c0 + 1) % n_r])
        angles.append(np.clip((ri - ka) + dr, -ka, ka) * (180.0 / n_a))
        scales.append(np.exp(-((ci - kr) + dc) * dlog))
        for d in (-1, 0, 1):
            for e in (-1, 0, 1):
                sub[ar, np.clip(ri + d, 0, len(rows) - 1), np.clip(ci + e, 0, len(cols) - 1)] = -np.inf
    return np.stack(angles, axis=1), np.stack(scales, axis=1), height


def _peak(corr: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Highest peak of each (S, S) cyclic correlation surface, sub-pixel: (tx, ty, y0, x0)."""
    k = len(corr)
    idx = corr.reshape(k, -1).argmax(axis=1)
    y0, x0 = np.divmod(idx, side)
    ar = np.arange(k)
    dy = _parabola(corr[ar, (y0 - 1) % side, x0], corr[ar, y0, x0], corr[ar, (y0 + 1) % side, x0])
    dx = _parabola(corr[ar, y0, (x0 - 1) % side], corr[ar, y0, x0], corr[ar, y0, (x0 + 1) % side])
    ty = ((y0 + side // 2) % side - side // 2) + dy
    tx = ((x0 + side // 2) % side - side // 2) + dx
    return tx, ty, y0, x0


def _translation(fa: np.ndarray, warped: np.ndarray, lowpass: np.ndarray, side: int):
    """Phase correlation of canvas ``a`` (phase-only spectra (k, S, S/2+1)) and the warped
    canvases ``b`` (k, S, S): the shift (tx, ty) that moves warped ``b`` onto ``a`` and the
    peak's height over the highest possible (1: every weighted phase agrees), each (k,)."""
    fft = _fft()
    fb = fft.rfft2(warped, axes=(-2, -1))
    cross = fa * np.conj(fb)
    cross = cross / np.maximum(np.abs(cross), 1e-6) * lowpass
    corr = fft.irfft2(cross, s=(side, side), axes=(-2, -1))
    tx, ty, y0, x0 = _peak(corr, side)
    best = float(np.sum(lowpass[:, 0]) + np.sum(lowpass[:, -1]) + 2 * np.sum(lowpass[:, 1:-1])) / (side * side)
    height = corr[np.arange(len(corr)), y0, x0] / max(1e-12, best)  # best: irfft2(lowpass) at (0, 0)
    return tx, ty, height


def _warp_all(items, jj: np.ndarray, mats: np.ndarray, side: int, field: str) -> np.ndarray:
    import cv2

    first = getattr(items[int(jj[0])], field) if len(jj) else np.zeros((side, side), np.float32)
    out = np.empty((len(jj), *first.shape), np.float32)
    for n, t in enumerate(jj.tolist()):
        out[n] = cv2.warpAffine(getattr(items[t], field), mats[n], (side, side), flags=cv2.INTER_LINEAR,
                                borderValue=0)
    return out


def _ncc_batch(items, ii: np.ndarray, jj: np.ndarray, mats: np.ndarray, side: int) -> tuple[np.ndarray, np.ndarray]:
    """NCC of each ``a`` with ``b`` warped by ``mats`` (k, 2, 3) over the pixels valid in
    both, and the overlap count; (k,) each."""
    k = len(ii)
    va = np.stack([items[t].valid for t in ii.tolist()]).reshape(k, -1)
    ia = np.stack([items[t].image for t in ii.tolist()]).reshape(k, -1)
    w = _warp_all(items, jj, mats, side, "image_valid").reshape(k, -1, 2)
    both = ((w[:, :, 1] > 0.999) & (va > 0.5)).astype(np.float32)
    a = ia * both
    b = w[:, :, 0] * both
    n = both.sum(axis=1, dtype=np.float64)
    sa, sb = a.sum(axis=1, dtype=np.float64), b.sum(axis=1, dtype=np.float64)
    saa = np.einsum("ij,ij->i", a, a, dtype=np.float64)
    sbb = np.einsum("ij,ij->i", b, b, dtype=np.float64)
    sab = np.einsum("ij,ij->i", a, b, dtype=np.float64)
    nn = np.maximum(n, 1.0)
    var = np.maximum(saa - sa * sa / nn, 0.0) * np.maximum(sbb - sb * sb / nn, 0.0)
    ok = (n >= 2) & (var > 1e-6)
    ncc = np.where(ok, (sab - sa * sb / nn) / np.sqrt(np.where(ok, var, 1.0)), 0.0)
    return ncc, n


def _as_prepared(x, side: int) -> Prepared:
    return x if isinstance(x, Prepared) else prepare(x, side)


def align_pairs(
    items: Sequence[Prepared],
    i: np.ndarray,
    j: np.ndarray,
    max_angle: float = MAX_ANGLE,
    max_scale: float = MAX_SCALE,
    min_overlap: float = MIN_OVERLAP,
    candidates: int = 1,
    min_spectrum_peak: float = 0.0,
) -> dict[str, np.ndarray]:
    """Align and score many pairs of prepared images, batched.

    Parameters
    ----------
    items : sequence of Prepared
        From :func:`prepare`, all with the same canvas side.
    i, j : array_like of int, shape (k,)
        Pairs ``(items[i[t]], items[j[t]])``: ``a = items[i[t]]``, ``b = items[j[t]]``.
    max_angle : float
        Largest rotation searched (degrees, either sense; at most 89), rounded up to
        whole log-polar rows (3.75 degrees at the defaults).
    max_scale : float
        Scale changes searched on the canvas: [1 / max_scale, max_scale] (> 1). Both
        images are resized to the same longer side first, so this bounds the zoom of a
        crop, not a size difference of the files.
    min_overlap : float
        Pairs whose aligned overlap covers less than this fraction of the smaller image's
        valid area score 0 (reason ``"overlap"``).
    candidates : int
        Rotation-scale peaks tried per pair (the best-scoring one is kept); each costs
        another translation search and NCC. Combined edits (perspective, text over a
        rotated crop) sometimes put the right peak second.
    min_spectrum_peak : float
        A cheap gate: pairs whose log-polar phase correlation peaks lower than this
        (in [0, 1]) score 0 with reason ``"spectrum"`` without the translation search and
        NCC (most of the cost). 0 (default): off. On the development pairs at the default
        side, 0.08 skipped half of the hard negatives and 2 of 4,595 positives that
        :data:`ACCEPT_SCORE` accepts (:data:`SPECTRUM_GATE`).

    Returns
    -------
    dict of ndarray, each of shape (k,)
        ``score``, ``ncc``, ``peak`` (float64 in [0, 1]), ``angle`` (degrees), ``scale``,
        ``dx``, ``dy`` (pixels of ``b``), ``overlap`` (float64) and ``reason`` (object:
        ``""``, ``"flat"``, ``"spectrum"`` or ``"overlap"``), as in :class:`Alignment`.

    Raises
    ------
    ValueError
        ``i`` and ``j`` of different lengths, or images prepared at different sides.

    Notes
    -----
    Pairs are processed :data:`PAIR_CHUNK` at a time (a few tens of MB each).
    """
    i = np.asarray(i, np.int64).ravel()
    j = np.asarray(j, np.int64).ravel()
    if len(i) != len(j):
        raise ValueError(f"align_pairs: i and j differ in length ({len(i)} vs {len(j)})")
    if len(i) <= PAIR_CHUNK:
        return _align_chunk(items, i, j, max_angle, max_scale, min_overlap, candidates, min_spectrum_peak)
    parts = [_align_chunk(items, i[s:s + PAIR_CHUNK], j[s:s + PAIR_CHUNK], max_angle, max_scale, min_overlap,
                          candidates, min_spectrum_peak) for s in range(0, len(i), PAIR_CHUNK)]
    return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}


#: Suggested ``min_spectrum_peak`` for :func:`align_pairs` at the default side (see there).
SPECTRUM_GATE = 0.08

#: Images prepared per batch by :func:`prepare_many` (larger batches leave the CPU caches).
PREPARE_CHUNK = 256

#: Pairs aligned per batch by :func:`align_pairs` (bounds its memory).
PAIR_CHUNK = 256


def _align_chunk(items, i: np.ndarray, j: np.ndarray, max_angle: float, max_scale: float, min_overlap: float,
                 candidates: int, min_spectrum_peak: float) -> dict[str, np.ndarray]:
    """:func:`align_pairs` of one batch."""
    import cv2

    k = len(i)
    out = {"score": np.zeros(k), "angle": np.zeros(k), "scale": np.ones(k), "dx": np.zeros(k), "dy": np.zeros(k),
           "overlap": np.zeros(k), "reason": np.full(k, "", dtype=object), "ncc": np.zeros(k), "peak": np.zeros(k)}
    if not k:
        return out
    side = items[int(i[0])].image.shape[0]
    if any(items[int(t)].image.shape[0] != side for t in np.concatenate([i, j]).tolist()):
        raise ValueError("align_pairs: images prepared with different canvas sides")
    flat = np.array([items[a].flat or items[b].flat for a, b in zip(i.tolist(), j.tolist(), strict=True)], bool)
    out["reason"][flat] = "flat"
    todo = np.nonzero(~flat)[0]
    if not len(todo):
        return out
    ii, jj = i[todo], j[todo]
    grids = _grids(side)
    pa = np.stack([items[t].logpolar for t in ii.tolist()])
    pb = np.stack([items[t].logpolar for t in jj.tolist()])
    angles, scales, lp_height = _rotation_scale(pa, pb, min(max_angle, 89.0), max(max_scale, 1.0 + 1e-6),
                                                grids["dlog"], max(1, int(candidates)))
    weak = lp_height < min_spectrum_peak
    if weak.any():  # the spectra disagree: no rotation and zoom fits, skip the rest
        out["reason"][todo[weak]] = "spectrum"
        todo, ii, jj, angles, scales = todo[~weak], ii[~weak], jj[~weak], angles[~weak], scales[~weak]
        if not len(todo):
            return out
    kc = angles.shape[1]
    fa = np.stack([items[t].spectrum for t in ii.tolist()])
    n_a = np.array([items[t].n_valid for t in ii.tolist()], float)
    n_b0 = np.array([items[t].n_valid for t in jj.tolist()], float)
    c = (side - 1) / 2.0
    best = None
    for q in range(kc):
        angle, scale = angles[:, q], scales[:, q]
        # canvas b -> canvas a: the inverse of a -> b (rotate by -angle, scale by 1 / scale)
        mats = np.stack([cv2.getRotationMatrix2D((c, c), -float(a), 1.0 / float(s))
                         for a, s in zip(angle, scale, strict=True)])
        warped = _warp_all(items, jj, mats, side, "window")
        tx, ty, height = _translation(fa, warped, grids["lowpass"], side)
        mats[:, 0, 2] += tx
        mats[:, 1, 2] += ty
        ncc, n_both = _ncc_batch(items, ii, jj, mats, side)
        n_b = n_b0 / (scale * scale)  # in a's canvas pixels
        overlap = np.minimum(1.0, n_both / np.maximum(1.0, np.minimum(n_a, n_b)))
        ncc = np.clip(ncc, 0.0, 1.0)
        height = np.clip(height, 0.0, 1.0)
        score = np.where(overlap < min_overlap, -1.0, 0.5 * (ncc + height))
        cand = {"score": score, "ncc": ncc, "peak": height, "overlap": overlap, "angle": angle, "scale": scale,
                "mats": mats}
        if best is None:
            best = cand
        else:
            better = cand["score"] > best["score"]
            for key, v in cand.items():
                best[key] = np.where(better[(...,) + (None,) * (v.ndim - 1)], v, best[key])
    mats, angle, scale, overlap = best["mats"], best["angle"], best["scale"], best["overlap"]
    fa_, fb_ = (np.array([items[t].factor for t in x.tolist()]) for x in (ii, jj))
    # a -> b in original pixels: invert canvas b -> a, then undo each canvas's factor
    lin = np.linalg.inv(mats[:, :, :2])
    ca = np.array([items[t].centre for t in ii.tolist()])
    cb = np.array([items[t].centre for t in jj.tolist()])
    d = (np.einsum("kij,kj->ki", lin, ca - mats[:, :, 2]) - cb) / fb_[:, None]
    out["dx"][todo], out["dy"][todo] = d[:, 0], d[:, 1]
    out["angle"][todo] = angle
    out["scale"][todo] = scale * fa_ / fb_
    out["overlap"][todo] = overlap
    low = overlap < min_overlap
    out["reason"][todo[low]] = "overlap"
    out["ncc"][todo] = np.where(low, 0.0, best["ncc"])
    out["peak"][todo] = np.where(low, 0.0, best["peak"])
    out["score"][todo] = np.where(low, 0.0, best["score"])
    return out


def align(a, b, max_angle: float = MAX_ANGLE, max_scale: float = MAX_SCALE, min_overlap: float = MIN_OVERLAP,
          side: int = ALIGN_SIDE, candidates: int = 1, min_spectrum_peak: float = 0.0) -> Alignment:
    """Align image ``b`` to image ``a`` and score the pair (one-pair form of :func:`align_pairs`).

    Parameters
    ----------
    a, b : ndarray of uint8, shape (H, W), or Prepared
        Grayscale images (any sizes) or their :func:`prepare` results.
    max_angle, max_scale, min_overlap, candidates, min_spectrum_peak
        As in :func:`align_pairs`.
    side : int
        Canvas side for images not yet prepared.

    Returns
    -------
    Alignment
    """
    pa, pb = _as_prepared(a, side), _as_prepared(b, side)
    r = align_pairs([pa, pb], np.array([0]), np.array([1]), max_angle=max_angle, max_scale=max_scale,
                    min_overlap=min_overlap, candidates=candidates, min_spectrum_peak=min_spectrum_peak)
    return Alignment(score=float(r["score"][0]), angle=float(r["angle"][0]), scale=float(r["scale"][0]),
                     dx=float(r["dx"][0]), dy=float(r["dy"][0]), overlap=float(r["overlap"][0]),
                     reason=str(r["reason"][0]), ncc=float(r["ncc"][0]), peak=float(r["peak"][0]))


class PairAligner:
    """Aligns pairs of images given by index, preparing each (image, mirrored) once.

    The form the ``dup`` pipeline can call with its ``gray(k)`` accessor: only the images
    that some pair needs are prepared, and a mirrored pair (the mirrored hash was the
    closer one, :func:`segdeck.core.cluster.dedup.orient_pairs`) is aligned as
    ``(a, mirror of b)``. Not thread-safe (one per thread, or call from one thread: the
    pair work is batched numpy and OpenCV).

    Parameters
    ----------
    gray : callable
        ``gray(k)`` returns image ``k`` as (H, W) uint8 grayscale (any size; the ``dup``
        job's 128-px images are what it was measured on).
    side : int
        Canvas side (:data:`ALIGN_SIDE`).

    Examples
    --------
    >>> aligner = PairAligner(lambda k: grays[k])  # doctest: +SKIP
    >>> r = aligner(np.array([0, 0]), np.array([1, 2]), mirrored=np.array([False, True]))  # doctest: +SKIP
    >>> accepted = r["score"] >= 0.65  # doctest: +SKIP
    """

    def __init__(self, gray, side: int = ALIGN_SIDE):
        self.gray = gray
        self.side = side
        self._slot: dict[tuple[int, bool], int] = {}
        self._items: list[Prepared] = []

    def prepared(self, k: int, mirrored: bool = False) -> Prepared:
        """The :class:`Prepared` of image ``k`` (mirrored left-right when asked), cached."""
        key = (int(k), bool(mirrored))
        slot = self._slot.get(key)
        if slot is None:
            g = np.asarray(self.gray(key[0]))
            if key[1]:
                g = g[:, ::-1]
            slot = self._slot[key] = len(self._items)
            self._items.append(prepare(np.ascontiguousarray(g), self.side))
        return self._items[slot]

    def __call__(self, i, j, mirrored=None, workers: int = 1, **kwargs) -> dict[str, np.ndarray]:
        """:func:`align_pairs` of images ``i[t]`` and ``j[t]`` (``j[t]`` mirrored where
        ``mirrored[t]``); keyword arguments as there.

        Parameters
        ----------
        i, j : array_like of int, shape (k,)
        mirrored : array_like of bool, shape (k,), optional
        workers : int
            Threads for preparing images and aligning chunks of pairs (OpenCV and the
            FFTs release the GIL); ``gray`` is then called from these threads.

        Returns
        -------
        dict of ndarray
            As :func:`align_pairs` (``angle``, ``dx``, ``dy`` refer to the mirrored ``b``
            where it was mirrored).
        """
        from concurrent.futures import ThreadPoolExecutor

        i = np.asarray(i, np.int64).ravel()
        j = np.asarray(j, np.int64).ravel()
        m = np.zeros(len(j), bool) if mirrored is None else np.asarray(mirrored, bool).ravel()
        if not (len(i) == len(j) == len(m)):
            raise ValueError(f"PairAligner: i, j, mirrored differ in length ({len(i)}, {len(j)}, {len(m)})")
        need = sorted(({(a, False) for a in i.tolist()} | set(zip(j.tolist(), m.tolist(), strict=True)))
                      - set(self._slot))

        def prep(chunk):
            grays = []
            for k, flip in chunk:
                g = np.asarray(self.gray(k))
                grays.append(np.ascontiguousarray(g[:, ::-1]) if flip else g)
            return chunk, prepare_many(grays, self.side)

        chunks = [need[s:s + PREPARE_CHUNK] for s in range(0, len(need), PREPARE_CHUNK)]  # batched, bounded memory
        with ThreadPoolExecutor(max(1, int(workers))) as pool:
            for chunk, items in pool.map(prep, chunks):
                for key, item in zip(chunk, items, strict=True):
                    self._slot[key] = len(self._items)
                    self._items.append(item)
            si = np.array([self._slot[(a, False)] for a in i.tolist()], np.int64)
            sj = np.array([self._slot[(b, f)] for b, f in zip(j.tolist(), m.tolist(), strict=True)], np.int64)
            if workers <= 1 or len(si) < 512:
                return align_pairs(self._items, si, sj, **kwargs)
            step = -(-len(si) // (2 * int(workers)))
            parts = list(pool.map(lambda s: align_pairs(self._items, si[s:s + step], sj[s:s + step], **kwargs),
                                  range(0, len(si), step)))
        return {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
