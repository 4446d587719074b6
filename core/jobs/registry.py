"""Registries of segdeck jobs: the job kinds, and the job folders run recently.

Job kinds
---------
name -> "module:Class" (imported on demand, so listing the jobs imports nothing heavy).
A job module must keep its ``Params`` import-light.

Extra jobs (tests, plug-ins) can be registered without editing this file through the
environment variable ``SEGDECK_EXTRA_JOBS="name=module:Class[,name2=module2:Class2]"``,
read once at import; child processes (``segdeck run`` launched by the TUI) inherit it.

Recent job folders
------------------
Every run records its job folder (:func:`remember`, called by the runner) in
``recent-jobs.json`` in the user state folder (``platformdirs.user_state_dir("segdeck")``,
or ``$SEGDECK_STATE_DIR``), so ``segdeck jobs`` and the TUI list jobs written anywhere
with ``--out``. :func:`recent` returns the folders that still exist, most recently used
first; vanished ones are pruned from the file. Both are light to import (stdlib only).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from segdeck.core.jobs.base import Job

log = logging.getLogger(__name__)

JOBS: dict[str, str] = {
    "segment": "segdeck.core.segment:SegmentJob",
    "automask": "segdeck.core.automask:AutomaskJob",
    "cluster": "segdeck.core.cluster.job:ClusterJob",
    "describe": "segdeck.core.describe.job:DescribeJob",
    "propagate": "segdeck.core.propagate.job:PropagateJob",
}


def _extra_jobs(text: str) -> dict[str, str]:
    """Parse ``SEGDECK_EXTRA_JOBS``: comma-separated ``name=module:Class``; bad parts ignored."""
    extra = {}
    for part in text.split(","):
        name, sep, target = part.strip().partition("=")
        if sep and name.strip() and ":" in target:
            extra[name.strip()] = target.strip()
    return extra


JOBS.update(_extra_jobs(os.environ.get("SEGDECK_EXTRA_JOBS", "")))


def job_names() -> list[str]:
    """Names of the registered jobs whose module is importable."""
    return [name for name in JOBS if _safe_get(name) is not None]


def _safe_get(name: str) -> type[Job] | None:
    try:
        return get_job_class(name)
    except (ImportError, AttributeError):
        return None


def get_job_class(name: str) -> type[Job]:
    """The :class:`Job` subclass registered as ``name``.

    Raises
    ------
    ValueError
        Unknown job name.
    ImportError
        The job's module cannot be imported.
    """
    try:
        target = JOBS[name]
    except KeyError:
        raise ValueError(f"unknown job {name!r}; known: {', '.join(JOBS)}") from None
    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


def rebuild_job(job_dir: str | Path) -> Job:
    """The job of a job folder, rebuilt from its ``job.toml`` (registered class, saved
    parameters, input), to ask it what it names things: ``list_items``, ``item_path``,
    ``output_stem``. Nothing is run or written.

    Raises
    ------
    SegdeckError
        ``job.toml`` missing or unreadable, an unknown job, or parameters that no longer
        validate (one line each).
    """
    import tomllib

    from segdeck.core.errors import SegdeckError
    from segdeck.core.params import validate

    job_dir = Path(job_dir)
    try:
        doc = tomllib.loads((job_dir / _JOB_MARKER).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SegdeckError(f"{job_dir}: cannot read {_JOB_MARKER} ({exc})") from None
    try:
        cls = get_job_class(str(doc.get("job", "")))
    except (ValueError, ImportError) as exc:
        raise SegdeckError(f"{job_dir}: {exc}") from None
    try:
        params = validate(cls.Params, doc.get("params", {}))
    except (ValueError, SegdeckError) as exc:
        raise SegdeckError(f"{job_dir}: its saved parameters no longer validate ({exc})") from None
    return cls(params, doc.get("input", ""), job_dir)


def jobs_for_input(path: str | Path) -> list[str]:
    """Names of the registered jobs that take ``path`` as their input
    (``Job.check_input`` accepts it): the image jobs for a folder of images or an image,
    a CSV-driven job for its CSV file. For the TUI's job picker and ``segdeck run``'s
    hint on a wrong input.

    Each distinct ``check_input`` runs once (the image jobs share the default, which
    walks the folder), so asking costs one folder walk, not one per job.
    """
    path = Path(path)
    verdicts: dict[object, bool] = {}
    names = []
    for name in JOBS:
        cls = _safe_get(name)
        if cls is None:
            continue
        check = getattr(cls.check_input, "__func__", cls.check_input)
        if check not in verdicts:
            try:
                cls.check_input(path)
                verdicts[check] = True
            except (ValueError, OSError):
                verdicts[check] = False
            except Exception as exc:  # noqa: BLE001 - a broken plug-in must not break the picker
                log.debug("%s.check_input(%s) failed: %s", name, path, exc)
                verdicts[check] = False
        if verdicts[check]:
            names.append(name)
    return names


# --------------------------------------------------------------------------------------
# recent job folders

#: Environment variable overriding the state folder (tests, several installations).
STATE_DIR_ENV = "SEGDECK_STATE_DIR"
RECENT_NAME = "recent-jobs.json"
#: The file keeps at most this many folders (the least recently used are dropped).
MAX_RECENT = 1000
# the marker of a job folder; equals segdeck.core.jobs.base.JOB_TOML (base is heavy to import)
_JOB_MARKER = "job.toml"


def state_dir() -> Path:
    """The folder holding segdeck's state: ``$SEGDECK_STATE_DIR`` or
    ``platformdirs.user_state_dir("segdeck")`` (``~/.local/state/segdeck`` on Linux)."""
    env = os.environ.get(STATE_DIR_ENV)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_state_dir

    return Path(user_state_dir("segdeck"))


def recent_file() -> Path:
    """The recent-jobs file, ``state_dir() / "recent-jobs.json"``."""
    return state_dir() / RECENT_NAME


def _is_job_dir(path: Path) -> bool:
    try:
        return (path / _JOB_MARKER).is_file()
    except OSError:
        return False


def _read_entries(path: Path) -> dict[str, float]:
    """``{folder: last used (Unix time)}`` from the file; {} when missing or unreadable."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return {}
    except (OSError, ValueError) as exc:
        log.debug("cannot read %s: %s", path, exc)
        return {}
    entries: dict[str, float] = {}
    for row in doc.get("jobs", []) if isinstance(doc, dict) else []:
        if isinstance(row, dict) and isinstance(row.get("path"), str):
            used = row.get("used")
            entries[row["path"]] = float(used) if isinstance(used, (int, float)) else 0.0
    return entries


def _write_entries(path: Path, entries: dict[str, float]) -> None:
    """Write ``entries`` atomically (temp file in the same folder, then rename)."""
    rows = sorted(entries.items(), key=lambda kv: kv[1], reverse=True)[:MAX_RECENT]
    text = json.dumps({"version": 1, "jobs": [{"path": p, "used": u} for p, u in rows]}, indent=1)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(text + "\n")
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class _Locked:
    """An exclusive ``flock`` on ``recent-jobs.json.lock`` around a read-modify-write, so
    two jobs starting at once do not drop each other's entry. ``blocking=False``: enter
    returns False instead of waiting."""

    def __init__(self, path: Path, blocking: bool = True):
        self.path, self.blocking, self.fh = path.with_name(path.name + ".lock"), blocking, None

    def __enter__(self) -> bool:
        import fcntl

        self.fh = open(self.path, "a")
        try:
            fcntl.flock(self.fh, fcntl.LOCK_EX | (0 if self.blocking else fcntl.LOCK_NB))
        except BlockingIOError:
            self.fh.close()
            self.fh = None
            return False
        return True

    def __exit__(self, *exc) -> None:
        if self.fh is not None:
            self.fh.close()  # closing releases the lock


def remember(job_dir: str | Path) -> None:
    """Record ``job_dir`` as used now in the recent-jobs file.

    Idempotent (one entry per folder, its time updated), atomic (temp file + rename,
    under a file lock), and silent on failure: an unwritable state folder is logged
    (warning on the ``segdeck.core.jobs.registry`` logger) and ignored, never raised.
    Folders that no longer hold a job are pruned at the same time.

    Parameters
    ----------
    job_dir : path-like
        A job folder (holding ``job.toml``); stored as an absolute, resolved path.
    """
    try:
        path = recent_file()
        key = str(Path(job_dir).expanduser().resolve())
        path.parent.mkdir(parents=True, exist_ok=True)
        with _Locked(path):
            entries = _read_entries(path)
            entries = {p: u for p, u in entries.items() if p == key or _is_job_dir(Path(p))}
            entries[key] = time.time()
            _write_entries(path, entries)
    except Exception as exc:  # noqa: BLE001 - the registry is a convenience, never a failure
        log.warning("cannot record %s in the recent jobs (%s): %s", job_dir, STATE_DIR_ENV, exc)


def recent(limit: int = 200) -> list[Path]:
    """The job folders run recently that still exist, most recently used first.

    Parameters
    ----------
    limit : int
        At most this many folders.

    Returns
    -------
    list of Path
        Absolute folders holding ``job.toml``. Empty when the file is missing or
        unreadable (never raises). Vanished folders are pruned from the file
        (best effort: skipped while another process holds it).
    """
    path = recent_file()
    entries = _read_entries(path)
    live = {p: u for p, u in entries.items() if _is_job_dir(Path(p))}
    if len(live) < len(entries):
        try:
            with _Locked(path, blocking=False) as locked:
                if locked:
                    current = _read_entries(path)
                    _write_entries(path, {p: u for p, u in current.items() if _is_job_dir(Path(p))})
        except OSError as exc:
            log.debug("cannot prune %s: %s", path, exc)
    ordered = sorted(live.items(), key=lambda kv: kv[1], reverse=True)
    return [Path(p) for p, _ in ordered[: max(0, limit)]]
