"""The protocol of a cluster method and the registry the job, the CLI and the TUI read.

A method is an object with a ``name`` and four duties:

* :meth:`ClusterMethod.feature_key` -- the cache key of its per-image feature (the
  method, a version, and every parameter the feature depends on);
* :meth:`ClusterMethod.decode_side` and :meth:`ClusterMethod.load` -- how large an
  image it needs and how it is decoded (file I/O only: the job's prefetch threads call it);
* :meth:`ClusterMethod.extract` -- the feature of one decoded image (a dict of arrays);
* :meth:`ClusterMethod.cluster` -- labels for all features, report fields, and the
  matched pairs for ``pairs.csv``.

:class:`ThresholdMethod` adds the pairwise-threshold scheme (similar pairs above a threshold, then
connected components or average linkage) for methods that give a pair similarity;
:class:`PairwiseMethod` compares every pair (exact tiles, or the representative merge
above the pair budget, with a warning); :class:`IndexedMethod` searches all images at
once with an index.

Register a new method with :func:`register` in its own module and list the module in
:data:`segdeck.core.cluster.methods.MODULES`; the parameter ``Literal``, the CLI
choices and the TUI form are built from the registry.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

import numpy as np

#: name -> method object, in registration (display) order.
REGISTRY: dict[str, ClusterMethod] = {}

#: The cancel check of the clustering running in this thread (set by
#: :meth:`ThresholdMethod.cluster` to the job's ``cancel.is_set``): the per-pair loops
#: look at it every :data:`CANCEL_EVERY` pairs, so Ctrl+C stops an ``orb`` / ``ssim`` /
#: ``tm`` comparison within a fraction of a second instead of at the end of a sample or
#: tile (tens of seconds).
_CANCEL_CHECK: ContextVar[Callable[[], bool] | None] = ContextVar("cluster_cancel_check", default=None)

#: Pairs compared between two looks at the cancel (an ORB pair costs ~1-2 ms).
CANCEL_EVERY = 16

#: ``progress(done, total)`` of the per-pair loop running in this thread (the threshold
#: sample's pairs), called at most every :data:`PROGRESS_SECONDS` and at the end.
_PAIR_PROGRESS: ContextVar[Callable[[int, int], None] | None] = ContextVar("cluster_pair_progress", default=None)
PROGRESS_SECONDS = 0.5


def register(method: ClusterMethod) -> ClusterMethod:
    """Add ``method`` to :data:`REGISTRY` under ``method.name`` (replacing one of that name)."""
    if not method.name or not method.name.isidentifier():
        raise ValueError(f"a cluster method needs an identifier as its name, got {method.name!r}")
    REGISTRY[method.name] = method
    return method


def get_method(name: str) -> ClusterMethod:
    """The registered method ``name``.

    Raises
    ------
    ValueError
        Unknown name (the message lists the known ones).
    """
    try:
        return REGISTRY[name]
    except KeyError:
        raise ValueError(f"unknown cluster method {name!r}; known: {', '.join(REGISTRY)}") from None


@dataclass
class Clustering:
    """What :meth:`ClusterMethod.cluster` returns.

    Attributes
    ----------
    labels : ndarray of int64, shape (n,)
        Cluster of each image; negative = noise (outlier).
    info : dict
        Report fields (JSON-serialisable).
    extra_outputs : list of str
        Files written into the job folder, relative to it.
    pairs : tuple or None
        Matched pairs ``(i, j, similarity, stage)``: int64 (m,), int64 (m,),
        float64 (m,), object (m,) of str; None when the method has no pairs.
    """

    labels: np.ndarray
    info: dict = field(default_factory=dict)
    extra_outputs: list[str] = field(default_factory=list)
    pairs: tuple | None = None


class ClusterMethod:
    """Base of the cluster methods (see the module docstring)."""

    #: Name on the CLI, in the params and in the cache key.
    name: ClassVar[str] = ""
    #: One line for the help text.
    description: ClassVar[str] = ""
    #: Version of the feature: bump it when the feature changes (old cache entries die).
    version: ClassVar[str] = "v1"
    #: Decode side (pixels) when it does not follow ``max_side``.
    side: ClassVar[int | None] = None
    #: The threshold curve (and the TUI picker) applies.
    has_curve: ClassVar[bool] = False
    #: The feature needs a model that :meth:`setup` prepares.
    needs_model: ClassVar[bool] = False

    def feature_key(self, params, model_digest: str = "") -> str:
        """Cache key of the feature under ``params`` (a ClusterParams)."""
        return f"{self.name}:{self.version}:side{self.decode_side(params)}"

    def decode_side(self, params) -> int:
        """Longer side (pixels) the image is decoded at."""
        return self.side if self.side is not None else params.max_side

    def ignored_params(self, params) -> set[str]:
        """ClusterParams fields this method does not read: left out of the job folder's
        digest, so changing them reuses the folder. Default: the other methods' sections
        (the fields named after a registered method, e.g. ``dup``, ``deep``)."""
        return {name for name in REGISTRY if name != self.name and name in type(params).model_fields}

    def name_part(self, params) -> str:
        """The readable part of the job folder name after the method."""
        return "auto" if params.threshold is None else f"t{params.threshold:g}"

    def load(self, path: str | Path, params) -> np.ndarray:
        """Decode one image for :meth:`extract`: (H, W, 3) uint8 RGB at :meth:`decode_side`.

        Raises
        ------
        ImageError
            Unreadable file.
        """
        from segdeck.core.cluster.features import load_small

        return load_small(path, self.decode_side(params))

    def setup(self, job, emit) -> None:
        """Prepare once before features are extracted (load or train a model)."""

    def teardown(self, job) -> None:
        """Undo what :meth:`setup` or :meth:`cluster` changed in the process (thread
        limits); called when the job ends however it ends (done, error, cancel)."""

    def ready_digest(self, job) -> str:
        """The model digest part of the feature key, known without :meth:`setup` (or "")."""
        return ""

    def extract(self, image: np.ndarray, params, job=None) -> dict:
        """The feature of one decoded image: a dict of numpy arrays (cacheable)."""
        raise NotImplementedError

    def cache_extra(self, image: np.ndarray, params) -> dict | None:
        """Extra arrays cached beside the feature under :meth:`extra_key` (or None)."""
        return None

    def extra_key(self, params) -> str | None:
        """Cache key of :meth:`cache_extra`'s arrays (None when there are none)."""
        return None

    def cluster(self, job, items: list[str], feats: list[dict], emit) -> Clustering:
        """Cluster the features of ``items`` (``job`` gives params, cancel, job_dir, cache)."""
        raise NotImplementedError


def warner(emit) -> Callable[[str], None]:
    """A ``warn(text)`` that emits a warning message through ``emit``."""
    from segdeck.core.jobs.events import Message

    def warn(text: str) -> None:
        emit(Message(text=text, level="warning"))

    return warn


def merge_pairs(found, stage: str):
    """One (i, j, similarity, stage) set from pair lists that may repeat pairs (the
    highest similarity kept); None when ``found`` is empty."""
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


class ThresholdMethod(ClusterMethod):
    """A method with a pair similarity (larger = more alike) compared with a threshold."""

    has_curve = True
    #: Threshold used when the sample gives no better choice.
    default_threshold: ClassVar[float] = 0.5

    # ---- similarity ----------------------------------------------------------------
    def pair(self, fa: dict, fb: dict) -> float:
        """Similarity of two features."""
        raise NotImplementedError

    def all_pairs(self, feats: Sequence[dict], idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Similarity of every pair among ``feats[idx]``: global ``i``, ``j`` (int64, i
        before j in ``idx`` order) and ``sim`` (float64)."""
        idx = np.asarray(idx, np.int64)
        ii, jj = np.triu_indices(len(idx), 1)
        return idx[ii], idx[jj], self._pair_sims(feats, idx[ii], idx[jj])

    def _pair_sims(self, feats: Sequence[dict], ia: np.ndarray, ib: np.ndarray) -> np.ndarray:
        """``self.pair`` of ``feats[ia[k]]`` and ``feats[ib[k]]`` for every ``k``
        (float64, shape ``(len(ia),)``).

        Raises
        ------
        ItemCancelled
            The clustering's cancel (:data:`_CANCEL_CHECK`) was set: looked at every
            :data:`CANCEL_EVERY` pairs.
        """
        import time

        check, progress = _CANCEL_CHECK.get(), _PAIR_PROGRESS.get()
        sim = np.empty(len(ia), np.float64)
        last = time.monotonic()
        for k, (a, b) in enumerate(zip(np.asarray(ia).tolist(), np.asarray(ib).tolist(), strict=True)):
            if k % CANCEL_EVERY == 0:
                if check is not None and check():
                    from segdeck.core.jobs.base import ItemCancelled

                    raise ItemCancelled("cancelled while comparing image pairs")
                if progress is not None and k and time.monotonic() - last >= PROGRESS_SECONDS:
                    progress(k, len(sim))
                    last = time.monotonic()
            sim[k] = self.pair(feats[a], feats[b])
        if progress is not None:
            progress(len(sim), len(sim))
        return sim

    def search(self, feats: Sequence[dict], idx: np.ndarray, threshold: float):
        """Pairs among ``feats[idx]`` with similarity >= ``threshold`` (global indices, sim)."""
        i, j, s = self.all_pairs(feats, idx)
        keep = s >= threshold
        return i[keep], j[keep], s[keep]

    @staticmethod
    def indexed_search(feats: Sequence[dict], idx: np.ndarray, key: str, pairs_fn, threshold: float):
        """:meth:`search` through an index function over the stacked feature ``key``.

        ``pairs_fn(stacked (n, ...) array, threshold) -> (a, b, sim)`` with local indices
        (e.g. :func:`~segdeck.core.cluster.similarity.cosine_pairs`); returns global
        indices and similarities. Fewer than two items give empty arrays.
        """
        idx = np.asarray(idx, np.int64)
        if len(idx) < 2:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
        a, b, s = pairs_fn(np.stack([feats[t][key] for t in idx]), threshold)
        return idx[a], idx[b], s

    def cross(self, feats: Sequence[dict], ia: np.ndarray, ib: np.ndarray, threshold: float):
        """Pairs between ``feats[ia]`` and ``feats[ib]`` with similarity >= ``threshold``."""
        ia, ib = np.asarray(ia, np.int64), np.asarray(ib, np.int64)
        aa, bb = np.repeat(ia, len(ib)), np.tile(ib, len(ia))
        sim = self._pair_sims(feats, aa, bb)
        keep = sim >= threshold
        return aa[keep], bb[keep], sim[keep]

    def approximation(self, n: int, threshold: float) -> str | None:
        """Why :meth:`search` over ``n`` items is approximate, or None when it is exact."""
        return None

    def threshold_grid(self, sims: np.ndarray, steps: int = 40) -> np.ndarray:
        """Thresholds of the curve: from the median sample similarity to the maximum."""
        if len(sims) == 0:
            return np.array([self.default_threshold])
        lo, hi = float(np.quantile(sims, 0.5)), float(sims.max())
        if hi - lo < 1e-6:
            return np.array([round(hi, 4)])
        return np.unique(np.round(np.linspace(lo, hi, steps), 4))

    # ---- clustering ----------------------------------------------------------------
    def cluster(self, job, items, feats, emit) -> Clustering:
        """Threshold (given, or chosen from a sample's curve), similar pairs, labels; a
        cancel of ``job`` is seen between pairs (raises ``ItemCancelled``)."""
        token = _CANCEL_CHECK.set(job.cancel.is_set)
        try:
            return self._cluster(job, feats, emit)
        finally:
            _CANCEL_CHECK.reset(token)

    def _cluster(self, job, feats, emit) -> Clustering:
        from segdeck.core.cluster import threshold
        from segdeck.core.jobs.events import Message, Progress

        p = job.params
        info: dict = {}
        extra: list[str] = []
        t = p.threshold
        if t is None:
            emit(Message(text=f"choosing the threshold from a sample of {min(len(feats), p.sample_size)} images"))
            token = _PAIR_PROGRESS.set(lambda done, total: emit(Progress(what=f"{self.name} sample pairs",
                                                                       done=done, total=total)))
            try:
                curve = threshold.curve_from_features(self.name, feats, p.sample_size)
            finally:
                _PAIR_PROGRESS.reset(token)
            t, rule = curve.auto, curve.rule
            extra = threshold.save_curve(curve, job.job_dir, chosen=t)
            emit(Message(text=f"threshold {t:.4g} chosen automatically: {rule}"))
            info["threshold_rule"] = rule
        info["threshold"] = t
        info["linkage"] = p.linkage
        found: list = []
        labels = self.cluster_pairs(job, feats, t, emit, info, found)
        return Clustering(labels, info, extra, merge_pairs(found, "threshold"))

    def edges_to_labels(self, params, n: int, gi: np.ndarray, gj: np.ndarray) -> np.ndarray:
        """Labels (int64 (n,)) of ``n`` items from similar pairs ``gi``, ``gj`` (int64 (m,)):
        connected components, or average linkage with ``--linkage average``."""
        from segdeck.core.cluster import graph

        if params.linkage == "average":
            return graph.average_linkage(n, gi, gj, np.zeros(len(gi)), max_distance=0.5)
        return graph.connected_components(n, gi, gj)[1]

    def cluster_pairs(self, job, feats, t: float, emit, info: dict, found: list) -> np.ndarray:
        """Labels (int64 (n,)) of all features at threshold ``t``; appends the pairs it
        finds (``(i, j, sim)``) to ``found`` and its report fields to ``info``."""
        raise NotImplementedError


class IndexedMethod(ThresholdMethod):
    """A threshold method whose :meth:`search` is sub-quadratic: all images at once."""

    def cross(self, feats, ia, ib, threshold):
        both = np.concatenate([np.asarray(ia, np.int64), np.asarray(ib, np.int64)])
        i, j, s = self.search(feats, both, threshold)
        in_a = np.isin(i, ia)
        keep = in_a != np.isin(j, ia)
        return i[keep], j[keep], s[keep]

    def cluster_pairs(self, job, feats, t, emit, info, found):
        from segdeck.core.jobs.events import Message

        p = job.params
        n = len(feats)
        if p.batch_size:
            emit(Message(text=f"{self.name} searches all {n} images at once with its index; "
                              f"--batch-size {p.batch_size} is not needed and not used"))
        reason = self.approximation(n, t)
        if reason:
            warner(emit)(reason)
        emit(Message(text=f"{self.name}: searching similar pairs among {n} images"))
        gi, gj, sims = self.search(feats, np.arange(n, dtype=np.int64), t)
        found.append((gi, gj, sims))
        return self.edges_to_labels(p, n, gi, gj)


#: Default tile / batch size of the pairwise methods when ``batch_size`` is 0.
PAIRWISE_BATCH = 256

#: Smallest tile of the exact pair search: every pair is compared once whatever the
#: tile, so a smaller ``batch_size`` would only multiply the per-tile call overhead.
MIN_TILE = 64


class PairwiseMethod(ThresholdMethod):
    """A threshold method that compares every pair (quadratic).

    Up to ``exact_pairs`` pairs, every pair is compared in tiles
    (:func:`segdeck.core.cluster.graph.tiled_pairs`): the result does not depend on the
    batch size. Above, the representative merge (one image per batch cluster)
    (:func:`segdeck.core.cluster.graph.cluster_in_batches`) runs, with a warning.
    """

    def cluster_pairs(self, job, feats, t, emit, info, found):
        from segdeck.core.cluster import graph
        from segdeck.core.jobs.events import Message, Progress

        p = job.params
        n = len(feats)
        warn = warner(emit)
        batch = p.batch_size or PAIRWISE_BATCH
        all_pairs = n * (n - 1) // 2
        info["batch_size"] = batch
        if all_pairs <= p.exact_pairs or n <= batch:
            tile = max(batch, MIN_TILE)  # same pairs for any tile; tiny tiles only add call overhead
            tiles = -(-n // tile)
            if tiles > 1:
                emit(Message(text=f"{n} images: every pair compared in {tiles} x {tiles} tiles of {tile} (exact)"))

            def progress(done: int, total: int) -> None:
                emit(Progress(what=f"{self.name} pairs", done=done, total=total))

            def tile_pairs(a, b):
                return self.search(feats, a, t) if b is None else self.cross(feats, a, b, t)

            gi, gj, sims = graph.tiled_pairs(n, tile, tile_pairs, progress=progress if tiles > 1 else None,
                                             cancel=job.cancel.is_set)
            found.append((gi, gj, sims))
            info["batch_merge"] = "exact"
            return self.edges_to_labels(p, n, gi, gj)
        warn(f"{n} images need {all_pairs:,} comparisons, more than --exact-pairs {p.exact_pairs:,}: "
             f"batches of {batch} merged through representatives (approximate: similar images in "
             "different batches are found only when their representatives are similar)")
        info["batch_merge"] = "representatives (approximate)"

        def cluster_fn(idx: np.ndarray) -> np.ndarray:  # one batch of the representative merge
            gi, gj, sims = self.search(feats, idx, t)
            found.append((gi, gj, sims))
            local = np.full(n, -1, np.int64)
            local[idx] = np.arange(len(idx))
            return self.edges_to_labels(p, len(idx), local[gi], local[gj])

        return graph.cluster_in_batches(n, batch, cluster_fn, warn=warn)

