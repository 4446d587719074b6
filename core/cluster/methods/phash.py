"""``phash``: 64-bit perceptual hash (DCT of a 32 x 32 thumbnail, imagehash-compatible);
similarity ``1 - hamming / 64``; pairs searched by multi-index hashing."""

from __future__ import annotations

import numpy as np

from segdeck.core.cluster.methods.base import IndexedMethod, register


class PHash(IndexedMethod):
    name = "phash"
    description = "perceptual hash, pairs within a Hamming radius (fast, exact copies and mild edits)"
    default_threshold = 1.0 - 10 / 64  # imagededup's usual 10 bits

    def extract(self, image, params=None, job=None) -> dict:
        from segdeck.core.cluster.features import phash_feature

        return phash_feature(image)

    def pair(self, fa, fb) -> float:
        from segdeck.core.cluster.similarity import phash_similarity

        return phash_similarity(fa, fb)

    def all_pairs(self, feats, idx):
        from segdeck.core.cluster.similarity import popcount64

        idx = np.asarray(idx, np.int64)
        ii, jj = np.triu_indices(len(idx), 1)
        h = np.array([feats[t]["h"][0] for t in idx], np.uint64)
        return idx[ii], idx[jj], 1.0 - popcount64(h[ii] ^ h[jj]).astype(np.float64) / 64.0

    def search(self, feats, idx, threshold):
        from segdeck.core.cluster.similarity import hamming_pairs

        idx = np.asarray(idx, np.int64)
        radius = int(np.floor((1.0 - threshold) * 64 + 1e-9))
        if radius < 0 or len(idx) < 2:
            return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
        h = np.array([feats[t]["h"][0] for t in idx], np.uint64)
        a, b, d = hamming_pairs(h, min(64, radius))
        return idx[a], idx[b], 1.0 - d / 64.0

    def approximation(self, n, threshold):
        from segdeck.core.cluster import similarity as sim

        radius = int(np.floor((1.0 - threshold) * 64 + 1e-9))
        if n > sim.BRUTE_LIMIT and radius >= 0 and sim.mih_is_approximate(n, 1, radius):
            return (f"phash: radius {radius} over {n} codes needs too many multi-index candidates; "
                    f"approximate HNSW search ({sim.ANN_K} neighbours per image)")
        return None

    def threshold_grid(self, sims, steps: int = 40):
        return np.array([1.0 - k / 64 for k in range(32, -1, -1)])  # whole bits


register(PHash())
