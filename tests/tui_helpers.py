"""Helpers shared by the TUI tests (Pilot): the dummy job's registration and waiting."""

from __future__ import annotations

import time
from pathlib import Path

TESTS = Path(__file__).parent
#: SEGDECK_EXTRA_JOBS entry of the quick test job (tests/tui_dummy_job.py)
DUMMY = "tuidummy=tui_dummy_job:DummyJob"


async def wait_for(pilot, cond, timeout=20.0, what="condition"):
    """Let the app run until ``cond()`` holds; AssertionError naming ``what`` after ``timeout`` s."""
    t0 = time.monotonic()
    while time.monotonic() - t0 < timeout:
        if cond():
            return
        await pilot.pause(0.1)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


async def ready_form(app, pilot, job="tuidummy"):
    """Select ``job`` in the main screen and wait until its form and the folder counts are built.

    Returns (screen, form).
    """
    from textual.widgets import Select

    from segdeck.tui.widgets.param_form import ParamForm

    await wait_for(pilot, lambda: job in getattr(app.screen, "jobs", {}), what="jobs loaded")
    screen = app.screen
    if screen.job_name != job:
        screen.query_one("#job-select", Select).value = job
    form = screen.query_one(ParamForm)
    await wait_for(pilot, lambda: form.model is not None and screen.job_name == job and form.params is not None
                   and form.model is screen.jobs[job].Params, what="form built")
    await wait_for(pilot, lambda: screen.input_count is not None, what="folder counts")
    return screen, form
