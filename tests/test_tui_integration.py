"""The TUI wired to the finished jobs: the cluster threshold picker (Ctrl+T on the
cluster form, a real curve from a sample, the pick goes into the form, the job runs
and writes cluster folders) and the model picker of ``automask`` (cache state of every
registered model, a download's progress, an offline download's one-line failure).
"""

from __future__ import annotations

import sys
import time

import numpy as np
import pytest
from tui_helpers import wait_for

from segdeck.core import imageio
from segdeck.core.jobs import registry

SIZE = (120, 40)


async def choose_job(app, pilot, job):
    from textual.widgets import Select

    from segdeck.tui.widgets.param_form import ParamForm

    await wait_for(pilot, lambda: job in getattr(app.screen, "jobs", {}), what="jobs loaded")
    screen = app.screen
    screen.query_one("#job-select", Select).value = job
    form = screen.query_one(ParamForm)
    await wait_for(pilot, lambda: screen.job_name == job and form.model is not None
                   and form.model is screen.jobs[job].Params and form.params is not None, what=f"{job} form")
    await wait_for(pilot, lambda: screen.input_count is not None, what="folder counts")
    return screen, form


def notes(app) -> list[str]:
    return [str(n.message) for n in app._notifications]


@pytest.fixture(autouse=True)
def own_recent_jobs(tmp_path, monkeypatch):
    """Each test its own recent-jobs registry: the TUI lists the jobs recorded there
    (jobs of other tests would show up in its list otherwise)."""
    monkeypatch.setenv("SEGDECK_STATE_DIR", str(tmp_path / "state"))


@pytest.fixture
def near_dups(tmp_path):
    """3 smooth random textures x 3 near-duplicates each (noise, brightness, small
    crop) and 2 unrelated images: 11 PNGs, 96x96."""
    import cv2

    rng = np.random.default_rng(3)
    root = tmp_path / "pics"
    root.mkdir()

    def texture():
        small = rng.integers(0, 256, (6, 6, 3)).astype(np.float32)
        return np.clip(cv2.resize(small, (96, 96), interpolation=cv2.INTER_CUBIC), 0, 255).astype(np.uint8)

    for g in range(3):
        base = texture()
        imageio.write_image(root / f"g{g}_a.png", base)
        noisy = np.clip(base.astype(np.int16) + rng.integers(-6, 7, base.shape), 0, 255).astype(np.uint8)
        imageio.write_image(root / f"g{g}_b.png", noisy)
        brighter = np.clip(base.astype(np.int16) + 12, 0, 255).astype(np.uint8)
        imageio.write_image(root / f"g{g}_c.png", brighter)
    for k in range(2):
        imageio.write_image(root / f"other{k}.png", texture())
    return root


@pytest.mark.asyncio
@pytest.mark.timeout(150)
async def test_cluster_threshold_picker_and_run(near_dups):
    if "cluster" not in registry.job_names():
        pytest.skip("the cluster job is not importable in this install")
    from textual.widgets import Select, Static

    from segdeck.tui.app import SegdeckApp
    from segdeck.tui.screens.threshold import ThresholdScreen
    from segdeck.tui.widgets.job_list import JobList

    app = SegdeckApp(near_dups)
    async with app.run_test(size=SIZE) as pilot:
        screen, form = await choose_job(app, pilot, "cluster")
        # the nested sections follow the method: dup's shown for dup, none for phash
        assert screen.query_one("#sec-dup").display and not screen.query_one("#sec-deep").display
        # dup has no threshold: a one-line notification, no picker
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: any("no threshold curve" in n for n in notes(app)), what="dup refusal")
        assert not isinstance(app.screen, ThresholdScreen)
        assert not form.loading
        method = screen.query_one("#p-method", Select)
        # deep: its section opens with its fields (a list field among them), no curve
        method.value = "deep"
        await wait_for(pilot, lambda: screen.query_one("#sec-deep").display and form.widget_for("deep.algorithms")
                       is not None, what="deep section")
        assert not screen.query_one("#sec-dup").display and form.params is not None
        assert form.launch_values()["deep.algorithms"] == list(form.params.deep.algorithms)
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: any("method deep does not use" in n for n in notes(app)), what="deep refusal")
        method.value = "phash"
        await pilot.pause()
        assert not screen.query_one("#sec-dup").display and not screen.query_one("#sec-deep").display
        assert form.params.method == "phash" and form.params.threshold is None
        assert "Ctrl+T" in str(screen.query_one("#note-p-threshold", Static).render())
        # "t" with the method select focused opens the picker too
        method.focus()
        await pilot.press("t")
        await wait_for(pilot, lambda: isinstance(app.screen, ThresholdScreen), timeout=60, what="threshold picker")
        picker = app.screen
        assert picker.curve.method == "phash" and picker.curve.total == 11
        start = picker.index
        await pilot.press("up", "up", "down")
        assert picker.index == min(start + 2, len(picker.curve.thresholds) - 1) - 1 or picker.index == start + 1
        chosen = picker.threshold
        status = picker.status_text()
        assert f"{chosen:.4g}" in status and "clusters" in status
        await pilot.press("enter")
        await wait_for(pilot, lambda: form.params is not None and form.params.threshold is not None, what="threshold set")
        assert not isinstance(app.screen, ThresholdScreen)
        assert form.params.threshold == pytest.approx(chosen, rel=1e-5)
        assert form.launch_values()["threshold"] == pytest.approx(chosen, rel=1e-5)
        # Escape leaves the form alone
        screen.query_one("#folders").focus()
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: isinstance(app.screen, ThresholdScreen), timeout=60, what="picker again")
        assert app.screen.threshold == pytest.approx(chosen)  # opens at the form's value
        await pilot.press("down", "escape")
        await pilot.pause()
        assert form.params.threshold == pytest.approx(chosen, rel=1e-5)
        # pick the automatic choice for the run (a sensible cut on this set), then run
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: isinstance(app.screen, ThresholdScreen), timeout=60, what="picker a third time")
        await pilot.press("a")
        auto = app.screen.threshold
        await pilot.press("enter")
        await wait_for(pilot, lambda: form.params.threshold == pytest.approx(auto, rel=1e-5), what="auto threshold")
        await pilot.press("ctrl+r")
        jobs = screen.query_one(JobList)
        await wait_for(pilot, lambda: jobs.selected_snapshot is not None, what="job row")
        await wait_for(pilot, lambda: jobs.selected_snapshot.state in ("done", "failed", "error"), timeout=90,
                       what="cluster job finished")
        snap = jobs.selected_snapshot
        assert snap.state == "done", (snap, (snap.job_dir / "job.log").read_text()[-2000:])
        assert snap.job == "cluster" and snap.done == 11
        clusters = sorted(p.name for p in snap.job_dir.glob("cluster_*") if p.is_dir())
        assert clusters, sorted(p.name for p in snap.job_dir.iterdir())
        placed = [p.name for d in clusters for p in (snap.job_dir / d).iterdir()]
        assert len(placed) >= 2 and (snap.job_dir / "clusters.json").is_file()
        import json

        report = json.loads((snap.job_dir / "clusters.json").read_text())
        assert report.get("threshold") == pytest.approx(auto) or f"{auto:g}" in snap.job_dir.name
        # "t" on that job in the Jobs list: it was given its threshold, so no saved curve
        jobs.focus()
        await pilot.press("t")
        await wait_for(pilot, lambda: any("saved no threshold curve" in n for n in notes(app)), what="no curve")
        # a job that chose its threshold itself saved its curve: "t" re-opens it, Enter
        # puts its method and the picked threshold into the form
        from segdeck.core.cluster.job import ClusterJob, ClusterParams
        from segdeck.core.jobs.runner import run_job
        from segdeck.tui.screens.threshold import JobThresholdScreen

        auto_dir = near_dups.parent / "auto-run"
        run_job(ClusterJob(ClusterParams(method="minhash"), near_dups, auto_dir))
        assert (auto_dir / "threshold_curve.json").is_file()
        screen.watcher.add(auto_dir)
        await wait_for(pilot, lambda: auto_dir.resolve() in jobs.snapshots, what="auto job listed")
        jobs.select_job(auto_dir.resolve())
        jobs.focus()
        await pilot.press("t")
        await wait_for(pilot, lambda: isinstance(app.screen, JobThresholdScreen), what="saved curve")
        saved = app.screen
        assert saved.curve.method == "minhash"
        await pilot.press("down")
        picked = saved.threshold
        await pilot.press("enter")
        await wait_for(pilot, lambda: form.params is not None and form.params.method == "minhash"
                       and form.params.threshold == pytest.approx(picked, rel=1e-5), what="saved pick applied")


def slow_curve(input_path, params, emit=None):
    """A stand-in for ``sample_curve`` that takes 20 s unless stopped through ``emit``."""
    from segdeck.core.jobs.events import Progress

    for k in range(400):
        emit(Progress(what="threshold sample", done=k + 1, total=400))
        time.sleep(0.05)
    raise AssertionError("the curve was not stopped")


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_threshold_curve_progress_and_escape(near_dups, monkeypatch):
    if "cluster" not in registry.job_names():
        pytest.skip("the cluster job is not importable in this install")
    from textual.widgets import Select, Static

    from segdeck.tui.app import SegdeckApp
    from segdeck.tui.screens.threshold import ThresholdScreen

    # the job declares its curve (Job.tui_curve): a slow one here
    monkeypatch.setattr(registry.get_job_class("cluster"), "tui_curve", f"{__name__}:slow_curve")
    app = SegdeckApp(near_dups)
    async with app.run_test(size=SIZE) as pilot:
        screen, form = await choose_job(app, pilot, "cluster")
        screen.query_one("#p-method", Select).value = "ssim"
        await pilot.pause()
        screen.query_one("#folders").focus()
        await pilot.press("ctrl+t")
        status = screen.query_one("#form-status", Static)
        await wait_for(pilot, lambda: "threshold sample" in str(status.render()), what="curve progress")
        assert form.loading
        await pilot.press("ctrl+t")  # a second request while busy is refused
        await wait_for(pilot, lambda: any("being computed" in n for n in notes(app)), what="busy")
        await pilot.press("escape")
        await wait_for(pilot, lambda: any("threshold curve stopped" in n for n in notes(app)), what="stopped")
        assert not form.loading and not isinstance(app.screen, ThresholdScreen)
        assert "ready" in str(status.render())


@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    from segdeck.tui import models as downloads

    d = tmp_path / "models"
    d.mkdir()
    monkeypatch.setenv("SEGDECK_MODEL_DIR", str(d))
    downloads.forget_all()
    yield d
    downloads.forget_all()


@pytest.mark.asyncio
@pytest.mark.timeout(90)
async def test_model_picker_states_and_offline_download(near_dups, model_dir):
    if "automask" not in registry.job_names():
        pytest.skip("the automask job is not importable in this install")
    from textual.widgets import DataTable, Select, Static

    from segdeck.core.models import SAM_MODELS, list_models
    from segdeck.tui.app import SegdeckApp
    from segdeck.tui.screens.models import ModelScreen

    # a file for the SAM-HQ tiny checkpoint (its exact size is not published: only
    # presence is checked without `verify`), none for the others
    (model_dir / "sam_hq_vit_tiny.pth").write_bytes(b"x" * 100)
    app = SegdeckApp(near_dups)
    async with app.run_test(size=SIZE) as pilot:
        screen, form = await choose_job(app, pilot, "automask")
        note = screen.query_one("#note-p-model", Static)
        await wait_for(pilot, lambda: "not cached" in str(note.render()), what="model note")
        assert form.params.model == "sam2.1-tiny"
        screen.query_one("#folders").focus()
        await pilot.press("m")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelScreen) and app.screen.rows, what="model picker")
        picker = app.screen
        table = picker.query_one(DataTable)
        names = [r[0].name for r in picker.rows]
        assert names == [n for n in SAM_MODELS if n in {s.name for s, _, _ in list_models()}] and len(names) == 8
        states = {str(table.get_row(n)[0]): str(table.get_row(n)[2]) for n in names}
        assert states["sam-hq-vit_tiny"] == "cached"
        assert all(states[n] == "not cached" for n in names if n != "sam-hq-vit_tiny")
        assert picker.highlighted == "sam2.1-tiny"  # opens on the form's value
        assert "not cached" in str(picker.query_one("#models-status", Static).render())
        # offline: the download fails with its one line, nothing crashes
        await pilot.press("d")
        status = picker.query_one("#models-status", Static)
        await wait_for(pilot, lambda: "failed" in str(status.render()), timeout=60, what="download failure")
        text = str(status.render())
        assert "could not be downloaded" in text and "segdeck models import sam2.1-tiny" in text, text
        assert "Traceback" not in text and status.has_class("bad")
        await wait_for(pilot, lambda: any("could not be downloaded" in n for n in notes(app)), what="toast")
        # pick the cached one with the keys
        table.move_cursor(row=names.index("sam-hq-vit_tiny"))
        await pilot.pause()
        await pilot.press("enter")
        await wait_for(pilot, lambda: not isinstance(app.screen, ModelScreen), what="picker closed")
        await wait_for(pilot, lambda: form.params is not None and form.params.model == "sam-hq-vit_tiny",
                       what="model applied")
        assert screen.query_one("#p-model", Select).value == "sam-hq-vit_tiny"
        await wait_for(pilot, lambda: "cached ✓" in str(note.render()), what="cached note")
        # "m" from the model field itself
        screen.query_one("#p-model", Select).focus()
        await pilot.press("m")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelScreen) and app.screen.rows, what="picker again")
        assert app.screen.highlighted == "sam-hq-vit_tiny"
        await pilot.press("escape")
        await wait_for(pilot, lambda: not isinstance(app.screen, ModelScreen), what="closed")
        assert form.params.model == "sam-hq-vit_tiny"


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_model_download_progress(tmp_path, model_dir, monkeypatch):
    """A stand-in download process writes the ``.part`` file in two steps: the picker
    shows 50 %, then the model as cached."""
    import hashlib

    from textual.widgets import Static

    from segdeck.core import models as M
    from segdeck.tui import models as downloads
    from segdeck.tui.app import SegdeckApp
    from segdeck.tui.screens.models import ModelScreen

    payload = b"w" * 1000
    spec = M.ModelSpec("tui-test-model", "test", "https://example.invalid/w.bin", len(payload),
                       hashlib.sha256(payload).hexdigest(), "tui-test.bin", description="test weights")
    M.register(spec, replace=True)
    go = tmp_path / "go"
    script = (
        "import os, sys, time, pathlib\n"
        f"part = pathlib.Path({str(model_dir / 'tui-test.bin.part')!r})\n"
        "part.write_bytes(b'w' * 500)\n"
        f"go = pathlib.Path({str(go)!r})\n"
        "t0 = time.time()\n"
        "while not go.exists() and time.time() - t0 < 30: time.sleep(0.05)\n"
        "with open(part, 'ab') as fh: fh.write(b'w' * 500)\n"
        "os.replace(part, part.with_name('tui-test.bin'))\n"
        "print('downloaded tui-test-model', file=sys.stderr)\n"
    )
    monkeypatch.setattr(downloads, "download_command", lambda name: [sys.executable, "-c", script])
    try:
        root = tmp_path / "empty"
        root.mkdir()
        app = SegdeckApp(root)
        async with app.run_test(size=SIZE) as pilot:
            await pilot.pause()
            app.push_screen(ModelScreen())  # every registered model
            await wait_for(pilot, lambda: isinstance(app.screen, ModelScreen) and app.screen.rows, what="picker")
            picker = app.screen
            names = [r[0].name for r in picker.rows]
            assert "tui-test-model" in names and "sam2.1-tiny" in names
            picker.query_one("DataTable").move_cursor(row=names.index("tui-test-model"))
            await pilot.pause()
            await pilot.press("d")
            status = picker.query_one("#models-status", Static)
            await wait_for(pilot, lambda: "running 50%" in str(status.render()), timeout=20, what="50 %")
            assert "500 B / 1.0 KB" in str(status.render())
            go.write_text("")
            await wait_for(pilot, lambda: "cached at" in str(status.render()), timeout=20, what="cached")
            assert downloads.download_state("tui-test-model").state == "done"
            await wait_for(pilot, lambda: any("tui-test-model downloaded" in n for n in notes(app)), what="toast")
            await pilot.press("escape")
            await pilot.pause()
            assert not isinstance(app.screen, ModelScreen)
    finally:
        M.unregister(spec.name)
