"""Bounded pipeline (issue 16): back-pressure keeps memory flat when the writer is the
slow stage, and a cancel stops within seconds leaving computed items written or pending.

``BulkJob`` needs no image decode: its input is a text file holding the item count,
each item's result is ``payload_kb`` KiB of memory and its writer sleeps
``write_delay`` seconds. It is registered for ``segdeck run`` child processes through
``SEGDECK_EXTRA_JOBS`` (this module is importable with ``tests/`` on PYTHONPATH).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
from pydantic import Field

from segdeck.core import imageio
from segdeck.core.jobs.base import Job
from segdeck.core.jobs.items import Item
from segdeck.core.jobs.manifest import Manifest
from segdeck.core.jobs.runner import job_dir_for, run_job
from segdeck.core.jobs.status import read_job
from segdeck.core.params import JobParams

TESTS = Path(__file__).parent


class BulkParams(JobParams):
    """Many tiny items, a slow writer."""

    payload_kb: int = Field(256, ge=1, description="KiB of memory per computed result")
    write_delay: float = Field(0.002, ge=0.0, description="seconds the writer takes per item")


class BulkJob(Job):
    name = "bulk"
    Params = BulkParams
    description = "Test job: N items without image decode, results of payload_kb KiB, a slow writer."
    input_help = "a text file holding the number of items"

    @classmethod
    def check_input(cls, input_path: Path) -> None:
        if not input_path.is_file():
            raise ValueError(f"{input_path}: a text file holding the number of items is expected")

    def list_items(self):
        n = int(self.input_path.read_text().strip())
        return [Item(f"n{i:05d}") for i in range(n)]

    def load(self, item):
        return int(item[1:])

    def process(self, item, data):
        # a fresh, touched buffer: an unbounded write queue would hold every one of them
        return np.full(self.params.payload_kb * 1024, data % 251, np.uint8)

    def write(self, item, result):
        time.sleep(self.params.write_delay)
        out = f"{self.output_stem(item)}.txt"
        imageio.write_text_atomic(self.job_dir / out, f"{int(result[0])} {result.size}")
        return [out]


def _counted_input(tmp_path: Path, n: int) -> Path:
    src = tmp_path / "count.txt"
    src.write_text(str(n))
    return src


def test_write_queue_is_bounded_when_the_writer_is_slow(tmp_path):
    """Compute is ~100x faster than writing: results waiting for the writer never
    exceed the queue (+ the one being written, + the one waiting to be queued)."""
    lock = threading.Lock()
    live = {"now": 0, "max": 0}

    class Counting(BulkJob):
        def process(self, item, data):
            with lock:
                live["now"] += 1
                live["max"] = max(live["max"], live["now"])
            return super().process(item, data)

        def write(self, item, result):
            try:
                return super().write(item, result)
            finally:
                with lock:
                    live["now"] -= 1

    params = BulkParams(payload_kb=4, write_delay=0.003)
    src = _counted_input(tmp_path, 200)
    job_dir = job_dir_for(Counting, params, src, tmp_path / "out")
    summary = run_job(Counting(params, src, job_dir), write_queue=3)
    assert summary.status == "done" and summary.done == 200
    assert live["max"] <= 3 + 2, live
    assert len(list(job_dir.glob("n*.txt"))) == 200


def test_cancel_with_a_slow_writer_leaves_the_backlog_pending(tmp_path):
    """A cancel with results queued for a slow writer: written for at most drain_s,
    the others pending; nothing half-written; the next run finishes the job."""
    cancel = threading.Event()

    class CancelEarly(BulkJob):
        def process(self, item, data):
            if item == "n00006":
                cancel.set()
            return super().process(item, data)

    params = BulkParams(payload_kb=1, write_delay=0.5)
    src = _counted_input(tmp_path, 20)
    job_dir = job_dir_for(CancelEarly, params, src, tmp_path / "out")
    t = time.monotonic()
    summary = run_job(CancelEarly(params, src, job_dir), cancel=cancel, write_queue=4, drain_s=0.3)
    took = time.monotonic() - t
    assert summary.status == "cancelled" and summary.exit_code == 130
    # n00006 is computed once the writer took n00001 (back-pressure); without a drain
    # limit the 7 computed items take 3.5 s to write, with it about 3 writes (1.5 s)
    assert took < 2.8, took
    assert 1 <= summary.done <= 4
    with Manifest(job_dir, readonly=True) as m:
        states = {r.item: r.state for r in m.records()}
    done = {i for i, s in states.items() if s == "done"}
    assert len(done) == summary.done and set(states.values()) <= {"done", "pending"}
    assert {p.name for p in job_dir.glob("n*.txt")} == {f"{i}.txt" for i in done}
    assert not list(job_dir.glob(".*.tmp*"))
    again = run_job(BulkJob(BulkParams(payload_kb=1, write_delay=0.0), src, job_dir))  # same folder, fast
    assert again.status == "done" and again.skipped == summary.done and again.done == 20 - summary.done


def _vm_hwm_mib(pid: int) -> float:
    """Peak resident memory of a live process (Linux /proc), MiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    raise AssertionError("no VmHWM")


def test_5000_items_flat_memory_and_sigint_within_5_s(tmp_path):
    """``segdeck run`` on 5,000 items whose compute outpaces a slow writer: peak RSS
    stays far under 1 GiB (an unbounded queue would hold ~1.2 GB of results), and
    SIGINT ends the process within 5 s (an unbounded backlog: ~8 s) as ``cancelled``."""
    n = 5000
    src = _counted_input(tmp_path, n)
    out = tmp_path / "out"
    env = dict(os.environ)
    env["SEGDECK_EXTRA_JOBS"] = "bulk=test_jobs_pipeline:BulkJob"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    env["SEGDECK_STATE_DIR"] = str(tmp_path / "state")
    proc = subprocess.Popen(
        [sys.executable, "-m", "segdeck", "run", "bulk", str(src), "--out", str(out), "--events",
         "--payload-kb", "256", "--write-delay", "0.002"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )
    done = 0
    peak = None
    stopped_in = None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if json.loads(line).get("kind") == "ItemDone":
                done += 1
                if done == 1000:
                    peak = _vm_hwm_mib(proc.pid)
                    t = time.monotonic()
                    proc.send_signal(signal.SIGINT)
                    break
        rest = proc.stdout.read()  # drain (the child must not block on a full pipe)
        proc.wait(30)
        stopped_in = time.monotonic() - t
    finally:
        proc.kill()
        proc.wait(30)
        stderr = proc.stderr.read()
        proc.stdout.close()
        proc.stderr.close()
    assert peak is not None, stderr
    assert peak < 512, f"peak RSS {peak:.0f} MiB"
    assert stopped_in < 5.0, f"SIGINT took {stopped_in:.1f} s"
    assert proc.returncode == 130, stderr
    assert "Traceback" not in stderr
    finished = [json.loads(x) for x in rest.splitlines() if '"JobFinished"' in x]
    assert finished and finished[-1]["status"] == "cancelled"
    job_dir = job_dir_for(BulkJob, BulkParams(payload_kb=256, write_delay=0.002), src, out)
    info = read_job(job_dir)
    assert info.state == "cancelled" and 1000 <= info.counts.done < n
    assert len(list(job_dir.glob("n*.txt"))) == info.counts.done
    assert not list(job_dir.glob(".*.tmp*"))
    kinds = [e for e in (job_dir / "events.jsonl").read_text().splitlines() if "ItemDone" in e]
    assert len(kinds) == info.counts.done


def test_second_interrupt_skips_the_per_job_outputs_of_a_cancelled_run(tmp_path):
    """A slow finalize after a cancel: the user is told, and a second Ctrl+C (the CLI
    raises KeyboardInterrupt) skips it; the run still ends as cancelled."""
    cancel = threading.Event()
    seen: list = []

    class SlowFinalize(BulkJob):
        def process(self, item, data):
            if item == "n00002":
                cancel.set()
            return super().process(item, data)

        def finalize(self, emit):
            raise KeyboardInterrupt  # the second Ctrl+C arrives while this runs

    params = BulkParams(payload_kb=1, write_delay=0.0)
    src = _counted_input(tmp_path, 10)
    job_dir = job_dir_for(SlowFinalize, params, src, tmp_path / "out")
    summary = run_job(SlowFinalize(params, src, job_dir), cancel=cancel, sink=seen.append)
    assert summary.status == "cancelled" and summary.done == 3
    texts = [e.text for e in seen if type(e).__name__ == "Message"]
    assert texts == ["cancelled: writing the per-job outputs of the 3 done items (Ctrl+C again to skip them; "
                     "a re-run writes them)", "per-job outputs skipped (a re-run writes them)"]
    with pytest.raises(KeyboardInterrupt):  # without a cancel it is no request of ours: it propagates
        run_job(SlowFinalize(params, src, job_dir), sink=seen.append)

