"""Benchmark of the ``describe`` job's two stages, each against its reference in the
same run.

1. Sequential segmentation: :func:`segdeck.core.describe.sweep.sweep` (the engine's
   fast click path) against the same sweep written on the official
   ``SAM2ImagePredictor`` (``predict(multimask_output=True)``, best mask, minus the
   claimed pixels), both after their one image encode, over the same >= 30 point
   proposals (contours, then a grid) on a 512 x 512 photo, random-weight SAM 2.1-tiny
   (seeded, saved in the official layout, loaded through the model manager; nothing is
   downloaded). Prints the median of ``--repeats`` sweeps per side (the sides
   alternate), the ratio (goal >= 2x) and whether both kept the same regions.
2. Descriptions per second: ``benchmarks/describe_throughput.py``'s ``main()``
   (sequential vs the ``openai`` describer's default concurrency against a fake server
   with 300 ms latency; goal >= 3x), when that file exists.

Run::

    .venv/bin/python benchmarks/describe.py [--repeats 3] [--grid 6] [--contours 20]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")
HERE = Path(__file__).resolve().parent


def _load_sibling(name: str):
    """A module of this folder by path (``benchmarks/`` is no package)."""
    spec = importlib.util.spec_from_file_location(f"_bench_{name}", HERE / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def official_sweep(predictor, image, points, min_area: int, multimask: bool = True):
    """The sweep on the official predictor: same order, same claiming rule.

    Returns
    -------
    list of (PointProposal, mask (H, W) bool, score float)
    """
    claimed = np.zeros(image.shape[:2], bool)
    out = []
    lab = np.array([1])
    for p in points:
        if claimed[p.y, p.x]:
            continue
        masks, scores, _ = predictor.predict(point_coords=np.array([[p.x, p.y]], np.float32), point_labels=lab,
                                             multimask_output=multimask)
        best = int(np.argmax(scores))
        region = masks[best].astype(bool) & ~claimed
        if int(region.sum()) >= min_area:
            claimed |= region
            out.append((p, region, float(scores[best])))
    return out


def bench_sweep(name: str, repeats: int, grid: int, contours: int, min_area: int) -> dict:
    import cv2
    import skimage.data
    import torch

    from segdeck.core.describe.points import PointParams, propose_points
    from segdeck.core.describe.sweep import sweep
    from segdeck.core.sam import open_engine

    img = np.ascontiguousarray(cv2.resize(skimage.data.astronaut(), (512, 512), interpolation=cv2.INTER_AREA))
    pts = propose_points(img, PointParams(max_contour_points=contours, grid_columns=grid, grid_rows=grid))
    n_contour = sum(p.source == "contour" for p in pts)
    eng = open_engine(name, "cpu")
    eng.disk_cache = False
    off = eng.official_predictor()
    t = time.perf_counter()
    off.set_image(img)
    enc_off = time.perf_counter() - t
    t = time.perf_counter()
    eng.set_image(img, cache=False)
    enc_our = time.perf_counter() - t
    print(f"machine load average: {os.getloadavg()[0]:.2f} (CPU cores: {os.cpu_count()}), "
          f"torch threads {torch.get_num_threads()}")
    print(f"\n== sequential segmentation: SAM 2.1-tiny (random weights), 512x512 astronaut, {len(pts)} points "
          f"({n_contour} contour, {len(pts) - n_contour} grid), min area {min_area} px, multimask")
    print(f"encode (once per side, not in the times below): official {enc_off:.2f} s, ours {enc_our:.2f} s")
    # warm-up: one sweep each (first-call allocations, decoder traces)
    sweep(eng, img, pts[:3], min_area=min_area)
    official_sweep(off, img, pts[:3], min_area)
    t_off, t_our = [], []
    ours = ref = None
    for r in range(repeats):
        order = ("official", "ours") if r % 2 == 0 else ("ours", "official")
        for side in order:
            t = time.perf_counter()
            if side == "official":
                ref = official_sweep(off, img, pts, min_area)
                t_off.append(time.perf_counter() - t)
            else:
                ours = sweep(eng, img, pts, min_area=min_area)
                t_our.append(time.perf_counter() - t)
    m_off, m_our = statistics.median(t_off), statistics.median(t_our)
    same_points = [r.point for r in ours.regions] == [p.xy for p, _, _ in ref]
    ious = [float(((ours.labels == r.index) & m).sum() / max(((ours.labels == r.index) | m).sum(), 1))
            for r, (_, m, _) in zip(ours.regions, ref, strict=False)]
    prompted = ours.prompted
    print(f"official SAM2ImagePredictor loop: {m_off * 1000:8.0f} ms  ({m_off / max(prompted, 1) * 1000:.1f} ms per prompt)")
    print(f"ours (sweep, fast click path):    {m_our * 1000:8.0f} ms  ({m_our / max(prompted, 1) * 1000:.1f} ms per prompt)")
    print(f"  {prompted} prompts, {ours.skipped_claimed} points skipped (already claimed), "
          f"{len(ours.regions)} regions kept (official: {len(ref)})")
    agree = same_points and len(ours.regions) == len(ref) and (min(ious) if ious else 1.0) > 0.99
    print(f"  same regions: {'yes' if agree else 'NO'} (same points: {same_points}, "
          f"min IoU {min(ious) if ious else float('nan'):.4f})")
    ratio = m_off / m_our
    print(f"  ratio official / ours: {ratio:.2f}x (goal >= 2x) {'OK' if ratio >= 2 else 'BELOW GOAL'}")
    return {"points": len(pts), "official_s": m_off, "ours_s": m_our, "ratio": ratio, "same_regions": agree}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="sweeps per side (median)")
    ap.add_argument("--grid", type=int, default=6, help="grid points per side")
    ap.add_argument("--contours", type=int, default=20, help="at most this many contour points")
    ap.add_argument("--min-area", type=int, default=100, help="smallest region kept (pixels)")
    args = ap.parse_args(argv)
    sam = _load_sibling("sam")
    out: dict = {}
    with tempfile.TemporaryDirectory() as work:
        name = sam.setup_model(Path(work))
        out["sweep"] = bench_sweep(name, args.repeats, args.grid, args.contours, args.min_area)
    if (HERE / "describe_throughput.py").is_file():
        print()
        out["throughput"] = _load_sibling("describe_throughput").main([])
    else:
        print("\n(benchmarks/describe_throughput.py not found: descriptions/s not measured)")
    return out


if __name__ == "__main__":
    sys.exit(0 if main() else 1)
