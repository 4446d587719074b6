"""Separation and cost of the dense alignment verifier (:mod:`segdeck.core.cluster.align`)
against ORB + RANSAC as ``dup`` verifies today, on pairs of the held-out generator.

Pairs come from the held-out generator's own functions in ``benchmarks/cluster.py``
(:func:`cluster._photos`, :func:`cluster._held_out_tiles`, :func:`cluster._held_out_transform`)
with **development seeds only** (default 1 and 2; the held-out seed is refused):

* positives: (tile, edit of the tile) for every family of ``HELD_OUT_TRANSFORMS`` and
  ``jpeg`` (the tile itself re-encoded), every tile;
* negatives: ``neighbour`` (tile, a 4-neighbour tile of the same photo: same camera,
  colours and texture, other content; brick, grass and gravel are repetitive),
  ``neighbour_edit`` (tile, an edit of a neighbour, random family) and ``random``
  (tile, a tile of another photo).

Every image is JPEG-encoded as the generator's files are (originals quality 80..95,
edits 60..95), decoded as grayscale and shrunk to a longer side of 128 px, as the
``dup`` job hands images to its verification (``orb_side``).

Printed: per-family pass rate of the positives and false-accept rate of each negative
kind at the chosen threshold, for the aligner, for ORB (``dedup.orb_keys`` +
``dedup.ransac_inliers``, accepted at ``min_inliers``, with dedup's second pass on blurred
96-px images for every pair the first rejects) and for their union; a threshold
sweep of the aligner; the cost per image (preparation, ORB keypoints) and per pair
(alignment batched, RANSAC), in microseconds on this machine (one thread). With
``--templates`` also the alternative the aligner was chosen over: a bank of 25 rotated
(+-10 degrees) and zoomed (0.75..1.35) centre templates of ``b`` matched over ``a``
(``cv2.matchTemplate``, ``TM_CCOEFF_NORMED``), at the threshold giving the aligner's
false-accept rate on neighbours.

Run::

    .venv/bin/python benchmarks/cluster_align.py [--seed 1 --seed 2] [--threshold 0.68] [--candidates 1] [--side 48] [--gate 0.08]
        [--templates] [--detail]
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections import defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cluster as bench  # noqa: E402

FAMILIES = (*bench.HELD_OUT_TRANSFORMS, "jpeg")
NEGATIVES = ("neighbour", "neighbour_edit", "random")


def _gray(rgb: np.ndarray, quality: int, side: int = 128) -> np.ndarray:
    """JPEG round trip at ``quality``, decoded as grayscale (luma), longer side <= 256 then ``side``."""
    import cv2

    from segdeck.core.imageio import shrink

    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])
    if not ok:
        raise RuntimeError("JPEG encoding failed")
    g = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE)
    return shrink(shrink(g, 256), side)


def build_pairs(seed: int) -> tuple[list[np.ndarray], list[tuple[int, int, str, bool, str]]]:
    """Images and pairs of one development seed.

    Returns
    -------
    images : list of (H, W) uint8
    pairs : list of (a, b, kind, positive, photo)
        Indices into ``images``; ``kind`` a family (positives) or a negative kind.
    """
    if seed == bench.HELD_OUT_SEED:
        raise SystemExit(f"seed {seed} is the held-out seed: measure on development seeds only")
    rng = random.Random(seed)
    tiles = bench._held_out_tiles(bench._photos())
    pos = {}
    for k, (name, photo, _t) in enumerate(tiles):
        r, c = name.rsplit("_r", 1)[1].split("c")
        pos[(photo, int(r), int(c))] = k
    images: list[np.ndarray] = []
    pairs = []
    orig = []
    for _name, _photo, tile in tiles:
        orig.append(len(images))
        images.append(_gray(tile, rng.randint(80, 95)))
    for k, (_name, photo, tile) in enumerate(tiles):
        for fam in FAMILIES:
            edit = tile if fam == "jpeg" else np.ascontiguousarray(bench._held_out_transform(fam, tile, rng))
            images.append(_gray(edit, rng.randint(60, 95)))
            pairs.append((orig[k], len(images) - 1, fam, True, photo))
    for (photo, r, c), k in pos.items():
        for dr, dc in ((0, 1), (1, 0), (0, -1), (-1, 0)):
            n = pos.get((photo, r + dr, c + dc))
            if n is None:
                continue
            pairs.append((orig[k], orig[n], "neighbour", False, photo))
            fam = rng.choice(bench.HELD_OUT_TRANSFORMS)
            edit = np.ascontiguousarray(bench._held_out_transform(fam, tiles[n][2], rng))
            images.append(_gray(edit, rng.randint(60, 95)))
            pairs.append((orig[k], len(images) - 1, "neighbour_edit", False, photo))
        for _ in range(2):
            other = rng.randrange(len(tiles))
            if tiles[other][1] != photo:
                pairs.append((orig[k], orig[other], "random", False, photo))
    return images, pairs


def score_align(images, pairs, **kw) -> tuple[np.ndarray, float, float]:
    """Aligner scores; cost per image (``prepare_many``) and per pair (``align_pairs``), both batched, microseconds."""
    from segdeck.core.cluster import align

    side = kw.pop("side", align.ALIGN_SIDE)
    t0 = time.perf_counter()
    prep = align.prepare_many(images, side)
    t1 = time.perf_counter()
    i = np.array([p[0] for p in pairs])
    j = np.array([p[1] for p in pairs])
    scores = np.zeros(len(pairs))
    for s in range(0, len(pairs), 1024):
        scores[s:s + 1024] = align.align_pairs(prep, i[s:s + 1024], j[s:s + 1024], **kw)["score"]
    t2 = time.perf_counter()
    return scores, (t1 - t0) / len(images) * 1e6, (t2 - t1) / len(pairs) * 1e6


#: Template bank of the alternative verifier (:func:`score_templates`): rotations
#: (degrees) and zooms of the centre of ``b`` matched into ``a``.
BANK_ANGLES = (-10.0, -5.0, 0.0, 5.0, 10.0)
BANK_SCALES = (0.75, 0.87, 1.0, 1.15, 1.35)
BANK_SIDE = 64
BANK_CENTRE = 0.6


def _small(gray: np.ndarray) -> np.ndarray:
    import cv2

    f = BANK_SIDE / max(gray.shape)
    size = (max(1, round(gray.shape[1] * f)), max(1, round(gray.shape[0] * f)))
    return cv2.resize(gray, size, interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR).astype(np.float32)


def _bank(gray: np.ndarray) -> list[np.ndarray]:
    """Centre templates of one image: the image resized to a longer side of
    :data:`BANK_SIDE`, rotated and zoomed about its centre, central :data:`BANK_CENTRE`
    of the shorter side cut out (float32)."""
    g = _small(gray)
    h, w = g.shape
    t = max(8, int(BANK_CENTRE * min(h, w)))
    import cv2

    out = []
    for a in BANK_ANGLES:
        for s in BANK_SCALES:
            m = cv2.getRotationMatrix2D(((w - 1) / 2, (h - 1) / 2), a, s)
            r = cv2.warpAffine(g, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
            y0, x0 = (h - t) // 2, (w - t) // 2
            out.append(np.ascontiguousarray(r[y0:y0 + t, x0:x0 + t]))
    return out


def score_templates(images, pairs) -> tuple[np.ndarray, float, float]:
    """Alternative verifier: the best ``cv2.matchTemplate`` (``TM_CCOEFF_NORMED``) of a bank
    of rotated and zoomed centre templates of ``b`` (:func:`_bank`) over ``a`` at
    :data:`BANK_SIDE` px; cost per image (bank) and per pair, microseconds."""
    import cv2

    t0 = time.perf_counter()
    banks = [_bank(g) for g in images]
    small = [_small(g) for g in images]
    t1 = time.perf_counter()
    out = np.zeros(len(pairs))
    for n, (a, b, *_r) in enumerate(pairs):
        img = small[a]
        best = 0.0
        for tmpl in banks[b]:
            if tmpl.shape[0] > img.shape[0] or tmpl.shape[1] > img.shape[1] or tmpl.std() < 1e-3:
                continue
            best = max(best, float(cv2.matchTemplate(img, tmpl, cv2.TM_CCOEFF_NORMED).max()))
        out[n] = best
    t2 = time.perf_counter()
    return out, (t1 - t0) / len(images) * 1e6, (t2 - t1) / len(pairs) * 1e6


def score_orb(images, pairs) -> tuple[np.ndarray, float, float]:
    """RANSAC inliers as ``dup`` verifies (its default parameters); cost per image and per pair.

    Where ``dedup`` has a second pass on smaller blurred images (``RETRY_SIDE``,
    ``RETRY_BLUR``), a pair the first pass rejects gets it here too, unconditionally (the
    pipeline retries only pairs with close hashes and correlated thumbnails): an upper
    bound of what ORB accepts. Inliers are the larger of the two passes.
    """
    import cv2

    from segdeck.core.cluster import dedup, features

    p = dedup.DupParams()
    det = dedup.orb_detector(p.orb_features, p.orb_levels)
    t0 = time.perf_counter()
    keys = [dedup.orb_keys(g, p.orb_side, p.orb_features, p.orb_levels, detector=det) for g in images]
    t1 = time.perf_counter()
    inl = np.array([dedup.ransac_inliers(keys[a], keys[b], max_rotation=p.max_rotation, max_scale=p.max_scale)
                    for a, b, *_ in pairs], float)
    t2 = time.perf_counter()
    side, blur = getattr(dedup, "RETRY_SIDE", 0), getattr(dedup, "RETRY_BLUR", 0.0)
    if side > 0:
        retry: dict[int, tuple] = {}
        for t in np.nonzero(inl < p.min_inliers)[0]:
            a, b = pairs[t][0], pairs[t][1]
            for k in (a, b):
                if k not in retry:
                    g = cv2.GaussianBlur(features.shrink(images[k], side), (0, 0), blur) if blur > 0 else images[k]
                    retry[k] = dedup.orb_keys(g, side, p.orb_features, p.orb_levels, detector=det)
            inl[t] = max(inl[t], dedup.ransac_inliers(retry[a], retry[b], max_rotation=p.max_rotation,
                                                      max_scale=p.max_scale))
    return inl, (t1 - t0) / len(images) * 1e6, (t2 - t1) / len(pairs) * 1e6


def _rates(accept: np.ndarray, pairs) -> dict[str, float]:
    by = defaultdict(list)
    for ok, (_a, _b, kind, _p, _ph) in zip(accept, pairs, strict=True):
        by[kind].append(bool(ok))
    return {k: float(np.mean(v)) for k, v in by.items()}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, action="append", help="development seed(s) (default 1 and 2)")
    ap.add_argument("--threshold", type=float, default=None,
                    help="aligner score accepted (default align.ACCEPT_SCORE, 0.68)")
    ap.add_argument("--candidates", type=int, default=1, help="rotation-scale peaks tried per pair (default 1)")
    ap.add_argument("--gate", type=float, default=0.0,
                    help="min_spectrum_peak of align_pairs (0: off; align.SPECTRUM_GATE is the suggested value)")
    ap.add_argument("--side", type=int, default=None, help="aligner canvas side in pixels (default align.ALIGN_SIDE)")
    ap.add_argument("--templates", action="store_true",
                    help="also score the template-bank alternative (about 10x the aligner's cost)")
    ap.add_argument("--detail", action="store_true", help="also print false accepts by photo and the weakest positives")
    args = ap.parse_args(argv)
    seeds = args.seed or [1, 2]
    if bench.HELD_OUT_SEED in seeds:
        print(f"seed {bench.HELD_OUT_SEED} is the held-out seed: measure on development seeds only", file=sys.stderr)
        return 2
    from segdeck.core.cluster import align, dedup

    if args.threshold is None:
        args.threshold = align.ACCEPT_SCORE
    images, pairs = [], []
    for seed in seeds:
        im, pr = build_pairs(seed)
        off = len(images)
        images += im
        pairs += [(a + off, b + off, k, p, ph) for a, b, k, p, ph in pr]
    positive = np.array([p[3] for p in pairs])
    kinds = np.array([p[2] for p in pairs])
    print(f"seeds {seeds}: {len(images)} images, {int(positive.sum())} positive and {int((~positive).sum())} "
          f"negative pairs (" + ", ".join(f"{k} {int((kinds == k).sum())}" for k in NEGATIVES) + ")")
    if args.side is not None and not 16 <= args.side <= 256:
        print(f"--side {args.side}: expected 16..256 pixels", file=sys.stderr)
        return 2
    sc, prep_us, pair_us = score_align(images, pairs, candidates=args.candidates, side=args.side or align.ALIGN_SIDE,
                                       min_spectrum_peak=args.gate)
    inl, orb_img_us, orb_pair_us = score_orb(images, pairs)
    orb_ok = inl >= dedup.DupParams().min_inliers
    al_ok = sc >= args.threshold
    print(f"aligner: {args.side or align.ALIGN_SIDE}-px canvas, {args.candidates} rotation-scale candidate(s) per "
          f"pair, spectrum gate {args.gate}; union = align or ORB")
    cols = [("align", al_ok), ("orb", orb_ok), ("union", al_ok | orb_ok)]
    if args.templates:
        tm, tm_img_us, tm_pair_us = score_templates(images, pairs)
        neg = ~positive & (kinds != "random")
        tm_thr = float(np.quantile(tm[neg], 1 - max(np.mean(al_ok[neg]), 1e-4)))  # same false-accept rate
        cols.append(("template", tm > tm_thr))
    rates = {name: _rates(ok, pairs) for name, ok in cols}
    print(f"\npass rate of positives / false-accept rate of negatives (align score >= {args.threshold}, "
          f"ORB >= {dedup.DupParams().min_inliers} inliers)")
    print(f"{'':16s}" + "".join(f"{name:>9s}" for name, _ in cols))
    for k in (*FAMILIES, *NEGATIVES):
        print(f"{k:16s}" + "".join(f"{rates[name].get(k, float('nan')):9.3f}" for name, _ in cols))
    print("\nthreshold sweep: align alone (min family pass, all positives, false accepts per negative kind), "
          "then align or ORB")
    print(f"{'thr':>6s} {'min_fam':>8s} {'pos':>6s} " + " ".join(f"{k:>14s}" for k in NEGATIVES)
          + f"  {'weakest':16s} {'U_min_fam':>9s} {'U_neighbour':>11s} {'U_nb_edit':>9s}")
    for thr in (0.5, 0.55, 0.6, 0.625, 0.65, 0.675, 0.7, 0.725, 0.75, 0.8):
        r = _rates(sc >= thr, pairs)
        u = _rates((sc >= thr) | orb_ok, pairs)
        fam = min(FAMILIES, key=lambda f: r[f])
        print(f"{thr:6.3f} {r[fam]:8.3f} {np.mean(sc[positive] >= thr):6.3f} "
              + " ".join(f"{r[k]:14.4f}" for k in NEGATIVES) + f"  {fam:16s} {min(u[f] for f in FAMILIES):9.3f} "
              f"{u['neighbour']:11.4f} {u['neighbour_edit']:9.4f}")
    print(f"\ncost (us, one thread, this machine): align prepare {prep_us:.0f}/image, align {pair_us:.0f}/pair "
          f"(batched); ORB keys {orb_img_us:.0f}/image, RANSAC {orb_pair_us:.0f}/pair; align / ORB: "
          f"{prep_us / orb_img_us:.2f}x per image, {pair_us / orb_pair_us:.2f}x per pair")
    if args.templates:
        print(f"template bank ({len(BANK_ANGLES) * len(BANK_SCALES)} templates, threshold {tm_thr:.3f} for the aligner's "
              f"false-accept rate on neighbours): bank {tm_img_us:.0f}/image, {tm_pair_us:.0f}/pair")
    if args.detail:
        neg_fa = defaultdict(lambda: [0, 0])
        for ok, (_a, _b, kind, p, ph) in zip(al_ok, pairs, strict=True):
            if not p:
                neg_fa[(ph, kind)][0] += int(ok)
                neg_fa[(ph, kind)][1] += 1
        print("\nfalse accepts by photo (align): " + ", ".join(f"{ph}/{k} {a}/{n}" for (ph, k), (a, n) in
                                                                 sorted(neg_fa.items()) if a))
        print("highest negative scores: " + ", ".join(f"{pairs[t][4]}/{pairs[t][2]} {sc[t]:.3f}" for t in
                                                       np.argsort(-np.where(positive, -1, sc))[:12]))
        miss = defaultdict(list)
        for t in np.nonzero(positive & ~al_ok)[0]:
            miss[pairs[t][2]].append(f"{pairs[t][4]} {sc[t]:.2f}")
        for fam, v in miss.items():
            print(f"missed {fam} ({len(v)}): " + ", ".join(v[:14]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
