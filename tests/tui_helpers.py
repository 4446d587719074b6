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


async def select_path(pilot, tree, path) -> None:
    """Move the folder tree's cursor to ``path``'s node, once a scan has listed it (its
    folders expanded first: a node has a line on screen only once the tree has laid its
    lines out again)."""
    await wait_for(pilot, lambda: tree.scanned and any(n.data == path for n in tree._walk(tree.root)),
                   what=f"{path.name} in the tree")
    node = next(n for n in tree._walk(tree.root) if n.data == path)
    parent = node.parent
    while parent is not None:
        parent.expand()
        parent = parent.parent
    await wait_for(pilot, lambda: node.line >= 0, what=f"{path.name} shown in the tree")
    tree.move_cursor(node)
    await wait_for(pilot, lambda: tree.cursor_node is node, what=f"cursor on {path.name}")


def form_status(screen) -> str:
    """The text of the main screen's form status line (beside Run)."""
    from textual.widgets import Static

    return str(screen.query_one("#form-status", Static).content)
