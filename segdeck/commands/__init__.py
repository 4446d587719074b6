"""segdeck sub-commands (see segdeck.cli)."""

import sys

from rich.console import Console

err_console = Console(stderr=True, highlight=False)


def fail(message: str, code: int = 2) -> int:
    """Print one red line to stderr and return ``code`` (``message`` is plain text, not markup)."""
    from rich.markup import escape

    err_console.print(f"[bold red]error:[/] {escape(message)}", soft_wrap=True)
    return code


__all__ = ["err_console", "fail", "sys"]
