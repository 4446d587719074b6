"""``coco``: COCO instances JSON, RLE or polygons, segdeck's statistics in ``attributes``.

RLE (default) is the job's own segmentation, exact (``automask`` masks keep their
overlaps). Polygons are pixel-edge outlines (:mod:`.geometry`, ``corners=True``), one
ring per connected part with holes joined in by a zero-width cut, so pycocotools
rasterises them back to the same pixels; ``area`` and ``bbox`` stay the mask's pixel
count and box. Polygons lose nothing pycocotools can see; editors show the cut.

Every annotation has ``attributes`` (what CVAT and Datumaro keep on import) holding
segdeck's extra fields: ``label`` (the region's value in the label map), ``intensity``,
``ratio`` and the scores (``predicted_iou``, ``stability_score``); they stay top-level
too, as in the job's ``coco.json``.
"""

from __future__ import annotations

from pathlib import Path

from segdeck.core.export._common import region_masks, region_rings, write_json
from segdeck.core.export.source import ExportSource, extra_fields

NAME = "coco.json"


def coco_document(src: ExportSource, segmentation: str = "rle") -> dict:
    """The COCO document of an export source.

    Parameters
    ----------
    src : ExportSource
    segmentation : {"rle", "polygons"}

    Returns
    -------
    dict
        ``images`` (``file_name`` relative to the image root, ``width``, ``height``),
        ``annotations`` (ids as in the job's ``coco.json``), ``categories``.
    """
    images, annotations = [], []
    for img in src.images:
        images.append({"id": img.id, "file_name": img.file_name, "width": img.width, "height": img.height})
        polys: dict[int, list[list[float]]] = {}
        if segmentation == "polygons":
            for ann, mask, offset in region_masks(src, img):
                polys[ann["id"]] = [r.ravel().astype(float).tolist() for r in region_rings(mask, offset, corners=True)]
        for ann in img.annotations:
            out = {k: ann[k] for k in ("id", "image_id", "category_id") if k in ann}
            out["image_id"] = img.id
            out["segmentation"] = polys.get(ann["id"], []) if segmentation == "polygons" else ann["segmentation"]
            out["area"] = ann["area"]
            out["bbox"] = ann["bbox"]
            out["iscrowd"] = 0
            if "score" in ann:
                out["score"] = ann["score"]
            extras = extra_fields(ann)
            out.update(extras)
            out["attributes"] = {**ann.get("attributes", {}), **extras}
            annotations.append(out)
    return {
        "info": {"description": f"segdeck {src.kind} export ({src.job_dir.name})", "version": "1.0"},
        "licenses": [],
        "images": images,
        "annotations": annotations,
        "categories": src.categories,
    }


def write(src: ExportSource, out: Path, options) -> list[Path]:
    """Write ``coco.json`` into ``out``."""
    return [write_json(out / NAME, coco_document(src, options.segmentation))]
