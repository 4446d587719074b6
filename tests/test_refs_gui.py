"""``segdeck annotate refs SPEC`` once through the real window under Xvfb, driven with
xdotool, on a random-weight SAM 2.1-tiny checkpoint: click a candidate mask, type a
two-digit object ID, save; the saved reference label map holds that ID on exactly that
candidate's pixels. The candidates are arbitrary (random weights), so the test reads
them from the window's own candidate cache and picks a pixel where that candidate is
the smallest one (the selection rule)."""

from __future__ import annotations

import os
import shutil
import sys
import time

import numpy as np
import pytest
from test_annotate_gui import Driver, xdisplay  # noqa: F401 - the Xvfb fixture (direct and TCP relay)

from segdeck.annotate.gui import STATUS_BAR
from segdeck.core import imageio
from segdeck.core import models as M

pytestmark = [
    pytest.mark.gui,
    pytest.mark.slow,
    pytest.mark.skipif(not (shutil.which("Xvfb") and shutil.which("xdotool")), reason="needs Xvfb and xdotool"),
]

SEGDECK = [sys.executable, "-m", "segdeck"]
H, W = 96, 128


def write_project(tmp_path):
    from test_sam import test_image

    root = tmp_path / "imgs"
    root.mkdir()
    imageio.write_image(root / "one.png", test_image(H, W))
    imageio.write_image(root / "two.png", np.ascontiguousarray(test_image(H, W)[:, ::-1]))
    (tmp_path / "meta.csv").write_text("id,file\nk1,one.png\nk2,two.png\n", encoding="utf-8")
    spec = tmp_path / "proj.toml"
    spec.write_text('csv = "meta.csv"\nkey = "id"\npath = "file"\nroot = "imgs"\nreferences = 1\nseed = 0\n',
                    encoding="utf-8")
    return spec


@pytest.mark.timeout(240)
@pytest.mark.parametrize("xdisplay", ["direct"], indirect=True)
def test_click_a_candidate_type_an_id_and_save(xdisplay, tmp_path):  # noqa: F811 - the imported fixture
    from test_sam import random_checkpoint

    from segdeck.annotate.refs import ProjectRefs, RefImage
    from segdeck.core.propagate import load_project

    spec = write_project(tmp_path)
    project = load_project(spec)
    ref = ProjectRefs(project).references()[0]
    ckpt, _ = random_checkpoint("sam2.1-tiny")
    env = {**xdisplay, M.ENV_MODEL_DIR: str(tmp_path / "models"), "HTTPS_PROXY": "http://127.0.0.1:9",
           "https_proxy": "http://127.0.0.1:9"}
    # scale 2: image pixel (x, y) is display pixel (2x, 2y)
    d = Driver(SEGDECK + ["annotate", "refs", str(spec), "--model", "sam2.1-tiny", "--checkpoint", str(ckpt),
                          "--set", "points_per_side=4", "--set", "pred_iou_thresh=0", "--set",
                          "stability_score_thresh=0", "--max-window", f"{2 * W}x{2 * H + STATUS_BAR}"], env, tmp_path)
    try:
        win = d.window("segdeck refs", timeout=120)
        cache = project.refs_dir / ".candidates"
        deadline = time.time() + 120
        while not list(cache.glob("*.npz")) and time.time() < deadline and d.proc.poll() is None:
            time.sleep(0.2)
        files = list(cache.glob("*.npz"))
        assert len(files) >= 1, f"no candidates were computed: {d.stderr()}"
        with np.load(files[0]) as z:
            n = int(z["count"])
            masks = np.unpackbits(z["bits"], count=n * H * W).reshape(n, H, W).astype(bool)
        assert n > 0, "the random-weight model gave no candidate masks"
        # the candidate to label and a pixel where it is the smallest candidate (the click rule)
        img = RefImage.build(ref, np.zeros((H, W, 3), np.uint8), masks)
        pick = None
        for k in np.argsort([m.sum() for m in masks]):
            ys, xs = np.nonzero(masks[k])
            for y, x in zip(ys[:: max(1, len(ys) // 50)], xs[:: max(1, len(xs) // 50)], strict=True):
                if img.hits(int(x), int(y))[0] == k:
                    pick = (int(k), int(x), int(y))
                    break
            if pick:
                break
        assert pick is not None
        k, x, y = pick
        time.sleep(1.0)  # the loaded reference reaches the window on its next idle turn
        d.click(win, 2 * x + 1, 2 * y + 1)
        d.key(win, "1")
        d.key(win, "2")
        d.key(win, "Return")
        d.key_until(win, "space", lambda: d.saved("reference") >= 1, wait=10)
        d.key_until(win, "q", lambda: d.proc.poll() is not None)
        code, lines = d.finish(timeout=60)
    finally:
        d.kill()
    assert code == 0, d.stderr()
    assert "Traceback" not in d.stderr()
    saved = [e for e in lines if e.get("event") == "saved"]
    assert len(saved) == 1 and saved[0]["key"] == ref.key and saved[0]["ids"] == [12]
    assert saved[0]["progress"] == "group all: 1/1 references labelled"
    assert lines[-1]["event"] == "done" and lines[-1]["saved_references"] == 1
    group = project.groups[0]
    lm, entry = ProjectRefs(project).store.load(group, ref.key)
    assert entry.ids == (12,) and lm.shape == (H, W)
    assert ((lm == 12) == masks[k]).all(), "ID 12 is not exactly on the clicked candidate's pixels"
    assert os.path.basename(saved[0]["file"]) == f"{ref.key}.png"
