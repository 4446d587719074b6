"""TUI start-up time: seconds from a fresh interpreter to the first frame of
``segdeck tui`` (headless driver), against a minimal Textual app (Header, one Static,
Footer) measured the same way in the same run. Also checks that no heavy module
(torch, sam2, cv2) is loaded by then.

Run: ``.venv/bin/python benchmarks/tui_startup.py [--repeat N]``
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

CHILD = r"""
import time, sys, json, asyncio
t0 = time.perf_counter()
KIND, ROOT = sys.argv[1], sys.argv[2]
if KIND == "segdeck":
    from segdeck.tui.app import SegdeckApp
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
    app.exit()

async def main():
    async with app.run_test(size=(100, 30)) as pilot:
        app.call_after_refresh(first_frame)
        while "first_frame" not in marks:
            await pilot.pause(0.001)

asyncio.run(main())
heavy = [m for m in ("torch", "sam2", "segment_anything_hq", "cv2") if m in sys.modules]
print(json.dumps({"first_frame": marks["first_frame"], "heavy": heavy}))
"""


def measure(kind: str, root: Path) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, kind, str(root)], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "photos"
        root.mkdir()
        for i in range(20):
            (root / f"{i}.png").write_bytes(b"")  # names are enough for the folder counts
        measure("segdeck", root)  # warm the file cache / .pyc
        measure("minimal", root)
        ours, ref, heavy = [], [], set()
        for _ in range(args.repeat):
            r = measure("segdeck", root)
            ours.append(r["first_frame"])
            heavy.update(r["heavy"])
            ref.append(measure("minimal", root)["first_frame"])
    o, m = statistics.median(ours), statistics.median(ref)
    print(f"segdeck tui first frame: {o:.3f} s (median of {args.repeat})")
    print(f"minimal Textual app:     {m:.3f} s")
    print(f"ratio segdeck/minimal:   {o / m:.2f}")
    print(f"heavy modules loaded at first frame: {sorted(heavy) or 'none'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
