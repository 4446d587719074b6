"""Items beyond one image and progress inside an item (issue 16): a job whose items
are CSV rows (stable ids from an id column, several input paths per row) runs through
the runner, resumes after ``kill -9``, reports sub-steps as ``ItemProgress`` events
(CLI, events.jsonl, ETA) and stops between sub-steps when cancelled."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from job_helpers import kill_after_first_done
from pydantic import Field

from segdeck.core import imageio
from segdeck.core.jobs.base import ItemCancelled, Job
from segdeck.core.jobs.events import ItemDone, ItemProgress, JobStarted, JsonlSink, read_events
from segdeck.core.jobs.items import Item, check_item_ids, csv_items
from segdeck.core.jobs.manifest import Manifest
from segdeck.core.jobs.runner import job_dir_for, run_job
from segdeck.core.jobs.status import read_job
from segdeck.core.params import JobParams

TESTS = Path(__file__).parent


class RowsParams(JobParams):
    """Rows of a CSV, several sub-steps each."""

    steps: int = Field(4, ge=1, description="sub-steps per row")
    delay: float = Field(0.0, ge=0.0, description="seconds per sub-step")


class RowsJob(Job):
    """Each CSV row (``id,label,images``: ``images`` a ``;``-list of image paths) becomes
    ``<id>.txt`` with the label and the mean grey value of each of its images."""

    name = "rows"
    Params = RowsParams
    description = "Test job: one item per CSV row, several images per item."
    input_help = "a CSV file (id, label, images)"

    @classmethod
    def check_input(cls, input_path: Path) -> None:
        if input_path.suffix.lower() != ".csv" or not input_path.is_file():
            raise ValueError(f"{input_path}: a CSV file is expected")

    def list_items(self):
        rows = csv_items(self.input_path, id_column="id")
        return [Item(r, paths=[self.input_path.parent / p for p in r.row["images"].split(";") if p], row=r.row)
                for r in rows]

    def load(self, item):
        return [imageio.load_rgb(p) for p in item.paths]

    def process(self, item, data):
        means = []
        for k in range(self.params.steps):
            time.sleep(self.params.delay)
            self.step(k + 1, self.params.steps, "part")
        means = [float(img.mean()) for img in data]
        return f"{item.row['label']} " + " ".join(f"{m:.1f}" for m in means)

    def write(self, item, result):
        out = f"{self.output_stem(item)}.txt"
        imageio.write_text_atomic(self.job_dir / out, result)
        return [out]


@pytest.fixture
def table(tmp_path):
    img = tmp_path / "img"
    img.mkdir()
    for v in (10, 20, 30):
        imageio.write_image(img / f"{v}.png", np.full((4, 4, 3), v, np.uint8))
    lines = ["id,label,images"]
    for k in range(6):
        lines.append(f"g{k},label {k},img/{10 * (1 + k % 3)}.png;img/30.png")
    src = tmp_path / "groups.csv"
    src.write_text("\n".join(lines) + "\n")
    return src


def _cli(tmp_path: Path, *args: str, job: str = "rows") -> subprocess.Popen:
    env = dict(os.environ)
    env["SEGDECK_EXTRA_JOBS"] = "rows=test_jobs_items:RowsJob"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    env["SEGDECK_STATE_DIR"] = str(tmp_path / "state")
    env["COLUMNS"] = "400"
    return subprocess.Popen([sys.executable, "-m", "segdeck", "run", job, *args],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)


def test_csv_rows_are_items_named_by_id_with_sub_step_events(table, tmp_path):
    params = RowsParams(steps=3)
    job_dir = job_dir_for(RowsJob, params, table, tmp_path / "out")
    seen: list = []
    summary = run_job(RowsJob(params, table, job_dir), sink=seen.append)
    assert summary.status == "done" and summary.total == 6 and summary.done == 6
    assert (job_dir / "g1.txt").read_text() == "label 1 20.0 30.0"
    assert sorted(p.name for p in job_dir.glob("*.txt")) == [f"g{k}.txt" for k in range(6)]
    with Manifest(job_dir, readonly=True) as m:
        assert sorted(r.item for r in m.records()) == [f"g{k}" for k in range(6)]
    steps = [e for e in seen if isinstance(e, ItemProgress) and e.item == "g2"]
    assert [(e.done, e.total, e.what) for e in steps] == [(1, 3, "part"), (3, 3, "part")]  # first and last
    assert [type(e) for e in read_events(job_dir)[0]].count(ItemProgress) == 12  # also in events.jsonl


def test_resume_after_kill_9(table, tmp_path):
    out = tmp_path / "out"
    proc = _cli(tmp_path, str(table), "--out", str(out), "--events", "--steps", "2", "--delay", "0.4")
    first, stderr = kill_after_first_done(proc)
    assert first == "g0", stderr
    job_dir = job_dir_for(RowsJob, RowsParams(steps=2, delay=0.4), table, out)
    assert read_job(job_dir).state == "interrupted"
    summary = run_job(RowsJob(RowsParams(steps=2), table, job_dir))  # the same folder, no delay
    assert summary.status == "done" and summary.skipped >= 1 and summary.skipped + summary.done == 6
    assert (job_dir / "g0.txt").read_text() == "label 0 10.0 30.0"
    assert len(list(job_dir.glob("*.txt"))) == 6 and not list(job_dir.glob(".*.tmp*"))


def test_cancel_between_sub_steps_leaves_the_item_pending(table, tmp_path):
    cancel = threading.Event()
    params = RowsParams(steps=50, delay=0.02)

    def sink(event):
        if isinstance(event, ItemProgress) and event.item == "g1" and event.done >= 5:
            cancel.set()

    job_dir = job_dir_for(RowsJob, params, table, tmp_path / "out")
    t = time.monotonic()
    summary = run_job(RowsJob(params, table, job_dir), sink=sink, cancel=cancel)
    took = time.monotonic() - t
    assert summary.status == "cancelled" and summary.done == 1 and summary.failed == 0
    assert took < 1.0 + 50 * 0.02, took  # g0 (1 s) and a few steps of g1, not the rest of g1
    with Manifest(job_dir, readonly=True) as m:
        assert m.state("g1") == "pending" and m.state("g0") == "done"
    assert not (job_dir / "g1.txt").exists()
    again = run_job(RowsJob(RowsParams(steps=50, delay=0.0), table, job_dir))
    assert again.status == "done" and again.skipped == 1 and again.done == 5


def test_step_outside_a_run_only_checks_cancel(table, tmp_path):
    job = RowsJob(RowsParams(), table, tmp_path / "j")
    job.step(1, 2, "x")  # no runner: nothing to report, no error
    job.cancel.set()
    with pytest.raises(ItemCancelled):
        job.step(2, 2, "x")


def test_eta_counts_the_part_of_an_item_already_done(tmp_path):
    job_dir = tmp_path / "job"
    job_dir.mkdir()
    (job_dir / "job.toml").write_text('job = "rows"\ninput = "x.csv"\n')
    with Manifest(job_dir) as m:
        m.add_items(["a", "b", "c", "d"])
        m.mark_done("a", 10.0, [])
    sink = JsonlSink(job_dir)
    sink(JobStarted(job="rows", total=4, todo=3, pid=os.getpid()))
    sink(ItemDone(item="a", seconds=10.0, outputs=[]))
    sink(ItemProgress(item="b", done=3, total=4, what="region"))
    sink.close()
    info = read_job(job_dir)
    assert info.state == "running" and info.eta_s == pytest.approx((3 - 0.75) * 10.0)


def test_csv_items_ids_and_errors(tmp_path):
    src = tmp_path / "t.csv"
    src.write_text("\ufeffname,path\nx,a.png\ny,/abs/b.png\nz,\n", encoding="utf-8")
    items = csv_items(src, path_columns=["path"])
    assert items == ["row-1", "row-2", "row-3"]
    assert items[0].paths == (tmp_path / "a.png",) and items[1].paths == (Path("/abs/b.png"),)
    assert items[2].paths == () and items[2].row == {"name": "z", "path": ""}
    assert csv_items(src, id_column="name") == ["x", "y", "z"]
    with pytest.raises(ValueError, match=r"no column 'id' \(columns: name, path\)"):
        csv_items(src, id_column="id")
    src.write_text("id\na\nb\na\n")
    with pytest.raises(ValueError, match="line 4: id 'a' repeats line 2"):
        csv_items(src, id_column="id")
    src.write_text("")
    with pytest.raises(ValueError, match="empty CSV"):
        csv_items(src)
    with pytest.raises(ValueError, match="twice"):
        check_item_ids(["a", Item("a")])
    with pytest.raises(ValueError, match="one line"):
        Item("a\nb")


def test_bad_csv_and_wrong_input_are_one_line_on_the_cli(table, tmp_path):
    bad = tmp_path / "bad.csv"
    bad.write_text("id,label,images\ng0,a,img/10.png\ng0,b,img/20.png\n")
    proc = _cli(tmp_path, str(bad), "--out", str(tmp_path / "out"))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2 and "Traceback" not in err
    assert [ln for ln in err.splitlines() if ln.strip()] == [f"error: {bad}, line 3: id 'g0' repeats line 2"]
    proc = _cli(tmp_path, str(tmp_path / "img"))
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    from segdeck.core.jobs.registry import jobs_for_input

    takers = jobs_for_input(tmp_path / "img")  # the image jobs (segment, automask, cluster, describe, ...)
    assert {"segment", "automask", "cluster"} <= set(takers) and "rows" not in takers
    assert err.strip() == f"error: {tmp_path / 'img'}: a CSV file is expected (jobs that take it: {', '.join(takers)})"
    proc = _cli(tmp_path, str(table), job="segment")  # an image job on a CSV: one line, and which job takes it
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2
    assert err.strip() == (f"error: {table}: not an image file (png, jpg, jpeg, tif, tiff) nor a folder of images "
                           "(jobs that take it: rows)")


def test_jobs_for_input_picks_the_jobs_by_what_they_take(table, tmp_path, monkeypatch):
    from segdeck.core.jobs import registry

    monkeypatch.setitem(registry.JOBS, "rows", "test_jobs_items:RowsJob")
    calls = []
    real = registry.get_job_class("segment").check_input.__func__

    def counting(cls, path):
        calls.append(cls.name)
        return real(cls, path)

    monkeypatch.setattr(Job, "check_input", classmethod(counting))
    assert registry.jobs_for_input(table) == ["rows"]
    assert registry.jobs_for_input(tmp_path / "img")[:3] == ["segment", "automask", "cluster"]
    assert "rows" not in registry.jobs_for_input(tmp_path / "img")
    assert calls == ["segment"] * 3  # the shared default ran once per question, not once per image job


def test_an_unexpected_error_listing_items_is_one_line_with_the_traceback_in_job_log(table, tmp_path):
    class Broken(RowsJob):
        def list_items(self):
            raise KeyError("schema")

    job_dir = tmp_path / "broken"
    summary = run_job(Broken(RowsParams(), table, job_dir))
    assert summary.status == "error" and summary.error == f"cannot list the items of {table}: KeyError: 'schema'"
    assert "Traceback" in (job_dir / "job.log").read_text()


def test_step_in_setup_sees_the_cancel(table, tmp_path):
    cancel = threading.Event()

    class LongSetup(RowsJob):
        def setup(self, emit):
            for k in range(100):
                if k == 3:
                    cancel.set()
                self.step(k, 100, "training")

    summary = run_job(LongSetup(RowsParams(), table, tmp_path / "setup"), cancel=cancel)
    assert summary.status == "cancelled" and summary.exit_code == 130 and summary.error is None


def test_partial_results_are_recorded_at_every_step_and_bad_ones_fail_the_item(table, tmp_path):
    class Captions(RowsJob):
        def process(self, item, data):
            if item == "g3":
                self.step(1, 2, "region", partial={"bad": object()})
            for k in range(1, 6):
                self.step(k, 5, "region", partial={"region": k, "caption": f"{item} part {k}"})
            return "ok"

    job_dir = tmp_path / "captions"
    summary = run_job(Captions(RowsParams(), table, job_dir))
    assert summary.done == 5 and summary.failed == 1
    partials = [e.partial for e in read_events(job_dir)[0] if isinstance(e, ItemProgress) and e.item == "g1"]
    assert partials == [{"region": k, "caption": f"g1 part {k}"} for k in range(1, 6)]  # none throttled away
    with Manifest(job_dir, readonly=True) as m:
        assert "partial must be JSON data" in m.records()[3].error

