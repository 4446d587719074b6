"""``minhash``: MinHash (datasketch) of the set of occupied grid cells of Harris corners;
similarity = estimated Jaccard index; pairs searched with MinHash LSH."""

from __future__ import annotations

import numpy as np

from segdeck.core.cluster.methods.base import IndexedMethod, register


class MinHash(IndexedMethod):
    name = "minhash"
    description = "MinHash of Harris-corner cells, Jaccard similarity with LSH search"
    side = 160
    default_threshold = 0.5

    def extract(self, image, params=None, job=None) -> dict:
        from segdeck.core.cluster.features import minhash_feature

        return minhash_feature(image)

    def pair(self, fa, fb) -> float:
        from segdeck.core.cluster.similarity import minhash_similarity

        return minhash_similarity(fa, fb)

    def all_pairs(self, feats, idx):
        idx = np.asarray(idx, np.int64)
        ii, jj = np.triu_indices(len(idx), 1)
        if not len(ii):
            return idx[ii], idx[jj], np.zeros(0)
        sig = np.stack([feats[t]["mh"] for t in idx])
        step = 100_000
        sim = np.concatenate([(sig[ii[s:s + step]] == sig[jj[s:s + step]]).mean(1) for s in range(0, len(ii), step)])
        return idx[ii], idx[jj], sim

    def search(self, feats, idx, threshold):
        from segdeck.core.cluster.similarity import jaccard_pairs

        return self.indexed_search(feats, idx, "mh", jaccard_pairs, threshold)

    def approximation(self, n, threshold):
        from segdeck.core.cluster.similarity import BRUTE_LIMIT

        if n > BRUTE_LIMIT:
            return (f"minhash: {n} images searched with MinHash LSH (banded for threshold {threshold:g}); "
                    "pairs close to the threshold can be missed")
        return None


register(MinHash())
