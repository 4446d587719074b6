"""``masks``: one label map PNG per image and a ``labels.txt`` table.

``<relative path stem>.png`` (``a/b.jpg`` -> ``a/b.png``, the name labelme's and most
tools' mask import look for), single channel, **always uint16** (``mask_dtype =
"uint8"`` on request, refused with a clear error for an image with labels above 255),
0 = background. Read it with ``cv2.imread(path, cv2.IMREAD_UNCHANGED)`` or PIL; the
default ``cv2.imread`` flags would turn it into 8-bit BGR.

The pixel values are the job's label map values (``segment``: region labels 1..N;
``automask``: mask labels 1..N, smaller masks drawn over larger ones; ``annotate``: the
painted colour index). ``labels.txt`` is tab-separated with a header:
``image  label  annotation_id  category``, one row per label of each image, the
``annotation_id`` being the id in the job's ``coco.json``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from segdeck.core.export._common import relative_stems, write_text
from segdeck.core.export.source import ExportError, ExportSource

TABLE = "labels.txt"


def write(src: ExportSource, out: Path, options) -> list[Path]:
    """Write the label maps and ``labels.txt`` into ``out``."""
    from segdeck.core import imageio

    dtype = np.uint8 if options.mask_dtype == "uint8" else np.uint16
    names = src.category_names()
    stems = relative_stems(src)
    rows = ["image\tlabel\tannotation_id\tcategory"]
    written = []
    for img in src.images:
        labels = img.read_labels()
        top = int(labels.max()) if labels.size else 0
        if top > np.iinfo(dtype).max:
            raise ExportError(
                f"{img.file_name}: label {top} does not fit {options.mask_dtype} (at most {np.iinfo(dtype).max}); "
                "export masks as uint16"
            )
        dest = out / f"{stems[img.id]}.png"
        try:
            dest.parent.mkdir(parents=True, exist_ok=True)
            written.append(imageio.write_image(dest, labels.astype(dtype)))
        except (OSError, imageio.ImageError) as exc:
            raise ExportError(f"cannot write {dest}: {exc}") from None
        for ann in sorted(img.annotations, key=lambda a: int(a["label"])):
            cat = names.get(int(ann["category_id"]), str(ann["category_id"]))
            rows.append(f"{img.file_name}\t{int(ann['label'])}\t{int(ann['id'])}\t{cat}")
    written.append(write_text(out / TABLE, "\n".join(rows) + "\n"))
    return written
