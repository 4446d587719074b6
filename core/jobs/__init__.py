"""Jobs: the one shape of every long operation (see ARCHITECTURE.md, "The job").

The names below are loaded on first use (PEP 562), so importing a light sub-module
such as ``segdeck.core.jobs.events`` does not pull in numpy and pydantic (the TUI's
start-up time depends on it).
"""

from __future__ import annotations

import importlib

_LAZY = {
    "Job": "segdeck.core.jobs.base",
    "default_output_root": "segdeck.core.jobs.base",
    "JobSummary": "segdeck.core.jobs.runner",
    "job_dir_for": "segdeck.core.jobs.runner",
    "run_job": "segdeck.core.jobs.runner",
}

__all__ = ["Job", "JobSummary", "default_output_root", "job_dir_for", "run_job"]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(module), name)
