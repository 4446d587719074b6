"""``segdeck`` command line. Each sub-command lives in ``segdeck/commands/<name>.py``
with ``add_parser(subparsers)`` and ``run(args) -> int``; modules are light to import
(no torch) so ``segdeck --help`` is instant.

Exit codes: 0 success, 1 finished with failed items, 2 bad usage / parameters / setup,
130 cancelled.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: Sub-command modules, in help order. A module that is missing is skipped.
COMMANDS = ["run", "jobs", "export", "samples", "models", "annotate", "view", "keys", "tui"]


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The full parser, or (``only``) one with just that sub-command: ``segdeck tui``
    then starts without importing every job module for ``run``'s options."""
    from segdeck import __version__

    parser = argparse.ArgumentParser(
        prog="segdeck",
        description="Keyboard-driven image segmentation workbench. With no command, opens the TUI.",
    )
    parser.add_argument("--version", action="version", version=f"segdeck {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMANDS:
        if only and name != only:
            continue
        try:
            module = importlib.import_module(f"segdeck.commands.{name}")
        except ModuleNotFoundError as exc:
            if exc.name and exc.name.startswith("segdeck.commands"):
                continue
            raise
        module.add_parser(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if not argv:
        argv = ["tui"]
    only = argv[0] if argv[0] in COMMANDS else None
    parser = build_parser(only)
    args = parser.parse_args(argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    try:
        return int(args.func(args) or 0)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    raise SystemExit(main())
