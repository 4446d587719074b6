"""Benchmark of the job runner as a whole process (``segdeck run segment``).

Mode ``throughput`` (default) writes JPEGs (crops of the photos that ship with
scikit-image / scikit-learn, 480 x 360, nothing downloaded) for each run size
(``--photos``, default 48 and 400) and times ``segdeck run segment --method edge``
(``--method``) with the local executor and with ``--executor ray`` for 1 and 2 workers
(``--workers``): Ray started by the run itself (``address=local``), and Ray started
once beforehand (``ray start --head``, as for many runs on one machine; ``--no-running``
skips it). Each line gives, best of ``--repeat`` runs, the time of the whole process
(start-up and Ray's start and stop included) and of the items alone (first to last
``ItemDone`` in ``events.jsonl``) side by side, as images/min and as a ratio to the
local run of the same size measured in this run (1.00: no overhead; the goal is
<= 1.15). Without Ray installed the Ray lines say so.

Mode ``memory`` writes ``--n`` small JPEGs (96 x 64) and runs the same command for
``--seconds``, sampling the process's resident memory every second (``/proc``), then
sends SIGINT and prints: RSS over time, the peak, its growth per second after the first
5 s, how long the process took to exit after SIGINT, its exit code and the job state
``segdeck jobs`` reads. Before the bounded pipeline this grew ~55 MB/s and Ctrl+C
waited 35-60 s for the write backlog.

Run::

    .venv/bin/python benchmarks/executors.py                       # 48 and 400 photos, local and Ray
    .venv/bin/python benchmarks/executors.py throughput --photos 96 --workers 1 2 --repeat 1
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
    if "--method" not in extra:
        extra = (*extra, "--method", "edge")
    return [sys.executable, "-m", "segdeck", "run", "segment", str(photos), "--out", str(out), "--events", *extra]


def _timed_run(photos: Path, out: Path, tmp: Path, extra: tuple[str, ...] = (),
               env: dict | None = None) -> tuple[float, float]:
    """Run ``segdeck run`` once (``env``: more environment variables); returns (process
    seconds, seconds from the first to the last ItemDone)."""
    import json

    t = time.perf_counter()
    proc = subprocess.run(_command(photos, out, extra), capture_output=True, text=True,
                          env=dict(_env(tmp), **(env or {})))
    seconds = time.perf_counter() - t
    if proc.returncode != 0:
        sys.exit(f"segdeck run {' '.join(extra)} failed ({proc.returncode}): {proc.stderr.strip()[-500:]}")
    stamps = [e["t"] for e in map(json.loads, proc.stdout.splitlines()) if e.get("kind") == "ItemDone"]
    return seconds, stamps[-1] - stamps[0]


def _env(tmp: Path) -> dict:
    return dict(os.environ, SEGDECK_STATE_DIR=str(tmp / "state"))


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class _RunningRay:
    """A local Ray head started once (``ray start --head --block``, no dashboard, free
    ports), as a user who runs many jobs on one machine would keep it; stopped by
    signalling its own process group only (never ``ray stop``, which stops every Ray on
    the machine)."""

    #: For the head and the runs that connect to it: a driver connecting by address did
    #: not get through Ray 2.60's token authentication here ("InvalidAuthToken") although
    #: both read the same ~/.ray/auth_token; a head on this machine only, for a benchmark.
    ENV = {"RAY_AUTH_MODE": "disabled"}

    def __init__(self, cpus: int, tmp: Path):
        import re

        ray_cli = Path(sys.executable).parent / "ray"
        ports = [f"--port={_free_port()}",
                 f"--dashboard-agent-listen-port={_free_port()}", f"--dashboard-agent-grpc-port={_free_port()}",
                 f"--runtime-env-agent-port={_free_port()}", f"--metrics-export-port={_free_port()}"]
        t = time.perf_counter()
        self.proc = subprocess.Popen(
            [str(ray_cli), "start", "--head", "--block", f"--num-cpus={cpus}", "--include-dashboard=false",
             "--disable-usage-stats", *ports],
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
            env=dict(_env(tmp), PYTHONUNBUFFERED="1", **self.ENV))
        self.address, seen = None, []
        for line in self.proc.stdout:  # --block prints its banner, then waits
            seen.append(line)
            found = re.search(r"ray start --address='([^']+)'", line)
            if found:
                self.address = found.group(1)
            if "--block" in line and self.address:
                break
        else:
            self.stop()
            sys.exit("ray start --head failed:\n" + "".join(seen[-10:]))
        threading.Thread(target=lambda: [None for _ in self.proc.stdout], daemon=True).start()
        self.start_s = time.perf_counter() - t

    def stop(self) -> None:
        """SIGTERM to the head's process group, SIGKILL to what is left after 20 s."""
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
        except ProcessLookupError:
            return
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            self.proc.poll()
            try:
                os.killpg(self.proc.pid, 0)
            except ProcessLookupError:
                return
            time.sleep(0.2)
        try:
            os.killpg(self.proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def throughput(args) -> None:
    """Images/min and times of local and Ray runs, whole process and items alone, each
    as a ratio to the local run of the same size measured in this run."""
    try:
        import ray  # noqa: F401
        have_ray = True
    except ImportError:
        have_ray = False
    print(f"segment --method {args.method}, photos 480 x 360, {os.cpu_count()} CPUs, best of {args.repeat} runs; "
          "ratio = time / local time (1.00: no overhead; goal <= 1.15)", flush=True)
    print(f"{'photos':>6s}  {'executor':32s} {'whole s':>8s} {'items s':>8s} {'whole/min':>10s} "
          f"{'items/min':>10s} {'whole ratio':>11s} {'items ratio':>11s}", flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for n in args.photos:
            photos = tmp / f"photos{n}"
            photos.mkdir()
            _write_photos(photos, n)
            local: list[float] = []

            def line(name: str, extra: tuple[str, ...], tag: str, env: dict | None = None,
                     n=n, photos=photos, local=local) -> None:
                runs = [_timed_run(photos, tmp / f"{tag}-{n}-{i}", tmp, (*extra, "--method", args.method), env)
                        for i in range(args.repeat)]
                whole, items = min(r[0] for r in runs), min(r[1] for r in runs)
                if not local:  # the first line is the local run: the reference of the others
                    local.extend((whole, items))
                print(f"{n:6d}  {name:32s} {whole:8.1f} {items:8.1f} {n / whole * 60:10.0f} "
                      f"{(n - 1) / items * 60:10.0f} {whole / local[0]:11.2f} {items / local[1]:11.2f}", flush=True)

            line("local", (), "local")
            if not have_ray:
                print("ray: not installed (pip install 'segdeck[ray]')")
                continue
            for w in args.workers:
                line(f"ray, {w} worker(s), starts Ray", ("--executor", "ray", "--ray-workers", str(w)), f"ray{w}")
            if args.running:
                head = _RunningRay(max(args.workers), tmp)
                try:
                    for w in args.workers:
                        line(f"ray, {w} worker(s), Ray running", ("--executor", "ray", "--ray-workers", str(w),
                                                                   "--ray-address", head.address), f"up{w}",
                             _RunningRay.ENV)
                finally:
                    head.stop()
                print(f"{'':6s}  (ray start --head took {head.start_s:.1f} s, once)", flush=True)


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
    t = sub.add_parser("throughput", help="images/min of segment, local and Ray")
    t.add_argument("--photos", type=int, nargs="+", default=[48, 400], help="run sizes (photos)")
    t.add_argument("--workers", type=int, nargs="+", default=[1, 2], help="Ray worker counts to measure")
    t.add_argument("--repeat", type=int, default=2, help="runs per executor (the best counts)")
    t.add_argument("--method", default="edge", help="segment's method (edge: fast, so Ray's costs show most)")
    t.add_argument("--no-running", dest="running", action="store_false",
                   help="skip the runs against a Ray started once beforehand (ray start --head)")
    m = sub.add_parser("memory", help="RSS over time and SIGINT latency on many small images")
    m.add_argument("--n", type=int, default=20000)
    m.add_argument("--seconds", type=float, default=30.0)
    m.add_argument("--executor", choices=["local", "ray"], default="local")
    args = parser.parse_args()
    if args.mode == "memory":
        memory(args)
    else:
        if args.mode is None:
            args = parser.parse_args(["throughput"])
        throughput(args)


if __name__ == "__main__":
    main()
