"""The TUI through Pilot: the generated form validates as you type, a job started from
the form shows progress and can be cancelled, a job started from the CLI shows up,
``?`` opens the help, nothing heavy is imported at start-up.

Jobs run as real ``segdeck run`` child processes. Until a real job is needed, the
tests use ``tests/tui_dummy_job.py`` (registered in this process by patching the
registry, in the child through ``SEGDECK_EXTRA_JOBS`` + ``PYTHONPATH``).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from tui_helpers import ready_form, wait_for

from segdeck.core import imageio
from segdeck.core.jobs import registry

SIZE = (100, 30)


@pytest.fixture(autouse=True)
def own_recent_jobs(tmp_path, monkeypatch):
    """Each test its own recent-jobs registry: the TUI lists the jobs recorded there
    (jobs of other tests would show up in its list otherwise)."""
    monkeypatch.setenv("SEGDECK_STATE_DIR", str(tmp_path / "state"))


@pytest.fixture
def photos(tmp_path):
    root = tmp_path / "photos"
    (root / "sub dir").mkdir(parents=True)
    for i in range(12):
        imageio.write_image(root / f"img{i:02d}.png", np.full((8, 8, 3), 10 * i, np.uint8))
    imageio.write_image(root / "sub dir" / "x.png", np.zeros((8, 8, 3), np.uint8))
    return root


# ---- pure helpers -----------------------------------------------------------------


def test_form_helpers():
    from tui_dummy_job import DummyParams

    from segdeck.core.params import field_specs, parse_scalar
    from segdeck.tui.launch import run_command, toml_value
    from segdeck.tui.widgets.param_form import method_sections, range_text

    specs = {s.name: s for s in field_specs(DummyParams)}
    assert range_text(specs["delay"]) == "[0, 5]"
    assert range_text(specs["tag"]) == ""
    assert method_sections(list(specs.values())) == ("method", {"fast", "slow"})
    for value in (3, 0.5, 1e-5, True, "a b", [1, 2], "x\"y"):
        assert parse_scalar(toml_value(value)) == value
    cmd = run_command("tuidummy", "/data", {"delay": 0.5, "tag": "hi there", "none": None})
    assert cmd[:7] == [sys.executable, "-m", "segdeck", "run", "tuidummy", "/data", "--events"]
    assert cmd[7:] == ["--set", "delay=0.5", "--set", 'tag="hi there"']


def test_annotate_line_parsing():
    from segdeck.tui.screens.main import annotate_line

    assert annotate_line('{"saved": "a/b.png"}').text == "saved a/b.png"
    line = annotate_line('{"path": "x.png", "error": "disk full"}')
    assert line.level == "error" and "disk full" in line.text
    assert annotate_line("plain words").text == "plain words"


def test_watcher_reads_incrementally(tmp_path):
    from segdeck.core.jobs.events import ItemDone, JobFinished, JobStarted, JsonlSink
    from segdeck.tui.jobwatch import JobWatcher

    job_dir = tmp_path / "in.segdeck" / "j1"
    job_dir.mkdir(parents=True)
    (job_dir / "job.toml").write_text('job = "x"\ninput = "/in"\n')
    sink = JsonlSink(job_dir)
    sink(JobStarted(job="x", total=3, todo=3, pid=os.getpid()))
    sink(ItemDone(item="a", seconds=0.1, outputs=[]))
    w = JobWatcher([tmp_path / "in"])
    snaps, new = w.poll(force_scan=True)
    assert [s.job_dir for s in snaps] == [job_dir.resolve()] and snaps[0].state == "running"
    assert len(new[job_dir.resolve()]) == 2
    offset = w._jobs[job_dir.resolve()].offset
    sink(JobFinished(status="done", done=3, failed=0, skipped=0, seconds=1.0))
    sink.close()
    snaps, new = w.poll()
    assert snaps[0].state == "done" and [ln.text.split(":")[0] for ln in new[job_dir.resolve()]] == ["finished"]
    assert w._jobs[job_dir.resolve()].offset > offset
    assert w.poll()[1] == {}  # nothing new: nothing read


# ---- the app -----------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_invalid_input_shows_error_and_disables_run(photos, dummy_job, monkeypatch):
    from textual.widgets import Button, Input, Select, Static

    from segdeck.tui.app import SegdeckApp
    from segdeck.tui.screens.help import HelpScreen

    app = SegdeckApp(photos)
    async with app.run_test(size=SIZE) as pilot:
        screen, form = await ready_form(app, pilot)
        run = screen.query_one("#run", Button)
        assert not run.disabled
        # only the chosen method's section is shown
        assert screen.query_one("#sec-fast").display and not screen.query_one("#sec-slow").display
        assert "slow.factor" not in [s.name for s in form.visible_specs()]
        screen.query_one("#p-method", Select).value = "slow"
        await pilot.pause()
        assert screen.query_one("#sec-slow").display and not screen.query_one("#sec-fast").display
        # type an out-of-range value
        delay = screen.query_one("#p-delay", Input)
        delay.value = ""
        delay.focus()
        await pilot.press("9", "9")
        await pilot.pause()
        assert delay.value == "99"
        err = screen.query_one("#err-p-delay", Static)
        assert "less than or equal to 5" in str(err.render()) and err.has_class("shown")
        assert run.disabled and form.params is None
        assert "delay" in str(screen.query_one("#form-status", Static).render())
        await pilot.press("ctrl+r")  # refused while invalid
        await pilot.pause()
        assert screen.query_one("#jobs").row_count == 0
        # a non-number
        delay.value = "abc"
        await pilot.pause()
        assert "valid number" in str(err.render()) and run.disabled
        # fixed
        delay.value = "0.5"
        await pilot.pause()
        assert not run.disabled and not err.has_class("shown") and form.params.delay == 0.5
        assert form.launch_values()["slow.factor"] == 2.0 and "fast.step" not in form.launch_values()
        # a preset fills the form
        screen.presets["quick"] = {"delay": 0.01, "tag": "q"}
        screen.query_one("#preset-select", Select).set_options([(p, p) for p in screen.presets])
        screen.query_one("#preset-select", Select).value = "quick"
        await pilot.pause()
        assert delay.value == "0.01" and form.params.tag == "q" and form.params.method == "fast"
        # the job tool hook ("t"): the screen's dict goes into the form
        from tui_dummy_job import DummyJob, DummyParams

        from segdeck.core.jobs.runner import run_job

        done_dir = photos.parent / "done-job"
        run_job(DummyJob(DummyParams(delay=0.0), photos, done_dir))
        # the job declares its tool screen (Job.tui_tool_screen); the TUI reads it
        monkeypatch.setattr(screen.jobs["tuidummy"], "tui_tool_screen", "tui_dummy_job:tool_screen")
        screen.watcher.add(done_dir)
        await wait_for(pilot, lambda: done_dir.resolve() in screen.query_one("#jobs").snapshots, what="done job")
        screen.query_one("#jobs").select_job(done_dir.resolve())
        screen.query_one("#jobs").focus()
        await pilot.press("t")
        await wait_for(pilot, lambda: form.params is not None and form.params.tag == "from-done-job", what="tool")
        assert form.params.fast.step == 7
        # help
        screen.query_one("#folders").focus()
        await pilot.press("question_mark")
        await pilot.pause()
        assert isinstance(app.screen, HelpScreen)
        assert ("Ctrl+r", "Run") in app.screen.rows and ("x", "Cancel job") in app.screen.rows
        await pilot.press("escape")
        await pilot.pause()
        assert not isinstance(app.screen, HelpScreen)


@pytest.mark.asyncio
@pytest.mark.timeout(90)
async def test_run_progress_cancel(photos, dummy_job):
    from textual.widgets import Input

    from segdeck.tui.app import SegdeckApp
    from segdeck.tui.widgets.job_list import JobList
    from segdeck.tui.widgets.job_log import JobLog

    app = SegdeckApp(photos)
    async with app.run_test(size=SIZE) as pilot:
        screen, form = await ready_form(app, pilot)
        screen.query_one("#p-delay", Input).value = "0.4"
        await pilot.pause()
        await pilot.press("ctrl+r")
        jobs = screen.query_one(JobList)
        await wait_for(pilot, lambda: jobs.selected_snapshot is not None, what="job row")
        snap = jobs.selected_snapshot
        assert snap.job_dir.parent == photos.parent / "photos.segdeck"
        await wait_for(pilot, lambda: jobs.selected_snapshot.state == "running", timeout=30, what="running")
        first = jobs.selected_snapshot.done
        await wait_for(pilot, lambda: jobs.selected_snapshot.done >= first + 2, timeout=30, what="progress")
        snap = jobs.selected_snapshot
        assert snap.total == 13 and 0 < snap.fraction < 1 and snap.eta_s is not None
        cells = [str(c) for c in jobs.get_row(str(snap.job_dir))]
        assert "running" in cells and f"{snap.done}/13" in cells
        jobs.focus()
        await pilot.press("x")
        await wait_for(pilot, lambda: jobs.selected_snapshot.state == "cancelled", timeout=30, what="cancelled")
        snap = jobs.selected_snapshot
        assert snap.done < 13 and snap.pid is None
        log = screen.query_one(JobLog)
        assert any("finished: cancelled" in line.text for line in log.lines)
        # the outputs of the finished items exist, the others do not
        outs = sorted(p.name for p in snap.job_dir.glob("*.txt"))
        assert len(outs) == snap.done
        # "l" shows the tail of job.log, "l" again the events
        await pilot.press("l")
        await pilot.pause()
        assert log.source == ("job.log", snap.job_dir)
        assert any("finished: cancelled" in str(strip.text) for strip in log.lines)
        await pilot.press("l")
        await pilot.pause()
        assert log.source == snap.job_dir
        # resume with "e": the rest is done, nothing twice
        first_done = snap.done
        await pilot.press("e")
        await wait_for(pilot, lambda: jobs.selected_snapshot.state == "done", timeout=40, what="resumed job done")
        events = (snap.job_dir / "events.jsonl").read_text().splitlines()
        assert sum('"kind": "ItemDone"' in e for e in events) == 13
        assert any(f"resuming: {first_done} of 13" in e for e in events)
        # "o" without a desktop: path shown and copied
        await pilot.press("o")
        await pilot.pause()
        if not os.environ.get("DISPLAY"):
            assert app.clipboard == str(snap.job_dir)


@pytest.mark.asyncio
@pytest.mark.timeout(90)
async def test_job_started_from_cli_shows_up(photos, dummy_job):
    from segdeck.tui.app import SegdeckApp
    from segdeck.tui.widgets.job_list import JobList

    proc = subprocess.Popen(
        [sys.executable, "-m", "segdeck", "run", "tuidummy", str(photos), "--set", "delay=0.2", "--set", 'tag="cli"'],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    try:
        app = SegdeckApp(photos)
        async with app.run_test(size=SIZE) as pilot:
            jobs = app.screen.query_one(JobList)

            def cli_job():
                return [s for s in jobs.snapshots.values() if s.job == "tuidummy"]

            await wait_for(pilot, lambda: bool(cli_job()), timeout=30, what="CLI job listed")
            await wait_for(pilot, lambda: cli_job()[0].state == "done", timeout=40, what="CLI job done")
            snap = cli_job()[0]
            assert snap.done == snap.total == 13 and snap.fraction == 1.0
            assert Path(snap.input) == photos.resolve()
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_annotate_output_streams_into_log(photos, dummy_job, monkeypatch):
    from segdeck.tui import launch
    from segdeck.tui.app import SegdeckApp
    from segdeck.tui.widgets.job_log import JobLog

    # the lines `segdeck annotate` prints (annotate/app.py: emit_json)
    script = ("import json; "
              "print(json.dumps({'event': 'saved', 'kind': 'labels', 'file': 'labels/a.png', 'image': 'a.png'})); "
              "print(json.dumps({'event': 'saved', 'kind': 'mask', 'file': 'labels/b.png', 'image': 'b.png'})); "
              "print(json.dumps({'event': 'done', 'images': 2, 'saved_images': 2, 'failed': 0, 'out_dir': 'labels'}))")
    monkeypatch.setattr(launch, "annotate_available", lambda: True)
    asked = []
    monkeypatch.setattr(launch, "annotate_command",
                        lambda mode, path, method=None: asked.append(method) or [sys.executable, "-c", script])
    app = SegdeckApp(photos)
    async with app.run_test(size=SIZE) as pilot:
        screen, _ = await ready_form(app, pilot)
        screen.query_one("#folders").focus()
        await pilot.press("a")
        log = screen.query_one(JobLog)
        await wait_for(pilot, lambda: any("annotate finished" in ln.text for ln in log.lines), timeout=30,
                       what="annotate output")
        text = "\n".join(ln.text for ln in log.lines)
        assert "saved labels/a.png (image a.png)" in text and "saved labels/b.png (image b.png)" in text
        assert asked == [None]  # the dummy job's method "fast" is no segment source: annotate's default
        # a failing command (e.g. no such sub-command) is reported, not raised
        monkeypatch.setattr(launch, "annotate_command",
                            lambda mode, path, method=None: [sys.executable, "-c", "import sys; sys.exit('no annotate here')"])
        await pilot.press("a")
        await wait_for(pilot, lambda: any("annotate failed: no annotate here" in ln.text for ln in log.lines),
                       timeout=30, what="annotate failure")


@pytest.mark.timeout(60)
def test_startup_imports_nothing_heavy(photos):
    """Start the app (all registered jobs) in a fresh interpreter: no torch, no sam2."""
    script = f"""
import asyncio, json, sys, time
t0 = time.perf_counter()
from segdeck.tui.app import SegdeckApp
async def main():
    app = SegdeckApp({str(photos)!r})
    async with app.run_test(size=(100, 30)) as pilot:
        await pilot.pause(0.2)
        await app.workers.wait_for_complete()
        await app.screen.workers.wait_for_complete() if hasattr(app.screen, "workers") else None
        await pilot.pause(0.2)
        mounted = app.screen.query_one("#folders").scanned
        print(json.dumps({{"torch": "torch" in sys.modules, "sam2": "sam2" in sys.modules,
                          "hq": "segment_anything_hq" in sys.modules, "jobs": sorted(app.screen.jobs),
                          "scanned": mounted, "s": time.perf_counter() - t0}}))
asyncio.run(main())
"""
    out = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=50)
    assert out.returncode == 0, out.stderr[-2000:]
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["scanned"]
    assert "segment" in res["jobs"] or "segment" not in registry.JOBS
    assert not res["torch"] and not res["sam2"] and not res["hq"], res


@pytest.mark.asyncio
@pytest.mark.timeout(120)
async def test_real_segment_job_from_tui(tmp_path, three_regions):
    if "segment" not in registry.job_names():
        pytest.skip("the segment job is not importable in this install")
    from textual.widgets import Select

    from segdeck.tui.app import SegdeckApp
    from segdeck.tui.widgets.job_list import JobList

    img, _ = three_regions
    root = tmp_path / "shots"
    root.mkdir()
    imageio.write_image(root / "a.png", img)
    imageio.write_image(root / "b.png", img[:, ::-1].copy())
    app = SegdeckApp(root)
    async with app.run_test(size=SIZE) as pilot:
        screen, form = await ready_form(app, pilot, job="segment")
        screen.query_one("#p-method", Select).value = "felzenszwalb"
        await pilot.pause()
        assert screen.query_one("#sec-felzenszwalb").display and not screen.query_one("#sec-slico").display
        await pilot.press("ctrl+r")
        jobs = screen.query_one(JobList)
        await wait_for(pilot, lambda: jobs.selected_snapshot is not None, what="job row")
        await wait_for(pilot, lambda: jobs.selected_snapshot.state in ("done", "failed", "error"), timeout=100,
                       what="segment finished")
        snap = jobs.selected_snapshot
        assert snap.state == "done", snap
        assert snap.done == 2 and "felzenszwalb" in snap.job_dir.name
        assert len(list(snap.job_dir.glob("*.png"))) >= 2


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_job_that_cannot_start_shows_error(photos, dummy_job, monkeypatch):
    """The child cannot import the job (no PYTHONPATH): the row turns to error with the
    child's own one-line reason, nothing hangs in 'starting'."""
    from segdeck.tui.app import SegdeckApp
    from segdeck.tui.widgets.job_list import JobList

    monkeypatch.delenv("PYTHONPATH")
    app = SegdeckApp(photos)
    async with app.run_test(size=SIZE) as pilot:
        screen, _ = await ready_form(app, pilot)
        await pilot.press("ctrl+r")
        jobs = screen.query_one(JobList)
        await wait_for(pilot, lambda: jobs.selected_snapshot is not None, what="job row")
        await wait_for(pilot, lambda: jobs.selected_snapshot.state == "error", timeout=30, what="error state")
        assert "tuidummy" in (jobs.selected_snapshot.error or "")


# ---- issue 15: keys in form fields -------------------------------------------------


async def _send_keys_at_once(app, pilot, keys):
    """Post several key events in one go, as the terminal driver does when keys
    arrive together (fast typing, tmux send-keys), then let the app process them."""
    from textual import events

    chars = {"backspace": "\x7f", "escape": "\x1b"}
    for key in keys:
        char = chars.get(key, key if len(key) == 1 else None)
        app.post_message(events.Key(key, char))
    await pilot.pause()
    await pilot.pause()


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_fast_typing_keeps_key_order_and_escape_leaves_field(photos, dummy_job):
    from textual.widgets import Input

    from segdeck.tui.app import SegdeckApp
    from segdeck.tui.widgets.job_list import JobList

    app = SegdeckApp(photos)
    async with app.run_test(size=SIZE) as pilot:
        screen, form = await ready_form(app, pilot)
        delay = screen.query_one("#p-delay", Input)
        delay.value = "1024"
        await pilot.pause()
        delay.focus()
        await pilot.pause()
        assert delay.selection.start == 0 and delay.selection.end == 4  # selected on focus
        # Backspace then digits in one burst: the Backspace runs first (was "1": the
        # Backspace binding ran after the digits)
        await _send_keys_at_once(app, pilot, ["backspace", "1", "2"])
        assert delay.value == "12"
        await _send_keys_at_once(app, pilot, ["backspace", "6", "7", "left", "backspace", "9"])
        assert delay.value == "197"
        # Esc leaves the field: "j" then focuses the jobs list instead of typing a j
        await _send_keys_at_once(app, pilot, ["escape", "j"])
        assert delay.value == "197"
        assert isinstance(app.focused, JobList)


# ---- issue 15: small things (labels, floats, annotate default, log once) ----------


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_long_labels_unbroken_and_floats_short(photos, dummy_job):
    from textual.widgets import Input, Label

    from segdeck.tui.app import SegdeckApp
    from segdeck.tui.widgets.param_form import format_float

    assert format_float(0.3413333333333333) == "0.341333"
    assert [format_float(v) for v in (0.5, 1e-05, 1234567.0, 2.0)] == ["0.5", "1e-05", "1234567.0", "2.0"]
    app = SegdeckApp(photos)
    async with app.run_test(size=SIZE) as pilot:
        screen, form = await ready_form(app, pilot)
        field = screen.query_one("#p-stability_score_thresh", Input)
        assert field.value == "0.341333" and form.params.stability_score_thresh == pytest.approx(0.341333)
        row = screen.query_one("#row-p-stability_score_thresh")
        form.scroll_to_widget(row, animate=False)
        await pilot.pause()
        labels = [w for w in row.query(Label) if str(w.content)]
        assert [str(w.content) for w in labels] == ["stability_score_thresh"]
        assert labels[0].size.height == 1 and labels[0].size.width >= len("stability_score_thresh")
        # every label of the form is one line
        for label in form.query(Label):
            if label.display and str(label.content):
                assert label.size.height == 1, str(label.content)


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_annotate_uses_annotates_default_method(photos, monkeypatch):
    """The segment form's default method (slico) is not annotate's (slic): ``a`` passes
    no method then, so the sessions of ``segdeck annotate paint DIR`` carry over; a
    method the user picked is passed."""
    if "segment" not in registry.job_names():
        pytest.skip("the segment job is not importable in this install")
    from textual.widgets import Select

    from segdeck.tui import launch
    from segdeck.tui.app import SegdeckApp

    monkeypatch.setattr(launch, "annotate_available", lambda: True)
    asked = []
    monkeypatch.setattr(launch, "annotate_command",
                        lambda mode, path, method=None: asked.append(method) or [sys.executable, "-c", "pass"])
    app = SegdeckApp(photos)
    async with app.run_test(size=SIZE) as pilot:
        screen, form = await ready_form(app, pilot, job="segment")
        assert form.params.method == "slico"
        screen.query_one("#folders").focus()
        await pilot.press("a")
        await wait_for(pilot, lambda: len(asked) == 1, what="annotate started")
        screen.query_one("#p-method", Select).value = "felzenszwalb"
        await wait_for(pilot, lambda: form.params is not None and form.params.method == "felzenszwalb", what="method")
        screen.query_one("#folders").focus()
        await pilot.press("a")
        await wait_for(pilot, lambda: len(asked) == 2, what="annotate started again")
        assert asked == [None, "felzenszwalb"]


def test_log_pane_shows_each_event_line_once(tmp_path):
    """The lines a job is shown with (``JobWatcher.lines``) may include the ones of a
    poll whose message is still queued; appending that poll's lines showed them twice."""
    import asyncio

    from textual.app import App

    from segdeck.core.jobs.events import ItemDone, JobStarted, JsonlSink
    from segdeck.tui.jobwatch import JobWatcher
    from segdeck.tui.widgets.job_log import JobLog

    job_dir = tmp_path / "in.segdeck" / "j1"
    job_dir.mkdir(parents=True)
    (job_dir / "job.toml").write_text('job = "x"\ninput = "/in"\n')
    sink = JsonlSink(job_dir)
    sink(JobStarted(job="x", total=3, todo=3, pid=os.getpid()))
    sink(ItemDone(item="a", seconds=0.1, outputs=[]))
    w = JobWatcher([tmp_path / "in"])
    _, new = w.poll(force_scan=True)
    key = job_dir.resolve()

    class LogApp(App):
        def compose(self):
            yield JobLog(id="log")

    async def run():
        app = LogApp()
        async with app.run_test(size=(80, 20)) as pilot:
            log = app.query_one(JobLog)
            log.show(key, w.lines(key))  # the job is selected: its lines so far
            log.append(key, new[key])  # then the poll's message with the same lines
            sink(ItemDone(item="b", seconds=0.1, outputs=[]))
            _, new2 = w.poll()
            log.append(key, new2[key])
            await pilot.pause()
            return [str(strip.text) for strip in log.lines]

    texts = asyncio.run(run())
    sink.close()
    assert sum("done a" in t for t in texts) == 1 and sum("done b" in t for t in texts) == 1
    assert sum("started x" in t for t in texts) == 1


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_typing_in_a_field_does_not_relayout_the_screen(photos, dummy_job, monkeypatch):
    """Input re-lays-out the whole screen on every change of its text width (a reactive
    with layout=True), ~25 ms a key on the main screen: the form's fields only repaint.
    An error line that comes or goes still re-lays-out (the form's rows move)."""
    from textual.screen import Screen
    from textual.widgets import Input

    from segdeck.tui.app import SegdeckApp

    app = SegdeckApp(photos)
    async with app.run_test(size=SIZE) as pilot:
        screen, form = await ready_form(app, pilot)
        field = screen.query_one("#p-tag", Input)
        field.focus()
        await pilot.pause(0.5)
        calls = []
        orig = Screen._refresh_layout

        def counting(self, *args, **kwargs):
            calls.append(1)
            return orig(self, *args, **kwargs)

        monkeypatch.setattr(Screen, "_refresh_layout", counting)
        for ch in "abcdef":
            await pilot.press(ch)
        await pilot.press("backspace", "backspace")
        await pilot.pause(0.3)
        assert field.value.endswith("abcd") and form.params.tag == field.value
        assert len(calls) <= 1, len(calls)  # was one per key


def test_log_lines_are_the_reporters_text():
    """Issue 16, one reporter: the log pane's line for every event is the text and the
    level of ``segdeck.core.jobs.report.event_line`` (sub-steps stay out, as in job.log)."""
    from test_jobs_report import SAMPLES

    from segdeck.core.jobs import report
    from segdeck.core.jobs.events import ItemProgress
    from segdeck.tui.jobwatch import event_line

    for event in SAMPLES:
        line, want = event_line(event), report.event_line(event)
        if isinstance(event, ItemProgress):
            assert line is None
        else:
            assert (line.t, line.text, line.level) == (want.t, want.text, want.level)
    assert set(report.LEVELS) == {"title", "done", "info", "warning", "error"}  # LogLine's levels


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_a_job_declares_its_tui_behaviour(photos, dummy_job, monkeypatch):
    """Issue 16: a new job's class attributes (``tui_curve``, ``tui_curve_field``,
    ``tui_no_curve_methods``, ``tui_model_field``, ``tui_field_notes``) give it its
    threshold curve, model field and notes in the TUI; nothing under tui/ names it."""
    from textual.widgets import Select

    from segdeck.core.jobs import registry
    from segdeck.tui.app import SegdeckApp
    from segdeck.tui.screens.threshold import ThresholdScreen

    tui = Path(__file__).parents[1] / "tui"
    assert not any("tuideclared" in p.read_text(encoding="utf-8") for p in tui.rglob("*.py"))
    monkeypatch.setattr(registry, "JOBS", {"tuideclared": "tui_dummy_job:DeclaredJob"})
    app = SegdeckApp(photos)
    async with app.run_test(size=SIZE) as pilot:
        screen, form = await ready_form(app, pilot, job="tuideclared")
        notes_now = {name: str(note.content) for name, note in form._notes.items()}
        assert notes_now["tag"] == "declared note under the tag"
        assert notes_now["stability_score_thresh"].startswith("Ctrl+T: pick it from the curve")
        assert notes_now["weights"].startswith("sam2.1-tiny: ")  # cached or not: the model note
        assert screen.model_field() == ("weights", None)
        assert screen.check_action("threshold", ()) is True
        # the declared curve, picked value into the declared field
        screen.query_one("#folders").focus()
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: isinstance(app.screen, ThresholdScreen), what="threshold picker")
        assert app.screen.curve.thresholds == [0.2, 0.4, 0.6]
        await pilot.press("enter")
        await wait_for(pilot, lambda: form.params is not None and form.params.stability_score_thresh in (0.2, 0.4, 0.6),
                       what="picked threshold in the declared field")
        # a method declared without a curve is refused at once
        screen.query_one("#p-method", Select).value = "slow"
        await pilot.pause()
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: any("slow has no similarity" in str(n.message) for n in app._notifications),
                       what="no-curve method")
        assert not isinstance(app.screen, ThresholdScreen)
