"""Helpers shared by the exporters: per-image names, region masks, atomic writes."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path, PurePosixPath

import numpy as np

from segdeck.core.export.geometry import mask_polygons
from segdeck.core.export.source import ExportError, ExportImage, ExportSource, annotation_mask


def relative_stems(src: ExportSource) -> dict[int, str]:
    """Image id -> its path relative to the image root without suffix (``a/b.jpg`` ->
    ``a/b``), the name tools look for beside or instead of the image. Where two images
    would share it (``a/b.jpg`` and ``a/b.png``) they keep their suffix (``a/b.jpg``)."""
    plain = {img.id: str(PurePosixPath(img.file_name).with_suffix("")) for img in src.images}
    seen: dict[str, int] = {}
    for stem in plain.values():
        seen[stem] = seen.get(stem, 0) + 1
    return {img.id: (plain[img.id] if seen[plain[img.id]] == 1 else img.file_name) for img in src.images}


def region_masks(src: ExportSource, img: ExportImage) -> Iterator[tuple[dict, np.ndarray, tuple[int, int]]]:
    """Each annotation of an image with its mask cropped to its box.

    Yields
    ------
    ann : dict
    mask : ndarray of shape (h, w), bool
        The region inside its box (``automask``: the whole, possibly overlapping mask,
        from its RLE; otherwise the label map's pixels of ``ann["label"]``).
    offset : tuple of int
        ``(x0, y0)`` of the crop in the image.
    """
    labels = None if src.kind == "automask" else img.read_labels()
    for ann in img.annotations:
        x, y, w, h = (int(round(v)) for v in ann["bbox"])
        if w <= 0 or h <= 0:
            continue
        if labels is None:
            mask = annotation_mask(ann)[y : y + h, x : x + w]
        else:
            mask = labels[y : y + h, x : x + w] == int(ann["label"])
        yield ann, mask, (x, y)


def region_rings(mask: np.ndarray, offset: tuple[int, int], *, corners: bool) -> list[np.ndarray]:
    """Polygons of a cropped mask (:func:`.geometry.mask_polygons`) in image coordinates."""
    return [r + np.array(offset, np.int64) for r in mask_polygons(mask, corners=corners)]


def write_json(path: Path, doc) -> Path:
    """Write JSON atomically (UTF-8, non-ASCII kept), creating parent folders."""
    from segdeck.core import imageio

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return imageio.write_text_atomic(path, json.dumps(doc, ensure_ascii=False))
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from None


def write_text(path: Path, text: str) -> Path:
    """Write text atomically, creating parent folders."""
    from segdeck.core import imageio

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return imageio.write_text_atomic(path, text)
    except OSError as exc:
        raise ExportError(f"cannot write {path}: {exc.strerror or exc}") from None


def category_index(src: ExportSource) -> dict[int, int]:
    """Category id -> 0-based class index (categories ordered by id)."""
    return {cid: i for i, cid in enumerate(sorted(src.category_names()))}
