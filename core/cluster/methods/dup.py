"""``dup`` (default): the verified near-duplicate pipeline of :mod:`segdeck.core.cluster.dedup`
(flip-invariant hashes, ORB + RANSAC verification of uncertain pairs, non-chaining
average linkage). No threshold: pairs are verified geometrically."""

from __future__ import annotations

import numpy as np

from segdeck.core.cluster.methods.base import Clustering, ClusterMethod, register, warner


def single_threaded_blas(job) -> None:
    """Limit the BLAS library (OpenBLAS under numpy) to one thread for the rest of the job.

    The ``dup`` features and checks are thousands of tiny matrix products (window hashes,
    thumbnail correlations) run from several threads; a threaded BLAS spins up its own
    threads for each and, on a loaded machine, made the feature step 5-10 times slower
    (1.1 s vs 10-20 s for 1,000 images on 2 cores). The job runs in its own process (the
    CLI, or a TUI child process), so the limit stays within it; :func:`restore_blas` ends it.
    """
    if getattr(job, "_blas_limits", None) is None:
        from threadpoolctl import threadpool_limits

        job._blas_limits = threadpool_limits(1, user_api="blas")


def restore_blas(job) -> None:
    """Undo :func:`single_threaded_blas`."""
    limits = getattr(job, "_blas_limits", None)
    if limits is not None:
        limits.restore_original_limits()
        job._blas_limits = None


class Dup(ClusterMethod):
    name = "dup"
    description = "near-duplicates, verified (flips, crops, small rotations, edits; default)"
    version = "v5"  # v2: with the thumbnail; v3: with the window hashes; v4: multi-scale windows, centre hash; v5: window hashes by one matrix product (rounding differs)

    def name_part(self, params) -> str:
        return ""

    def teardown(self, job) -> None:
        restore_blas(job)  # also when the run ends before clustering (cancel, no image)

    def ignored_params(self, params) -> set[str]:
        # no threshold (so no curve sample, no linkage choice) and no pair tiles
        return super().ignored_params(params) | {"threshold", "linkage", "sample_size", "batch_size", "exact_pairs"}

    def setup(self, job, emit) -> None:
        single_threaded_blas(job)

    def load(self, path, params) -> np.ndarray:
        """(H, W) uint8 grayscale at ``max_side`` (JPEG: luma only)."""
        from segdeck.core.cluster.features import load_gray_small

        return load_gray_small(path, self.decode_side(params))

    def extract(self, image, params=None, job=None) -> dict:
        from segdeck.core.cluster.features import dup_feature

        return dup_feature(image)

    def extra_key(self, params) -> str:
        return f"gray:v1:side{params.max_side}:orb{params.dup.orb_side}"

    def cache_extra(self, image, params) -> dict:
        """The small grayscale image the ORB verification needs, cached beside the hash."""
        from segdeck.core.cluster.features import shrink

        return {"g": shrink(image, params.dup.orb_side)}

    def cluster(self, job, items, feats, emit) -> Clustering:
        from segdeck.core.cluster import dedup
        from segdeck.core.jobs.events import Message

        p = job.params
        if p.threshold is not None:
            emit(Message(text="dup ignores --threshold (pairs are verified geometrically); "
                              "tune --dup.radius / --dup.min-inliers instead", level="warning"))
        if p.batch_size:
            emit(Message(text=f"dup searches all {len(feats)} images at once (multi-index hashing); "
                              f"--batch-size {p.batch_size} is not used", level="warning"))
        key = self.extra_key(p)

        def gray(k: int) -> np.ndarray:
            cached = job.cache.get(job.item_path(items[k]), key)
            if cached is not None:
                return cached["g"]
            return self.cache_extra(self.load(job.item_path(items[k]), p), p)["g"]

        from segdeck.core.cluster import similarity

        n = len(feats)
        if n > similarity.BRUTE_LIMIT and similarity.mih_is_approximate(n, 2, p.dup.radius):
            emit(Message(text=f"dup: radius {p.dup.radius} over {n} images needs too many multi-index candidates; "
                              f"approximate HNSW candidate search ({similarity.ANN_K} neighbours per image): an image "
                              "with more near copies than that may lose some", level="warning"))
        emit(Message(text=f"dup: searching candidate pairs and verifying them on {p.workers} threads"))
        decisions: list = []
        single_threaded_blas(job)
        try:
            labels, stats = dedup.dup_cluster(feats, p.dup, gray=gray, workers=p.workers, decisions=decisions,
                                              cancel=job.cancel.is_set, warn=warner(emit))
        finally:
            restore_blas(job)
        dec = decisions[0]
        acc = dec.accepted
        emit(Message(text=f"dup: {stats['candidates']} candidate pairs, {stats['sure']} sure, "
                          f"{stats['verified']} verified, {stats['accepted']} accepted"))
        return Clustering(labels, {"dup": stats}, [], (dec.i[acc], dec.j[acc], 1.0 - dec.d[acc] / 64.0, dec.stage[acc]))


register(Dup())
