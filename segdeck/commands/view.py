"""``segdeck view PATH``: an image with its label map over it (a label map, an image, or a
job / annotation folder; ``n`` / ``p`` walk the folder's images).

Each image shown is reported as a JSON line on stdout (``{"event": "shown", ...}``);
messages go to stderr. Exit codes: 0, 2 for a bad PATH or no display.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from segdeck.commands import err_console, fail


def add_parser(sub) -> None:
    p = sub.add_parser("view", help="show images with their label maps (a mask, an image or a job folder)",
                       description=__doc__.split("\n\n")[0].replace("``", ""))
    p.add_argument("path", metavar="PATH", help="a label map (NAME.labels.png), an image, a job / annotation folder, "
                                              "or the reference store of `annotate refs` (SPEC_STEM.refs)")
    p.add_argument("--keymap", default="default", metavar="NAME",
                   help="keymap: default, xanylabeling or a .toml path (plus your keymap.toml, see `segdeck keys`)")
    p.add_argument("--max-window", default=None, metavar="WxH",
                   help="largest window in screen pixels (default 1280x800, less on a smaller screen)")
    p.add_argument("--frames-log", metavar="FILE", help=argparse.SUPPRESS)
    p.set_defaults(func=run)


def run(args) -> int:
    from segdeck.annotate.app import emit_json
    from segdeck.annotate.gui import check_display, default_max_window, parse_size
    from segdeck.annotate.keymap import KeymapError, load_keymap
    from segdeck.annotate.viewer import resolve, run_viewer
    from segdeck.core.errors import SegdeckError

    try:
        max_window = parse_size(args.max_window) if args.max_window else None
        keymap = load_keymap(args.keymap)
        items, start = resolve(args.path)
    except (SegdeckError, KeymapError, ValueError) as exc:
        return fail(str(exc))
    for line in keymap.conflicts() + keymap.qt_unreachable():
        err_console.print(f"[yellow]warning:[/] {line}", highlight=False, soft_wrap=True)
    try:
        check_display()
    except SegdeckError as exc:
        return fail(str(exc))
    return run_viewer(items, start, max_window=max_window or default_max_window(), keymap=keymap,
                      frames_log=Path(args.frames_log) if args.frames_log else None, report=emit_json)
