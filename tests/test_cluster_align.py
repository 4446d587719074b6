"""Dense alignment verifier (core/cluster/align.py): rotation, crop, scale, neighbours, flat images."""

from __future__ import annotations

import cv2
import numpy as np
import pytest
import skimage.data

from segdeck.core.cluster import align


@pytest.fixture(scope="module")
def camera() -> np.ndarray:
    return skimage.data.camera()


def _tile(img: np.ndarray, y: int, x: int, side: int = 112) -> np.ndarray:
    return np.ascontiguousarray(img[y:y + side, x:x + side])


def _rotate_black(g: np.ndarray, angle: float) -> np.ndarray:
    h, w = g.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), angle, 1.0)
    return cv2.warpAffine(g, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=0)


@pytest.mark.parametrize("angle", [8.0, -8.0])
def test_rotated_copy_with_black_corners_scores_high_and_angle_recovered(camera, angle):
    a = _tile(camera, 180, 200)
    b = _rotate_black(a, angle)
    r = align.align(a, b)
    assert r.reason == ""
    assert r.ncc > 0.95 and r.score > 0.75
    assert abs(r.angle - angle) < 1.5  # cv2.getRotationMatrix2D sense: b is a rotated by +angle
    assert abs(r.scale - 1.0) < 0.05
    assert abs(r.dx) < 1.5 and abs(r.dy) < 1.5


def test_black_corners_are_fill_not_content(camera):
    b = _rotate_black(_tile(camera, 120, 360), 8.0)  # a tile without dark content
    fill = align.fill_mask(b)
    assert fill[0, 0] and fill[-1, -1] and fill[0, -1] and fill[-1, 0]
    assert not fill[56, 56]
    assert 0.02 < fill.mean() < 0.15  # four small triangles


def test_dark_object_at_a_corner_is_content_not_fill(camera):
    g = _tile(camera, 120, 360).copy()
    yy, xx = np.mgrid[0:112, 0:112]
    g[np.hypot(yy, xx) < 40] = 5  # a dark round object in the corner: not a straight cut
    assert not align.fill_mask(g).any()
    r = _rotate_black(g, 8.0)  # its rotated copy: the three other corners are fill
    fill = align.fill_mask(r)
    assert fill[-1, -1] and fill[0, -1] and fill[-1, 0]


def test_crop_of_12_percent_per_side_scores_high_scale_and_shift(camera):
    a = _tile(camera, 180, 200)
    cut = round(0.12 * 112)
    b = a[cut:112 - cut, cut:112 - cut]
    r = align.align(a, b)
    assert r.ncc > 0.95 and r.score > 0.75
    assert abs(r.scale - 1.0) < 0.05  # same pixels: the crop does not zoom
    assert abs(r.angle) < 1.5
    # asymmetric crop: a's centre (55.5, 55.5) lies at (35.5, 45.5) in b, whose centre is (43, 43)
    c = a[10:97, 20:107]
    r = align.align(a, c)
    assert r.ncc > 0.95 and r.score > 0.75
    assert abs(r.dx - (-7.5)) < 1.5 and abs(r.dy - 2.5) < 1.5


def test_crop_resized_back_gives_the_zoom(camera):
    a = _tile(camera, 180, 200)
    b = cv2.resize(a[14:98, 14:98], (112, 112), interpolation=cv2.INTER_CUBIC)
    r = align.align(a, b)
    assert r.ncc > 0.95 and r.score > 0.75
    assert abs(r.scale / (112 / 84) - 1.0) < 0.05
    r = align.align(b, a)  # the other way round: the inverse zoom
    assert abs(r.scale / (84 / 112) - 1.0) < 0.05


def test_neighbouring_tile_scores_low(camera):
    a = _tile(camera, 180, 200)
    for y, x in ((180, 312), (292, 200), (68, 200)):
        r = align.align(a, _tile(camera, y, x))
        assert r.score < 0.45 and r.peak < 0.3, (y, x, r)


def test_constant_images_score_zero_with_a_reason(camera):
    flat = np.full((60, 80), 128, np.uint8)
    r = align.align(flat, _tile(camera, 180, 200))
    assert r.score == 0.0 and r.reason == "flat"
    r = align.align(flat, np.zeros((5, 300), np.uint8))
    assert r.score == 0.0 and r.reason == "flat"
    r = align.align(np.zeros((1, 1), np.uint8), np.zeros((1, 1), np.uint8))
    assert r.score == 0.0 and r.reason == "flat"


def test_batched_equals_single_and_bad_input(camera):
    a = _tile(camera, 180, 200)
    imgs = [a, _rotate_black(a, 5.0), _tile(camera, 180, 312), a[10:100, 5:90]]
    preps = [align.prepare(g) for g in imgs]
    i, j = np.array([0, 0, 0, 1]), np.array([1, 2, 3, 3])
    r = align.align_pairs(preps, i, j)
    for t in range(len(i)):
        one = align.align(imgs[i[t]], imgs[j[t]])
        assert r["score"][t] == pytest.approx(one.score, abs=1e-4)
        assert r["angle"][t] == pytest.approx(one.angle, abs=1e-4)
    assert r["score"][1] < 0.45 < 0.75 < min(r["score"][0], r["score"][2], r["score"][3])
    r2 = align.align_pairs(preps, i, j, candidates=2)  # the best of two peaks: never worse
    assert np.all(r2["score"] >= r["score"] - 1e-6)
    with pytest.raises(ValueError):
        align.align_pairs(preps, np.array([0, 1]), np.array([1]))
    with pytest.raises(ValueError):
        align.prepare(np.zeros((0, 5), np.uint8))
    with pytest.raises(ValueError):
        align.prepare(a, side=8)
    with pytest.raises(ValueError):  # pairs of images prepared at different sides
        align.align_pairs([preps[0], align.prepare(a, side=32)], np.array([0]), np.array([1]))


def test_pair_aligner_prepares_once_and_mirrors(camera):
    a = _tile(camera, 180, 200)
    imgs = [a, np.ascontiguousarray(a[:, ::-1]), _tile(camera, 180, 312)]
    calls = []

    def gray(k):
        calls.append(k)
        return imgs[k]

    aligner = align.PairAligner(gray)
    r = aligner([0, 0, 0], [1, 1, 2], mirrored=[True, False, False])
    assert r["score"][0] > 0.9  # a and its mirror image, aligned as (a, mirror of mirror)
    assert r["score"][1] < 0.6  # the mirror image as it is: not a copy
    assert r["score"][2] < 0.45
    r2 = aligner([0], [1], mirrored=[True])
    assert r2["score"][0] == pytest.approx(r["score"][0], abs=1e-4)
    assert sorted(calls) == [0, 1, 1, 2]  # (0), (1, mirrored), (1), (2): each once
    with pytest.raises(ValueError):
        aligner([0, 1], [1], mirrored=[True])


def test_pair_aligner_threads_give_the_same_result(camera):
    tiles = [_tile(camera, y, x) for y in (100, 180, 260) for x in (120, 200, 280)]
    imgs = tiles + [_rotate_black(t, 6.0) for t in tiles]
    rng = np.random.default_rng(0)
    i = np.concatenate([rng.integers(0, len(imgs), 600), np.arange(9)])  # the last 9: tile, its rotated copy
    j = np.concatenate([rng.integers(0, len(imgs), 600), np.arange(9) + 9])
    m = np.concatenate([rng.random(600) < 0.3, np.zeros(9, bool)])
    one = align.PairAligner(lambda k: imgs[k])(i, j, mirrored=m)
    two = align.PairAligner(lambda k: imgs[k])(i, j, mirrored=m, workers=2)
    for key in ("score", "angle", "dx", "overlap"):
        np.testing.assert_allclose(two[key], one[key], atol=1e-4)  # float32 FFTs: batch-size rounding
    assert np.all(one["score"][-9:] > 0.75)


def test_align_pairs_in_chunks_equals_one_batch(camera, monkeypatch):
    imgs = [_tile(camera, y, x) for y in (100, 180) for x in (120, 200, 280)]
    preps = align.prepare_many(imgs)
    i, j = np.repeat(np.arange(6), 6), np.tile(np.arange(6), 6)
    whole = align.align_pairs(preps, i, j)
    monkeypatch.setattr(align, "PAIR_CHUNK", 5)
    chunked = align.align_pairs(preps, i, j)
    for key in ("score", "angle", "scale", "dx", "dy", "overlap"):
        np.testing.assert_allclose(chunked[key], whole[key], atol=1e-4)  # float32 FFTs: batch-size rounding
    assert np.all(whole["score"][i == j] > 0.95)  # each image with itself


def test_spectrum_gate_skips_disagreeing_spectra_only(camera):
    a = _tile(camera, 180, 200)
    imgs = [a, _rotate_black(a, 8.0), _tile(camera, 180, 312), _tile(camera, 292, 200), _tile(camera, 68, 200)]
    preps = align.prepare_many(imgs)
    i, j = np.zeros(4, int), np.arange(1, 5)
    off = align.align_pairs(preps, i, j)
    on = align.align_pairs(preps, i, j, min_spectrum_peak=0.2)
    assert on["reason"][0] == "" and on["score"][0] == pytest.approx(off["score"][0], abs=1e-4)
    assert list(on["reason"][1:]) == ["spectrum"] * 3 and np.all(on["score"][1:] == 0.0)
    assert set(off["reason"]) == {""}


def test_score_does_not_depend_on_what_the_process_imported():
    """The FFT library was scipy's when something had imported it, else numpy's: one pair
    could score differently in two processes. Both now give the same bits."""
    import subprocess
    import sys

    code = ("import numpy as np, cv2, skimage.data\n"
            "{pre}\n"
            "from segdeck.core.cluster import align\n"
            "g = cv2.resize(skimage.data.camera(), (160, 160))\n"
            "m = cv2.getRotationMatrix2D((80, 80), 7.0, 1.0)\n"
            "r = cv2.warpAffine(g, m, (160, 160))\n"
            "a = align.align(g, r)\n"
            "print(repr(float(a.score)), repr(float(a.angle)))\n")
    outs = [subprocess.run([sys.executable, "-c", code.format(pre=pre)], capture_output=True, text=True,
                           timeout=120, check=True).stdout for pre in ("import scipy.fft", "pass")]
    assert outs[0] == outs[1] and outs[0].strip()
