"""The segment job: outputs (label map, overlay, CSV, COCO), naming, presets, the CLI,
resume after SIGKILL, and a folder with bad files."""

from __future__ import annotations

import csv
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
from pycocotools import mask as mask_utils

from segdeck.core import imageio
from segdeck.core.jobs.events import ItemDone, JobStarted, read_events
from segdeck.core.jobs.manifest import Manifest
from segdeck.core.jobs.runner import job_dir_for, run_job
from segdeck.core.params import field_specs, load_presets, resolve
from segdeck.core.segment import SegmentJob, SegmentParams

REPO = Path(__file__).resolve().parents[1]


def blocks_image(h=120, w=160, seed=0):
    """Four coloured blocks (2 x 2) with mild noise."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.float64)
    colours = [(200, 30, 30), (30, 200, 40), (20, 40, 210), (240, 240, 240)]
    for i, c in enumerate(colours):
        r, q = divmod(i, 2)
        img[r * h // 2 : (r + 1) * h // 2, q * w // 2 : (q + 1) * w // 2] = c
    img += rng.normal(0, 3, img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8)


@pytest.fixture
def folder(tmp_path):
    src = tmp_path / "in put"
    (src / "sub ü").mkdir(parents=True)
    imageio.write_image(src / "a.png", blocks_image(seed=1))
    imageio.write_image(src / "sub ü" / "a.png", blocks_image(seed=2))
    return src


def test_job_outputs_and_coco(folder):
    params = SegmentParams(method="felzenszwalb")
    job_dir = job_dir_for(SegmentJob, params, folder, None)
    summary = run_job(SegmentJob(params, folder, job_dir))
    assert summary.status == "done" and summary.done == 2
    names = sorted(p.relative_to(job_dir).as_posix() for p in job_dir.rglob("*") if p.is_file())
    for stem in ("a.png", "sub ü__a.png"):
        for suffix in (".labels.png", ".overlay.jpg", ".regions.csv"):
            assert f"{stem}{suffix}" in names
        assert f"parts/{stem}.coco.json" in names
    assert "coco.json" in names
    assert not [n for n in names if ".tmp" in n]

    coco = json.loads((job_dir / "coco.json").read_text())
    assert [im["file_name"] for im in coco["images"]] == ["a.png", "sub ü/a.png"]
    assert coco["categories"][0]["id"] == 1
    ids = [a["id"] for a in coco["annotations"]]
    assert ids == list(range(1, len(ids) + 1))
    img1 = [a for a in coco["annotations"] if a["image_id"] == 1]
    labels = imageio.read_label_map(job_dir / "a.png.labels.png")
    assert labels.shape == (120, 160) and len(img1) == labels.max() >= 4
    rows = list(csv.DictReader((job_dir / "a.png.regions.csv").open()))
    assert len(rows) == len(img1)
    assert list(rows[0])[:10] == ["label", "area", "intensity", "ratio", "x0", "y0", "x1", "y1", "cx", "cy"]
    for ann, row in zip(img1, rows, strict=True):
        rle = {"size": ann["segmentation"]["size"], "counts": ann["segmentation"]["counts"].encode()}
        mask = mask_utils.decode(rle).astype(bool)
        np.testing.assert_array_equal(mask, labels == ann["label"])
        ys, xs = np.nonzero(mask)
        assert ann["bbox"] == [xs.min(), ys.min(), xs.max() - xs.min() + 1, ys.max() - ys.min() + 1]  # XYWH
        assert ann["area"] == mask.sum() == int(row["area"])
        assert [int(row[k]) for k in ("x0", "y0", "x1", "y1")] == [xs.min(), ys.min(), xs.max() + 1, ys.max() + 1]


def test_many_labels_give_uint16_label_map(tmp_path):
    from PIL import Image

    src = tmp_path / "noise"
    src.mkdir()
    rng = np.random.default_rng(0)
    imageio.write_image(src / "n.png", rng.integers(0, 256, (160, 160, 3), dtype=np.uint8))
    params = SegmentParams(method="slico", slico={"region_size": 5}, overlay={"enabled": False})
    job_dir = job_dir_for(SegmentJob, params, src, None)
    assert run_job(SegmentJob(params, src, job_dir)).status == "done"
    assert Image.open(job_dir / "n.png.labels.png").mode.startswith("I")
    labels = imageio.read_label_map(job_dir / "n.png.labels.png")
    assert labels.max() > 255
    coco = json.loads((job_dir / "coco.json").read_text())
    assert len(coco["annotations"]) == labels.max()
    assert not (job_dir / "n.png.overlay.jpg").exists()


def test_filters_apply_in_the_job(folder):
    # dark-regions preset: only the three dark blocks pass ratio >= 44 (white block has R ~ 6)
    params = resolve(SegmentParams, "segment", preset="dark-regions")
    assert params.filters.enabled and params.method == "felzenszwalb"
    job_dir = job_dir_for(SegmentJob, params, folder / "a.png", None)
    assert run_job(SegmentJob(params, folder / "a.png", job_dir)).status == "done"
    rows = list(csv.DictReader((job_dir / "a.png.regions.csv").open()))
    assert rows and all(float(r["ratio"]) >= 44.0 for r in rows)
    labels = imageio.read_label_map(job_dir / "a.png.labels.png")
    assert (labels[60:, 80:] == 0).all()  # the white block is filtered out


def test_run_names_and_params():
    p = SegmentParams(method="felzenszwalb", felzenszwalb={"scale": 250})
    name = SegmentJob.run_name(p)
    assert name.startswith("segment-felzenszwalb-scale=250-sigma=0.8-w1024-")
    # another method's section does not change this run's folder; its own does
    assert SegmentJob.run_name(p.model_copy(update={"slic": p.slic.model_copy(update={"ruler": 30.0})})) == name
    assert SegmentJob.run_name(SegmentParams(method="felzenszwalb", felzenszwalb={"scale": 251})) != name
    assert "fullres" in SegmentJob.run_name(SegmentParams(max_side=0))
    specs = {s.name: s for s in field_specs(SegmentParams)}
    assert specs["felzenszwalb.scale"].gt == 0 and specs["filters.enabled"].default is False
    assert set(specs["method"].choices) >= {"edge", "slic", "slico", "mslic", "seeds", "lsc", "kmeans",
                                            "slic_kmeans", "chan_vese", "felzenszwalb", "quickshift", "graph"}
    assert all(s.description for s in specs.values())
    presets = load_presets("segment")
    assert {"default", "dark-regions", "large-regions"} <= set(presets)
    for name in presets:
        resolve(SegmentParams, "segment", preset=name)


def _cli(*args, timeout=120, **kw):
    env = {**os.environ, "COLUMNS": "250", "PYTHONUNBUFFERED": "1"}
    return subprocess.run([sys.executable, "-m", "segdeck", *args], capture_output=True, text=True,
                          timeout=timeout, env=env, cwd=REPO, **kw)


@pytest.mark.timeout(120)
def test_cli_help_and_usage_errors(tmp_path):
    res = _cli("run", "segment", "--help")
    assert res.returncode == 0 and "--felzenszwalb.scale" in res.stdout and "--filters.min-ratio" in res.stdout
    res = _cli("run", "segment", str(tmp_path / "missing"))
    assert res.returncode == 2 and "does not exist" in res.stderr
    imageio.write_image(tmp_path / "x.png", blocks_image())
    res = _cli("run", "segment", str(tmp_path / "x.png"), "--slico.region-size", "1")
    assert res.returncode == 2 and "slico.region_size" in res.stderr and "Traceback" not in res.stderr
    res = _cli("run", "segment", str(tmp_path / "x.png"), "--preset", "nope")
    assert res.returncode == 2 and "unknown preset" in res.stderr
    (tmp_path / "empty").mkdir()
    res = _cli("run", "segment", str(tmp_path / "empty"))
    assert res.returncode == 2 and "no images" in res.stderr and not (tmp_path / "empty.segdeck").exists()
    # paths are printed as text, not rich markup; an unwritable --out is one line
    res = _cli("run", "segment", str(tmp_path / "a[/b]"))
    assert res.returncode == 2 and "a[/b] does not exist" in res.stderr and "Traceback" not in res.stderr
    res = _cli("run", "segment", str(tmp_path / "x.png"), "--out", "/proc/segdeck-nope")
    assert res.returncode == 2 and "cannot write the job folder" in res.stderr and "Traceback" not in res.stderr


@pytest.mark.timeout(180)
def test_cli_bad_files_exit_1(tmp_path):
    src = tmp_path / "mixed"
    src.mkdir()
    good = ["g1.png", "g2.jpg", "g3.png"]
    for i, name in enumerate(good):
        imageio.write_image(src / name, blocks_image(seed=i))
    jpg = (src / "g2.jpg").read_bytes()
    (src / "truncated.jpg").write_bytes(jpg[: len(jpg) // 2])
    (src / "zero.png").write_bytes(b"")
    (src / "text.png").write_text("hello, not a PNG\n")
    os.symlink(src / "vanished.png", src / "unreadable.png")
    res = _cli("run", "segment", str(src), "--method", "graph", "--out", str(tmp_path / "out"))
    assert res.returncode == 1, res.stderr
    failed = [line for line in res.stderr.splitlines() if line.startswith("failed ")]
    assert len(failed) == 4, res.stderr
    for bad in ("truncated.jpg", "zero.png", "text.png", "unreadable.png"):
        assert sum(bad in line for line in failed) == 1
    assert "Traceback" not in res.stderr
    job_dir = next((tmp_path / "out").iterdir())
    for name in good:
        assert (job_dir / f"{name}.labels.png").is_file() and (job_dir / f"{name}.regions.csv").is_file()
    with Manifest(job_dir) as m:
        c = m.counts()
    assert (c.done, c.failed) == (3, 4)
    assert "7/7" in res.stderr  # the progress bar reached the end


def _done_items(job_dir: Path) -> dict[str, float]:
    db = job_dir / "manifest.sqlite"
    if not db.exists():
        return {}
    try:
        con = sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1)
        rows = con.execute("SELECT item, started FROM items WHERE state='done'").fetchall()
        con.close()
    except sqlite3.Error:
        return {}
    return dict(rows)


@pytest.mark.timeout(240)
def test_resume_after_sigkill(tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    n = 10
    for i in range(n):
        imageio.write_image(src / f"img{i:02d}.png", np.random.default_rng(i).integers(0, 256, (360, 480, 3), dtype=np.uint8))
    out = tmp_path / "out"
    args = ["run", "segment", str(src), "--method", "felzenszwalb", "--out", str(out), "--events"]
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "segdeck", *args], cwd=REPO, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    job_dir = None
    deadline = time.time() + 120
    try:
        while time.time() < deadline:
            if job_dir is None and out.exists():
                job_dir = next(out.iterdir(), None)
            if job_dir is not None and _done_items(job_dir):
                break
            if proc.poll() is not None:
                break
            time.sleep(0.02)
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=30)
    assert job_dir is not None
    first = _done_items(job_dir)
    assert 1 <= len(first) < n, f"kill came too late: {len(first)} of {n} done"

    res = _cli("run", "segment", str(src), "--method", "felzenszwalb", "--out", str(out), timeout=200)
    assert res.returncode == 0, res.stderr
    assert sorted(p.name for p in out.iterdir()) == [job_dir.name]  # same folder reused
    after = _done_items(job_dir)
    assert len(after) == n
    for item, started in first.items():
        assert after[item] == started  # not run again
    events, _ = read_events(job_dir)
    starts = [i for i, e in enumerate(events) if isinstance(e, JobStarted)]
    assert len(starts) == 2 and events[starts[1]].todo == n - len(first)
    redone = {e.item for e in events[starts[1]:] if isinstance(e, ItemDone)}
    assert redone == set(after) - set(first)
    assert not [p for p in tmp_path.rglob(".*.tmp*")]
    coco = json.loads((job_dir / "coco.json").read_text())
    assert len(coco["images"]) == n


def test_params_precedence_and_config_errors(tmp_path):
    from segdeck.core.errors import ParamsError

    cfg = tmp_path / "job.toml"
    cfg.write_text('job = "segment"\n[params]\nmethod = "slic"\nmax_side = 300\n[params.slic]\nregion_size = 31\n')
    p = resolve(SegmentParams, "segment", preset="dark-regions", config=cfg,
                sets=["max_side=400", "slic.ruler=12.5"], overrides={"max_side": 500})
    assert p.method == "slic" and p.filters.enabled  # config over preset, preset over defaults
    assert p.slic.region_size == 31 and p.slic.ruler == 12.5 and p.max_side == 500  # --set over config, options over --set
    for bad, why in ((tmp_path, "cannot read"), (tmp_path / "x.png", "not a TOML text file")):
        if why != "cannot read":
            bad.write_bytes(b"\x89PNG\xff\xfe")
        with pytest.raises(ParamsError, match=why):
            resolve(SegmentParams, "segment", config=bad)


def test_nested_and_underscored_names_get_separate_outputs(tmp_path):
    src = tmp_path / "in"
    (src / "a").mkdir(parents=True)
    img = np.random.default_rng(0).integers(0, 256, (60, 80, 3), dtype=np.uint8)
    imageio.write_image(src / "a" / "b.png", img)
    imageio.write_image(src / "a__b.png", img[::-1].copy())
    params = SegmentParams(method="felzenszwalb")
    job_dir = job_dir_for(SegmentJob, params, src, None)
    assert run_job(SegmentJob(params, src, job_dir)).done == 2
    label_maps = sorted(p.name for p in job_dir.glob("*.labels.png"))
    assert len(label_maps) == 2 and "a__b.png.labels.png" in label_maps  # the nested one keeps the plain name
