"""The Ray executor (``segdeck run JOB INPUT --executor ray``) against the local one:
same outputs and manifest, per-item errors, a worker killed mid-run, a driver killed
and resumed. One local Ray (2 CPUs, no dashboard) for the whole module."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest
from job_helpers import kill_after_first_done

ray = pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'segdeck[ray]'")

from segdeck.core.jobs.events import ItemDone, Message  # noqa: E402
from segdeck.core.jobs.executors import RayExecutor  # noqa: E402
from segdeck.core.jobs.manifest import Manifest  # noqa: E402
from segdeck.core.jobs.runner import job_dir_for, run_job  # noqa: E402
from segdeck.core.samples import write_samples  # noqa: E402
from segdeck.core.segment import SegmentJob, SegmentParams  # noqa: E402


@pytest.fixture(scope="module")
def local_ray():
    """A local Ray with 2 CPUs for the module; its address (for child processes). Its
    workers can import this module (``WorkerOnlySetupJob``) and know the driver's pid."""
    saved = {k: os.environ.get(k) for k in ("PYTHONPATH", "SEGDECK_TEST_DRIVER_PID")}
    os.environ["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).parent), saved["PYTHONPATH"]]))
    os.environ["SEGDECK_TEST_DRIVER_PID"] = str(os.getpid())
    ray.init(address="local", num_cpus=2, include_dashboard=False, object_store_memory=200 * 2**20,
             logging_level="WARNING")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


class WorkerOnlySetupJob(SegmentJob):
    """``segment`` whose ``setup`` must not run on the driver (like automask's model)."""

    setup_on_driver = False

    def setup(self, emit):
        if os.getpid() == int(os.environ["SEGDECK_TEST_DRIVER_PID"]):
            raise RuntimeError("setup ran on the driver")
        emit(Message(text=f"set up in process {os.getpid()}"))


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    """The sample photos (``segdeck samples``)."""
    root = tmp_path_factory.mktemp("ray") / "photos"
    write_samples(root)
    return root


def _run(src: Path, out: Path, executor=None, sink=None):
    params = SegmentParams()
    job = SegmentJob(params, src, job_dir_for(SegmentJob, params, src, out))
    return run_job(job, executor=executor, sink=sink)


def _states(job_dir: Path) -> dict[str, tuple[str, str | None, tuple]]:
    with Manifest(job_dir, readonly=True) as m:
        return {r.item: (r.state, r.error, tuple(r.outputs or ())) for r in m.records()}


def _labels(job_dir: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(job_dir.glob("*.labels.png"))}


def test_ray_writes_the_same_label_maps_and_manifest_as_local(local_ray, photos, tmp_path):
    local = _run(photos, tmp_path / "local")
    remote = _run(photos, tmp_path / "ray", RayExecutor(workers=2))
    assert local.status == remote.status == "done"
    assert remote.done == local.done == local.total > 10
    assert _labels(remote.job_dir) == _labels(local.job_dir) and len(_labels(local.job_dir)) == local.total
    assert _states(remote.job_dir) == _states(local.job_dir)
    assert (remote.job_dir / "coco.json").read_bytes() == (local.job_dir / "coco.json").read_bytes()
    again = _run(photos, tmp_path / "ray", RayExecutor(workers=2))  # resume: nothing to do
    assert again.skipped == local.total and again.done == 0


def test_ray_send_bytes_and_a_bad_image_is_one_failed_item(local_ray, photos, tmp_path):
    src = tmp_path / "some"
    src.mkdir()
    for name in ("coffee.jpg", "coffee_16bit.tif", "rocket_exif_orientation_6.jpg"):
        (src / name).write_bytes((photos / name).read_bytes())
    (src / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n this is not an image")
    local = _run(src, tmp_path / "local")
    remote = _run(src, tmp_path / "ray", RayExecutor(workers=1, send_bytes=True))
    assert local.status == remote.status == "failed"
    assert (remote.done, remote.failed) == (local.done, local.failed) == (3, 1)
    states = _states(remote.job_dir)
    assert states == _states(local.job_dir)
    state, error, _ = states["broken.png"]
    assert state == "failed" and "\n" not in error and "broken.png" in error
    assert _labels(remote.job_dir) == _labels(local.job_dir)


def test_a_worker_killed_mid_run_loses_no_item(local_ray, photos, tmp_path):
    executor = RayExecutor(workers=2)
    events = []
    killed = []

    def sink(event):
        events.append(event)
        if isinstance(event, ItemDone) and not killed and executor.worker_pids:
            pid = next(iter(executor.worker_pids.values()))
            os.kill(pid, signal.SIGKILL)  # each worker holds 2 items in flight
            killed.append(pid)

    summary = _run(photos, tmp_path / "out", executor, sink)
    assert killed
    assert summary.status == "done" and summary.done == summary.total and summary.failed == 0
    assert {s for s, _, _ in _states(summary.job_dir).values()} == {"done"}
    assert any(isinstance(e, Message) and "worker died" in e.text for e in events)


def test_driver_killed_then_rerun_resumes(local_ray, photos, tmp_path):
    out = tmp_path / "out"
    env = {**os.environ, "RAY_ADDRESS": local_ray}
    proc = subprocess.Popen(
        [sys.executable, "-m", "segdeck", "run", "segment", str(photos), "--out", str(out), "--events",
         "--executor", "ray", "--ray-workers", "1"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
    )
    first, _ = kill_after_first_done(proc)
    assert first is not None
    job_dir = job_dir_for(SegmentJob, SegmentParams(), photos, out)
    assert _states(job_dir)[first][0] == "done"
    summary = _run(photos, out, RayExecutor(workers=2))
    assert summary.status == "done" and summary.skipped >= 1
    assert summary.skipped + summary.done == summary.total
    assert {s for s, _, _ in _states(job_dir).values()} == {"done"}


def test_a_job_may_keep_its_setup_off_the_driver(local_ray, photos, tmp_path):
    src = tmp_path / "two"
    src.mkdir()
    for name in ("coffee.jpg", "chelsea.jpg"):
        (src / name).write_bytes((photos / name).read_bytes())
    params = SegmentParams()
    job = WorkerOnlySetupJob(params, src, tmp_path / "out")
    events = []
    summary = run_job(job, executor=RayExecutor(workers=1), sink=events.append)
    assert summary.status == "done" and summary.done == 2
    assert any(isinstance(e, Message) and e.text.startswith("set up in process") for e in events)


def test_without_ray_the_cli_names_the_extra(tmp_path, photos, monkeypatch, capsys):
    from segdeck.core.jobs import executors

    def missing():
        raise executors.SetupError("--executor ray needs Ray: pip install 'segdeck[ray]'")

    monkeypatch.setattr(executors, "import_ray", missing)
    from segdeck.cli import main

    code = main(["run", "segment", str(photos), "--out", str(tmp_path), "--executor", "ray"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and "segdeck[ray]" in err and len(err.splitlines()) == 1
