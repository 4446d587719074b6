"""Point proposals of the describe sweep (segdeck.core.describe.points) on synthetic images."""

from __future__ import annotations

import numpy as np
import pytest

from segdeck.core.describe import points as P


def _canvas(h=120, w=160):
    return np.full((h, w, 3), 30, np.uint8)


def test_contours_largest_first_and_cap():
    img = _canvas()
    img[10:30, 10:30] = 220     # 20x20
    img[50:110, 60:150] = 220   # 60x90, the largest
    img[40:75, 10:45] = 220     # 35x35
    pts = P.contour_points(img, "threshold", max_points=10, min_area=50, blur=0)
    # threshold map, both polarities: the dark background is one (largest) contour too
    areas = [p.contour_area for p in pts]
    assert areas == sorted(areas, reverse=True)
    bright = [p for p in pts if img[p.y, p.x, 0] == 220]
    assert [(p.y // 10, p.x // 10) for p in bright][:1] == [(8, 10)]  # the 60x90 box first
    inside = [(50 <= b.y < 110 and 60 <= b.x < 150, 40 <= b.y < 75 and 10 <= b.x < 45, 10 <= b.y < 30 and 10 <= b.x < 30)
              for b in bright]
    assert inside == [(True, False, False), (False, True, False), (False, False, True)]
    assert [p.rank for p in pts] == list(range(len(pts)))
    assert all(p.source == "contour" for p in pts)
    capped = P.contour_points(img, "threshold", max_points=2, min_area=50, blur=0)
    assert capped == pts[:2]
    assert P.contour_points(img, "threshold", max_points=0) == []


def test_edge_contours_give_one_point_inside_each_object():
    img = _canvas()
    img[20:60, 20:70] = 200
    img[70:100, 100:140] = 120
    pts = P.contour_points(img, "edges", max_points=5, min_area=100)
    assert len(pts) == 2
    a, b = pts
    assert a.contour_area > b.contour_area
    assert 20 <= a.y < 60 and 20 <= a.x < 70
    assert 70 <= b.y < 100 and 100 <= b.x < 140


def test_min_area_drops_small_contours():
    img = _canvas()
    img[10:14, 10:14] = 220   # 16 px
    img[40:80, 40:80] = 220
    pts = P.contour_points(img, "edges", max_points=10, min_area=200)
    assert len(pts) == 1 and 40 <= pts[0].y < 80


def test_interior_point_centroid_when_inside():
    m = np.zeros((50, 60), bool)
    m[10:31, 20:41] = True
    assert P.interior_point(m) == (30, 20)


def test_interior_point_of_c_shape_is_farthest_from_boundary():
    # a thick "C": the centroid falls in the opening, which is outside the region
    m = np.zeros((100, 100), bool)
    m[10:90, 10:90] = True
    m[30:70, 40:100] = False
    ys, xs = np.nonzero(m)
    cx, cy = int(round(xs.mean())), int(round(ys.mean()))
    assert not m[cy, cx]
    x, y = P.interior_point(m)
    assert m[y, x]
    # the thickest part is the back of the C (x 10..40, 30 px thick): the point is there,
    # at least 12 px from any outside pixel
    outside = np.argwhere(~np.pad(m, 1))
    d = np.sqrt(((outside - np.array([y + 1, x + 1])) ** 2).sum(1)).min()
    assert d >= 12
    assert 10 <= x < 40


def test_contour_point_on_c_shaped_object_lies_on_it():
    img = _canvas(100, 100)
    img[10:90, 10:90] = 230
    img[30:70, 40:100] = 30
    (p,) = P.contour_points(img, "edges", max_points=3, min_area=100)
    assert img[p.y, p.x, 0] == 230


def test_interior_point_rejects_empty():
    with pytest.raises(ValueError, match="empty"):
        P.interior_point(np.zeros((5, 5), bool))


def test_grid_order_and_positions():
    g = P.grid_points((100, 200, 3), 4, 2)
    assert [(p.x, p.y) for p in g] == [(25, 25), (75, 25), (125, 25), (175, 25), (25, 75), (75, 75), (125, 75), (175, 75)]
    assert [p.rank for p in g] == list(range(8))
    assert {p.source for p in g} == {"grid"}
    assert P.grid_points((10, 10), 0, 5) == []
    with pytest.raises(ValueError):
        P.grid_points((10, 10), -1, 2)


def test_propose_points_contours_then_grid():
    img = _canvas()
    img[20:60, 20:70] = 200
    params = P.PointParams(grid_columns=3, grid_rows=2, min_contour_area=50)
    pts = P.propose_points(img, params)
    sources = [p.source for p in pts]
    assert sources == ["contour"] * sources.count("contour") + ["grid"] * 6
    assert sources.count("contour") >= 1
    none = P.propose_points(img, params.model_copy(update={"contours": False}))
    assert [p.source for p in none] == ["grid"] * 6


def test_bad_images_refused():
    with pytest.raises(ValueError, match="uint8"):
        P.contour_points(np.zeros((10, 10, 3), np.float32))
    with pytest.raises(ValueError, match="RGB"):
        P.contour_points(np.zeros((10, 10, 4), np.uint8))
    with pytest.raises(ValueError, match="contour map"):
        P.contour_map(np.zeros((10, 10, 3), np.uint8), "sobel")  # type: ignore[arg-type]
