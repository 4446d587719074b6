"""dup finds copies rotated on the same canvas (black corners) through centre hashes, and
low-texture copies ORB cannot verify through the dense check, without merging
neighbouring tiles of the same photo (the hard negatives)."""

from __future__ import annotations

import numpy as np
from skimage import data

from segdeck.core.cluster import dedup, features


def _rotate(g: np.ndarray, degrees: float, border: int) -> np.ndarray:
    import cv2

    h, w = g.shape
    m = cv2.getRotationMatrix2D((w / 2, h / 2), degrees, 1.0)
    return cv2.warpAffine(g, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=border, borderValue=0)


def _tiles(blur: float = 0.0) -> list[np.ndarray]:
    """Six neighbouring 128-px grayscale tiles of one photo (2 rows x 3 columns)."""
    import cv2

    photo = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2GRAY)
    if blur:
        photo = cv2.GaussianBlur(photo, (0, 0), blur)
    return [np.ascontiguousarray(photo[64 + r * 128:64 + (r + 1) * 128, 128 + c * 128:128 + (c + 1) * 128])
            for r in range(2) for c in range(3)]


def _cluster(grays, **kw):
    params = dedup.DupParams(**kw)
    decisions: list = []
    labels, stats = dedup.cluster_codes(
        features.phash_codes_fast(grays), params, gray=lambda k: grays[k], thumbs=features.thumbnails(grays),
        windows=np.stack([features.window_codes(g) for g in grays]),
        centres=np.stack([features.centre_codes(g) for g in grays]), decisions=decisions,
        centre_thumbs=features.thumbnails([features.centre_crop(g) for g in grays]))
    return labels, stats, decisions[0]


def _apart(labels, truth):
    return all(labels[a] != labels[b] for a in range(len(truth)) for b in range(len(truth)) if truth[a] != truth[b])


def test_rotated_copies_with_black_corners_found_and_tiles_kept_apart():
    import cv2

    tiles = _tiles()
    grays, truth = [], []
    for t, tile in enumerate(tiles):
        grays += [tile, _rotate(tile, (-1) ** t * (7 + t % 3), cv2.BORDER_CONSTANT)]
        truth += [t, t]
    labels, stats, dec = _cluster(grays)
    found = sum(labels[2 * t] == labels[2 * t + 1] for t in range(len(tiles)))
    assert found >= 5, labels  # at least 5 of the 6 rotated copies join their tile
    assert stats["centre_candidates"] > 0
    assert _apart(labels, truth)
    # the black corners move the whole-image hashes apart; the centre hashes stay close
    whole = features.phash_codes_fast(grays)[:, 0]
    centre = np.stack([features.centre_codes(g) for g in grays])[:, 0]
    from segdeck.core.cluster.similarity import popcount64

    d_whole = popcount64(whole[0::2] ^ whole[1::2]).mean()
    d_centre = popcount64(centre[0::2] ^ centre[1::2]).mean()
    assert d_centre < d_whole


def test_cropped_copy_found_and_neighbouring_tile_not():
    import cv2

    tiles = _tiles()
    grays, truth = [], []
    for t, tile in enumerate(tiles[3:]):
        h, w = tile.shape
        top, bottom, left, right = [(0.12, 0.04, 0.08, 0.14), (0.05, 0.15, 0.13, 0.03), (0.1, 0.1, 0.1, 0.1)][t]
        cut = tile[round(h * top):h - round(h * bottom), round(w * left):w - round(w * right)]
        grays += [tile, cv2.resize(cut, (112, 112), interpolation=cv2.INTER_AREA)]
        truth += [t, t]
    labels, _, _ = _cluster(grays)
    assert all(labels[2 * t] == labels[2 * t + 1] for t in range(3)), labels
    assert _apart(labels, truth)


def test_low_texture_copies_checked_densely_and_smooth_neighbours_kept_apart(monkeypatch):
    import cv2

    # without histogram equalisation ORB finds too few keypoints on these (with it, ORB
    # verifies them itself: tests/test_cluster_dup_verify.py); the dense check is the fallback
    monkeypatch.setattr(dedup, "EQUALIZE", False)

    tiles = _tiles(blur=5.0)  # smooth: too few ORB keypoints to verify
    grays, truth = [], []
    for t, tile in enumerate(tiles):
        grays += [tile, _rotate(tile, 3.0, cv2.BORDER_REPLICATE)]
        truth += [t, t]
    keys = [dedup.orb_keys(g, 128, 200, 3)[0] for g in grays]
    assert min(len(k) for k in keys) < dedup.DENSE_MAX_KEYS
    labels, stats, dec = _cluster(grays)
    off, _, _ = _cluster(grays, dense_min_cc=1.01)
    assert _apart(labels, truth)
    found = sum(labels[2 * t] == labels[2 * t + 1] for t in range(len(tiles)))
    assert found > sum(off[2 * t] == off[2 * t + 1] for t in range(len(tiles)))
    assert stats["dense"] > 0 and (dec.stage == "dense").any()


def test_dense_similarity_separates_a_shifted_copy_from_a_neighbour():
    tiles = _tiles(blur=5.0)
    a = tiles[0]
    shifted = np.roll(a, 2, axis=1)
    assert dedup.dense_similarity(a, shifted) > 0.97
    assert dedup.dense_similarity(a, tiles[1]) < dedup.dense_similarity(a, shifted)
    assert dedup.dense_similarity(a, np.full_like(a, 128)) == 0.0


def test_thumbnail_correlation_in_chunks_equals_all_at_once():
    rng = np.random.default_rng(1)
    thumbs = rng.integers(0, 256, (30, 16, 16)).astype(np.uint8)
    a, b = rng.integers(0, 30, 500), rng.integers(0, 30, 500)
    mirrored = rng.random(500) < 0.5
    whole = dedup.thumb_ncc(thumbs, a, b, mirrored)
    np.testing.assert_allclose(dedup.thumb_ncc(thumbs, a, b, mirrored, chunk=7), whole, atol=1e-6)
    # a mirrored pair of an image and its mirror image correlates perfectly
    m = np.concatenate([thumbs[:1], thumbs[:1, :, ::-1]])
    assert dedup.thumb_ncc(m, np.array([0]), np.array([1]), np.array([True]))[0] > 0.999
