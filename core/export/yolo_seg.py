"""``yolo-seg``: Ultralytics YOLO segmentation labels.

::

    data.yaml                          path (this folder), train / val: images, names
    images/<relative path>             links to the input images (copies where links fail)
    labels/<relative path stem>.txt    one line per connected part of each region:
                                       ``class x1 y1 x2 y2 ...``

Classes are the categories in id order (0-based). Coordinates are the centres of the
region's boundary pixels divided by the image width / height (so ``x * W`` gives the
pixel column back; Ultralytics fills polygons with ``cv2.fillPoly``, which includes
the boundary pixels). YOLO has no holes and no multi-part instances: each part is its
own line, a hole is joined to its outline by a zero-width cut (:mod:`.geometry`), and
the link between the parts of one region is lost.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np

from segdeck.core.export._common import (
    category_index,
    region_masks,
    region_rings,
    relative_stems,
    write_text,
)
from segdeck.core.export.source import ExportError, ExportSource


def label_lines(src: ExportSource, img, classes: dict[int, int]) -> list[str]:
    """The label file lines of one image."""
    lines = []
    size = np.array([img.width, img.height], np.float64)
    for ann, mask, offset in region_masks(src, img):
        cls = classes[int(ann["category_id"])]
        for ring in region_rings(mask, offset, corners=False):
            coords = (ring / size).ravel()
            lines.append(" ".join([str(cls), *(f"{v:.6f}" for v in coords)]))
    return lines


def _yaml_str(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _link(src_path: Path, dest: Path) -> None:
    dest.parent.mkdir(parents=True, exist_ok=True)
    if dest.is_symlink() or dest.exists():
        dest.unlink()
    try:
        os.symlink(src_path, dest)
    except OSError:
        shutil.copy2(src_path, dest)


def write(src: ExportSource, out: Path, options) -> list[Path]:
    """Write labels, image links and ``data.yaml`` into ``out``."""
    classes = category_index(src)
    stems = relative_stems(src)
    written = []
    for img in src.images:
        txt = out / "labels" / f"{stems[img.id]}.txt"
        written.append(write_text(txt, "".join(line + "\n" for line in label_lines(src, img, classes))))
        if img.path is not None and img.path.is_file():
            # Ultralytics finds labels/<x>.txt from images/<x>.<ext>
            name = f"{stems[img.id]}{Path(img.file_name).suffix}"
            try:
                _link(img.path.absolute(), out / "images" / name)
            except OSError as exc:
                raise ExportError(f"cannot link {img.path} into {out / 'images'}: {exc.strerror or exc}") from None
    names = src.category_names()
    yaml = [f"path: {_yaml_str(str(out.absolute()))}", "train: images", "val: images", "names:"]
    yaml += [f"  {classes[cid]}: {_yaml_str(names[cid])}" for cid in sorted(names)]
    written.append(write_text(out / "data.yaml", "\n".join(yaml) + "\n"))
    return written
