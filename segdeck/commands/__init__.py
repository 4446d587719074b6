"""segdeck sub-commands (see segdeck.cli)."""

import sys

from rich.console import Console

err_console = Console(stderr=True, highlight=False)


def fail(message: str, code: int = 2) -> int:
    """Print one red line to stderr and return ``code`` (``message`` is plain text, not
    markup). A message of several lines (one per bad parameter) keeps them, indented."""
    from rich.markup import escape

    first, *rest = message.strip().splitlines() or [""]
    err_console.print(f"[bold red]error:[/] {escape(first)}", soft_wrap=True)
    for line in rest:
        err_console.print(f"  {escape(line.strip())}", soft_wrap=True)
    return code


__all__ = ["err_console", "fail", "sys"]
