"""Typed errors shared by the engine. Every message names what is wrong and what to do."""

from __future__ import annotations

from pathlib import Path


class SegdeckError(Exception):
    """Base class of every error segdeck reports to a user without a traceback."""


class ImageError(SegdeckError):
    """An image could not be read or written.

    Parameters
    ----------
    path : path-like
        The offending file.
    reason : str
        One line saying what is wrong with it.
    """

    def __init__(self, path: str | Path, reason: str):
        self.path = Path(path)
        self.reason = reason
        super().__init__(f"{self.path}: {reason}")


class ParamsError(SegdeckError, ValueError):
    """Parameters that do not validate; the message lists each bad field and value."""


class SetupError(SegdeckError):
    """A job cannot start (missing model, offline download, bad input folder).

    Raised before the first item is processed; the CLI exits with code 2.
    """


class RunStop(SegdeckError):
    """A fault every remaining item would hit the same way (a refused API key, a server
    that went away): raised by a job's ``process`` or ``write``, it stops the run at the
    first occurrence with its one line, like a full disk. The item it was raised for stays
    ``pending`` (what ``write`` saved before raising is kept for the re-run); the run ends
    with status ``error`` and the CLI with exit code 2."""
