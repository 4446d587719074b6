"""Jobs: the one shape of every long operation (see DESIGN.md, "The job")."""

from segdeck.core.jobs.base import Job, default_output_root
from segdeck.core.jobs.runner import JobSummary, job_dir_for, run_job

__all__ = ["Job", "JobSummary", "default_output_root", "job_dir_for", "run_job"]
