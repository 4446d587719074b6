"""The ``propagate`` job (issue 12) end to end with a random-weight SAM 2.1-tiny at a
small input size: CSV + template -> groups -> seeded references -> reference label maps
written through the ReferenceStore -> ``propagate`` -> a label map for every target at
its own upright size (an EXIF-orientation-6 photo, a group of mixed sizes), equal to
what the engine gives for that target from the same references; the mask modes;
``--dry-run``; ``--max-frames``; bad CSVs as one line on the CLI; ``kill -9`` then a
re-run gives the outputs of an uninterrupted run."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

from job_helpers import kill_after_first_done  # noqa: E402
from test_sam import random_checkpoint, test_image  # noqa: E402

from segdeck.core import imageio  # noqa: E402
from segdeck.core import models as M  # noqa: E402
from segdeck.core.jobs.runner import run_job  # noqa: E402
from segdeck.core.propagate import ReferenceStore, load_project  # noqa: E402
from segdeck.core.propagate.job import PropagateJob, PropagateParams  # noqa: E402
from segdeck.core.propagate.modes import position_labels  # noqa: E402

pytestmark = pytest.mark.slow

SIZE = 256  # the model's input side: fast on CPU with random weights
#: key, specimen, name, (h, w) upright, EXIF orientation
IMAGES = [
    ("a1", "ant", "a1", (60, 80), 1), ("a2", "ant", "a2", (72, 56), 1), ("a3", "ant", "a3", (48, 64), 1),
    ("a4", "ant", "a4", (80, 80), 1), ("a5", "ant", "a5", (40, 72), 1),
    ("b1", "bee", "b1", (64, 48), 6), ("b2", "bee", "b2", (64, 48), 1), ("b3", "bee", "b3", (50, 70), 1),
    ("b4", "bee", "b4", (56, 56), 1),
    ("c1", "cow", "c1", (48, 48), 1), ("c2", "cow", "c2", (48, 48), 1),
]


def _write_photo(path: Path, hw: tuple[int, int], orientation: int, seed: int) -> None:
    from PIL import Image

    h, w = hw
    img = np.roll(test_image(h, w), seed * 7, axis=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    if orientation == 6:  # stored sideways: the upright image is (h, w) after a 90° turn clockwise
        stored = np.ascontiguousarray(np.rot90(img, 1))  # what a camera held upright writes
        exif = Image.Exif()
        exif[0x0112] = 6
        Image.fromarray(stored).save(path, exif=exif, quality=95)
    else:
        Image.fromarray(img).save(path, quality=95)


def _ref_map(hw: tuple[int, int], ids=(1, 2)) -> np.ndarray:
    h, w = hw
    lab = np.zeros((h, w), np.int32)
    if 1 in ids:
        lab[h // 8: h // 2, w // 8: w // 2] = 1
    if 2 in ids:
        lab[h // 2: h - h // 8, w // 2: w - w // 8] = 2
    return lab


def _spec(folder: Path, name: str = "p", mode: str = "original", extra: str = "") -> Path:
    path = folder / f"{name}.toml"
    path.write_text(
        'csv = "meta.csv"\nkey = "id"\ntemplate = "{specimen}/{name}.jpg"\ngroup_by = ["specimen"]\n'
        f'root = "photos"\nreferences = 2\nseed = 0\nmask_mode = "{mode}"\nrefs_dir = "p.refs"\n{extra}')
    return path


@pytest.fixture(scope="module")
def ckpt():
    return random_checkpoint("sam2.1-tiny", seed=3)[0]


@pytest.fixture(scope="module")
def project(tmp_path_factory):
    """Photos, a CSV (BOM, a quoted field with a comma and a line break), a spec, and the
    references of groups ant and bee labelled through the ReferenceStore (cow: none)."""
    d = tmp_path_factory.mktemp("proj")
    for n, (_key, specimen, name, hw, orient) in enumerate(IMAGES):
        _write_photo(d / "photos" / specimen / f"{name}.jpg", hw, orient, n)
    lines = ["id,specimen,name,note"] + [f'{k},{s},{n},"n {k}, line\nbreak"' for k, s, n, _, _ in IMAGES]
    (d / "meta.csv").write_bytes(("\ufeff" + "\n".join(lines) + "\n").encode())
    spec = _spec(d)
    proj = load_project(spec)
    store = ReferenceStore(proj.refs_dir)
    refs = {}
    for group in proj.groups[:2]:
        chosen = proj.sampled_references(group)
        assert [r.key for r in chosen] == [r.key for r in load_project(spec).sampled_references(group)]  # seeded
        for n, row in enumerate(chosen):
            w, h = imageio.image_size(row.path)
            store.save(group, row.key, _ref_map((h, w), ids=(1, 2) if n == 0 else (2,)), image=row.relpath)
        refs[group.label] = [r.key for r in chosen]
    return d, spec, refs


def _engine_maps(ckpt, proj, group_label, keys, mode="original"):
    """What the engine alone gives for ``keys`` from the group's stored references."""
    from segdeck.core.sam.video import open_propagator

    store = ReferenceStore(proj.refs_dir)
    group = proj.group_named(group_label)
    refs = []
    for key in sorted(store.labelled(group)):
        labels, _ = store.load(group, key)
        if mode == "position":
            labels = position_labels(labels)
        refs.append((imageio.load_rgb(proj.row(key).path), labels))
    prop = open_propagator("sam2.1-tiny", "cpu", checkpoint=ckpt, image_size=SIZE)
    try:
        prop.set_references(refs)
        return {k: prop.predict([imageio.load_rgb(proj.row(k).path)])[0] for k in keys}
    finally:
        prop.close()


def _run(spec, out, ckpt, **kw):
    params = PropagateParams(device="cpu", checkpoint=str(ckpt), image_size=SIZE, **kw)
    job_dir = out / PropagateJob.run_name(params)
    return run_job(PropagateJob(params, spec, job_dir)), job_dir


@pytest.mark.timeout(600)
def test_every_target_gets_its_own_upright_size_and_the_engines_masks(project, ckpt, tmp_path):
    d, spec, refs = project
    proj = load_project(spec)
    summary, job_dir = _run(spec, tmp_path / "out", ckpt, batch_size=2)  # pairs of targets, one forward pass
    assert summary.status == "done", summary.error
    targets = {g: [r.key for r in proj.group_named(g).rows if r.key not in refs[g]] for g in ("specimen=ant", "specimen=bee")}
    assert summary.done == sum(len(v) for v in targets.values()) == 5  # ant a1-a3, bee b1 and b3
    assert "b1" in targets["specimen=bee"]  # the EXIF-6 photo is a target
    sizes = {k: hw for k, _, _, hw, _ in IMAGES}
    for g, keys in targets.items():
        want = _engine_maps(ckpt, proj, g, keys)
        for k in keys:
            got = imageio.read_label_map(job_dir / f"{k}.labels.png")
            assert got.shape == sizes[k], k  # upright size, also for the EXIF-6 photo b1
            assert np.array_equal(got, want[k]), k
            assert (job_dir / f"{k}.overlay.jpg").is_file()
    assert not list(job_dir.glob("c[0-9]*"))  # the group without references: nothing written
    for k in refs["specimen=ant"] + refs["specimen=bee"]:
        assert not (job_dir / f"{k}.labels.png").exists()  # references are no targets
    assert imageio.read_label_map(job_dir / "b1.labels.png").shape == (64, 48)
    assert imageio.load_rgb(d / "photos" / "bee" / "b1.jpg").shape[:2] == (64, 48)  # stored 48 x 64 sideways
    coco = json.loads((job_dir / "coco.json").read_text())
    assert {i["file_name"] for i in coco["images"]} == {f"{proj.row(k).relpath}" for v in targets.values() for k in v}
    cats = {c["id"] for c in coco["categories"]}
    assert {a["category_id"] for a in coco["annotations"]} <= cats == {1, 2}  # the references' ids, predicted or not
    for ann in coco["annotations"]:  # one category per object id: the RLE is that id's pixels
        from pycocotools import mask as mask_utils

        img = next(i for i in coco["images"] if i["id"] == ann["image_id"])
        key = next(r.key for r in proj.rows if r.relpath == img["file_name"])
        lab = imageio.read_label_map(job_dir / f"{key}.labels.png")
        rle = {"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode()}
        assert np.array_equal(mask_utils.decode(rle).astype(bool), lab == ann["category_id"])
    table = (job_dir / "regions.csv").read_text().splitlines()
    assert table[0].startswith("key,group,image,annotation_id,label,area")
    assert len(table) - 1 == len(coco["annotations"])
    log = (job_dir / "job.log").read_text()
    assert "group specimen=cow: skipped: no labelled reference with an object (2 images not written)" in log


@pytest.mark.timeout(600)
def test_mask_modes_position_and_binary(project, ckpt, tmp_path):
    d, _spec_path, refs = project
    proj = load_project(_spec(d))
    for mode in ("position", "binary"):
        spec = _spec(d, f"p-{mode}", mode)
        summary, job_dir = _run(spec, tmp_path / mode, ckpt, max_frames=1)
        assert summary.status == "done" and summary.done == 2, summary.error  # one per ready group
        keys = [r.key for r in proj.group_named("specimen=ant").rows if r.key not in refs["specimen=ant"]][:1]
        assert sorted(p.name for p in job_dir.glob("*.labels.png")) == [f"{keys[0]}.labels.png", "b1.labels.png"]
        want = _engine_maps(ckpt, proj, "specimen=ant", keys, mode=mode)
        for k in keys:
            got = imageio.read_label_map(job_dir / f"{k}.labels.png")
            expected = position_labels(want[k]) if mode == "position" else (want[k] > 0).astype(np.int32)
            assert np.array_equal(got, expected), (mode, k)
        names = {c["name"] for c in json.loads((job_dir / "coco.json").read_text())["categories"]}
        assert names == ({"top-left", "top-right", "bottom-left", "bottom-right"} if mode == "position" else {"object"})


def _cli(*args, model_dir: Path, timeout=300):
    env = {**os.environ, M.ENV_MODEL_DIR: str(model_dir), "COLUMNS": "400",
           "SEGDECK_STATE_DIR": str(model_dir.parent / "state"),
           "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
           "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}
    return subprocess.Popen([sys.executable, "-m", "segdeck", "run", "propagate", *map(str, args)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


@pytest.mark.timeout(300)
def test_dry_run_checks_and_prints_a_table_without_a_model(project, tmp_path):
    d, spec, refs = project
    proc = _cli(spec, "--dry-run", "--out", tmp_path / "out", model_dir=tmp_path / "empty-models")
    _, err = proc.communicate(timeout=240)
    assert proc.returncode == 2 and "Traceback" not in err, err
    assert "dry run: 1 of 3 groups cannot be propagated" in err
    assert "specimen=cow" in err and "skipped: no labelled reference with an object" in err
    # the cow group labelled (one reference, no object on the other): now it passes
    proj = load_project(spec)
    cow = proj.group_named("specimen=cow")
    store = ReferenceStore(proj.refs_dir)
    store.save(cow, "c1", _ref_map((48, 48)), image="cow/c1.jpg")
    try:
        proc = _cli(spec, "--dry-run", "--max-frames", "1", "--out", tmp_path / "out", model_dir=tmp_path / "empty")
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 0, err
        rows = {ln.split()[0]: ln.split() for ln in err.splitlines() if ln.startswith("specimen=")}
        assert rows["specimen=ant"][1:5] == ["5", "2/2", "1,2", "1"]  # images, refs, objects, targets (max 1)
        assert rows["specimen=cow"][1:5] == ["2", "1/2", "1,2", "1"]
        assert "no model loaded" in err and not (tmp_path / "empty").exists()
    finally:
        store.delete(cow, "c1")


def _bad(tmp_path: Path, csv_bytes: bytes, spec_extra: str = "") -> Path:
    (tmp_path / "photos" / "ant").mkdir(parents=True, exist_ok=True)
    (tmp_path / "meta.csv").write_bytes(csv_bytes)
    path = tmp_path / "p.toml"
    path.write_text('csv = "meta.csv"\nkey = "id"\ntemplate = "{specimen}/{name}.jpg"\ngroup_by = ["specimen"]\n'
                    f'root = "photos"\n{spec_extra}')
    return path


@pytest.mark.timeout(300)
@pytest.mark.parametrize(("csv_bytes", "message"), [
    ("id,specimen,name\n1,ant,caf\xe9\n".encode("latin-1"), "not UTF-8 text (byte 0xe9 at byte offset 26, line 2)"),
    (b"id,specimen,nom\n1,ant,a\n", "template names column 'name', which meta.csv lacks (columns: id, specimen, nom)"),
    (b"id,specimen,name\n1,ant,a\n1,ant,b\n", "duplicate primary keys in column 'id': '1' on lines 2, 3"),
    (b"id,specimen,name\n1,..,a\n", "image paths must stay inside the root (no absolute paths, no '..'): '../a.jpg'"),
    (b"id;specimen;name\n1;/etc;a\n", "'/etc/a.jpg' (line 2)"),
])
def test_bad_csvs_are_one_line_on_the_cli(tmp_path, csv_bytes, message):
    spec = _bad(tmp_path, csv_bytes)
    proc = _cli(spec, "--dry-run", model_dir=tmp_path / "models")
    out, err = proc.communicate(timeout=240)
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert proc.returncode == 2 and len(lines) == 1 and "Traceback" not in err, err
    assert lines[0].startswith("error: ") and message in lines[0], lines[0]
    assert not (tmp_path / "p.segdeck").exists()  # refused before any job folder


@pytest.mark.timeout(300)
def test_well_formed_csv_variants_and_missing_files_on_the_cli(tmp_path):
    """A BOM, ``;`` or tab delimiters and quoted fields read; a missing photo is counted
    and listed while the rest goes on."""
    for variant, line in [(b"\xef\xbb\xbfid,specimen,name,note\n1,ant,a,\"x, y\nz\"\n2,ant,gone,\n", 4),
                          (b"id;specimen;name;note\n1;ant;a;\"x; y\"\n2;ant;gone;\n", 3),
                          (b"id\tspecimen\tname\tnote\n1\tant\ta\tx,y;z\n2\tant\tgone\t\n", 3)]:
        spec = _bad(tmp_path, variant)
        _write_photo(tmp_path / "photos" / "ant" / "a.jpg", (40, 40), 1, 0)
        proc = _cli(spec, "--dry-run", "--out", tmp_path / "out", model_dir=tmp_path / "models")
        _, err = proc.communicate(timeout=240)
        assert proc.returncode == 2 and "Traceback" not in err, err  # parsed; no references yet
        assert f"1 of 2 images missing under {tmp_path / 'photos'}: 'ant/gone.jpg' (line {line})" in err.replace("\n  ", " ")
        assert "specimen=ant" in err


@pytest.mark.timeout(600)
def test_kill_9_mid_group_then_rerun_equals_an_uninterrupted_run(project, ckpt, tmp_path):
    _d, spec, _refs = project
    args = [spec, "--device", "cpu", "--checkpoint", ckpt, "--image-size", SIZE, "--max-frames", 2]
    models = tmp_path / "models"
    whole = _cli(*args, "--out", tmp_path / "whole", model_dir=models)
    out, err = whole.communicate(timeout=500)
    assert whole.returncode == 0, err
    whole_dir = Path(out.strip().splitlines()[-1])
    proc = _cli(*args, "--out", tmp_path / "killed", "--events", model_dir=models)
    first, err = kill_after_first_done(proc)
    assert first is not None, err
    again = _cli(*args, "--out", tmp_path / "killed", model_dir=models)
    out, err = again.communicate(timeout=500)
    assert again.returncode == 0, err
    killed_dir = Path(out.strip().splitlines()[-1])
    assert "resuming: " in err
    names = sorted(p.relative_to(whole_dir).as_posix() for p in whole_dir.rglob("*")
                   if p.suffix in (".png", ".csv") or p.parent.name == "parts")
    assert len([n for n in names if n.endswith(".labels.png")]) == 4  # two per ready group
    for name in names:
        assert (whole_dir / name).read_bytes() == (killed_dir / name).read_bytes(), name
    coco = [json.loads((dd / "coco.json").read_text()) for dd in (whole_dir, killed_dir)]
    assert coco[0]["annotations"] == coco[1]["annotations"]


class _NearestPropagator:
    """A stand-in engine with the real one's methods: each target gets the first
    reference's label map resized (nearest) to its size."""

    def set_references(self, references):
        self.first = references[0][1]
        return sorted({int(v) for _, lab in references for v in np.unique(lab) if v})

    def predict(self, images):
        import cv2

        return [cv2.resize(self.first.astype(np.uint16), (im.shape[1], im.shape[0]),
                           interpolation=cv2.INTER_NEAREST).astype(np.int32) for im in images]

    def close(self):
        pass


@pytest.mark.timeout(120)
def test_changed_references_are_refused_until_fresh_and_new_groups_just_run(project, tmp_path, monkeypatch):
    from segdeck.core.propagate import job as job_mod

    monkeypatch.setattr(job_mod, "open_propagator", lambda *a, **k: _NearestPropagator())
    d, _spec_path, refs = project
    spec = _spec(d, "fake")
    params = PropagateParams(device="cpu")
    job_dir = tmp_path / "job"
    listing = PropagateJob(params, spec, tmp_path / "listed")
    assert len(listing.list_items()) == 5 and not (tmp_path / "listed").exists()  # listing writes nothing
    first = run_job(PropagateJob(params, spec, job_dir))
    assert first.status == "done" and first.done == 5, first.error
    proj = load_project(spec)
    ant = proj.group_named("specimen=ant")
    store = ReferenceStore(proj.refs_dir)
    ref = sorted(store.labelled(ant))[0]
    old, _ = store.load(ant, ref)
    cow = proj.group_named("specimen=cow")
    try:
        store.save(cow, "c1", _ref_map((48, 48)), image="cow/c1.jpg")  # a new group: runs without a fuss
        more = run_job(PropagateJob(params, spec, job_dir))
        assert more.status == "done" and more.done == 1 and more.skipped == 5
        assert np.array_equal(imageio.read_label_map(job_dir / "c2.labels.png"), _ref_map((48, 48)))
        store.save(ant, ref, np.where(old > 0, 7, 0), image=proj.row(ref).relpath)  # relabelled
        again = run_job(PropagateJob(params, spec, job_dir))
        assert again.status == "error" and again.done == 0
        assert again.error.startswith(f"{job_dir}: the references or settings of group specimen=ant changed")
        assert "--fresh" in again.error and "\n" not in again.error
        fresh = run_job(PropagateJob(params, spec, job_dir), fresh=True)
        assert fresh.status == "done" and fresh.done == 6
        target = next(r for r in ant.rows if r.key not in refs["specimen=ant"])
        assert set(np.unique(imageio.read_label_map(job_dir / f"{target.key}.labels.png"))) <= {0, 7}
    finally:
        store.save(ant, ref, old, image=proj.row(ref).relpath)
        store.delete(cow, "c1")


@pytest.mark.timeout(120)
def test_a_missing_image_is_listed_and_fails_alone(tmp_path, monkeypatch):
    from segdeck.core.propagate import job as job_mod

    monkeypatch.setattr(job_mod, "open_propagator", lambda *a, **k: _NearestPropagator())
    for n, name in enumerate(["r", "t1", "t3"]):
        _write_photo(tmp_path / "photos" / "x" / f"{name}.jpg", (32, 40), 1, n)
    (tmp_path / "meta.csv").write_text("id,specimen,name\nr,x,r\nt1,x,t1\nt2,x,t2\nt3,x,t3\n")
    spec = _spec(tmp_path)
    spec.write_text(spec.read_text().replace("references = 2", "references = 1"))
    proj = load_project(spec)
    ReferenceStore(proj.refs_dir).save(proj.groups[0], "r", _ref_map((32, 40)), image="x/r.jpg")
    job_dir = tmp_path / "job"
    summary = run_job(PropagateJob(PropagateParams(device="cpu"), spec, job_dir))
    assert summary.status == "failed" and summary.done == 2 and summary.failed == 1
    assert sorted(p.name for p in job_dir.glob("*.labels.png")) == ["t1.labels.png", "t3.labels.png"]
    log = (job_dir / "job.log").read_text()
    assert f"1 of 4 images missing under {tmp_path / 'photos'}: 'x/t2.jpg' (line 4)" in log


def test_a_project_without_any_reference_stops_with_one_line(tmp_path):
    _write_photo(tmp_path / "photos" / "x" / "a.jpg", (32, 40), 1, 0)
    (tmp_path / "meta.csv").write_text("id,specimen,name\na,x,a\n")
    spec = _spec(tmp_path)
    summary = run_job(PropagateJob(PropagateParams(device="cpu"), spec, tmp_path / "job"))
    assert summary.status == "error" and summary.error == (
        f"{spec}: no group has a labelled reference with an object yet (1 group(s), references in "
        f"{tmp_path / 'p.refs'}); label them with `segdeck annotate refs {spec}`")
