"""Find images in folders, load them right, write files atomically.

Images leave this module as ``numpy.ndarray`` of shape (H, W, 3), dtype uint8, RGB,
whatever was on disk: EXIF orientation applied (``PIL.ImageOps.exif_transpose``),
16-bit and float data scaled to 0..255, gray / alpha / palette / CMYK converted.
Every failure is an :class:`~segdeck.core.errors.ImageError` carrying the path and
a one-line reason, so a batch can log it and go on.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from segdeck.core.errors import ImageError

IMAGE_SUFFIXES = frozenset({".png", ".jpg", ".jpeg", ".tif", ".tiff"})

#: Folders that :func:`discover` never enters: segdeck's output roots, job folders and
#: other folders segdeck writes label maps into (a propagate project's reference store),
#: each recognised by a marker file.
OUTPUT_ROOT_SUFFIX = ".segdeck"
JOB_MARKER = "job.toml"
STORE_MARKER = ".segdeck-store"

#: Default bound on decoded pixels (width * height); larger files are refused as
#: possible decompression bombs. 200 MP covers every camera sensor in use.
MAX_PIXELS = 200_000_000

#: The process umask, read once: mkstemp creates files 0600, outputs should get 0666 & ~umask.
_UMASK = os.umask(0)
os.umask(_UMASK)


def is_image_path(path: str | Path) -> bool:
    """True when the file name has one of the supported suffixes (case-insensitive)."""
    return Path(path).suffix.lower() in IMAGE_SUFFIXES


def _is_output_dir(path: Path) -> bool:
    return (path.name.endswith(OUTPUT_ROOT_SUFFIX) or (path / JOB_MARKER).is_file()
            or (path / STORE_MARKER).is_file())


def discover(root: str | Path, *, recursive: bool = True) -> list[Path]:
    """List the image files under a folder, sorted, following symlinks safely.

    Parameters
    ----------
    root : path-like
        A folder, or a single image file (returned as a one-element list).
    recursive : bool
        Descend into sub-folders.

    Returns
    -------
    list of Path
        Image paths (suffixes png, jpg, jpeg, tif, tiff, any case), sorted by their
        path relative to ``root``. Hidden entries, segdeck output folders (named
        ``*.segdeck``, or holding a ``job.toml`` or a ``.segdeck-store`` marker such
        as a reference store) are skipped; a symlink loop is entered once.

    Raises
    ------
    FileNotFoundError
        If ``root`` does not exist.
    """
    root = Path(root)
    if not root.exists():
        raise FileNotFoundError(f"{root}: no such file or folder")
    if root.is_file():
        return [root] if is_image_path(root) else []
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()

    def walk(folder: Path) -> None:
        try:
            st = folder.stat()
        except OSError:
            return
        key = (st.st_dev, st.st_ino)
        if key in seen:
            return
        seen.add(key)
        try:
            entries = sorted(os.scandir(folder), key=lambda e: e.name)
        except OSError:
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            path = Path(entry.path)
            try:
                is_dir = entry.is_dir(follow_symlinks=True)
            except OSError:
                continue
            if is_dir:
                if recursive and not _is_output_dir(path):
                    walk(path)
            elif is_image_path(path):
                found.append(path)

    walk(root)
    return sorted(found, key=lambda p: p.relative_to(root).as_posix())


def count_images(root: str | Path) -> int:
    """Number of images :func:`discover` would return for ``root`` (0 if it is gone)."""
    try:
        return len(discover(root))
    except FileNotFoundError:
        return 0


def _to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale an integer or float array to uint8 by its dtype's meaning.

    uint16/int data are scaled by the dtype's range (so 16-bit 65535 -> 255); float
    data in [0, 1] are multiplied by 255, other float ranges are min-max scaled.
    """
    if arr.dtype == np.uint8:
        return arr
    if arr.dtype == bool:
        return arr.astype(np.uint8) * 255
    if np.issubdtype(arr.dtype, np.integer):
        info = np.iinfo(arr.dtype)
        if info.min < 0:
            arr = arr.astype(np.float64) - info.min
            return np.round(arr / (info.max - info.min) * 255).astype(np.uint8)
        return np.round(arr.astype(np.float64) / info.max * 255).astype(np.uint8)
    arr = np.nan_to_num(arr.astype(np.float64))
    lo, hi = float(arr.min()), float(arr.max())
    if lo >= 0.0 and hi <= 1.0:
        return np.round(arr * 255).astype(np.uint8)
    if hi == lo:
        return np.zeros(arr.shape, np.uint8)
    return np.round((arr - lo) / (hi - lo) * 255).astype(np.uint8)


def _channels_to_rgb(arr: np.ndarray) -> np.ndarray:
    """(H, W) or (H, W, C) uint8 -> (H, W, 3) RGB; alpha is composited on white."""
    if arr.ndim == 2:
        return np.repeat(arr[:, :, None], 3, axis=2)
    if arr.ndim == 3 and arr.shape[2] == 1:
        return np.repeat(arr, 3, axis=2)
    if arr.ndim == 3 and arr.shape[2] == 2:  # gray + alpha
        gray, alpha = arr[:, :, :1].astype(np.float32), arr[:, :, 1:2].astype(np.float32) / 255
        out = gray * alpha + 255 * (1 - alpha)
        return np.repeat(np.round(out).astype(np.uint8), 3, axis=2)
    if arr.ndim == 3 and arr.shape[2] == 4:
        rgb, alpha = arr[:, :, :3].astype(np.float32), arr[:, :, 3:4].astype(np.float32) / 255
        return np.round(rgb * alpha + 255 * (1 - alpha)).astype(np.uint8)
    if arr.ndim == 3 and arr.shape[2] >= 3:
        return np.ascontiguousarray(arr[:, :, :3])
    raise ValueError(f"unsupported array shape {arr.shape}")


def _load_tiff(path: Path, max_pixels: int) -> np.ndarray:
    import tifffile

    with tifffile.TiffFile(path) as tif:
        page = tif.pages[0]
        shape = page.shape
        if len(shape) >= 2 and int(np.prod(shape[:2])) > max_pixels:
            raise ImageError(path, f"{shape[1]}x{shape[0]} pixels is over the {max_pixels:,} limit")
        arr = page.asarray()
        photometric = getattr(page.photometric, "name", str(page.photometric))
    if arr.ndim == 3 and arr.shape[0] in (1, 3, 4) and arr.shape[2] not in (1, 2, 3, 4):
        arr = np.moveaxis(arr, 0, -1)  # planar (C, H, W)
    arr = _to_uint8(arr)
    if photometric == "MINISWHITE":
        arr = 255 - arr
    if arr.ndim == 3 and arr.shape[2] == 4 and photometric == "SEPARATED":  # CMYK
        c, m, y, k = (arr[:, :, i].astype(np.float32) / 255 for i in range(4))
        rgb = np.stack([(1 - c) * (1 - k), (1 - m) * (1 - k), (1 - y) * (1 - k)], axis=2)
        return np.round(rgb * 255).astype(np.uint8)
    return _channels_to_rgb(arr)


def _load_pil(path: Path, max_pixels: int) -> np.ndarray:
    from PIL import Image, ImageOps

    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        Image.MAX_IMAGE_PIXELS = None  # we apply our own bound below, before decoding
        with Image.open(path) as im:
            w, h = im.size
            if w * h > max_pixels:
                raise ImageError(path, f"{w}x{h} pixels is over the {max_pixels:,} limit")
            im.load()
            im = ImageOps.exif_transpose(im)
            mode = im.mode
            if mode in ("I;16", "I;16B", "I;16L", "I;16N"):
                arr = np.asarray(im, dtype=np.uint16)
            elif mode == "I":
                arr = np.asarray(im, dtype=np.int32)
                # 16-bit PNGs decode as mode I with values in 0..65535
                if arr.min() >= 0 and arr.max() <= 65535:
                    arr = arr.astype(np.uint16)
            elif mode == "F":
                arr = np.asarray(im, dtype=np.float32)
            elif mode in ("RGB", "L", "RGBA", "LA"):
                arr = np.asarray(im)
            elif mode in ("P", "PA"):
                arr = np.asarray(im.convert("RGBA"))
            elif mode == "1":
                arr = np.asarray(im.convert("L"))
            else:  # CMYK, YCbCr, LAB, HSV, ...
                arr = np.asarray(im.convert("RGB"))
    return _channels_to_rgb(_to_uint8(arr))


def load_rgb(path: str | Path, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Load an image file as RGB.

    Parameters
    ----------
    path : path-like
        PNG, JPEG or TIFF file.
    max_pixels : int
        Refuse images with more than this many pixels (width * height) before
        decoding them (decompression-bomb guard).

    Returns
    -------
    ndarray of shape (H, W, 3), dtype uint8
        RGB, EXIF orientation applied; 16-bit data scaled by 255/65535, float data
        in [0, 1] by 255; alpha composited over white.

    Raises
    ------
    ImageError
        The file is missing, unreadable, empty, truncated, not an image, or too large.
    """
    path = Path(path)
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        if path.is_symlink():
            raise ImageError(path, f"broken symbolic link (points to {os.readlink(path)})") from None
        raise ImageError(path, "file not found") from None
    except OSError as exc:
        raise ImageError(path, f"cannot access file ({exc.strerror})") from None
    if size == 0:
        raise ImageError(path, "empty file (0 bytes)")
    if not os.access(path, os.R_OK):
        raise ImageError(path, "permission denied")
    try:
        if path.suffix.lower() in (".tif", ".tiff"):
            try:
                return _load_tiff(path, max_pixels)
            except ImageError:
                raise
            except Exception:
                return _load_pil(path, max_pixels)  # odd TIFF flavours PIL knows better
        return _load_pil(path, max_pixels)
    except ImageError:
        raise
    except PermissionError:
        raise ImageError(path, "permission denied") from None
    except Exception as exc:  # PIL raises many types; we report one line
        reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        if "truncated" in reason.lower() or "broken data stream" in reason.lower():
            reason = f"truncated or corrupt image data ({reason})"
        elif "cannot identify image file" in reason:
            reason = "not an image file (content does not match any image format)"
        raise ImageError(path, reason) from None


def image_size(path: str | Path) -> tuple[int, int]:
    """(width, height) after EXIF orientation, read from the header only.

    Raises
    ------
    ImageError
        If the header cannot be read.
    """
    from PIL import Image

    path = Path(path)
    try:
        with Image.open(path) as im:
            w, h = im.size
            orientation = im.getexif().get(0x0112, 1)
    except Exception as exc:
        raise ImageError(path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None
    return (h, w) if orientation in (5, 6, 7, 8) else (w, h)


def jpeg_complete(path: str | Path) -> bool:
    """Whether a JPEG file ends with its end-of-image marker (``FF D9``), trailing zero
    or white-space padding allowed.

    libjpeg (inside ``cv2.imread``) decodes a truncated file as far as it goes, fills the
    rest grey and prints "Premature end of JPEG file" to stderr; such files go to the
    careful loader instead (:func:`load_rgb`, which reports them as truncated). A
    complete file with other data after its marker also takes that path and loads
    normally.
    """
    try:
        with open(path, "rb") as f:
            f.seek(0, 2)
            size = f.tell()
            f.seek(max(0, size - 256))
            tail = f.read()
    except OSError:
        return False
    return tail.rstrip(b"\x00 \t\r\n").endswith(b"\xff\xd9")


def shrink(img: np.ndarray, max_side: int) -> np.ndarray:
    """``img`` resized (INTER_AREA) so its longer side is at most ``max_side`` pixels.

    Parameters
    ----------
    img : ndarray of shape (H, W) or (H, W, C), uint8
    max_side : int

    Returns
    -------
    ndarray
        ``img`` itself when already small enough.
    """
    import cv2

    h, w = img.shape[:2]
    s = max_side / max(h, w)
    if s >= 1:
        return img
    return cv2.resize(img, (max(1, round(w * s)), max(1, round(h * s))), interpolation=cv2.INTER_AREA)


def decode_reduced(path: str | Path, max_side: int) -> np.ndarray | None:
    """The fast path of :func:`load_reduced` alone: None where it does not apply.

    Plain (RGB or gray, no transparency, complete) JPEG and PNG files are decoded by
    OpenCV, JPEGs with libjpeg's DCT scaling (``cv2.IMREAD_REDUCED_COLOR_2/4/8``: the
    largest factor that keeps the longer side at least ``max_side``), so a 12-megapixel
    photo costs what a thumbnail does; OpenCV applies the EXIF orientation.

    Parameters
    ----------
    path : path-like
        Image file.
    max_side : int
        The longer side of the result is at most this many pixels (never upscaled).

    Returns
    -------
    ndarray of shape (H, W, 3), uint8, RGB, or None
        None for any other file (TIFF, alpha, 16-bit, CMYK, truncated, unreadable):
        the caller decides what to do (:func:`load_reduced` takes :func:`load_rgb`).
    """
    import cv2
    from PIL import Image

    path = Path(path)
    try:
        with Image.open(path) as im:
            fmt, mode, (w, h) = im.format, im.mode, im.size
            transparent = "transparency" in im.info
        if fmt not in ("JPEG", "PNG") or mode not in ("RGB", "L") or transparent or w * h > MAX_PIXELS:
            return None
        flag = cv2.IMREAD_COLOR
        if fmt == "JPEG":
            if not jpeg_complete(path):
                return None
            for factor, f in ((8, cv2.IMREAD_REDUCED_COLOR_8), (4, cv2.IMREAD_REDUCED_COLOR_4),
                              (2, cv2.IMREAD_REDUCED_COLOR_2)):
                if min(w, h) // factor >= max_side // 2 and max(w, h) // factor >= max_side:
                    flag = f
                    break
        bgr = cv2.imread(str(path), flag)
    except Exception:  # noqa: BLE001 - the careful loader reports one line
        return None
    if bgr is None or not bgr.size:
        return None
    return shrink(np.ascontiguousarray(bgr[:, :, ::-1]), max_side)


def load_reduced(path: str | Path, max_side: int = 256) -> np.ndarray:
    """Decode ``path`` with its longer side at most ``max_side`` (never upscaled), fast.

    :func:`decode_reduced` where it applies; TIFFs, images with transparency and
    anything unusual go through :func:`load_rgb` (alpha over white, 16-bit scaled,
    EXIF orientation applied) and are shrunk after (:func:`shrink`).

    Returns
    -------
    ndarray of shape (H, W, 3), dtype uint8, RGB

    Raises
    ------
    ImageError
        Unreadable file (the one-line reason from :func:`load_rgb`).
    """
    small = decode_reduced(path, max_side)
    return small if small is not None else shrink(load_rgb(path), max_side)


@contextlib.contextmanager
def atomic_path(dest: str | Path) -> Iterator[Path]:
    """Yield a temporary path in ``dest``'s folder; on success rename it onto ``dest``.

    The temporary file keeps ``dest``'s suffix so writers that pick a format from it
    work. On error the temporary file is removed and ``dest`` is untouched; a reader
    never sees a half-written ``dest``.
    """
    dest = Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{dest.stem}.", suffix=f".tmp{dest.suffix}", dir=dest.parent)
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        os.chmod(tmp_path, 0o666 & ~_UMASK)  # mkstemp's 0600 would make every output private
        yield tmp_path
        with open(tmp_path, "rb+") as fh:
            os.fsync(fh.fileno())
        os.replace(tmp_path, dest)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


def write_bytes_atomic(dest: str | Path, data: bytes) -> Path:
    """Write ``data`` to ``dest`` atomically (temp file in the same folder + rename)."""
    with atomic_path(dest) as tmp:
        tmp.write_bytes(data)
    return Path(dest)


def write_text_atomic(dest: str | Path, text: str) -> Path:
    """Write UTF-8 ``text`` to ``dest`` atomically."""
    return write_bytes_atomic(dest, text.encode("utf-8"))


def write_image(dest: str | Path, image: np.ndarray) -> Path:
    """Write an image atomically; the format follows ``dest``'s suffix.

    Parameters
    ----------
    dest : path-like
        Target file (.png, .jpg, .tif).
    image : ndarray
        (H, W, 3) uint8 RGB, or (H, W) uint8 / uint16 (a label map or a mask). bool
        masks are written as 0 / 255.

    Raises
    ------
    ImageError
        If encoding or writing fails.
    """
    import cv2

    dest = Path(dest)
    arr = np.asarray(image)
    if arr.dtype == bool:
        arr = arr.astype(np.uint8) * 255
    if arr.ndim == 3 and arr.shape[2] == 3:
        arr = cv2.cvtColor(arr, cv2.COLOR_RGB2BGR)
    ext = dest.suffix.lower() or ".png"
    try:
        ok, buf = cv2.imencode(ext, arr)
    except cv2.error:  # no encoder for the suffix, or a dtype the format cannot hold
        ok = False
    if not ok:
        raise ImageError(dest, f"could not encode a {arr.dtype} array of shape {arr.shape} as {ext}")
    try:
        return write_bytes_atomic(dest, buf.tobytes())
    except OSError as exc:
        raise ImageError(dest, f"cannot write ({exc.strerror})") from None


def write_label_map(dest: str | Path, labels: np.ndarray) -> Path:
    """Write a label map PNG: uint8 when the largest label is <= 255, else uint16.

    Parameters
    ----------
    labels : ndarray of shape (H, W), integer
        0 = background / edge, 1..N regions. N must be below 65536.

    Raises
    ------
    ValueError
        If a label is negative or above 65535.
    """
    labels = np.asarray(labels)
    top = int(labels.max()) if labels.size else 0
    if labels.size and int(labels.min()) < 0:
        raise ValueError("label maps cannot hold negative labels")
    if top > 65535:
        raise ValueError(f"{top} labels do not fit a 16-bit PNG")
    dtype = np.uint8 if top <= 255 else np.uint16
    return write_image(dest, labels.astype(dtype))


def read_label_map(path: str | Path) -> np.ndarray:
    """Read a label map PNG written by :func:`write_label_map` as (H, W) int32."""
    import cv2

    arr = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if arr is None:
        raise ImageError(path, "cannot read label map")
    return arr.astype(np.int32)


def flatten_name(path: str | Path, root: str | Path) -> str:
    """A collision-free output name for ``path`` relative to ``root``.

    ``a/b c/ü.jpg`` under ``root`` becomes ``a__b c__ü.jpg``: folder separators
    become ``__`` and the suffix is kept (so ``x.jpg`` and ``x.png`` stay apart).
    Outputs append their own suffix, e.g. ``a__b c__ü.jpg.labels.png``. When
    ``root`` is the file itself the plain file name is returned.
    """
    path, root = Path(path), Path(root)
    if root.is_dir():
        try:  # abspath, not resolve: a symlink keeps its own name (no collision with its target)
            rel = Path(os.path.abspath(path)).relative_to(os.path.abspath(root))
        except ValueError:
            rel = Path(path.name)
    else:
        rel = Path(path.name)
    return flat_item_name(rel)


def flat_item_name(relative: str | Path) -> str:
    """Join the parts of a relative path with ``__``: ``a/b c/ü.jpg`` -> ``a__b c__ü.jpg``.

    The one rule for output names of nested inputs (jobs, annotation, clustering). When
    the joined name does not split back into the same parts (a part containing ``__`` or
    ending in ``_``: ``a__b.jpg`` would meet ``a/b.jpg``), eight hex digits of the path's
    SHA-1 go before the suffix: ``a__b~d82aba5b.jpg``. Ordinary names are unchanged.
    """
    parts = Path(relative).parts
    name = "__".join(parts)
    if name.split("__") == list(parts):
        return name
    import hashlib

    tag = hashlib.sha1(Path(relative).as_posix().encode("utf-8")).hexdigest()[:8]
    stem, dot, suffix = name.rpartition(".")
    return f"{stem}~{tag}.{suffix}" if dot and stem else f"{name}~{tag}"
