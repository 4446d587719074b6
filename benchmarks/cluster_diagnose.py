"""Where the ``dup`` method loses the held-out generator's pairs (development seeds only).

Builds the held-out generator's set (:func:`cluster.build_held_out`) with a development
seed (never the held-out seed :data:`cluster.HELD_OUT_SEED`), runs the ``dup`` pipeline
in-process as ``segdeck run cluster`` does (256-px grayscale decode, features, ORB images
at ``orb_side``) and, for every transformed copy that did not end in its original's
cluster, says at which stage the (original, copy) pair was lost:

* ``not-candidate``: no route (whole hash, centre hash, window hash) proposed it; the
  hash distances are printed by family (whole, centre, best window);
* ``prefilter``: proposed, rejected by the thumbnail correlation (``min_ncc``);
* ``verify``: checked by ORB + RANSAC (and the dense check where it applies) and rejected;
* ``unchecked``: its link ran out of ``verify_per_link`` rounds;
* ``linkage``: accepted, but the average linkage put the two images apart.

Also counts the false pairs (different tiles in one cluster) by the route and stage of the
accepted edges that join them, and prints pair P/R/F1 and per-transform recall.

Run::

    .venv/bin/python benchmarks/cluster_diagnose.py --seed 1 [--seed 2] [--keep DIR]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

import cluster as bench  # noqa: E402


def load_set(seed: int, keep: Path | None) -> tuple[Path, dict[str, tuple[int, str]]]:
    """Build (or reuse, under ``keep``) the generator's set with ``seed``; name -> (group, family)."""
    import json

    if seed == bench.HELD_OUT_SEED:
        raise SystemExit(f"seed {seed} is the held-out seed: diagnose on development seeds only")
    root = (keep or Path(tempfile.mkdtemp(prefix="segdeck-diag-"))) / f"seed{seed}"
    truth_file = root / "truth.json"
    if truth_file.exists():
        truth = {k: tuple(v) for k, v in json.loads(truth_file.read_text()).items()}
        return root / "set", truth
    truth = bench.build_held_out(root / "set", seed=seed)
    truth_file.write_text(json.dumps(truth))
    return root / "set", truth


def run_pipeline(folder: Path, params, workers: int = 2):
    """The ``dup`` job's steps in-process: names, labels, PairDecisions, timings."""
    from concurrent.futures import ThreadPoolExecutor

    from segdeck.core.cluster import dedup, features

    names = sorted(p.name for p in folder.iterdir())
    t0 = time.perf_counter()
    with ThreadPoolExecutor(workers) as pool:
        grays = list(pool.map(lambda n: features.load_gray_small(folder / n, 256), names, chunksize=32))
        feats = list(pool.map(features.dup_feature, grays, chunksize=32))
    small = [features.shrink(g, params.orb_side) for g in grays]
    t1, c1 = time.perf_counter(), time.process_time()
    decisions: list = []
    labels, stats = dedup.dup_cluster(feats, params, gray=lambda k: small[k], workers=workers, decisions=decisions)
    t2, c2 = time.perf_counter(), time.process_time()
    return names, labels, decisions[0], feats, {"features": t1 - t0, "cluster": t2 - t1, "cluster_cpu": c2 - c1, **stats}


def diagnose(names, labels, dec, feats, truth, params) -> dict:
    """Print the loss table; return per-family recall and P/R."""
    from segdeck.core.cluster import similarity

    n = len(names)
    idx = {nm: k for k, nm in enumerate(names)}
    group = np.array([truth[nm][0] for nm in names])
    fam = [truth[nm][1] for nm in names]
    orig = {truth[nm][0]: idx[nm] for nm in names if truth[nm][1] == "original"}
    pairs = {}
    for t in range(len(dec.i)):
        pairs[(int(dec.i[t]), int(dec.j[t]))] = t
    h = np.stack([f["h"] for f in feats])
    c = np.stack([f["c"] for f in feats])
    w = np.stack([f["w"] for f in feats])

    def dist(a, b):
        whole = int(min(similarity.popcount64(h[a, 0] ^ h[b, 0]), similarity.popcount64(h[a, 0] ^ h[b, 1])))
        centre = int(min(similarity.popcount64(c[a, 0] ^ c[b, 0]), similarity.popcount64(c[a, 0] ^ c[b, 1])))
        win = int(min(similarity.popcount64(h[a, 0] ^ w[b]).min(), similarity.popcount64(h[b, 0] ^ w[a]).min()))
        return whole, centre, win

    table: dict[str, Counter] = defaultdict(Counter)
    hit: dict[str, list] = defaultdict(list)
    misses = []
    for k in range(n):
        if fam[k] == "original":
            continue
        o = orig[group[k]]
        ok = labels[k] == labels[o]
        hit[fam[k]].append(ok)
        if ok:
            continue
        key = (min(k, o), max(k, o))
        t = pairs.get(key)
        if t is None:
            why = "not-candidate"
            misses.append((fam[k], names[k], names[o], dist(k, o)))
        elif dec.accepted[t]:
            why = "linkage"
        else:
            why = dec.reason[t] or "?"
            misses.append((fam[k], names[k], names[o], dist(k, o), ["whole", "crop", "centre", "neighbour"][dec.route[t]], why))
        table[fam[k]][why] += 1
    # false pairs: accepted edges across groups
    acc = dec.accepted
    false_edges = Counter()
    for t in np.nonzero(acc)[0]:
        a, b = int(dec.i[t]), int(dec.j[t])
        if group[a] != group[b]:
            false_edges[(["whole", "crop", "centre", "neighbour"][dec.route[t]], dec.stage[t])] += 1
    same_pred = labels[:, None] == labels[None, :]
    same_true = group[:, None] == group[None, :]
    iu = np.triu_indices(n, 1)
    tp = int((same_pred & same_true)[iu].sum())
    fp = int((same_pred & ~same_true)[iu].sum())
    fn = int((~same_pred & same_true)[iu].sum())
    prec, rec = tp / max(1, tp + fp), tp / max(1, tp + fn)
    f1 = 2 * prec * rec / max(1e-9, prec + rec)
    print(f"pairs: P {prec:.3f}  R {rec:.3f}  F1 {f1:.3f}  (false pairs {fp})")
    print("per-family recall and where the (original, copy) pair was lost:")
    stages = ["not-candidate", "prefilter", "verify", "unchecked", "linkage"]
    print(f"    {'family':17s} {'recall':>6s} {'n':>4s} " + " ".join(f"{s:>13s}" for s in stages))
    for f in sorted(hit):
        print(f"    {f:17s} {np.mean(hit[f]):6.2f} {len(hit[f]):4d} " + " ".join(f"{table[f][s]:13d}" for s in stages))
    tot = Counter()
    for f in table:
        tot.update(table[f])
    print("    total lost: " + ", ".join(f"{s} {tot[s]}" for s in stages))
    print("accepted false edges by (route, stage): " + (", ".join(f"{r}/{s} {v}" for (r, s), v in sorted(false_edges.items())) or "none"))
    return {"P": prec, "R": rec, "F1": f1, "recall": {f: float(np.mean(v)) for f, v in hit.items()}, "misses": misses}


def main(argv=None) -> int:
    from threadpoolctl import threadpool_limits

    from segdeck.core.cluster.dedup import DupParams

    threadpool_limits(1, user_api="blas")  # as the dup job does (methods/dup.py)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, action="append", help="development seed (repeatable; default 1 and 2)")
    ap.add_argument("--keep", default="/tmp/segdeck-diag", help="build the sets here once and reuse them")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--misses", action="store_true", help="list every lost pair with its hash distances")
    ap.add_argument("--set", action="append", default=[], metavar="NAME=VALUE", help="a DupParams field (repeatable)")
    args = ap.parse_args(argv)
    params = DupParams(**{kv.split("=", 1)[0]: type(getattr(DupParams(), kv.split("=", 1)[0]))(kv.split("=", 1)[1])
                          for kv in args.set})
    for seed in args.seed or [1, 2]:
        folder, truth = load_set(seed, Path(args.keep) if args.keep else None)
        names, labels, dec, feats, st = run_pipeline(folder, params, args.workers)
        print(f"== seed {seed}: {len(names)} images; features {st['features']:.1f} s, clustering {st['cluster']:.1f} s "
              f"({st['cluster_cpu']:.1f} s CPU); "
              f"candidates {st['candidates']} (crop {st['crop_candidates']}, centre {st['centre_candidates']}, neighbour {st['neighbour_candidates']}), "
              f"sure {st['sure']}, verified {st['verified']}, dense {st['dense']}, accepted {st['accepted']}")
        res = diagnose(names, labels, dec, feats, truth, params)
        if args.misses:
            for m in res["misses"]:
                print("    ", *m)
    return 0


if __name__ == "__main__":
    sys.exit(main())
