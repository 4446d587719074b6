"""Per-image outputs of the ``describe`` job, and reading them back for a resume.

For an item with flat name ``<stem>`` (all written atomically, the COCO sidecar last):

* ``<stem>.labels.png``: the label map, region ``k`` (``D<k>``) has label ``k``, 0 is
  unclaimed (regions never overlap);
* ``<stem>.regions.json``: the segmentation record: image size and sha256, the model,
  every region (index, source, point, box, area, score) with its description, error and
  seconds. With the label map it is what a re-run reads back instead of segmenting
  again (:func:`read_saved`);
* ``<stem>.descriptions.jsonl``: one JSON record per region (machine-readable):
  ``image``, ``region`` (``"D7"``), ``index``, ``source``, ``point`` ``[x, y]``,
  ``box`` XYXY (last pixel exclusive), ``area`` (pixels), ``score`` (SAM's predicted
  IoU), ``description`` (or null), ``error`` (or null);
* ``<stem>.report.txt``: the same as text, one block per region;
* ``<stem>.described.jpg``: the visualisation: regions tinted and outlined, boxes
  numbered D1, D2, ..., the prompt points, and a legend panel with the descriptions;
* ``<stem>.regions.csv`` and ``parts/<stem>.coco.json``: as the other region jobs
  (:mod:`segdeck.core.outputs`), each COCO annotation with ``description``,
  ``region``, ``source``, ``point`` (also under ``attributes``, which CVAT keeps).

Coordinates are pixels of the image after EXIF orientation; points ``(x, y)``.
"""

from __future__ import annotations

import hashlib
import json
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from segdeck.core import imageio
from segdeck.core.describe.sweep import Region

FORMAT_VERSION = 1


@dataclass(frozen=True)
class RegionText:
    """The description state of one region: ``text`` (None when missing), ``error``
    (one line, None when none), ``seconds`` spent."""

    text: str | None = None
    error: str | None = None
    seconds: float = 0.0


@dataclass
class Saved:
    """What an earlier run left for an item (see :func:`read_saved`)."""

    labels: np.ndarray
    regions: list[Region]
    texts: dict[int, RegionText] = field(default_factory=dict)
    points: int = 0


def names(stem: str) -> dict[str, str]:
    """Relative output paths of one item: labels, regions, jsonl, report, visual, csv, part."""
    return {
        "labels": f"{stem}.labels.png",
        "regions": f"{stem}.regions.json",
        "jsonl": f"{stem}.descriptions.jsonl",
        "report": f"{stem}.report.txt",
        "visual": f"{stem}.described.jpg",
        "csv": f"{stem}.regions.csv",
        "part": f"parts/{stem}.coco.json",
    }


def image_sha256(image: np.ndarray) -> str:
    """sha256 (hex) over an image's shape, dtype and pixels: a saved segmentation belongs
    to exactly this image."""
    h = hashlib.sha256(f"{image.shape}:{image.dtype}".encode())
    h.update(np.ascontiguousarray(image).data)
    return h.hexdigest()


def region_records(item: str, regions: Sequence[Region], texts: Mapping[int, RegionText]) -> list[dict]:
    """One JSON-ready record per region (the ``descriptions.jsonl`` lines)."""
    out = []
    for r in regions:
        t = texts.get(r.index, RegionText())
        out.append({
            "image": item, "region": r.name, "index": r.index, "source": r.source, "point": list(r.point),
            "box": list(r.box), "area": r.area, "score": round(r.score, 6), "description": t.text, "error": t.error,
        })
    return out


def read_saved(job_dir: Path, stem: str, image: np.ndarray) -> Saved | None:
    """The segmentation (and descriptions) an earlier run wrote for this item, or None
    when there is none or it does not belong to ``image`` (other size or pixels, a
    damaged or missing file).

    Parameters
    ----------
    job_dir : Path
    stem : str
        The item's flat output name.
    image : ndarray of shape (H, W, 3), uint8 RGB
        The item's image as loaded now.
    """
    n = names(stem)
    try:
        doc = json.loads((job_dir / n["regions"]).read_text(encoding="utf-8"))
        if doc.get("version") != FORMAT_VERSION or doc.get("image_sha256") != image_sha256(image):
            return None
        labels = imageio.read_label_map(job_dir / n["labels"])
        regions = [Region.from_json(r) for r in doc["regions"]]
        texts = {int(r["index"]): RegionText(r.get("description"), r.get("error"), float(r.get("seconds", 0.0)))
                 for r in doc["regions"]}
    except (OSError, ValueError, KeyError, TypeError, imageio.ImageError):
        return None
    if labels.shape != image.shape[:2]:
        return None
    if [r.index for r in regions] != list(range(1, len(regions) + 1)) or int(labels.max(initial=0)) != len(regions):
        return None
    return Saved(labels=labels, regions=regions, texts=texts, points=int(doc.get("points", 0)))


def text_report(item: str, shape: tuple[int, ...], regions: Sequence[Region], texts: Mapping[int, RegionText],
                header: str = "") -> str:
    """The human-readable report: a header, then one block per region (item, source,
    point, box, area, score, description or error)."""
    h, w = shape[:2]
    lines = [f"segdeck describe: {item}", f"image: {w} x {h} pixels, {len(regions)} regions"]
    if header:
        lines.append(header)
    for r in regions:
        t = texts.get(r.index, RegionText())
        lines += [
            "",
            f"--- {r.name} (source: {r.source}) ---",
            f"  point (x, y): ({r.point[0]}, {r.point[1]})",
            f"  box (x1, y1, x2, y2; x2, y2 exclusive): [{', '.join(map(str, r.box))}]",
            f"  area: {r.area} pixels, SAM score {r.score:.3f}",
        ]
        if t.text is not None:
            lines.append("  description:")
            for para in t.text.splitlines() or [""]:
                wrapped = textwrap.wrap(para, 96) or [""]
                lines += ["    " + s for s in wrapped]
        elif t.error is not None:
            lines.append(f"  description: none ({t.error})")
        else:
            lines.append("  description: none")
    return "\n".join(lines) + "\n"


def draw_visual(image: np.ndarray, labels: np.ndarray, regions: Sequence[Region],
                texts: Mapping[int, RegionText], *, legend: bool = True, legend_chars: int = 60) -> np.ndarray:
    """The annotated visualisation: tinted regions, outlines, numbered boxes (D1, D2, ...),
    prompt points, and a legend panel on the right.

    Parameters
    ----------
    image : ndarray of shape (H, W, 3), uint8 RGB
    labels : ndarray of shape (H, W), int
        Region ``k`` has label ``k``.
    regions : sequence of Region
    texts : mapping of int to RegionText
    legend : bool
        Add the legend panel (one line per region: ``D<k> source: description``, cut to
        ``legend_chars`` characters).

    Returns
    -------
    ndarray of shape (H', W', 3), uint8 RGB
        ``H' >= H``, ``W' >= W`` (the legend widens and may heighten the canvas).
    """
    import cv2

    from segdeck.core.render import auto_thickness, boundaries, label_colors

    canvas = image.copy()
    h, w = labels.shape
    n = int(labels.max(initial=0))
    colors = label_colors(max(n, 1), seed=1)
    if n:
        tint = colors[labels]
        blend = cv2.addWeighted(canvas, 0.65, tint, 0.35, 0.0)
        np.copyto(canvas, blend, where=(labels > 0)[:, :, None])
        canvas[boundaries(labels, auto_thickness(labels.shape))] = (255, 255, 255)
    scale = max(0.35, min(1.2, max(h, w) / 1400))
    thick = max(1, round(scale * 2))
    for r in regions:
        c = tuple(int(v) for v in colors[r.index])
        x1, y1, x2, y2 = r.box
        cv2.rectangle(canvas, (x1, y1), (x2 - 1, y2 - 1), c, thick)
        cv2.circle(canvas, r.point, max(2, thick + 1), (255, 255, 255), -1)
        cv2.circle(canvas, r.point, max(2, thick + 1), (0, 0, 0), 1)
        (tw, th), base = cv2.getTextSize(r.name, cv2.FONT_HERSHEY_SIMPLEX, scale, thick)
        ty = y1 + th + 2 if y1 < th + 4 else y1 - 3
        cv2.rectangle(canvas, (x1, ty - th - 2), (x1 + tw + 2, ty + base - 1), c, -1)
        cv2.putText(canvas, r.name, (x1 + 1, ty), cv2.FONT_HERSHEY_SIMPLEX, scale, (0, 0, 0), thick, cv2.LINE_AA)
    if not legend:
        return canvas
    lscale = 0.45
    (cw, lh), _ = cv2.getTextSize("M", cv2.FONT_HERSHEY_SIMPLEX, lscale, 1)
    step = lh + 8
    panel_w = 24 + cw * legend_chars
    panel_h = max(h, 12 + step * (len(regions) + 1))
    out = np.full((panel_h, w + panel_w, 3), 255, np.uint8)
    out[:h, :w] = canvas
    y = 8 + lh
    cv2.putText(out, f"{len(regions)} regions", (w + 8, y), cv2.FONT_HERSHEY_SIMPLEX, lscale, (0, 0, 0), 1, cv2.LINE_AA)
    for r in regions:
        y += step
        c = tuple(int(v) for v in colors[r.index])
        cv2.rectangle(out, (w + 8, y - lh), (w + 8 + lh, y), c, -1)
        t = texts.get(r.index, RegionText())
        what = t.text if t.text is not None else (f"[{t.error}]" if t.error else "")
        line = " ".join(f"{r.name} {r.source}: {what}".split())
        if len(line) > legend_chars:
            line = line[: legend_chars - 3] + "..."
        # Hershey fonts draw ASCII only
        line = line.encode("ascii", "replace").decode("ascii")
        cv2.putText(out, line, (w + 14 + lh, y), cv2.FONT_HERSHEY_SIMPLEX, lscale, (0, 0, 0), 1, cv2.LINE_AA)
    return out


def write_item(job_dir: Path, stem: str, item: str, image: np.ndarray, labels: np.ndarray,
               regions: Sequence[Region], texts: Mapping[int, RegionText], *, meta: dict,
               legend: bool = True) -> list[str]:
    """Write every per-item output (see the module docstring); the COCO sidecar last.

    Parameters
    ----------
    job_dir : Path
    stem : str
        Flat output name.
    item : str
        The item (input path relative to the input), the COCO ``file_name``.
    image : ndarray of shape (H, W, 3), uint8 RGB
    labels : ndarray of shape (H, W), int
        Region ``k`` has label ``k``.
    regions : sequence of Region
    texts : mapping of int to RegionText
    meta : dict
        JSON data stored in ``regions.json`` (model, describer, points proposed).
    legend : bool
        Legend panel on the visualisation.

    Returns
    -------
    list of str
        Paths written, relative to ``job_dir``.

    Raises
    ------
    ImageError
        A file cannot be written.
    """
    from segdeck.core import outputs
    from segdeck.core import regions as R

    n = names(stem)
    written = []
    imageio.write_label_map(job_dir / n["labels"], labels)
    written.append(n["labels"])
    records = region_records(item, regions, texts)
    doc = {
        "version": FORMAT_VERSION, "item": item, "width": int(image.shape[1]), "height": int(image.shape[0]),
        "image_sha256": image_sha256(image), **meta,
        "regions": [{**r.to_json(), "description": texts.get(r.index, RegionText()).text,
                     "error": texts.get(r.index, RegionText()).error,
                     "seconds": round(texts.get(r.index, RegionText()).seconds, 3)} for r in regions],
    }
    imageio.write_text_atomic(job_dir / n["regions"], json.dumps(doc, ensure_ascii=False, indent=1))
    written.append(n["regions"])
    imageio.write_text_atomic(job_dir / n["jsonl"], "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records))
    written.append(n["jsonl"])
    header = ", ".join(f"{k}: {v}" for k, v in meta.items() if isinstance(v, (str, int, float)))
    imageio.write_text_atomic(job_dir / n["report"], text_report(item, image.shape, regions, texts, header))
    written.append(n["report"])
    imageio.write_image(job_dir / n["visual"], draw_visual(image, labels, regions, texts, legend=legend))
    written.append(n["visual"])
    stats = R.label_stats(labels, R.aggregate_map(image), scores={"predicted_iou": np.array([r.score for r in regions])})
    imageio.write_text_atomic(job_dir / n["csv"], outputs.regions_csv(stats))
    written.append(n["csv"])
    rles = outputs.label_map_rles(labels, [r.index for r in regions])
    anns = outputs.coco_annotations(rles, stats)
    for ann, rec in zip(anns, records, strict=True):
        extra = {k: rec[k] for k in ("region", "source", "point", "description")}
        if rec["error"] is not None:
            extra["description_error"] = rec["error"]
        ann.update(extra)
        ann["attributes"].update(extra)
    part = {"file_name": item, "width": int(image.shape[1]), "height": int(image.shape[0]), "annotations": anns}
    imageio.write_text_atomic(job_dir / n["part"], json.dumps(part, ensure_ascii=False))
    written.append(n["part"])
    return written
