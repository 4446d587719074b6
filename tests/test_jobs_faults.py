"""Damaged job folders and systemic faults (issue 16): a truncated or garbage
``manifest.sqlite`` is one line and a working re-run (rebuilt from the complete
outputs on disk), ``--fresh`` starts over, and a full disk stops the run at the first
ENOSPC with one line; a re-run after freeing space completes."""

from __future__ import annotations

import errno
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from segdeck.core import imageio
from segdeck.core.jobs.base import Job
from segdeck.core.jobs.events import ItemFailed, Message, read_events
from segdeck.core.jobs.manifest import Manifest
from segdeck.core.jobs.runner import job_dir_for, run_job
from segdeck.core.jobs.status import read_job
from segdeck.core.params import JobParams

TESTS = Path(__file__).parent


class PairParams(JobParams):
    """Two outputs per image."""

    gain: int = 1


class PairJob(Job):
    """Writes ``<stem>.mask.png`` and ``<stem>.txt`` per image; with a file named
    ``DISK_FULL`` in the input folder every write fails with ENOSPC (a full disk)."""

    name = "pair"
    Params = PairParams
    description = "Test job: two outputs per image."
    calls: list[str] = []

    def process(self, item, data):
        type(self).calls.append(str(item))
        return (data[..., 0] > 0).astype(np.uint8) * self.params.gain

    def write(self, item, result):
        if (self.input_path / "DISK_FULL").exists():
            raise OSError(errno.ENOSPC, "No space left on device", str(self.job_dir / f".{item}.x.tmp.png"))
        stem = self.output_stem(item)
        imageio.write_label_map(self.job_dir / f"{stem}.mask.png", result)
        imageio.write_text_atomic(self.job_dir / f"{stem}.txt", str(int(result.sum())))
        return [f"{stem}.mask.png", f"{stem}.txt"]


@pytest.fixture
def photos(tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    for i in range(5):
        imageio.write_image(src / f"{i}.png", np.full((6, 6, 3), 40 * i, np.uint8))
    return src


def _messages(job_dir: Path, level: str | None = None) -> list[str]:
    return [e.text for e in read_events(job_dir)[0] if isinstance(e, Message) and (level is None or e.level == level)]


def _cli(*args: str, tmp_path: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    env["SEGDECK_EXTRA_JOBS"] = "pair=test_jobs_faults:PairJob"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    env["SEGDECK_STATE_DIR"] = str(tmp_path / "state")
    env["COLUMNS"] = "400"
    return subprocess.run([sys.executable, "-m", "segdeck", "run", "pair", *args],
                          capture_output=True, text=True, env=env, timeout=120)


def test_truncated_manifest_is_rebuilt_from_complete_outputs(photos, tmp_path):
    params = PairParams()
    job_dir = job_dir_for(PairJob, params, photos, tmp_path / "out")
    assert run_job(PairJob(params, photos, job_dir)).done == 5
    manifest = job_dir / "manifest.sqlite"
    data = manifest.read_bytes()
    manifest.write_bytes(data[: len(data) // 2])  # cut short (a crash, a copy that stopped)
    (job_dir / "1.png.txt").unlink()  # item 1 lost one of its two outputs
    png = job_dir / "3.png.mask.png"
    png.write_bytes(png.read_bytes()[:-10])  # item 3's mask is cut short
    PairJob.calls = []
    seen: list = []
    summary = run_job(PairJob(params, photos, job_dir), sink=seen.append)
    assert summary.status == "done" and summary.skipped == 3 and summary.done == 2
    assert sorted(PairJob.calls) == ["1.png", "3.png"]  # only the incomplete items were redone
    warnings = [e.text for e in seen if isinstance(e, Message) and e.level == "warning"]
    assert len(warnings) == 1 and "manifest.sqlite was damaged" in warnings[0] and "3 of 5 items done" in warnings[0]
    assert (job_dir / "manifest.sqlite.damaged").exists()
    with Manifest(job_dir, readonly=True) as m:
        assert m.counts().done == 5
    assert imageio.read_label_map(png).shape == (6, 6)  # rewritten whole
    again = run_job(PairJob(params, photos, job_dir))
    assert again.done == 0 and again.skipped == 5 and not _messages(job_dir, "warning")[1:]


def test_garbage_manifest_is_one_line_on_the_cli_and_fresh_starts_over(photos, tmp_path):
    out = tmp_path / "out"
    first = _cli(str(photos), "--out", str(out), tmp_path=tmp_path)
    assert first.returncode == 0, first.stderr
    job_dir = Path(first.stdout.splitlines()[-1])
    (job_dir / "manifest.sqlite").write_bytes(os.urandom(3000))  # overwritten by something else
    info = read_job(job_dir)  # `segdeck jobs` says why, and what to do
    assert info.damaged and "run the job again to rebuild it" in info.reason
    second = _cli(str(photos), "--out", str(out), tmp_path=tmp_path)
    assert second.returncode == 0, second.stderr
    assert "Traceback" not in second.stderr
    damaged = [ln for ln in second.stderr.splitlines() if "damaged" in ln]
    assert len(damaged) == 1 and "rebuilt from the outputs on disk: 5 of 5 items done" in damaged[0], second.stderr
    assert "nothing to do" in second.stderr
    fresh = _cli(str(photos), "--out", str(out), "--fresh", tmp_path=tmp_path)
    assert fresh.returncode == 0, fresh.stderr
    assert "5 done" in fresh.stderr and "0 already done" in fresh.stderr and "damaged" not in fresh.stderr


def test_rebuild_without_events_uses_expected_outputs(photos, tmp_path):
    class Declares(PairJob):
        def expected_outputs(self, item):
            stem = self.output_stem(item)
            return [f"{stem}.mask.png", f"{stem}.txt"]

    params = PairParams(gain=2)
    job_dir = job_dir_for(Declares, params, photos, tmp_path / "out")
    run_job(Declares(params, photos, job_dir))
    (job_dir / "events.jsonl").unlink()
    (job_dir / "manifest.sqlite").write_bytes(b"not a database at all" * 50)
    (job_dir / "4.png.mask.png").unlink()
    summary = run_job(Declares(params, photos, job_dir))
    assert summary.skipped == 4 and summary.done == 1 and summary.status == "done"

    # a job that cannot name its outputs and has no events: everything is redone, nothing is trusted
    (job_dir / "events.jsonl").unlink()
    (job_dir / "manifest.sqlite").write_bytes(b"\0" * 5000)
    plain = run_job(PairJob(params, photos, job_dir))
    assert plain.skipped == 0 and plain.done == 5


def test_disk_full_stops_at_the_first_enospc_and_a_rerun_completes(photos, tmp_path, monkeypatch):
    """The atomic writer raises ENOSPC from the third write on: the run stops at that
    first error (no item marked failed, no further write tried) with one line."""
    attempts: list[Path] = []
    real = imageio.write_bytes_atomic

    def full_after_two(dest, data):
        if Path(dest).name == "job.toml":
            return real(dest, data)
        attempts.append(Path(dest))
        if len(attempts) > 2:
            raise OSError(errno.ENOSPC, "No space left on device", str(dest))
        return real(dest, data)

    class TextJob(PairJob):
        def write(self, item, result):
            out = f"{self.output_stem(item)}.txt"
            imageio.write_text_atomic(self.job_dir / out, str(int(result.sum())))
            return [out]

    monkeypatch.setattr(imageio, "write_bytes_atomic", full_after_two)
    params = PairParams(gain=3)
    job_dir = job_dir_for(TextJob, params, photos, tmp_path / "out")
    summary = run_job(TextJob(params, photos, job_dir))
    assert len(attempts) == 3  # stopped at the first ENOSPC
    assert summary.status == "error" and summary.done == 2 and summary.failed == 0
    assert summary.error == f"disk full at {job_dir / '2.png.txt'}: free space and re-run; done items are kept"
    assert not [e for e in read_events(job_dir)[0] if isinstance(e, ItemFailed)]
    with Manifest(job_dir, readonly=True) as m:
        assert {r.state for r in m.records()} == {"done", "pending"} and m.counts().done == 2
    monkeypatch.setattr(imageio, "write_bytes_atomic", real)  # space freed
    again = run_job(TextJob(params, photos, job_dir))
    assert again.status == "done" and again.skipped == 2 and again.done == 3


def test_disk_full_on_the_cli_is_one_line(photos, tmp_path):
    (photos / "DISK_FULL").write_text("")
    out = tmp_path / "out"
    full = _cli(str(photos), "--out", str(out), tmp_path=tmp_path)
    assert full.returncode == 2
    lines = [ln for ln in full.stderr.splitlines() if ln.strip()]
    assert [ln for ln in lines if "disk full" in ln] == lines[-1:], full.stderr
    assert "Traceback" not in full.stderr
    job_dir = job_dir_for(PairJob, PairParams(), photos, out)
    assert lines[-1] == f"error: disk full at {job_dir}: free space and re-run; done items are kept"
    (photos / "DISK_FULL").unlink()
    again = _cli(str(photos), "--out", str(out), tmp_path=tmp_path)
    assert again.returncode == 0 and "5 done" in again.stderr, again.stderr


def test_fresh_never_touches_a_folder_of_another_input(photos, tmp_path):
    from segdeck.core.errors import SetupError

    params = PairParams(gain=4)
    out = tmp_path / "shared"
    job_dir = job_dir_for(PairJob, params, photos, out)
    run_job(PairJob(params, photos, job_dir))
    other = tmp_path / "other"
    other.mkdir()
    imageio.write_image(other / "0.png", np.zeros((4, 4, 3), np.uint8))
    with pytest.raises(SetupError, match="own --out"):
        run_job(PairJob(params, other, job_dir_for(PairJob, params, other, out)), fresh=True)
    with Manifest(job_dir, readonly=True) as m:
        assert m.counts().done == 5



def test_run_stop_ends_the_run_with_its_line_and_keeps_queued_results(photos, tmp_path):
    """A job raising RunStop (a refused API key, a server gone) stops the run at the first
    one: one line, status error and exit code 2, no item failed; results computed before
    it are still written, the stopped item stays pending, and a re-run completes."""
    from segdeck.core.errors import RunStop

    stop = {"at": "2.png"}

    class StopJob(PairJob):
        def process(self, item, data):
            if str(item) == stop["at"]:
                raise RunStop("the server refused the key (401): check SEGDECK_VLM_API_KEY")
            return super().process(item, data)

    params = PairParams(gain=5)
    job_dir = job_dir_for(StopJob, params, photos, tmp_path / "out")
    summary = run_job(StopJob(params, photos, job_dir))
    assert summary.status == "error" and summary.exit_code == 2 and summary.failed == 0
    assert summary.error == "the server refused the key (401): check SEGDECK_VLM_API_KEY"
    assert summary.done == 2  # 0.png and 1.png were computed before the stop: written
    with Manifest(job_dir, readonly=True) as m:
        states = {r.item: r.state for r in m.records()}
    assert states == {"0.png": "done", "1.png": "done", "2.png": "pending", "3.png": "pending", "4.png": "pending"}
    assert not [e for e in read_events(job_dir)[0] if isinstance(e, ItemFailed)]
    stop["at"] = None  # the key fixed
    again = run_job(StopJob(params, photos, job_dir))
    assert again.status == "done" and again.skipped == 2 and again.done == 3
