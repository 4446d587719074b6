"""Benchmark of the job runner as a whole process (``segdeck run segment``).

Mode ``throughput`` (default) writes ``--photos`` JPEGs (crops of the photos that ship
with scikit-image / scikit-learn, 480 x 360, nothing downloaded) and prints images/min
of ``segdeck run segment --method edge`` with the local executor and with
``--executor ray`` (a local Ray started by the run) for 1 and 2 workers (``--workers``),
twice each: for the whole process (start-up, and Ray's start-up, included) and for the
items alone (first to last ``ItemDone`` in ``events.jsonl``), and Ray's overhead as
the ratio of local to Ray images/min. Without Ray installed the Ray lines say so.

Mode ``memory`` writes ``--n`` small JPEGs (96 x 64) and runs the same command for
``--seconds``, sampling the process's resident memory every second (``/proc``), then
sends SIGINT and prints: RSS over time, the peak, its growth per second after the first
5 s, how long the process took to exit after SIGINT, its exit code and the job state
``segdeck jobs`` reads. Before the bounded pipeline this grew ~55 MB/s and Ctrl+C
waited 35-60 s for the write backlog.

Run::

    .venv/bin/python benchmarks/executors.py                       # images/min, local and Ray
    .venv/bin/python benchmarks/executors.py throughput --photos 96 --workers 1 2
    .venv/bin/python benchmarks/executors.py memory --n 20000 --seconds 30 [--executor ray]
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def _write_photos(dest: Path, n: int) -> None:
    import cv2

    from segdeck.core.samples import PHOTOS

    rng = np.random.default_rng(0)
    sources = [load() for _name, load, _src in PHOTOS]
    for i in range(n):
        img = sources[i % len(sources)]
        h, w = img.shape[:2]
        y, x = rng.integers(0, max(1, h - 360)), rng.integers(0, max(1, w - 480))
        crop = np.ascontiguousarray(img[y:y + 360, x:x + 480, :3])
        crop = cv2.resize(crop, (480, 360)) if crop.shape[:2] != (360, 480) else crop
        cv2.imwrite(str(dest / f"{i:05d}.jpg"), cv2.cvtColor(crop, cv2.COLOR_RGB2BGR))


def _write_small(dest: Path, n: int) -> None:
    import cv2

    base = cv2.GaussianBlur(np.random.default_rng(0).integers(0, 255, (64, 96, 3), np.uint8), (5, 5), 0)
    for i in range(n):
        cv2.imwrite(str(dest / f"{i:05d}.jpg"), np.roll(base, i % 96, axis=1))


def _command(photos: Path, out: Path, extra: tuple[str, ...] = ()) -> list[str]:
    return [sys.executable, "-m", "segdeck", "run", "segment", str(photos), "--method", "edge",
            "--out", str(out), "--events", *extra]


def _timed_run(photos: Path, out: Path, tmp: Path, extra: tuple[str, ...] = ()) -> tuple[float, float]:
    """Run ``segdeck run`` once; returns (process seconds, seconds from the first to the
    last ItemDone)."""
    import json

    t = time.perf_counter()
    proc = subprocess.run(_command(photos, out, extra), capture_output=True, text=True, env=_env(tmp))
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"segdeck run {' '.join(extra)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    stamps = [e["t"] for e in map(json.loads, proc.stdout.splitlines()) if e.get("kind") == "ItemDone"]
    return seconds, stamps[-1] - stamps[0]


def _env(tmp: Path) -> dict:
    return dict(os.environ, SEGDECK_STATE_DIR=str(tmp / "state"))


def throughput(args) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        photos = tmp / "photos"
        photos.mkdir()
        _write_photos(photos, args.photos)
        n = args.photos

        def line(name: str, runs: list[tuple[float, float]]) -> tuple[float, float]:
            whole = n / min(r[0] for r in runs) * 60
            items = (n - 1) / min(r[1] for r in runs) * 60
            print(f"{name:18s} {whole:8.0f} images/min whole process  {items:8.0f} images/min items  "
                  f"(best of {len(runs)}; {', '.join(f'{r[0]:.1f}' for r in runs)} s)", flush=True)
            return whole, items

        print(f"segment --method edge, {n} photos (480 x 360), {os.cpu_count()} CPUs", flush=True)
        local = line("local", [_timed_run(photos, tmp / f"local{i}", tmp) for i in range(args.repeat)])
        try:
            import ray  # noqa: F401
        except ImportError:
            print("ray: not installed (pip install 'segdeck[ray]')")
            return
        for w in args.workers:
            extra = ("--executor", "ray", "--ray-workers", str(w))
            ray_ = line(f"ray, {w} worker(s)", [_timed_run(photos, tmp / f"ray{w}-{i}", tmp, extra)
                                                 for i in range(args.repeat)])
            print(f"{'':18s} overhead (local / ray images/min): whole process {local[0] / ray_[0]:.2f}, "
                  f"items {local[1] / ray_[1]:.2f}", flush=True)


def _rss_mib(pid: int) -> tuple[float, float]:
    fields = dict(ln.split(":", 1) for ln in Path(f"/proc/{pid}/status").read_text().splitlines() if ":" in ln)
    return int(fields["VmRSS"].split()[0]) / 1024, int(fields["VmHWM"].split()[0]) / 1024


def memory(args) -> None:
    from segdeck.core.jobs.status import find_job_dirs, read_job

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        photos = tmp / "photos"
        photos.mkdir()
        print(f"writing {args.n} small JPEGs ...", flush=True)
        _write_small(photos, args.n)
        extra = ("--executor", "ray") if args.executor == "ray" else ()
        proc = subprocess.Popen(_command(photos, tmp / "out", extra), stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, env=_env(tmp))
        done = [0]

        def read() -> None:
            for line in proc.stdout:
                done[0] += b'"ItemDone"' in line

        threading.Thread(target=read, daemon=True).start()
        t0 = time.monotonic()
        samples = []
        while time.monotonic() - t0 < args.seconds and proc.poll() is None:
            time.sleep(1.0)
            rss, peak = _rss_mib(proc.pid)
            samples.append((time.monotonic() - t0, rss, peak, done[0]))
        if proc.poll() is not None:
            sys.exit(f"the run ended before {args.seconds} s; use more --n")
        t = time.monotonic()
        proc.send_signal(signal.SIGINT)
        code = proc.wait(300)
        stop = time.monotonic() - t
        err = proc.stderr.read().decode(errors="replace")
        print("   t s   RSS MiB   items done")
        for s, rss, _peak, n in samples:
            print(f"{s:6.0f} {rss:9.0f} {n:12d}")
        later = [x for x in samples if x[0] >= 5]
        growth = (later[-1][1] - later[0][1]) / (later[-1][0] - later[0][0]) if len(later) > 1 else float("nan")
        print(f"peak RSS {samples[-1][2]:.0f} MiB; growth after 5 s {growth:+.2f} MiB/s; "
              f"{done[0] / samples[-1][0]:.0f} items/s")
        state = [read_job(d).state for d in find_job_dirs(tmp / "out")]
        print(f"SIGINT -> exit in {stop:.2f} s, exit code {code}, job state {state}")
        if "Traceback" in err:
            print(err[-2000:])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode")
    t = sub.add_parser("throughput", help="images/min of segment --method edge")
    t.add_argument("--photos", type=int, default=48)
    t.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray worker counts to measure")
    t.add_argument("--repeat", type=int, default=2, help="runs per executor (the best counts)")
    m = sub.add_parser("memory", help="RSS over time and SIGINT latency on many small images")
    m.add_argument("--n", type=int, default=20000)
    m.add_argument("--seconds", type=float, default=30.0)
    m.add_argument("--executor", choices=["local", "ray"], default="local")
    args = parser.parse_args()
    if args.mode == "memory":
        memory(args)
    else:
        if args.mode is None:
            args.photos, args.workers, args.repeat = 48, [1, 2], 2
        throughput(args)


if __name__ == "__main__":
    main()
