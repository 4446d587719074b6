"""``segdeck tui [FOLDER]`` (also plain ``segdeck``): the terminal app on a folder."""

from __future__ import annotations

from pathlib import Path

from segdeck.commands import fail


def add_parser(sub) -> None:
    p = sub.add_parser("tui", help="open the terminal app on a folder (the default command)",
                       description="Browse folders, set parameters, run and watch jobs.")
    p.add_argument("folder", nargs="?", default=".", metavar="FOLDER",
                   help="folder of images to work on (default: the current folder)")
    p.set_defaults(func=run)


def run(args) -> int:
    folder = Path(args.folder)
    if not folder.exists():
        return fail(f"folder {folder} does not exist")
    if not folder.is_dir():
        return fail(f"{folder} is not a folder; give the folder that holds it")
    from segdeck.tui.app import main

    return main(folder)
