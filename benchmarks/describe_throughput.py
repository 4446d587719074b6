"""Benchmark of the ``openai`` describer's throughput: descriptions per second against
the fake OpenAI-compatible server of ``tests/vlm_server.py`` answering every request
after a fixed latency (default 300 ms, a small vision model on a local server), with
1 request in flight (sequential) and with the describer's default concurrency
(:attr:`OpenAIOptions.concurrency`), in the same run. Goal: >= 3x.

The regions are ``--regions`` discs on scikit-image's astronaut photo (512 x 512), so
each request carries a real PNG crop (encoding and transfer are part of the time).

Run::

    .venv/bin/python benchmarks/describe_throughput.py
    .venv/bin/python benchmarks/describe_throughput.py --regions 48 --latency 0.3 --also 8 16

``benchmarks/describe.py`` calls :func:`main` too.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))


def make_requests(n: int):
    """``n`` disc-shaped regions on the astronaut photo, as RegionRequests."""
    from segdeck.core.describe.describers import RegionRequest
    from segdeck.core.samples import PHOTOS

    image = np.ascontiguousarray(dict((name, load) for name, load, _ in PHOTOS)["astronaut.jpg"]()[:, :, :3])
    h, w = image.shape[:2]
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:h, :w]
    out = []
    for i in range(n):
        r = int(rng.integers(12, 60))
        cx, cy = int(rng.integers(r, w - r)), int(rng.integers(r, h - r))
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        out.append(RegionRequest(i + 1, image, mask, (cx - r, cy - r, cx + r + 1, cy + r + 1)))
    return out


def measure(base_url: str, requests, concurrency: int) -> tuple[float, int]:
    """Describe all ``requests`` once; returns (descriptions per second, failures)."""
    from segdeck.core.describe.describers import OpenAIOptions, make_describer

    opts = OpenAIOptions(base_url=base_url, api_key_env="", concurrency=concurrency, timeout=30)
    with make_describer("openai", opts) as d:
        t0 = time.perf_counter()
        got = list(d.describe(requests))
        dt = time.perf_counter() - t0
    return len(got) / dt, sum(g.error is not None for g in got)


def main(argv: list[str] | None = None) -> dict:
    """Print descriptions/s sequential vs the default concurrency and their ratio.

    Returns
    -------
    dict
        ``{"latency_s", "regions", "sequential_per_s", "concurrent_per_s",
        "concurrency", "ratio"}`` (and ``"also"``: concurrency -> per second).
    """
    from vlm_server import FakeVLM

    from segdeck.core.describe.describers import OpenAIOptions

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--regions", type=int, default=24, help="regions described per measurement")
    ap.add_argument("--latency", type=float, default=0.3, help="server latency per request, seconds")
    ap.add_argument("--also", type=int, nargs="*", default=[], help="more concurrencies to measure")
    args = ap.parse_args(argv)

    default = OpenAIOptions().concurrency
    reqs = make_requests(args.regions)
    with FakeVLM(latency=args.latency) as srv:
        measure(srv.base_url, reqs[:2], default)  # warm-up (imports, connection pool)
        seq, seq_fail = measure(srv.base_url, reqs, 1)
        con, con_fail = measure(srv.base_url, reqs, default)
        also = {n: measure(srv.base_url, reqs, n)[0] for n in args.also}
    ratio = con / seq
    print(f"describe throughput: {args.regions} regions, fake server latency {args.latency * 1000:.0f} ms")
    print(f"  sequential (1 in flight):        {seq:6.2f} descriptions/s  (ideal {1 / args.latency:.2f})"
          + (f", {seq_fail} failed" if seq_fail else ""))
    print(f"  default ({default} in flight):          {con:6.2f} descriptions/s  (ideal {default / args.latency:.2f})"
          + (f", {con_fail} failed" if con_fail else ""))
    for n, v in also.items():
        print(f"  {n} in flight:                    {v:6.2f} descriptions/s  ({v / seq:.2f}x)")
    print(f"  ratio default / sequential: {ratio:.2f}x (goal >= 3x) {'OK' if ratio >= 3 else 'BELOW GOAL'}")
    return {"latency_s": args.latency, "regions": args.regions, "sequential_per_s": seq,
            "concurrent_per_s": con, "concurrency": default, "ratio": ratio, "also": also}


if __name__ == "__main__":
    main()
