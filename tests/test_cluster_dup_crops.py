"""dup finds heavily cropped copies through window hashes, without merging neighbouring
tiles of the same photo (the hard negatives)."""

from __future__ import annotations

import numpy as np
from skimage import data

from segdeck.core.cluster import dedup, features


def _set():
    """Four 160-px tiles of one photo, each with a copy cropped by 15 % on every side or
    by 15 % / 3 % on opposite sides, resized back to 160 px."""
    import cv2

    photo = data.astronaut()
    grays, truth = [], []
    crops = [(0.15, 0.15, 0.15, 0.15), (0.03, 0.15, 0.15, 0.03)] * 2  # top, bottom, left, right
    for t, (r, c) in enumerate([(0, 0), (0, 1), (1, 0), (1, 1)]):
        tile = cv2.cvtColor(np.ascontiguousarray(photo[r * 160:(r + 1) * 160, 96 + c * 160:96 + (c + 1) * 160]),
                            cv2.COLOR_RGB2GRAY)
        top, bottom, left, right = (round(160 * f) for f in crops[t])
        cut = cv2.resize(tile[top:160 - bottom, left:160 - right], (160, 160), interpolation=cv2.INTER_AREA)
        grays += [tile, cut]
        truth += [t, t]
    return grays, np.array(truth)


def _cluster(grays, **kw):
    params = dedup.DupParams(**kw)
    windows = np.stack([features.window_codes(g) for g in grays])
    messages = []
    labels, stats = dedup.cluster_codes(features.phash_codes_fast(grays), params, gray=lambda k: grays[k],
                                        thumbs=features.thumbnails(grays), windows=windows, warn=messages.append)
    return labels, stats, messages


def test_heavy_crops_found_through_windows_and_tiles_kept_apart():
    grays, truth = _set()
    with_windows, stats, _ = _cluster(grays)
    without, _, _ = _cluster(grays, crop_radius=-1)
    pairs_found = sum(with_windows[2 * t] == with_windows[2 * t + 1] for t in range(4))
    assert stats["crop_candidates"] > 0
    assert pairs_found >= 3  # at least 3 of the 4 cropped copies join their tile
    assert pairs_found > sum(without[2 * t] == without[2 * t + 1] for t in range(4))
    for a in range(8):  # no two tiles merged
        for b in range(8):
            if truth[a] != truth[b]:
                assert with_windows[a] != with_windows[b]


def test_window_codes_match_the_hash_of_the_window():
    rng = np.random.default_rng(0)
    g = (rng.random((200, 176)) * 255).astype(np.uint8)
    import cv2

    g = cv2.GaussianBlur(g, (0, 0), 3)
    codes = features.window_codes(g).reshape(-1, 2)
    boxes = features.window_boxes(*g.shape)
    assert len(boxes) == len(codes) == 225
    # the window cut from the full image hashes (almost) as its slice of the small image
    y0, y1, x0, x1 = boxes[100]
    direct = features.phash_codes_fast([g[y0:y1, x0:x1]])[0]
    from segdeck.core.cluster.similarity import popcount64

    assert int(popcount64(direct[:1] ^ codes[100, :1])[0]) <= 6


def test_crop_search_skipped_with_a_message_above_the_image_cap():
    grays, _ = _set()
    labels, stats, messages = _cluster(grays, crop_max_images=4)
    assert stats["crop_candidates"] == 0
    assert messages and "--dup.crop-max-images" in messages[0]
