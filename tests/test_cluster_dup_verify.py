"""dup's verification: low-contrast copies are verified by ORB after histogram
equalisation, a second ORB pass on smaller blurred images, window-matched crops skip the
unaligned pre-filter, and neighbouring tiles of the same photo still stay apart."""

from __future__ import annotations

import numpy as np
from skimage import data
from test_cluster_dup_rotations import _cluster, _rotate

from segdeck.core.cluster import dedup, features


def _low_contrast_tiles() -> list[np.ndarray]:
    """Six neighbouring 112-px tiles of the camera photo, contrast squeezed to 24 grey levels."""
    photo = data.camera().astype(np.float32)
    photo = np.round(100 + photo * (24 / 255)).astype(np.uint8)
    return [np.ascontiguousarray(photo[100 + r * 112:100 + (r + 1) * 112, 60 + c * 112:60 + (c + 1) * 112])
            for r in range(2) for c in range(3)]


def test_equalised_orb_verifies_low_contrast_copies_and_keeps_neighbours_apart(monkeypatch):
    import cv2

    tiles = _low_contrast_tiles()
    grays, truth = [], []
    for t, tile in enumerate(tiles):
        h, w = tile.shape
        crop = np.ascontiguousarray(tile[round(0.1 * h):h - round(0.06 * h), round(0.08 * w):w - round(0.12 * w)])
        grays += [tile, _rotate(tile, 6.0, cv2.BORDER_CONSTANT), crop]
        truth += [t, t, t]
    plain = [len(dedup.orb_keys(g, 128, 200, 3, equalize=False)[0]) for g in grays]
    equal = [len(dedup.orb_keys(g, 128, 200, 3, equalize=True)[0]) for g in grays]
    assert np.median(equal) > 2 * np.median(plain)  # the fixed FAST threshold starves on low contrast
    labels, _, dec = _cluster(grays, dense_min_cc=1.01)  # ORB only
    found = sum(labels[3 * t] == labels[3 * t + k] for t in range(len(tiles)) for k in (1, 2))
    monkeypatch.setattr(dedup, "EQUALIZE", False)
    off, _, _ = _cluster(grays, dense_min_cc=1.01)
    found_off = sum(off[3 * t] == off[3 * t + k] for t in range(len(tiles)) for k in (1, 2))
    assert found >= 10 and found > found_off, (found, found_off)
    # no two tiles share a cluster
    for a in range(len(grays)):
        for b in range(len(grays)):
            if truth[a] != truth[b]:
                assert labels[a] != labels[b]


def _edited(tile: np.ndarray, k: int) -> np.ndarray:
    """A rotated (3-7 degrees, replicated border), perspective-warped and blurred copy."""
    import cv2

    h, w = tile.shape
    g = _rotate(tile, 3.0 + k % 5, cv2.BORDER_REPLICATE)
    src = np.float32([[0, 0], [w, 0], [w, h], [0, h]])
    jitter = np.float32([[4, -3], [-5, 2], [3, 5], [-2, -4]]) * (1 + k % 3) / 2
    g = cv2.warpPerspective(g, cv2.getPerspectiveTransform(src, src + jitter), (w, h), borderMode=cv2.BORDER_REFLECT)
    return cv2.GaussianBlur(g, (0, 0), 1.6 + 0.2 * (k % 3))


def test_second_orb_pass_on_smaller_blurred_images_finds_blurred_warped_copies(monkeypatch):

    photo = data.camera()
    tiles = [np.ascontiguousarray(photo[r:r + 112, c:c + 112]) for r in (60, 172, 284) for c in (40, 152, 264)]
    grays, truth = [], []
    for t, tile in enumerate(tiles):
        grays += [tile, _edited(tile, t)]
        truth += [t, t]
    labels, stats, dec = _cluster(grays)
    found = sum(labels[2 * t] == labels[2 * t + 1] for t in range(len(tiles)))
    monkeypatch.setattr(dedup, "RETRY_SIDE", 0)  # first pass only
    off, stats_off, _ = _cluster(grays)
    found_off = sum(off[2 * t] == off[2 * t + 1] for t in range(len(tiles)))
    assert stats["retried"] > 0 and stats_off["retried"] == 0
    assert found > found_off, (found, found_off)
    for a in range(len(grays)):
        for b in range(len(grays)):
            if truth[a] != truth[b]:
                assert labels[a] != labels[b]


def test_small_average_linkage_cuts_like_scipys_average_linkage():
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import squareform

    from segdeck.core.cluster import graph

    rng = np.random.default_rng(3)
    for t in range(200):
        s = int(rng.integers(3, 25))
        m = 0.9 + 0.1 * rng.random((s, s))  # "missing" pairs, tie-free
        k = int(rng.integers(1, s * s // 2))
        a, b = rng.integers(0, s, k), rng.integers(0, s, k)
        m[a, b] = rng.random(k) * (0.3 if t % 2 else 0.9)
        m = np.minimum(m, m.T)
        np.fill_diagonal(m, 0.0)
        ours = graph.small_average_linkage(m, 0.75)
        ref = graph.cut_tree_at(linkage(squareform(m, checks=False), method="average"), 0.75)
        same = ours[:, None] == ours[None, :]
        assert np.array_equal(same, ref[:, None] == ref[None, :]), t


def test_crop_found_by_whole_hash_and_window_skips_the_unaligned_prefilter():
    photo = data.camera()
    grays = []
    for r, c in ((60, 40), (60, 200), (250, 120)):
        tile = np.ascontiguousarray(photo[r:r + 112, c:c + 112])
        grays += [tile, np.ascontiguousarray(tile[13:-11, 12:-14])]  # about 11 % off each side
    params = dedup.DupParams(min_ncc=0.9, sure_radius=0, radius=24)
    windows = np.stack([features.window_codes(g) for g in grays])
    dec = dedup.decide_pairs(features.phash_codes_fast(grays), params, gray=lambda k: grays[k],
                             thumbs=features.thumbnails(grays), windows=windows)
    pairs = {(int(a), int(b)): t for t, (a, b) in enumerate(zip(dec.i, dec.j, strict=True))}
    whole_found = [pairs[(2 * k, 2 * k + 1)] for k in range(3) if (2 * k, 2 * k + 1) in pairs]
    whole_found = [t for t in whole_found if dec.route[t] == 0]
    assert whole_found  # some crop is a whole-hash candidate too
    ncc = dedup.thumb_ncc(features.thumbnails(grays), dec.i[whole_found], dec.j[whole_found], dec.mirrored[whole_found])
    assert (ncc < 0.9).any()  # the unaligned thumbnails alone would have dropped it
    for t in whole_found:
        assert dec.window_ok[t] and dec.reason[t] != "prefilter"


def test_look_alike_candidates_find_cropped_and_rotated_copies_and_keep_neighbours_apart():
    import cv2

    photo = data.camera()
    tiles = [np.ascontiguousarray(photo[r:r + 112, c:c + 112]) for r in (60, 172, 284) for c in (40, 152, 264)]
    grays, truth = [], []
    for t, tile in enumerate(tiles):
        rot = _rotate(tile, (7.0 + t % 3) * (1 if t % 2 else -1), cv2.BORDER_CONSTANT)
        grays += [tile, np.ascontiguousarray(rot[12:-9, 8:-13])]  # rotated, then 8-12 % cut per side
        truth += [t, t]
    labels, stats, dec = _cluster(grays)
    off, stats_off, _ = _cluster(grays, neighbour_k=0)
    found = sum(labels[2 * t] == labels[2 * t + 1] for t in range(len(tiles)))
    found_off = sum(off[2 * t] == off[2 * t + 1] for t in range(len(tiles)))
    assert stats["neighbour_candidates"] > 0 and stats_off["neighbour_candidates"] == 0
    assert found > found_off, (found, found_off)
    assert (dec.route[dec.accepted] == 3).any()
    for a in range(len(grays)):
        for b in range(len(grays)):
            if truth[a] != truth[b]:
                assert labels[a] != labels[b]


def test_optional_alignment_pass_finds_copies_orb_rejects_and_keeps_neighbours_apart(monkeypatch):
    """``align_min_score``: pairs both ORB passes reject are aligned by Fourier-Mellin
    (core/cluster/align.py); off by default."""
    import cv2

    photo = data.camera()
    tiles = [np.ascontiguousarray(photo[r:r + 112, c:c + 112]) for r in (60, 172, 284) for c in (40, 152, 264)]
    grays, truth = [], []
    for t, tile in enumerate(tiles):
        grays += [tile, cv2.GaussianBlur(_edited(tile, t), (0, 0), 1.2)]  # rotated, warped, blurred twice
        truth += [t, t]
    monkeypatch.setattr(dedup, "RETRY_SIDE", 0)  # ORB's first pass only, so that ORB leaves copies behind
    off, stats_off, _ = _cluster(grays)
    on, stats_on, dec = _cluster(grays, align_min_score=0.75)
    found_off = sum(off[2 * t] == off[2 * t + 1] for t in range(len(tiles)))
    found_on = sum(on[2 * t] == on[2 * t + 1] for t in range(len(tiles)))
    assert stats_off["aligned"] == 0 and stats_on["aligned"] > 0
    assert found_on > found_off, (found_on, found_off)
    assert dedup.DupParams().align_min_score > 1.0  # off by default
    for a in range(len(grays)):
        for b in range(len(grays)):
            if truth[a] != truth[b]:
                assert on[a] != on[b]
