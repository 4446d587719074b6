"""Region statistics and the two-stage filters, checked against hand-computed values."""

from __future__ import annotations

import numpy as np
import pytest
from pydantic import ValidationError

from segdeck.core import regions
from segdeck.core.regions import RegionFilterParams

# 4x4 image, gray levels: 0 (aggregate 100), 255 (aggregate 0), 102 (aggregate 60).
#   labels          gray
#   1 1 1 2         0   0   0 255
#   1 1 1 2         0   0   0 255
#   3 3 3 2         0   0   0 255
#   3 3 3 2       102 102 102 255
LABELS = np.array([[1, 1, 1, 2], [1, 1, 1, 2], [3, 3, 3, 2], [3, 3, 3, 2]], np.int32)
GRAY = np.array([[0, 0, 0, 255], [0, 0, 0, 255], [0, 0, 0, 255], [102, 102, 102, 255]], np.uint8)
IMAGE = np.repeat(GRAY[:, :, None], 3, axis=2)
# hand-computed: region -> (A, I, R, bbox XYXY exclusive, centroid (x, y))
EXPECTED = {
    1: (6, 600.0, 100.0, (0, 0, 3, 2), (1.0, 0.5)),
    2: (4, 0.0, 0.0, (3, 0, 4, 4), (3.0, 1.5)),
    3: (6, 480.0, 80.0, (0, 2, 3, 4), (1.0, 2.5)),
}
MASKS = np.stack([LABELS == k for k in (1, 2, 3)])


def _tuple(s):
    return (s.area, round(s.intensity, 3), round(s.ratio, 3), s.bbox, tuple(round(c, 3) for c in s.centroid))


def test_aggregate_map_definition():
    agg = regions.aggregate_map(IMAGE)
    assert agg.dtype == np.float32 and agg.shape == (4, 4)
    assert agg[0, 0] == pytest.approx(100.0) and agg[0, 3] == pytest.approx(0.0)
    assert agg[3, 0] == pytest.approx(60.0, abs=1e-4)
    # colour: BT.601 luma of pure red is 76 -> 100 - 76/255*100
    red = np.zeros((1, 1, 3), np.uint8)
    red[..., 0] = 255
    assert regions.aggregate_map(red)[0, 0] == pytest.approx(100 - 76 / 255 * 100, abs=1e-3)
    with pytest.raises(ValueError):
        regions.aggregate_map(np.zeros((2, 2, 3), np.float32))


def test_label_and_mask_stats_match_hand_values():
    agg = regions.aggregate_map(IMAGE)
    by_label = {s.label: _tuple(s) for s in regions.label_stats(LABELS, agg)}
    by_mask = {s.label: _tuple(s) for s in regions.mask_stats(MASKS, agg)}
    expected = {k: (a, i, r, b, c) for k, (a, i, r, b, c) in EXPECTED.items()}
    assert by_label == expected
    assert by_mask == expected


def test_phase1_defaults_and_phase2():
    agg = regions.aggregate_map(IMAGE)
    params = RegionFilterParams(min_area=5, min_intensity=0.0, min_ratio=50.0, min_aggregate=70.0, max_aggregate=100.0)
    res = regions.filter_labels(LABELS, agg, params)
    # phase 1 keeps 1 (A6 R100) and 3 (A6 R80); 2 fails (A4 < 5, R0 < 50)
    assert list(res.source) == [1, 3]
    # phase 2 keeps aggregate 70..100: region 3 loses its row of 60s -> A3 I300 R100
    got = {s.label: _tuple(s) for s in res.stats}
    assert got == {1: (6, 600.0, 100.0, (0, 0, 3, 2), (1.0, 0.5)), 2: (3, 300.0, 100.0, (0, 2, 3, 3), (1.0, 2.0))}
    expected_map = np.array([[1, 1, 1, 0], [1, 1, 1, 0], [2, 2, 2, 0], [0, 0, 0, 0]])
    np.testing.assert_array_equal(res.regions, expected_map)
    # the same on masks
    mres = regions.filter_masks(MASKS, agg, params)
    assert list(mres.source) == [0, 2]
    assert [_tuple(s) for s in mres.stats] == [_tuple(s) for s in res.stats]
    np.testing.assert_array_equal(mres.regions[1], expected_map == 2)


@pytest.mark.parametrize(
    "kwargs, kept",
    [
        ({"area_filter": False, "min_ratio": 50.0}, [1, 3]),  # ratio alone
        ({"intensity_ratio_filter": False, "min_area": 5}, [1, 3]),  # area alone
        ({"intensity_ratio_filter": False, "min_area": 4}, [1, 2, 3]),  # A >= threshold is kept
        ({"area_filter": False, "min_ratio": 0.0, "min_intensity": 500.0}, [1]),  # I 600 vs 480
        ({"area_filter": False, "intensity_ratio_filter": False}, [1, 2, 3]),
        ({"min_area": 0, "min_ratio": 80.0}, [1, 3]),  # R >= 80 keeps region 3 exactly
        ({"min_area": 0, "min_ratio": 80.01}, [1]),
    ],
)
def test_phase1_switches(kwargs, kept):
    agg = regions.aggregate_map(IMAGE)
    params = RegionFilterParams(pixel_filter=False, **kwargs)
    assert list(regions.filter_labels(LABELS, agg, params).source) == kept
    assert list(regions.filter_masks(MASKS, agg, params).source + 1) == kept


def test_disabled_keeps_everything_and_seed_defaults():
    agg = regions.aggregate_map(IMAGE)
    res = regions.filter_labels(LABELS, agg, RegionFilterParams(enabled=False))
    np.testing.assert_array_equal(res.regions, LABELS)
    assert len(res.stats) == 3
    d = RegionFilterParams()
    assert (d.min_area, d.min_intensity, d.min_ratio, d.min_aggregate, d.max_aggregate) == (199, 0.0, 44.0, 35.0, 100.0)
    # with the default filters every region of this tiny image is below 199 pixels
    assert regions.filter_labels(LABELS, agg, d).stats == []


def test_phase2_drops_emptied_regions_and_carries_scores():
    agg = regions.aggregate_map(IMAGE)
    params = RegionFilterParams(area_filter=False, intensity_ratio_filter=False, min_aggregate=90.0)
    res = regions.filter_masks(MASKS, agg, params, scores={"predicted_iou": np.array([0.9, 0.8, 0.7])})
    # region 2 is all white (aggregate 0): nothing left after phase 2
    assert list(res.source) == [0, 2]
    assert [s.scores["predicted_iou"] for s in res.stats] == [0.9, 0.7]
    assert [s.area for s in res.stats] == [6, 3]


def test_params_validation():
    with pytest.raises(ValidationError):
        RegionFilterParams(min_aggregate=80, max_aggregate=20)
    with pytest.raises(ValidationError):
        RegionFilterParams(min_ratio=101)
    with pytest.raises(ValidationError):
        RegionFilterParams(min_area=-1)
    with pytest.raises(ValidationError):
        RegionFilterParams(bogus=1)


def test_masks_to_label_map_small_over_large():
    big = np.zeros((6, 6), bool)
    big[:, :] = True
    small = np.zeros((6, 6), bool)
    small[2:4, 2:4] = True
    # small is listed first but must end up on top of the large one
    lab = regions.masks_to_label_map(np.stack([small, big]))
    assert lab[2, 2] == 1 and lab[0, 0] == 2
    assert (lab == 1).sum() == 4
    lab_idx = regions.masks_to_label_map(np.stack([small, big]), order="index")
    assert (lab_idx == 2).all()


def test_stats_on_large_label_map_are_consistent(rng):
    labels = rng.integers(0, 300, size=(60, 80))
    image = rng.integers(0, 256, size=(60, 80, 3), dtype=np.uint8)
    agg = regions.aggregate_map(image)
    stats = regions.label_stats(labels, agg)
    assert [s.label for s in stats] == sorted(set(np.unique(labels)) - {0})
    s = stats[10]
    m = labels == s.label
    ys, xs = np.nonzero(m)
    assert s.area == m.sum()
    assert s.intensity == pytest.approx(float(agg[m].sum()), rel=1e-6)
    assert s.bbox == (xs.min(), ys.min(), xs.max() + 1, ys.max() + 1)
    assert s.centroid == pytest.approx((xs.mean(), ys.mean()))
