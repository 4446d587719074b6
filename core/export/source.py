"""Read a finished segdeck output folder into one in-memory form the exporters share.

Two kinds of folder are understood:

* a job folder of a job that writes COCO (``segment``, ``automask``, ``describe``,
  ``propagate``: ``job.toml`` + ``coco.json``, or the per-image COCO sidecars in
  ``parts/`` when ``coco.json`` is not assembled yet): the annotations are the job's
  COCO annotations (RLE; ``automask`` masks may overlap), the label maps its
  ``<stem>.labels.png`` (the stem and the image path asked of the job rebuilt from
  ``job.toml``, so a CSV-driven job's key-named outputs are found), the image root its
  input folder (or the images' common folder);
* an ``annotate`` session folder (``<stem>.labels.png`` + ``<stem>.session.npz``): one
  annotation per painted colour index ``k`` (category ``label-k``), its RLE taken from the
  label map; image paths from the sessions, the image root the folder whose
  ``.segdeck`` sibling holds the session folder (else the images' common folder).
"""

from __future__ import annotations

import json
import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segdeck.core.errors import SegdeckError

#: Jobs whose folders hold no regions (every other job writes ``coco.json``).
NO_REGIONS = ("cluster",)

#: Annotation keys that are COCO's own; every other key is a segdeck statistic or score.
COCO_KEYS = ("id", "image_id", "category_id", "segmentation", "area", "bbox", "iscrowd", "score", "attributes")


class ExportError(SegdeckError):
    """A folder that cannot be exported (not a finished job, missing files, bad option)."""


@dataclass
class ExportImage:
    """One image of an export source.

    Attributes
    ----------
    id : int
        COCO image id (1-based).
    file_name : str
        Path relative to the image root, POSIX separators.
    path : Path or None
        Absolute path of the image file (None when the root is unknown).
    width, height : int
        Size in pixels after EXIF orientation (what segdeck segmented).
    labels_path : Path or None
        The label map PNG of this image (0 = background).
    annotations : list of dict
        COCO annotations (``segmentation`` is compressed RLE with ``counts`` a str).
    """

    id: int
    file_name: str
    path: Path | None
    width: int
    height: int
    labels_path: Path | None
    annotations: list[dict] = field(default_factory=list)

    def read_labels(self) -> np.ndarray:
        """The label map, (H, W) int32.

        Raises
        ------
        ExportError
            If the label map is missing or unreadable.
        """
        from segdeck.core import imageio

        if self.labels_path is None or not self.labels_path.is_file():
            raise ExportError(f"{self.file_name}: label map {self.labels_path} is missing")
        try:
            return imageio.read_label_map(self.labels_path)
        except SegdeckError as exc:
            raise ExportError(str(exc)) from None


@dataclass
class ExportSource:
    """A finished output folder, ready to export.

    Attributes
    ----------
    job_dir : Path
    kind : str
        ``segment``, ``automask`` or ``annotate``.
    image_root : Path or None
        Folder the image ``file_name`` values are relative to.
    categories : list of dict
        COCO categories (``id``, ``name``, ``supercategory``).
    images : list of ExportImage
    """

    job_dir: Path
    kind: str
    image_root: Path | None
    categories: list[dict]
    images: list[ExportImage]

    def category_names(self) -> dict[int, str]:
        """Category id -> name."""
        return {int(c["id"]): str(c["name"]) for c in self.categories}


def annotation_mask(ann: dict) -> np.ndarray:
    """Decode an annotation's RLE (pycocotools) to a bool (H, W) mask."""
    from pycocotools import mask as mask_utils

    seg = ann["segmentation"]
    counts = seg["counts"]
    rle = {"size": seg["size"], "counts": counts.encode("ascii") if isinstance(counts, str) else counts}
    return mask_utils.decode(rle).astype(bool)


def extra_fields(ann: dict) -> dict:
    """The segdeck statistics / scores of an annotation (every non-COCO key)."""
    return {k: v for k, v in ann.items() if k not in COCO_KEYS}


def _load_job(job_dir: Path, meta: dict) -> ExportSource:
    from segdeck.core import outputs
    from segdeck.core.imageio import flat_item_name

    kind = str(meta.get("job", ""))
    if kind in NO_REGIONS:
        raise ExportError(f"{job_dir}: a {kind} job has no regions to export "
                          "(jobs that write coco.json do: segment, automask, describe, propagate; "
                          "and annotate folders)")
    coco_path = job_dir / outputs.COCO_NAME
    if coco_path.is_file():
        try:
            doc = json.loads(coco_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ExportError(f"{coco_path}: cannot read ({exc})") from None
    else:
        doc = outputs.assemble_coco(job_dir)
        if doc is None:
            raise ExportError(f"{job_dir}: no finished image yet (neither coco.json nor parts/*.coco.json)")
    inp = Path(str(meta.get("input", "")))
    root = inp.parent if inp.suffix and not inp.is_dir() else inp
    named = _job_names(job_dir)
    by_tail = _ByTail(named)
    by_image: dict[int, list[dict]] = {}
    for ann in doc.get("annotations", []):
        by_image.setdefault(int(ann["image_id"]), []).append(ann)
    images = []
    for rec in doc.get("images", []):
        name = str(rec["file_name"])
        # the job's own names (a CSV-driven job: item = the record's key, outputs named
        # after it, the image under the spec's root); else by the flattened file name
        found = named.get(str(rec.get("key", name))) or by_tail(name)
        stem, path = found or (flat_item_name(name), root / name)
        images.append(ExportImage(
            id=int(rec["id"]), file_name=name, path=path, width=int(rec["width"]),
            height=int(rec["height"]), labels_path=job_dir / outputs.output_names(stem)["labels"],
            annotations=by_image.get(int(rec["id"]), []),
        ))

    categories = doc.get("categories") or outputs.DEFAULT_CATEGORIES
    return ExportSource(job_dir, kind, root, categories, images)


def _job_names(job_dir: Path) -> dict[str, tuple[str, Path]]:
    """item -> (output stem, image path), asked of the job rebuilt from ``job.toml``;
    empty when it cannot be rebuilt (an old folder, a job no longer registered)."""
    from segdeck.core.jobs.registry import rebuild_job

    try:
        job = rebuild_job(job_dir)
        return {str(item): (job.output_stem(item), job.item_path(item)) for item in job.list_items()}
    except Exception:  # noqa: BLE001 - fall back to names (the folder layout of image jobs)
        return {}


class _ByTail:
    """Find the job entry whose image path ends with a COCO ``file_name`` (relative to a
    root the job knows, e.g. a project spec's image root): one index per path depth."""

    def __init__(self, named: dict[str, tuple[str, Path]]):
        self.named = named
        self.index: dict[int, dict[tuple[str, ...], tuple[str, Path] | None]] = {}

    def __call__(self, file_name: str) -> tuple[str, Path] | None:
        parts = Path(file_name).parts
        n = len(parts)
        if n not in self.index:
            table: dict[tuple[str, ...], tuple[str, Path] | None] = {}
            for v in self.named.values():
                tail = v[1].parts[-n:]
                table[tail] = None if tail in table else v  # ambiguous: no match
            self.index[n] = table
        return self.index[n].get(parts)


def _annotate_root(job_dir: Path, paths: list[Path]) -> Path | None:
    parent = job_dir.resolve().parent
    if parent.name.endswith(".segdeck"):
        candidate = parent.with_name(parent.name[: -len(".segdeck")])
        if candidate.is_dir() and all(p.is_relative_to(candidate) for p in paths):
            return candidate
        if candidate.is_file() and len(paths) == 1:
            return candidate.parent
    if not paths:
        return None
    return Path(os.path.commonpath([str(p.parent) for p in paths]))


def _load_annotate(job_dir: Path) -> ExportSource:
    from segdeck.core import imageio
    from segdeck.core.outputs import label_map_rles

    sessions = sorted(job_dir.glob("*.session.npz"))
    entries = []
    for spath in sessions:
        stem = spath.name[: -len(".session.npz")]
        try:
            with np.load(spath) as z:
                meta = json.loads(str(z["meta"]))
        except (OSError, ValueError, KeyError) as exc:
            raise ExportError(f"{spath}: not a readable annotate session ({exc})") from None
        labels_path = job_dir / f"{stem}.labels.png"
        if "image" not in meta or not labels_path.is_file():
            continue
        entries.append((Path(meta["image"]).absolute(), labels_path))
    root = _annotate_root(job_dir, [p for p, _ in entries])
    images, used = [], set()
    for path, labels_path in entries:
        labels = imageio.read_label_map(labels_path)
        h, w = labels.shape
        ids = [int(v) for v in np.unique(labels) if v != 0]
        used.update(ids)
        rles = label_map_rles(labels, ids)
        name = path.relative_to(root).as_posix() if root and path.is_relative_to(root) else path.name
        anns = []
        for k, rle in zip(ids, rles, strict=True):
            anns.append({"category_id": k, "segmentation": rle, "iscrowd": 0, "label": k})
        images.append(ExportImage(len(images) + 1, name, path, w, h, labels_path, anns))
    _fill_area_bbox(images)
    categories = [{"id": k, "name": f"label-{k}", "supercategory": "label"} for k in sorted(used)]
    return ExportSource(job_dir, "annotate", root, categories, images)


def _fill_area_bbox(images: list[ExportImage]) -> None:
    from pycocotools import mask as mask_utils

    next_id = 1
    for img in images:
        for ann in img.annotations:
            enc = {"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode("ascii")}
            ann["id"] = next_id
            ann["image_id"] = img.id
            ann["area"] = int(mask_utils.area(enc))
            ann["bbox"] = [float(v) for v in mask_utils.toBbox(enc)]
            next_id += 1


def load_source(job_dir: str | Path) -> ExportSource:
    """Read a finished ``segment`` / ``automask`` job folder or an ``annotate`` folder.

    Parameters
    ----------
    job_dir : path-like

    Returns
    -------
    ExportSource

    Raises
    ------
    ExportError
        Not a folder, not a segdeck output folder, or nothing finished in it yet.
    """
    job_dir = Path(job_dir)
    if not job_dir.is_dir():
        raise ExportError(f"{job_dir} is not a folder")
    toml_path = job_dir / "job.toml"
    if toml_path.is_file():
        try:
            meta = tomllib.loads(toml_path.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
            raise ExportError(f"{toml_path}: cannot read ({exc})") from None
        return _load_job(job_dir, meta)
    if any(job_dir.glob("*.session.npz")):
        src = _load_annotate(job_dir)
        if not src.images:
            raise ExportError(f"{job_dir}: no saved annotation (label map + session) yet")
        return src
    raise ExportError(f"{job_dir} is not a segdeck job or annotate folder (no job.toml, no *.session.npz)")
