"""The TUI on a folder holding a propagate project (issue: defects a newcomer found).

A project is ``project.toml`` (the spec) + ``meta.csv`` + ``photos/`` + the reference
store ``project.refs/`` (label maps as PNG, a hidden ``.candidates/`` cache).

1. Picking the spec while an image job's form is shown offers, with one key (``s``),
   the job that takes it; the offer leads the status line, readable at 80 columns.
2. ``a`` on the spec passes the form's ``checkpoint`` to ``segdeck annotate refs``
   (the job's ``tui_annotate_fields``).
3. The reference store's label maps are no photos: the folder tree neither lists the
   store nor counts its PNGs.
4. A cancelled run's bar keeps the share it showed (the item being computed went back
   to pending; the bar does not go from 27 % back to 20 %).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest
from tui_helpers import form_status, ready_form, select_path, wait_for

from segdeck.core import imageio

NARROW = (80, 30)
PHOTOS = [("a1", "ant"), ("a2", "ant"), ("a3", "ant"), ("b1", "bee"), ("b2", "bee")]


@pytest.fixture
def project(tmp_path, monkeypatch):
    """``root/`` with a propagate project: 5 photos in 2 groups, the CSV, the spec and
    a reference store holding 2 label maps (+ 1 in its hidden candidate cache)."""
    monkeypatch.setenv("SEGDECK_STATE_DIR", str(tmp_path / "state"))
    root = (tmp_path / "root").resolve()
    for n, (key, group) in enumerate(PHOTOS):
        path = root / "photos" / group / f"{key}.jpg"
        path.parent.mkdir(parents=True, exist_ok=True)
        imageio.write_image(path, np.full((16, 24, 3), 30 * n, np.uint8))
    (root / "meta.csv").write_text("id,specimen\n" + "".join(f"{k},{g}\n" for k, g in PHOTOS))
    (root / "project.toml").write_text(
        'csv = "meta.csv"\nkey = "id"\ntemplate = "{specimen}/{id}.jpg"\ngroup_by = ["specimen"]\n'
        'root = "photos"\nreferences = 1\nseed = 0\n')
    refs = root / "project.refs"
    for key, group in PHOTOS[:1] + PHOTOS[3:4]:
        (refs / group).mkdir(parents=True, exist_ok=True)
        imageio.write_image(refs / group / f"{key}.png", np.ones((16, 24), np.uint8))
    (refs / ".candidates").mkdir()
    imageio.write_image(refs / ".candidates" / "c.png", np.ones((16, 24), np.uint8))
    return root


def test_scan_counts_no_reference_label_maps(project):
    from segdeck.tui.widgets.folder_tree import scan_folders

    children, counts, _painted, files = scan_folders(project, (".toml",))
    assert counts[project] == len(PHOTOS) and counts[project / "photos"] == len(PHOTOS)
    assert project / "project.refs" not in children[project] and project / "project.refs" not in counts
    assert files[project] == [project / "project.toml"]

    # a store under another name is known by its marker (discover skips it too)
    from segdeck.core.imageio import STORE_MARKER

    (project / "project.refs").rename(project / "labels")
    (project / "labels" / STORE_MARKER).write_text("")
    children, counts, _painted, _files = scan_folders(project, (".toml",))
    assert counts[project] == len(PHOTOS) and project / "labels" not in children[project]


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_tree_neither_lists_nor_counts_the_reference_store(project):
    from segdeck.tui.app import SegdeckApp
    from segdeck.tui.widgets.folder_tree import FolderTree

    app = SegdeckApp(project)
    async with app.run_test(size=NARROW) as pilot:
        tree = app.screen.query_one(FolderTree)
        await wait_for(pilot, lambda: tree.scanned, what="folders counted")
        assert tree.counts[project] == len(PHOTOS)  # 5 photos, not 7 with 2 reference label maps
        assert all(n.data != project / "project.refs" for n in tree._walk(tree.root))
        assert "(5 images)" in str(tree.root.label)


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_picked_spec_offers_the_job_that_takes_it_with_one_key(project):
    from textual.widgets import Button, Static

    from segdeck.tui.app import SegdeckApp
    from segdeck.tui.widgets.folder_tree import FolderTree
    from segdeck.tui.widgets.param_form import ParamForm

    spec = project / "project.toml"
    app = SegdeckApp(project)
    async with app.run_test(size=NARROW) as pilot:
        screen, form = await ready_form(app, pilot, job="segment")
        tree = screen.query_one(FolderTree)
        tree.focus()
        await select_path(pilot, tree, spec)
        # segment's form: s offers propagate, first in the line
        await wait_for(pilot, lambda: form_status(screen).startswith("s: switch to propagate"), what="the offer")
        # then segment's reason, without the path the input line shows
        assert form_status(screen).startswith("s: switch to propagate · segment: not an image file")
        status = screen.query_one("#form-status", Static)
        assert status.region.width >= len("s: switch to propagate · segment"), status.region  # at 80 columns
        assert screen.query_one("#run", Button).disabled
        line = screen.query_one("#input-line", Static)
        assert str(line.content) == "input: root/project.toml (input for: propagate)"
        assert line.region.width >= len(str(line.content)), line.region  # whole at 80 columns
        await pilot.press("s")
        await wait_for(pilot, lambda: screen.job_name == "propagate" and form.model is screen.jobs["propagate"].Params
                       and form.params is not None, what="propagate's form")
        await wait_for(pilot, lambda: form_status(screen) == "ready: project.toml → Ctrl+R", what="ready")
        assert screen.offered_job is None
        # back on the photos folder with propagate's form: s offers the first image job
        await select_path(pilot, tree, project / "photos")
        await wait_for(pilot, lambda: form_status(screen).startswith("s: switch to segment"), what="offer of a folder")
        await pilot.press("s")
        await wait_for(pilot, lambda: screen.job_name == "segment" and form.model is screen.jobs["segment"].Params,
                       what="segment's form")
        await wait_for(pilot, lambda: form_status(screen).startswith("ready: photos"), what="ready on photos")
        assert isinstance(screen.query_one(ParamForm), ParamForm)


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_annotate_refs_gets_the_forms_checkpoint(project, monkeypatch):
    from segdeck.tui import launch
    from segdeck.tui.app import SegdeckApp
    from segdeck.tui.widgets.folder_tree import FolderTree

    spec = project / "project.toml"
    ckpt = project / "fine-tuned.pt"
    ckpt.write_bytes(b"weights")
    started = []
    monkeypatch.setattr(launch, "annotate_available", lambda: True)
    monkeypatch.setattr(launch, "annotate_command", lambda mode, path, method=None: [
        sys.executable, "-c", "import json; print(json.dumps({'saved': 'refs'}))", mode, str(path)])
    real_start = launch.start_annotate
    monkeypatch.setattr(launch, "start_annotate", lambda cmd: started.append(cmd) or real_start(cmd))
    app = SegdeckApp(project)
    async with app.run_test(size=NARROW) as pilot:
        screen, form = await ready_form(app, pilot, job="propagate")
        form.apply_values({"checkpoint": str(ckpt)})
        await wait_for(pilot, lambda: form.params is not None and form.params.checkpoint == str(ckpt),
                       what="checkpoint in the form")
        tree = screen.query_one(FolderTree)
        tree.focus()
        await select_path(pilot, tree, spec)
        await wait_for(pilot, lambda: screen.input_path == spec, what="spec picked")
        await pilot.press("a")
        await wait_for(pilot, lambda: any(ln.text == "annotate finished" for ln in screen.annotator.log_lines),
                       what="annotate ran")
        assert len(started) == 1
        assert started[0][-4:] == ["refs", str(spec), "--checkpoint", str(ckpt)]
        assert "--model" not in started[0]  # propagate's form has no model field: the spec's model
        assert screen.annotator.log_lines[0].text == f"annotate refs {spec} --checkpoint {ckpt}"


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_cancelled_bar_does_not_go_back(project):
    from segdeck.core.jobs.events import ItemDone, ItemProgress, JobFinished, JobStarted, JsonlSink
    from segdeck.core.jobs.manifest import Manifest
    from segdeck.tui.app import SegdeckApp
    from segdeck.tui.widgets.job_list import JobList

    job_dir = project / "project.segdeck" / "propagate-abc"
    job_dir.mkdir(parents=True)
    (job_dir / "job.toml").write_text(f'job = "propagate"\ninput = "{project / "project.toml"}"\n')
    items = [f"i{k}" for k in range(10)]
    with Manifest(job_dir) as m:
        m.add_items(items)
        m.mark_done("i0", 1.0, [])
        m.mark_done("i1", 1.0, [])
        m.mark_running("i2")
    sink = JsonlSink(job_dir)
    sink(JobStarted(job="propagate", total=10, todo=10, pid=os.getpid()))
    sink(ItemDone(item="i0", seconds=1.0, outputs=[]))
    sink(ItemDone(item="i1", seconds=1.0, outputs=[]))
    sink(ItemProgress(item="i2", done=2, total=3, what="propagate"))
    app = SegdeckApp(project)
    async with app.run_test(size=NARROW) as pilot:
        jobs = app.screen.query_one(JobList)

        def snap():
            return jobs.snapshots.get(job_dir)

        await wait_for(pilot, lambda: snap() is not None and snap().state == "running" and snap().in_progress > 0,
                       what="the running job listed")
        running = snap().fraction
        assert running == pytest.approx(2.667 / 10, abs=1e-3)  # 27 %
        # cancelled: the item being computed is pending again, the run ends
        with Manifest(job_dir) as m:
            m.mark_pending("i2")
        sink(JobFinished(status="cancelled", done=2, failed=0, skipped=0, seconds=3.0))
        sink.close()
        await wait_for(pilot, lambda: snap().state == "cancelled", what="cancelled")
        s = snap()
        assert s.done == 2 and s.in_progress == 0.0  # the counts are the manifest's
        assert s.fraction == pytest.approx(running)  # the bar stays at 27 %, not 20 %
        cells = jobs.get_row(str(job_dir))
        assert any("27%" in str(c) for c in cells), cells
