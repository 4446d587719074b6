"""``labelme``: one labelme / X-AnyLabeling JSON per image.

``<relative path stem>.json`` (the image's path under the image root without its
suffix, e.g. ``a/b.json`` for ``a/b.jpg``), with ``imagePath`` relative to the JSON
file, ``imageData`` null (the tools read the image), ``imageHeight`` / ``imageWidth``
after EXIF orientation (as labelme checks them), and one ``polygon`` shape per
connected part of each region: ``label`` the category name, ``group_id`` the
annotation id (parts of one region share it), ``attributes`` segdeck's statistics.

Points are ``[x, y]`` on the centres of the region's boundary pixels, the convention
labelme's ``shape_to_mask`` (PIL) and X-AnyLabeling fill back to the same pixels; a
hole is joined to its outline by a zero-width cut (:mod:`.geometry`). Overlaps between
``automask`` masks are kept (each shape is a whole mask).
"""

from __future__ import annotations

import os
from pathlib import Path

from segdeck.core.export._common import region_masks, region_rings, relative_stems, write_json
from segdeck.core.export.source import ExportSource, extra_fields

#: labelme file-format version written (the JSON layout of labelme 5, read by labelme
#: and X-AnyLabeling alike)
VERSION = "5.5.0"


def image_document(src: ExportSource, img, json_path: Path) -> dict:
    """The labelme JSON of one image, for a file at ``json_path``."""
    names = src.category_names()
    shapes = []
    for ann, mask, offset in region_masks(src, img):
        attrs = {**ann.get("attributes", {}), **extra_fields(ann)}
        for ring in region_rings(mask, offset, corners=False):
            shape = {
                "label": names.get(int(ann["category_id"]), str(ann["category_id"])),
                "points": ring.astype(float).tolist(),
                "group_id": int(ann["id"]),
                "description": str(ann.get("description") or ""),  # describe: the region's text
                "shape_type": "polygon",
                "flags": {},
                "mask": None,
                "attributes": attrs,
            }
            if "score" in ann:
                shape["score"] = float(ann["score"])
            shapes.append(shape)
    if img.path is not None:
        image_path = Path(os.path.relpath(img.path, json_path.parent)).as_posix()
    else:
        image_path = Path(img.file_name).name
    return {
        "version": VERSION,
        "flags": {},
        "shapes": shapes,
        "imagePath": image_path,
        "imageData": None,
        "imageHeight": img.height,
        "imageWidth": img.width,
    }


def write(src: ExportSource, out: Path, options) -> list[Path]:
    """Write one JSON per image into ``out``."""
    stems = relative_stems(src)
    written = []
    for img in src.images:
        path = out / f"{stems[img.id]}.json"
        written.append(write_json(path, image_document(src, img, path)))
    return written
