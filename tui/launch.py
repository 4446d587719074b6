"""Start the processes the TUI drives: ``segdeck run`` jobs (detached, so they outlive
the TUI), windows (``segdeck annotate`` sessions, ``segdeck view``; their JSON lines are
read back), and the desktop's file manager. No Textual here.
"""

from __future__ import annotations

import importlib.util
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import tomli_w

if TYPE_CHECKING:
    from segdeck.tui.jobwatch import LogLine

#: File in the job folder that receives the job process's stderr (errors that happen
#: before the runner opens ``job.log``, e.g. a job module that fails to import).
STDERR_NAME = "stderr.log"

_children: list[subprocess.Popen] = []


def toml_value(value: Any) -> str:
    """Format a value the way ``--set key=value`` parses it (a TOML value)."""
    text = tomli_w.dumps({"v": value})
    return text.partition("=")[2].strip()


def run_command(job: str, input_path: str | Path, values: dict[str, Any], out: str | Path | None = None) -> list[str]:
    """The ``segdeck run`` command line for a job.

    Parameters
    ----------
    job : str
        Registered job name.
    input_path : path-like
        Folder or image.
    values : dict
        Dotted parameter name -> value; each becomes ``--set name=<TOML value>``
        (None values are left out: the model default applies).
    out : path-like, optional
        Output root (``--out``).
    """
    cmd = [sys.executable, "-m", "segdeck", "run", job, str(input_path), "--events"]
    if out:
        cmd += ["--out", str(out)]
    for key, value in values.items():
        if value is None:
            continue
        cmd += ["--set", f"{key}={toml_value(value)}"]
    return cmd


def launch_job(cmd: list[str], job_dir: str | Path) -> subprocess.Popen:
    """Start a job process in its own session (it survives the TUI and its terminal).

    stdout (JSON events, also in ``events.jsonl``) is discarded; stderr goes to
    ``<job_dir>/stderr.log``.
    """
    job_dir = Path(job_dir)
    job_dir.mkdir(parents=True, exist_ok=True)
    with open(job_dir / STDERR_NAME, "ab") as err:
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=err,
            start_new_session=True, close_fds=True,
        )
    _children.append(proc)
    return proc


def reap() -> None:
    """Collect exited children started here (no zombies)."""
    for proc in list(_children):
        if proc.poll() is not None:
            _children.remove(proc)


def last_stderr_line(job_dir: str | Path) -> str | None:
    """Last non-empty line of the job process's ``stderr.log``, if any."""
    try:
        text = (Path(job_dir) / STDERR_NAME).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    lines = [ln.strip() for ln in text.splitlines() if ln.strip()]
    return lines[-1] if lines else None


def can_open_desktop() -> bool:
    """True when a graphical file manager can be asked (xdg-open and a display)."""
    has_display = bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return has_display and shutil.which("xdg-open") is not None


def open_in_file_manager(path: str | Path) -> bool:
    """Open ``path`` with ``xdg-open``; False when that is not possible here."""
    if not can_open_desktop():
        return False
    try:
        subprocess.Popen(
            ["xdg-open", str(path)], stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL, start_new_session=True,
        )
    except OSError:
        return False
    return True


def command_available(name: str) -> bool:
    """Whether this install has the ``segdeck NAME`` sub-command (its module
    ``segdeck.commands.NAME``)."""
    try:
        return importlib.util.find_spec(f"segdeck.commands.{name}") is not None
    except (ImportError, ValueError):
        return False


def annotate_available() -> bool:
    """Whether this install has the ``segdeck annotate`` command."""
    return command_available("annotate")


def view_available() -> bool:
    """Whether this install has the ``segdeck view`` command."""
    return command_available("view")


def view_command(path: str | Path) -> list[str]:
    """``segdeck view PATH`` for the current interpreter (PATH: a job folder, an
    image or a mask)."""
    return [sys.executable, "-m", "segdeck", "view", str(path)]


def annotate_command(mode: str, path: str | Path, method: str | None = None) -> list[str]:
    """``segdeck annotate MODE PATH [--method M]`` for the current interpreter."""
    cmd = [sys.executable, "-m", "segdeck", "annotate", mode, str(path)]
    if method:
        cmd += ["--method", method]
    return cmd


def start_annotate(cmd: list[str]) -> subprocess.Popen:
    """Start a window process (``segdeck annotate``, ``segdeck view``). Read its stdout (JSON lines) as it goes;
    its stderr goes to a temporary file (``proc.stderr_file``, read after it exits) so
    a chatty process can never block on a full pipe."""
    import tempfile

    err = tempfile.TemporaryFile(mode="w+b")
    proc = subprocess.Popen(
        cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
        text=True, bufsize=1, start_new_session=True,
    )
    proc.stderr_file = err
    _children.append(proc)
    return proc


def stderr_tail(proc: subprocess.Popen, max_bytes: int = 8192) -> list[str]:
    """Last lines of a process started by :func:`start_annotate` (after it exited)."""
    err = getattr(proc, "stderr_file", None)
    if err is None:
        return []
    try:
        err.seek(0, os.SEEK_END)
        size = err.tell()
        err.seek(max(0, size - max_bytes))
        text = err.read().decode("utf-8", errors="replace")
    finally:
        err.close()
    return [ln.strip() for ln in text.splitlines() if ln.strip()]


def annotate_line(raw: str) -> LogLine:
    """A log line for one JSON line of ``segdeck annotate`` or ``segdeck view`` (plain
    text is kept as is)."""
    import json
    import time

    from segdeck.tui.jobwatch import LogLine
    try:
        data = json.loads(raw)
    except ValueError:
        return LogLine(time.time(), raw, "info")
    if not isinstance(data, dict):
        return LogLine(time.time(), raw, "info")
    if data.get("event") == "shown" and data.get("image"):  # segdeck view: the image on screen
        mask = f" with {data['mask']}" if data.get("mask") else ""
        return LogLine(time.time(), f"shown {data['image']}{mask}", "info")
    saved = data.get("saved") or data.get("files") or data.get("path") or data.get("file")
    if isinstance(saved, list):
        saved = ", ".join(map(str, saved))
    if saved and data.get("image"):
        saved = f"{saved} (image {data['image']})"
    level = "error" if data.get("error") else "done"
    text = f"saved {saved}" if saved else " ".join(f"{k}={v}" for k, v in data.items())
    if data.get("error"):
        text = f"{text} — {data['error']}" if saved else str(data["error"])
    return LogLine(time.time(), text, level)
