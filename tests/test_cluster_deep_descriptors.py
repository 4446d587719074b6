"""Deep clustering defaults: texture descriptors, the modularity score, and the default
job on tiles of synthetic "photos" that differ only in texture."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from segdeck.core.cluster import deep
from segdeck.core.cluster.job import ClusterParams
from segdeck.core.cluster.output import REPORT_NAME
from tests.test_cluster_job import _run


def _photo(kind: str, side: int, rng) -> np.ndarray:
    """A synthetic photo: a grey field of the given texture, equalised to a uniform
    distribution and mapped onto one two-colour ramp, so every kind has the same colour
    histogram and only the texture tells them apart."""
    import cv2

    if kind == "blobs":
        f = cv2.GaussianBlur(rng.standard_normal((side, side)).astype(np.float32), (0, 0), 6)
    elif kind == "stripes":
        yy, xx = np.mgrid[0:side, 0:side].astype(np.float32)
        f = np.sin((xx + 0.3 * yy) * 2 * np.pi / 7 + 0.3 * rng.standard_normal((side, side)).astype(np.float32))
    else:  # fine grain
        f = cv2.GaussianBlur(rng.standard_normal((side, side)).astype(np.float32), (0, 0), 0.7)
    rank = np.argsort(np.argsort(f.ravel())).reshape(f.shape) / f.size
    lo, hi = np.array([40, 60, 120], np.float32), np.array([200, 180, 90], np.float32)
    return (lo + rank[..., None] * (hi - lo)).astype(np.uint8)


def _texture_tiles(seed: int = 1, side: int = 192, tile: int = 48):
    """16 tiles of each of three photos (blobs, stripes, grain); (images, photo index)."""
    rng = np.random.default_rng(seed)
    images, photo = [], []
    for g, kind in enumerate(("blobs", "stripes", "grain")):
        p = _photo(kind, side, rng)
        for r in range(side // tile):
            for c in range(side // tile):
                images.append(p[r * tile:(r + 1) * tile, c * tile:(c + 1) * tile].copy())
                photo.append(g)
    return images, photo


def _blocks(v: np.ndarray) -> dict[str, np.ndarray]:
    return dict(zip([n for n, _ in deep.TEXTURE_BLOCKS], deep.texture_blocks(v[None]), strict=True))


def test_texture_descriptors_shape_dtype_and_invariances():
    rng = np.random.default_rng(0)
    img = rng.integers(20, 200, (64, 64, 3), dtype=np.uint8)
    v = deep.texture_descriptors(img)
    assert v.shape == (sum(n for _, n in deep.TEXTURE_BLOCKS),) == (144,) and v.dtype == np.float32
    assert np.isfinite(v).all()
    b = _blocks(v)
    # histograms: square roots of distributions (unit norm per LBP scale, per SPAM part)
    lbp = np.split(b["lbp"][0], np.cumsum([p + 2 for p, _ in deep.LBP_SCALES])[:-1])
    assert all(abs(float((h * h).sum()) - 1) < 1e-5 for h in lbp)
    assert abs(float((b["spam"][0][:49] ** 2).sum()) - 1) < 1e-5
    # a grey-level offset changes no block (LBP: up to ties flipped by rounding at its
    # interpolated samples)
    grey = np.repeat(rng.integers(20, 200, (64, 64, 1), dtype=np.uint8), 3, axis=2)
    b0, b1 = _blocks(deep.texture_descriptors(grey)), _blocks(deep.texture_descriptors(grey + 30))
    for name in ("spectrum", "gabor", "spam"):
        assert np.allclose(b0[name], b1[name], atol=1e-4), name
    assert np.abs(b0["lbp"] - b1["lbp"]).max() < 0.06
    # a horizontal flip: the radial spectrum does not change
    bf = _blocks(deep.texture_descriptors(grey[:, ::-1].copy()))
    assert np.allclose(b0["spectrum"], bf["spectrum"], atol=1e-4)
    # ... but they tell a smooth field from fine grain
    smooth = np.repeat(np.tile(np.linspace(0, 255, 64, dtype=np.uint8), (64, 1))[..., None], 3, axis=2)
    bs = _blocks(deep.texture_descriptors(smooth))
    assert np.abs(bs["spectrum"] - b0["spectrum"]).max() > 0.5 and np.abs(bs["lbp"] - b0["lbp"]).max() > 0.2
    # tiny images do not break it
    assert np.isfinite(deep.texture_descriptors(rng.integers(0, 255, (8, 9, 3), dtype=np.uint8))).all()


def test_combine_scales_each_texture_block_and_refuses_nothing():
    rng = np.random.default_rng(1)
    col = rng.random((30, 192))
    tex = rng.normal(0, 1, (30, 144)) * np.repeat([100.0, 1e-3, 5.0, 0.1], [54, 10, 24, 56])
    x = deep.combine(None, col, 2.0, tex, 0.5)
    assert x.shape == (30, 192 + 144)
    sizes = [192] + [n for _, n in deep.TEXTURE_BLOCKS]
    parts = np.split(x, np.cumsum(sizes)[:-1], axis=1)
    norms = [np.sqrt((p ** 2).sum(axis=1).mean()) for p in parts]
    assert np.allclose(norms, [2.0, 0.5, 0.5, 0.5, 0.5])  # whatever each block's own scale
    assert deep.combine(rng.random((30, 8)), col, 2.0, tex, 0).shape == (30, 8 + 192)
    with pytest.raises(ValueError, match="nothing|no features"):
        deep.combine(None, col, 0, tex, 0)
    with pytest.raises(ValueError, match="nothing to cluster"):
        deep.DeepParams(features="descriptors", colour_weight=0, texture_weight=0)
    with pytest.raises(ValueError, match="nothing to cluster"):
        deep.DeepParams(embedding_weight=0, colour_weight=0, texture_weight=0)
    assert deep.DeepParams(colour_weight=0, texture_weight=0).features == "efficientnet"
    assert deep.DeepParams(features="autoencoder", colour_weight=0, texture_weight=0).features == "autoencoder"


def test_cli_refuses_descriptors_without_weights_in_one_line(tmp_path, capsys):
    from segdeck.cli import main

    src = tmp_path / "p"
    src.mkdir()
    Image.fromarray(np.zeros((20, 20, 3), np.uint8)).save(src / "a.png")
    rc = main(["run", "cluster", str(src), "--method", "deep", "--deep.features", "descriptors", "--deep.colour-weight", "0",
               "--deep.texture-weight", "0", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert rc == 2 and "leave nothing to cluster" in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_modularity_values():
    import networkx as nx

    # two 4-cliques joined by one edge
    g = nx.disjoint_union(nx.complete_graph(4), nx.complete_graph(4))
    g.add_edge(0, 4)
    a = nx.to_scipy_sparse_array(g)
    halves = np.array([0] * 4 + [1] * 4)
    expected = nx.community.modularity(g, [set(range(4)), set(range(4, 8))])
    assert deep.modularity(a, halves) == pytest.approx(expected) and expected > 0.4
    assert deep.modularity(a, np.zeros(8, int)) == pytest.approx(0.0)
    # noise points are clusters of one: their edges count as cut
    noisy = halves.copy()
    noisy[[1, 5]] = -1
    singles = [set(range(4)) - {1}, set(range(4, 8)) - {5}, {1}, {5}]
    assert deep.modularity(a, noisy) == pytest.approx(nx.community.modularity(g, singles))
    assert deep.modularity(a, noisy) < deep.modularity(a, halves)
    assert deep.modularity(np.zeros((3, 3)), np.array([0, 1, 1])) == 0.0
    # the kNN graph is symmetric, weights in (0, 1], without self-loops, >= 4 edges a node
    x = np.random.default_rng(2).normal(size=(20, 3))
    k = deep.knn_graph(x, 4)
    assert (abs(k - k.T) > 1e-12).nnz == 0 and k.diagonal().sum() == 0
    assert k.data.min() > 0 and k.data.max() <= 1.0 and (np.diff(k.indptr) >= 4).all()
    # self-tuning weights: an edge to a far neighbour weighs little. Three tight triples
    # far apart, 4 neighbours each: every node has an edge into another triple, yet the
    # triples are the best partition by far (on the 0/1 graph they are not)
    rng = np.random.default_rng(5)
    x = np.repeat(np.array([[0.0, 0], [10, 0], [0, 10]]), 3, axis=0) + rng.normal(0, 0.3, (9, 2))
    triples = np.repeat(np.arange(3), 3)
    g = deep.knn_graph(x, 4)
    inside = sum(g[i, j] for i in range(9) for j in range(9) if triples[i] == triples[j])
    assert inside / g.sum() > 0.95
    assert deep.modularity(g, triples) > deep.modularity(g, np.array([0, 0, 0, 1, 1, 1, 1, 1, 1]))
    # a duplicate image (distance 0) does not break the weights
    dup = np.vstack([x, x[:1]])
    assert np.isfinite(deep.knn_graph(dup, 4).data).all()


@pytest.mark.parametrize("centers,dims", [(3, 5), (5, 8)])
def test_modularity_picks_the_number_of_separated_blobs(centers, dims):
    from sklearn.datasets import make_blobs
    from sklearn.metrics import adjusted_rand_score

    x, y = make_blobs(n_samples=30 * centers, centers=centers, n_features=dims, cluster_std=0.5, random_state=4)
    labels, cands, best = deep.select_model(x)
    assert best.n_clusters == centers and adjusted_rand_score(y, labels) > 0.95
    assert best.modularity == max(c.modularity for c in cands if c.valid)
    # the same points under a wrong k score lower
    (k2,) = [c for c in cands if c.algorithm == "kmeans" and c.n_clusters == 2]
    assert k2.modularity < best.modularity


def test_descriptors_job_tells_photos_apart_by_texture(tmp_path):
    """Three synthetic photos with one colour distribution and different textures, cut
    into 16 tiles each: the deep job on the descriptors alone (modularity) finds the
    three photos; the colour histogram alone cannot."""
    from sklearn.metrics import adjusted_rand_score

    images, photo = _texture_tiles()
    src = tmp_path / "tiles"
    src.mkdir()
    truth = {}
    for k in np.random.default_rng(3).permutation(len(images)):
        name = f"t{k:03d}.png"
        Image.fromarray(images[k]).save(src / name)
        truth[name] = photo[k]
    params = ClusterParams(method="deep", output="symlink", deep={"features": "descriptors"})
    job_dir, summary = _run(src, params)
    assert summary.status == "done"
    assert not (job_dir / deep.AE_NAME).exists()  # no model to train
    report = json.loads((job_dir / REPORT_NAME).read_text())
    assert report["deep"]["features"] == "descriptors" and report["deep"]["metric"] == "modularity"
    assert all(c["modularity"] is not None for c in report["deep"]["selections"][0]["candidates"] if c["valid"])
    names = sorted(truth)
    pred = [report["files"][n] if report["files"][n] != "outliers" else f"single-{n}" for n in names]
    assert adjusted_rand_score([truth[n] for n in names], pred) >= 0.9
    assert len({p for p in pred if not p.startswith("single-")}) == 3
    # the same images by colour alone: no texture, no photos
    col = np.stack([deep.colour_histogram(im) for im in images])
    labels, _, _ = deep.select_model(deep.combine(None, col, 2.0))
    assert adjusted_rand_score(photo, labels) < 0.6
    # a re-run of the finished job gives the same clusters (features from the cache)
    (job_dir / REPORT_NAME).unlink()
    job_dir2, again = _run(src, params)
    assert job_dir2 == job_dir and again.status == "done"
    assert json.loads((job_dir / REPORT_NAME).read_text())["files"] == report["files"]


def test_descriptors_with_a_threshold_link_copies(tmp_path):
    """``--threshold`` with ``features=descriptors`` compares the descriptors centred over
    the folder: copies link at the default threshold, tiles of different photos do not."""
    images, _ = _texture_tiles(seed=2, side=96)
    src = tmp_path / "p"
    src.mkdir()
    for k in (0, 4, 8):  # one tile of each photo, and a flipped copy of each
        Image.fromarray(images[k]).save(src / f"{k}.png")
        Image.fromarray(images[k][:, ::-1].copy()).save(src / f"{k}_flip.png")
    job_dir, summary = _run(src, ClusterParams(method="deep", threshold=0.9, output="symlink",
                                               deep={"features": "descriptors"}))
    files = json.loads((job_dir / REPORT_NAME).read_text())["files"]
    for k in (0, 4, 8):
        assert files[f"{k}.png"] == files[f"{k}_flip.png"] != "outliers"
    assert len({files[f"{k}.png"] for k in (0, 4, 8)}) == 3
