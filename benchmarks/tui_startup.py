"""TUI start-up time and input latency.

1. First frame: seconds from a fresh interpreter to the first frame of ``segdeck tui``'s
   main screen
   (headless driver, 120x40 so the preview pane is laid out; the pre-start terminal
   graphics check of :func:`segdeck.tui.app.main` included), against a minimal Textual
   app (Header, one Static, Footer) measured the same way in the same run. Also checks
   that no heavy module (torch, sam2, cv2) is loaded by then.
2. Input latency during a running job: a real ``segment`` job (felzenszwalb on
   synthetic 640x480 photos) is started from the TUI with Ctrl+R; while it runs and the
   preview pane follows its newest overlay, keys (digits and Backspace) are typed into a
   form field one at a time; latency = key event posted -> the field holds the change
   and the screen has been refreshed; measured with no job running too, and with the
   preview pane hidden. Median, 95th percentile and maximum in milliseconds.

Run: ``.venv/bin/python benchmarks/tui_startup.py [--repeat N] [--keys N]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

FIRST_FRAME = r"""
import time, sys, json, asyncio
t0 = time.perf_counter()
KIND, ROOT = sys.argv[1], sys.argv[2]
if KIND == "segdeck":
    from segdeck.tui.app import SegdeckApp
    from segdeck.tui.widgets.preview import prepare_terminal_graphics
    prepare_terminal_graphics()
    app = SegdeckApp(ROOT)
else:
    from textual.app import App
    from textual.widgets import Footer, Header, Static

    class Minimal(App):
        def compose(self):
            yield Header()
            yield Static("hello")
            yield Footer()

    app = Minimal()
marks = {}

def first_frame():
    marks["first_frame"] = time.perf_counter() - t0
    if KIND == "segdeck":
        marks["preview_shown"] = bool(app.screen.query_one("#preview").display)

async def main():
    async with app.run_test(size=(120, 40)) as pilot:
        if KIND == "segdeck":  # the main screen's first frame, not the blank default screen's
            while type(app.screen).__name__ != "MainScreen":
                await pilot.pause(0.001)
        app.call_after_refresh(first_frame)
        while "first_frame" not in marks:
            await pilot.pause(0.001)
        if KIND == "segdeck":  # let the background start-up (job form) finish before leaving
            t1 = time.perf_counter()
            while not app.screen.query("#p-method") and time.perf_counter() - t1 < 20:
                await pilot.pause(0.05)
            await pilot.pause(0.2)

asyncio.run(main())
heavy = [m for m in ("torch", "sam2", "segment_anything_hq", "cv2") if m in sys.modules]
print(json.dumps({**marks, "heavy": heavy}))
"""

LATENCY = r"""
import asyncio, json, statistics, sys, time
from textual import events
from textual.widgets import Input, Select
from segdeck.tui.app import SegdeckApp
from segdeck.tui.widgets.job_list import JobList
from segdeck.tui.widgets.preview import PreviewPane

ROOT, NKEYS = sys.argv[1], int(sys.argv[2])

async def wait(pilot, cond, timeout=60):
    t0 = time.monotonic()
    while not cond():
        if time.monotonic() - t0 > timeout:
            raise SystemExit("timed out")
        await pilot.pause(0.05)

async def type_keys(app, pilot, field, n):
    # latencies (ms) of n keys typed into field one at a time: key event posted -> the
    # field holds the change and the screen was refreshed. Keys: 1 1 1 Backspace x3,
    # over and over, from "1": the value stays valid (1..1111), so no error line comes
    # and goes (that re-lays-out the form, as it should, but is not what is measured).
    field.value = "1"
    field.focus()
    await pilot.pause(0.3)
    field.cursor_position = len(field.value)
    keys = ["1", "1", "1", "backspace", "backspace", "backspace"]
    lat = []
    for k in range(n):
        key = keys[k % len(keys)]
        before = field.value
        done = asyncio.Event()
        t0 = time.perf_counter()
        app.post_message(events.Key(key, "\x7f" if key == "backspace" else key))
        while field.value == before:
            await asyncio.sleep(0.0005)
        app.call_after_refresh(done.set)
        await done.wait()
        lat.append(1000 * (time.perf_counter() - t0))
        await asyncio.sleep(0.05)
    return sorted(lat)


def stats(lat):
    return {"median": statistics.median(lat), "p95": lat[int(0.95 * (len(lat) - 1))], "max": lat[-1], "n": len(lat)}


async def main():
    app = SegdeckApp(ROOT)
    async with app.run_test(size=(160, 50)) as pilot:
        await wait(pilot, lambda: "segment" in getattr(app.screen, "jobs", {}))
        screen = app.screen
        await wait(pilot, lambda: screen.job_name == "segment" and screen.input_count
                   and screen.query("#p-method") and screen.query("#p-max_side"))
        await pilot.pause(0.5)  # the form's widgets finish mounting
        screen.query_one("#p-method", Select).value = "felzenszwalb"
        await wait(pilot, lambda: screen.query_one("#run").disabled is False
                   and getattr(screen.query_one("#form").params, "method", "") == "felzenszwalb")
        idle = await type_keys(app, pilot, screen.query_one("#p-max_side", Input), NKEYS)
        screen.query_one("#p-max_side", Input).value = "1024"
        await pilot.pause(0.3)
        screen.query_one("#folders").focus()
        await pilot.pause(0.3)
        await pilot.press("ctrl+r")
        jobs = screen.query_one(JobList)
        await wait(pilot, lambda: jobs.selected_snapshot is not None and jobs.selected_snapshot.state == "running")
        preview = screen.query_one(PreviewPane)
        await wait(pilot, lambda: preview.path is not None)  # the newest overlay is shown
        lat = await type_keys(app, pilot, screen.query_one("#p-max_side", Input), NKEYS)
        snap = jobs.selected_snapshot
        state, shown = snap.state, preview.path.name if preview.path else None
        screen.query_one("#folders").focus()
        await pilot.press("f3")  # the same without the preview pane
        await pilot.pause(0.3)
        no_preview = await type_keys(app, pilot, screen.query_one("#p-max_side", Input), NKEYS)
        state2 = jobs.selected_snapshot.state
        jobs.focus()
        await pilot.press("x")
        await wait(pilot, lambda: jobs.selected_snapshot.state != "running")
    print(json.dumps({"idle": stats(idle), "running": stats(lat), "running_no_preview": stats(no_preview),
                      "job_state_while_typing": state, "state_no_preview": state2, "preview": shown}))

asyncio.run(main())
"""


def first_frame(kind: str, root: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", FIRST_FRAME, kind, str(root)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def make_photos(root: Path, n: int) -> None:
    import numpy as np

    from segdeck.core import imageio

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    for i in range(n):
        small = rng.integers(0, 256, (12, 16, 3)).astype(np.uint8)
        img = np.kron(small, np.ones((40, 40, 1), np.uint8))
        img = np.clip(img.astype(np.int16) + rng.integers(-20, 21, img.shape), 0, 255).astype(np.uint8)
        imageio.write_image(root / f"photo{i:03d}.jpg", img)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5, help="first-frame runs (median reported)")
    ap.add_argument("--keys", type=int, default=40, help="keys typed during the running job")
    ap.add_argument("--no-latency", action="store_true", help="first frame only")
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "photos"
        make_photos(root, 3)
        first_frame("segdeck", root)  # warm the file cache / .pyc
        first_frame("minimal", root)
        ours, ref, heavy, preview = [], [], set(), set()
        for _ in range(args.repeat):
            r = first_frame("segdeck", root)
            ours.append(r["first_frame"])
            heavy.update(r["heavy"])
            preview.add(r.get("preview_shown"))
            ref.append(first_frame("minimal", root)["first_frame"])
        o, m = statistics.median(ours), statistics.median(ref)
        print(f"segdeck tui first frame: {o:.3f} s (median of {args.repeat}; preview pane shown: {sorted(preview)})")
        print(f"minimal Textual app:     {m:.3f} s")
        print(f"ratio segdeck/minimal:   {o / m:.2f}")
        print(f"heavy modules loaded at first frame: {sorted(heavy) or 'none'}")
        if args.no_latency:
            return 0
        lat_root = Path(tmp) / "many"
        make_photos(lat_root, 200)
        env_state = Path(tmp) / "state"
        import os

        env = {**os.environ, "SEGDECK_STATE_DIR": str(env_state), "SEGDECK_PREVIEW": "halfcell"}
        out = subprocess.run([sys.executable, "-c", LATENCY, str(lat_root), str(args.keys)], capture_output=True,
                             text=True, env=env, timeout=600)
        if out.returncode != 0:
            print("latency run failed:", out.stderr[-2000:])
            return 1
        r = json.loads(out.stdout.strip().splitlines()[-1])
        for what, key in (("no job running", "idle"),
                          (f"segment job running (state {r['job_state_while_typing']}, preview {r['preview']})",
                           "running"),
                          (f"segment job running, preview pane hidden (state {r['state_no_preview']})",
                           "running_no_preview")):
            x = r[key]
            print(f"input latency, {what}: {x['n']} keys, median {x['median']:.1f} ms, "
                  f"p95 {x['p95']:.1f} ms, max {x['max']:.1f} ms")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
