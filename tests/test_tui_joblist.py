"""The jobs list tells runs apart: an input column at every width (80 columns too),
labels that differ for inputs of the same name, and the jobs of the folder chosen in
the folder tree first."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tui_helpers import ready_form, wait_for

from segdeck.core import imageio


@pytest.fixture(autouse=True)
def own_recent_jobs(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGDECK_STATE_DIR", str(tmp_path / "state"))


def test_input_labels_and_short_input():
    from segdeck.tui.widgets.job_list import input_labels, short_input

    labels = input_labels(["/data/one/photos", "/data/two/photos", "/x/spec.toml", "/y/z/spec.toml", "/q/cats", ""])
    assert labels == {"/data/one/photos": "one/photos", "/data/two/photos": "two/photos",
                      "/x/spec.toml": "x/spec.toml", "/y/z/spec.toml": "z/spec.toml", "/q/cats": "cats", "": ""}
    # the same folder name down to the root still ends
    assert input_labels(["/a/b", "/c/a/b"]) == {"/a/b": "/a/b", "/c/a/b": "c/a/b", "": ""}
    assert short_input("cats", 10) == "cats"
    assert short_input("holiday-photos-2024", 10) == "holi…-2024" and len(short_input("holiday-photos-2024", 10)) == 10
    assert short_input("one/photos-2024", 6).endswith("2024") and len(short_input("one/photos-2024", 6)) == 6


def test_columns_at_80_keep_the_input():
    from segdeck.tui.widgets.job_list import JobList

    table = JobList()
    for width in (80, 100, 120, 200):
        widths = table.column_widths(width)
        assert widths.get("input", 0) >= 10, width
        assert widths["job"] >= JobList.MIN_JOB
        assert sum(widths.values()) + 2 * len(widths) + 2 <= width, (width, widths)
    assert table.column_widths(100)["progress"] > JobList.PERCENT_WIDTH  # the bar where it fits


def _run_dummy(folder: Path) -> Path:
    out = subprocess.run([sys.executable, "-m", "segdeck", "run", "tuidummy", str(folder), "--set", "delay=0"],
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 0, out.stderr[-2000:]
    (job_dir,) = [p for p in (folder.parent / f"{folder.name}.segdeck").iterdir() if (p / "job.toml").is_file()]
    return job_dir.resolve()


@pytest.mark.asyncio
@pytest.mark.timeout(120)
async def test_same_job_on_two_inputs_at_80_columns(tmp_path, dummy_job):
    """Known defect: at 80 columns the rows of one job run on two inputs looked alike
    (same folder name, no input column). Now the input column tells them apart, and the
    folder chosen in the tree brings its jobs to the top."""
    from segdeck.tui.app import SegdeckApp
    from segdeck.tui.widgets.folder_tree import FolderTree
    from segdeck.tui.widgets.job_list import JobList

    root = tmp_path / "root"
    folders = [root / "one" / "photos", root / "two" / "photos"]
    for folder in folders:
        folder.mkdir(parents=True)
        for i in range(2):
            imageio.write_image(folder / f"i{i}.png", np.full((6, 6, 3), 40 * i, np.uint8))
    jobs_dirs = [_run_dummy(f) for f in folders]
    assert jobs_dirs[0].name == jobs_dirs[1].name  # the same run name: only the input differs
    app = SegdeckApp(root)
    async with app.run_test(size=(80, 24)) as pilot:
        screen, _ = await ready_form(app, pilot)
        table = screen.query_one(JobList)
        await wait_for(pilot, lambda: all(d in table.snapshots for d in jobs_dirs), timeout=30, what="both jobs")

        def rows():
            return [[str(c) for c in table.get_row(str(d))] for d in table._order]

        inputs = {r[-1] for r in rows()}
        assert inputs == {"one/photos", "two/photos"}, rows()
        assert rows()[0][0] == rows()[1][0]  # the job cells alike: the input is what tells them apart
        tree = screen.query_one(FolderTree)
        for k in (1, 0):
            node = next(n for n in tree._walk(tree.root) if n.data == folders[k].resolve())
            node.parent.expand()
            await pilot.pause()
            tree.move_cursor(node)
            await wait_for(pilot, lambda k=k: table.focus_input == str(folders[k].resolve()), what=f"folder {k} chosen")
            await pilot.pause()
            assert table._order[0] == jobs_dirs[k], rows()
            assert rows()[0][-1] == ("one/photos", "two/photos")[k]
            assert table.is_focus_job(table.snapshots[jobs_dirs[k]])
            assert not table.is_focus_job(table.snapshots[jobs_dirs[1 - k]])
        # the root chosen again: both are its jobs
        tree.move_cursor(tree.root)
        await wait_for(pilot, lambda: all(table.is_focus_job(s) for s in table.snapshots.values()), what="root")
