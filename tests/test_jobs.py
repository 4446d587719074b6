"""The job runner: manifest, resume, per-item errors, cancel, events, atomic outputs."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
from job_helpers import kill_after_first_done

from segdeck.core import imageio
from segdeck.core.jobs.base import Job
from segdeck.core.jobs.events import ItemDone, ItemFailed, JobFinished, JobStarted, read_events
from segdeck.core.jobs.manifest import Manifest
from segdeck.core.jobs.runner import job_dir_for, run_job
from segdeck.core.jobs.status import find_job_dirs, read_job
from segdeck.core.params import JobParams


class MeanParams(JobParams):
    """Writes each image's mean colour."""

    scale: float = 1.0


class MeanJob(Job):
    name = "mean"
    Params = MeanParams
    calls: list[str] = []

    def process(self, item, data):
        type(self).calls.append(item)
        return data.reshape(-1, 3).mean(0) * self.params.scale

    def write(self, item, result):
        out = f"{self.output_stem(item)}.txt"
        imageio.write_text_atomic(self.job_dir / out, " ".join(f"{v:.3f}" for v in result))
        return [out]


@pytest.fixture
def folder(tmp_path):
    src = tmp_path / "photos"
    (src / "sub dir").mkdir(parents=True)
    for i, name in enumerate(["a.png", "b.png", "sub dir/c.png", "d.png"]):
        imageio.write_image(src / name, np.full((8, 8, 3), 10 * (i + 1), np.uint8))
    (src / "bad.png").write_text("not an image")
    return src


def test_run_resume_and_errors(folder):
    MeanJob.calls = []
    params = MeanParams()
    job_dir = job_dir_for(MeanJob, params, folder, None)
    assert job_dir.parent.name == "photos.segdeck"
    summary = run_job(MeanJob(params, folder, job_dir))
    assert summary.status == "failed" and summary.exit_code == 1
    assert summary.done == 4 and summary.failed == 1
    assert (job_dir / "sub dir__c.png.txt").read_text() == "30.000 30.000 30.000"
    with Manifest(job_dir) as m:
        recs = {r.item: r for r in m.records()}
    assert recs["bad.png"].state == "failed" and "not an image" in recs["bad.png"].error
    assert recs["a.png"].duration is not None and recs["a.png"].duration >= 0
    # resume: only the failed one is retried
    MeanJob.calls = []
    summary2 = run_job(MeanJob(params, folder, job_dir))
    assert MeanJob.calls == [] and summary2.skipped == 4 and summary2.failed == 1
    kinds = [type(e) for e in read_events(job_dir)[0]]
    assert kinds.count(JobStarted) == 2 and kinds.count(JobFinished) == 2
    assert kinds.count(ItemDone) == 4 and kinds.count(ItemFailed) == 2
    info = read_job(job_dir)
    assert info.state == "failed" and info.counts.done == 4 and info.job == "mean"
    assert find_job_dirs(folder) == [job_dir.resolve()]
    # output folders are not inputs
    assert all(".segdeck" not in str(p) for p in imageio.discover(folder.parent))
    # the user deletes the bad file: the job is done, not failed forever
    (folder / "bad.png").unlink()
    summary3 = run_job(MeanJob(params, folder, job_dir))
    assert summary3.status == "done" and summary3.exit_code == 0


def test_cancel_stops_after_current_item(folder):
    cancel = threading.Event()

    class SlowJob(MeanJob):
        def process(self, item, data):
            cancel.set()
            return super().process(item, data)

    params = MeanParams(scale=2)
    job_dir = job_dir_for(SlowJob, params, folder, folder.parent / "out")
    summary = run_job(SlowJob(params, folder, job_dir), cancel=cancel)
    assert summary.status == "cancelled" and summary.exit_code == 130
    assert summary.done == 1
    assert len(list(job_dir.glob("*.txt"))) == 1


def test_stale_temp_files_removed(folder):
    params = MeanParams(scale=3)
    job_dir = job_dir_for(MeanJob, params, folder, None)
    job_dir.mkdir(parents=True)
    (job_dir / ".a.png.abc.tmp.txt").write_text("half")
    run_job(MeanJob(params, folder, job_dir))
    assert not list(Path(job_dir).glob(".*.tmp*"))


def test_find_job_dirs_from_inside_the_input_folder_and_for_a_single_file(folder, monkeypatch):
    params = MeanParams(scale=4)
    job_dir = job_dir_for(MeanJob, params, folder, None)
    run_job(MeanJob(params, folder, job_dir))
    one = folder / "a.png"
    one_dir = job_dir_for(MeanJob, params, one, None)
    run_job(MeanJob(params, one, one_dir))
    monkeypatch.chdir(folder)
    assert job_dir.resolve() in find_job_dirs(Path("."))  # `segdeck jobs` with no folder
    assert one_dir.resolve() in find_job_dirs(one)  # a.png's jobs live in a.segdeck, not a.png.segdeck


def test_failed_per_job_output_is_an_error_not_done(folder):
    class BrokenFinalize(MeanJob):
        def finalize(self, emit):
            raise OSError("disk full")

    params = MeanParams(scale=5)
    summary = run_job(BrokenFinalize(params, folder, job_dir_for(BrokenFinalize, params, folder, None)))
    assert summary.status == "error" and summary.exit_code == 2 and "disk full" in summary.error


def test_shared_out_folder_never_mixes_two_inputs(folder, tmp_path):
    from segdeck.core.errors import SetupError

    other = tmp_path / "other"
    other.mkdir()
    imageio.write_image(other / "a.png", np.full((8, 8, 3), 200, np.uint8))  # same name as a done item
    params = MeanParams(scale=6)
    out = tmp_path / "shared"
    run_job(MeanJob(params, folder, job_dir_for(MeanJob, params, folder, out)))
    with pytest.raises(SetupError, match="own --out"):
        run_job(MeanJob(params, other, job_dir_for(MeanJob, params, other, out)))


def test_broken_display_sink_does_not_stop_the_run(folder):
    def bad_sink(event):
        raise RuntimeError("terminal went away")

    params = MeanParams(scale=4)
    job_dir = job_dir_for(MeanJob, params, folder, None)
    summary = run_job(MeanJob(params, folder, job_dir), sink=bad_sink)
    assert summary.done == 4 and summary.failed == 1
    kinds = [type(e) for e in read_events(job_dir)[0]]
    assert kinds.count(ItemDone) == 4 and kinds[-1] is JobFinished


def test_manifest_queues_updates_and_commits_on_flush_and_close(tmp_path):
    from segdeck.core.jobs.manifest import Manifest

    m = Manifest(tmp_path, commit_interval=3600)
    m.add_items(["a", "b"])
    m.mark_running("a")
    m.mark_done("a", 0.1, ["x.png"])  # the first item end commits at once
    m.mark_failed("b", 0.2, "bad file")  # another end within the interval is queued
    with Manifest(tmp_path, readonly=True) as other:  # another process sees committed rows only
        assert other.counts().done == 1 and other.counts().failed == 0
    assert m.counts().done == 1 and m.counts().failed == 1  # the writer sees its own queue
    m.mark_done("b", 0.3, [])
    m.flush()
    with Manifest(tmp_path, readonly=True) as other:
        assert other.done_items() == {"a", "b"}
    m.mark_running("a")
    m.close()  # close writes what is queued
    with Manifest(tmp_path, readonly=True) as other:
        assert other.state("a") == "running"


def test_manifest_drops_rows_of_deleted_inputs(tmp_path):
    m = Manifest(tmp_path)
    m.add_items(["a", "b", "c"])
    m.mark_done("a", 0.1, [])
    m.mark_done("b", 0.1, [])
    assert m.retain(["a", "c"]) == 1
    c = m.counts()
    assert (c.total, c.done) == (2, 1) and m.state("b") is None and m.state("a") == "done"
    m.close()


# ---------------------------------------------------------------------- recent-jobs registry


@pytest.fixture
def state_dir(tmp_path, monkeypatch):
    d = tmp_path / "state"
    monkeypatch.setenv("SEGDECK_STATE_DIR", str(d))
    return d


def _fake_job_dir(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "job.toml").write_text('job = "mean"\n')
    return path


def test_recent_jobs_remember_order_idempotent_prune(tmp_path, state_dir):
    import shutil
    import time

    from segdeck.core.jobs import registry
    from segdeck.core.jobs.base import JOB_TOML

    assert registry._JOB_MARKER == JOB_TOML
    assert registry.recent() == []  # no file yet
    a, b, c = (_fake_job_dir(tmp_path / "far away" / n) for n in ("a", "b", "c"))
    for d in (a, b, c):
        registry.remember(d)
        time.sleep(0.01)
    assert registry.recent() == [c, b, a]
    registry.remember(tmp_path / "far away" / "x" / ".." / "a")  # same folder, other spelling
    assert registry.recent() == [a, c, b]
    assert registry.recent(limit=2) == [a, c]
    entries = registry._read_entries(state_dir / "recent-jobs.json")
    assert len(entries) == 3  # idempotent: one entry per folder
    shutil.rmtree(b)
    assert registry.recent() == [a, c]
    assert len(registry._read_entries(state_dir / "recent-jobs.json")) == 2  # pruned from the file
    assert not list(state_dir.glob(".*.tmp"))  # atomic writes leave no temp file


def test_recent_jobs_concurrent_writers_keep_every_entry(tmp_path, state_dir):
    from segdeck.core.jobs import registry

    dirs = [_fake_job_dir(tmp_path / f"j{i}") for i in range(24)]
    threads = [threading.Thread(target=registry.remember, args=(d,)) for d in dirs]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert set(registry.recent()) == set(dirs)


def test_recent_jobs_never_raise_on_bad_state_dir(tmp_path, monkeypatch, caplog):
    from segdeck.core.jobs import registry

    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    monkeypatch.setenv("SEGDECK_STATE_DIR", str(blocker / "state"))  # cannot be created
    with caplog.at_level("WARNING", logger="segdeck.core.jobs.registry"):
        registry.remember(_fake_job_dir(tmp_path / "j"))
    assert "cannot record" in caplog.text
    assert registry.recent() == []
    good = tmp_path / "good"
    good.mkdir()
    (good / "recent-jobs.json").write_text("{ not json")
    monkeypatch.setenv("SEGDECK_STATE_DIR", str(good))
    assert registry.recent() == []
    registry.remember(tmp_path / "j")  # a corrupt file is replaced
    assert registry.recent() == [(tmp_path / "j").resolve()]


def test_run_job_records_job_dir_in_recent(folder, tmp_path, state_dir):
    from segdeck.core.jobs.registry import recent

    params = MeanParams(scale=2.0)
    job_dir = job_dir_for(MeanJob, params, folder, tmp_path / "elsewhere")
    run_job(MeanJob(params, folder, job_dir))
    assert recent() == [job_dir.resolve()]


# ------------------------------------------------- manifest durability (issue 15, item 2)


def _commits(m: Manifest) -> list[str]:
    seen: list[str] = []
    m._db.set_trace_callback(lambda sql: seen.append(sql) if sql.strip().upper() == "COMMIT" else None)
    return seen


def test_manifest_batches_fast_item_ends_and_flushes_the_tail_on_a_timer(tmp_path):
    m = Manifest(tmp_path, commit_interval=0.3)
    items = [f"i{k:03d}" for k in range(300)]
    m.add_items(items)
    commits = _commits(m)
    for it in items:  # a fast job: 300 items in far less than the interval
        m.mark_running(it)
        m.mark_done(it, 0.001, [])
    assert len(commits) <= 2  # batched, not one commit per item
    with Manifest(tmp_path, readonly=True) as other:
        assert other.counts().done < 300
    time.sleep(0.6)  # no further event: the flusher thread commits the tail by itself
    with Manifest(tmp_path, readonly=True) as other:
        assert other.counts().done == 300
    m.mark_running("i000")  # a long item starts: visible within the interval, too
    time.sleep(0.6)
    with Manifest(tmp_path, readonly=True) as other:
        assert other.state("i000") == "running"
    m.close()
    assert not m._flusher.is_alive()


def test_slow_items_done_is_in_the_manifest_when_item_done_is_emitted(folder, tmp_path):
    """Issue 15 item 2: the next item's mark_running used to commit first and leave the
    done of the previous item queued for a whole item; readers were one item behind."""

    class SlowJob(MeanJob):
        def process(self, item, data):
            time.sleep(0.7)  # longer than COMMIT_INTERVAL
            return super().process(item, data)

    seen = []

    def sink(event):
        if isinstance(event, ItemDone) and not seen:
            with Manifest(job_dir, readonly=True) as other:
                seen.append((other.counts().done, other.state(event.item)))

    params = MeanParams(scale=7)
    job_dir = job_dir_for(SlowJob, params, folder, tmp_path / "slow")
    summary = run_job(SlowJob(params, folder, job_dir), sink=sink, cancel=None)
    assert summary.done == 4
    assert seen == [(1, "done")]


def test_kill_after_first_done_keeps_it_done(tmp_path, monkeypatch):
    """``kill -9`` of ``segdeck run`` right after the first ItemDone event: that item
    stays done and the next run skips it."""
    import os
    import subprocess
    import sys

    from tui_dummy_job import DummyJob, DummyParams

    tests = Path(__file__).parent
    monkeypatch.setenv("SEGDECK_EXTRA_JOBS", "tuidummy=tui_dummy_job:DummyJob")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(tests), os.environ.get("PYTHONPATH")])))
    src = tmp_path / "pics"
    src.mkdir()
    for i in range(4):
        imageio.write_image(src / f"{i}.png", np.full((4, 4, 3), i, np.uint8))
    out = tmp_path / "out"
    proc = subprocess.Popen(
        [sys.executable, "-m", "segdeck", "run", "tuidummy", str(src), "--out", str(out), "--events",
         "--delay", "1.5"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    first, _ = kill_after_first_done(proc)
    assert first == "0.png"
    params = DummyParams(delay=1.5)
    job_dir = job_dir_for(DummyJob, params, src, out)
    with Manifest(job_dir, readonly=True) as other:
        assert other.state("0.png") == "done" and other.counts().done == 1
    summary = run_job(DummyJob(DummyParams(delay=0.0), src, job_dir))  # resume (same folder)
    assert summary.skipped == 1 and summary.done == 3
