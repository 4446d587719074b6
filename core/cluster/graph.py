"""Clustering on similarity graphs.

* :func:`connected_components` -- the classic rule: images joined by any chain of
  similar pairs share a cluster (single linkage). Fast, but one spurious edge merges
  two groups, and at a loose threshold everything chains into one cluster.
* :func:`average_linkage` -- UPGMA on the sparse graph with missing pairs counted as
  distance ``missing`` (1.0 = "not similar"). Two clusters merge only when the mean
  distance over *all* their cross pairs is below ``max_distance``; with binary
  distances and ``max_distance = 0.5`` that is "more than half of the cross pairs are
  similar edges", so a chain A-B-C (A, C unrelated) stays apart. It runs per
  connected component, so the cost follows the component sizes, not n^2.
* :func:`tiled_pairs` -- every pair of a quadratic similarity, computed tile by tile
  (``batch_size`` items per tile, each tile against itself and every later tile), so a
  batched run finds exactly the pairs of an unbatched one with bounded working memory.
* :func:`cluster_in_batches` -- the classic batch scheme: cluster each batch, take one
  representative per cluster (and every outlier), cluster the representatives, merge.
  Approximate: a pair across batches is found only through representatives; the job
  uses it only when the exact tiles would cost more than its pair budget, and says so.

Labels are int64 arrays of length n, clusters numbered 0..k-1 by first appearance.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

#: Components larger than this are split by dropping their weakest edges before the
#: dense average-linkage step (bounds memory at about 8 * LIMIT^2 bytes).
DENSE_LIMIT = 4000


def relabel(labels: np.ndarray) -> np.ndarray:
    """Renumber labels 0..k-1 in order of first appearance (int64)."""
    labels = np.asarray(labels)
    _, first, inv = np.unique(labels, return_index=True, return_inverse=True)
    order = np.argsort(np.argsort(first, kind="stable"), kind="stable")
    return order[inv].astype(np.int64)


def connected_components(n: int, i: np.ndarray, j: np.ndarray) -> tuple[int, np.ndarray]:
    """Connected components of an undirected graph on ``n`` nodes.

    Parameters
    ----------
    n : int
        Number of nodes.
    i, j : array of int, shape (m,)
        Edge end points (0-based node indices).

    Returns
    -------
    k : int
        Number of components (isolated nodes count as components).
    labels : ndarray of int64, shape (n,)
        Component of each node, numbered by first appearance.
    """
    from scipy.sparse import coo_matrix
    from scipy.sparse.csgraph import connected_components as cc

    i = np.asarray(i, np.int64)
    j = np.asarray(j, np.int64)
    if n == 0:
        return 0, np.zeros(0, np.int64)
    g = coo_matrix((np.ones(len(i), np.int8), (i, j)), shape=(n, n)).tocsr()
    k, labels = cc(g, directed=False)
    return int(k), relabel(labels)


def average_linkage(
    n: int,
    i: np.ndarray,
    j: np.ndarray,
    dist: np.ndarray,
    max_distance: float = 0.5,
    missing: float = 1.0,
) -> np.ndarray:
    """Average-linkage (UPGMA) clustering of a sparse distance graph.

    Parameters
    ----------
    n : int
        Number of nodes.
    i, j : array of int, shape (m,)
        Edges (pairs with a known distance); duplicate pairs keep the smallest distance.
    dist : array of float, shape (m,)
        Distance of each edge, in [0, ``missing``].
    max_distance : float
        Merge two clusters while the mean distance over all their cross pairs is
        below this (strictly).
    missing : float
        Distance assumed for pairs without an edge.

    Returns
    -------
    ndarray of int64, shape (n,)
        Cluster labels.

    Notes
    -----
    Components above :data:`DENSE_LIMIT` nodes are first split by removing their
    weakest edges (largest distance) until every part fits; a mean over cross pairs
    of such a part could not reach ``max_distance`` anyway unless it is dense.
    """
    i = np.asarray(i, np.int64)
    j = np.asarray(j, np.int64)
    dist = np.asarray(dist, np.float64)
    labels = np.arange(n, dtype=np.int64)
    if n == 0 or len(i) == 0:
        return relabel(labels)
    keep = dist < missing
    i, j, dist = i[keep], j[keep], dist[keep]
    parts = _bounded_components(n, i, j, dist, DENSE_LIMIT)
    comp_of = parts
    order = np.argsort(comp_of[i], kind="stable")
    i, j, dist = i[order], j[order], dist[order]
    ec = comp_of[i]
    same = ec == comp_of[j]
    i, j, dist, ec = i[same], j[same], dist[same], ec[same]
    members_order = np.argsort(comp_of, kind="stable")
    bounds = np.searchsorted(comp_of[members_order], np.arange(comp_of.max() + 2))
    ebounds = np.searchsorted(ec, np.arange(comp_of.max() + 2))
    next_label = n
    for c in range(comp_of.max() + 1):
        members = members_order[bounds[c]:bounds[c + 1]]
        s = len(members)
        if s < 2:
            continue
        ei, ej, ed = i[ebounds[c]:ebounds[c + 1]], j[ebounds[c]:ebounds[c + 1]], dist[ebounds[c]:ebounds[c + 1]]
        if s == 2:
            if ed.min() < max_distance:
                labels[members] = next_label
                next_label += 1
            continue
        local = np.full(n, -1, np.int64) if s > 64 else None
        if local is not None:
            local[members] = np.arange(s)
            li, lj = local[ei], local[ej]
        else:
            pos = {int(m): k for k, m in enumerate(members)}
            li = np.array([pos[int(a)] for a in ei], np.int64)
            lj = np.array([pos[int(b)] for b in ej], np.int64)
        mat = np.full((s, s), missing, np.float64)
        np.minimum.at(mat, (li, lj), ed)
        mat = np.minimum(mat, mat.T)
        np.fill_diagonal(mat, 0.0)
        if s <= SMALL_UPGMA:
            sub = small_average_linkage(mat, max_distance)
        else:
            from scipy.cluster.hierarchy import linkage
            from scipy.spatial.distance import squareform

            sub = cut_tree_at(linkage(squareform(mat, checks=False), method="average"), max_distance)
        labels[members] = next_label + sub
        next_label += int(sub.max()) + 1
    return relabel(labels)


#: Components of at most this many nodes are clustered by :func:`small_average_linkage`
#: (NumPy, no SciPy import: ``scipy.cluster.hierarchy`` takes about 0.5 s to import, a
#: tenth of a whole 1,000-image ``dup`` run, and near-duplicate groups are small).
SMALL_UPGMA = 64


def small_average_linkage(mat: np.ndarray, max_distance: float) -> np.ndarray:
    """Flat average-linkage (UPGMA) clusters of a small dense distance matrix.

    Repeatedly merges the two closest clusters while their distance is below
    ``max_distance`` (strictly), the merged cluster's distance to every other being the
    size-weighted mean of its parts' (Lance-Williams update of UPGMA). Average linkage
    has no inversions, so stopping at the first merge at or above ``max_distance`` gives
    the same partition as cutting the full tree there (ties between equal distances are
    taken in row-major order).

    Parameters
    ----------
    mat : ndarray of float, shape (s, s)
        Symmetric distances, zero diagonal.
    max_distance : float

    Returns
    -------
    ndarray of int64, shape (s,)
        Labels 0..k-1.
    """
    s = len(mat)
    d = np.array(mat, np.float64)
    np.fill_diagonal(d, np.inf)
    size = np.ones(s)
    owner = np.arange(s)  # cluster (row index) of each observation
    for _ in range(s - 1):
        k = int(np.argmin(d))
        a, b = divmod(k, s)
        if not d[a, b] < max_distance:
            break
        if a > b:
            a, b = b, a
        row = (size[a] * d[a] + size[b] * d[b]) / (size[a] + size[b])
        d[a, :] = row
        d[:, a] = row
        d[a, a] = np.inf
        d[b, :] = np.inf
        d[:, b] = np.inf
        size[a] += size[b]
        owner[owner == b] = a
    return relabel(owner)


def cut_tree_at(z: np.ndarray, max_distance: float) -> np.ndarray:
    """Flat clusters of a monotone linkage matrix: the merges below ``max_distance``.

    Same partition as ``scipy.cluster.hierarchy.fcluster(z, max_distance - eps,
    criterion="distance")`` for linkages without inversions (single, complete, average,
    weighted), without fcluster's validation of the whole matrix on every call, which
    dominates when thousands of small components are clustered.

    Parameters
    ----------
    z : ndarray of float, shape (s - 1, 4)
        SciPy linkage matrix of ``s`` observations.
    max_distance : float
        Merges with a distance strictly below this are kept.

    Returns
    -------
    ndarray of int64, shape (s,)
        Labels 0..k-1.
    """
    s = len(z) + 1
    parent = np.arange(2 * s - 1)
    for r in np.nonzero(z[:, 2] < max_distance)[0].tolist():
        a, b = int(z[r, 0]), int(z[r, 1])
        parent[a] = parent[b] = s + r
    # nodes were created in increasing order, so one pass from the top resolves roots
    for node in range(2 * s - 2, -1, -1):
        p = parent[node]
        if p != node:
            parent[node] = parent[p]
    return relabel(parent[:s])


def _bounded_components(n: int, i, j, dist, limit: int) -> np.ndarray:
    """Component labels where no component exceeds ``limit`` nodes (weakest edges dropped)."""
    k, labels = connected_components(n, i, j)
    sizes = np.bincount(labels, minlength=k)
    if sizes.max(initial=0) <= limit:
        return labels
    big = sizes[labels[i]] > limit
    if not big.any():
        return labels
    bi, bj, bd = i[big], j[big], dist[big]
    cut = np.quantile(bd, 0.8) if len(np.unique(bd)) > 1 else None
    if cut is None or (bd < cut).sum() == 0:
        # cannot split by distance: keep a spanning forest of the lowest-index edges
        keep_small = np.zeros(len(bi), bool)
        keep_small[: max(0, len(bi) // 2)] = True
        sel = keep_small
    else:
        sel = bd < cut
    ni = np.concatenate([i[~big], bi[sel]])
    nj = np.concatenate([j[~big], bj[sel]])
    nd = np.concatenate([dist[~big], bd[sel]])
    return _bounded_components(n, ni, nj, nd, limit)


def clusters_from_labels(labels: np.ndarray, min_size: int = 2) -> tuple[list[np.ndarray], np.ndarray]:
    """Split labels into clusters (index arrays, largest first) and outliers.

    Parameters
    ----------
    labels : array of int, shape (n,)
        Cluster labels; a negative label marks noise.
    min_size : int
        Clusters smaller than this become outliers.

    Returns
    -------
    clusters : list of ndarray of int64
        Member indices of each cluster, sorted by size (descending) then first member.
    outliers : ndarray of int64
    """
    labels = np.asarray(labels)
    clusters, outliers = [], []
    for lab in np.unique(labels):
        idx = np.nonzero(labels == lab)[0]
        if lab < 0 or len(idx) < min_size:
            outliers.append(idx)
        else:
            clusters.append(idx)
    clusters.sort(key=lambda a: (-len(a), int(a[0])))
    out = np.sort(np.concatenate(outliers)) if outliers else np.zeros(0, np.int64)
    return clusters, out.astype(np.int64)


def tiled_pairs(
    n: int,
    batch_size: int,
    pairs_fn: Callable[[np.ndarray, np.ndarray | None], tuple[np.ndarray, np.ndarray, np.ndarray]],
    progress: Callable[[int, int], None] | None = None,
    cancel: Callable[[], bool] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Every similar pair of ``0..n-1``, computed in tiles of ``batch_size`` items.

    Tile ``a`` is compared with itself (``pairs_fn(a, None)``) and with every later tile
    ``b`` (``pairs_fn(a, b)``), so each pair is looked at exactly once and the result is
    the same for any ``batch_size`` (the cost is ``n (n - 1) / 2`` comparisons; the tile
    bounds what one call holds in memory).

    Parameters
    ----------
    n : int
        Number of items.
    batch_size : int
        Items per tile, >= 1.
    pairs_fn : callable
        ``pairs_fn(ia, ib)`` with int64 index arrays returns ``(i, j, sim)``: the similar
        pairs among ``ia`` (``ib`` is None) or between ``ia`` and ``ib``, global indices.
    progress : callable, optional
        ``progress(done, total)`` after each tile, counted in tiles of the first index.
    cancel : callable, optional
        Returns True to stop early (the pairs found so far are returned).

    Returns
    -------
    i, j : ndarray of int64, shape (m,)
        Pairs with ``i < j``.
    sim : ndarray of float64, shape (m,)
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    idx = np.arange(n, dtype=np.int64)
    tiles = [idx[s:s + batch_size] for s in range(0, n, batch_size)]
    out_i, out_j, out_s = [np.zeros(0, np.int64)], [np.zeros(0, np.int64)], [np.zeros(0)]
    for a, ta in enumerate(tiles):
        if cancel is not None and cancel():
            break
        for b in range(a, len(tiles)):
            gi, gj, s = pairs_fn(ta, None if b == a else tiles[b])
            out_i.append(np.asarray(gi, np.int64))
            out_j.append(np.asarray(gj, np.int64))
            out_s.append(np.asarray(s, np.float64))
        if progress is not None:
            progress(a + 1, len(tiles))
    i, j, s = np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_s)
    return np.minimum(i, j), np.maximum(i, j), s


def cluster_in_batches(
    n: int,
    batch_size: int,
    cluster_fn: Callable[[np.ndarray], np.ndarray],
    warn: Callable[[str], None] | None = None,
) -> np.ndarray:
    """Two-step batch clustering: cluster each batch, then merge through one representative per cluster.

    1. Split ``0..n-1`` into consecutive batches of ``batch_size``; cluster each with
       ``cluster_fn(indices) -> labels`` (labels < 0 or singletons are outliers).
    2. Take one representative per cluster (its first member) and every outlier,
       cluster the representatives with ``cluster_fn`` (recursively in batches when
       there are more than ``batch_size``), and merge clusters whose representatives
       share a cluster.

    Parameters
    ----------
    n : int
        Number of items.
    batch_size : int
        Items per batch, >= 2; ``n <= batch_size`` runs one batch.
    cluster_fn : callable
        Maps an int64 index array (global indices) to labels of the same length.
    warn : callable, optional
        Receives one line whenever batch pairs are left uncompared (default: the
        ``logging`` warning of this module). Never silent.

    Returns
    -------
    ndarray of int64, shape (n,)
        Labels, numbered by first appearance.

    Notes
    -----
    Unlike the classic scheme, outliers of a batch are representatives too, so two copies of an
    image that land in different batches still meet in step 2. Step 2 recurses while
    it makes progress; when a round merges nothing, every pair of half-size batches is
    compared (each call still sees at most ``batch_size`` items) if that takes at most
    :data:`MAX_BATCH_PAIRS` calls, else the labels so far are returned and ``warn`` says
    how many batch pairs were not compared. The result is approximate in general: two
    similar items of different batches meet only if their representatives do. Use
    :func:`tiled_pairs` where every pair must be found.
    """
    if warn is None:
        warn = _log_warning
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2, got {batch_size}")
    idx = np.arange(n, dtype=np.int64)
    if n <= batch_size:
        return relabel(_noise_to_singletons(cluster_fn(idx)))
    labels = np.empty(n, np.int64)
    offset = 0
    reps, rep_label = [], []
    for start in range(0, n, batch_size):
        sub = idx[start:start + batch_size]
        lab = relabel(_noise_to_singletons(cluster_fn(sub))) + offset
        labels[sub] = lab
        _, first = np.unique(lab, return_index=True)
        reps.extend(sub[first].tolist())
        rep_label.extend(lab[first].tolist())
        offset = int(lab.max()) + 1
    reps_arr = np.array(reps, np.int64)
    if len(reps_arr) >= n:
        # nothing merged inside any batch: another round would repeat the same batches,
        # so compare every pair of batches instead (when there are few enough)
        return relabel(_pairs_of_batches(labels, batch_size, cluster_fn, warn))
    rep_clusters = cluster_in_batches(len(reps_arr), batch_size, lambda loc: cluster_fn(reps_arr[loc]), warn)
    mapping = np.empty(offset, np.int64)
    mapping[np.array(rep_label, np.int64)] = rep_clusters
    return relabel(mapping[labels])


#: Most batch pairs compared when the representatives stop merging (see cluster_in_batches).
MAX_BATCH_PAIRS = 64


def _log_warning(text: str) -> None:
    import logging

    logging.getLogger(__name__).warning(text)


def _pairs_of_batches(labels: np.ndarray, batch_size: int, cluster_fn, warn) -> np.ndarray:
    n = len(labels)
    half = max(1, batch_size // 2)
    starts = list(range(0, n, half))
    needed = len(starts) * (len(starts) - 1) // 2
    if needed > MAX_BATCH_PAIRS:
        warn(f"batch merge approximate: {n} representatives did not merge and comparing all "
             f"{needed} pairs of half-batches exceeds {MAX_BATCH_PAIRS}; similar images in "
             "different batches may stay apart (raise the batch size or the exact pair budget)")
        return labels
    parent = np.arange(int(labels.max()) + 1)

    def find(a):
        while parent[a] != a:
            parent[a] = parent[parent[a]]
            a = parent[a]
        return a

    idx = np.arange(n, dtype=np.int64)
    for x in range(len(starts)):
        for y in range(x + 1, len(starts)):
            sub = np.concatenate([idx[starts[x]:starts[x] + half], idx[starts[y]:starts[y] + half]])
            lab = _noise_to_singletons(cluster_fn(sub))
            first: dict[int, int] = {}
            for g, lb in zip(sub.tolist(), lab.tolist(), strict=False):
                if lb in first:
                    ra, rb = find(labels[first[lb]]), find(labels[g])
                    if ra != rb:
                        parent[rb] = ra
                else:
                    first[lb] = g
    return np.array([find(v) for v in labels], np.int64)


def _noise_to_singletons(labels: np.ndarray) -> np.ndarray:
    labels = np.asarray(labels, np.int64).copy()
    noise = labels < 0
    if noise.any():
        base = labels.max(initial=-1) + 1
        labels[noise] = base + np.arange(noise.sum())
    return labels
