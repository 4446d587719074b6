"""Sequential segmentation of the describe sweep (segdeck.core.describe.sweep): claiming
rule with a scripted engine, and equality with an official SAM2ImagePredictor loop on a
random-weight SAM 2.1-tiny."""

from __future__ import annotations

import threading
from types import SimpleNamespace

import numpy as np
import pytest

from segdeck.core.describe.points import PointProposal, grid_points
from segdeck.core.describe.sweep import SweepCancelled, mask_box, sweep


class ScriptedEngine:
    """Answers each point prompt with a fixed mask (a square around the point)."""

    def __init__(self, shape, half=10, score=0.9):
        self.shape, self.half, self.score = shape, half, score
        self.calls: list[tuple[float, float]] = []
        self.images = 0

    def set_image(self, image):
        self.images += 1

    def predict(self, points=None, labels=None, multimask=False):
        (x, y), = np.asarray(points)
        self.calls.append((float(x), float(y)))
        m = np.zeros(self.shape, bool)
        x, y = int(x), int(y)
        m[max(0, y - self.half): y + self.half, max(0, x - self.half): x + self.half] = True
        # two candidates; the better one is the square
        worse = np.zeros(self.shape, bool)
        return SimpleNamespace(masks=np.stack([worse, m]), scores=np.array([0.1, self.score], np.float32))


def _pt(x, y, source="grid", rank=0):
    return PointProposal(x, y, source, rank)


def test_claimed_points_skipped_and_regions_clipped():
    eng = ScriptedEngine((60, 80), half=10)
    pts = [_pt(20, 20, "contour"), _pt(25, 25), _pt(35, 20), _pt(60, 40)]
    steps = []
    res = sweep(eng, np.zeros((60, 80, 3), np.uint8), pts, min_area=50, on_step=lambda d, t: steps.append((d, t)))
    # (25, 25) lies in the first square: skipped without a prompt
    assert eng.calls == [(20, 20), (35, 20), (60, 40)]
    assert eng.images == 1
    assert res.skipped_claimed == 1 and res.prompted == 3
    assert steps == [(1, 4), (2, 4), (3, 4), (4, 4)]
    r1, r2, r3 = res.regions
    assert (r1.index, r1.source, r1.point, r1.box, r1.area) == (1, "contour", (20, 20), (10, 10, 30, 30), 400)
    # the second square overlaps the first on x 25..29: those pixels stay region 1
    assert r2.box == (30, 10, 45, 30) and r2.area == 15 * 20
    assert r3.box == (50, 30, 70, 50) and r3.score == pytest.approx(0.9)
    assert np.array_equal(np.unique(res.labels), [0, 1, 2, 3])
    for r in res.regions:
        assert int((res.labels == r.index).sum()) == r.area
        assert mask_box(res.labels == r.index) == r.box


def test_small_regions_dropped_and_claim_nothing():
    eng = ScriptedEngine((60, 80), half=10)
    pts = [_pt(20, 20), _pt(31, 20), _pt(32, 20)]
    res = sweep(eng, np.zeros((60, 80, 3), np.uint8), pts, min_area=250)
    # (31, 20): its square minus region 1 is 11 x 20 = 220 px < 250: dropped, claims
    # nothing, so (32, 20) is prompted too (and dropped as well)
    assert len(res.regions) == 1 and res.dropped_small == 2 and res.prompted == 3
    assert int((res.labels > 0).sum()) == 400


def test_cancel_and_bad_points():
    eng = ScriptedEngine((30, 30))
    ev = threading.Event()
    ev.set()
    with pytest.raises(SweepCancelled):
        sweep(eng, np.zeros((30, 30, 3), np.uint8), [_pt(5, 5)], cancel=ev)
    with pytest.raises(ValueError, match="outside"):
        sweep(eng, np.zeros((30, 30, 3), np.uint8), [_pt(30, 5)])
    with pytest.raises(ValueError, match="min_area"):
        sweep(eng, np.zeros((30, 30, 3), np.uint8), [_pt(3, 5)], min_area=0)


# --------------------------------------------------------------------------- real SAM

def _scene(h=96, w=128):
    import cv2

    img = np.zeros((h, w, 3), np.uint8)
    img[:] = (40, 90, 40)
    cv2.rectangle(img, (8, 8), (60, 50), (220, 40, 40), -1)
    cv2.circle(img, (95, 60), 22, (40, 40, 220), -1)
    cv2.rectangle(img, (20, 62), (50, 88), (230, 230, 60), -1)
    rng = np.random.default_rng(0)
    return np.clip(img + rng.integers(0, 12, img.shape), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def sam_env(tmp_path_factory):
    pytest.importorskip("torch")
    pytest.importorskip("sam2")
    from test_sam import random_models

    d = tmp_path_factory.mktemp("models")
    names = ["sam2.1-tiny"]
    try:
        import segment_anything_hq  # noqa: F401
        names.append("sam-hq-vit_tiny")
    except ImportError:
        pass
    with random_models(d, names):
        yield names


def official_loop(predictor, image, points, min_area):
    """The sweep written against the official predictor: same claiming rule."""
    predictor.set_image(image)
    claimed = np.zeros(image.shape[:2], bool)
    out = []
    for p in points:
        if claimed[p.y, p.x]:
            continue
        masks, scores, _ = predictor.predict(
            point_coords=np.array([[p.x, p.y]], np.float32), point_labels=np.array([1]), multimask_output=True)
        best = int(np.argmax(scores))
        region = masks[best].astype(bool) & ~claimed
        if region.sum() >= min_area:
            claimed |= region
            out.append((p, region, float(scores[best])))
    return out


def _iou(a, b):
    return (a & b).sum() / max((a | b).sum(), 1)


@pytest.mark.slow
def test_sweep_equals_official_sam2_predictor_loop(sam_env):
    from segdeck.core.sam import open_engine

    img = _scene()
    pts = grid_points(img.shape, 5, 4)
    eng = open_engine("sam2.1-tiny", "cpu")
    res = sweep(eng, img, pts, min_area=20)
    ref = official_loop(eng.official_predictor(), img, pts, 20)
    assert len(res.regions) >= 2  # a sweep that keeps one region tests little
    assert [r.point for r in res.regions] == [p.xy for p, _, _ in ref]
    seen = np.zeros(img.shape[:2], int)
    for r, (_, mask, score) in zip(res.regions, ref, strict=True):
        mine = res.labels == r.index
        seen += mine
        assert _iou(mine, mask) > 0.99
        assert r.score == pytest.approx(score, abs=1e-3)
        assert abs(r.area - int(mask.sum())) <= max(3, 0.01 * r.area)
    assert seen.max() <= 1  # never overlapping


@pytest.mark.slow
def test_sweep_sam_hq_regions_never_overlap(sam_env):
    if "sam-hq-vit_tiny" not in sam_env:
        pytest.skip("segment_anything_hq not installed")
    from segdeck.core.sam import open_engine

    img = _scene()
    eng = open_engine("sam-hq-vit_tiny", "cpu")
    res = sweep(eng, img, grid_points(img.shape, 3, 2), min_area=20)
    assert res.prompted + res.skipped_claimed == 6
    areas = [r.area for r in res.regions]
    assert sum(areas) == int((res.labels > 0).sum())
    for r in res.regions:
        assert mask_box(res.labels == r.index) == r.box
