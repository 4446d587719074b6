"""Batch merging never loses a cross-batch pair: >= 1,000 items, duplicates far apart in
name order, every batching method, batch sizes 2, 5 and 256 give the unbatched clusters."""

from __future__ import annotations

import numpy as np
import pytest

from segdeck.core.cluster import graph
from segdeck.core.cluster.job import ClusterJob, ClusterParams
from segdeck.core.cluster.methods import PairwiseMethod, get_method
from segdeck.core.jobs.events import Message, Progress

N = 1000
#: planted duplicate groups: item k with k + 500 (pairs, even indices), and triples
#: spread over the whole range (odd indices, so no item is in two groups)
PAIRS = [(k, k + 500) for k in range(0, 480, 8)]
TRIPLES = [(1 + 40 * t, 401 + 40 * t, 999 - 2 * t) for t in range(4)]


def _groups():
    return [list(p) for p in PAIRS] + [list(t) for t in TRIPLES]


def _features(method: str, rng: np.random.Generator) -> list[dict]:
    """Cheap synthetic features of ``method`` with the planted duplicates."""
    if method == "phash":
        codes = rng.integers(0, 2**63, N, dtype=np.int64).astype(np.uint64) * np.uint64(2) + np.uint64(1)
        for g in _groups():
            for other in g[1:]:  # copies: 2 bits flipped
                codes[other] = codes[g[0]] ^ np.uint64((1 << 5) | (1 << 40))
        return [{"h": np.array([c], np.uint64)} for c in codes]
    if method == "minhash":
        sig = rng.integers(0, 2**62, (N, 64), dtype=np.int64).astype(np.uint64)
        for g in _groups():
            for other in g[1:]:
                sig[other] = sig[g[0]]
                sig[other, :4] = rng.integers(0, 2**62, 4, dtype=np.int64).astype(np.uint64)
        return [{"mh": s} for s in sig]
    # embeddings (deep with a threshold) and the stand-in of the pairwise methods
    x = rng.normal(size=(N, 16))
    for g in _groups():
        for other in g[1:]:
            x[other] = x[g[0]] + rng.normal(scale=0.02, size=16)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    key = "emb" if method == "deep" else "v"
    return [{key: v.astype(np.float32)} for v in x]


def _cheap_pair(fa: dict, fb: dict) -> float:
    # the pairwise methods' batching code does not depend on what the similarity is;
    # a dot product keeps 500,000 comparisons per run fast
    return float(fa["v"] @ fb["v"])


THRESHOLDS = {"phash": 0.9, "minhash": 0.8, "deep": 0.9, "ssim": 0.9, "orb": 0.9, "tm": 0.9}


def _partition(labels: np.ndarray) -> set[frozenset[int]]:
    clusters, _ = graph.clusters_from_labels(labels, 2)
    return {frozenset(c.tolist()) for c in clusters}


@pytest.mark.parametrize("method", ["phash", "minhash", "deep", "ssim", "orb", "tm"])
def test_batched_equals_unbatched_with_far_apart_duplicates(method, tmp_path, monkeypatch):
    pairwise = isinstance(get_method(method), PairwiseMethod)
    if pairwise:
        monkeypatch.setattr(get_method(method), "pair", _cheap_pair)
    feats = _features(method, np.random.default_rng(7))
    items = [f"img{k:04d}.jpg" for k in range(N)]
    expected = {frozenset(g) for g in _groups()}

    def run(batch_size: int):
        # deep: an embedding of its own (the default descriptors have none)
        extra = {"deep": {"features": "autoencoder"}} if method == "deep" else {}
        params = ClusterParams(method=method, threshold=THRESHOLDS[method], batch_size=batch_size, **extra)
        job = ClusterJob(params, tmp_path, tmp_path / "job")
        events = []
        labels, info, _ = job.cluster(items, feats, events.append)
        return _partition(labels), info, events

    unbatched, _, _ = run(N)
    assert unbatched == expected
    for batch in (2, 5, 256):
        found, info, events = run(batch)
        assert found == unbatched, (method, batch)
        if pairwise:
            assert info["batch_merge"] == "exact"
            bars = [(e.done, e.total) for e in events if isinstance(e, Progress)]
            assert bars and bars[-1][0] == bars[-1][1] > 1  # progress per tile, ending at n/n
        else:  # index search over every image; the option is reported as unused
            assert any(isinstance(e, Message) and "not used" in e.text for e in events)


def test_tiled_pairs_sees_every_pair_once():
    seen = []

    def pairs_fn(a, b):
        if b is None:
            i, j = np.triu_indices(len(a), 1)
            seen.extend(zip(a[i].tolist(), a[j].tolist(), strict=True))
        else:
            seen.extend((x, y) for x in a.tolist() for y in b.tolist())
        return np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0)

    graph.tiled_pairs(23, 5, pairs_fn)
    assert sorted(seen) == [(a, b) for a in range(23) for b in range(a + 1, 23)]


def test_representative_merge_warns_when_it_approximates(tmp_path, monkeypatch):
    """Above the exact pair budget the representative merge runs, and says so;
    the half-batch fallback that gives up warns instead of returning silently."""
    monkeypatch.setattr(get_method("ssim"), "pair", _cheap_pair)
    rng = np.random.default_rng(1)
    x = rng.normal(size=(300, 8))
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    feats = [{"v": v} for v in x]
    params = ClusterParams(method="ssim", threshold=0.99, batch_size=4, exact_pairs=0)
    events = []
    ClusterJob(params, tmp_path, tmp_path / "job").cluster([str(k) for k in range(300)], feats, events.append)
    warnings = [e.text for e in events if isinstance(e, Message) and e.level == "warning"]
    assert any("approximate" in w and "--exact-pairs" in w for w in warnings)
    assert any("batch merge approximate" in w for w in warnings)  # 300 singletons: too many half-batch pairs

    logged = []
    graph.cluster_in_batches(300, 4, lambda idx: np.arange(len(idx)), warn=logged.append)
    assert logged and "may stay apart" in logged[0]


def test_dup_warns_when_its_candidate_search_is_approximate(tmp_path, monkeypatch):
    from segdeck.core.cluster import similarity

    assert not similarity.mih_is_approximate(50_000, 2, 20) and similarity.mih_is_approximate(100_000, 2, 20)
    monkeypatch.setattr(similarity, "BRUTE_LIMIT", 2)
    monkeypatch.setattr(similarity, "MIH_MAX_CANDIDATES", 0)
    code = np.array([0x0123456789ABCDEF, 0x0F0F0F0F0F0F0F0F], np.uint64)
    feats = [{"h": code.copy(), "t": np.full((16, 16), k, np.uint8)} for k in range(10)]
    events = []
    job = ClusterJob(ClusterParams(), tmp_path, tmp_path / "job")
    labels, _, _ = job.cluster([f"{k}.jpg" for k in range(10)], feats, events.append)
    assert len(set(labels.tolist())) == 1  # identical codes: one cluster through the HNSW search
    assert any(isinstance(e, Message) and e.level == "warning" and "approximate HNSW" in e.text for e in events)


def test_multi_index_search_split_into_bounded_blocks_finds_every_pair(monkeypatch):
    """Codes of similar images crowd a few buckets; the multi-index search splits such a
    block of queries into bounded sub-blocks and still returns exactly the brute-force pairs."""
    from segdeck.core.cluster import similarity

    rng = np.random.default_rng(3)
    base = rng.integers(0, 2**63, 20, dtype=np.uint64)

    def noisy(m):
        c = base[rng.integers(0, 20, m)].copy()
        for _ in range(5):
            c ^= np.uint64(1) << rng.integers(0, 64, m).astype(np.uint64)
        return c

    codes, alts = noisy(600), noisy(600 * 6).reshape(600, 6)
    brute = similarity._hamming_brute(codes, alts, 8, 512)
    monkeypatch.setattr(similarity, "MIH_BLOCK_CANDIDATES", 5000)  # many sub-blocks
    mih = similarity._hamming_mih(codes, alts, 8, 2048)
    assert len(brute[0]) > 1000
    for a, b in zip(brute, mih, strict=True):
        np.testing.assert_array_equal(a, b)
