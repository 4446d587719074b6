"""Annotation state machines without a window: painting, cuts, undo, template matching,
GrabCut and SAM prompts, the draw-only-when-dirty loop (fake highgui), saving and restoring."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import cv2
import numpy as np
import pytest

from segdeck.annotate.app import Options, run_annotate
from segdeck.annotate.files import load_session
from segdeck.annotate.grabcut import GrabCutState, mask_to_segments
from segdeck.annotate.paint import PaintWindow
from segdeck.annotate.sam import SamState
from segdeck.annotate.state import PALETTE, PaintState, colour_hex
from segdeck.annotate.template import TemplateSpec, derive_mask, match_template, template_paint


# -- painting ------------------------------------------------------------------------------
def test_fill_unfill_and_colours(three_regions):
    _, labels = three_regions
    st = PaintState(labels)
    assert st.mouse("down", "left", 5, 5)
    assert st.seg_color[1] == 1
    st.mouse("up", "left", 5, 5)
    assert st.action("colour_3")
    assert st.mouse("down", "left", 40, 10)
    assert st.seg_color[2] == 3
    cmap = st.colour_map()
    assert (cmap[:, :32] == 1).all() and (cmap[:, 32:64] == 3).all() and (cmap[:, 64:] == 0).all()
    assert set(st.masks()) == {1, 3}
    assert st.mouse("down", "right", 5, 5)  # unfill
    assert st.seg_color[1] == 0
    assert not st.mouse("down", "right", 5, 5)  # already unfilled: no change, no redraw
    assert st.action("next_colour") and st.colour == 4


def test_continuous_modes_and_undo(three_regions):
    _, labels = three_regions
    st = PaintState(labels)
    assert not st.mouse("move", None, 5, 5)  # click mode: moving paints nothing
    st.mouse("down", "left", 5, 5)
    st.mouse("up", "left", 5, 5)
    assert st.mouse("double", "left", 5, 5) and st.mode == "fill"
    for x in range(0, 96, 8):
        st.mouse("move", None, x, 30)
    assert (st.seg_color[1:] == 1).all()
    assert st.mouse("double", "left", 90, 30) and st.mode == "click"
    st.undo()  # the whole continuous stroke is one step
    assert list(st.seg_color) == [0, 1, 0, 0]
    assert st.mouse("double", "right", 5, 5) and st.mode == "unfill"
    st.mouse("move", None, 5, 5)
    assert st.seg_color[1] == 0
    st.mouse("double", "right", 5, 5)
    st.undo()
    assert st.seg_color[1] == 1
    st.undo()
    assert not st.seg_color.any()


def test_cut_line_splits_segment_and_undo(three_regions):
    _, labels = three_regions
    st = PaintState(labels)
    st.mouse("down", "left", 40, 5)  # paint the middle segment first
    st.mouse("down", "middle", 32, 32)  # anchor
    assert st.cut_anchor == (32, 32)
    st.mouse("down", "middle", 63, 32)  # horizontal cut across the middle segment
    assert (st.labels[32, 32:64] == 0).all()
    top, bottom = st.labels[10, 40], st.labels[50, 40]
    assert top != bottom and top > 0 and bottom > 0
    assert st.seg_color[top] == st.seg_color[bottom] == 1  # split pieces keep their paint
    assert len(np.unique(st.labels)) == 5  # 0 + 4 segments
    # edge pixels between two pieces of one colour are filled in the saved map
    assert (st.colour_map()[32, 33:63] == 1).all()
    assert st.mouse("double", "middle", 63, 32) and st.cut_anchor is None
    st.undo()
    np.testing.assert_array_equal(st.labels, labels)
    assert st.seg_color[2] == 1


def test_reset_restores_original_and_is_undoable(three_regions):
    _, labels = three_regions
    st = PaintState(labels)
    st.mouse("down", "left", 5, 5)
    st.cut_line((0, 10), (95, 10))
    st.action("reset")
    np.testing.assert_array_equal(st.labels, labels)
    assert not st.seg_color.any()
    st.action("undo")
    assert (st.labels[10] == 0).all() and st.seg_color.any()


def test_outcomes_from_keys(three_regions):
    _, labels = three_regions
    for key, outcome in (("q", "quit"), ("n", "next"), ("p", "previous"), (" ", "save_next")):
        st = PaintState(labels)
        assert st.key(ord(key))
        assert st.outcome == outcome


def test_leaving_with_unsaved_painting_asks_first(three_regions):
    _, labels = three_regions
    for key, outcome in (("q", "quit"), ("n", "next"), ("p", "previous")):
        st = PaintState(labels)
        assert not st.unsaved
        st.mouse("down", "left", 5, 5)
        assert st.unsaved
        assert st.key(ord(key)) and st.outcome is None  # first press: only asks
        assert st.confirming == outcome and f"{key} again" in st.message and "space saves" in st.message
        assert st.key(ord(key)) and st.outcome == outcome  # the same key again leaves
    st = PaintState(labels)
    st.mouse("down", "left", 5, 5)
    st.key(ord("q"))
    st.mouse("down", "left", 40, 5)  # anything else cancels the question ...
    assert st.confirming is None and st.message == ""
    st.key(ord("q"))
    assert st.outcome is None  # ... so q asks again
    st.key(ord("z"))  # undo cancels too
    st.key(ord("z"))  # back to nothing painted: leaving needs no question
    assert not st.unsaved
    st.key(ord("q"))
    assert st.outcome == "quit"
    st = PaintState(labels)
    st.mouse("down", "left", 5, 5)
    st.key(ord("q"))
    st.key(ord(" "))  # saving never asks
    assert st.outcome == "save_next"
    # a mask handed over by GrabCut / SAM is unsaved work from the start
    st = PaintState(labels, unsaved=True)
    st.key(ord("q"))
    assert st.outcome is None and st.confirming == "quit"


def test_unsaved_counts_grouped_and_capped_undo(three_regions):
    img, labels = three_regions
    st = PaintState(labels)
    st.MAX_UNDO = 3
    for x in (5, 40, 70, 5, 40):  # fill / unfill alternating beyond the cap
        st.mouse("down", "left" if st.segment_at(x, 5) and not st.seg_color[st.segment_at(x, 5)] else "right", x, 5)
    assert len(st.undo_stack) == 3 and st.unsaved
    while st.undo_stack:
        st.undo()
    assert st.unsaved  # two steps fell off the stack: still not what was loaded
    spec = TemplateSpec(template=img[:8, 28:36], segment=img[:8, 28:36], threshold=0.99)
    st2 = PaintState(labels)
    template_paint(st2, img, spec, PALETTE)
    assert st2.unsaved
    st2.undo()  # one template paint is one step
    assert not st2.unsaved


# -- template painting ---------------------------------------------------------------------
def _scene():
    rng = np.random.default_rng(1)
    img = rng.integers(0, 60, (120, 200, 3)).astype(np.uint8)
    tpl = np.zeros((16, 20, 3), np.uint8)
    tpl[3:13, 4:16] = (250, 240, 20)
    tpl[6:10, 8:12] = (10, 30, 250)
    spots = [(10, 10), (100, 30), (150, 90)]
    for x, y in spots:
        img[y : y + 16, x : x + 20] = tpl
    return img, tpl, spots


def test_match_template_finds_every_copy_with_nms():
    img, tpl, spots = _scene()
    att = derive_mask(tpl)
    found = match_template(img, tpl, att, threshold=0.95, nms_iou=0.1)
    assert sorted((m.x0, m.y0) for m in found) == sorted(spots)
    assert all(m.x1 - m.x0 == 20 and m.y1 - m.y0 == 16 for m in found)
    for method in ("sqdiff", "ccorr_normed"):
        found = match_template(img, tpl, att, threshold=0.97, method=method)
        assert sorted((m.x0, m.y0) for m in found) == sorted(spots)
    with pytest.raises(ValueError):
        match_template(img[:10, :10], tpl)


def test_default_template_threshold_ignores_plain_background_and_keeps_true_match():
    """Issue 15 item 9: TM_CCORR_NORMED scored plain background ~0.9+ (a false match at the
    default 0.9); the default (TM_CCOEFF_NORMED) scores it near 0 and still finds the real copy,
    also one that is brighter than the template."""
    rng = np.random.default_rng(5)
    img = (np.full((160, 240, 3), 200, np.int16) + rng.integers(-3, 4, (160, 240, 3))).clip(0, 255).astype(np.uint8)
    tpl = np.zeros((16, 20, 3), np.uint8)  # a pale shape on black (black = not attended)
    tpl[3:13, 4:16] = (185, 200, 210)
    tpl[6:10, 8:12] = (215, 190, 200)
    att = derive_mask(tpl)
    assert match_template(img, tpl, att, threshold=0.9, method="ccorr_normed")  # the old default: false matches
    defaults = TemplateSpec(template=tpl, segment=tpl)
    assert match_template(img, tpl, att, threshold=defaults.threshold, method=defaults.method) == []
    img[40:56, 60:80][att] = tpl[att]
    img[100:116, 150:170][att] = np.clip(tpl[att].astype(np.int16) + 25, 0, 255)  # brighter copy
    found = match_template(img, tpl, att, threshold=defaults.threshold, method=defaults.method)
    assert sorted((m.x0, m.y0) for m in found) == [(60, 40), (150, 100)]
    flat = np.zeros((10, 10, 3), np.uint8)
    flat[2:8, 2:8] = (200, 10, 10)
    with pytest.raises(ValueError, match="one flat colour"):
        match_template(img, flat, derive_mask(flat))


def test_template_paint_carves_painted_segments():
    img, tpl, spots = _scene()
    labels = np.arange(1, 121, dtype=np.int32).repeat(200).reshape(120, 200)  # one segment per row
    st = PaintState(labels)
    st.select_colour(2)
    seg = tpl.copy()
    seg[seg.any(axis=2)] = PALETTE[5]  # the segment image's colour is palette colour 5
    spec = TemplateSpec(template=tpl, segment=seg, attention=derive_mask(tpl), mask=derive_mask(seg), threshold=0.95)
    found = template_paint(st, img, spec, PALETTE)
    assert len(found) == 3
    cmap = st.colour_map(fill_edges=False)
    m = derive_mask(seg)
    for x, y in spots:
        assert (cmap[y : y + 16, x : x + 20][m] == 5).all()
    assert (cmap == 5).sum() == 3 * m.sum()
    st.undo()  # one step undoes the whole template paint
    assert not st.colour_map().any()
    np.testing.assert_array_equal(st.labels, labels)


def test_derive_mask_rules():
    rgba = np.zeros((4, 4, 4), np.uint8)
    rgba[1:3, 1:3, 3] = 255
    assert derive_mask(rgba).sum() == 4
    black = np.zeros((4, 4, 3), np.uint8)
    assert derive_mask(black).all()  # nothing non-black: every pixel counts


# -- GrabCut ---------------------------------------------------------------------------------
def _square_image():
    rng = np.random.default_rng(3)
    img = rng.integers(0, 50, (80, 100, 3)).astype(np.uint8)
    img[20:60, 30:70] = rng.integers(190, 255, (40, 40, 3))
    return img


def test_grabcut_prompts_and_iterations():
    img = _square_image()
    st = GrabCutState(img, brush=2)
    st.mouse("down", "middle", 25, 15)
    st.mouse("move", None, 50, 40)
    st.mouse("up", "middle", 75, 65)
    assert st.rect == (25, 15, 76, 66)
    st.mouse("down", "left", 50, 40)  # sure foreground stroke
    st.mouse("move", None, 52, 40)
    st.mouse("up", "left", 52, 40)
    assert st.marks[40, 51] == cv2.GC_FGD
    st.mouse("down", "right", 27, 17, ctrl=True)  # probable background
    st.mouse("up", "right", 27, 17)
    assert st.marks[17, 27] == cv2.GC_PR_BGD
    st.mouse("down", "left", 40, 50, ctrl=True)
    st.mouse("up", "left", 40, 50)
    assert st.marks[50, 40] == cv2.GC_PR_FGD
    assert st.key(ord(" ")) and st.iterations == 1
    st.action("iterate")
    assert st.iterations == 2
    truth = np.zeros(img.shape[:2], bool)
    truth[20:60, 30:70] = True
    iou = (st.mask & truth).sum() / (st.mask | truth).sum()
    assert iou > 0.9
    st.action("finish")
    assert st.outcome == "finish"
    full = st.full_mask((200, 160))
    assert full.shape == (160, 200) and full[80, 100]
    seg = mask_to_segments(full)
    assert set(np.unique(seg)) == {1, 2}
    st.action("reset")
    assert st.rect is None and st.mask is None and (st.marks == 255).all()


# -- SAM ----------------------------------------------------------------------------------------
class FakeEngine:
    """Box prompt -> the box; points -> disks of radius 6 around positive points."""

    def __init__(self):
        self.set_calls = 0
        self.calls = []

    def set_image(self, image):
        self.set_calls += 1
        self.shape = image.shape[:2]

    def predict(self, points=None, labels=None, box=None, mask_input=None, multimask=False):
        self.calls.append((None if points is None else np.asarray(points).tolist(),
                           None if labels is None else np.asarray(labels).tolist(),
                           None if box is None else np.asarray(box).tolist()))
        m = np.zeros(self.shape, bool)
        if box is not None:
            x0, y0, x1, y1 = (int(v) for v in box)
            m[y0:y1, x0:x1] = True
        if points is not None:
            yy, xx = np.mgrid[: self.shape[0], : self.shape[1]]
            for (x, y), lab in zip(points, labels, strict=True):
                disk = (xx - x) ** 2 + (yy - y) ** 2 <= 36
                m = m | disk if lab == 1 else m & ~disk
        return type("R", (), {"masks": m[None], "scores": np.array([0.9], np.float32)})()


def test_sam_prompts_predict_undo_reset():
    img = _square_image()
    eng = FakeEngine()
    st = SamState(img, eng)
    st.mouse("down", "left", 10, 10)
    st.mouse("down", "right", 12, 10)
    st.mouse("down", "middle", 30, 20)
    st.mouse("move", None, 50, 40)
    st.mouse("up", "middle", 70, 60)
    assert [p[0] for p in st.prompts] == ["point", "point", "box"]
    np.testing.assert_array_equal(st.labels, [1, 0])
    assert len(eng.calls) == 3 and not st.stale  # the mask follows every prompt (live)
    pts, labs, box = eng.calls[-1]
    assert pts == [[10.0, 10.0], [12.0, 10.0]] and labs == [1, 0] and box == [30.0, 20.0, 70.0, 60.0]
    assert st.mask[40, 50] and not st.mask[10, 12]
    assert st.key(ord(" ")) and len(eng.calls) == 4  # space still predicts on request
    st.action("undo")  # removes the box: predicted again without it
    assert [p[0] for p in st.prompts] == ["point", "point"]
    assert eng.calls[-1][2] is None and not st.mask[40, 50]
    st.action("undo")
    st.action("undo")
    assert st.prompts == [] and st.mask is None  # no prompt, no mask
    st.mouse("down", "left", 10, 10)
    st.mouse("down", "right", 12, 10)
    assert eng.set_calls == len(eng.calls)  # the engine caches; set_image is cheap for the same image
    st.action("reset")
    assert st.prompts == [] and st.mask is None
    st.action("finish")
    assert st.outcome is None  # nothing to finish
    km = __import__("segdeck.annotate.keymap", fromlist=["load_keymap"]).load_keymap("xanylabeling", user_file=False)
    st.keymap = km
    st.mouse("move", None, 50, 40)
    assert st.key(ord("q"))  # X-AnyLabeling style: q = positive point at the pointer
    assert st.prompts == [("point", (50, 40, 1))]
    st.action("finish")
    assert st.outcome == "finish" and st.full_mask((200, 160))[80, 100]


def test_sam_live_mask_waits_for_a_busy_engine_then_follows():
    import threading

    img = _square_image()
    eng = FakeEngine()
    lock = threading.Lock()
    st = SamState(img, eng, engine_lock=lock)
    lock.acquire()  # the background embedding holds the engine
    st.mouse("down", "left", 50, 40)
    assert st.stale and st.mask is None and eng.calls == [] and "embedding" in st.message
    assert not st.refresh()  # still busy: the window tries again later
    lock.release()
    assert st.refresh() and not st.stale and st.mask[40, 50]
    assert not st.refresh()  # nothing changed since
    off = SamState(img, FakeEngine(), live=False)
    off.mouse("down", "left", 50, 40)
    assert off.mask is None and off.stale
    off.action("finish")  # finishing predicts what is pending
    assert off.outcome == "finish" and off.mask[40, 50]


# -- the window loop, with a fake highgui ----------------------------------------------------------
class FakeGui:
    """Records frames; ``script`` is a list of key codes (-1 = idle) or callables run in turn."""

    def __init__(self, script):
        self.script = list(script)
        self.shown: list[str] = []
        self.callbacks = {}

    def open(self, name, cb, position=None):
        self.callbacks[name] = cb

    def show(self, name, frame):
        assert frame.dtype == np.uint8 and frame.ndim == 3
        self.shown.append(name)

    def wait_key(self, ms):
        while self.script:
            item = self.script.pop(0)
            if callable(item):
                item(self)
                continue
            return item
        return ord("q")

    def is_open(self, name):
        return True

    def pump(self, ms):
        import time

        time.sleep(ms / 1000)

    def close(self, name):
        pass

    def idle_wait(self, ms):
        self.idle_waits = getattr(self, "idle_waits", 0) + 1
        return self.wait_key(ms)

    def mouse_event(self, event, flags):
        return event  # tests pass (kind, button, ctrl) tuples as events


def _click(window, kind, button, u, v, ctrl=False):
    return lambda gui: gui.callbacks[window]((kind, button, ctrl), u, v, 0)


def test_idle_loop_draws_zero_frames(three_regions):
    img, labels = three_regions
    st = PaintState(labels)
    seg = PaintWindow.SEG
    script = [-1] * 200  # idle
    script += [_click(seg, "move", None, 10, 10), -1]  # a move in click mode: nothing to draw
    script += [_click(seg, "down", "left", 10, 10), -1] + [-1] * 50
    gui = FakeGui(script)
    win = PaintWindow(st, img, gui=gui, max_window=(400, 300))
    assert win.run() == "quit"
    # the last frame: q asks about the unsaved painting (the status line), the second q quits
    assert gui.shown == [PaintWindow.SEG, PaintWindow.COL, PaintWindow.SEG, PaintWindow.SEG]
    assert win.frames == 4
    assert st.seg_color[1] == 1


def test_display_updates_incrementally_match_full_rebuild(three_regions):
    img, labels = three_regions
    st = PaintState(labels)
    win = PaintWindow(st, img, gui=FakeGui([]), max_window=(300, 250))
    for x, y, button in ((5, 5, "left"), (40, 30, "left"), (5, 5, "right"), (70, 10, "left")):
        st.mouse("down", button, x, y)
        win.display.sync()
    st.cut_line((0, 20), (95, 20), 2)
    win.display.sync()
    incremental = win.display.disp.copy()
    win.display.rebuild()
    np.testing.assert_array_equal(incremental, win.display.disp)


# -- the driver: save, restore, odd images ------------------------------------------------------------
def _run(paths, root, out, gui, method="slic"):
    reports = []
    opts = Options(method=method, params=None, out_dir=out, root=root, max_window=(320, 240))
    code = run_annotate(paths, opts, gui=gui, report=reports.append, log=lambda m: None)
    return code, reports


def test_save_and_restore_session(tmp_path):
    from segdeck.core.imageio import read_label_map

    img = _square_image()
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "sq.png"), img[:, :, ::-1])
    out = tmp_path / "out"
    seg = PaintWindow.SEG
    # paint the square's centre with colour 2, save
    gui = FakeGui([ord("2"), _click(seg, "down", "left", 160, 120), ord(" ")])
    code, reports = _run([src / "sq.png"], src, out, gui)
    assert code == 0
    kinds = sorted(r["kind"] for r in reports if r["event"] == "saved")
    assert kinds == ["labels", "mask", "session"]
    lm = read_label_map(out / "sq.png.labels.png")
    assert lm.shape == (80, 100) and set(np.unique(lm)) == {0, 2}
    mask = cv2.imread(str(out / f"sq.png.mask-2-{colour_hex(PALETTE[2])}.png"), cv2.IMREAD_UNCHANGED)
    assert mask.shape == (80, 100) and set(np.unique(mask)) == {0, 255}
    labels, original, seg_color, meta = load_session(out / "sq.png.session.npz")
    assert meta["method"] == "slic" and seg_color.max() == 2
    # reopen: the painting is restored; unfill it and save: the mask file goes away
    gui = FakeGui([_click(seg, "down", "right", 160, 120), ord(" ")])
    code, reports = _run([src / "sq.png"], src, out, gui)
    assert code == 0
    assert not read_label_map(out / "sq.png.labels.png").any()
    assert not list(out.glob("sq.png.mask-*.png"))


def test_colour_carries_over_to_the_next_image(tmp_path):
    from segdeck.core.imageio import read_label_map

    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.png", "b.png", "c.png"):
        cv2.imwrite(str(src / name), _square_image()[:, :, ::-1])
    seg = PaintWindow.SEG
    click = _click(seg, "down", "left", 160, 120)
    # a: colour 4, save; b: no colour key, save; c: skipped with n, nothing painted
    gui = FakeGui([ord("4"), click, ord(" "), click, ord(" "), ord("n")])
    code, _ = _run(sorted(src.glob("*.png")), src, tmp_path / "out", gui)
    assert code == 0
    assert set(np.unique(read_label_map(tmp_path / "out" / "a.png.labels.png"))) == {0, 4}
    assert set(np.unique(read_label_map(tmp_path / "out" / "b.png.labels.png"))) == {0, 4}


def test_every_sample_photo_including_odd_ones(tmp_path):
    from segdeck.core.samples import write_samples

    samples = tmp_path / "samples"
    write_samples(samples)
    from segdeck.core.imageio import discover, load_rgb

    paths = discover(samples)
    assert len(paths) >= 5
    seg = PaintWindow.SEG
    script = []
    for _ in paths:
        script += [_click(seg, "down", "left", 100, 100), ord(" ")]
    out = tmp_path / "out"
    code, reports = _run(paths, samples, out, FakeGui(script))
    assert code == 0
    saved = {r["image"] for r in reports if r.get("kind") == "labels"}
    assert saved == {str(p) for p in paths}
    for r in reports:
        if r.get("kind") == "mask":
            m = cv2.imread(r["file"], cv2.IMREAD_UNCHANGED)
            assert m.shape == load_rgb(r["image"]).shape[:2]  # full resolution, orientation applied


def test_no_display_exits_2_with_message(tmp_path):
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((20, 20, 3), np.uint8))
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    r = subprocess.run([sys.executable, "-m", "segdeck", "annotate", "paint", str(img)], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "no display" in r.stderr and "ssh -X" in r.stderr and "DISPLAY" in r.stderr
    assert "Traceback" not in r.stderr and "Aborted" not in r.stderr
    # an unreachable display is caught too
    env["DISPLAY"] = ":4321"
    r = subprocess.run([sys.executable, "-m", "segdeck", "annotate", "paint", str(img)], env=env,
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 2 and "cannot connect to DISPLAY=:4321" in r.stderr


def test_sam_without_model_exits_2(tmp_path, monkeypatch):
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((20, 20, 3), np.uint8))
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", XDG_CACHE_HOME=str(tmp_path / "cache"),
               SEGDECK_CACHE=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, "-m", "segdeck", "annotate", "sam", str(img), "--model", "no-such-model"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert len(r.stderr.strip().splitlines()) <= 3 and "Traceback" not in r.stderr
    assert "no-such-model" in r.stderr


def test_sam_offline_says_why_and_what_to_run_and_help_has_no_paint_example(tmp_path):
    """Issue 15 item 8: offline, ``annotate sam`` said "(downloads disabled)"; now it tries the
    download like ``run automask`` and says why it failed, the URL and the import command."""
    from segdeck.core.models import get_spec

    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((20, 20, 3), np.uint8))
    dead = "http://127.0.0.1:9"  # nothing listens there: the download fails at once, also with a network
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen", XDG_CACHE_HOME=str(tmp_path / "cache"),
               SEGDECK_CACHE=str(tmp_path / "cache"), HTTPS_PROXY=dead, HTTP_PROXY=dead, https_proxy=dead,
               http_proxy=dead)
    for key in ("NO_PROXY", "no_proxy"):
        env.pop(key, None)
    r = subprocess.run([sys.executable, "-m", "segdeck", "annotate", "sam", str(img)], env=env,
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 2 and "Traceback" not in r.stderr
    err = " ".join(r.stderr.split())
    assert "downloads disabled" not in err and "(no connection)" in err
    assert get_spec("sam2.1-tiny").url in err and "segdeck models import sam2.1-tiny FILE" in err
    for mode in ("sam", "grabcut"):
        r = subprocess.run([sys.executable, "-m", "segdeck", "annotate", mode, "--help"], capture_output=True,
                           text=True, timeout=60)
        assert r.returncode == 0 and "region_size" not in r.stdout and "--set" not in r.stdout


def test_wheel_zoom_pan_keys_and_click_mapping(three_regions):
    from segdeck.annotate.gui import STATUS_BAR

    img, labels = three_regions
    st = PaintState(labels)
    seg = PaintWindow.SEG
    gui = FakeGui([])
    win = PaintWindow(st, img, gui=gui, max_window=(192, 128 + STATUS_BAR))  # scale 2: display 192x128
    assert (win.view.dw, win.view.dh) == (192, 128)
    gui.callbacks = {}
    win.gui.open(seg, win._callback(seg))
    cb = win._callback(seg)
    cb(("wheel-up", None, False), 10, 10, 0)  # zoom in around image (5, 5)
    assert win.view.zoom > 1.0
    x, y = win.view.to_image(10, 10)
    assert abs(x - 5) <= 1 and abs(y - 5) <= 1  # the point under the pointer stays put
    before = win.view.origin()
    assert win.on_key(0xFF53)  # right arrow pans
    assert win.view.origin()[0] > before[0]
    u, v = win.view.to_display(80, 30)  # a pixel of segment 3, wherever the view is now
    if 0 <= u < win.view.dw and 0 <= v < win.view.dh:
        cb(("down", "left", False), u, v, 0)
        assert st.seg_color[3] == 1
    assert win.on_key(ord("0")) and win.view.zoom == 1.0
    assert not win.on_key(0xFF53)  # nothing to pan at zoom 1
    win.on_key(ord("d"))  # debug view: full recompose, still consistent
    assert st.debug and "debug" in win.status_text()


def test_wheel_delta_from_real_highgui_flags(monkeypatch):
    """Issue 15 item 1: the pip wheels have no cv2.getMouseWheelDelta; the step is decoded
    from the flags as highgui packs them (delta << 16 | modifier flags, a C int)."""
    from segdeck.annotate.gui import Gui, wheel_delta

    monkeypatch.delattr(cv2, "getMouseWheelDelta", raising=False)
    gui = Gui()

    def c_int(v):  # what the C int looks like in Python: negative when the delta is
        v &= 0xFFFFFFFF
        return v - (1 << 32) if v & 0x80000000 else v

    for delta in (120, -120, 240, -360, 1, -1):
        flags = c_int((delta << 16) | cv2.EVENT_FLAG_CTRLKEY)
        assert wheel_delta(flags) == delta and wheel_delta(flags & 0xFFFFFFFF) == delta
        kind, button, ctrl = gui.mouse_event(cv2.EVENT_MOUSEWHEEL, flags)
        assert kind == ("wheel-up" if delta > 0 else "wheel-down") and button is None and ctrl
    assert gui.mouse_event(cv2.EVENT_MOUSEWHEEL, cv2.EVENT_FLAG_SHIFTKEY)[0] is None  # no step: nothing
    assert gui.mouse_event(cv2.EVENT_LBUTTONDOWN, cv2.EVENT_FLAG_LBUTTON) == ("down", "left", False)
    monkeypatch.setattr(cv2, "getMouseWheelDelta", lambda flags: -120, raising=False)  # a build that has it
    assert gui.mouse_event(cv2.EVENT_MOUSEWHEEL, 0)[0] == "wheel-down"


def test_every_window_shows_key_hints_from_the_keymap(tmp_path):
    from segdeck.annotate.grabcut import GrabCutWindow
    from segdeck.annotate.gui import STATUS_BAR, fit_hints
    from segdeck.annotate.keymap import load_keymap
    from segdeck.annotate.sam import SamWindow

    img = _square_image()
    labels = np.ones(img.shape[:2], np.int32)
    paint = PaintWindow(PaintState(labels), img, gui=FakeGui([]), max_window=(400, 300))
    grab = GrabCutWindow(GrabCutState(img), gui=FakeGui([]), max_window=(400, 300))
    sam = SamWindow(SamState(img, FakeEngine()), gui=FakeGui([]), max_window=(400, 300))
    assert paint.hints[:4] == ["L fill", "R unfill", "1-9 colour", "space save+next"] and "q quit" in paint.hints
    assert grab.hints[:3] == ["M-drag rectangle", "L-drag fg", "R-drag bg"] and "space iterate" in grab.hints
    assert sam.hints[:3] == ["L +point", "R -point", "M-drag box"] and "f finish" in sam.hints
    for win, name in ((paint, PaintWindow.SEG), (grab, GrabCutWindow.ANN), (grab, GrabCutWindow.SEG), (sam, SamWindow.WIN)):
        frame = win.draw(name)
        hint_row = frame[-STATUS_BAR // 2 :]
        assert (hint_row != hint_row[0, 0]).any(), f"no hint line drawn in {name}"
    assert fit_hints(paint.hints, 100) == "L fill  R unfill"  # what does not fit is left out
    user = tmp_path / "keymap.toml"
    user.write_text('[paint.save_next]\nkeys = ["s"]\n[sam.box]\nmouse = ["ctrl+left-drag"]\n', encoding="utf-8")
    km = load_keymap("default", user_file=user)
    assert "s save+next" in PaintWindow(PaintState(labels, keymap=km), img, gui=FakeGui([])).hints
    assert "ctrl+L-drag box" in SamWindow(SamState(img, FakeEngine(), km), gui=FakeGui([])).hints


def test_max_window_and_window_placement_fit_the_screen():
    """Issue 15 item 9: on a 1366x768 screen the default window (1280x800) put the status
    bar of a 12 MP photo off the screen and a panorama's colour window 166 px outside it."""
    from segdeck.annotate.gui import STATUS_BAR, View, default_max_window, place_next_to

    screen = (1366, 768)
    bound = default_max_window(screen)
    assert bound == (1280, 688) and default_max_window((2560, 1440)) == (1280, 800)
    for size in ((4000, 3000), (8000, 2000), (3000, 4000)):  # 12 MP photo, panorama, portrait
        view = View(size, bound)
        win = (view.dw, view.dh + STATUS_BAR)
        assert win[0] <= screen[0] and win[1] <= screen[1] - 80  # status bar on the screen
        x, y = place_next_to(win, (PaintWindow.COL_WIDTH, 330), screen)
        assert 0 <= x and x + PaintWindow.COL_WIDTH <= screen[0] and y + 330 <= screen[1], (size, x, y)
    assert place_next_to((864, 688), (240, 330), screen) == (876, 0)  # room to the right: beside it
    assert place_next_to((1280, 360), (240, 330), screen) == (0, 404)  # panorama: below it
    assert place_next_to((900, 688), (900, 688), screen) == (1366 - 16 - 900, 0)  # no room: on the screen
    assert place_next_to((1280, 688), (240, 330), None) == (1292, 0)  # screen unknown: beside


def test_idle_loop_sleeps_instead_of_polling_after_inactivity(three_regions):
    import time

    img, labels = three_regions
    st = PaintState(labels)
    gui = FakeGui([-1, -1, _click(PaintWindow.SEG, "down", "left", 10, 10), -1, -1, ord("q")])
    waits = []
    real_wait, real_idle = gui.wait_key, gui.idle_wait
    gui.wait_key = lambda ms: waits.append(("wait", ms)) or real_wait(ms)
    gui.idle_wait = lambda ms: waits.append(("idle", ms)) or real_idle(ms)
    win = PaintWindow(st, img, gui=gui, max_window=(400, 300))
    win.idle_after = 0.05
    win.last_input = time.monotonic() - 10
    assert not win.busy() and win.pause_ms() == win.idle_max_ms
    win.last_input = time.monotonic()
    assert win.busy()
    win.last_input = time.monotonic() - win.idle_after - 0.5
    assert win.wait_ms < win.pause_ms() < win.idle_max_ms  # ramps up over a second
    orig_run_wait = win.gui.wait_key

    def slow_first(ms):  # the user pauses before anything happens
        time.sleep(0.08)
        return orig_run_wait(ms)

    win.gui.wait_key = slow_first
    assert win.run() == "quit"
    kinds = [k for k, _ in waits]
    assert "idle" in kinds  # paused: slept instead of polling
    assert st.seg_color[1] == 1


def test_sam_window_shows_the_pending_mask_when_the_engine_frees():
    import threading

    from segdeck.annotate.sam import SamWindow

    img = _square_image()
    lock = threading.Lock()
    st = SamState(img, FakeEngine(), engine_lock=lock)
    lock.acquire()  # the image embedding is still being computed
    gui = FakeGui([_click(SamWindow.WIN, "down", "left", 100, 80), -1, lambda g: lock.release(), -1, -1, ord("q")])
    win = SamWindow(st, gui=gui, max_window=(400, 300))
    assert win.run() == "quit"
    x, y = win.view.to_image(100, 80)
    assert not st.stale and st.mask is not None and st.mask[y, x]
    assert gui.shown.count(SamWindow.WIN) >= 3  # first frame, the point, then the mask


def test_template_key_in_window():
    from segdeck.annotate.template import TemplateSpec, derive_mask

    img, tpl, spots = _scene()
    labels = np.ones(img.shape[:2], np.int32)
    st = PaintState(labels)
    spec = TemplateSpec(template=tpl, segment=tpl, attention=derive_mask(tpl), mask=derive_mask(tpl), threshold=0.95)
    win = PaintWindow(st, img, gui=FakeGui([]), template=spec, max_window=(400, 300))
    assert win.on_key(ord("t"))
    assert "3 match" in st.message
    assert (st.colour_map() == 1).sum() == 3 * derive_mask(tpl).sum()
    win2 = PaintWindow(PaintState(labels), img, gui=FakeGui([]), max_window=(400, 300))
    win2.on_key(ord("t"))
    assert "--template" in win2.state.message


class FakeAutoEngine(FakeEngine):
    def generate(self, image, params=None):
        h, w = image.shape[:2]
        a = np.zeros((h, w), bool)
        a[: h // 2] = True
        b = np.zeros((h, w), bool)
        b[h // 4 : h // 2, : w // 2] = True
        return type("G", (), {"masks": np.stack([b, a])})()


def test_sam_auto_source_and_sam_prefetch(tmp_path):
    import threading

    src = tmp_path / "in"
    src.mkdir()
    for name in ("a.png", "b.png"):
        cv2.imwrite(str(src / name), _square_image()[:, :, ::-1])
    paths = sorted(src.glob("*.png"))
    seg = PaintWindow.SEG
    # sam-auto: segments from automatic masks; click the small mask (drawn over the big one)
    gui = FakeGui([_click(seg, "down", "left", 20, 70), ord(" "), ord("q")])
    opts = Options(method="sam-auto", out_dir=tmp_path / "auto", root=src, max_window=(320, 240),
                   engine=FakeAutoEngine())
    reports = []
    assert run_annotate(paths, opts, gui=gui, report=reports.append, log=lambda m: None) == 0
    from segdeck.core.imageio import read_label_map

    lm = read_label_map(tmp_path / "auto" / "a.png.labels.png")
    assert lm[30, 10] == 1 and lm[10, 10] == 0 and lm[70, 10] == 0
    # sam: prompts, predict, finish; the next image's embedding is computed in the background
    calls = []

    class Recording(FakeEngine):
        def set_image(self, image):
            calls.append(threading.current_thread().name)
            super().set_image(image)

    from segdeck.annotate.sam import SamWindow

    win = SamWindow.WIN
    script = [_click(win, "down", "left", 160, 120), ord(" "), ord("f"), -1, -1, ord(" ")]
    script += [lambda g: __import__("time").sleep(0.3), ord("q")]
    opts = Options(method="sam", out_dir=tmp_path / "sam", root=src, max_window=(320, 240),
                   engine=Recording())
    assert run_annotate(paths, opts, gui=FakeGui(script), report=reports.append, log=lambda m: None) == 0
    assert "segdeck-sam-embed" in calls and "segdeck-sam-prefetch" in calls
    m = cv2.imread(str(tmp_path / "sam" / f"a.png.mask-1-{colour_hex(PALETTE[1])}.png"), cv2.IMREAD_UNCHANGED)
    from segdeck.annotate.gui import View

    x, y = View((100, 80), (320, 240)).to_image(160, 120)  # where the click landed
    assert m.shape == (80, 100) and m[y, x] == 255 and m[0, 0] == 0 and (m > 0).sum() < 200


def test_template_files_derive_attention_and_cli_checks(tmp_path):
    from PIL import Image

    from segdeck.annotate.template import load_spec

    rgba = np.zeros((10, 12, 4), np.uint8)
    rgba[2:8, 3:9] = (200, 100, 50, 255)
    Image.fromarray(rgba).save(tmp_path / "t.png")
    seg = np.zeros((10, 12, 3), np.uint8)
    seg[4:6, 4:6] = PALETTE[2]
    Image.fromarray(seg).save(tmp_path / "s.png")
    spec = load_spec(tmp_path / "t.png", tmp_path / "s.png", threshold=0.8)
    assert spec.attention.sum() == 36 and spec.mask.sum() == 4 and spec.threshold == 0.8
    Image.fromarray(np.zeros((5, 5, 3), np.uint8)).save(tmp_path / "small.png")
    with pytest.raises(ValueError):
        load_spec(tmp_path / "t.png", tmp_path / "small.png")
    img = tmp_path / "a.png"
    cv2.imwrite(str(img), np.zeros((20, 20, 3), np.uint8))
    env = dict(os.environ, QT_QPA_PLATFORM="offscreen")
    for extra, needle in ((["--template", str(tmp_path / "t.png"), "--segment", str(tmp_path / "small.png")], "must match"),
                          (["--method", "nope"], "unknown segment source"),
                          (["--set", "nonsense"], "KEY=VALUE"),
                          (["--max-window", "huge"], "WIDTHxHEIGHT")):
        r = subprocess.run([sys.executable, "-m", "segdeck", "annotate", "paint", str(img), *extra], env=env,
                           capture_output=True, text=True, timeout=60)
        assert r.returncode == 2 and needle in r.stderr and "Traceback" not in r.stderr, r.stderr


def test_unreadable_image_is_reported_and_skipped(tmp_path):
    src = tmp_path / "in"
    src.mkdir()
    (src / "a_bad.jpg").write_bytes(b"not a jpeg at all")
    cv2.imwrite(str(src / "b_good.png"), _square_image()[:, :, ::-1])
    from segdeck.core.imageio import discover

    seg = PaintWindow.SEG
    gui = FakeGui([_click(seg, "down", "left", 100, 100), ord(" ")])
    code, reports = _run(discover(src), src, tmp_path / "out", gui)
    assert code == 1
    errors = [r for r in reports if r["event"] == "error"]
    assert len(errors) == 1 and errors[0]["image"].endswith("a_bad.jpg") and "a_bad.jpg" in errors[0]["error"]
    assert any(r.get("kind") == "labels" and r["image"].endswith("b_good.png") for r in reports)
    assert reports[-1] == {"event": "done", "images": 2, "saved_images": 1, "failed": 1, "out_dir": str(tmp_path / "out")}


@pytest.mark.slow
def test_sam_launch_prints_no_torch_warnings(tmp_path):
    """Issue 15 item 9: every SAM launch printed torch's `torch.jit.script` FutureWarning and
    torchvision's "NumPy array is not writable" warning (a read-only image, as PIL decodes it)."""
    pytest.importorskip("sam2")
    script = tmp_path / "launch.py"
    script.write_text(textwrap.dedent(f"""
        import os, sys, warnings
        sys.path.insert(0, {str(Path(__file__).resolve().parent)!r})
        os.environ["SEGDECK_MODEL_DIR"] = {str(tmp_path / "models")!r}
        from test_sam import install_random_model, test_image
        install_random_model("sam2.1-tiny", {str(tmp_path / "models")!r})
        warnings.simplefilter("default")
        from segdeck.core.sam import open_engine
        eng = open_engine("sam2.1-tiny", "cpu")
        img = test_image(64, 80)
        img.flags.writeable = False
        eng.set_image(img)
        print("ok")
        """), encoding="utf-8")
    env = dict(os.environ, SEGDECK_CACHE=str(tmp_path / "cache"), XDG_CACHE_HOME=str(tmp_path / "cache"))
    r = subprocess.run([sys.executable, "-W", "default", str(script)], env=env, capture_output=True, text=True,
                       timeout=240)
    assert r.returncode == 0 and r.stdout.strip() == "ok", r.stderr[-2000:]
    assert "torch.jit.script" not in r.stderr and "not writable" not in r.stderr, r.stderr[-2000:]


# -- closing a window with the window manager's X --------------------------------------------
class ClosableGui(FakeGui):
    """A :class:`FakeGui` whose windows the user can close (the title bar's X): a
    script item ``_close(name)`` closes one; ``open`` shows it again (counted)."""

    def __init__(self, script):
        super().__init__(script)
        self.closed: set[str] = set()
        self.opened: list[str] = []

    def open(self, name, cb, position=None):
        super().open(name, cb, position)
        self.closed.discard(name)
        self.opened.append(name)

    def is_open(self, name):
        return name not in self.closed


def _close(window):
    def act(gui):
        gui.closed.add(window)

    return act


def test_state_window_closed_is_the_quit_key(three_regions):
    _, labels = three_regions
    st = PaintState(labels)
    assert st.window_closed() and st.outcome == "quit"  # nothing painted: the session ends
    st = PaintState(labels)
    st.mouse("down", "left", 5, 5)
    assert not st.window_closed() and st.outcome is None  # unsaved: asks first
    assert st.confirming == "quit" and "close again" in st.message and "space saves" in st.message
    assert st.window_closed() and st.outcome == "quit"  # closed again: quits without saving
    st = PaintState(labels)
    st.mouse("down", "left", 5, 5)
    st.key(ord("q"))  # q asked; closing the window now confirms like a second q
    assert st.window_closed() and st.outcome == "quit"
    st = PaintState(labels, unsaved=True)  # a mask handed over by GrabCut / SAM
    assert not st.window_closed() and st.outcome is None


def test_x_close_with_unsaved_painting_reopens_and_asks(three_regions):
    """Known defect: closing the paint window with the window manager's X ended the run
    and dropped unsaved painting, while ``q`` asks. Now the window comes back with the
    question; a second close quits, and a close without painting quits at once."""
    img, labels = three_regions
    seg, col = PaintWindow.SEG, PaintWindow.COL
    gui = ClosableGui([_click(seg, "down", "left", 10, 10), -1, _close(seg), -1, -1])
    st = PaintState(labels)
    win = PaintWindow(st, img, gui=gui, max_window=(400, 300))
    gui.script.append(lambda g: setattr(g, "asked", (win.outcome, st.confirming, win.status_text())))
    gui.script += [-1, _close(seg), -1]
    assert win.run() == "quit"
    outcome, confirming, status = gui.asked
    assert outcome is None and confirming == "quit", "the close ended the session without asking"
    assert "close again or q to quit without saving" in status
    assert gui.opened == [seg, col, seg], gui.opened  # the closed window was opened again
    assert gui.shown[-2:] == [seg, col]  # and drawn again, the question in its status bar
    # nothing painted: a close ends the session at once, no window comes back
    gui = ClosableGui([-1, _close(col), -1, ord("n")])
    win = PaintWindow(PaintState(labels), img, gui=gui, max_window=(400, 300))
    assert win.run() == "quit" and gui.opened == [seg, col]
    # the colour window's X asks as well
    gui = ClosableGui([_click(seg, "down", "left", 10, 10), -1, _close(col), -1, ord("z"), -1, -1])
    win = PaintWindow(PaintState(labels), img, gui=gui, max_window=(400, 300))
    assert win.run() == "quit" and gui.opened == [seg, col, col]


def test_x_close_then_space_keeps_the_painting(tmp_path):
    from segdeck.core.imageio import read_label_map

    img = _square_image()
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "sq.png"), img[:, :, ::-1])
    out = tmp_path / "out"
    seg = PaintWindow.SEG
    gui = ClosableGui([ord("2"), _click(seg, "down", "left", 160, 120), -1, _close(seg), -1, ord(" ")])
    code, reports = _run([src / "sq.png"], src, out, gui)
    assert code == 0
    assert any(r.get("kind") == "labels" for r in reports if r["event"] == "saved")
    assert set(np.unique(read_label_map(out / "sq.png.labels.png"))) == {0, 2}
