"""``datumaro-coco``: the COCO layout Datumaro and CVAT import.

::

    annotations/instances_default.json   COCO instances (``coco`` export, subset "default")
    images/default/<file_name>           the images (only with the ``images`` option;
                                         the folder is always there: Datumaro needs it)
    coco-1.0.zip                         the two above, for CVAT's "Upload annotations"
                                         / "Import dataset" with format "COCO 1.0"

``file_name`` is the path relative to the image root (the job's input folder), which
is how CVAT matches annotations to a task's images and how Datumaro finds them under
``images/default/``. Without images, Datumaro still imports every item with its size
from the JSON (``width`` / ``height`` after EXIF orientation).
"""

from __future__ import annotations

import shutil
import zipfile
from pathlib import Path

from segdeck.core.export._common import write_json
from segdeck.core.export.coco import coco_document
from segdeck.core.export.source import ExportError, ExportSource

ANNOTATIONS = "annotations/instances_default.json"
IMAGES = "images/default"
ZIP_NAME = "coco-1.0.zip"


def write(src: ExportSource, out: Path, options) -> list[Path]:
    """Write the layout and the zip into ``out``."""
    written = [write_json(out / ANNOTATIONS, coco_document(src, options.segmentation))]
    members = [(written[0], ANNOTATIONS)]
    try:
        (out / IMAGES).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportError(f"cannot create {out / IMAGES}: {exc.strerror or exc}") from None
    if options.images:
        for img in src.images:
            if img.path is None or not img.path.is_file():
                raise ExportError(f"image {img.file_name} not found at {img.path}; export without --images")
            dest = out / IMAGES / img.file_name
            try:
                dest.parent.mkdir(parents=True, exist_ok=True)
                shutil.copy2(img.path, dest)
            except OSError as exc:
                raise ExportError(f"cannot copy {img.path} to {dest}: {exc.strerror or exc}") from None
            written.append(dest)
            members.append((dest, f"{IMAGES}/{img.file_name}"))
    zpath = out / ZIP_NAME
    tmp = zpath.with_name(f".{ZIP_NAME}.tmp")
    try:
        with zipfile.ZipFile(tmp, "w", compression=zipfile.ZIP_DEFLATED) as zf:
            zf.writestr("images/", b"")
            zf.writestr(f"{IMAGES}/", b"")
            for path, arcname in members:
                zf.write(path, arcname)
        tmp.replace(zpath)
    except OSError as exc:
        tmp.unlink(missing_ok=True)
        raise ExportError(f"cannot write {zpath}: {exc.strerror or exc}") from None
    written.append(zpath)
    return written
