"""The describe job end to end: random-weight SAM 2.1-tiny, the ``none`` describer and
the ``openai`` describer against the fake OpenAI-compatible server (tests/vlm_server.py):
outputs consistent with each other, a failed region recorded and re-described alone
by a re-run, a wrong API key stopping the run with one line that never shows the key."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from segdeck.core import imageio
from segdeck.core.jobs.registry import get_job_class
from segdeck.core.params import resolve

pytestmark = pytest.mark.slow


def _scene(h=96, w=128, seed=0):
    import cv2

    img = np.zeros((h, w, 3), np.uint8)
    img[:] = (40, 90, 40)
    cv2.rectangle(img, (8, 8), (60, 50), (220, 40, 40), -1)
    cv2.circle(img, (95, 60), 22, (40, 40, 220), -1)
    cv2.rectangle(img, (20, 62), (50, 88), (230, 230, 60), -1)
    rng = np.random.default_rng(seed)
    return np.clip(img + rng.integers(0, 12, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture
def folder(tmp_path):
    d = tmp_path / "photos"
    d.mkdir()
    imageio.write_image(d / "a.png", _scene())
    imageio.write_image(d / "b.png", _scene(seed=1)[::-1].copy())
    return d


@pytest.fixture(scope="module")
def sam_model(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("sam2")
    from test_sam import random_models

    d = tmp_path_factory.mktemp("models")
    with random_models(d, ["sam2.1-tiny"]):
        yield d


SMALL = {"model": "sam2.1-tiny", "device": "cpu", "min_area": 20, "points.grid_columns": 4, "points.grid_rows": 3,
         "points.max_contour_points": 4}


def _job(folder, out, **overrides):
    from segdeck.core.jobs.runner import job_dir_for

    cls = get_job_class("describe")
    params = resolve(cls.Params, "describe", overrides={**SMALL, **overrides})
    return cls(params, folder, job_dir_for(cls, params, folder, out))


def _records(job_dir: Path, stem: str) -> list[dict]:
    return [json.loads(x) for x in (job_dir / f"{stem}.descriptions.jsonl").read_text().splitlines()]


def _check_consistent(job_dir: Path, stem: str) -> list[dict]:
    """Label map, JSONL, regions.json, report, COCO sidecar tell the same regions."""
    from pycocotools import mask as mask_utils

    labels = imageio.read_label_map(job_dir / f"{stem}.labels.png")
    recs = _records(job_dir, stem)
    assert [r["index"] for r in recs] == list(range(1, len(recs) + 1))
    assert int(labels.max()) == len(recs) >= 1
    part = json.loads((job_dir / "parts" / f"{stem}.coco.json").read_text())
    assert len(part["annotations"]) == len(recs)
    report = (job_dir / f"{stem}.report.txt").read_text()
    saved = json.loads((job_dir / f"{stem}.regions.json").read_text())
    for rec, ann, sv in zip(recs, part["annotations"], saved["regions"], strict=True):
        m = labels == rec["index"]
        assert int(m.sum()) == rec["area"] == ann["area"]
        ys, xs = np.nonzero(m)
        assert rec["box"] == [int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1]
        x, y = rec["point"]
        assert rec["source"] in ("contour", "grid")
        assert np.array_equal(mask_utils.decode(ann["segmentation"]).astype(bool), m)
        assert ann["description"] == rec["description"] == sv["description"]
        assert ann["attributes"]["description"] == rec["description"] and ann["region"] == f"D{rec['index']}"
        assert f"--- D{rec['index']} (source: {rec['source']}) ---" in report
        assert f"point (x, y): ({x}, {y})" in report
    vis = imageio.load_rgb(job_dir / f"{stem}.described.jpg")
    assert vis.shape[0] >= labels.shape[0] and vis.shape[1] > labels.shape[1]  # the legend panel
    return recs


def test_params_light_and_run_name(folder):
    cls = get_job_class("describe")
    code = "import sys; import segdeck.core.describe.job; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert out.stdout.strip() == "False", out.stderr
    p = resolve(cls.Params, "describe", overrides={"describer": "none"})
    q = resolve(cls.Params, "describe", overrides={"describer": "none", "openai.concurrency": 9})
    r = resolve(cls.Params, "describe", overrides={"describer": "none", "min_area": 7})
    assert cls.run_name(p) == cls.run_name(q) != cls.run_name(r)
    assert cls.run_name(p).startswith("describe-sam2.1-tiny-none-")
    o = resolve(cls.Params, "describe", overrides={"describer": "openai"})
    slower = resolve(cls.Params, "describe", overrides={"describer": "openai", "openai.timeout": 600, "openai.concurrency": 1})
    other_prompt = resolve(cls.Params, "describe", overrides={"describer": "openai", "openai.prompt": "What is it?"})
    assert cls.run_name(o) == cls.run_name(slower) != cls.run_name(other_prompt)


def test_describe_none_end_to_end(sam_model, folder, tmp_path):
    from segdeck.core.jobs.runner import run_job

    job = _job(folder, tmp_path / "out", describer="none")
    events = []
    summary = run_job(job, sink=events.append)
    assert summary.status == "done" and summary.done == 2, summary
    d = job.job_dir
    total = 0
    for stem in ("a.png", "b.png"):
        recs = _check_consistent(d, stem)
        assert all(r["description"] is None and r["error"] is None for r in recs)
        total += len(recs)
    coco = json.loads((d / "coco.json").read_text())
    assert len(coco["images"]) == 2 and len(coco["annotations"]) == total
    assert len((d / "descriptions.jsonl").read_text().splitlines()) == total
    steps = [e for e in events if e.kind == "ItemProgress"]
    assert any(e.what == "region" and e.total and e.done == e.total for e in steps)


def test_describe_openai_failed_region_redone_alone(sam_model, folder, tmp_path, monkeypatch):
    from vlm_server import FakeVLM

    from segdeck.core.jobs.runner import run_job

    with FakeVLM() as srv:
        srv.on_text("region 2.", "malformed")
        job = _job(folder / "a.png", tmp_path / "out", describer="openai", **{
            "openai.base_url": srv.base_url, "openai.prompt": "Describe region {index}.", "openai.concurrency": 3,
            "openai.retries": 0, "openai.api_key_env": ""})
        events = []
        summary = run_job(job, sink=events.append)
        assert summary.status == "failed" and summary.failed == 1, summary
        d = job.job_dir
        recs = _check_consistent(d, "a.png")
        assert len(recs) >= 2
        bad = recs[1]
        assert bad["description"] is None and "malformed" in bad["error"]
        good = [r for r in recs if r["index"] != 2]
        # the fake server describes the picture it got: size of the padded crop
        for r in good:
            x1, y1, x2, y2 = r["box"]
            w, h = min(128, x2 + 8) - max(0, x1 - 8), min(96, y2 + 8) - max(0, y1 - 8)
            assert r["description"].startswith(f"{w}x{h} mean "), r
        part = json.loads((d / "parts" / "a.png.coco.json").read_text())
        assert "malformed" in part["annotations"][1]["description_error"]
        # descriptions were logged as they arrived, sub-steps counted them
        said = [e.text for e in events if e.kind == "Message" and e.text.startswith("a.png D")]
        assert len(said) == len(recs)
        assert any(e.kind == "ItemProgress" and e.what == "described" and e.done == e.total == len(recs) for e in events)
        failed = [e for e in events if e.kind == "ItemFailed"]
        assert len(failed) == 1 and "1 of" in failed[0].error and "D2" in failed[0].error
        labels_before = (d / "a.png.labels.png").read_bytes()

        # re-run: the segmentation is read back (SAM is not asked again), only D2 is described
        import segdeck.core.describe.sweep as sweep_mod

        def no_sweep(*a, **k):
            raise AssertionError("the segmentation was redone")

        monkeypatch.setattr(sweep_mod, "sweep", no_sweep)
        srv.clear()
        again = run_job(_job(folder / "a.png", tmp_path / "out", describer="openai", **{
            "openai.base_url": srv.base_url, "openai.prompt": "Describe region {index}.", "openai.concurrency": 3,
            "openai.retries": 0, "openai.api_key_env": ""}))
        assert again.status == "done" and again.done == 1, again
        assert [c.prompt for c in srv.chats] == ["Describe region 2."]
        assert (d / "a.png.labels.png").read_bytes() == labels_before
        recs2 = _check_consistent(d, "a.png")
        assert all(r["description"] and r["error"] is None for r in recs2)
        assert [r["description"] for r in recs2 if r["index"] != 2] == [r["description"] for r in good]
        coco = json.loads((d / "coco.json").read_text())
        assert [a["description"] for a in coco["annotations"]] == [r["description"] for r in recs2]


def test_wrong_key_stops_with_one_line_and_never_shows_the_key(folder, tmp_path):
    from vlm_server import FakeVLM

    secret = "sk-test-0123456789-do-not-print"
    env = {**os.environ, "SEGDECK_TEST_VLM_KEY": secret, "SEGDECK_STATE_DIR": str(tmp_path / "state")}
    out = tmp_path / "out"
    with FakeVLM(api_key="the-right-key") as srv:
        proc = subprocess.run(
            [sys.executable, "-m", "segdeck", "run", "describe", str(folder), "--out", str(out),
             "--describer", "openai", "--openai.base-url", srv.base_url, "--openai.api-key-env", "SEGDECK_TEST_VLM_KEY"],
            capture_output=True, text=True, timeout=120, env=env)
        assert not srv.chats  # stopped before any region was sent
    assert proc.returncode == 2, proc.stderr
    # besides the progress bar's start, one line: the error
    err = [ln for ln in proc.stderr.splitlines() if ln.strip() and not ln.startswith("describe ")]
    assert len(err) == 1 and err[0].startswith("error:"), proc.stderr
    assert "401" in err[0] and "SEGDECK_TEST_VLM_KEY" in err[0], proc.stderr
    assert "Traceback" not in proc.stderr
    assert secret not in proc.stdout + proc.stderr
    files = [p for p in out.rglob("*") if p.is_file()]
    assert any(p.name == "job.toml" for p in files)
    for p in files:
        assert secret.encode() not in p.read_bytes(), p


def test_key_refused_mid_run_keeps_segmentation_and_stops_segmenting(sam_model, folder, tmp_path):
    from vlm_server import FakeVLM

    from segdeck.core.jobs.runner import run_job

    with FakeVLM() as srv:
        srv.script("401")  # /models answers; the first region's request is refused
        job = _job(folder, tmp_path / "out", describer="openai", **{
            "openai.base_url": srv.base_url, "openai.concurrency": 1, "openai.api_key_env": ""})
        events = []
        summary = run_job(job, sink=events.append)
        assert len(srv.chats) == 1
    # a refused key stops the run (like a full disk): one line, exit code 2, nothing failed
    assert summary.status == "error" and summary.exit_code == 2, summary
    assert "401" in summary.error and "\n" not in summary.error
    assert summary.failed == 0 and not [e for e in events if e.kind == "ItemFailed"]
    d = job.job_dir
    assert (d / "a.png.regions.json").is_file() and (d / "a.png.labels.png").is_file()
    assert not (d / "b.png.regions.json").exists()  # not segmented after the fatal error
    assert not [e for e in events if e.kind == "ItemProgress" and e.item == "b.png"]
    from segdeck.core.jobs.manifest import Manifest

    with Manifest(d, readonly=True) as m:  # both stay pending for the re-run
        assert (m.state("a.png"), m.state("b.png")) == ("pending", "pending")


def test_server_down_stops_before_sam_loads(folder, tmp_path, monkeypatch):
    import socket

    import segdeck.core.sam as sam_pkg
    from segdeck.core.jobs.runner import run_job

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]

    def no_engine(*a, **k):
        raise AssertionError("SAM was loaded although the describer cannot work")

    monkeypatch.setattr(sam_pkg, "open_engine", no_engine)
    job = _job(folder, tmp_path / "out", describer="openai", **{
        "openai.base_url": f"http://127.0.0.1:{port}/v1", "openai.api_key_env": ""})
    summary = run_job(job)
    assert summary.status == "error" and summary.exit_code == 2
    assert "cannot reach" in summary.error and "\n" not in summary.error


def test_cancel_while_describing_keeps_the_work_done(sam_model, folder, tmp_path):
    import threading

    from vlm_server import FakeVLM

    from segdeck.core.jobs.runner import run_job

    over = {"describer": "openai", "openai.concurrency": 1, "openai.api_key_env": ""}
    with FakeVLM(latency=0.2) as srv:
        over["openai.base_url"] = srv.base_url
        cancel = threading.Event()

        def sink(e):  # Ctrl+C once the first description arrived
            if e.kind == "Message" and e.text.startswith("a.png D1:"):
                cancel.set()

        job = _job(folder / "a.png", tmp_path / "out", **over)
        summary = run_job(job, sink=sink, cancel=cancel)
        assert summary.status == "cancelled", summary
        recs = _check_consistent(job.job_dir, "a.png")  # the segmentation and D1 were written
        described = [r["index"] for r in recs if r["description"]]
        assert 1 in described and len(described) < len(recs)
        assert {r["error"] for r in recs if not r["description"]} == {"cancelled"}
        first = len(srv.chats)
        again = run_job(_job(folder / "a.png", tmp_path / "out", **over))
        assert again.status == "done", again
        assert len(srv.chats) - first == len(recs) - len(described)
        assert all(r["description"] for r in _check_consistent(job.job_dir, "a.png"))
