"""SAM engine speed against the official code, measured in the same run on the same
random-weight SAM 2.1-tiny checkpoint (built from sam2's packaged config, seeded,
saved in the official layout, registered with its sha256 and loaded through the real
model-manager path). Nothing is downloaded.

1. Click latency: ``SAM2ImagePredictor.predict`` (official) vs ``SamEngine.predict``
   after the encode, median (and quartiles) over ``--clicks`` random single positive
   clicks on a 512x512 photo, multimask (the official default) and single-mask, with the
   IoU between the two sides' masks. The sides take turns in blocks of 10 clicks (see
   ``bench_clicks``). Goal: ours <= 25 ms on CPU.
2. Batch throughput: a plain loop over ``SAM2AutomaticMaskGenerator.generate`` (load
   each photo, generate) vs the ``automask`` job (runner, prefetch, model loaded once,
   every output written: label map, overlay, CSV, COCO, raw masks) over ``--images``
   photos from scikit-image, same parameters, with the mask-set agreement (ours vs
   official, mask by mask in the generators' order). Goal: >= 2x images per minute.
   Random weights pass no default quality threshold, so ``pred_iou_thresh`` and
   ``stability_score_thresh`` are 0 and ``box_nms_thresh`` is ``--box-nms`` (default
   1.0: every mask kept, the maximum amount of work on both sides).
3. With ``--onednn-ab``: our clicks with the oneDNN products against plain
   ``torch.matmul`` (``EngineOptions(onednn=False)``), alternated in one process, with mask IoU.
4. With ``--jit-ab``: our clicks through the decoder's TorchScript traces against the
   eager decoder (``EngineOptions(jit=False)``), alternated in one process, with mask IoU.

    .venv/bin/python benchmarks/sam.py [--clicks 30] [--images 6] [--points-per-side 16] [--onednn-ab] [--jit-ab]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

warnings.filterwarnings("ignore")


#: Consecutive clicks per side before the benchmark switches to the other side.
CLICK_BLOCK = 10


def _photos(n: int, max_side: int = 512) -> list[tuple[str, np.ndarray]]:
    import cv2
    import skimage.data as d

    names = ["astronaut", "coffee", "chelsea", "rocket", "immunohistochemistry", "hubble_deep_field",
             "retina", "cat", "colorwheel", "motorcycle_left"]
    out = []
    for name in names:
        try:
            img = getattr(d, name)()
        except Exception:  # noqa: BLE001 - optional data files
            continue
        if img.ndim == 2:
            img = np.stack([img] * 3, -1)
        img = img[..., :3].astype(np.uint8)
        s = max_side / max(img.shape[:2])
        if s < 1:
            img = cv2.resize(img, (round(img.shape[1] * s), round(img.shape[0] * s)), interpolation=cv2.INTER_AREA)
        out.append((name, np.ascontiguousarray(img)))
        if len(out) == n:
            break
    return out


def _iou(a, b) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return float((a & b).sum() / max((a | b).sum(), 1))


def setup_model(workdir: Path):
    from segdeck.core import models as M
    from segdeck.core.sam.loading import save_random_checkpoint

    os.environ[M.ENV_MODEL_DIR] = str(workdir / "models")
    name = "sam2.1-tiny"
    spec = M.get_spec(name)
    ckpt = save_random_checkpoint(spec, workdir / spec.filename, seed=0)
    M.register(dataclasses.replace(spec, sha256=M.file_sha256(ckpt), bytes=ckpt.stat().st_size), replace=True)
    M.import_file(name, ckpt)
    return name


def bench_clicks(name: str, n_clicks: int) -> None:
    import cv2
    import skimage.data

    from segdeck.core.sam import open_engine

    eng = open_engine(name, "cpu")
    img = cv2.resize(skimage.data.astronaut(), (512, 512), interpolation=cv2.INTER_AREA)
    off = eng.official_predictor()
    t = time.perf_counter()
    off.set_image(img)
    t_off_enc = time.perf_counter() - t
    eng.disk_cache = False
    t = time.perf_counter()
    eng.set_image(img, cache=False)
    t_our_enc = time.perf_counter() - t
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 512, size=(n_clicks, 2)).astype(np.float32)
    lab = np.array([1])
    print(f"machine load average before: {os.getloadavg()[0]:.2f} (CPU cores: {os.cpu_count()})")
    print(f"\n== click latency: SAM 2.1-tiny (random weights), 512x512, {n_clicks} clicks, "
          f"torch threads {__import__('torch').get_num_threads()}")
    print(f"encode: official {t_off_enc:.2f} s, ours {t_our_enc:.2f} s (same encoder; ours is cached by content)")
    first = {}
    for side in ("official", "ours"):  # the first click of a session
        t = time.perf_counter()
        if side == "official":
            off.predict(pts[:1], lab, multimask_output=True)
        else:
            eng.predict(pts[:1], lab, multimask=True)
        first[side] = 1000 * (time.perf_counter() - t)
    print(f"first click: official {first['official']:.0f} ms, ours {first['ours']:.0f} ms "
          "(ours: set_image recorded the one-point decoder trace, inside the encode time above)")
    for multimask in (True, False):
        for i in range(3):  # warm-up
            off.predict(pts[i : i + 1], lab, multimask_output=multimask)
            eng.predict(pts[i : i + 1], lab, multimask=multimask)
        t_off, t_our, ious = [], [], []
        # blocks of consecutive clicks per side, as in an annotation session (each side keeps
        # its own data warm in the CPU caches); the sides alternate block by block, and which
        # one goes first alternates too, so both see the same drift of the machine's speed
        for b, start in enumerate(range(0, n_clicks, CLICK_BLOCK)):
            idx = range(start, min(start + CLICK_BLOCK, n_clicks))
            got = {}
            for side in (("official", "ours") if b % 2 == 0 else ("ours", "official")):
                for i in idx:
                    p = pts[i : i + 1]
                    t = time.perf_counter()
                    if side == "official":
                        m = off.predict(p, lab, multimask_output=multimask)[0]
                        t_off.append(time.perf_counter() - t)
                    else:
                        m = eng.predict(p, lab, multimask=multimask).masks
                        t_our.append(time.perf_counter() - t)
                    got[side, i] = m
            ious += [_iou(a, c) for i in idx for a, c in zip(got["official", i], got["ours", i], strict=True)]
        q_off = 1000 * np.quantile(t_off, [0.25, 0.5, 0.75])
        q_our = 1000 * np.quantile(t_our, [0.25, 0.5, 0.75])
        print(f"{'multimask' if multimask else 'single   '}: median official {q_off[1]:6.1f} ms "
              f"(IQR {q_off[0]:.1f}-{q_off[2]:.1f})  ours {q_our[1]:6.1f} ms (IQR {q_our[0]:.1f}-{q_our[2]:.1f})  "
              f"speed-up {q_off[1] / q_our[1]:4.2f}x | mask IoU min {min(ious):.4f} mean {np.mean(ious):.5f} | "
              f"goal <= 25 ms (median): {'met' if q_our[1] <= 25 else 'NOT met'}")


def _report_ab(title: str, base, new, ious) -> None:
    """Print an in-process A/B of clicks: ``base`` / ``new`` are (label, {multimask: [s]});
    the ratio is new over base."""
    print(f"\n== {title}")
    for multimask in (True, False):
        b_ms, n_ms = (1000 * statistics.median(side[1][multimask]) for side in (base, new))
        print(f"{'multimask' if multimask else 'single   '}: median {base[0]} {b_ms:6.1f} ms  "
              f"{new[0]} {n_ms:6.1f} ms  ratio {n_ms / b_ms:4.2f}")
    print(f"mask IoU {new[0]} vs {base[0]}: min {min(ious):.5f} mean {np.mean(ious):.6f}")


def bench_onednn(name: str, n_clicks: int) -> None:
    """Our click path with oneDNN products (default) vs plain torch.matmul
    (``EngineOptions(onednn=False)``), two engines on the same weights, clicks alternated
    between the two in one process."""
    import cv2
    import skimage.data

    from segdeck.core.sam import EngineOptions, open_engine

    img = cv2.resize(skimage.data.astronaut(), (512, 512), interpolation=cv2.INTER_AREA)
    engines = {}
    for flag in ("0", "1"):
        eng = open_engine(name, "cpu", options=EngineOptions(onednn=flag == "1"))
        eng.disk_cache = False
        eng.set_image(img, cache=False)
        engines[flag] = eng
    pts = np.random.default_rng(1).uniform(0, 512, size=(n_clicks, 2)).astype(np.float32)
    lab = np.array([1])
    times = {f: {True: [], False: []} for f in engines}
    masks = {f: [] for f in engines}
    for i in range(n_clicks + 3):
        for flag, eng in engines.items():
            for multimask in (True, False):
                t = time.perf_counter()
                r = eng.predict(pts[i % n_clicks : i % n_clicks + 1], lab, multimask=multimask)
                if i >= 3:  # the first three rounds warm up
                    times[flag][multimask].append(time.perf_counter() - t)
                    masks[flag].append(r.masks)
    ious = [_iou(a, b) for x, y in zip(masks["0"], masks["1"], strict=True) for a, b in zip(x, y, strict=True)]
    _report_ab(f"oneDNN products vs torch.matmul (two engines, alternated, {n_clicks} clicks)",
               ("matmul", times["0"]), ("oneDNN", times["1"]), ious)


def bench_jit(name: str, n_clicks: int) -> None:
    """Our clicks through the decoder's traces (default on CPU) vs the eager decoder, one
    engine, blocks of clicks alternated between the two in one process."""
    import cv2
    import skimage.data

    from segdeck.core.sam import open_engine

    eng = open_engine(name, "cpu")
    eng.disk_cache = False
    img = cv2.resize(skimage.data.astronaut(), (512, 512), interpolation=cv2.INTER_AREA)
    eng.set_image(img, cache=False)
    traces = eng.decoder.traces
    if traces is None:
        print("\n== traced vs eager decoder: traces are off (SEGDECK_JIT=0)")
        return
    pts = np.random.default_rng(2).uniform(0, 512, size=(n_clicks, 2)).astype(np.float32)
    lab = np.array([1])
    times = {k: {True: [], False: []} for k in ("traced", "eager")}
    masks = {k: {} for k in times}
    for multimask in (True, False):
        for i in range(3):  # warm-up (records the trace)
            eng.predict(pts[i : i + 1], lab, multimask=multimask)
        for b, start in enumerate(range(0, n_clicks, CLICK_BLOCK)):
            for side in (("traced", "eager") if b % 2 == 0 else ("eager", "traced")):
                eng.decoder.traces = traces if side == "traced" else None
                for i in range(start, min(start + CLICK_BLOCK, n_clicks)):
                    t = time.perf_counter()
                    r = eng.predict(pts[i : i + 1], lab, multimask=multimask)
                    times[side][multimask].append(time.perf_counter() - t)
                    masks[side][multimask, i] = r.masks
    eng.decoder.traces = traces
    ious = [_iou(a, c) for k, x in masks["traced"].items() for a, c in zip(x, masks["eager"][k], strict=True)]
    _report_ab(f"traced vs eager decoder (same engine, blocks of {CLICK_BLOCK} alternated, {n_clicks} clicks)",
               ("eager", times["eager"]), ("traced", times["traced"]), ious)


def bench_batch(name: str, n_images: int, pps: int, box_nms: float, workdir: Path) -> None:
    import torch

    from segdeck.core import imageio
    from segdeck.core.jobs.registry import get_job_class
    from segdeck.core.jobs.runner import job_dir_for, run_job
    from segdeck.core.params import resolve
    from segdeck.core.sam import GeneratorParams, clear_engine_cache, open_engine

    photos = _photos(n_images)
    folder = workdir / "photos"
    folder.mkdir(exist_ok=True)
    for pname, img in photos:
        imageio.write_image(folder / f"{pname}.png", img)
    gp = GeneratorParams(points_per_side=pps, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=box_nms)
    print(f"\n== batch: {len(photos)} photos (long side <= 512), points_per_side {pps}, thresholds 0, "
          f"box_nms_thresh {box_nms}, torch threads {torch.get_num_threads()}")

    # official: a plain loop (model already loaded, as for ours)
    eng = open_engine(name, "cpu")
    gen = eng.official_generator(gp)
    files = sorted(folder.glob("*.png"))
    official = {}
    t = time.perf_counter()
    for f in files:
        img = imageio.load_rgb(f)
        official[f.name] = gen.generate(img)
    t_off = time.perf_counter() - t

    # ours: the automask job (runner, prefetch, writes every output)
    clear_engine_cache()
    cls = get_job_class("automask")
    params = resolve(cls.Params, "automask", overrides={
        "model": name, "device": "cpu", **{k: getattr(gp, k) for k in
                                            ("points_per_side", "pred_iou_thresh", "stability_score_thresh", "box_nms_thresh")}})
    open_engine(name, "cpu")  # load the model outside the timing, as for the official loop
    job = cls(params, folder, job_dir_for(cls, params, folder, workdir / "out"))
    t = time.perf_counter()
    summary = run_job(job)
    t_our = time.perf_counter() - t
    assert summary.status == "done", summary

    n_off = n_our = 0
    ious, exact = [], 0
    for f in files:
        recs = official[f.name]
        raw = np.load(job.job_dir / "masks" / f"{f.name}.npz")
        n, h, w = (int(v) for v in raw["shape"])
        ours = np.unpackbits(raw["packed"], axis=1, count=h * w).reshape(n, h, w).astype(bool)
        n_off += len(recs)
        n_our += n
        for r, m in zip(recs, ours, strict=False):
            v = _iou(r["segmentation"], m)
            ious.append(v)
            exact += int(v == 1.0)
    ipm_off, ipm_our = 60 * len(files) / t_off, 60 * len(files) / t_our
    print(f"official loop: {t_off:7.1f} s  {ipm_off:6.2f} images/min  ({n_off} masks)")
    print(f"automask job:  {t_our:7.1f} s  {ipm_our:6.2f} images/min  ({n_our} masks, all outputs written)")
    print(f"load average at the end: {os.getloadavg()[0]:.2f} (CPU cores: {os.cpu_count()})")
    print(f"speed-up {ipm_our / ipm_off:4.2f}x (goal >= 2x: {'met' if ipm_our / ipm_off >= 2 else 'NOT met'})")
    agree = f"{np.mean(ious):.5f}, min {min(ious):.4f}" if ious else "n/a"
    print(f"mask sets: same count {n_off == n_our}; mask-by-mask IoU mean {agree}; identical masks {exact}/{len(ious)}")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clicks", type=int, default=30)
    ap.add_argument("--images", type=int, default=6)
    ap.add_argument("--points-per-side", type=int, default=16)
    ap.add_argument("--box-nms", type=float, default=1.0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch default)")
    ap.add_argument("--skip-clicks", action="store_true")
    ap.add_argument("--skip-batch", action="store_true")
    ap.add_argument("--onednn-ab", action="store_true", help="also time our clicks with and without oneDNN products")
    ap.add_argument("--jit-ab", action="store_true", help="also time our clicks with and without the decoder traces")
    args = ap.parse_args(argv)
    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory(prefix="segdeck-bench-sam-") as tmp:
        work = Path(tmp)
        name = setup_model(work)
        if not args.skip_clicks:
            bench_clicks(name, args.clicks)
        if args.onednn_ab:
            bench_onednn(name, args.clicks)
        if args.jit_ab:
            bench_jit(name, args.clicks)
        if not args.skip_batch:
            bench_batch(name, args.images, args.points_per_side, args.box_nms, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
