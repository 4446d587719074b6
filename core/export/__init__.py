"""Exports of finished output folders into the formats other tools open as they are.

One module per format, one registry (:data:`FORMATS`); each module has ``write(src, out,
options) -> list[Path]`` and reads the shared :class:`~.source.ExportSource`
(:func:`~.source.load_source`) of a job folder that has ``coco.json`` (segment, automask,
describe, propagate) or an
``annotate`` folder. Used by jobs after a run (``export.formats``, files in
``<job>/export/<format>/``) and by ``segdeck export FORMAT JOB_DIR [--out DIR]``.

============== ======================================================================
format         what is written into the export folder
============== ======================================================================
coco           ``coco.json``: COCO instances, RLE (exact) or polygons; segdeck's
               statistics copied into each annotation's ``attributes``
datumaro-coco  ``annotations/instances_default.json`` (+ ``images/default/`` with
               ``--images``) and ``coco-1.0.zip`` of the same, for Datumaro and CVAT's
               "COCO 1.0" upload; file names relative to the image root
labelme        ``<relative path stem>.json`` per image (labelme / X-AnyLabeling):
               polygons, label names, ``imagePath`` relative to the JSON file
yolo-seg       ``labels/<relative path stem>.txt`` (class, normalised polygon),
               ``images/`` links to the inputs, ``data.yaml``
masks          ``<relative path stem>.png`` label map per image, always uint16 (or
               uint8 on request), and ``labels.txt`` (image, label, annotation, class)
============== ======================================================================

Polygons are exact pixel outlines (no simplification); what polygons lose is overlap
(a polygon export of ``automask`` keeps each mask whole, but tools that fill polygons
in order paint later ones over earlier ones) and, in tools that edit polygons, holes
become a zero-width cut from the outline into the hole (see :mod:`.geometry`).
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from segdeck.core.export.source import ExportError, ExportSource, load_source

#: format name -> (module under segdeck.core.export, one-line description)
FORMATS: dict[str, tuple[str, str]] = {
    "coco": ("coco", "COCO instances JSON (RLE or polygons), statistics in attributes"),
    "datumaro-coco": ("datumaro_coco", "annotations/instances_default.json layout + zip for CVAT 'COCO 1.0'"),
    "labelme": ("labelme", "labelme / X-AnyLabeling JSON per image (polygons)"),
    "yolo-seg": ("yolo_seg", "YOLO segmentation labels (normalised polygons) + data.yaml"),
    "masks": ("masks", "uint16 (or uint8) label map PNG per image + labels.txt"),
}


@dataclass(frozen=True)
class ExportOptions:
    """Options of the exporters (each format reads the ones it needs).

    Attributes
    ----------
    segmentation : {"rle", "polygons"}
        coco / datumaro-coco: how masks are written.
    mask_dtype : {"uint16", "uint8"}
        masks: PNG depth.
    images : bool
        datumaro-coco: copy the images into ``images/default/`` (and the zip).
        yolo-seg always links them (copies where links are not possible).
    """

    segmentation: str = "rle"
    mask_dtype: str = "uint16"
    images: bool = False


def export_source(fmt: str, src: ExportSource, out: str | Path, options: ExportOptions | None = None) -> list[Path]:
    """Write ``src`` as format ``fmt`` into folder ``out``; returns the files written.

    Raises
    ------
    ExportError
        Unknown format or option, or data the format cannot hold.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    options = options or ExportOptions()
    if options.segmentation not in ("rle", "polygons"):
        raise ExportError(f"segmentation must be rle or polygons, got {options.segmentation!r}")
    if options.mask_dtype not in ("uint16", "uint8"):
        raise ExportError(f"mask dtype must be uint16 or uint8, got {options.mask_dtype!r}")
    module = importlib.import_module(f"segdeck.core.export.{FORMATS[fmt][0]}")
    out = Path(out)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create {out}: {exc.strerror or exc}") from None
    return module.write(src, out, options)


def default_out(job_dir: str | Path, fmt: str) -> Path:
    """``<job_dir>/export/<fmt>``."""
    return Path(job_dir) / "export" / fmt


def export_job(
    fmt: str,
    job_dir: str | Path,
    out: str | Path | None = None,
    *,
    segmentation: str = "rle",
    mask_dtype: str = "uint16",
    images: bool = False,
) -> Path:
    """Export a finished ``segment`` / ``automask`` job or an ``annotate`` folder.

    Parameters
    ----------
    fmt : str
        A key of :data:`FORMATS`.
    job_dir : path-like
    out : path-like, optional
        Export folder (default ``<job_dir>/export/<fmt>``).
    segmentation, mask_dtype, images
        See :class:`ExportOptions`.

    Returns
    -------
    Path
        The export folder.

    Raises
    ------
    ExportError
        Not an exportable folder, unknown format / option, or data the format cannot hold.
    """
    if fmt not in FORMATS:
        raise ExportError(f"unknown export format {fmt!r}; known: {', '.join(FORMATS)}")
    src = load_source(job_dir)
    dest = Path(out) if out else default_out(job_dir, fmt)
    export_source(fmt, src, dest, ExportOptions(segmentation, mask_dtype, images))
    return dest


__all__ = ["FORMATS", "ExportError", "ExportOptions", "ExportSource", "default_out", "export_job", "export_source", "load_source"]
