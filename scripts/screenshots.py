"""Regenerate the README's pictures in ``docs/img/`` from the sample photos.

* ``tui.svg``: the terminal app (Textual's SVG screenshot, ``App.save_screenshot``) on
  the sample folder, a finished ``segment`` job selected, its summary shown and its
  newest overlay in the preview pane (Unicode half-blocks, as over plain SSH);
* ``overlay.jpg``: one overlay the ``segment`` job wrote (region contours and labels);
* ``paint.jpg``: the paint window and its colour window, rendered offscreen by the
  paint session's own drawing code (:class:`segdeck.annotate.paint.PaintWindow` with a
  stand-in for the OpenCV window layer), a few segments filled in three colours.

Everything comes from ``segdeck samples`` (scikit-image's public-domain photos) and the
real jobs and drawing code, so the pictures follow the program when it changes.

Run: ``.venv/bin/python scripts/screenshots.py [--out docs/img]`` (about 20 s, no
display needed). The recent-jobs registry is pointed at a temporary folder, so the
jobs of the machine it runs on do not appear in the picture.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

#: The sample photo shown in the paint window and whose overlay is saved.
PHOTO = "chelsea.jpg"
#: Terminal size of the TUI screenshot (columns, rows).
TUI_SIZE = (140, 42)


class _OffscreenGui:
    """The part of :class:`segdeck.annotate.gui.Gui` a window touches before it runs:
    nothing is opened; the frames are taken from ``PaintWindow.draw``."""

    def open(self, name, on_mouse, position=None):
        pass

    def show(self, name, frame):
        pass

    def close(self, name):
        pass


def run_segment(photos: Path, out: Path) -> Path:
    """Run the ``segment`` job (Felzenszwalb) on the samples; its job folder."""
    from segdeck.core.jobs.registry import get_job_class
    from segdeck.core.jobs.runner import job_dir_for, run_job

    cls = get_job_class("segment")
    params = cls.Params(method="felzenszwalb")
    job_dir = job_dir_for(cls, params, photos, out)
    run_job(cls(params, photos, job_dir))
    return job_dir


def save_overlay(job_dir: Path, dest: Path, width: int = 640) -> Path:
    """Copy the overlay of :data:`PHOTO` (shrunk to ``width`` pixels) to ``dest``."""
    from PIL import Image

    src = next(p for p in sorted(job_dir.glob(f"{PHOTO}.overlay.*")))
    with Image.open(src) as im:
        im = im.convert("RGB")
        im.thumbnail((width, width))
        im.save(dest, quality=88)
    return dest


def save_paint_window(photos: Path, dest: Path) -> Path:
    """Render the paint session of :data:`PHOTO` offscreen, a few segments painted."""
    import cv2
    import numpy as np

    from segdeck.annotate.paint import PaintWindow
    from segdeck.annotate.state import PaintState
    from segdeck.core import imageio
    from segdeck.core.oversegment import segment

    image = imageio.load_rgb(photos / PHOTO)
    labels = segment(image, "slic", {}, max_side=1024)
    state = PaintState(labels)
    h, w = labels.shape
    # paint: the cat's face in colour 1, some background in 2, the floor in 3
    strokes = {1: [(0.52, 0.35), (0.58, 0.42), (0.47, 0.45), (0.55, 0.55), (0.62, 0.5)],
               2: [(0.1, 0.1), (0.2, 0.15), (0.15, 0.3), (0.9, 0.1)],
               3: [(0.3, 0.9), (0.5, 0.92), (0.7, 0.9)]}
    for colour, points in strokes.items():
        state.select_colour(colour)
        for fx, fy in points:
            x, y = int(fx * (w - 1)), int(fy * (h - 1))
            state.mouse("down", "left", x, y)
            state.mouse("up", "left", x, y)
    state.select_colour(1)
    window = PaintWindow(state, image, title=PHOTO, index=3, total=14, max_window=(900, 640), gui=_OffscreenGui())
    window._after(True)
    seg = window.draw(PaintWindow.SEG).copy()
    col = window.draw(PaintWindow.COL).copy()
    gap = 12
    canvas = np.full((max(seg.shape[0], col.shape[0]), seg.shape[1] + gap + col.shape[1], 3), 40, np.uint8)
    canvas[: seg.shape[0], : seg.shape[1]] = seg
    canvas[: col.shape[0], seg.shape[1] + gap:] = col
    cv2.imwrite(str(dest), canvas, [cv2.IMWRITE_JPEG_QUALITY, 88])  # BGR frames, as OpenCV shows them
    return dest


def save_tui(photos: Path, job_dir: Path, dest: Path) -> Path:
    """The app on the sample folder with ``job_dir`` selected and its overlay previewed."""
    from segdeck.tui.app import SegdeckApp
    from segdeck.tui.widgets.job_list import JobList
    from segdeck.tui.widgets.preview import PreviewPane

    async def main() -> None:
        app = SegdeckApp(photos)
        async with app.run_test(size=TUI_SIZE) as pilot:
            async def until(cond, what, timeout=60.0):
                t0 = time.monotonic()
                while not cond():
                    if time.monotonic() - t0 > timeout:
                        raise SystemExit(f"screenshots: timed out waiting for {what}")
                    await pilot.pause(0.1)

            screen = app.screen
            await until(lambda: "segment" in getattr(screen, "jobs", {}) and screen.query("#p-method"), "the form")
            jobs = screen.query_one(JobList)
            key = job_dir.resolve()
            await until(lambda: key in jobs.snapshots and jobs.snapshots[key].state == "done", "the job")
            jobs.select_job(key)
            jobs.focus()
            preview = screen.query_one(PreviewPane)
            await until(lambda: preview.path is not None and preview._image_widget is not None
                        and preview._image_widget.display, "the preview")
            await until(lambda: "per item" in str(screen.query_one("#summary").render()), "the summary")
            await pilot.pause(0.5)
            app.sub_title = photos.name  # not the temporary folder's path
            await pilot.pause(0.2)
            app.save_screenshot(filename=dest.name, path=str(dest.parent))

    asyncio.run(main())
    return dest


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "docs" / "img",
                    help="folder of the pictures (default: docs/img of this checkout)")
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="segdeck-shots-") as tmp:
        os.environ["SEGDECK_STATE_DIR"] = str(Path(tmp) / "state")
        os.environ["SEGDECK_PREVIEW"] = "halfcell"
        from segdeck.core.samples import write_samples

        photos = Path(tmp) / "photos"
        write_samples(photos)
        job_dir = run_segment(photos, Path(tmp) / "photos.segdeck")
        done = [save_overlay(job_dir, args.out / "overlay.jpg"),
                save_paint_window(photos, args.out / "paint.jpg"),
                save_tui(photos, job_dir, args.out / "tui.svg")]
        shutil.rmtree(job_dir, ignore_errors=True)
    for path in done:
        print(f"wrote {path} ({path.stat().st_size // 1024} KB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
