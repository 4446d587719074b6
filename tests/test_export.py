"""Exports read back by the real consumers that live in segdeck's venv: pycocotools
(COCO RLE and polygons), OpenCV (label maps, YOLO polygons), the csv module
(job-level regions.csv); the polygon geometry; the ``segdeck export`` command;
annotate folders. Datumaro and labelme: tests/test_export_consumers.py."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest
from pycocotools import mask as mask_utils
from scipy import ndimage

from segdeck.core import imageio
from segdeck.core.export import FORMATS, export_job
from segdeck.core.export.geometry import mask_polygons, polygon_area
from segdeck.core.export.source import ExportError, load_source
from segdeck.core.jobs.runner import job_dir_for, run_job
from segdeck.core.segment import SegmentJob, SegmentParams

ALL = "coco,datumaro-coco,labelme,yolo-seg,masks"


def rings_image(h=90, w=120, seed=0):
    """White background, a dark ring around a mid-gray disc (a region with a hole), a
    red block and a blue blob; mild noise."""
    rng = np.random.default_rng(seed)
    img = np.full((h, w, 3), 245.0)
    yy, xx = np.mgrid[:h, :w]
    r2 = (xx - 40) ** 2 + (yy - 40) ** 2
    img[r2 < 30**2] = (20, 20, 20)
    img[r2 < 12**2] = (130, 130, 130)
    img[60:85, 80:115] = (210, 30, 30)
    img[((xx - 95) ** 2 + (yy - 25) ** 2) < 14**2] = (30, 40, 220)
    img += rng.normal(0, 2, img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """A finished segment job over ``in/a.png`` and an EXIF-rotated ``in/sub/r.jpg``,
    every export written by the job (polygons for COCO)."""
    from PIL import Image

    src = tmp_path_factory.mktemp("exp") / "in"
    (src / "sub").mkdir(parents=True)
    imageio.write_image(src / "a.png", rings_image())
    im = Image.fromarray(rings_image(60, 100, seed=1))
    exif = im.getexif()
    exif[0x0112] = 6  # rotate 90 CW on display: stored 100x60, shown 60x100
    im.save(src / "sub" / "r.jpg", exif=exif.tobytes(), quality=98)
    params = SegmentParams(method="felzenszwalb", felzenszwalb={"scale": 300, "min_size": 30},
                           export={"formats": ALL, "segmentation": "polygons"})
    job_dir = job_dir_for(SegmentJob, params, src, None)
    summary = run_job(SegmentJob(params, src, job_dir))
    assert summary.status == "done" and summary.done == 2, summary
    return job_dir


def _labels(job_dir: Path, name: str) -> np.ndarray:
    return imageio.read_label_map(job_dir / f"{imageio.flat_item_name(name)}.labels.png")


def _coco(path: Path):
    import contextlib
    import io

    from pycocotools.coco import COCO

    with contextlib.redirect_stdout(io.StringIO()):
        return COCO(str(path))


# ---- geometry -------------------------------------------------------------------------
def test_polygons_are_pixel_exact_with_holes(rng):
    h, w = 70, 90
    yy, xx = np.mgrid[:h, :w]
    mask = ((xx - 40) ** 2 + (yy - 35) ** 2) < 25**2
    mask &= ~(((xx - 40) ** 2 + (yy - 35) ** 2) < 7**2)  # a hole
    mask &= ~((np.abs(xx - 28) < 3) & (np.abs(yy - 35) < 2))  # a second hole
    mask[2, 2] = mask[3, 3] = True  # a diagonal two-pixel part
    mask[60:66, 70:80] = True
    mask[62, 74] = False  # a one-pixel hole
    rings = mask_polygons(mask)
    assert len(rings) == 3
    assert sum(polygon_area(r) for r in rings) == mask.sum()
    rle = mask_utils.merge(mask_utils.frPyObjects([r.ravel().astype(float).tolist() for r in rings], h, w))
    np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), mask)
    # centre convention: cv2.fillPoly (Ultralytics) and PIL (labelme) fill them back exactly
    from PIL import Image, ImageDraw

    centre = mask_polygons(mask, corners=False)
    filled = np.zeros((h, w), np.uint8)
    cv2.fillPoly(filled, [r.astype(np.int32) for r in centre], 1)
    np.testing.assert_array_equal(filled.astype(bool), mask)
    pil = Image.new("L", (w, h), 0)
    draw = ImageDraw.Draw(pil)
    for r in centre:
        draw.polygon([tuple(p) for p in r.tolist()], outline=1, fill=1)
    np.testing.assert_array_equal(np.asarray(pil).astype(bool), mask)
    assert all(len(r) >= 3 for r in centre)
    # holes off: outer rings only
    filled_holes = ndimage.binary_fill_holes(mask)
    assert sum(polygon_area(r) for r in mask_polygons(mask, join_holes=False)) == filled_holes.sum()
    assert mask_polygons(np.zeros((4, 4), bool)) == []


def test_random_masks_round_trip_through_pycocotools(rng):
    for _ in range(5):
        mask = ndimage.binary_opening(rng.random((40, 50)) < 0.55)
        rings = mask_polygons(mask)
        if not rings:
            continue
        rle = mask_utils.merge(mask_utils.frPyObjects([r.ravel().astype(float).tolist() for r in rings], 40, 50))
        np.testing.assert_array_equal(mask_utils.decode(rle).astype(bool), mask)


# ---- the job's own outputs ------------------------------------------------------------
def test_job_writes_every_export_and_regions_table(job):
    for fmt in FORMATS:
        assert (job / "export" / fmt).is_dir(), fmt
    coco = json.loads((job / "coco.json").read_text())
    assert [im["file_name"] for im in coco["images"]] == ["a.png", "sub/r.jpg"]
    assert (coco["images"][1]["width"], coco["images"][1]["height"]) == (60, 100)  # EXIF applied
    ann = coco["annotations"][0]
    assert ann["attributes"] == {"label": ann["label"], "intensity": ann["intensity"], "ratio": ann["ratio"]}
    rows = list(csv.DictReader((job / "regions.csv").open(newline="", encoding="utf-8")))
    assert list(rows[0])[:3] == ["image", "annotation_id", "label"]
    assert len(rows) == len(coco["annotations"])
    files = {im["id"]: im["file_name"] for im in coco["images"]}
    by_id = {a["id"]: a for a in coco["annotations"]}
    for row in rows:
        a = by_id[int(row["annotation_id"])]
        assert row["image"] == files[a["image_id"]] and int(row["label"]) == a["label"]
        assert int(row["area"]) == a["area"]
        x0, y0, x1, y1 = (int(row[k]) for k in ("x0", "y0", "x1", "y1"))
        assert [x0, y0, x1 - x0, y1 - y0] == a["bbox"]
        assert float(row["intensity"]) == pytest.approx(a["intensity"], abs=1e-3)
        cx, cy = float(row["cx"]), float(row["cy"])  # centroid (x, y), full resolution
        assert x0 <= cx < x1 and y0 <= cy < y1
    # per-image CSVs stay
    assert (job / "a.png.regions.csv").is_file() and (job / "sub__r.jpg.regions.csv").is_file()


def test_coco_polygons_and_rle_read_by_pycocotools(job, tmp_path):
    rle_dir = export_job("coco", job, tmp_path / "rle")
    for path, poly in ((job / "export" / "coco" / "coco.json", True), (rle_dir / "coco.json", False)):
        api = _coco(path)
        assert len(api.getImgIds()) == 2
        holes = 0
        for img in api.loadImgs(api.getImgIds()):
            labels = _labels(job, img["file_name"])
            assert labels.shape == (img["height"], img["width"])
            for ann in api.loadAnns(api.getAnnIds(imgIds=img["id"])):
                assert isinstance(ann["segmentation"], list) == poly
                region = labels == ann["attributes"]["label"]
                decoded = api.annToMask(ann).astype(bool)
                assert abs(int(decoded.sum()) - int(region.sum())) <= 0.01 * region.sum()
                np.testing.assert_array_equal(decoded, region)  # exact, holes kept
                holes += int(ndimage.binary_fill_holes(region).sum() > region.sum())
        assert holes >= 1  # the ring: the hole survives the polygon export


def test_yolo_polygons_rasterise_back(job):
    out = job / "export" / "yolo-seg"
    yaml = (out / "data.yaml").read_text()
    assert "train: images" in yaml and "0: 'region'" in yaml and str(out) in yaml
    assert (out / "images" / "sub" / "r.jpg").resolve() == (job.parents[1] / "in" / "sub" / "r.jpg").resolve()
    for name, txt in (("a.png", "a.txt"), ("sub/r.jpg", "sub/r.txt")):
        labels = _labels(job, name)
        h, w = labels.shape
        lines = (out / "labels" / txt).read_text().splitlines()
        canvas = np.zeros((h, w), np.int32)
        for line in lines:
            vals = line.split()
            assert vals[0] == "0" and len(vals) % 2 == 1 and len(vals) >= 7
            xy = np.array(vals[1:], float).reshape(-1, 2)
            assert xy.min() >= 0 and xy.max() <= 1
            poly = np.round(xy * [w, h]).astype(np.int32)
            m = np.zeros((h, w), np.uint8)
            cv2.fillPoly(m, [poly], 1)
            # the parts are written per region in label order; find which region this line is
            lab = np.bincount(labels[m.astype(bool)]).argmax()
            canvas[m.astype(bool) & (canvas == 0)] = lab
        for lab in range(1, labels.max() + 1):
            a, b = labels == lab, canvas == lab
            iou = (a & b).sum() / (a | b).sum()
            assert iou >= 0.95, (name, lab, iou)


def test_masks_round_trip_exactly_through_cv2(job, tmp_path):
    out = job / "export" / "masks"
    for name, png in (("a.png", "a.png"), ("sub/r.jpg", "sub/r.png")):
        arr = cv2.imread(str(out / png), cv2.IMREAD_UNCHANGED)
        assert arr.dtype == np.uint16 and arr.ndim == 2  # always 16-bit, whatever the label count
        np.testing.assert_array_equal(arr, _labels(job, name))
    table = list(csv.DictReader((out / "labels.txt").open(newline=""), delimiter="\t"))
    coco = json.loads((job / "coco.json").read_text())
    assert len(table) == len(coco["annotations"])
    assert {(r["image"], int(r["label"]), int(r["annotation_id"])) for r in table} == {
        (coco["images"][a["image_id"] - 1]["file_name"], a["label"], a["id"]) for a in coco["annotations"]}
    small = export_job("masks", job, tmp_path / "m8", mask_dtype="uint8")
    assert cv2.imread(str(small / "a.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint8


def test_masks_uint8_refuses_more_than_255_labels(tmp_path):
    src = tmp_path / "noise"
    src.mkdir()
    imageio.write_image(src / "n.png", np.random.default_rng(0).integers(0, 256, (160, 160, 3), dtype=np.uint8))
    params = SegmentParams(method="slico", slico={"region_size": 5}, overlay={"enabled": False})
    job_dir = job_dir_for(SegmentJob, params, src, None)
    assert run_job(SegmentJob(params, src, job_dir)).status == "done"
    with pytest.raises(ExportError, match=r"n.png: label \d+ does not fit uint8 .*uint16"):
        export_job("masks", job_dir, mask_dtype="uint8")
    out = export_job("masks", job_dir)
    assert cv2.imread(str(out / "n.png"), cv2.IMREAD_UNCHANGED).max() > 255
    # chosen with the job: the run ends in one error line, not a traceback
    p2 = SegmentParams.model_validate({**params.model_dump(), "export": {"formats": ["masks"], "mask_dtype": "uint8"}})
    s = run_job(SegmentJob(p2, src, job_dir))
    assert s.status == "error" and "does not fit uint8" in s.error and "\n" not in s.error


def test_datumaro_layout_and_zip(job):
    import zipfile

    out = job / "export" / "datumaro-coco"
    doc = json.loads((out / "annotations" / "instances_default.json").read_text())
    assert [im["file_name"] for im in doc["images"]] == ["a.png", "sub/r.jpg"]
    assert (out / "images" / "default").is_dir()
    with zipfile.ZipFile(out / "coco-1.0.zip") as zf:
        assert "annotations/instances_default.json" in zf.namelist()
        assert json.loads(zf.read("annotations/instances_default.json")) == doc


def test_labelme_files(job):
    out = job / "export" / "labelme"
    doc = json.loads((out / "sub" / "r.json").read_text())
    assert doc["imagePath"] == "../../../../../in/sub/r.jpg"  # sub, labelme, export, job, in.segdeck
    assert (out / "sub" / doc["imagePath"]).resolve() == (job.parents[1] / "in" / "sub" / "r.jpg").resolve()
    assert (doc["imageWidth"], doc["imageHeight"]) == (60, 100) and doc["imageData"] is None
    shapes = doc["shapes"]
    assert shapes and all(s["shape_type"] == "polygon" and s["label"] == "region" for s in shapes)
    assert all(len(s["points"]) >= 3 for s in shapes)


# ---- options, errors, CLI, annotate folders --------------------------------------------
def test_export_params_parse_from_cli_strings():
    p = SegmentParams.model_validate({"export": {"formats": "coco, masks coco"}})
    assert p.export.formats == ["coco", "masks"]
    from segdeck.core.errors import ParamsError
    from segdeck.core.params import resolve

    with pytest.raises(ParamsError, match="pdf"):
        resolve(SegmentParams, "segment", overrides={"export.formats": "pdf"})


def test_not_exportable_folders(tmp_path):
    with pytest.raises(ExportError, match="not a folder"):
        load_source(tmp_path / "nope")
    with pytest.raises(ExportError, match="not a segdeck job or annotate folder"):
        load_source(tmp_path)
    (tmp_path / "job.toml").write_text('job = "segment"\ninput = "/x"\n')
    with pytest.raises(ExportError, match="no finished image yet"):
        load_source(tmp_path)
    with pytest.raises(ExportError, match="unknown export format"):
        export_job("pdf", tmp_path)


def test_cli_export(job, tmp_path):
    def cli(*args):
        return subprocess.run([sys.executable, "-m", "segdeck", *args], capture_output=True, text=True, timeout=120)

    r = cli("export", "coco", str(job), "--out", str(tmp_path / "c"), "--polygons")
    assert r.returncode == 0, r.stderr
    assert r.stdout.splitlines()[-1] == str(tmp_path / "c")
    assert isinstance(json.loads((tmp_path / "c" / "coco.json").read_text())["annotations"][0]["segmentation"], list)
    r = cli("export", "masks", str(tmp_path))
    assert r.returncode == 2 and "not a segdeck job or annotate folder" in r.stderr and "Traceback" not in r.stderr
    r = cli("export", "nope", str(job))
    assert r.returncode == 2 and "invalid choice" in r.stderr
    from segdeck.commands.export import FORMAT_NAMES

    assert tuple(FORMATS) == FORMAT_NAMES


def test_annotate_folder_exports(tmp_path):
    """An annotate folder: label map of colour indices + session; one annotation per colour."""
    root = tmp_path / "photos"
    (root / "d").mkdir(parents=True)
    img_path = root / "d" / "p.png"
    imageio.write_image(img_path, rings_image(50, 60))
    out = tmp_path / "photos.segdeck" / "annotate-slic"
    out.mkdir(parents=True)
    labels = np.zeros((50, 60), np.uint8)
    labels[5:30, 5:30] = 2
    labels[12:20, 12:20] = 0  # a hole
    labels[35:45, 40:58] = 7
    imageio.write_label_map(out / "d__p.png.labels.png", labels)
    np.savez_compressed(out / "d__p.png.session.npz", labels=labels.astype(np.uint16),
                        meta=np.array(json.dumps({"image": str(img_path), "shape": [50, 60]})))
    src = load_source(out)
    assert src.kind == "annotate" and src.image_root == root
    assert [i.file_name for i in src.images] == ["d/p.png"]
    assert [c["name"] for c in src.categories] == ["label-2", "label-7"]
    coco_dir = export_job("coco", out, tmp_path / "coco", segmentation="polygons")
    api = _coco(coco_dir / "coco.json")
    anns = api.loadAnns(api.getAnnIds())
    assert [a["category_id"] for a in anns] == [2, 7]
    for a in anns:
        np.testing.assert_array_equal(api.annToMask(a).astype(bool), labels == a["category_id"])
    masks = export_job("masks", out, tmp_path / "masks")
    np.testing.assert_array_equal(cv2.imread(str(masks / "d" / "p.png"), cv2.IMREAD_UNCHANGED), labels)
    lm = json.loads((export_job("labelme", out, tmp_path / "lm") / "d" / "p.json").read_text())
    assert {s["label"] for s in lm["shapes"]} == {"label-2", "label-7"}
    assert (tmp_path / "lm" / "d" / lm["imagePath"]).resolve() == img_path.resolve()


@pytest.mark.timeout(120)
def test_propagate_job_exports_find_key_named_outputs(tmp_path, monkeypatch):
    """A CSV-driven job names its outputs after the primary key, not the image path:
    the exports ask the job rebuilt from job.toml, so the masks are the job's label
    maps and labelme points at the real image under the spec's root."""
    pytest.importorskip("torch")
    pytest.importorskip("sam2")
    from test_propagate_job import _NearestPropagator, _ref_map, _spec, _write_photo

    from segdeck.core.jobs.runner import run_job
    from segdeck.core.propagate import ReferenceStore, load_project
    from segdeck.core.propagate import job as job_mod
    from segdeck.core.propagate.job import PropagateJob, PropagateParams

    monkeypatch.setattr(job_mod, "open_propagator", lambda *a, **k: _NearestPropagator())
    for n, name in enumerate(["r", "t1", "t2"]):
        _write_photo(tmp_path / "photos" / "x" / f"{name}.jpg", (32, 40), 1, n)
    (tmp_path / "meta.csv").write_text("id,specimen,name\nK-r,x,r\nK-t1,x,t1\nK-t2,x,t2\n")
    spec = _spec(tmp_path)
    proj = load_project(spec)
    group = proj.groups[0]
    store = ReferenceStore(proj.refs_dir)
    for row in proj.sampled_references(group):
        store.save(group, row.key, _ref_map((32, 40)), image=row.relpath)
    params = PropagateParams(device="cpu")
    job_dir = tmp_path / "job"
    summary = run_job(PropagateJob(params, spec, job_dir))
    assert summary.status == "done" and summary.done >= 1, summary.error
    src = load_source(job_dir)
    assert src.images and all(img.labels_path.is_file() for img in src.images)
    assert all(img.path == tmp_path / "photos" / img.file_name for img in src.images)
    masks = export_job("masks", job_dir, tmp_path / "masks")
    for img in src.images:
        got = imageio.read_label_map(masks / f"{Path(img.file_name).with_suffix('')}.png")
        assert np.array_equal(got, imageio.read_label_map(img.labels_path))
    labelme = export_job("labelme", job_dir, tmp_path / "labelme")
    for img in src.images:
        json_path = labelme / f"{Path(img.file_name).with_suffix('')}.json"
        doc = json.loads(json_path.read_text())
        assert (json_path.parent / doc["imagePath"]).resolve() == img.path.resolve()


def test_labelme_shape_description_is_the_region_text(job, tmp_path):
    """A describe job's annotations carry ``description``: labelme / X-AnyLabeling show
    it in the shape's own description field, not only in attributes."""
    import shutil

    copy = tmp_path / "job"
    shutil.copytree(job, copy, ignore=shutil.ignore_patterns("export"))
    doc = json.loads((copy / "coco.json").read_text())
    first = doc["annotations"][0]
    first["description"] = "a red ring on grey"
    (copy / "coco.json").write_text(json.dumps(doc))
    out = export_job("labelme", copy, tmp_path / "lm")
    shapes = [s for p in out.rglob("*.json") for s in json.loads(p.read_text())["shapes"]]
    described = [s for s in shapes if s["group_id"] == first["id"]]
    assert described and all(s["description"] == "a red ring on grey" for s in described)
    assert all(s["description"] == "" for s in shapes if s["group_id"] != first["id"])
