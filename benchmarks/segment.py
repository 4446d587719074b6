"""Benchmark: seconds per 12-megapixel photo for every over-segmentation method, at the
bounded working resolution (``segdeck.core.oversegment.segment(..., max_side=N)``,
which includes the downscale and the label upscale) against the same method at full
resolution, measured in the same run on the same machine, with the ratio.

Both runs use the method's default parameters (the full-resolution reference also
switches off a method's own internal downscaling, see ``FULL_RES_OVERRIDES``).
The photo is a real one shipped with scikit-learn (``china.jpg``, 640 x 427) resized to
4000 x 3000 (bicubic), so it has photo structure at every scale a segmenter sees.

Full-resolution runs of the slow methods take minutes. By default a method runs at full
resolution only when its estimated full-resolution time (bounded time x pixel ratio)
is within ``--full-res-cap`` seconds; ``--full-res-methods`` names methods to run at
full resolution regardless (``all`` for every method). Skipped ones are listed with
their estimate.

The last section times the whole per-image pipeline of the ``segment`` job (load the
JPEG, segment, statistics, label map + overlay + CSV + COCO sidecar) for the default
method.

Run::

    .venv/bin/python benchmarks/segment.py
    .venv/bin/python benchmarks/segment.py --full-res-methods all      # minutes
    .venv/bin/python benchmarks/segment.py --methods slico felzenszwalb --repeat 3
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


#: Parameters of the full-resolution reference runs that differ from the defaults: a
#: method's own internal downscaling is switched off, so the reference is the method
#: run naively on every pixel.
FULL_RES_OVERRIDES: dict[str, dict] = {"chan_vese": {"level_set_side": 0}}


def build_photo(width: int = 4000, height: int = 3000) -> np.ndarray:
    import cv2
    from sklearn.datasets import load_sample_image

    return cv2.resize(load_sample_image("china.jpg"), (width, height), interpolation=cv2.INTER_CUBIC)


def timed(fn, repeat: int) -> tuple[float, object]:
    best, out = float("inf"), None
    for _ in range(repeat):
        t = time.perf_counter()
        out = fn()
        best = min(best, time.perf_counter() - t)
    return best, out


def main(argv: list[str] | None = None) -> int:
    from segdeck.core import oversegment
    from segdeck.core.oversegment._resize import working_shape

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--methods", nargs="+", default=oversegment.method_names(), choices=oversegment.method_names(),
                        help="methods to time (default: all)")
    parser.add_argument("--max-side", type=int, default=1024, help="working resolution of the bounded runs (default 1024)")
    parser.add_argument("--full-res-cap", type=float, default=90.0,
                        help="run a method at full resolution only if its estimated time is within this many seconds (default 90)")
    parser.add_argument("--full-res-methods", nargs="*", default=[],
                        help="methods to run at full resolution whatever their estimate ('all' for every method)")
    parser.add_argument("--repeat", type=int, default=1, help="take the best of this many bounded runs (default 1)")
    parser.add_argument("--width", type=int, default=4000)
    parser.add_argument("--height", type=int, default=3000)
    args = parser.parse_args(argv)

    photo = build_photo(args.width, args.height)
    h, w = photo.shape[:2]
    wh, ww = working_shape(photo.shape, args.max_side)
    pixel_ratio = (h * w) / (wh * ww)
    forced = set(oversegment.method_names()) if "all" in args.full_res_methods else set(args.full_res_methods)
    print(f"photo: {w} x {h} ({w * h / 1e6:.1f} MP, sklearn china.jpg upscaled); "
          f"working size {ww} x {wh} (max_side {args.max_side}, {pixel_ratio:.1f}x fewer pixels); "
          f"CPU cores visible: {os.cpu_count()}")
    print(f"{'method':<13}{'bounded s':>10}{'labels':>8}{'full-res s':>12}{'labels':>9}{'full/bounded':>14}")
    skipped = []
    for method in args.methods:
        t_b, lab_b = timed(lambda m=method: oversegment.segment(photo, m, max_side=args.max_side), args.repeat)
        estimate = t_b * pixel_ratio
        if method in forced or estimate <= args.full_res_cap:
            override = FULL_RES_OVERRIDES.get(method)
            t_f, lab_f = timed(lambda m=method, o=override: oversegment.segment(photo, m, o, max_side=None), 1)
            print(f"{method:<13}{t_b:>10.2f}{int(lab_b.max()):>8}{t_f:>12.2f}{int(lab_f.max()):>9}{t_f / t_b:>13.1f}x", flush=True)
        else:
            skipped.append((method, estimate))
            print(f"{method:<13}{t_b:>10.2f}{int(lab_b.max()):>8}{'skipped':>12}{'':>9}{'':>14}", flush=True)
    print("sizes in the params (region_size, min_size, ...) are in working pixels, so full-resolution runs "
          "give more, smaller segments; full-resolution overrides: "
          + ", ".join(f"{m} {o}" for m, o in FULL_RES_OVERRIDES.items()))
    if skipped:
        print("full resolution skipped (estimated time over --full-res-cap "
              f"{args.full_res_cap:g} s; force with --full-res-methods): "
              + ", ".join(f"{m} (~{e:.0f} s est.)" for m, e in skipped))

    # whole per-image pipeline of the segment job, default params
    from segdeck.core import imageio
    from segdeck.core.jobs.runner import run_job
    from segdeck.core.segment import SegmentJob, SegmentParams

    with tempfile.TemporaryDirectory() as tmp:
        src = Path(tmp) / "in"
        imageio.write_image(src / "photo12mp.jpg", photo)
        params = SegmentParams(max_side=args.max_side)
        job = SegmentJob(params, src, Path(tmp) / "out")
        t = time.perf_counter()
        summary = run_job(job)
        total = time.perf_counter() - t
        from segdeck.core.jobs.manifest import Manifest

        with Manifest(job.job_dir) as m:
            rec = m.records()[0]
    print(f"segment job, 1 photo of {w * h / 1e6:.1f} MP, method {params.method}, max_side {args.max_side}: "
          f"{total:.2f} s wall (load+compute {rec.duration:.2f} s recorded in the manifest), status {summary.status}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
