"""The ``cluster`` job: sort a folder of images into folders of similar images.

``segdeck run cluster INPUT [--method dup|phash|ssim|minhash|orb|tm|deep] [--threshold T] ...``

Per item (through the job runner: manifest, resume, per-item errors) the image is
decoded at reduced size and its feature is computed, or read from the feature cache
of the output root (the ``--out`` folder or ``INPUT.segdeck``; ``cluster-cache.sqlite``,
keyed by path, size and mtime, so a re-run on a grown folder or with another threshold
only computes new files). :meth:`ClusterJob.load` only reads (the cached feature or
the decoded image); :meth:`ClusterJob.process` extracts. After the items,
:meth:`ClusterJob.finalize` clusters (progress and approximations in the log) and
writes the job folder::

    cluster_0001/ ... outliers/   the images (copy, symlink, hardlink or move)
    clusters.json                 every file -> its folder, method, threshold, statistics,
                                  and for ``deep`` every clustering candidate's scores
    clusters.csv, pairs.csv       file -> cluster table; matched pairs with their scores
                                  (:mod:`segdeck.core.cluster.output`)
    threshold_curve.png/.json     the threshold curve, when the threshold was chosen
                                  automatically (threshold methods)
    autoencoder.pt                the trained model (``deep`` with the autoencoder)

Methods are the objects of :mod:`segdeck.core.cluster.methods` (one module each).
``dup`` (default) is the near-duplicate pipeline of
:mod:`segdeck.core.cluster.dedup`; ``phash``, ``ssim``, ``minhash``, ``orb``, ``tm``
are the threshold methods (similar pairs above a threshold, connected components, or
average linkage with ``--linkage average``; ssim/orb/tm compare every pair in tiles,
or above ``exact_pairs`` merge batches through representatives with a warning);
``deep`` embeds images with an autoencoder trained on the
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
from segdeck.core.cluster.methods import REGISTRY, ClusterMethod, get_method
from segdeck.core.cluster.methods.base import PAIRWISE_BATCH
from segdeck.core.jobs.base import Job
from segdeck.core.jobs.events import Message
from segdeck.core.params import JobParams

__all__ = ["PAIRWISE_BATCH", "ClusterJob", "ClusterParams", "decode_side", "feature_key", "sample_curve"]


#: The method names the params accept: every method registered when this module is
#: first imported (:data:`segdeck.core.cluster.methods.MODULES`, and any registered before).
_NAMES = tuple(REGISTRY)


class ClusterParams(JobParams):
    """Parameters of the cluster job."""

    method: Literal[_NAMES] = Field(  # type: ignore[valid-type] - built from the registry
        _NAMES[0], description="similarity: " + "; ".join(f"{m.name}: {m.description}" for m in REGISTRY.values()))
    threshold: float | None = Field(
        None, ge=-1.0, le=1.0,
        description="similarity threshold of the threshold methods (phash, ssim, minhash, orb, tm): pairs at or "
        "above it are linked; unset = chosen automatically from a sample. deep: unset = model selection; set = "
        "images whose embeddings' cosine similarity reaches it are linked")
    linkage: Literal["components", "average"] = Field(
        "components", description="threshold methods: connected components of the linked pairs (a chain of pairs joins "
        "two groups) or average linkage (groups merge only when most cross pairs match)")
    sample_size: int = Field(200, ge=10, le=5000, description="images in the sample of the threshold curve")
    batch_size: int = Field(0, ge=0, le=1_000_000,
                            description=f"ssim/orb/tm: images per tile of the pair comparison; 0 = {PAIRWISE_BATCH} "
                                        "(phash, minhash, deep search all images with an index; dup ignores it)")
    min_cluster_size: int = Field(2, ge=2, le=1_000_000, description="smaller clusters go to the outliers folder")
    output: Literal["copy", "symlink", "hardlink", "move"] = Field("copy", description="how images are placed in the cluster folders")
    max_side: int = Field(256, ge=32, le=4096, description="images are decoded with their longer side at most this (pixels)")
    exact_pairs: int = Field(
        2_000_000, ge=0, le=10**12,
        description="ssim/orb/tm: compare every pair (in tiles of --batch-size) up to this many pairs (about 2,000 "
                    "images); above, batches are merged through representatives (approximate, logged)")
    workers: int = Field(2, ge=1, le=64, description="threads for verification and clustering")
    dup: DupParams = Field(default_factory=DupParams, description="near-duplicate method")
    deep: DeepParams = Field(default_factory=DeepParams, description="deep pipeline")


def feature_key(params: ClusterParams, model_digest: str = "") -> str:
    """Cache key of a feature: the method and every parameter the feature depends on."""
    return get_method(params.method).feature_key(params, model_digest)


def decode_side(params: ClusterParams) -> int:
    """Longer side (pixels) the images are decoded at for ``params.method``."""
    return get_method(params.method).decode_side(params)


class ClusterJob(Job):
    """Cluster a folder of images into folders of similar images (see the module docstring)."""

    name = "cluster"
    Params = ClusterParams
    description = "sort images into folders of similar ones (near-duplicates, seed similarity methods, deep features)"
    # the TUI: threshold curve (Ctrl+T), the saved curve of a finished job (t), the deep
    # method's pretrained network as a model field (m), a note under the method field
    tui_curve = "segdeck.core.cluster.job:sample_curve"
    tui_no_curve_methods = {
        "dup": "dup groups near-duplicates it verifies by matching features; it has no similarity threshold",
        "deep": "deep picks its clusters by model selection (see the deep section)",
    }
    tui_tool_screen = "segdeck.tui.screens.threshold:JobThresholdScreen"
    tui_extra_model_fields = {
        # the perceptual loss's backbone while the autoencoder trains with it; else the
        # features' pretrained network
        "deep.backbone": ("segdeck.core.cluster.deep:register_backbones",
                          {"torchvision-vgg19": "vgg19", "torchvision-resnet18": "resnet18"},
                          {"deep.features": ["autoencoder"], "deep.loss": ["perceptual"]}),
        "deep.features": ("segdeck.core.cluster.deep:register_backbones",
                          {"efficientnet-lite0": "efficientnet", "torchvision-resnet18": "resnet18"}),
    }
    # the methods named from the registry (their descriptions are the field's hint)
    tui_field_notes = {
        "method": f"{', '.join(m.name for m in REGISTRY.values() if m.has_curve)} (threshold methods): a "
                  "similarity per image pair, pairs at or above the threshold are linked into clusters. "
                  f"{', '.join(m.name for m in REGISTRY.values() if not m.has_curve)}: no threshold "
                  "needed (dup verifies its pairs geometrically; deep picks its clusters by model "
                  "selection over a pretrained EfficientNet-Lite0 embedding and colour and texture "
                  "descriptors).",
    }

    @classmethod
    def name_parts(cls, params: ClusterParams) -> list[str]:
        return [params.method, get_method(params.method).name_part(params)]

    @classmethod
    def ignored_params(cls, params: ClusterParams) -> set[str]:
        return get_method(params.method).ignored_params(params)

    # ---- life cycle ---------------------------------------------------------------
    def __init__(self, params, input_path, job_dir):
        super().__init__(params, input_path, job_dir)
        self.method: ClusterMethod = get_method(params.method)
        self._cache = None
        self._cache_lock = threading.Lock()
        self._set_up = False
        #: the method's model (``deep``), set by its ``setup``
        self.model = None
        #: the model's digest, part of the feature key (``deep``)
        self.model_digest = ""

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
        self.method.setup(self, emit)
        self._set_up = True

    # ---- items --------------------------------------------------------------------
    def load(self, item: str) -> Any:
        """File I/O only: the cached feature, or the image decoded for the method."""
        from segdeck.core.cluster.cache import file_stamp

        path = self.item_path(item)
        try:
            stamp = file_stamp(path)
        except OSError:
            stamp = None
        if stamp is not None:
            feat = self.cache.get(path, self.method.feature_key(self.params, self.model_digest), stamp)
            if feat is not None:
                return ("cached", feat, stamp)
        return ("image", self.method.load(path, self.params), stamp)

    def process(self, item: str, data: Any) -> Any:
        kind, payload, stamp = data
        if kind == "cached":
            return payload, stamp, True
        feat = self.compute_feature(payload)
        extra = self.method.cache_extra(payload, self.params)
        if extra is not None:
            feat["_extra"] = extra
        return feat, stamp, False

    def compute_feature(self, image: np.ndarray) -> dict:
        """The feature of one decoded image for this job's method."""
        return self.method.extract(image, self.params, self)

    def write(self, item: str, result: Any) -> list[str]:
        feat, stamp, cached = result
        if not cached:
            extra = feat.pop("_extra", None)
            path = self.item_path(item)
            self.cache.put(path, self.method.feature_key(self.params, self.model_digest), feat, stamp)
            if extra is not None:
                self.cache.put(path, self.method.extra_key(self.params), extra, stamp)
        return []

    # ---- clustering ---------------------------------------------------------------
    def finalize(self, emit) -> list[str]:
        from segdeck.core.cluster import graph, output
        from segdeck.core.errors import SegdeckError
        from segdeck.core.jobs.base import ItemCancelled
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
        if not self._set_up and not self.model_digest:
            # every item may have been done before: the runner then skips setup, but a
            # model's features are cached under its digest
            self.model_digest = self.method.ready_digest(self)
        key = self.method.feature_key(self.params, self.model_digest)
        self.cache.flush()
        emit(Message(text=f"reading the features of {len(items)} images"))
        ok_items, feats, failed = [], [], {}
        for item in items:
            rec = records.get(item)
            if rec is None or rec.state != "done":
                failed[item] = (rec.error or "failed") if rec is not None and rec.state == "failed" else "not processed"
                continue
            feat = self.cache.get(self.item_path(item), key)
            if feat is None:  # done earlier but not cached (cache deleted, file touched): recompute
                try:
                    if not self._set_up:
                        self.setup(emit)
                        key = self.method.feature_key(self.params, self.model_digest)
                    feat = self.process(item, self.load(item))[0]
                    feat.pop("_extra", None)
                except Exception as exc:  # noqa: BLE001 - now unreadable
                    failed[item] = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
                    continue
            ok_items.append(item)
            feats.append(feat)
        if not ok_items:
            emit(Message(text="no image could be read: nothing to cluster", level="error"))
            return []
        t0 = time.perf_counter()
        emit(Message(text=f"clustering {len(ok_items)} images with {self.params.method}"))
        result = self.method.cluster(self, ok_items, feats, emit)
        if self.cancel.is_set():  # the run ends as cancelled (not done): a re-run clusters again
            emit(Message(text="cancelled: no clusters written (run again to cluster)", level="warning"))
            raise ItemCancelled("cancelled while clustering")
        clusters, outliers = graph.clusters_from_labels(result.labels, self.params.min_cluster_size)
        info = {"method": self.params.method, **result.info, "seconds_clustering": round(time.perf_counter() - t0, 3),
                "params": json.loads(self.params.model_dump_json())}
        emit(Message(text=f"writing {len(clusters)} cluster folders ({self.params.output})"))
        try:
            outputs, errors = output.write_clusters(
                self.job_dir, self.input_path, ok_items, [c.tolist() for c in clusters], outliers.tolist(),
                mode=self.params.output, failed=failed, info=info,
            )
        except ValueError as exc:  # a previous run moved the images there: one line, no "ValueError:"
            raise SegdeckError(str(exc)) from None
        if result.pairs is not None:
            i, j, sim, stage = result.pairs
            outputs.append(output.write_pairs(self.job_dir, (
                (ok_items[a], ok_items[b], self.params.method, v, st)
                for a, b, v, st in zip(i.tolist(), j.tolist(), sim.tolist(), stage.tolist(), strict=True))))
        for line in errors[:20]:
            emit(Message(text=line, level="error"))
        emit(Message(text=f"{len(clusters)} clusters, {len(outliers)} outliers, {len(failed)} unreadable -> {self.job_dir}"))
        if errors:  # the run is not done: one line for the CLI (exit 2) and the TUI
            raise SegdeckError(f"{len(errors)} of {len(ok_items)} images could not be placed in the cluster folders "
                               f"(clusters.csv gives each reason), e.g. {errors[0]}")
        return outputs + result.extra_outputs

    def cluster(self, items: list[str], feats: list[dict], emit) -> tuple[np.ndarray, dict, list[str]]:
        """Cluster the features; returns labels, report fields and extra output files."""
        result = self.method.cluster(self, items, feats, emit)
        return result.labels, result.info, result.extra_outputs

    def teardown(self) -> None:
        self.method.teardown(self)
        if self._cache is not None:
            self._cache.close()
            self._cache = None
        self.model = None


def sample_curve(input_path: str | Path, params: ClusterParams, emit=None):
    """The threshold curve of a folder, before running the job (for the TUI picker).

    Decodes a random sample of ``params.sample_size`` images (fixed seed), computes
    their features (methods with a curve: ``phash``, ``ssim``, ``minhash``, ``orb``, ``tm``) and returns
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
    from segdeck.core.cluster import threshold
    from segdeck.core.errors import SetupError
    from segdeck.core.jobs.events import Progress

    method = get_method(params.method)
    if not method.has_curve:
        raise ValueError(f"method {params.method} does not use a similarity threshold curve")
    paths = imageio.discover(input_path)
    idx = threshold.sample_indices(len(paths), params.sample_size)
    feats = []
    for k, t in enumerate(idx):
        try:
            feats.append(method.extract(method.load(paths[t], params), params))
        except Exception:  # noqa: BLE001 - an unreadable sample image is skipped
            continue
        if emit is not None:
            emit(Progress(what="threshold sample", done=k + 1, total=len(idx)))
    if not feats:
        raise SetupError(f"{input_path}: no readable image to sample")
    curve = threshold.curve_from_features(params.method, feats, sample_size=len(feats))
    curve.total = len(paths)
    return curve
