"""Image clustering: per-image features, pairwise similarity, graph clustering, deep
features with model selection, and the ``cluster`` job.

Modules
-------
features   decoding at small size and the per-method feature extractors
             (SSIM, MinHash over Harris corners, perceptual hash, ORB, template
             matching, the near-duplicate ``dup`` features)
similarity pairwise similarity per method and the edge search (subquadratic where
             the method allows: multi-index hashing for Hamming codes, MinHash LSH for
             Jaccard, an HNSW index for embeddings)
graph      connected components, non-chaining average linkage, batch merge through
             representatives
dedup      near-duplicate verification (ORB + RANSAC homography) on hash candidates
threshold  threshold-vs-pairs curve from a sample, the automatic rule, the PNG plot
deep       convolutional autoencoder / pretrained CNN features and clustering model
             selection (KMeans, Agglomerative, DBSCAN, GaussianMixture, HDBSCAN)
cache      per-file feature cache (SQLite keyed by path, size, mtime)
output     cluster folders (copy, symlink, hardlink, move) and the JSON report
methods    one module per method (dup, phash, ssim, minhash, orb, tm, deep) implementing
             one protocol (feature key, decode size, load, extract, cluster) and the
             registry the params, the CLI and the TUI are built from
job        :class:`~segdeck.core.cluster.job.ClusterJob`, ``segdeck run cluster``

Nothing here imports torch at module level.
"""

from __future__ import annotations

from segdeck.core.cluster.methods import METHOD_NAMES as METHODS  # noqa: E402 - the registry's names, display order

__all__ = ["METHODS"]
