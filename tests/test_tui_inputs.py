"""Inputs other than a folder of images, sub-steps and windows in the TUI (issue 16).

- A CSV-driven job (``tests/tui_dummy_job.py:CsvJob``) is picked from the folder tree:
  the CSV file is listed there (the job declares ``tui_input_files``), picking it makes
  it the input, the form says why an image job does not take it and offers (``s``)
  the CSV job, which runs on it to the end with its sub-steps ("part k/n") and an ETA
  shown while an item runs.
- The job watcher turns ``ItemProgress`` events into the snapshot's step text, the
  progress share and the ETA.
- ``w`` opens ``segdeck view`` on the selected job, ``a`` on a spec file opens the
  annotate mode its job declares (``tui_annotate``); both through fake commands.
"""

from __future__ import annotations

import json
import os
import sys
import time

import numpy as np
import pytest
from tui_helpers import TESTS, form_status, ready_form, select_path, wait_for

from segdeck.core import imageio

SIZE = (120, 40)
JOBS = {"tuidummy": "tui_dummy_job:DummyJob", "tuicsv": "tui_dummy_job:CsvJob"}


@pytest.fixture
def two_jobs(monkeypatch, tmp_path):
    """The image dummy job and the CSV job, here and in the ``segdeck run`` children;
    a recent-jobs registry of this test's own."""
    from segdeck.core.jobs import registry

    monkeypatch.setattr(registry, "JOBS", dict(JOBS))
    monkeypatch.setenv("SEGDECK_EXTRA_JOBS", ",".join(f"{k}={v}" for k, v in JOBS.items()))
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    monkeypatch.setenv("SEGDECK_STATE_DIR", str(tmp_path / "state"))


@pytest.fixture
def root(tmp_path):
    """``root/photos`` (3 images), ``root/tables/groups.csv`` (3 rows), a CSV the CSV
    job refuses (no ``text`` column) and a file nobody takes."""
    root = tmp_path / "root"
    (root / "photos").mkdir(parents=True)
    for i in range(3):
        imageio.write_image(root / "photos" / f"p{i}.png", np.full((8, 8, 3), 40 * i, np.uint8))
    tables = root / "tables"
    tables.mkdir()
    (tables / "groups.csv").write_text("id,text\nr1,alpha\nr2,beta\nr3,gamma\n")
    (tables / "other.csv").write_text("id,words\nq1,x\n")
    (tables / "notes.txt").write_text("not an input\n")
    return root.resolve()


# ---- the watcher ----------------------------------------------------------------------


def test_watcher_shows_sub_steps_and_eta_from_them(tmp_path):
    from segdeck.core.jobs.events import ItemDone, ItemProgress, JobFinished, JobStarted, JsonlSink
    from segdeck.core.jobs.manifest import Manifest
    from segdeck.tui.jobwatch import RATE_WINDOW_S, JobWatcher
    from segdeck.tui.widgets.job_summary import summary_text

    job_dir = tmp_path / "in.segdeck" / "j1"
    job_dir.mkdir(parents=True)
    (job_dir / "job.toml").write_text('job = "x"\ninput = "/in"\n')
    with Manifest(job_dir) as m:
        m.add_items(["a", "b", "c", "d"])
    sink = JsonlSink(job_dir)
    start = time.time() - 12.0
    sink(JobStarted(job="x", total=4, todo=4, pid=os.getpid(), t=start))
    sink(ItemProgress(item="a", done=12, total=40, what="region", t=start + 1))
    w = JobWatcher([tmp_path / "in"], recent=0)
    snap = w.poll(force_scan=True)[0][0]
    assert snap.state == "running" and snap.step == "a: region 12/40"
    assert snap.in_progress == pytest.approx(0.3) and snap.fraction == pytest.approx(0.3 / 4)
    # one sub-step, nothing done, no item time in the manifest: the run's rate so far
    # (0.3 item in the time since it started); 3.7 items are left
    elapsed = time.time() - start
    assert snap.eta_s == pytest.approx(3.7 * elapsed / 0.3, rel=0.05)
    assert "now: a: region 12/40 · ETA" in summary_text(snap, None).plain
    with Manifest(job_dir) as m:
        m.mark_done("a", 100.0, [])  # a mean item time the rate below must win over
    sink(ItemDone(item="a", seconds=100.0, outputs=[], t=start + 6))
    sink(ItemProgress(item="b", done=1, total=4, what="frame", partial="a red car", t=start + 7))
    snap = w.poll()[0][0]
    assert snap.step == "b: frame 1/4: a red car" and snap.in_progress == pytest.approx(0.25)
    assert snap.done == 1 and snap.fraction == pytest.approx(1.25 / 4)
    # as the CLI bar: items left over the rate of the events (0.3 -> 1.25 items in 6 s)
    assert snap.eta_s == pytest.approx((4 - 1 - 0.25) / (0.95 / 6))
    # the rate counts the last RATE_WINDOW_S seconds of events only: at start + 33 s the
    # sample at start + 1 s is out, 1.0 -> 1.75 items from start + 6 s on
    later = start + 3 + RATE_WINDOW_S
    sink(ItemProgress(item="b", done=3, total=4, what="frame", t=later))
    snap = w.poll()[0][0]
    assert snap.eta_s == pytest.approx((4 - 1 - 0.75) / (0.75 / (later - (start + 6))))
    sink(ItemDone(item="b", seconds=1.0, outputs=[]))
    snap = w.poll()[0][0]
    assert snap.step is None and snap.in_progress == 0.0  # nothing being computed
    sink(ItemProgress(item="c", done=2, total=4, what="frame"))
    sink(JobFinished(status="cancelled", done=2, failed=0, skipped=0, seconds=1.0))
    sink.close()
    snap = w.poll()[0][0]
    assert snap.state == "cancelled" and snap.step is None and snap.eta_s is None and snap.in_progress == 0.0
    assert "now:" not in summary_text(snap, None).plain


# ---- the app ---------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.timeout(90)
async def test_csv_job_picked_from_the_folder_tree_runs_with_sub_steps(root, two_jobs):
    from textual.widgets import Button, Select

    from segdeck.tui.app import SegdeckApp
    from segdeck.tui.widgets.folder_tree import FolderTree
    from segdeck.tui.widgets.job_list import JobList
    from segdeck.tui.widgets.job_summary import JobSummary
    from segdeck.tui.widgets.param_form import ParamForm

    csv = root / "tables" / "groups.csv"
    app = SegdeckApp(root)
    async with app.run_test(size=SIZE) as pilot:
        screen, form = await ready_form(app, pilot, job="tuidummy")
        tree = screen.query_one(FolderTree)
        # the CSV files are listed (the CSV job declares ".csv"), other files are not
        await wait_for(pilot, lambda: csv in tree.files.get(root / "tables", []), what="CSV listed in the tree")
        assert tree.files[root / "tables"] == [csv, root / "tables" / "other.csv"]
        tree.focus()
        await select_path(pilot, tree, csv)
        await wait_for(pilot, lambda: screen.input_is_file and screen.input_path == csv, what="CSV picked")
        run = screen.query_one("#run", Button)
        # the image job does not take it: the status line says why and names the job that does
        await wait_for(pilot, lambda: form_status(screen).startswith("s: switch to "), what="refusal")
        # the job that takes it first, with its key: the status line is cut at 80 columns
        assert form_status(screen).startswith("s: switch to tuicsv · tuidummy: ")
        assert "not an image file" in form_status(screen)
        assert run.disabled
        assert "input for: tuicsv" in str(screen.query_one("#input-line").content)
        await pilot.press("ctrl+r")
        await pilot.pause()
        assert not screen.query_one(JobList).snapshots  # nothing started
        # the CSV job takes it
        screen.query_one("#job-select", Select).value = "tuicsv"
        await wait_for(pilot, lambda: form.model is screen.jobs["tuicsv"].Params and form.params is not None,
                       what="CSV job's form")
        await wait_for(pilot, lambda: not run.disabled, what="run enabled")
        assert form_status(screen) == "ready: groups.csv → Ctrl+R"
        form.apply_values({"steps": 30, "delay": 0.05})
        await wait_for(pilot, lambda: form.params is not None and form.params.steps == 30, what="values applied")
        await pilot.press("ctrl+r")
        jobs = screen.query_one(JobList)
        summary = screen.query_one(JobSummary)

        def csv_job():
            return next((s for s in jobs.snapshots.values() if s.job == "tuicsv"), None)

        # while an item runs: its sub-step in the job summary, the bar inside the item, an ETA
        await wait_for(pilot, lambda: csv_job() is not None and csv_job().step is not None
                       and csv_job().in_progress > 0 and (csv_job().eta_s or 0) > 0, timeout=40,
                       what="a sub-step and an ETA shown")
        snap = csv_job()
        assert snap.state == "running" and snap.step.startswith(("r1: part ", "r2: part ", "r3: part "))
        assert snap.step.endswith("/30")
        assert snap.fraction > (snap.done + snap.failed) / snap.total
        await wait_for(pilot, lambda: "now: r" in summary.content.plain, what="the summary shows the step")
        assert "/30 · ETA " in summary.content.plain
        await wait_for(pilot, lambda: csv_job().state == "done", timeout=40, what="CSV job done")
        snap = csv_job()
        assert snap.done == snap.total == 3 and snap.input == str(csv)
        assert {p.name: p.read_text() for p in snap.job_dir.glob("*.txt")} == {
            "r1.txt": "ALPHA", "r2.txt": "BETA", "r3.txt": "GAMMA"}
        assert "now:" not in summary.content.plain
        # a folder with the CSV job picked: the job's own check says why not
        await select_path(pilot, tree, root / "photos")
        await wait_for(pilot, lambda: not screen.input_is_file and screen.input_path == root / "photos",
                       what="folder picked")
        # the image job takes the folder: s offers it, then the CSV job's reason
        await wait_for(pilot, lambda: form_status(screen).startswith("s: switch to tuidummy · tuicsv: "),
                       what="refusal of a folder")
        assert "a CSV file (id, text) is expected" in form_status(screen) and run.disabled
        # a CSV without the column it needs: refused with the job's reason, by every job
        await select_path(pilot, tree, root / "tables" / "other.csv")
        await wait_for(pilot, lambda: "no column 'text'" in form_status(screen), what="bad CSV refused")
        # no offer: the job's own reason right after its name (readable at 80 columns)
        assert form_status(screen).startswith("tuicsv: ") and "no job takes it" in str(screen.query_one("#input-line").content)
        assert isinstance(screen.query_one(ParamForm), ParamForm)


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_view_and_reference_windows_start_from_their_keys(root, two_jobs, monkeypatch):
    from segdeck.core.jobs.events import JobFinished, JobStarted, JsonlSink
    from segdeck.tui import launch
    from segdeck.tui.app import SegdeckApp
    from segdeck.tui.widgets.folder_tree import FolderTree
    from segdeck.tui.widgets.job_list import JobList
    from segdeck.tui.widgets.job_log import JobLog

    # a finished job of the CSV job on groups.csv (its folder as the runner names it)
    job_dir = root / "tables" / "groups.segdeck" / "tuicsv-abc"
    job_dir.mkdir(parents=True)
    (job_dir / "job.toml").write_text(f'job = "tuicsv"\ninput = "{root / "tables" / "groups.csv"}"\n')
    sink = JsonlSink(job_dir)
    sink(JobStarted(job="tuicsv", total=3, todo=3, pid=os.getpid()))
    sink(JobFinished(status="done", done=3, failed=0, skipped=0, seconds=1.0))
    sink.close()

    def window(name):
        # a window command that prints one JSON line, as the real ones do
        return [sys.executable, "-c", f"import json; print(json.dumps({{'saved': {name!r}}}))"]

    views, annotates = [], []
    monkeypatch.setattr(launch, "view_available", lambda: True)
    shown = {"event": "shown", "index": 0, "image": "p0.png", "mask": "p0.labels.png", "opacity": 50}
    monkeypatch.setattr(launch, "view_command", lambda path: views.append(path) or [
        sys.executable, "-c", f"print({json.dumps(json.dumps(shown))})"])
    monkeypatch.setattr(launch, "annotate_available", lambda: True)
    monkeypatch.setattr(launch, "annotate_command",
                        lambda mode, path, method=None: annotates.append((mode, path, method)) or window("refs.json"))
    app = SegdeckApp(root)
    async with app.run_test(size=SIZE) as pilot:
        screen, _ = await ready_form(app, pilot, job="tuidummy")
        jobs = screen.query_one(JobList)
        # the window's lines as the controller keeps them (the log pane shows them until a
        # job is chosen again: the focus below may choose it after the key)
        await wait_for(pilot, lambda: jobs.selected_job == job_dir, what="the job listed")
        jobs.focus()
        await pilot.press("w")
        await wait_for(pilot, lambda: len(views) == 1, what="view started")
        await wait_for(pilot, lambda: any(ln.text == "view finished" for ln in screen.annotator.log_lines),
                       what="view ran")
        lines = [ln.text for ln in screen.annotator.log_lines]
        assert views == [job_dir]
        assert lines == [f"view {job_dir}", "shown p0.png with p0.labels.png", "view finished"]
        # a on the spec file: the annotate mode the job that takes it declares
        tree = screen.query_one(FolderTree)
        await wait_for(pilot, lambda: root / "tables" in tree.files, what="files listed")
        tree.focus()
        await select_path(pilot, tree, root / "tables" / "groups.csv")
        await wait_for(pilot, lambda: screen.input_path == root / "tables" / "groups.csv", what="CSV picked")
        await pilot.press("a")
        await wait_for(pilot, lambda: any(ln.text == "annotate finished" for ln in screen.annotator.log_lines),
                       what="refs ran")
        assert annotates == [("refs", root / "tables" / "groups.csv", None)]
        assert [ln.text for ln in screen.annotator.log_lines][1] == "saved refs.json"
        log = screen.query_one(JobLog)
        assert log.source == "annotate" and any(ln.text.endswith(" saved refs.json") for ln in log.lines)
        # a file no job annotates: a word, no process
        await select_path(pilot, tree, root / "tables" / "other.csv")
        await wait_for(pilot, lambda: screen.input_path == root / "tables" / "other.csv", what="other CSV picked")
        await pilot.press("a")
        await pilot.pause()
        assert len(annotates) == 1
        assert any("no annotate window for other.csv" in n.message for n in app._notifications)
        # a folder: annotate paint, as before
        await select_path(pilot, tree, root / "photos")
        await wait_for(pilot, lambda: screen.input_path == root / "photos", what="folder picked")
        await pilot.press("a")
        await wait_for(pilot, lambda: len(annotates) == 2, what="paint started")
        assert annotates[1][:2] == ("paint", root / "photos")
