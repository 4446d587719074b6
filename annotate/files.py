"""The files of an annotation run, per image: label map, one mask per colour, the session.

With ``NAME`` the image's flattened relative name (:func:`segdeck.core.imageio.flatten_name`):

- ``NAME.labels.png`` label map at full resolution: pixel = colour index k of the
  painting (1..9, 0 = unpainted), uint8;
- ``NAME.mask-<k>-<rrggbb>.png`` one 0 / 255 mask per colour used, full resolution;
- ``NAME.session.npz`` the session (segments after cuts, original segments, colour per
  segment, method, params) so reopening the image restores its painting.

Every write is atomic (:func:`segdeck.core.imageio.atomic_path`); :class:`Saver` writes
on a background thread so the next image shows at once.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from segdeck.annotate.state import PALETTE, PaintState, colour_hex
from segdeck.core import imageio
from segdeck.core.errors import SegdeckError


def labels_path(out_dir: Path, flat: str) -> Path:
    """``out_dir / NAME.labels.png``."""
    return out_dir / f"{flat}.labels.png"


def session_path(out_dir: Path, flat: str) -> Path:
    """``out_dir / NAME.session.npz``."""
    return out_dir / f"{flat}.session.npz"


def mask_path(out_dir: Path, flat: str, k: int) -> Path:
    """``out_dir / NAME.mask-<k>-<rrggbb>.png``: the mask of paint colour ``k``."""
    return out_dir / f"{flat}.mask-{k}-{colour_hex(PALETTE[k])}.png"


def _small_uint(arr: np.ndarray) -> np.ndarray:
    """``arr`` as uint16, or uint32 when its largest value needs it (smaller sessions)."""
    top = int(arr.max()) if arr.size else 0
    return arr.astype(np.uint16 if top < 65536 else np.uint32)


def save_painting(out_dir: Path, flat: str, image_path: Path, labels: np.ndarray, original: np.ndarray,
                  seg_color: np.ndarray, meta: dict, report: Callable[[dict], None] | None = None) -> list[Path]:
    """Write label map, masks and session for one image (atomic writes), full resolution.

    Parameters
    ----------
    labels, original : ndarray (H, W) int
        Current and original segments.
    seg_color : ndarray (N + 1,) uint8
        Colour index per segment.
    meta : dict
        JSON-able facts stored with the session (method, params, ...).
    report : callable, optional
        Called with one dict per written file.

    Returns
    -------
    list of Path
    """
    state = PaintState(labels, seg_color, original=original)
    cmap = state.colour_map()
    written: list[tuple[Path, dict]] = []
    dest = imageio.write_label_map(labels_path(out_dir, flat), cmap)
    written.append((dest, {"kind": "labels", "labels": sorted(int(k) for k in np.unique(cmap) if k)}))
    used = set()
    for k in range(1, len(PALETTE)):
        m = cmap == k
        if m.any():
            used.add(k)
            dest = imageio.write_image(mask_path(out_dir, flat, k), m)
            written.append((dest, {"kind": "mask", "label": k, "colour": "#" + colour_hex(PALETTE[k]),
                                   "pixels": int(m.sum())}))
    prefix = f"{flat}.mask-"
    for old in out_dir.iterdir():  # masks of colours no longer used
        if old.name.startswith(prefix) and old.suffix == ".png":
            try:
                k = int(old.name[len(prefix):].split("-")[0])
            except ValueError:
                continue
            if k not in used:
                old.unlink(missing_ok=True)
    spath = session_path(out_dir, flat)
    same = original is labels or np.array_equal(original, labels)
    with imageio.atomic_path(spath) as tmp:
        arrays = {"labels": _small_uint(labels), "seg_color": np.asarray(seg_color, np.uint8),
                  "meta": np.array(json.dumps({**meta, "image": str(image_path), "shape": list(labels.shape)}))}
        if not same:
            arrays["original"] = _small_uint(original)
        np.savez_compressed(tmp, **arrays)
    written.append((spath, {"kind": "session"}))
    for path, info in written:
        if report:
            report({"event": "saved", "image": str(image_path), "file": str(path), **info})
    return [p for p, _ in written]


def load_session(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """(labels, original, seg_color, meta) of a saved session.

    Raises
    ------
    ValueError
        Not a segdeck session file.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            labels = z["labels"].astype(np.int32)
            original = z["original"].astype(np.int32) if "original" in z.files else labels
            seg_color = z["seg_color"].astype(np.uint8)
            meta = json.loads(str(z["meta"]))
    except Exception as exc:
        raise ValueError(f"{path}: not a readable segdeck session ({type(exc).__name__})") from None
    return labels, original, seg_color, meta


class Saver:
    """Writes paintings on a background thread; :meth:`wait` before exiting."""

    def __init__(self, report: Callable[[dict], None]):
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segdeck-save")
        self.report = report
        self.pending: dict[Path, Future] = {}
        self.errors: list[str] = []

    def save(self, out_dir: Path, flat: str, image_path: Path, state: PaintState, meta: dict) -> Future:
        """Write a copy of ``state``'s painting (:func:`save_painting`) in the background;
        a failure is reported as an ``error`` event and kept in ``errors``."""
        labels, original, seg_color = state.labels.copy(), state.original, state.seg_color.copy()

        def job():
            try:
                return save_painting(out_dir, flat, image_path, labels, original, seg_color, meta, self.report)
            except (SegdeckError, OSError, ValueError) as exc:
                msg = f"{image_path}: saving failed: {exc}"
                self.errors.append(msg)
                self.report({"event": "error", "image": str(image_path), "error": msg})
                return []

        fut = self.pool.submit(job)
        self.pending[image_path] = fut
        return fut

    def wait_for(self, image_path: Path) -> None:
        """Wait until the last save of ``image_path`` (if any) is written."""
        fut = self.pending.get(image_path)
        if fut is not None:
            fut.result()

    def wait(self) -> None:
        """Wait for every pending save and stop the writer thread."""
        self.pool.shutdown(wait=True)
