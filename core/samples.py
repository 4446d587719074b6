"""Sample photos that ship inside our dependencies (scikit-image, scikit-learn), plus
files made from them that real folders contain: a JPEG with an EXIF orientation, a
16-bit TIFF, a grayscale PNG, an RGBA PNG and a file in a nested folder whose names
hold a space and a non-ASCII letter. Nothing is downloaded.
"""

from __future__ import annotations

import io
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segdeck.core import imageio

#: EXIF tag number of "Orientation".
EXIF_ORIENTATION = 0x0112


@dataclass(frozen=True)
class SampleFile:
    """One file of the sample folder.

    Attributes
    ----------
    name : str
        Path relative to the sample folder (POSIX).
    kind : str
        ``photo`` or what is odd about the file (``exif-orientation``, ``16-bit``, ...).
    source : str
        Where the pixels come from.
    """

    name: str
    kind: str
    source: str


def _skimage(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        import skimage.data

        if name == "motorcycle":
            return skimage.data.stereo_motorcycle()[0]
        return getattr(skimage.data, name)()

    return load


def _sklearn(name: str) -> Callable[[], np.ndarray]:
    def load() -> np.ndarray:
        from sklearn.datasets import load_sample_image

        return load_sample_image(name)

    return load


#: (file name, loader, source) of the plain photographs, written as JPEG.
PHOTOS: list[tuple[str, Callable[[], np.ndarray], str]] = [
    ("astronaut.jpg", _skimage("astronaut"), "skimage.data.astronaut"),
    ("coffee.jpg", _skimage("coffee"), "skimage.data.coffee"),
    ("chelsea.jpg", _skimage("chelsea"), "skimage.data.chelsea"),
    ("rocket.jpg", _skimage("rocket"), "skimage.data.rocket"),
    ("motorcycle.jpg", _skimage("motorcycle"), "skimage.data.stereo_motorcycle (left image)"),
    ("immunohistochemistry.jpg", _skimage("immunohistochemistry"), "skimage.data.immunohistochemistry"),
    ("hubble_deep_field.jpg", _skimage("hubble_deep_field"), "skimage.data.hubble_deep_field"),
    ("china.jpg", _sklearn("china.jpg"), "sklearn.datasets.load_sample_image('china.jpg')"),
    ("flower.jpg", _sklearn("flower.jpg"), "sklearn.datasets.load_sample_image('flower.jpg')"),
]

EXIF_NAME = "rocket_exif_orientation_6.jpg"
TIFF16_NAME = "coffee_16bit.tif"
GRAY_NAME = "camera_gray.png"
RGBA_NAME = "chelsea_rgba.png"
NESTED_NAME = "more photos/café.png"


def _jpeg_bytes(rgb: np.ndarray, exif: bytes | None = None) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    kwargs = {"quality": 92}
    if exif is not None:
        kwargs["exif"] = exif
    Image.fromarray(rgb).save(buf, format="JPEG", **kwargs)
    return buf.getvalue()


def _png_bytes(arr: np.ndarray) -> bytes:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="PNG")
    return buf.getvalue()


def exif_rotated_jpeg(upright: np.ndarray, orientation: int = 6) -> bytes:
    """JPEG bytes whose stored pixels are rotated so that applying the EXIF
    ``orientation`` (``PIL.ImageOps.exif_transpose``) gives back ``upright``.

    Parameters
    ----------
    upright : ndarray of shape (H, W, 3), uint8 RGB
    orientation : {3, 6, 8}
        3: stored upside down; 6: stored rotated 90 degrees counter-clockwise (viewer
        turns it clockwise); 8: stored rotated 90 degrees clockwise.
    """
    from PIL import Image

    if orientation not in (3, 6, 8):
        raise ValueError(f"orientation must be 3, 6 or 8, got {orientation}")
    stored = {3: np.rot90(upright, 2), 6: np.rot90(upright, 1), 8: np.rot90(upright, -1)}[orientation]
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = orientation
    return _jpeg_bytes(np.ascontiguousarray(stored), exif.tobytes())


def tiff16_bytes(rgb: np.ndarray) -> bytes:
    """16-bit RGB TIFF bytes of an 8-bit image (values * 257, so 255 -> 65535)."""
    import tifffile

    buf = io.BytesIO()
    tifffile.imwrite(buf, rgb.astype(np.uint16) * 257, photometric="rgb")
    return buf.getvalue()


def rgba_png_bytes(rgb: np.ndarray) -> bytes:
    """RGBA PNG bytes: opaque in the middle, fading to fully transparent at the left and right edges."""
    h, w = rgb.shape[:2]
    x = np.abs(np.linspace(-1.0, 1.0, w))
    alpha = np.clip((1.0 - x) * 3.0, 0.0, 1.0)
    a = np.broadcast_to(np.round(alpha * 255).astype(np.uint8), (h, w))
    return _png_bytes(np.dstack([rgb, a]))


def _odd_files() -> list[tuple[SampleFile, Callable[[], bytes]]]:
    import skimage.data

    return [
        (SampleFile(EXIF_NAME, "exif-orientation", "skimage.data.rocket, stored rotated, EXIF orientation 6"),
         lambda: exif_rotated_jpeg(skimage.data.rocket(), 6)),
        (SampleFile(TIFF16_NAME, "16-bit", "skimage.data.coffee as 16-bit RGB TIFF"),
         lambda: tiff16_bytes(skimage.data.coffee())),
        (SampleFile(GRAY_NAME, "grayscale", "skimage.data.camera, 8-bit gray PNG"),
         lambda: _png_bytes(skimage.data.camera())),
        (SampleFile(RGBA_NAME, "rgba", "skimage.data.chelsea with an alpha ramp"),
         lambda: rgba_png_bytes(skimage.data.chelsea())),
        (SampleFile(NESTED_NAME, "nested-unicode", "sklearn flower.jpg as PNG in a sub-folder with a space, non-ASCII name"),
         lambda: _png_bytes(_sklearn("flower.jpg")())),
    ]


def sample_files() -> list[SampleFile]:
    """The files :func:`write_samples` creates, in order."""
    return [SampleFile(name, "photo", src) for name, _, src in PHOTOS] + [f for f, _ in _odd_files()]


def write_samples(dest: str | Path, *, overwrite: bool = False) -> list[tuple[SampleFile, bool]]:
    """Write the sample folder.

    Idempotent: files already present are left as they are (unless ``overwrite``), so
    running it twice gives the same folder. Every file is written atomically.

    Parameters
    ----------
    dest : path-like
        Folder to fill (created if needed).
    overwrite : bool
        Rewrite files that exist.

    Returns
    -------
    list of (SampleFile, bool)
        Each file and whether it was written in this call (False: already there).

    Raises
    ------
    OSError
        If the folder cannot be created or written.
    """
    dest = Path(dest)
    dest.mkdir(parents=True, exist_ok=True)
    out: list[tuple[SampleFile, bool]] = []
    jobs: list[tuple[SampleFile, Callable[[], bytes]]] = [
        (SampleFile(name, "photo", src), (lambda load=load: _jpeg_bytes(load()))) for name, load, src in PHOTOS
    ]
    jobs += _odd_files()
    for sample, make in jobs:
        path = dest / sample.name
        if path.exists() and not overwrite:
            out.append((sample, False))
            continue
        imageio.write_bytes_atomic(path, make())
        out.append((sample, True))
    return out
