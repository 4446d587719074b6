"""Per-image features for clustering, one extractor per method.

Every extractor takes an (H, W, 3) uint8 RGB image and returns a feature as a
``dict[str, numpy.ndarray]`` (so it can be cached with :func:`pack` / :func:`unpack`).

=========  =====================================================================
method     feature
=========  =====================================================================
ssim       ``gray``: (64, 64) uint8 grayscale, min-max contrast-normalised
minhash    ``mh``: (num_perm,) uint64 MinHash signature of the set of grid cells
           holding the strongest Harris corners (datasketch MinHash)
phash      ``h``: (1,) uint64 perceptual hash, bit-identical to
           ``imagehash.phash`` (32x32 LANCZOS gray, 2-D DCT-II, 8x8 low band > median)
orb        ``xy``: (N, 2) float32 keypoints (x, y) in pixels of the working image,
           ``des``: (N, 32) uint8 ORB descriptors, ``size``: (2,) working (w, h)
tm         ``gray``: (64, 64) uint8 grayscale, min-max contrast-normalised
dup        ``h``: (2,) uint64 phash of the image and of its mirror image
           (:func:`phash_codes_fast`); ORB keys for verification come later
=========  =====================================================================

References: Zauner, "Implementation and benchmarking of perceptual image hash
functions", 2010 (pHash); Rublee et al., "ORB: an efficient alternative to SIFT or
SURF", ICCV 2011; Harris & Stephens, "A combined corner and edge detector", 1988;
Broder, "On the resemblance and containment of documents", 1997 (MinHash).
"""

from __future__ import annotations

import json
import struct
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from segdeck.core.imageio import jpeg_complete, load_reduced, shrink

#: Side of the grayscale thumbnails used by SSIM and template matching.
THUMB = 64

#: Images hashed per vectorised chunk (bounds memory).
_CHUNK = 4096


# ------------------------------------------------------------------ decoding
#: Decode an image at reduced size, fast, EXIF orientation applied: one decoder, shared
#: with the annotation windows (:func:`segdeck.core.imageio.load_reduced`).
load_small = load_reduced


def load_gray_small(path: str | Path, max_side: int = 256) -> np.ndarray:
    """Decode an image as (H, W) uint8 grayscale at reduced size, as fast as possible.

    JPEG files decode only their luma channel (``cv2.IMREAD_REDUCED_GRAYSCALE_*``, with
    DCT scaling when the image is large); EXIF orientation is applied by OpenCV. Other
    files, and anything OpenCV cannot read, go through :func:`load_small`.

    Raises
    ------
    ImageError
        Unreadable file.
    """
    import cv2

    path = Path(path)
    if path.suffix.lower() in (".jpg", ".jpeg"):
        try:
            size = path.stat().st_size
        except OSError:
            size = -1
        if 0 < size < 300_000 and jpeg_complete(path):  # small files: no header peek, a reduced decode gains little
            g = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if g is not None and g.size:
                return shrink(g, max_side)
    return to_gray(load_small(path, max_side))


def to_gray(img: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 RGB -> (H, W) uint8 luma (ITU-R 601), bit-identical to PIL's ``convert("L")``."""
    if img.ndim == 2:
        return img
    x = img.astype(np.uint32)
    return ((x[..., 0] * 19595 + x[..., 1] * 38470 + x[..., 2] * 7471 + 0x8000) >> 16).astype(np.uint8)


def _normalised_thumb(img: np.ndarray, size: int = THUMB) -> np.ndarray:
    import cv2

    g = cv2.resize(to_gray(img), (size, size), interpolation=cv2.INTER_AREA).astype(np.float32)
    lo, hi = float(g.min()), float(g.max())
    if hi - lo < 1e-6:
        return np.zeros((size, size), np.uint8)
    return np.round((g - lo) * (255.0 / (hi - lo))).astype(np.uint8)


# ------------------------------------------------------------------ perceptual hash
def _resize32(gray: np.ndarray) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.fromarray(gray).resize((32, 32), Image.LANCZOS), dtype=np.float64)


def phash_codes(grays: np.ndarray | list, mirror: bool = False) -> np.ndarray:
    """Perceptual hashes of grayscale images, identical to ``imagehash.phash``.

    Parameters
    ----------
    grays : sequence of (H, W) uint8 arrays, or (N, H, W) uint8
        Grayscale images (any size; each is resized to 32x32 with LANCZOS as imagehash does).
    mirror : bool
        Also hash the horizontally mirrored image.

    Returns
    -------
    ndarray of uint64
        Shape (N,) or, with ``mirror``, (N, 2): column 0 the image, column 1 its mirror.
        Bit order as imagehash's hex string (first DCT coefficient = most significant bit).
    """
    from scipy.fft import dct

    if isinstance(grays, np.ndarray) and grays.ndim == 2:
        grays = [grays]
    n = len(grays)
    result = np.zeros((n, 2) if mirror else (n,), np.uint64)
    for s in range(0, n, _CHUNK):  # bounded memory for 10^5 images
        px = np.stack([_resize32(g) for g in grays[s:s + _CHUNK]])  # (B, 32, 32) float64
        stacks = [px, px[:, :, ::-1]] if mirror else [px]
        out = []
        for p in stacks:
            d = dct(dct(p, axis=1, type=2), axis=2, type=2)[:, :8, :8].reshape(len(p), 64)
            med = np.median(d, axis=1, keepdims=True)
            bits = d > med
            out.append(np.packbits(bits, axis=1).view(">u8").astype(np.uint64).ravel())
        result[s:s + len(px)] = np.stack(out, axis=1) if mirror else out[0]
    return result


def phash_codes_fast(grays: Sequence[np.ndarray]) -> np.ndarray:
    """Perceptual hashes of images and of their mirror images, for the ``dup`` method.

    Same construction as :func:`phash_codes` (32x32, 2-D DCT-II, 8x8 low band >
    median) with an area-averaging resize (OpenCV ``INTER_AREA``) instead of LANCZOS:
    several times faster, not bit-identical to imagehash.

    Parameters
    ----------
    grays : sequence of (H, W) uint8 arrays

    Returns
    -------
    ndarray of uint64, shape (N, 2)
        Column 0 the image's hash, column 1 its mirror image's.
    """
    import cv2

    n = len(grays)
    result = np.zeros((n, 2), np.uint64)
    for s in range(0, n, _CHUNK):
        px = np.stack([cv2.resize(g, (32, 32), interpolation=cv2.INTER_AREA) for g in grays[s:s + _CHUNK]]).astype(np.float32)
        result[s:s + len(px)] = _codes_of_32(px)
    return result


#: Windows hashed by the ``dup`` method to find cropped copies, as ``(base, offsets)``
#: per axis: the image is resized to ``base_x`` x ``base_y`` pixels (every combination of
#: the bases below, so the two axes may be cropped by different amounts) and every 32 x 32
#: square at the pixel offsets of both bases is hashed. A window covers 32 / base of each
#: side (0.70, 0.78, 0.86, 0.94) at offsets 0-30 % of the side: a copy that keeps 70-95 %
#: of each side, cut anywhere, shows about one of them, so its whole-image hash is close to
#: that window's hash. 15 x 15 = 225 windows; more scales or offsets find more crops and
#: lengthen the hash search (it is multi-index hashing over n x 450 codes).
WINDOW_GRID = ((46, (0, 2, 4, 7, 10, 14)), (41, (0, 3, 6, 9)), (37, (0, 2, 5)), (34, (0, 2)))


def window_boxes(h: int, w: int) -> list[tuple[int, int, int, int]]:
    """The windows of :func:`window_codes` in an (h, w) image, as (y0, y1, x0, x1) pixel boxes,
    in the order of the codes."""
    out = []
    for by, oys in WINDOW_GRID:
        for bx, oxs in WINDOW_GRID:
            fy, fx = h / by, w / bx
            out.extend((round(oy * fy), round((oy + 32) * fy), round(ox * fx), round((ox + 32) * fx))
                       for oy in oys for ox in oxs)
    return out


def _area_matrix(src: int, dst: int) -> np.ndarray:
    """(dst, src) float32: area-averaging resize of a length-``src`` axis to ``dst`` samples
    (``dst <= src``), the weights of OpenCV's ``INTER_AREA``: each output sample is the mean
    of the input over its footprint, partial pixels weighted by their covered fraction."""
    f = src / dst
    m = np.zeros((dst, src), np.float64)
    for t in range(dst):
        a, b = t * f, (t + 1) * f
        for k in range(int(np.floor(a)), min(src, int(np.ceil(b)))):
            m[t, k] = max(0.0, min(b, k + 1) - max(a, k))
    return (m / f).astype(np.float32)


_WINDOW_PLAN: tuple | None = None


def _window_plan() -> tuple:
    """Constants of :func:`window_codes`, built once: the stacked area-resize matrix of the
    bases (sum of bases x 2 max base), the rows of each window start (starts x 32), and
    the order of (row start, column start) pairs that gives :func:`window_boxes`' order."""
    global _WINDOW_PLAN
    if _WINDOW_PLAN is None:
        side = 2 * max(b for b, _ in WINDOW_GRID)
        resize = np.vstack([_area_matrix(side, b) for b, _ in WINDOW_GRID])
        starts, blocks, at = [], [], 0
        for b, offs in WINDOW_GRID:
            blocks.append([len(starts) + k for k in range(len(offs))])
            starts.extend(at + o for o in offs)
            at += b
        sel = np.array(starts)[:, None] + np.arange(32)
        order = np.array([r * len(starts) + c for by in blocks for bx in blocks for r in by for c in bx])
        _WINDOW_PLAN = (side, resize, sel, order)
    return _WINDOW_PLAN


def window_codes(gray: np.ndarray) -> np.ndarray:
    """Hashes of the windows of a grayscale image (:func:`window_boxes`), as
    :func:`phash_codes_fast` computes them (32 x 32 area-averaged, DCT, median).

    The image is area-resized once to twice the largest base (OpenCV ``INTER_AREA``),
    then to every base on both axes at once by one matrix product (``R @ g @ R.T`` with
    the stacked area-resize matrices of the bases, rounded to integers as OpenCV's
    uint8 output is); the low 8 x 8 DCT band of every window is computed separably,
    rows first for the 15 distinct row starts, then columns. Same hashes as resizing
    per base with OpenCV up to rounding (0.08 bits of 64 per window on average).

    Parameters
    ----------
    gray : ndarray of uint8, shape (H, W)

    Returns
    -------
    ndarray of uint64, shape (2 * 225,)
        For each window its hash, then its mirror image's.
    """
    import cv2

    side, resize, sel, order = _window_plan()
    if gray.shape[:2] != (side, side):
        gray = cv2.resize(gray, (side, side), interpolation=cv2.INTER_AREA)
    m = np.rint(resize @ gray.astype(np.float32) @ resize.T)  # every base x base resize, (sum b, sum b)
    rows = _DCT8 @ m[sel]  # (starts, 8, sum b): the DCT of each window's rows
    k = len(sel)
    d = np.matmul(rows[:, :, sel].transpose(0, 2, 1, 3).reshape(-1, 32), _DCT8.T)  # (starts * starts * 8, 8)
    d = d.reshape(k * k, 8, 8)[order]
    return _bits_of_dct(d).reshape(-1)


#: Central part of each side hashed by :func:`centre_codes`. A copy rotated by up to 10
#: degrees on the same canvas has black (or replicated) corners that change its
#: whole-image hash; the central 66 % of each side holds no fill up to about 13 degrees
#: (square images), so the centre hashes of the copy and of the original stay close.
CENTRE_FRACTION = 0.66


def centre_crop(gray: np.ndarray) -> np.ndarray:
    """The central :data:`CENTRE_FRACTION` of each side of an (H, W) image (a view)."""
    h, w = gray.shape[:2]
    my, mx = round(h * (1 - CENTRE_FRACTION) / 2), round(w * (1 - CENTRE_FRACTION) / 2)
    return gray[my:max(my + 1, h - my), mx:max(mx + 1, w - mx)]


def centre_codes(gray: np.ndarray) -> np.ndarray:
    """Hash of the central :data:`CENTRE_FRACTION` of each side of a grayscale image and of
    its mirror image (same construction as :func:`phash_codes_fast`).

    Parameters
    ----------
    gray : ndarray of uint8, shape (H, W)

    Returns
    -------
    ndarray of uint64, shape (2,)
    """
    import cv2

    c = centre_crop(gray)
    return _codes_of_32(cv2.resize(c, (32, 32), interpolation=cv2.INTER_AREA).astype(np.float32)[None])[0]


#: First 8 rows of the (unnormalised, scipy convention) 32-point DCT-II matrix:
#: ``_DCT8 @ x @ _DCT8.T`` is the low 8 x 8 band of the 2-D DCT of a 32 x 32 block.
_DCT8 = (2.0 * np.cos(np.pi * np.arange(8)[:, None] * (2 * np.arange(32)[None, :] + 1) / 64)).astype(np.float32)


def _codes_of_32(px: np.ndarray) -> np.ndarray:
    """(B, 32, 32) float32 -> (B, 2) uint64: pHash of each square and of its mirror image."""
    return _bits_of_dct(_DCT8 @ px @ _DCT8.T)  # the 8 x 8 low band of the 2-D DCT-II (unnormalised, as scipy's)


def _bits_of_dct(d: np.ndarray) -> np.ndarray:
    """(B, 8, 8) low DCT bands -> (B, 2) uint64: bits above the median, of each band and of
    its mirror image's (mirroring negates the odd horizontal frequencies)."""
    sign = np.where(np.arange(8) % 2 == 1, -1.0, 1.0).astype(np.float32)
    out = []
    for block in (d, d * sign[None, None, :]):  # mirroring negates odd horizontal frequencies
        flat = block.reshape(len(d), 64)
        mid = np.partition(flat, (31, 32), axis=1)
        bits = flat > 0.5 * (mid[:, 31:32] + mid[:, 32:33])  # the median of 64 values
        out.append(np.packbits(bits, axis=1).view(">u8").astype(np.uint64).ravel())
    return np.stack(out, axis=1)


def phash_feature(img: np.ndarray) -> dict:
    """``{"h": (1,) uint64}``: the perceptual hash of an RGB image."""
    return {"h": phash_codes([to_gray(img)])}


# ------------------------------------------------------------------ SSIM / TM
def ssim_feature(img: np.ndarray) -> dict:
    """``{"gray": (64, 64) uint8}``: min-max normalised grayscale thumbnail for SSIM."""
    return {"gray": _normalised_thumb(img)}


def tm_feature(img: np.ndarray) -> dict:
    """``{"gray": (64, 64) uint8}``: min-max normalised grayscale thumbnail for template matching."""
    return {"gray": _normalised_thumb(img)}


# ------------------------------------------------------------------ MinHash
def harris_cells(img: np.ndarray, n_corners: int = 100, grid: int = 16, side: int = 128) -> np.ndarray:
    """Grid cells holding the strongest Harris corners.

    Parameters
    ----------
    img : (H, W, 3) uint8 RGB
    n_corners : int
        How many of the strongest corner responses (after 3x3 non-maximum suppression) to keep.
    grid : int
        The image (resized to ``side`` x ``side``) is divided into ``grid`` x ``grid`` cells.
    side : int
        Working size in pixels.

    Returns
    -------
    ndarray of int64
        Unique cell indices ``row * grid + col`` (the corner locations, quantised).
    """
    import cv2

    g = cv2.resize(to_gray(img), (side, side), interpolation=cv2.INTER_AREA).astype(np.float32)
    r = cv2.cornerHarris(g, blockSize=3, ksize=3, k=0.04)
    peak = r == cv2.dilate(r, np.ones((3, 3), np.uint8))
    ys, xs = np.nonzero(peak & (r > 0))
    if len(ys) == 0:
        return np.zeros(0, np.int64)
    order = np.argsort(-r[ys, xs], kind="stable")[:n_corners]
    cells = (ys[order] * grid // side) * grid + (xs[order] * grid // side)
    return np.unique(cells.astype(np.int64))


def minhash_from_values(values: np.ndarray, lean: bool = False):
    """A datasketch (Lean)MinHash rebuilt from stored hash values (seed 1, the scheme
    datasketch uses by default for new MinHash objects)."""
    from datasketch import LeanMinHash, MinHash

    cls = LeanMinHash if lean else MinHash
    scheme = getattr(MinHash(num_perm=1, seed=1), "scheme", None)
    if scheme is None:  # datasketch < 2: no schemes
        return cls(seed=1, hashvalues=values)
    return cls(seed=1, hashvalues=values, scheme=scheme)


def minhash_feature(img: np.ndarray, num_perm: int = 128, n_corners: int = 100, grid: int = 16) -> dict:
    """``{"mh": (num_perm,) uint64}``: datasketch MinHash of the Harris-corner cells."""
    from datasketch import MinHash

    m = MinHash(num_perm=num_perm, seed=1)
    cells = harris_cells(img, n_corners=n_corners, grid=grid)
    if len(cells):
        m.update_batch([int(c).to_bytes(4, "little") for c in cells])
    return {"mh": m.hashvalues.astype(np.uint64)}


# ------------------------------------------------------------------ ORB
def orb_feature(img: np.ndarray, n_features: int = 500, max_side: int = 256) -> dict:
    """ORB keypoints and descriptors of the grayscale image.

    Returns
    -------
    dict
        ``xy`` (N, 2) float32 keypoint positions (x, y) in the working image (longer
        side ``max_side``, never upscaled beyond 2x for small images), ``des`` (N, 32)
        uint8 binary descriptors, ``size`` (2,) int32 working (width, height).
    """
    import cv2

    g = to_gray(img)
    h, w = g.shape
    s = max_side / max(h, w)
    s = min(s, 2.0)
    if abs(s - 1) > 1e-3:
        g = cv2.resize(g, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA if s < 1 else cv2.INTER_LINEAR)
    orb = cv2.ORB_create(nfeatures=n_features, edgeThreshold=15, patchSize=15, fastThreshold=10)
    kps, des = orb.detectAndCompute(g, None)
    if des is None or not kps:
        return {"xy": np.zeros((0, 2), np.float32), "des": np.zeros((0, 32), np.uint8),
                "size": np.array(g.shape[::-1], np.int32)}
    xy = np.array([k.pt for k in kps], np.float32)
    return {"xy": xy, "des": des, "size": np.array(g.shape[::-1], np.int32)}


# ------------------------------------------------------------------ near-duplicates
#: Side (pixels) of the grayscale thumbnails the ``dup`` method correlates.
THUMB_SIDE = 16


def thumbnails(grays: Sequence[np.ndarray], side: int = THUMB_SIDE) -> np.ndarray:
    """(side x side) area-averaged thumbnails of grayscale images -> (N, side, side) uint8."""
    import cv2

    if not len(grays):
        return np.zeros((0, side, side), np.uint8)
    return np.stack([cv2.resize(g, (side, side), interpolation=cv2.INTER_AREA) for g in grays])


def dup_feature(img: np.ndarray) -> dict:
    """Feature of the ``dup`` method: ``{"h": (2,) uint64, "w": (450,) uint64, "c": (2,)
    uint64, "t": (16, 16) uint8, "ct": (16, 16) uint8}``: the hash of the image and of its
    mirror image (:func:`phash_codes_fast`), the hashes of its windows
    (:func:`window_codes`) and of its centre (:func:`centre_codes`), a thumbnail of the
    image and one of its centre (:func:`thumbnails`, :func:`centre_crop`).
    The ORB keys used to verify uncertain pairs are computed later, only for the images
    that need them."""
    g = to_gray(img)
    return {"h": phash_codes_fast([g])[0], "w": window_codes(g), "c": centre_codes(g), "t": thumbnails([g])[0],
            "ct": thumbnails([centre_crop(g)])[0]}


def extract(method: str, img: np.ndarray) -> dict:
    """The hand-made feature of ``method`` (ssim, minhash, phash, orb, tm, dup): the
    registered method's ``extract`` with its default options.

    Raises
    ------
    ValueError
        Unknown method, or one whose feature needs a model (``deep``).
    """
    m = _registry().get(method)
    if m is None or m.needs_model:
        raise ValueError(f"no hand-made feature for method {method!r}")
    return m.extract(img)


def _registry():
    from segdeck.core.cluster.methods import REGISTRY

    return REGISTRY


# ------------------------------------------------------------------ serialisation
def pack(feature: dict[str, np.ndarray]) -> bytes:
    """Serialise a feature dict to bytes (a JSON header + raw array bytes; no pickle)."""
    header, blobs = [], []
    for name, arr in feature.items():
        arr = np.ascontiguousarray(arr)
        header.append([name, arr.dtype.str, list(arr.shape)])
        blobs.append(arr.tobytes())
    head = json.dumps(header).encode()
    return struct.pack("<I", len(head)) + head + b"".join(blobs)


def unpack(blob: bytes) -> dict[str, np.ndarray]:
    """Inverse of :func:`pack`."""
    (n,) = struct.unpack_from("<I", blob, 0)
    header = json.loads(blob[4:4 + n])
    off = 4 + n
    out = {}
    for name, dtype, shape in header:
        dt = np.dtype(dtype)
        count = int(np.prod(shape)) if shape else 1
        out[name] = np.frombuffer(blob, dtype=dt, count=count, offset=off).reshape(shape).copy()
        off += count * dt.itemsize
    return out
