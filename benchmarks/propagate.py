"""Group propagation speed and memory: the official SAM 2 video route against the
``propagate`` job, measured in the same run on the same random-weight SAM 2.1-tiny
checkpoint (built from sam2's packaged config, seeded, saved in the official layout;
nothing is downloaded) and the same group.

The group: ``--references`` (default 3) labelled reference photos and ``--targets``
(default 8) target photos, crops of the scikit-image sample photos written as JPEGs
(``--side`` pixels, default 480 x 360), one group, ``--objects`` (default 2) rectangles
labelled on every reference.

1. Official route, as the SST scripts and SAM 2's video notebook do it: the official
   ``SAM2VideoPredictor`` (``build_sam2_video_predictor``, built once, not timed), and
   per target a JPEG folder ``0.jpg .. K.jpg`` holding the references and the target,
   ``init_state(folder)``, ``add_new_mask`` for every object on every reference,
   ``propagate_in_video``, the target's masks (argmax of the object logits where > 0).
   ``fill_hole_area = 0`` (the CPU build has no ``sam2._C``), as in the job.
2. The job: ``segdeck run propagate SPEC --checkpoint CKPT --image-size S --batch-size B
   --device cpu`` as its own process. Frames/s twice: over the items (from the "model
   loaded" event to the last ``ItemDone``: references set, every target predicted and
   written) and over the whole process (Python start-up and model load included). The
   ratio to the official route is printed for both, with the mask agreement (per-object
   IoU of the job's label maps against the official ones; JPEGs are decoded by OpenCV on
   one side and PIL on the other, so a few pixels may differ).
3. Peak memory: the job's peak resident set size (``wait4`` of the process) for a group
   of N = ``--targets`` and of 4N targets, and their ratio (goal: within 10 %).

Goals: job frames/s >= 3x the official route; peak memory at 4N within 10 % of N.
Random weights: the timings are the real network's, the masks mean nothing.

    .venv/bin/python benchmarks/propagate.py [--targets 8] [--image-size 512] [--batch-size 4]

``--image-size 1024`` is the models' real input size (about 4x slower per frame on CPU
than 512, both routes alike).
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import warnings
from pathlib import Path

import numpy as np

os.environ.setdefault("TQDM_DISABLE", "1")  # sam2's per-video progress bars
warnings.filterwarnings("ignore")

NAME = "sam2.1-tiny"


def random_checkpoint(workdir: Path) -> Path:
    """A seeded random-weight SAM 2.1-tiny in the official layout ``{"model": sd}``."""
    from segdeck.core import models as M
    from segdeck.core.sam.loading import save_random_checkpoint

    spec = M.get_spec(NAME)
    return save_random_checkpoint(spec, workdir / spec.filename, seed=0)


def _photos(n: int, w: int, h: int) -> list[np.ndarray]:
    import cv2
    import skimage.data as d

    sources = [d.astronaut(), d.coffee(), d.chelsea(), d.rocket()]
    rng = np.random.default_rng(0)
    out = []
    for i in range(n):
        src = sources[i % len(sources)]
        scale = max(w / src.shape[1], h / src.shape[0]) * 1.25
        big = cv2.resize(src, (int(src.shape[1] * scale) + 1, int(src.shape[0] * scale) + 1))
        y = int(rng.integers(0, big.shape[0] - h + 1))
        x = int(rng.integers(0, big.shape[1] - w + 1))
        out.append(np.ascontiguousarray(big[y:y + h, x:x + w]))
    return out


def _label_map(h: int, w: int, n_objects: int, k: int) -> np.ndarray:
    lab = np.zeros((h, w), np.uint16)
    for j in range(n_objects):
        x0 = int(w * (0.1 + 0.8 * j / n_objects)) + 3 * k
        y0 = int(h * (0.2 + 0.1 * (j % 3)))
        lab[y0:y0 + h // 3, x0:x0 + int(0.6 * w / n_objects)] = j + 1
    return lab


def make_group(workdir: Path, n_refs: int, n_targets: int, n_objects: int, w: int, h: int):
    """JPEGs, two specs (N and 4N targets, same references) and the references' label
    maps in the spec's reference store. Returns (refs, targets, spec_n, spec_4n) with
    refs / targets as (key, path) lists."""
    import cv2

    from segdeck.core.propagate.references import ReferenceStore
    from segdeck.core.propagate.spec import load_project

    photos_dir = workdir / "photos"
    photos_dir.mkdir()
    photos = _photos(n_refs + 4 * n_targets, w, h)
    rows = []
    for i, img in enumerate(photos):
        key = f"r{i}" if i < n_refs else f"t{i - n_refs:03d}"
        cv2.imwrite(str(photos_dir / f"{key}.jpg"), cv2.cvtColor(img, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 95])
        rows.append(key)
    specs = []
    for label, n in (("n", n_targets), ("4n", 4 * n_targets)):
        csv = workdir / f"group-{label}.csv"
        csv.write_text("id,file\n" + "".join(f"{k},{k}.jpg\n" for k in rows[:n_refs + n]))
        spec = workdir / f"group-{label}.toml"
        spec.write_text(f'csv = "{csv.name}"\nkey = "id"\npath = "file"\ngroup_by = []\nroot = "photos"\n'
                        f'model = "{NAME}"\nmask_mode = "original"\nreferences = {n_refs}\nseed = 0\n'
                        'refs_dir = "refs"\n')
        specs.append(spec)
    project = load_project(specs[1])
    store = ReferenceStore(project.refs_dir)
    group = project.groups[0]
    for k in range(n_refs):
        store.save(group, f"r{k}", _label_map(h, w, n_objects, k), image=f"r{k}.jpg")
    refs = [(f"r{k}", photos_dir / f"r{k}.jpg") for k in range(n_refs)]
    targets = [(k, photos_dir / f"{k}.jpg") for k in rows[n_refs:n_refs + n_targets]]
    return refs, targets, specs[0], specs[1]


def official_route(ckpt: Path, image_size: int, refs, targets, n_objects: int, h: int, w: int):
    """Frames/s of the official route and its label maps (key -> (H, W) int32)."""
    import torch
    from sam2.build_sam import build_sam2_video_predictor

    from segdeck.core import models as M

    cfg = M.get_spec(NAME).config
    predictor = build_sam2_video_predictor(cfg, ckpt_path=str(ckpt), device="cpu",
                                           hydra_overrides_extra=[f"++model.image_size={image_size}"])
    predictor.fill_hole_area = 0
    ref_masks = [_label_map(h, w, n_objects, k) for k in range(len(refs))]
    ids = list(range(1, n_objects + 1))
    maps = {}
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        for key, path in targets:
            folder = Path(tmp) / key
            folder.mkdir()
            for i, (_, ref_path) in enumerate(refs):
                shutil.copyfile(ref_path, folder / f"{i}.jpg")
            shutil.copyfile(path, folder / f"{len(refs)}.jpg")
            with torch.inference_mode():
                state = predictor.init_state(str(folder))
                for i, lab in enumerate(ref_masks):
                    for oid in ids:
                        predictor.add_new_mask(state, i, oid, lab == oid)
                for frame_idx, obj_ids, masks in predictor.propagate_in_video(state):
                    if frame_idx == len(refs):
                        logits, out_ids = masks[:, 0].numpy(), list(obj_ids)
            best, arg = logits.max(0), logits.argmax(0)
            maps[key] = np.where(best > 0, np.asarray(out_ids)[arg], 0).astype(np.int32)
            del state
        seconds = time.perf_counter() - t0
    return len(targets) / seconds, seconds, maps


def run_job(spec: Path, ckpt: Path, image_size: int, batch_size: int, out: Path, env: dict) -> dict:
    """Run ``segdeck run propagate`` once; returns its timings, peak RSS and job folder."""
    cmd = [sys.executable, "-m", "segdeck", "run", "propagate", str(spec), "--checkpoint", str(ckpt),
           "--image-size", str(image_size), "--batch-size", str(batch_size), "--device", "cpu",
           "--out", str(out), "--events"]
    out.mkdir(parents=True, exist_ok=True)
    with open(out / "stdout.txt", "w+") as fo, open(out / "stderr.txt", "w+") as fe:
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, stdout=fo, stderr=fe, env=env)
        _, status, usage = os.wait4(proc.pid, 0)  # this child's own peak RSS
        seconds = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)
        fo.seek(0), fe.seek(0)
        stdout, stderr = fo.read(), fe.read()
    if proc.returncode != 0:
        sys.exit(f"segdeck run propagate failed ({proc.returncode}): {stderr.strip()[-800:]}")
    events = [json.loads(line) for line in stdout.splitlines() if line.startswith("{")]
    loaded = [e["t"] for e in events if e.get("kind") == "Message" and "loaded" in e.get("text", "")]
    done = [e for e in events if e.get("kind") == "ItemDone"]
    if not done or not loaded:
        sys.exit(f"segdeck run propagate wrote no items: {stderr.strip()[-800:]}")
    job_dir = next(p.parent for p in out.rglob("job.toml"))
    peak = usage.ru_maxrss * 1024 if sys.platform != "darwin" else usage.ru_maxrss
    return {"process_s": seconds, "items_s": done[-1]["t"] - loaded[0], "items": len(done),
            "peak_bytes": peak, "job_dir": job_dir}


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--targets", type=int, default=8, help="N: targets of the speed run (memory: N and 4N)")
    ap.add_argument("--references", type=int, default=3)
    ap.add_argument("--objects", type=int, default=2)
    ap.add_argument("--image-size", type=int, default=512, help="model input side (1024 = the real size)")
    ap.add_argument("--batch-size", type=int, default=4, help="the job's --batch-size")
    ap.add_argument("--side", default="480x360", help="photo W x H")
    ap.add_argument("--threads", type=int, default=min(2, os.cpu_count() or 1), help="torch threads, both sides")
    ap.add_argument("--skip-memory", action="store_true", help="no 4N run")
    args = ap.parse_args(argv)
    w, h = (int(v) for v in args.side.lower().split("x"))

    import torch

    from segdeck.core import imageio

    torch.set_num_threads(args.threads)
    workdir = Path(tempfile.mkdtemp(prefix="segdeck-bench-propagate-"))
    try:
        env = {**os.environ, "SEGDECK_MODEL_DIR": str(workdir / "models"), "SEGDECK_STATE_DIR": str(workdir / "state"),
               "OMP_NUM_THREADS": str(args.threads), "TQDM_DISABLE": "1"}
        ckpt = random_checkpoint(workdir)
        refs, targets, spec_n, spec_4n = make_group(workdir, args.references, args.targets, args.objects, w, h)
        print(f"group: {args.references} references + {args.targets} targets, {w}x{h} JPEGs, {args.objects} objects; "
              f"SAM 2.1-tiny random weights, input {args.image_size}, CPU, {args.threads} threads")

        fps_off, sec_off, off_maps = official_route(ckpt, args.image_size, refs, targets, args.objects, h, w)
        print(f"official route (init_state over a JPEG folder of references + target, per target): "
              f"{fps_off:.3f} frames/s ({sec_off:.1f} s for {len(targets)})")

        job = run_job(spec_n, ckpt, args.image_size, args.batch_size, workdir / "out-n", env)
        fps_items = job["items"] / job["items_s"]
        fps_proc = job["items"] / job["process_s"]
        print(f"propagate job (--batch-size {args.batch_size}): {fps_items:.3f} frames/s over the items "
              f"({job['items_s']:.1f} s: references + {job['items']} targets), {fps_proc:.3f} frames/s over the "
              f"whole process ({job['process_s']:.1f} s, start-up and model load included)")
        print(f"speed ratio job / official: {fps_items / fps_off:.2f}x (items), {fps_proc / fps_off:.2f}x "
              f"(whole process)   goal >= 3x")
        ious = []
        for key, off in off_maps.items():
            ours = imageio.read_label_map(job["job_dir"] / f"{key}.labels.png")
            ious += [_iou(ours == oid, off == oid) for oid in range(1, args.objects + 1)
                     if (ours == oid).any() or (off == oid).any()]
        if ious:
            print(f"mask agreement job vs official: per-object IoU min {min(ious):.4f}, mean {np.mean(ious):.4f} "
                  f"({len(ious)} masks)")

        if not args.skip_memory:
            big = run_job(spec_4n, ckpt, args.image_size, args.batch_size, workdir / "out-4n", env)
            n_mb, big_mb = job["peak_bytes"] / 2**20, big["peak_bytes"] / 2**20
            print(f"peak memory of the job: {n_mb:.0f} MiB for {job['items']} targets, {big_mb:.0f} MiB for "
                  f"{big['items']} targets: ratio {big_mb / n_mb:.3f}   goal <= 1.10")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
