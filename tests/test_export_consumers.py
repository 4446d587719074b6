"""Exports read by consumers that cannot share segdeck's venv: Datumaro (the library
behind CVAT's "COCO 1.0" import) and labelme's own ``LabelFile`` loader (labelme pulls
PyQt5 and opencv-python-headless, which would shadow opencv-contrib-python's cv2).

They live in ``.venv-consumers`` (``make consumers``, created once by ``make test``);
the tests find its Python through ``SEGDECK_CONSUMERS_PYTHON`` or at
``<repo>/.venv-consumers/bin/python`` and skip, saying why, where it does not exist.
"""

from __future__ import annotations

import json
import os
import subprocess
import zipfile
from pathlib import Path

import pytest

from segdeck.core import imageio
from segdeck.core.export import export_job
from segdeck.core.jobs.runner import job_dir_for, run_job
from segdeck.core.segment import SegmentJob, SegmentParams

REPO = Path(__file__).resolve().parents[1]


def consumers_python() -> str:
    env = os.environ.get("SEGDECK_CONSUMERS_PYTHON")
    path = Path(env) if env else REPO / ".venv-consumers" / "bin" / "python"
    stamp = path.parents[1] / ".installed"
    if not path.is_file() or not stamp.is_file():
        log = path.parents[1] / "install.log"
        why = f" (install failed: see {log})" if log.is_file() else ""
        pytest.skip(f"consumer venv {path.parents[1]} not created{why}; run `make consumers` (needs PyPI)")
    return str(path)


def run_consumer(code: str, *args: str) -> dict:
    """Run ``code`` with the consumer venv's Python; it prints one JSON object last."""
    r = subprocess.run([consumers_python(), "-c", code, *args], capture_output=True, text=True, timeout=240,
                       env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


DATUMARO = r"""
import json, sys, warnings
warnings.filterwarnings("ignore")
import datumaro as dm
from datumaro.plugins.data_formats.coco.importer import CocoImporter
path = sys.argv[1]
# CVAT's "COCO 1.0" importer: extract the zip, detect with CocoImporter, import coco_instances
detected = dm.Environment().detect_dataset(path)
sources = CocoImporter.find_sources(path)
assert sources, "CocoImporter finds no COCO sources"
ds = dm.Dataset.import_from(path, "coco_instances")
items = {}
for item in ds:
    kinds = {}
    for a in item.annotations:
        kinds[a.type.name] = kinds.get(a.type.name, 0) + 1
    attrs = sorted(item.annotations[0].attributes) if item.annotations else []
    items[item.id] = {"size": list(item.media.size), "kinds": kinds, "attrs": attrs, "subset": item.subset}
print(json.dumps({"detected": detected, "items": items}))
"""

LABELME = r"""
import json, sys
from labelme import LabelFile
out = []
for path in sys.argv[1:]:
    lf = LabelFile(path)
    out.append({"n": len(lf.shapes), "labels": sorted({s["label"] for s in lf.shapes}),
                "types": sorted({s["shape_type"] for s in lf.shapes}), "bytes": len(lf.imageData),
                "group_ids": sorted({s["group_id"] for s in lf.shapes}),
                "attrs": sorted(lf.shapes[0]["other_data"].get("attributes", {})) if lf.shapes else []})
print(json.dumps(out))
"""


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """A finished segment job over ``a.png`` and an EXIF-rotated ``sub/r.jpg``."""
    from PIL import Image
    from test_export import rings_image

    consumers_python()  # skip before running the job when the venv is missing
    src = tmp_path_factory.mktemp("cons") / "in"
    (src / "sub").mkdir(parents=True)
    imageio.write_image(src / "a.png", rings_image())
    im = Image.fromarray(rings_image(60, 100, seed=1))
    exif = im.getexif()
    exif[0x0112] = 6
    im.save(src / "sub" / "r.jpg", exif=exif.tobytes(), quality=98)
    params = SegmentParams(method="felzenszwalb", felzenszwalb={"scale": 300, "min_size": 30})
    job_dir = job_dir_for(SegmentJob, params, src, None)
    assert run_job(SegmentJob(params, src, job_dir)).status == "done"
    return job_dir


@pytest.mark.parametrize("segmentation", ["rle", "polygons"])
def test_datumaro_imports_the_cvat_zip(job, tmp_path, segmentation):
    coco = json.loads((job / "coco.json").read_text())
    n_ann = {im["file_name"]: sum(a["image_id"] == im["id"] for a in coco["annotations"]) for im in coco["images"]}
    out = export_job("datumaro-coco", job, tmp_path / "dm", segmentation=segmentation)
    # what CVAT does with an uploaded "COCO 1.0" zip: extract, then Datumaro's coco_instances importer
    unpacked = tmp_path / "unzipped"
    with zipfile.ZipFile(out / "coco-1.0.zip") as zf:
        zf.extractall(unpacked)
    res = run_consumer(DATUMARO, str(unpacked))
    assert "coco_instances" in res["detected"]
    items = res["items"]
    assert sorted(items) == ["a", "sub/r"]  # item count; ids are the relative paths
    assert items["sub/r"]["size"] == [100, 60]  # (H, W) after EXIF orientation
    kind = "mask" if segmentation == "rle" else "polygon"
    for name, item in (("a.png", items["a"]), ("sub/r.jpg", items["sub/r"])):
        assert item["subset"] == "default"
        # one mask per region (polygon mode: one polygon per connected part, holes joined)
        assert item["kinds"][kind] >= n_ann[name] if kind == "polygon" else item["kinds"][kind] == n_ann[name]
        assert item["kinds"]["bbox"] == n_ann[name]
        assert {"intensity", "label", "ratio"} <= set(item["attrs"])  # segdeck's fields survive as attributes


def test_datumaro_imports_the_folder_with_images(job, tmp_path):
    out = export_job("datumaro-coco", job, tmp_path / "dm", images=True)
    assert (out / "images" / "default" / "sub" / "r.jpg").is_file()
    res = run_consumer(DATUMARO, str(out))
    assert sorted(res["items"]) == ["a", "sub/r"] and res["items"]["sub/r"]["size"] == [100, 60]


def test_labelme_loads_the_labelme_export(job, tmp_path):
    out = export_job("labelme", job, tmp_path / "lm")
    files = [out / "a.json", out / "sub" / "r.json"]
    res = run_consumer(LABELME, *map(str, files))
    coco = json.loads((job / "coco.json").read_text())
    for info, image_id in zip(res, (1, 2), strict=True):
        ids = sorted(a["id"] for a in coco["annotations"] if a["image_id"] == image_id)
        assert info["labels"] == ["region"] and info["types"] == ["polygon"] and info["bytes"] > 0
        assert info["group_ids"] == ids  # every region there, parts grouped by annotation id
        assert info["attrs"] == ["intensity", "label", "ratio"]
