"""Writers shared by the region-producing jobs (``segment``, ``automask``).

Per image (all written atomically, the COCO sidecar last):

* ``<stem>.labels.png``: label map, uint8 (uint16 above 255 labels), 0 = background
  (read it with ``cv2.imread(path, cv2.IMREAD_UNCHANGED)``: default flags turn a
  16-bit map into 8-bit BGR; the ``masks`` export writes uniform uint16 maps);
* ``<stem>.overlay.jpg`` (or ``.png``): contours, fills and per-region text labels;
* ``<stem>.regions.csv``: one row per region: label, area, intensity, ratio, bbox
  ``x0, y0, x1, y1`` (XYXY, ``x1``/``y1`` exclusive), centroid ``cx, cy``, then any
  score columns;
* ``parts/<stem>.coco.json``: the image's COCO record (RLE annotations), the sidecar
  from which :func:`write_coco` assembles the job's ``coco.json``.

Per job (:func:`finalize_job`, after every run): ``coco.json``, ``regions.csv`` (every
image's rows with ``image`` and ``annotation_id`` columns first, the ids of
``coco.json``) and the exports chosen in :class:`ExportParams`
(:mod:`segdeck.core.export`), each in ``export/<format>/``.

Units everywhere: full-resolution pixels (the image after EXIF orientation); points
and centroids are ``(x, y)`` = (column, row); ``intensity`` is the sum over the
region's pixels of the darkness ``100 - gray / 255 * 100`` (0 white .. 100 black,
gray = BT.601 luma), ``ratio`` its mean (0..100).

Because each image's sidecar is written with its other files, a resumed or partial
run assembles a COCO file that holds exactly the images that are done.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import Field, field_validator

from segdeck.core import imageio
from segdeck.core.params import JobParams
from segdeck.core.regions import RegionStats

PARTS_DIR = "parts"
COCO_NAME = "coco.json"
REGIONS_NAME = "regions.csv"
EXPORT_DIR = "export"
DEFAULT_CATEGORIES = [{"id": 1, "name": "region", "supercategory": "region"}]
CSV_FIELDS = ["label", "area", "intensity", "ratio", "x0", "y0", "x1", "y1", "cx", "cy"]


class OverlayParams(JobParams):
    """How the per-image overlay is drawn."""

    enabled: bool = Field(True, description="write an overlay image with contours and region labels")
    format: Literal["jpg", "png"] = Field("jpg", description="overlay file format")
    fill_alpha: float = Field(0.3, ge=0.0, le=1.0, description="opacity of the per-region colour fill (0: contours only)")
    contour_thickness: int = Field(0, ge=0, le=50, description="contour width in pixels (0: about 1 px per 1000 px of image side)")
    text: bool = Field(True, description="draw area / intensity / ratio text on each region")
    max_text_labels: int = Field(300, ge=0, le=100_000, description="text labels on at most this many regions (largest first)")


ExportFormat = Literal["coco", "datumaro-coco", "labelme", "yolo-seg", "masks"]


class ExportParams(JobParams):
    """Exports written after the run into ``export/<format>/`` (see ``segdeck export``)."""

    formats: list[ExportFormat] = Field(
        default_factory=list,
        description="export formats to write after the run: coco, datumaro-coco, labelme, yolo-seg, masks (comma-separated; empty: none)",
    )
    segmentation: Literal["rle", "polygons"] = Field(
        "rle", description="coco / datumaro-coco: masks as RLE (exact) or polygons (pixel-edge outlines, holes joined by a cut)"
    )
    mask_dtype: Literal["uint16", "uint8"] = Field("uint16", description="masks: label map PNG depth (uint8 fails above 255 labels)")

    @field_validator("formats", mode="before")
    @classmethod
    def _split(cls, value):
        if isinstance(value, str):
            return [v for v in value.replace(",", " ").split() if v]
        return value

    @field_validator("formats")
    @classmethod
    def _unique(cls, value):
        return list(dict.fromkeys(value))


def output_names(stem: str, overlay_format: str = "jpg") -> dict[str, str]:
    """Relative output paths of one image: keys labels, overlay, csv, part."""
    return {
        "labels": f"{stem}.labels.png",
        "overlay": f"{stem}.overlay.{overlay_format}",
        "csv": f"{stem}.regions.csv",
        "part": f"{PARTS_DIR}/{stem}.coco.json",
    }


def regions_csv(stats: Sequence[RegionStats]) -> str:
    """CSV text (header + one row per region) for :attr:`RegionStats.as_row`."""
    extra: list[str] = []
    for s in stats:
        for key in s.scores:
            if key not in extra:
                extra.append(key)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=CSV_FIELDS + extra, lineterminator="\n")
    writer.writeheader()
    for s in stats:
        writer.writerow(s.as_row())
    return buf.getvalue()


def _finish_rles(rles: list[dict]) -> list[dict]:
    for r in rles:
        if isinstance(r["counts"], bytes):
            r["counts"] = r["counts"].decode("ascii")
    return rles


def masks_to_rles(masks: np.ndarray) -> list[dict]:
    """COCO compressed RLE of each mask (``pycocotools.mask.encode``).

    Parameters
    ----------
    masks : ndarray of shape (N, H, W), bool

    Returns
    -------
    list of dict
        ``{"size": [H, W], "counts": str}`` per mask, JSON-ready.
    """
    from pycocotools import mask as mask_utils

    masks = np.asarray(masks, dtype=bool)
    if masks.shape[0] == 0:
        return []
    fortran = np.asfortranarray(masks.transpose(1, 2, 0).astype(np.uint8))
    return _finish_rles(list(mask_utils.encode(fortran)))


def label_map_rles(labels: np.ndarray, label_ids: Sequence[int] | None = None) -> list[dict]:
    """COCO compressed RLE of each label of a label map, in one pass over the pixels.

    Equivalent to ``pycocotools.mask.encode`` on each ``labels == k`` mask, without
    building N full-size masks: runs are found on the column-major (Fortran-order)
    pixel sequence that COCO RLE uses, grouped by label, and compressed with
    ``pycocotools.mask.frPyObjects``.

    Parameters
    ----------
    labels : ndarray of shape (H, W), non-negative int
    label_ids : sequence of int, optional
        Labels to encode (default: every non-zero label present), in output order.

    Returns
    -------
    list of dict
        ``{"size": [H, W], "counts": str}`` per label.
    """
    from pycocotools import mask as mask_utils

    labels = np.asarray(labels)
    h, w = labels.shape
    flat = labels.T.ravel()
    if flat.size == 0:
        return []
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    starts = np.concatenate([[0], change])
    ends = np.concatenate([change, [flat.size]])
    vals = flat[starts]
    order = np.argsort(vals, kind="stable")
    svals, sstarts, sends = vals[order], starts[order], ends[order]
    if label_ids is None:
        label_ids = [int(v) for v in np.unique(svals) if v != 0]
    lo = np.searchsorted(svals, label_ids, side="left")
    hi = np.searchsorted(svals, label_ids, side="right")
    objs = []
    total = h * w
    for a, b in zip(lo, hi, strict=True):
        s, e = sstarts[a:b], sends[a:b]
        counts = np.empty(2 * len(s) + 1, dtype=np.int64)
        if len(s):
            counts[0] = s[0]
            counts[1:-1:2] = e - s
            counts[2:-1:2] = s[1:] - e[:-1]
            counts[-1] = total - e[-1]
            if counts[-1] == 0:  # encode() ends on the last run of ones
                counts = counts[:-1]
        else:
            counts = np.array([total], dtype=np.int64)
        objs.append({"size": [h, w], "counts": [int(c) for c in counts]})
    if not objs:
        return []
    return _finish_rles(list(mask_utils.frPyObjects(objs, h, w)))


_COCO_OWN = ("category_id", "segmentation", "area", "bbox", "iscrowd", "score")


def coco_annotations(rles: list[dict], stats: Sequence[RegionStats], category_id: int = 1) -> list[dict]:
    """COCO annotation dicts (without ids) for regions: RLE, area, XYWH bbox, stats, scores."""
    from pycocotools import mask as mask_utils

    if not rles:
        return []
    enc = [{"size": r["size"], "counts": r["counts"].encode("ascii")} for r in rles]
    # one RLE per call: pycocotools' list form overflows a uint8 counter above 255 items
    areas = [int(mask_utils.area(e)) for e in enc]
    boxes = [mask_utils.toBbox(e) for e in enc]
    anns = []
    for rle, area, box, stat in zip(rles, areas, boxes, stats, strict=True):
        ann: dict = {
            "category_id": category_id,
            "segmentation": rle,
            "area": int(area),
            "bbox": [float(v) for v in box],  # XYWH, as COCO requires
            "iscrowd": 0,
            "label": stat.label,
            "intensity": round(stat.intensity, 3),
            "ratio": round(stat.ratio, 4),
        }
        for key, value in stat.scores.items():
            ann[key] = float(value)
        if "score" not in ann and "predicted_iou" in stat.scores:
            ann["score"] = float(stat.scores["predicted_iou"])
        # CVAT and Datumaro keep only ``attributes`` (and ``score``) of an annotation
        ann["attributes"] = {k: v for k, v in ann.items() if k not in _COCO_OWN}
        anns.append(ann)
    return anns


def write_image_outputs(
    job_dir: str | Path,
    stem: str,
    item: str,
    image: np.ndarray,
    labels: np.ndarray,
    stats: Sequence[RegionStats],
    *,
    masks: np.ndarray | None = None,
    overlay: OverlayParams | None = None,
    category_id: int = 1,
) -> list[str]:
    """Write one image's label map, overlay, regions CSV and COCO sidecar.

    Parameters
    ----------
    job_dir : path-like
        The job folder.
    stem : str
        Flat output name of the item (:meth:`Job.output_stem`).
    item : str
        The item (input path relative to the job input), stored as the COCO ``file_name``.
    image : ndarray of shape (H, W, 3), uint8 RGB
        The full-resolution input image (for the overlay).
    labels : ndarray of shape (H, W), int
        Label map; label ``stats[k].label`` is region ``k``. With ``masks`` given, use
        :func:`segdeck.core.regions.masks_to_label_map` (smaller masks over larger).
    stats : sequence of RegionStats
        One per region, in output order.
    masks : ndarray of shape (N, H, W), bool, optional
        Overlapping masks (``stats[k]`` describes ``masks[k]``); their RLEs go into
        COCO unclipped. Without it, RLEs come from ``labels``.
    overlay : OverlayParams, optional
        Overlay options (default: :class:`OverlayParams` defaults).
    category_id : int
        COCO category of every region.

    Returns
    -------
    list of str
        Paths written, relative to ``job_dir``; the COCO sidecar is last.

    Raises
    ------
    ImageError
        If a file cannot be written.
    """
    job_dir = Path(job_dir)
    overlay = overlay or OverlayParams()
    names = output_names(stem, overlay.format)
    h, w = labels.shape
    written = []
    imageio.write_label_map(job_dir / names["labels"], labels)
    written.append(names["labels"])
    if overlay.enabled:
        from segdeck.core.render import draw_overlay

        canvas = draw_overlay(
            image, labels, stats, fill_alpha=overlay.fill_alpha,
            contour_thickness=overlay.contour_thickness, text=overlay.text,
            max_text_labels=overlay.max_text_labels,
        )
        imageio.write_image(job_dir / names["overlay"], canvas)
        written.append(names["overlay"])
    imageio.write_text_atomic(job_dir / names["csv"], regions_csv(stats))
    written.append(names["csv"])
    if masks is not None:
        rles = masks_to_rles(masks)
    else:
        rles = label_map_rles(labels, [s.label for s in stats])
    record = {
        "file_name": item,
        "width": int(w),
        "height": int(h),
        "annotations": coco_annotations(rles, stats, category_id),
    }
    imageio.write_text_atomic(job_dir / names["part"], json.dumps(record, ensure_ascii=False))
    written.append(names["part"])
    return written


def _sidecars(job_dir: Path, stems: Sequence[str] | None) -> list[Path]:
    parts = job_dir / PARTS_DIR
    if stems is not None:
        files = [parts / f"{s}.coco.json" for s in stems]
        return [f for f in files if f.is_file()]
    return sorted(p for p in parts.glob("*.coco.json") if not p.name.startswith("."))


def assemble_coco(
    job_dir: str | Path,
    *,
    stems: Sequence[str] | None = None,
    categories: list[dict] | None = None,
    description: str = "segdeck",
) -> dict | None:
    """The job's COCO document from the per-image sidecars (see :func:`write_coco`).

    Images get ids 1.. in sidecar order, annotations ids 1.. in image order.

    Returns
    -------
    dict or None
        None when there is no sidecar yet.
    """
    job_dir = Path(job_dir)
    files = _sidecars(job_dir, stems)
    if not files:
        return None
    images, annotations = [], []
    ann_id = 1
    for path in files:
        try:
            rec = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue
        image_id = len(images) + 1
        images.append({"id": image_id, "file_name": rec["file_name"], "width": rec["width"], "height": rec["height"]})
        for ann in rec["annotations"]:
            annotations.append({"id": ann_id, "image_id": image_id, **ann})
            ann_id += 1
    return {
        "info": {"description": description, "version": "1.0"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": categories or DEFAULT_CATEGORIES,
    }


def write_regions_table(job_dir: str | Path, doc: dict, dest_name: str = REGIONS_NAME) -> str | None:
    """Write the job-level ``regions.csv``: every image's ``<stem>.regions.csv`` rows.

    Columns: ``image`` (the COCO ``file_name``, relative to the input folder),
    ``annotation_id`` (the ``id`` in ``coco.json``), then the per-image columns
    (label, area, intensity, ratio, x0, y0, x1, y1, cx, cy, scores); see the module
    docstring for units.

    Parameters
    ----------
    job_dir : path-like
    doc : dict
        The COCO document of :func:`assemble_coco`; an image's CSV is found by the flat
        name of its ``file_name`` (:func:`segdeck.core.imageio.flat_item_name`).

    Returns
    -------
    str or None
        ``dest_name`` when written; None when no image has a regions CSV.
    """
    job_dir = Path(job_dir)
    ids: dict[tuple[int, int], int] = {}
    for ann in doc["annotations"]:
        ids[(ann["image_id"], int(ann["label"]))] = ann["id"]
    rows: list[dict] = []
    fields = ["image", "annotation_id", *CSV_FIELDS]
    for img in doc["images"]:
        path = job_dir / output_names(imageio.flat_item_name(img["file_name"]))["csv"]
        try:
            with path.open(newline="", encoding="utf-8") as fh:
                reader = csv.DictReader(fh)
                for key in reader.fieldnames or []:
                    if key not in fields:
                        fields.append(key)
                for row in reader:
                    ann_id = ids.get((img["id"], int(row["label"])), "")
                    rows.append({"image": img["file_name"], "annotation_id": ann_id, **row})
        except (OSError, ValueError):
            continue
    if not rows and not doc["images"]:
        return None
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=fields, lineterminator="\n", restval="")
    writer.writeheader()
    writer.writerows(rows)
    imageio.write_text_atomic(job_dir / dest_name, buf.getvalue())
    return dest_name


def write_coco(
    job_dir: str | Path,
    *,
    stems: Sequence[str] | None = None,
    categories: list[dict] | None = None,
    description: str = "segdeck",
    dest_name: str = COCO_NAME,
) -> str | None:
    """Assemble the job's COCO JSON from the per-image sidecars.

    Parameters
    ----------
    job_dir : path-like
    stems : sequence of str, optional
        Restrict to the sidecars of these flat item names (:meth:`Job.output_stem`), in
        this order; default: every sidecar in ``parts/``, ordered by file name.
    categories : list of dict, optional
        COCO categories (default one ``region`` category, id 1).
    description : str
        ``info.description``.
    dest_name : str
        File name inside ``job_dir``.

    Returns
    -------
    str or None
        ``dest_name`` when written; None when there is no sidecar yet.
    """
    doc = assemble_coco(job_dir, stems=stems, categories=categories, description=description)
    if doc is None:
        return None
    imageio.write_text_atomic(Path(job_dir) / dest_name, json.dumps(doc, ensure_ascii=False))
    return dest_name


def finalize_job(
    job_dir: str | Path,
    *,
    stems: Sequence[str] | None = None,
    description: str = "segdeck",
    export: ExportParams | None = None,
) -> list[str]:
    """The per-job outputs: ``coco.json``, ``regions.csv`` and the chosen exports.

    Returns
    -------
    list of str
        Paths written, relative to ``job_dir`` (an export counts as its folder).

    Raises
    ------
    ExportError
        If an export cannot be written (e.g. ``mask_dtype = "uint8"`` with more than
        255 labels in an image).
    """
    job_dir = Path(job_dir)
    doc = assemble_coco(job_dir, stems=stems, description=description)
    if doc is None:
        return []
    imageio.write_text_atomic(job_dir / COCO_NAME, json.dumps(doc, ensure_ascii=False))
    written = [COCO_NAME]
    table = write_regions_table(job_dir, doc)
    if table:
        written.append(table)
    if export is not None and export.formats:
        from segdeck.core.export import export_job

        for fmt in export.formats:
            export_job(fmt, job_dir, segmentation=export.segmentation, mask_dtype=export.mask_dtype)
            written.append(f"{EXPORT_DIR}/{fmt}")
    return written
