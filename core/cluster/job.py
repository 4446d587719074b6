"""The ``cluster`` job: sort a folder of images into folders of similar images.

``segdeck run cluster INPUT [--method dup|phash|ssim|minhash|orb|tm|deep] [--threshold T] ...``

Per item (through the job runner: manifest, resume, per-item errors) the image is
decoded at reduced size and its feature is computed, or read from the feature cache
of the output root (``cluster-cache.sqlite``, keyed by path, size and mtime, so a
re-run on a grown folder or with another threshold only computes new files). After
the items, :meth:`ClusterJob.finalize` clusters and writes the job folder::

    cluster_0001/ ... outliers/   the images (copy, symlink, hardlink or move)
    clusters.json                 every file -> its folder, method, threshold, statistics,
                                  and for ``deep`` every clustering candidate's scores
    threshold_curve.png/.json     the threshold curve, when the threshold was chosen
                                  automatically (seed methods)
    autoencoder.pt                the trained model (``deep`` with the autoencoder)

Methods: ``dup`` (default) is the near-duplicate pipeline of
:mod:`segdeck.core.cluster.dedup`; ``phash``, ``ssim``, ``minhash``, ``orb``, ``tm``
are the seed's methods (similar pairs above a threshold, connected components, or
average linkage with ``--linkage average``; the pairwise ones in batches merged
through representatives); ``deep`` embeds images with an autoencoder trained on the
folder or a pretrained CNN and picks the best of five clustering algorithms (with
``--threshold``, it links images whose embeddings' cosine similarity reaches the
threshold instead, searched with an HNSW index).
"""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import Field

from segdeck.core.cluster.dedup import DupParams
from segdeck.core.cluster.deep import DeepParams
from segdeck.core.jobs.base import Job
from segdeck.core.jobs.events import Message, Progress
from segdeck.core.params import JobParams

#: Decode size (longer side, pixels) per method; ``dup`` and ``phash`` use ``max_side``.
_DECODE_SIDE = {"ssim": 128, "tm": 128, "minhash": 160, "orb": 256}

#: Default batch size of the pairwise methods (ssim, orb, tm) when ``batch_size`` is 0.
PAIRWISE_BATCH = 256

#: Smallest tile of the exact pair search: every pair is compared once whatever the
#: tile, so a smaller ``batch_size`` would only multiply the per-tile call overhead.
MIN_TILE = 64


class ClusterParams(JobParams):
    """Parameters of the cluster job."""

    method: Literal["dup", "phash", "ssim", "minhash", "orb", "tm", "deep"] = Field(
        "dup", description="similarity: dup (near-duplicates, verified), phash, ssim, minhash, orb, tm, deep")
    threshold: float | None = Field(
        None, ge=-1.0, le=1.0,
        description="similarity threshold of the seed methods; unset = chosen automatically from a sample")
    linkage: Literal["components", "average"] = Field(
        "components", description="seed methods: connected components (the seed's chains) or average linkage")
    sample_size: int = Field(200, ge=10, le=5000, description="images in the sample of the threshold curve")
    batch_size: int = Field(0, ge=0, le=1_000_000,
                            description="ssim/orb/tm: images per tile of the pair comparison; 0 = 256 "
                                        "(phash, minhash, deep search all images with an index; dup ignores it)")
    min_cluster_size: int = Field(2, ge=2, le=1_000_000, description="smaller clusters go to the outliers folder")
    output: Literal["copy", "symlink", "hardlink", "move"] = Field("copy", description="how images are placed in the cluster folders")
    max_side: int = Field(256, ge=32, le=4096, description="images are decoded with their longer side at most this (pixels)")
    exact_pairs: int = Field(
        5_000_000, ge=0, le=10**12,
        description="ssim/orb/tm: compare every pair (in tiles of --batch-size) up to this many pairs; "
                    "above, batches are merged through representatives (approximate, logged)")
    workers: int = Field(2, ge=1, le=64, description="threads for verification and clustering")
    dup: DupParams = Field(default_factory=DupParams, description="near-duplicate method")
    deep: DeepParams = Field(default_factory=DeepParams, description="deep pipeline")


def feature_key(params: ClusterParams, model_digest: str = "") -> str:
    """Cache key of a feature: the method and every parameter the feature depends on."""
    m = params.method
    if m == "dup":
        return f"dup:v2:side{params.max_side}"  # v2: with the thumbnail
    if m == "phash":
        return f"phash:v1:side{params.max_side}"
    if m == "deep":
        d = params.deep
        return f"deep:v1:{d.features}:{d.weights}:{d.image_size}:{model_digest}"
    return f"{m}:v1:side{_DECODE_SIDE[m]}"


def decode_side(params: ClusterParams) -> int:
    if params.method in ("dup", "phash"):
        return params.max_side
    if params.method == "deep":
        return max(2 * params.deep.image_size, 128)
    return _DECODE_SIDE[params.method]


class ClusterJob(Job):
    """Cluster a folder of images into folders of similar images (see the module docstring)."""

    name = "cluster"
    Params = ClusterParams
    description = "sort images into folders of similar ones (near-duplicates, seed similarity methods, deep features)"

    @classmethod
    def name_parts(cls, params: ClusterParams) -> list[str]:
        t = "auto" if params.threshold is None else f"t{params.threshold:g}"
        return [params.method, t if params.method not in ("dup", "deep") else ""]

    # ---- life cycle ---------------------------------------------------------------
    def __init__(self, params, input_path, job_dir):
        super().__init__(params, input_path, job_dir)
        self._cache = None
        self._cache_lock = threading.Lock()
        self._model = None
        self._model_digest = ""
        #: matched pairs of the last clustering: (i, j, similarity, stage) arrays, or None
        self._pairs = None

    @property
    def cache(self):
        # the prefetch threads reach here together on the first items: open the file once
        # (two connections switching a new file to WAL at once fail with "database is locked")
        with self._cache_lock:
            if self._cache is None:
                from segdeck.core.cluster.cache import CACHE_NAME, FeatureCache

                self._cache = FeatureCache(self.job_dir.parent / CACHE_NAME, commit_every=200)
        return self._cache

    def setup(self, emit) -> None:
        if self.params.method == "deep":
            self._setup_deep(emit)

    def _setup_deep(self, emit) -> None:
        from segdeck.core.cluster import deep

        d = self.params.deep
        if d.features == "resnet18":
            self._model = deep.build_backbone("resnet18", d.weights, emit)
            self._model_digest = f"resnet18-{d.weights}"
            return
        path = self.job_dir / deep.AE_NAME
        config = deep.model_config(d)
        model = deep.load_model(path, config)
        if model is not None:
            emit(Message(text=f"reusing the trained autoencoder {path.name}"))
        else:
            from segdeck.core.cluster.features import load_small
            from segdeck.core.errors import SetupError

            # the backbone first: a missing download fails before any slow step
            backbone = deep.build_backbone(d.backbone, d.weights, emit) if d.loss == "perceptual" else None
            items = self.list_items()
            rng = np.random.default_rng(0)
            if len(items) > d.train_max:
                items = [items[k] for k in sorted(rng.choice(len(items), d.train_max, replace=False))]
            images, used = [], []
            for k, item in enumerate(items):
                if self.cancel.is_set():
                    raise SetupError("cancelled while loading the training images")
                try:
                    images.append(load_small(self.item_path(item), decode_side(self.params)))
                    used.append(item)
                except Exception:  # noqa: BLE001 - unreadable files fail later, per item
                    continue
                if k % 50 == 0 or k == len(items) - 1:  # the bar ends at n/n
                    emit(Progress(what="load training images", done=k + 1, total=len(items)))
            if not images:
                raise SetupError("no readable image to train the autoencoder on")
            emit(Message(text=f"training the autoencoder on {len(images)} images ({d.epochs} epochs, {d.loss} loss)"))
            try:
                model, _ = deep.train_autoencoder(images, d, emit=emit, cancel=self.cancel, backbone=backbone)
            except deep.Cancelled:
                raise SetupError("autoencoder training cancelled; nothing was clustered") from None
            deep.save_model(model, path, config, used)
        self._model = model
        self._model_digest = deep.file_digest(path)

    # ---- items --------------------------------------------------------------------
    def load(self, item: str) -> Any:
        from segdeck.core.cluster import features
        from segdeck.core.cluster.cache import file_stamp
        from segdeck.core.cluster.features import load_small

        path = self.item_path(item)
        try:
            stamp = file_stamp(path)
        except OSError:
            stamp = None
        if stamp is not None:
            feat = self.cache.get(path, feature_key(self.params, self._model_digest), stamp)
            if feat is not None:
                return ("cached", feat, stamp)
        if self.params.method == "dup":
            from segdeck.core.cluster.features import load_gray_small

            # hashing is cheaper than handing the image over: do it in the prefetch
            # threads, which run in parallel (the compute stage is one thread)
            gray = load_gray_small(path, decode_side(self.params))
            feat = self.compute_feature(gray)
            # the small grayscale image the ORB verification will need, cached beside the hash
            feat["_gray"] = features.shrink(gray, self.params.dup.orb_side)
            return ("computed", feat, stamp)
        return ("image", load_small(path, decode_side(self.params)), stamp)

    def process(self, item: str, data: Any) -> Any:
        kind, payload, stamp = data
        if kind == "cached":
            return payload, stamp, True
        if kind == "computed":
            return payload, stamp, False
        return self.compute_feature(payload), stamp, False

    def compute_feature(self, image: np.ndarray) -> dict:
        """The feature of one decoded image for this job's method."""
        from segdeck.core.cluster import features

        if self.params.method == "deep":
            from segdeck.core.cluster import deep

            d = self.params.deep
            kind = "autoencoder" if d.features == "autoencoder" else "backbone"
            size = d.image_size if kind == "autoencoder" else 128
            return {"emb": deep.embed(self._model, [image], size, kind)[0]}
        return features.extract(self.params.method, image)

    def write(self, item: str, result: Any) -> list[str]:
        feat, stamp, cached = result
        if not cached:
            gray = feat.pop("_gray", None)
            self.cache.put(self.item_path(item), feature_key(self.params, self._model_digest), feat, stamp)
            if gray is not None:
                self.cache.put(self.item_path(item), self._gray_key(), {"g": gray}, stamp)
        return []

    def _gray_key(self) -> str:
        return f"gray:v1:side{self.params.max_side}:orb{self.params.dup.orb_side}"

    # ---- clustering ---------------------------------------------------------------
    def finalize(self, emit) -> list[str]:
        from segdeck.core.cluster import graph, output
        from segdeck.core.jobs.manifest import Manifest

        if self.cancel.is_set():
            emit(Message(text="cancelled: no clusters written (run again to resume)", level="warning"))
            return []
        items = self.list_items()
        try:
            with Manifest(self.job_dir, readonly=True) as m:
                records = {r.item: r for r in m.records()}
        except FileNotFoundError:
            records = {}
        done = {k for k, r in records.items() if r.state == "done"}
        if self.params.method == "deep":
            # every item may have been done before this run: the runner then skips setup,
            # but the features are cached under the model's digest
            self._deep_digest()
        key = feature_key(self.params, self._model_digest)
        self.cache.flush()
        ok_items, feats, failed = [], [], {}
        for item in items:
            feat = None
            reason = (records[item].error or "failed") if item in records and records[item].state == "failed" else "not processed"
            if item in done:
                feat = self.cache.get(self.item_path(item), key)
                if feat is None:  # done earlier but not cached (cache deleted, file touched): recompute
                    try:
                        if self.params.method == "deep" and self._model is None:
                            self._setup_deep(emit)
                            key = feature_key(self.params, self._model_digest)
                        feat = self.process(item, self.load(item))[0]
                        feat.pop("_gray", None)
                    except Exception as exc:  # noqa: BLE001 - now unreadable
                        feat, reason = None, str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            if feat is None:
                failed[item] = reason
                continue
            ok_items.append(item)
            feats.append(feat)
        if not ok_items:
            emit(Message(text="no image could be read: nothing to cluster", level="error"))
            return []
        t0 = time.perf_counter()
        emit(Message(text=f"clustering {len(ok_items)} images with {self.params.method}"))
        self._pairs = None
        labels, info, extra_outputs = self.cluster(ok_items, feats, emit)
        if self.cancel.is_set():
            emit(Message(text="cancelled: no clusters written", level="warning"))
            return extra_outputs
        clusters, outliers = graph.clusters_from_labels(labels, self.params.min_cluster_size)
        info = {"method": self.params.method, **info, "seconds_clustering": round(time.perf_counter() - t0, 3),
                "params": json.loads(self.params.model_dump_json())}
        outputs, errors = output.write_clusters(
            self.job_dir, self.input_path, ok_items, [c.tolist() for c in clusters], outliers.tolist(),
            mode=self.params.output, failed=failed, info=info,
        )
        if self._pairs is not None:
            i, j, sim, stage = self._pairs
            outputs.append(output.write_pairs(self.job_dir, (
                (ok_items[a], ok_items[b], self.params.method, v, st)
                for a, b, v, st in zip(i.tolist(), j.tolist(), sim.tolist(), stage.tolist(), strict=True))))
        for line in errors[:20]:
            emit(Message(text=line, level="error"))
        emit(Message(text=f"{len(clusters)} clusters, {len(outliers)} outliers, {len(failed)} unreadable -> {self.job_dir}"))
        return outputs + extra_outputs

    def _deep_digest(self) -> None:
        """The model digest of the feature key, from the saved model (no loading)."""
        if self._model_digest:
            return
        from segdeck.core.cluster import deep

        d = self.params.deep
        if d.features == "resnet18":
            self._model_digest = f"resnet18-{d.weights}"
        elif (self.job_dir / deep.AE_NAME).is_file():
            self._model_digest = deep.file_digest(self.job_dir / deep.AE_NAME)

    def cluster(self, items: list[str], feats: list[dict], emit) -> tuple[np.ndarray, dict, list[str]]:
        """Cluster the features; returns labels, report fields and extra output files."""
        method = self.params.method
        if method == "dup":
            return self._cluster_dup(items, feats, emit)
        if method == "deep" and self.params.threshold is None:
            return self._cluster_deep(feats, emit)
        return self._cluster_threshold(feats, emit)

    def _cluster_dup(self, items, feats, emit):
        from segdeck.core.cluster import dedup, features

        side = self.params.dup.orb_side
        if self.params.threshold is not None:
            emit(Message(text="dup ignores --threshold (pairs are verified geometrically); "
                              "tune --dup.radius / --dup.min-inliers instead", level="warning"))

        def gray(k: int) -> np.ndarray:
            cached = self.cache.get(self.item_path(items[k]), self._gray_key())
            if cached is not None:
                return cached["g"]
            return features.shrink(features.load_gray_small(self.item_path(items[k]), self.params.max_side), side)

        if self.params.batch_size:
            emit(Message(text=f"dup searches all {len(feats)} images at once (multi-index hashing); "
                              f"--batch-size {self.params.batch_size} is not used", level="warning"))
        emit(Message(text=f"dup: hashing candidates and verifying them on {self.params.workers} threads"))
        decisions: list = []
        labels, stats = dedup.dup_cluster(feats, self.params.dup, gray=gray, workers=self.params.workers,
                                          decisions=decisions)
        dec = decisions[0]
        acc = dec.accepted
        self._pairs = (dec.i[acc], dec.j[acc], 1.0 - dec.d[acc] / 64.0, dec.stage[acc])
        emit(Message(text=f"dup: {stats['candidates']} candidate pairs, {stats['sure']} sure, "
                          f"{stats['verified']} verified, {stats['accepted']} accepted"))
        return labels, {"dup": stats}, []

    def _cluster_threshold(self, feats, emit):
        from segdeck.core.cluster import graph, similarity, threshold

        p = self.params
        extra: list[str] = []
        info: dict = {}
        t = p.threshold
        if t is None:
            curve = threshold.curve_from_features(p.method, feats, p.sample_size)
            t, rule = curve.auto, curve.rule
            extra = threshold.save_curve(curve, self.job_dir, chosen=t)
            emit(Message(text=f"threshold {t:.4g} chosen automatically: {rule}"))
            info["threshold_rule"] = rule
        info["threshold"] = t
        info["linkage"] = p.linkage

        warn = self._warner(emit)
        found: list[tuple[np.ndarray, np.ndarray, np.ndarray]] = []

        def cluster_edges(n: int, gi: np.ndarray, gj: np.ndarray) -> np.ndarray:
            if p.linkage == "average":
                return graph.average_linkage(n, gi, gj, np.zeros(len(gi)), max_distance=0.5)
            return graph.connected_components(n, gi, gj)[1]

        def cluster_fn(idx: np.ndarray) -> np.ndarray:  # one batch of the representative merge
            gi, gj, sims = similarity.similar_pairs(p.method, feats, idx, t)
            found.append((gi, gj, sims))
            local = np.full(n, -1, np.int64)
            local[idx] = np.arange(len(idx))
            return cluster_edges(len(idx), local[gi], local[gj])

        n = len(feats)
        all_pairs = n * (n - 1) // 2
        if p.method not in similarity.PAIRWISE:
            # an index search over every image at once finds the same pairs as any batching
            if p.batch_size:
                emit(Message(text=f"{p.method} searches all {n} images at once with its index; "
                                  f"--batch-size {p.batch_size} is not needed and not used"))
            reason = similarity.search_approximation(p.method, n, t)
            if reason:
                warn(reason)
            gi, gj, sims = similarity.similar_pairs(p.method, feats, np.arange(n, dtype=np.int64), t)
            found.append((gi, gj, sims))
            labels = cluster_edges(n, gi, gj)
        elif all_pairs <= p.exact_pairs or n <= (p.batch_size or PAIRWISE_BATCH):
            batch = p.batch_size or PAIRWISE_BATCH
            tile = max(batch, MIN_TILE)  # same pairs for any tile; tiny tiles only add call overhead
            tiles = -(-n // tile)
            if tiles > 1:
                emit(Message(text=f"{n} images: every pair compared in {tiles} x {tiles} tiles of {tile} (exact)"))

            def progress(done: int, total: int) -> None:
                emit(Progress(what=f"{p.method} pairs", done=done, total=total))

            gi, gj, sims = graph.tiled_pairs(
                n, tile, lambda a, b: similarity.block_pairs(p.method, feats, a, b, t),
                progress=progress if tiles > 1 else None, cancel=self.cancel.is_set)
            found.append((gi, gj, sims))
            labels = cluster_edges(n, gi, gj)
            info["batch_size"] = batch
            info["batch_merge"] = "exact"
        else:
            batch = p.batch_size or PAIRWISE_BATCH
            warn(f"{n} images need {all_pairs:,} comparisons, more than --exact-pairs {p.exact_pairs:,}: "
                 f"batches of {batch} merged through representatives (approximate: similar images in "
                 "different batches are found only when their representatives are similar)")
            labels = graph.cluster_in_batches(n, batch, cluster_fn, warn=warn)
            info["batch_size"] = batch
            info["batch_merge"] = "representatives (approximate)"
        self._pairs = _merge_pairs(found, "threshold")
        return labels, info, extra

    @staticmethod
    def _warner(emit):
        def warn(text: str) -> None:
            emit(Message(text=text, level="warning"))
        return warn

    def _cluster_deep(self, feats, emit):
        from segdeck.core.cluster import deep, graph

        d = self.params.deep
        x = np.stack([f["emb"] for f in feats]).astype(np.float64)
        runs: list[dict] = []

        def cluster_fn(idx: np.ndarray) -> np.ndarray:
            if self.cancel.is_set():
                return np.arange(len(idx))
            labels, cands, best = deep.select_model(x[idx], d.algorithms, d.k_min, d.k_max, metric=d.metric)
            runs.append({
                "images": int(len(idx)),
                "best": None if best is None else f"{best.algorithm} {best.setting}",
                "candidates": deep.candidates_to_dicts(cands),
            })
            emit(Message(text=f"model selection on {len(idx)} images: "
                              f"{'no valid candidate' if best is None else f'{best.algorithm} {best.setting}, {best.n_clusters} clusters'}"))
            return labels

        n = len(x)
        info: dict = {}
        if n > d.batch_size:
            self._warner(emit)(
                f"deep: {n} images in batches of {d.batch_size} (--deep.batch-size): each batch picks its own "
                "clustering and batches are merged through representatives (approximate)")
            labels = graph.cluster_in_batches(n, d.batch_size, cluster_fn, warn=self._warner(emit))
        else:
            labels = cluster_fn(np.arange(n, dtype=np.int64))
            if runs and runs[-1]["best"] is None:
                reason = (f"no valid clustering: none of {len(runs[-1]['candidates'])} candidates "
                          f"({', '.join(d.algorithms)}, k {d.k_min}..{d.k_max}) found 2 or more clusters with at "
                          "most half of the images as noise" if n >= 3 else
                          f"no valid clustering: {n} images are too few to cluster")
                emit(Message(text=f"{reason}; every image goes to outliers/", level="warning"))
                info["outliers_reason"] = reason
        rules = {"combined": "lowest sum of ranks under silhouette (high), Davies-Bouldin (low), "
                             "Calinski-Harabasz (high); ties: higher silhouette",
                 "silhouette": "highest silhouette", "davies_bouldin": "lowest Davies-Bouldin",
                 "calinski_harabasz": "highest Calinski-Harabasz"}
        info["deep"] = {"features": d.features, "loss": d.loss if d.features == "autoencoder" else None,
                        "metric": d.metric,
                        "ranking_rule": rules[d.metric] + " (scores charged for noise: x or / the clustered share)",
                        "selections": runs}
        extra = [deep.AE_NAME] if (self.job_dir / deep.AE_NAME).is_file() else []
        self._pairs = None
        return labels, info, extra

    def teardown(self) -> None:
        if self._cache is not None:
            self._cache.close()
            self._cache = None
        self._model = None


def _merge_pairs(found, stage: str):
    """One (i, j, similarity, stage) set from pair lists that may repeat pairs."""
    if not found:
        return None
    i = np.concatenate([np.asarray(f[0], np.int64) for f in found])
    j = np.concatenate([np.asarray(f[1], np.int64) for f in found])
    s = np.concatenate([np.asarray(f[2], np.float64) for f in found])
    a, b = np.minimum(i, j), np.maximum(i, j)
    order = np.lexsort((-s, b, a))
    a, b, s = a[order], b[order], s[order]
    first = np.ones(len(a), bool)
    first[1:] = (a[1:] != a[:-1]) | (b[1:] != b[:-1])
    a, b, s = a[first], b[first], s[first]
    return a, b, s, np.full(len(a), stage, object)


def sample_curve(input_path: str | Path, params: ClusterParams, emit=None):
    """The threshold curve of a folder, before running the job (for the TUI picker).

    Decodes a random sample of ``params.sample_size`` images (fixed seed), computes
    their features (``phash``, ``ssim``, ``minhash``, ``orb``, ``tm``) and returns
    :class:`~segdeck.core.cluster.threshold.ThresholdCurve`; pass the chosen value as
    ``threshold`` to the job.

    Raises
    ------
    ValueError
        For ``dup`` (no threshold: pairs are verified) and ``deep`` without ``threshold``.
    SetupError
        No readable image in the sample.
    """
    from segdeck.core import imageio
    from segdeck.core.cluster import features, threshold
    from segdeck.core.errors import SetupError

    if params.method in ("dup", "deep"):
        raise ValueError(f"method {params.method} does not use a similarity threshold curve")
    paths = imageio.discover(input_path)
    idx = threshold.sample_indices(len(paths), params.sample_size)
    feats = []
    for k, t in enumerate(idx):
        try:
            feats.append(features.extract(params.method, features.load_small(paths[t], decode_side(params))))
        except Exception:  # noqa: BLE001 - an unreadable sample image is skipped
            continue
        if emit is not None:
            emit(Progress(what="threshold sample", done=k + 1, total=len(idx)))
    if not feats:
        raise SetupError(f"{input_path}: no readable image to sample")
    curve = threshold.curve_from_features(params.method, feats, sample_size=len(feats))
    curve.total = len(paths)
    return curve
