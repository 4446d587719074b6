"""Registry of segdeck jobs: name -> "module:Class" (imported on demand, so listing the
jobs imports nothing heavy). A job module must keep its ``Params`` import-light."""

from __future__ import annotations

import importlib

from segdeck.core.jobs.base import Job

JOBS: dict[str, str] = {
    "segment": "segdeck.core.segment:SegmentJob",
    "automask": "segdeck.core.automask:AutomaskJob",
    "cluster": "segdeck.core.cluster.job:ClusterJob",
}


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
