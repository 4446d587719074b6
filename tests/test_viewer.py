"""``segdeck view``: which image goes with which label map (job folders, annotation
folders, a mask, an image), the viewer's state, and once through the real window under
Xvfb (n moves on, o toggles the overlay, q closes)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from test_annotate_gui import xdisplay  # noqa: F401 - the Xvfb fixture (direct and TCP relay)

from segdeck.annotate.keymap import load_keymap
from segdeck.annotate.viewer import ViewerState, ViewItem, load_item, resolve
from segdeck.core import imageio
from segdeck.core.errors import SegdeckError

SEGDECK = [sys.executable, "-m", "segdeck"]


def blocks(seed: int, h=60, w=80) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, 3), np.uint8)
    img[: h // 2, : w // 2], img[: h // 2, w // 2 :] = (200, 30, 30), (30, 200, 40)
    img[h // 2 :, : w // 2], img[h // 2 :, w // 2 :] = (20, 40, 210), (240, 240, 240)
    return (img.astype(np.int16) + rng.integers(0, 10, img.shape)).clip(0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def job(tmp_path_factory):
    """A segment job over three images (one in a sub-folder): (input folder, job folder)."""
    from segdeck.core.jobs.runner import job_dir_for, run_job
    from segdeck.core.segment import SegmentJob, SegmentParams

    src = tmp_path_factory.mktemp("view") / "photos"
    (src / "sub").mkdir(parents=True)
    imageio.write_image(src / "a.png", blocks(1))
    imageio.write_image(src / "b.png", blocks(2, 40, 70))
    imageio.write_image(src / "sub" / "c.png", blocks(3))
    params = SegmentParams(method="felzenszwalb")
    job_dir = job_dir_for(SegmentJob, params, src, None)
    assert run_job(SegmentJob(params, src, job_dir)).status == "done"
    return src, job_dir


def test_job_folder_mask_and_image_find_their_pairs(job):
    src, job_dir = job
    items, start = resolve(job_dir)
    assert start == 0
    assert [(it.name, it.image) for it in items] == [
        ("a.png", src / "a.png"), ("b.png", src / "b.png"), ("sub__c.png", src / "sub" / "c.png")]
    assert all(it.mask == job_dir / f"{it.name}.labels.png" for it in items)
    items, start = resolve(job_dir / "b.png.labels.png")  # a mask: its folder, starting there
    assert start == 1 and items[1].image == src / "b.png"
    items, start = resolve(src / "sub" / "c.png")  # an image: the result folder holding its mask
    assert items[start].mask == job_dir / "sub__c.png.labels.png"
    loaded = load_item(items[start])
    assert loaded.bgr.shape == (60, 80, 3) and loaded.labels.shape == (60, 80) and loaded.labels.max() >= 1
    assert loaded.note == ""


def test_annotation_folder_unknown_job_and_bad_paths(tmp_path):
    src = tmp_path / "pics"
    src.mkdir()
    imageio.write_image(src / "x.png", blocks(4))
    ann = tmp_path / "pics.segdeck" / "annotate-slic"
    ann.mkdir(parents=True)
    lm = np.zeros((60, 80), np.uint8)
    lm[10:20, 10:30] = 3
    imageio.write_label_map(ann / "x.png.labels.png", lm)
    items, _ = resolve(ann)
    assert items == [ViewItem("x.png", src / "x.png", ann / "x.png.labels.png")]
    items, start = resolve(src / "x.png")
    assert items[start].mask == ann / "x.png.labels.png"
    # a job folder whose job cannot be rebuilt: the label maps alone
    odd = tmp_path / "odd"
    odd.mkdir()
    (odd / "job.toml").write_text('job = "no-such-job"\ninput = "/nowhere"\n', encoding="utf-8")
    imageio.write_label_map(odd / "k1.labels.png", lm)
    items, _ = resolve(odd)
    assert items == [ViewItem("k1", None, odd / "k1.labels.png")]
    shown = load_item(items[0])
    assert shown.labels.shape == (60, 80) and "image not found" in shown.note
    alone = tmp_path / "alone.png"
    imageio.write_image(alone, blocks(5))
    assert resolve(alone) == ([ViewItem("alone.png", alone, None)], 0)
    with pytest.raises(SegdeckError, match="no such file"):
        resolve(tmp_path / "missing.png")
    with pytest.raises(SegdeckError, match="no label maps"):
        resolve(src)


def test_viewer_state_walks_toggles_and_cycles_opacity():
    items = [ViewItem(str(i), None, None) for i in range(3)]
    st = ViewerState(items, 2, load_keymap("default", user_file=False))
    st.action("next")
    assert st.index == 2 and st.message == "last image"
    st.action("previous")
    st.action("previous")
    st.action("previous")
    assert st.index == 0 and st.message == "first image"
    assert st.overlay and st.opacity == 0.5
    st.action("toggle_overlay")
    assert not st.overlay
    st.action("opacity")  # cycling the opacity shows the overlay again
    assert st.overlay and st.opacity == 0.75
    st.action("quit")
    assert st.outcome == "quit"
    assert st.keymap.key_action("viewer", ord("n")) == "next" and st.keymap.key_action("viewer", ord("0")) == "zoom_fit"


def test_no_display_is_one_line_and_exit_2(job):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    r = subprocess.run(SEGDECK + ["view", str(job[1])], env=env, capture_output=True, text=True, timeout=60)
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert r.returncode == 2 and len(lines) == 1 and "no display" in lines[0], r.stderr
    r = subprocess.run(SEGDECK + ["view", str(job[0] / "nope.png")], env=env, capture_output=True, text=True,
                       timeout=60)
    assert r.returncode == 2 and "no such file" in r.stderr and "Traceback" not in r.stderr


@pytest.mark.gui
@pytest.mark.timeout(120)
@pytest.mark.skipif(not (shutil.which("Xvfb") and shutil.which("xdotool")), reason="needs Xvfb and xdotool")
def test_viewer_window_next_and_overlay(job, xdisplay, tmp_path):  # noqa: F811 - the imported fixture
    from test_annotate_gui import Driver

    src, job_dir = job
    d = Driver(SEGDECK + ["view", str(job_dir), "--max-window", "400x300"], xdisplay, tmp_path)
    try:
        win = d.window("segdeck view")

        def shown():
            return [e for e in d.events() if e.get("event") == "shown"]

        assert shown()[0]["index"] == 0 and shown()[0]["image"] == str(src / "a.png")
        d.key_until(win, "n", lambda: len(shown()) >= 2)
        assert shown()[-1]["index"] == 1 and shown()[-1]["image"] == str(src / "b.png")
        assert shown()[-1]["mask"] == str(job_dir / "b.png.labels.png") and shown()[-1]["overlay"] is True
        d.key_until(win, "o", lambda: len(shown()) >= 3)
        assert shown()[-1]["overlay"] is False and shown()[-1]["index"] == 1
        d.key_until(win, "q", lambda: d.proc.poll() is not None)
        code, _ = d.finish()
    finally:
        d.kill()
    assert code == 0, d.stderr()
    assert "Traceback" not in d.stderr()


def test_propagate_job_folder_finds_images_through_the_spec(tmp_path):
    """A propagate job's ``<key slug>.labels.png``: the image of that key's CSV row, also
    when the job no longer lists the item (here: no references, so no targets)."""
    root = tmp_path / "imgs"
    (root / "s 1").mkdir(parents=True)
    imageio.write_image(root / "s 1" / "one.png", blocks(6))
    imageio.write_image(root / "two.png", blocks(7))
    (tmp_path / "meta.csv").write_text("id,file\nk/1,s 1/one.png\nk2,two.png\n", encoding="utf-8")
    spec = tmp_path / "proj.toml"
    spec.write_text('csv = "meta.csv"\nkey = "id"\npath = "file"\nroot = "imgs"\n', encoding="utf-8")
    job_dir = tmp_path / "proj.segdeck" / "propagate-x"
    job_dir.mkdir(parents=True)
    (job_dir / "job.toml").write_text(f'job = "propagate"\ninput = "{spec}"\n[params]\n', encoding="utf-8")
    lm = np.zeros((60, 80), np.uint8)
    lm[5:9, 5:9] = 2
    imageio.write_label_map(job_dir / "k-1.labels.png", lm)
    imageio.write_label_map(job_dir / "k2.labels.png", lm)
    items, _ = resolve(job_dir)
    assert [(it.name, it.image) for it in items] == [("k-1", root / "s 1" / "one.png"), ("k2", root / "two.png")]


def test_an_input_folder_or_spec_without_label_maps_names_its_results(tmp_path, monkeypatch):
    """`segdeck view` on the folder (or spec) a job ran on: one line naming the result
    folders that hold its label maps (the output root's, and a job run with --out
    elsewhere found through the recent jobs), newest first; none: the plain line."""
    from segdeck.core.jobs.registry import remember

    monkeypatch.setenv("SEGDECK_STATE_DIR", str(tmp_path / "state"))
    src = tmp_path / "pics"
    src.mkdir()
    imageio.write_image(src / "x.png", blocks(4))
    lm = np.zeros((60, 80), np.uint8)
    lm[10:20, 10:30] = 3
    ann = tmp_path / "pics.segdeck" / "annotate-slic"
    ann.mkdir(parents=True)
    imageio.write_label_map(ann / "x.png.labels.png", lm)
    (tmp_path / "pics.segdeck" / "empty-job").mkdir()  # no label maps: not named
    other = tmp_path / "elsewhere" / "segment-x"
    other.mkdir(parents=True)
    (other / "job.toml").write_text(f'job = "segment"\ninput = "{src}"\n', encoding="utf-8")
    imageio.write_label_map(other / "x.png.labels.png", lm)
    imageio.write_label_map(other / "y.png.labels.png", lm)
    remember(other)
    os.utime(ann, (1, 1))  # older than the --out job
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SegdeckError) as err:
        resolve(src)
    line = str(err.value)
    assert "\n" not in line and line.startswith(f"{src}: no label maps")
    assert line.endswith("its results: elsewhere/segment-x (2 label maps), "
                         "pics.segdeck/annotate-slic (1 label map): segdeck view FOLDER"), line
    with pytest.raises(SegdeckError, match=r"folder; its results: pics.segdeck/annotate-slic \(1 label map\)"):
        resolve(tmp_path / "pics.segdeck")  # the output root itself
    spec = tmp_path / "p.toml"
    spec.write_text('csv = "m.csv"\n', encoding="utf-8")
    job = tmp_path / "p.segdeck" / "propagate-a"
    job.mkdir(parents=True)
    imageio.write_label_map(job / "k1.labels.png", lm)
    with pytest.raises(SegdeckError, match=r"not an image.*its results: p.segdeck/propagate-a \(1 label map\)"):
        resolve(spec)
    lonely = tmp_path / "lonely"
    lonely.mkdir()
    with pytest.raises(SegdeckError) as err:
        resolve(lonely)
    assert str(err.value) == f"{lonely}: no label maps (*.labels.png) in this folder"


def test_a_reference_store_shows_each_reference_over_its_image(tmp_path):
    """`segdeck view P.refs` (or a group folder, or one reference's PNG): the labelled
    references of `annotate refs` over their images, found through the spec; an image
    beside an unrelated JSON (LabelMe) stays an image."""
    from segdeck.core.propagate import ReferenceStore, load_project

    photos = tmp_path / "photos"
    for k in ("a", "b", "c"):
        imageio.write_image(photos / "g1" / f"{k}.png", blocks(4))
    (tmp_path / "m.csv").write_text("id,grp\na,g1\nb,g1\nc,g1\n", encoding="utf-8")
    spec = tmp_path / "p.toml"
    spec.write_text('csv = "m.csv"\nkey = "id"\ntemplate = "{grp}/{id}.png"\ngroup_by = ["grp"]\n'
                    'root = "photos"\nreferences = 2\n', encoding="utf-8")
    project = load_project(spec)
    store = ReferenceStore(project.refs_dir)
    lm = np.zeros((60, 80), np.uint8)
    lm[5:25, 5:25] = 2
    group = project.groups[0]
    for key in ("a", "c"):
        store.save(group, key, lm, image=project.row(key).relpath)
    (project.refs_dir / ".candidates").mkdir()
    (project.refs_dir / group.slug / "references.json").write_text('{"keys": ["a", "c"], "turn": 0}')
    gdir = project.refs_dir / group.slug
    want = [ViewItem("a", photos / "g1" / "a.png", gdir / "a.png"), ViewItem("c", photos / "g1" / "c.png", gdir / "c.png")]
    assert resolve(project.refs_dir) == (want, 0)
    assert resolve(gdir) == (want, 0)
    assert resolve(gdir / "c.png") == (want, 1)
    shown = load_item(want[1])
    assert shown.note == "" and (shown.labels == lm).all()
    # a photo beside a LabelMe JSON is an image, not a reference
    other = tmp_path / "lm"
    imageio.write_image(other / "x.png", blocks(3))
    (other / "x.json").write_text('{"shapes": [], "imagePath": "x.png"}')
    assert resolve(other / "x.png") == ([ViewItem("x.png", other / "x.png", None)], 0)


def test_a_narrow_viewer_shows_the_notes_before_the_state(tmp_path):
    """A long flattened name in a narrow (portrait) window: the note that the image was
    not found comes first, where the bar does not cut it; a wide bar keeps the order."""
    from segdeck.annotate.refs import status_text_width
    from segdeck.annotate.viewer import ViewerWindow

    lm = np.zeros((200, 60), np.uint8)
    lm[10:50, 10:40] = 1
    name = "specimens__2024__drawer-17__tray-B__" + "x" * 40 + ".jpg"
    mask = tmp_path / f"{name}.labels.png"
    imageio.write_label_map(mask, lm)
    st = ViewerState([ViewItem(name, None, mask)], 0, load_keymap("default", user_file=False))
    win = ViewerWindow(st, max_window=(400, 700), gui=object())
    width = win.view.dw
    assert width < 400
    narrow = win.status_text(width)
    assert narrow.startswith("image not found | 1/1 specimens__2024"), narrow
    assert status_text_width("image not found") < width
    wide = win.status_text(5000)
    assert wide == f"1/1 {name} | 1 object(s) | overlay 50% | image not found"
    assert win.draw("segdeck view").shape[1] == width
