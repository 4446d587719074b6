"""Every over-segmentation method on a small synthetic image with known regions."""

from __future__ import annotations

import numpy as np
import pytest

from segdeck.core import oversegment
from segdeck.core.oversegment import _labels
from segdeck.core.oversegment._resize import run_at_working_size, upscale_labels, working_shape

# four vertical stripes, alternating dark / bright (so the two-phase Chan-Vese split
# also falls on stripe boundaries), each a distinct colour
STRIPES = [(120, 20, 20), (120, 235, 120), (20, 20, 140), (250, 250, 60)]


def stripes_image(h=96, stripe_w=48, noise=4.0, seed=0):
    """(h, 4*stripe_w, 3) uint8 RGB with mild Gaussian noise, and its true labels 1..4."""
    w = stripe_w * len(STRIPES)
    img = np.zeros((h, w, 3), np.float64)
    truth = np.zeros((h, w), np.int32)
    for i, colour in enumerate(STRIPES):
        img[:, i * stripe_w : (i + 1) * stripe_w] = colour
        truth[:, i * stripe_w : (i + 1) * stripe_w] = i + 1
    img += np.random.default_rng(seed).normal(0, noise, img.shape)
    return np.clip(np.round(img), 0, 255).astype(np.uint8), truth


def purity(labels, truth):
    """Per segment, the share of its pixels in its majority true region; and the
    set of true regions that are the majority of some segment."""
    out, covered = {}, set()
    for k in np.unique(labels):
        if k == 0:
            continue
        counts = np.bincount(truth[labels == k], minlength=truth.max() + 1)
        out[int(k)] = counts.max() / counts.sum()
        covered.add(int(counts.argmax()))
    return out, covered


def check_labels(labels, shape):
    assert labels.shape == shape and labels.dtype == np.int32
    present = np.unique(labels)
    nonzero = present[present > 0]
    assert nonzero.size >= 1
    np.testing.assert_array_equal(nonzero, np.arange(1, nonzero.size + 1))  # contiguous 1..N
    return int(nonzero.size)


@pytest.mark.parametrize("method", oversegment.method_names())
def test_method_respects_region_boundaries(method):
    img, truth = stripes_image()
    labels = oversegment.segment(img, method, max_side=None)
    n = check_labels(labels, truth.shape)
    assert 4 <= n <= 600, n
    pur, covered = purity(labels, truth)
    assert covered == {1, 2, 3, 4}
    assert min(pur.values()) >= 0.9, {k: v for k, v in pur.items() if v < 0.9}
    # pixel-weighted purity
    sizes = {k: (labels == k).sum() for k in pur}
    weighted = sum(pur[k] * sizes[k] for k in pur) / sum(sizes.values())
    assert weighted >= 0.98


@pytest.mark.parametrize("method", ["slico", "felzenszwalb", "edge", "kmeans"])
def test_working_resolution_maps_back(method):
    img, truth = stripes_image(h=192, stripe_w=96, noise=4.0)  # 192 x 384
    labels = oversegment.segment(img, method, max_side=96)  # works at 48 x 96
    check_labels(labels, truth.shape)
    pur, covered = purity(labels, truth)
    assert covered == {1, 2, 3, 4}
    assert min(pur.values()) >= 0.9


def test_edges_survive_upscaling():
    img, truth = stripes_image(h=192, stripe_w=96, noise=0.0)
    labels = oversegment.segment(img, "edge", {"blur": 0, "edge_width": 1, "min_size": 0}, max_side=96)
    edge = labels == 0
    assert edge.any()
    cols = np.flatnonzero(edge.any(axis=0))
    # edge pixels only near the three stripe boundaries (x = 96, 192, 288), within 2 working px
    assert all(min(abs(c - b) for b in (96, 192, 288)) <= 2 * 4 for c in cols)
    # each boundary is crossed by an edge band in every row
    for b in (96, 192, 288):
        band = edge[:, b - 8 : b + 8]
        assert band.any(axis=1).all()


def test_run_at_working_size_nearest_and_shape():
    img = np.zeros((300, 400, 3), np.uint8)
    seen = {}

    def fn(small):
        seen["shape"] = small.shape
        lab = np.ones(small.shape[:2], np.int32)
        lab[:, small.shape[1] // 2 :] = 5  # non-contiguous labels get renumbered
        lab[:, small.shape[1] // 2] = 0  # a one-pixel edge column
        return lab

    out = run_at_working_size(fn, img, 100)
    assert seen["shape"] == (75, 100, 3)
    assert out.shape == (300, 400) and set(np.unique(out)) == {0, 1, 2}
    edge_cols = np.flatnonzero((out == 0).all(axis=0))
    assert len(edge_cols) == 4  # one working pixel = 4 full-resolution pixels
    assert working_shape((300, 400, 3), None) == (300, 400)
    assert working_shape((10, 40000), 1000) == (64, 1000)  # short side stretched to MIN_SIDE
    assert working_shape((3000, 4000), 1024) == (768, 1024)
    with pytest.raises(RuntimeError):
        run_at_working_size(lambda s: np.zeros((3, 3), np.int32), img, 100)


def test_upscale_labels_keeps_every_label():
    small = np.arange(12, dtype=np.int32).reshape(3, 4)
    big = upscale_labels(small, (7, 9))
    assert set(np.unique(big)) == set(range(12))


def test_label_helpers():
    lab = np.array([[0, 7, 7], [3, 3, 0]])
    np.testing.assert_array_equal(_labels.relabel(lab), [[0, 2, 2], [1, 1, 0]])
    classes = np.array([[1, 1, 2, 1], [1, 2, 2, 1]])
    comp = _labels.components(classes)
    assert comp.max() == 3  # the right-hand 1s are a separate piece
    merged = _labels.merge_small(np.array([[1, 1, 1, 2], [1, 1, 1, 1]]), min_size=2)
    assert merged.max() == 1 and (merged == 1).all()
    # edges (0) never grow: the 2-pixel segment left of the edge joins the one beyond it
    with_edge = np.array([[1, 0, 2, 2], [1, 0, 2, 2]])
    np.testing.assert_array_equal(_labels.merge_small(with_edge, 3), [[1, 0, 1, 1], [1, 0, 1, 1]])


def test_registry_contract():
    for method in oversegment.method_names():
        model = oversegment.params_model(method)
        params = model()
        for name, info in model.model_fields.items():
            assert info.description, f"{method}.{name} has no description"
        assert params.model_dump()
    with pytest.raises(ValueError, match="unknown over-segmentation method"):
        oversegment.segment(np.zeros((8, 8, 3), np.uint8), "nope")
    with pytest.raises(ValueError):
        oversegment.segment(np.zeros((8, 8), np.uint8), "slic")
    with pytest.raises(ValueError):
        oversegment.segment(np.zeros((8, 8, 3), np.uint8), "felzenszwalb", {"scale": -1})


def test_kmeans_is_reproducible():
    img, _ = stripes_image(noise=10.0)
    a = oversegment.segment(img, "kmeans", {"k": 4, "seed": 3}, max_side=None)
    b = oversegment.segment(img, "kmeans", {"k": 4, "seed": 3}, max_side=None)
    np.testing.assert_array_equal(a, b)


TINY_SCRIPT = """
import numpy as np
from segdeck.core import oversegment
rng = np.random.default_rng(0)
for shape in [(1, 1), (2, 3), (1, 500), (16, 16), (3, 40), (40, 7)]:
    for const in (False, True):
        img = rng.integers(0, 256, shape + (3,), dtype=np.uint8)
        if const:
            img[:] = 77
        for method in oversegment.method_names():
            labels = oversegment.segment(img, method)
            assert labels.shape == shape and labels.min() >= 0 and labels.max() >= 1, (shape, method)
print("ok")
"""


@pytest.mark.timeout(240)
def test_tiny_and_flat_images_do_not_crash_the_process():
    # OpenCV's superpixel code segfaults or hangs on images a few pixels across; run
    # in a child process so that a crash is a test failure, not a dead test session
    import subprocess
    import sys

    res = subprocess.run([sys.executable, "-c", TINY_SCRIPT], capture_output=True, text=True, timeout=200)
    assert res.returncode == 0 and res.stdout.strip() == "ok", (res.returncode, res.stderr[-2000:])
