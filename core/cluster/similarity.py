"""Pairwise similarity per method, and the search for similar pairs.

Every method's similarity is a number where larger means more alike, compared with a
threshold (pairs with ``similarity >= threshold`` are similar):

=========  ==============================================================  ==========
method     similarity                                                      range
=========  ==============================================================  ==========
ssim       ``skimage.metrics.structural_similarity`` of the thumbnails     [-1, 1]
minhash    estimated Jaccard index of the corner-cell sets (datasketch)    [0, 1]
phash      ``1 - hamming / 64``                                            [0, 1]
orb        good matches (Lowe ratio 0.75) / all matches                    [0, 1]
tm         ``1 -`` the minimum normalised squared difference of template   [0, 1]
           matching (centre 80 % of one thumbnail slid over the other,
           both directions, the smaller error)
deep       cosine similarity of embeddings                                 [-1, 1]
=========  ==============================================================  ==========

Search cost: phash uses multi-index hashing (Norouzi et al., "Fast search in Hamming
space with multi-index hashing", CVPR 2012), minhash uses datasketch's MinHash LSH,
embeddings use an HNSW index (hnswlib; Malkov & Yashunin, TPAMI 2018); SSIM, ORB and
template matching compare every pair (in tiles,
:func:`segdeck.core.cluster.graph.tiled_pairs`). Which search a method uses is part of
its object in :mod:`segdeck.core.cluster.methods`; the functions taking a method name
here look it up in that registry.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

#: Below this many items exact brute-force search is used instead of an index.
BRUTE_LIMIT = 3000

#: Above this many expected multi-index candidates (uniform codes), Hamming search
#: switches to an approximate HNSW k-nearest-neighbour search.
MIH_MAX_CANDIDATES = 3e9

#: Multi-index hashing checks the candidates of a block of queries at once; a block is
#: split so that it holds at most this many (bounds the temporaries to ~200 MB).
MIH_BLOCK_CANDIDATES = 5_000_000

#: Neighbours per code asked from the HNSW index in the approximate Hamming search.
ANN_K = 32


# ------------------------------------------------------------------ Hamming
def popcount64(x: np.ndarray) -> np.ndarray:
    """Number of set bits of each uint64 element (same shape, uint8)."""
    x = np.asarray(x, np.uint64)
    if hasattr(np, "bitwise_count"):
        return np.bitwise_count(x)
    table = np.array([bin(v).count("1") for v in range(1 << 16)], np.uint8)
    v = x.view(np.uint16).reshape(*x.shape, 4)
    return table[v].sum(-1).astype(np.uint8)


def _masks(bits: int, radius: int) -> np.ndarray:
    from itertools import combinations

    out = [0]
    for r in range(1, radius + 1):
        for combo in combinations(range(bits), r):
            m = 0
            for b in combo:
                m |= 1 << b
            out.append(m)
    return np.array(out, np.int64)


def hamming_pairs(
    codes: np.ndarray,
    radius: int,
    codes_b: np.ndarray | None = None,
    block: int = 2048,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All pairs of 64-bit codes within a Hamming radius, without comparing every pair.

    Parameters
    ----------
    codes : ndarray of uint64, shape (n,)
        Query codes, one per item.
    radius : int
        Largest Hamming distance reported, 0..64.
    codes_b : ndarray of uint64, shape (n, k), optional
        Alternative codes per item (e.g. the code and the mirrored image's code); the
        distance of a pair (a, b) is ``min_c hamming(codes[a], codes_b[b, c])``.
        Default: ``codes[:, None]``.
    block : int
        Queries per vectorised block (memory vs speed).

    Returns
    -------
    i, j : ndarray of int64, shape (m,)
        Pairs with ``i < j``, each once.
    d : ndarray of int64, shape (m,)
        Their Hamming distances (for ``codes_b``: the minimum over both orders).

    Notes
    -----
    Up to :data:`BRUTE_LIMIT` items every pair is compared (vectorised). Above it,
    multi-index hashing: the 64 bits are split into 4 chunks of 16; a pair within
    ``radius`` has at least one chunk within ``radius // 4``, so each query looks up
    the buckets of its chunk values flipped in at most ``radius // 4`` bits and
    checks only those candidates. Radii up to 11 (sub-radius 2) stay fast at 10^5
    items; when the expected candidate count (for uniform codes) exceeds
    :data:`MIH_MAX_CANDIDATES` the search becomes approximate: an HNSW index over the
    codes as +-1 vectors, :data:`ANN_K` neighbours per code (an image with more than
    that many codes within the radius may lose some pairs).
    """
    codes = np.ascontiguousarray(codes, np.uint64).ravel()
    n = len(codes)
    if codes_b is None:
        codes_b = codes[:, None]
    codes_b = np.ascontiguousarray(codes_b, np.uint64).reshape(n, -1)
    if not 0 <= radius <= 64:
        raise ValueError(f"radius must be in 0..64, got {radius}")
    empty = (np.zeros(0, np.int64),) * 3
    if n < 2:
        return empty
    if n <= BRUTE_LIMIT:
        return _hamming_brute(codes, codes_b, radius, block)
    if mih_is_approximate(n, codes_b.shape[1], radius):
        return _hamming_ann(codes, codes_b, radius)
    return _hamming_mih(codes, codes_b, radius, block)


def mih_is_approximate(n: int, k: int, radius: int) -> bool:
    """Whether :func:`hamming_pairs` over ``n`` codes (``k`` alternatives each) within
    ``radius`` bits switches to the approximate HNSW search: the expected multi-index
    candidate count for uniform codes exceeds :data:`MIH_MAX_CANDIDATES`."""
    return 4 * n * len(_masks(16, radius // 4)) * (n * k / 65536.0) > MIH_MAX_CANDIDATES


def _finish(i, j, d):
    a, b = np.minimum(i, j), np.maximum(i, j)
    keep = a != b
    a, b, d = a[keep], b[keep], d[keep]
    if not len(a):
        return (np.zeros(0, np.int64),) * 3
    key = a * (1 << 32) + b
    order = np.lexsort((d, key))
    key, a, b, d = key[order], a[order], b[order], d[order]
    first = np.ones(len(key), bool)
    first[1:] = key[1:] != key[:-1]
    return a[first], b[first], d[first].astype(np.int64)


def _hamming_brute(codes, codes_b, radius, block):
    # one (block, n) XOR buffer and uint8 popcount buffers reused across blocks; the min
    # over the alternative codes is an element-wise minimum (a reduction over a short
    # last axis is slow in numpy)
    n, k = codes_b.shape
    block = max(1, min(block, 512))  # keeps the buffers near the CPU cache
    cols = [np.ascontiguousarray(codes_b[:, c]) for c in range(k)]
    x = np.empty((min(block, n), n), np.uint64)
    cnt = np.empty((min(block, n), n), np.uint8)
    best = np.empty((min(block, n), n), np.uint8)
    out_i, out_j, out_d = [], [], []
    for s in range(0, n, block):
        q = codes[s:s + block, None]
        m = len(q)
        for c, col in enumerate(cols):
            np.bitwise_xor(q, col[None, :], out=x[:m])
            if c == 0:
                _popcount_into(x[:m], best[:m])
            else:
                _popcount_into(x[:m], cnt[:m])
                np.minimum(best[:m], cnt[:m], out=best[:m])
        ii, jj = np.nonzero(best[:m] <= radius)
        out_i.append(ii + s)
        out_j.append(jj)
        out_d.append(best[ii, jj])
    return _finish(np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_d))


def _popcount_into(x: np.ndarray, out: np.ndarray) -> None:
    if hasattr(np, "bitwise_count"):
        np.bitwise_count(x, out=out)
    else:
        out[...] = popcount64(x)


def _hamming_mih(codes, codes_b, radius, block):
    n, k = codes_b.shape
    db = codes_b.ravel()
    owner = np.repeat(np.arange(n, dtype=np.int64), k)
    sub = radius // 4
    masks = _masks(16, sub)
    block = max(16, min(block, 1_000_000 // len(masks)))  # bounded memory per block
    out_i, out_j, out_d = [], [], []
    for c in range(4):
        shift = np.uint64(16 * c)
        dbc = ((db >> shift) & np.uint64(0xFFFF)).astype(np.int64)
        order = np.argsort(dbc, kind="stable")
        counts = np.bincount(dbc, minlength=1 << 16)
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        qc = ((codes >> shift) & np.uint64(0xFFFF)).astype(np.int64)
        for s in range(0, n, block):
            q = qc[s:s + block]
            keys2 = q[:, None] ^ masks[None, :]
            per_query = counts[keys2].sum(1)
            # sub-blocks of at most MIH_BLOCK_CANDIDATES candidates (codes of similar
            # images share buckets: a block of queries can meet far more than the
            # uniform estimate, and every candidate costs ~40 bytes of temporaries)
            csum = np.cumsum(per_query)
            lo = 0
            while lo < len(q):
                done = int(csum[lo - 1]) if lo else 0
                hi = max(lo + 1, int(np.searchsorted(csum, done + MIH_BLOCK_CANDIDATES, side="right")))
                keys = keys2[lo:hi].ravel()
                cnt = counts[keys]
                total = int(cnt.sum())
                if total:
                    qidx = np.repeat(np.repeat(np.arange(s + lo, s + hi), len(masks)), cnt)
                    # positions: starts[key] + 0..cnt-1 for each key
                    offs = np.repeat(starts[keys] - np.concatenate([[0], np.cumsum(cnt)[:-1]]), cnt) + np.arange(total)
                    cand = order[offs]
                    d = popcount64(codes[qidx] ^ db[cand])
                    ok = d <= radius
                    out_i.append(qidx[ok])
                    out_j.append(owner[cand[ok]])
                    out_d.append(d[ok].astype(np.int64))
                lo = hi
    if not out_i:
        return (np.zeros(0, np.int64),) * 3
    return _finish(np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_d))


def _hamming_ann(codes, codes_b, radius):
    """Approximate radius search: HNSW on +-1 bit vectors (squared L2 = 4 x Hamming),
    :data:`ANN_K` nearest neighbours per query, filtered by the exact distance."""
    import hnswlib

    n, k = codes_b.shape

    def bits(c):
        b = np.unpackbits(np.ascontiguousarray(c, ">u8").view(np.uint8).reshape(len(c), 8), axis=1)
        return b.astype(np.float32) * 2 - 1

    db = codes_b.ravel()
    owner = np.repeat(np.arange(n, dtype=np.int64), k)
    index = hnswlib.Index(space="l2", dim=64)
    index.init_index(max_elements=len(db), ef_construction=80, M=12, random_seed=0)
    for s in range(0, len(db), 50000):
        index.add_items(bits(db[s:s + 50000]), np.arange(s, min(len(db), s + 50000)))
    kk = min(len(db), ANN_K * k)
    index.set_ef(max(2 * kk, 64))
    out_i, out_j, out_d = [], [], []
    for s in range(0, n, 50000):
        labels, _ = index.knn_query(bits(codes[s:s + 50000]), k=kk)
        q = np.repeat(np.arange(s, s + len(labels)), kk)
        cand = labels.ravel().astype(np.int64)
        d = popcount64(codes[q] ^ db[cand]).astype(np.int64)
        ok = d <= radius
        out_i.append(q[ok])
        out_j.append(owner[cand[ok]])
        out_d.append(d[ok])
    return _finish(np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_d))


# ------------------------------------------------------------------ Jaccard
def jaccard_pairs(signatures: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of MinHash signatures whose estimated Jaccard index is >= ``threshold``.

    Parameters
    ----------
    signatures : ndarray of uint64, shape (n, num_perm)
        datasketch MinHash hash values.
    threshold : float
        In (0, 1].

    Returns
    -------
    i, j : ndarray of int64
        Pairs with ``i < j``.
    sim : ndarray of float64
        Estimated Jaccard index (fraction of equal hash values).

    Notes
    -----
    Above :data:`BRUTE_LIMIT` items the candidates come from ``datasketch.MinHashLSH``
    (banding tuned for ``threshold``; a few true pairs near the threshold can be
    missed, as with any LSH) and are then checked exactly.
    """
    sig = np.ascontiguousarray(signatures, np.uint64)
    n, p = sig.shape
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    if n <= BRUTE_LIMIT:
        out_i, out_j, out_s = [], [], []
        step = max(1, 2_000_000 // max(1, n * p))
        for s in range(0, n, step):
            sim = (sig[s:s + step, None, :] == sig[None, :, :]).mean(-1)
            ii, jj = np.nonzero(sim >= threshold)
            keep = jj > ii + s
            out_i.append(ii[keep] + s)
            out_j.append(jj[keep])
            out_s.append(sim[ii[keep], jj[keep]])
        return np.concatenate(out_i), np.concatenate(out_j), np.concatenate(out_s)
    from datasketch import MinHashLSH

    from segdeck.core.cluster.features import minhash_from_values

    lsh = MinHashLSH(threshold=max(0.01, min(0.99, threshold)), num_perm=p)
    mhs = [minhash_from_values(sig[t], lean=True) for t in range(n)]
    with lsh.insertion_session() as session:
        for t in range(n):
            session.insert(t, mhs[t], check_duplication=False)
    ci, cj = [], []
    for t in range(n):
        for u in lsh.query(mhs[t]):
            if u > t:
                ci.append(t)
                cj.append(u)
    ci = np.array(ci, np.int64)
    cj = np.array(cj, np.int64)
    if not len(ci):
        return ci, cj, np.zeros(0)
    sim = (sig[ci] == sig[cj]).mean(1)
    keep = sim >= threshold
    return ci[keep], cj[keep], sim[keep]


# ------------------------------------------------------------------ embeddings
def cosine_pairs(emb: np.ndarray, threshold: float, k: int = 30) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs of embeddings with cosine similarity >= ``threshold``.

    Parameters
    ----------
    emb : ndarray of float, shape (n, d)
    threshold : float
        In [-1, 1].
    k : int
        Neighbours per item asked from the HNSW index (above :data:`BRUTE_LIMIT` items);
        an item with more than ``k`` similar items keeps its ``k`` nearest.

    Returns
    -------
    i, j : ndarray of int64 (``i < j``), sim : ndarray of float64
    """
    x = np.asarray(emb, np.float32)
    n = len(x)
    if n < 2:
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)
    x = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    if n <= BRUTE_LIMIT:
        sim = x @ x.T
        ii, jj = np.nonzero(np.triu(sim >= threshold, 1))
        return ii.astype(np.int64), jj.astype(np.int64), sim[ii, jj].astype(np.float64)
    import hnswlib

    index = hnswlib.Index(space="cosine", dim=x.shape[1])
    index.init_index(max_elements=n, ef_construction=100, M=16, random_seed=0)
    index.add_items(x, np.arange(n))
    kk = min(n, k + 1)
    index.set_ef(max(kk * 2, 50))
    nb, dist = index.knn_query(x, k=kk)
    ii = np.repeat(np.arange(n), kk)
    jj = nb.ravel().astype(np.int64)
    sim = 1.0 - dist.ravel().astype(np.float64)
    keep = sim >= threshold
    a, b, s = _finish(ii[keep], jj[keep], np.round((1 - sim[keep]) * 1e6).astype(np.int64))
    return a, b, 1.0 - s / 1e6


# ------------------------------------------------------------------ pairwise methods
def ssim_similarity(fa: dict, fb: dict) -> float:
    """SSIM of two thumbnails (``skimage.metrics.structural_similarity``, 7x7 window)."""
    from skimage.metrics import structural_similarity

    return float(structural_similarity(fa["gray"], fb["gray"], data_range=255))


def orb_similarity(fa: dict, fb: dict, ratio: float = 0.75) -> float:
    """Good ORB matches (Lowe's ratio test) over all matches of the smaller descriptor set."""
    import cv2

    da, db = fa["des"], fb["des"]
    if len(da) < 2 or len(db) < 2:
        return 0.0
    if len(da) > len(db):
        da, db = db, da
    matcher = cv2.BFMatcher(cv2.NORM_HAMMING)
    matches = matcher.knnMatch(da, db, k=2)
    if not matches:
        return 0.0
    good = sum(1 for m in matches if len(m) == 2 and m[0].distance < ratio * m[1].distance)
    return good / len(matches)


def tm_similarity(fa: dict, fb: dict, inner: float = 0.8) -> float:
    """``1 -`` minimum normalised squared difference (``cv2.TM_SQDIFF_NORMED``) of the
    centre ``inner`` part of one thumbnail slid over the other, both ways, best kept."""
    import cv2

    best = 1.0
    for a, b in ((fa["gray"], fb["gray"]), (fb["gray"], fa["gray"])):
        h, w = a.shape
        mh, mw = round(h * (1 - inner) / 2), round(w * (1 - inner) / 2)
        tpl = a[mh:h - mh, mw:w - mw]
        res = cv2.matchTemplate(b, tpl, cv2.TM_SQDIFF_NORMED)
        best = min(best, float(res.min()))
    return float(np.clip(1.0 - best, 0.0, 1.0))


def phash_similarity(fa: dict, fb: dict) -> float:
    """``1 - hamming / 64`` of two perceptual hashes."""
    return 1.0 - int(popcount64(fa["h"][:1] ^ fb["h"][:1])[0]) / 64.0


def minhash_similarity(fa: dict, fb: dict) -> float:
    """Estimated Jaccard index (datasketch ``MinHash.jaccard``)."""
    from segdeck.core.cluster.features import minhash_from_values

    return float(minhash_from_values(fa["mh"]).jaccard(minhash_from_values(fb["mh"])))


def cosine_similarity(fa: dict, fb: dict) -> float:
    """Cosine similarity of two embeddings (``"emb"``)."""
    a, b = fa["emb"].astype(np.float64), fb["emb"].astype(np.float64)
    return float(a @ b / max(1e-12, np.linalg.norm(a) * np.linalg.norm(b)))


# ------------------------------------------------------------------ per method (registry)
def _threshold_method(method: str):
    from segdeck.core.cluster.methods import ThresholdMethod, get_method

    m = get_method(method)
    if not isinstance(m, ThresholdMethod):
        raise ValueError(f"method {method!r} has no pair similarity")
    return m


def similarity(method: str, fa: dict, fb: dict) -> float:
    """Similarity of two features of ``method`` (see the module table)."""
    return _threshold_method(method).pair(fa, fb)


def all_pairs(method: str, feats: Sequence[dict], idx: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Similarity of every pair among ``feats[idx]`` (for threshold curves and batches).

    Returns
    -------
    i, j : ndarray of int64
        Global indices (from ``idx``), ``i < j`` in ``idx`` order.
    sim : ndarray of float64
    """
    i, j, s = _threshold_method(method).all_pairs(feats, np.asarray(idx, np.int64))
    return i, j, np.asarray(s, np.float64)


def similar_pairs(method: str, feats: Sequence[dict], idx: np.ndarray, threshold: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Pairs among ``feats[idx]`` with similarity >= ``threshold``, searched with the
    method's index where it has one (phash, minhash, deep), else every pair.

    Returns
    -------
    i, j : ndarray of int64 (global indices), sim : ndarray of float64
    """
    return _threshold_method(method).search(feats, np.asarray(idx, np.int64), threshold)


def block_pairs(
    method: str, feats: Sequence[dict], ia: np.ndarray, ib: np.ndarray | None, threshold: float,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Similar pairs among ``feats[ia]`` (``ib`` None) or between ``feats[ia]`` and
    ``feats[ib]`` (one tile of :func:`segdeck.core.cluster.graph.tiled_pairs`).

    Returns
    -------
    i, j : ndarray of int64 (global indices), sim : ndarray of float64
    """
    m = _threshold_method(method)
    ia = np.asarray(ia, np.int64)
    return m.search(feats, ia, threshold) if ib is None else m.cross(feats, ia, np.asarray(ib, np.int64), threshold)


def search_approximation(method: str, n: int, threshold: float) -> str | None:
    """Why the edge search of ``method`` over ``n`` items is approximate, or None when
    it finds every pair at or above ``threshold`` (for a log warning)."""
    return _threshold_method(method).approximation(n, threshold)
