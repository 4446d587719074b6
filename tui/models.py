"""Model downloads started from the TUI: one ``segdeck models download NAME`` process
per model, followed without Textual.

Progress is read from the size of the ``<file>.part`` file the download writes into
the model cache (the CLI's rich bar is meant for a terminal); the outcome from the
exit code and the last line of the process's stderr (offline: the one-line message
naming the URL and ``segdeck models import``). Downloads are kept in a module-level
table so closing and re-opening the model picker shows the same progress, and they
run in their own session, so a download survives the TUI.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path


def download_command(name: str) -> list[str]:
    """``segdeck models download NAME`` for the current interpreter."""
    return [sys.executable, "-m", "segdeck", "models", "download", name]


@dataclass(frozen=True)
class DownloadState:
    """Where one download stands.

    Attributes
    ----------
    state : str
        ``running``, ``done`` or ``failed``.
    done, total : int or None
        Bytes written so far and the expected size (None when unknown).
    line : str
        The last stderr line of the process (its error message when it failed).
    """

    name: str
    state: str
    done: int | None
    total: int | None
    line: str = ""

    @property
    def fraction(self) -> float | None:
        if self.state == "done":
            return 1.0
        if not self.total or self.done is None:
            return None
        return min(1.0, self.done / self.total)

    def text(self) -> str:
        """One line: ``running 42% (65.5 MB / 156.0 MB)``, ``done``, ``failed: <reason>``."""
        if self.state == "failed":
            return f"failed: {self.line or 'the download process failed'}"
        if self.state == "done":
            return "done"
        frac = self.fraction
        if frac is None:
            return f"running ({human_bytes(self.done)})" if self.done else "running"
        return f"running {frac * 100:.0f}% ({human_bytes(self.done)} / {human_bytes(self.total)})"


def human_bytes(n: int | None) -> str:
    """``156.0 MB`` (powers of 1000, as ``segdeck models list``)."""
    if n is None:
        return "?"
    value = float(n)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1000 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1000
    return str(n)


def _clean(line: str) -> str:
    line = line.strip()
    return line[len("error:"):].strip() if line.lower().startswith("error:") else line


class ModelDownload:
    """One ``segdeck models download`` child process."""

    def __init__(self, name: str, part: Path, total: int | None, cmd: list[str] | None = None):
        self.name = name
        self.part = Path(part)
        self.final = self.part.with_name(self.part.name.removesuffix(".part"))
        self.total = total
        self._err = tempfile.TemporaryFile(mode="w+b")
        self.proc = subprocess.Popen(
            cmd or download_command(name), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=self._err, start_new_session=True, close_fds=True,
        )
        self._final_line: str | None = None

    def _last_line(self, max_bytes: int = 4096) -> str:
        try:
            self._err.seek(0, os.SEEK_END)
            size = self._err.tell()
            self._err.seek(max(0, size - max_bytes))
            text = self._err.read().decode("utf-8", errors="replace")
        except (OSError, ValueError):
            return ""
        # rich redraws its bar with carriage returns: keep the last state of each line
        lines = [seg for raw in text.splitlines() for seg in [raw.split("\r")[-1]] if seg.strip()]
        return _clean(lines[-1]) if lines else ""

    def state(self) -> DownloadState:
        rc = self.proc.poll()
        if rc is None:
            try:
                done = self.part.stat().st_size
            except OSError:
                done = None
            return DownloadState(self.name, "running", done, self.total, self._last_line())
        if self._final_line is None:
            self._final_line = self._last_line()
            self._err.close()
        state = "done" if rc == 0 else "failed"
        line = self._final_line or ("" if rc == 0 else f"exit code {rc}")
        return DownloadState(self.name, state, self.total if rc == 0 else None, self.total, line)


_DOWNLOADS: dict[str, ModelDownload] = {}
_LOCK = threading.Lock()


def start_download(name: str, cmd: list[str] | None = None) -> ModelDownload:
    """Start downloading model ``name`` (a running download of it is returned as is).

    Raises
    ------
    SetupError
        Unknown model name.
    OSError
        The process could not be started.
    """
    from segdeck.core.models import cache_path, get_spec

    spec = get_spec(name)
    with _LOCK:
        current = _DOWNLOADS.get(name)
        if current is not None and current.proc.poll() is None:
            return current
        dest = cache_path(name)
        dl = ModelDownload(name, dest.with_name(dest.name + ".part"), spec.display_bytes, cmd)
        _DOWNLOADS[name] = dl
        return dl


def download_state(name: str) -> DownloadState | None:
    """The state of the last download of ``name`` started here, or None."""
    with _LOCK:
        dl = _DOWNLOADS.get(name)
    return dl.state() if dl is not None else None


def any_running() -> bool:
    with _LOCK:
        return any(dl.proc.poll() is None for dl in _DOWNLOADS.values())


def forget_all() -> None:
    """Drop the table (tests); running processes are left alone."""
    with _LOCK:
        _DOWNLOADS.clear()
