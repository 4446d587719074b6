"""``scripts/screenshots.py`` makes the README's pictures from the sample photos: run its
steps on one sample photo and check what they write (the paint frame is rendered by the
paint session's own drawing code, the TUI picture is Textual's SVG with the preview's
half-blocks in it)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


def load_script():
    spec = importlib.util.spec_from_file_location("screenshots", REPO / "scripts" / "screenshots.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


@pytest.mark.timeout(180)
def test_screenshot_steps_on_a_sample(tmp_path, monkeypatch):
    from segdeck.core.jobs import registry

    if "segment" not in registry.job_names():
        pytest.skip("the segment job is not importable in this install")
    from PIL import Image

    from segdeck.core.samples import write_samples

    monkeypatch.setenv("SEGDECK_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SEGDECK_PREVIEW", "halfcell")
    shots = load_script()
    samples = tmp_path / "all"
    write_samples(samples)
    photos = tmp_path / "photos"
    photos.mkdir()
    (samples / shots.PHOTO).rename(photos / shots.PHOTO)
    job_dir = shots.run_segment(photos, tmp_path / "photos.segdeck")
    out = tmp_path / "img"
    out.mkdir()
    overlay = shots.save_overlay(job_dir, out / "overlay.jpg")
    with Image.open(overlay) as im:
        assert max(im.size) <= 640 and im.size[0] > 100
    paint = shots.save_paint_window(photos, out / "paint.jpg")
    with Image.open(paint) as im:
        frame = np.asarray(im.convert("RGB"))
    assert frame.shape[1] > 900  # the segment window and the colour window beside it
    # painted segments: pixels mixed with colour 1 (red) in the picture
    r, g, b = (frame[..., k].astype(int) for k in range(3))
    assert ((r > g + 60) & (r > b + 60)).sum() > 500
    svg = shots.save_tui(photos, job_dir, out / "tui.svg").read_text(encoding="utf-8")
    assert svg.startswith("<svg") and svg.count("▀") > 100  # the preview's half-blocks
    assert "per&#160;item" in svg or "per item" in svg  # the job summary
