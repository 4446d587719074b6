"""Registry of segdeck jobs: name -> "module:Class" (imported on demand, so listing the
jobs imports nothing heavy). A job module must keep its ``Params`` import-light.

Extra jobs (tests, plug-ins) can be registered without editing this file through the
environment variable ``SEGDECK_EXTRA_JOBS="name=module:Class[,name2=module2:Class2]"``,
read once at import; child processes (``segdeck run`` launched by the TUI) inherit it.
"""

from __future__ import annotations

import importlib
import os

from segdeck.core.jobs.base import Job

JOBS: dict[str, str] = {
    "segment": "segdeck.core.segment:SegmentJob",
    "automask": "segdeck.core.automask:AutomaskJob",
    "cluster": "segdeck.core.cluster.job:ClusterJob",
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
