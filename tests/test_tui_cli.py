"""``segdeck tui`` / ``segdeck jobs`` command lines (no terminal needed)."""

from __future__ import annotations

import numpy as np

from segdeck.cli import main
from segdeck.core import imageio


def test_tui_refuses_missing_folder(tmp_path, capsys):
    assert main(["tui", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err
    assert "does not exist" in err and "Traceback" not in err
    f = tmp_path / "a.txt"
    f.write_text("x")
    assert main(["tui", str(f)]) == 2


def test_no_arguments_means_tui(monkeypatch):
    import segdeck.tui.app as app_mod

    seen = {}

    def fake_main(root):
        seen["root"] = root
        return 0

    monkeypatch.setattr(app_mod, "main", fake_main)
    assert main([]) == 0
    assert str(seen["root"]) == "."


def test_jobs_lists_jobs(tmp_path, capsys):
    from tui_dummy_job import DummyJob, DummyParams

    from segdeck.core.jobs.runner import job_dir_for, run_job

    root = tmp_path / "pics"
    root.mkdir()
    for i in range(3):
        imageio.write_image(root / f"{i}.png", np.full((4, 4, 3), i, np.uint8))
    (root / "broken.png").write_text("no")
    params = DummyParams(delay=0.0)
    job_dir = job_dir_for(DummyJob, params, root, None)
    run_job(DummyJob(params, root, job_dir))
    assert main(["jobs", str(root)]) == 0
    out = capsys.readouterr().out
    row = next(line for line in out.splitlines() if "tuidummy" in line)
    assert "failed" in row and " 3 " in row and " 1 " in row and job_dir.name in "".join(out.split())
    assert main(["jobs", str(tmp_path / "missing")]) == 2


# ------------------------------------------------ `segdeck run` / `segdeck jobs` (issues 15, 17)

import json  # noqa: E402
import os  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
from pathlib import Path  # noqa: E402

import pytest  # noqa: E402

TESTS = Path(__file__).parent


@pytest.fixture
def dummy_env(monkeypatch):
    """The dummy job registered here (the runner imports it) and in child processes."""
    from segdeck.core.jobs import registry

    monkeypatch.setitem(registry.JOBS, "tuidummy", "tui_dummy_job:DummyJob")
    monkeypatch.setenv("SEGDECK_EXTRA_JOBS", "tuidummy=tui_dummy_job:DummyJob")
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    monkeypatch.delenv("COLUMNS", raising=False)


def _pics(root: Path, n: int = 3, broken: bool = True) -> Path:
    root.mkdir(parents=True)
    for i in range(n):
        imageio.write_image(root / f"{i}.png", np.full((4, 4, 3), i, np.uint8))
    if broken:
        (root / "broken.png").write_text("no")
    return root


def _segdeck(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "segdeck", *map(str, args)], capture_output=True, text=True,
                          timeout=120, cwd=cwd)


def test_run_last_stdout_line_is_the_whole_job_folder_when_piped(tmp_path, dummy_env):
    """Issue 17: stdout not a terminal -> the last line is the job folder, unwrapped
    (the path here is far longer than 80 columns); --json gives a summary object."""
    src = _pics(tmp_path / "pics")
    out = tmp_path / ("a-very-long-output-folder-name-" * 3) / "deeper"
    res = _segdeck("run", "tuidummy", src, "--out", out, "--delay", "0")
    assert res.returncode == 1, res.stderr  # one broken image
    job_dir = res.stdout.splitlines()[-1]
    assert len(job_dir) > 120 and Path(job_dir).is_dir() and (Path(job_dir) / "job.toml").is_file()
    assert Path(job_dir).parent == out
    summary_line = next(ln for ln in res.stderr.splitlines() if ln.startswith("failed:"))
    assert summary_line.endswith(job_dir)  # the human line on stderr is not wrapped either
    res = _segdeck("run", "tuidummy", src, "--out", out, "--delay", "0", "--json")
    doc = json.loads(res.stdout.splitlines()[-1])
    assert doc["job_dir"] == job_dir and doc["status"] == "failed" and doc["exit_code"] == res.returncode == 1
    assert (doc["total"], doc["skipped"], doc["failed"], doc["skipped_failed"]) == (4, 3, 1, 0)
    res = _segdeck("run", "tuidummy", src, "--out", out, "--delay", "0", "--events")
    assert all(json.loads(ln)["kind"] for ln in res.stdout.splitlines())  # stdout stays JSON lines
    res = _segdeck("run", "tuidummy", src, "--set", "dealy=1", "--json")  # never started: still an object
    doc = json.loads(res.stdout.splitlines()[-1])
    assert res.returncode == doc["exit_code"] == 2 and doc["status"] == "error" and doc["job_dir"] is None
    assert "dealy: unknown parameter" in doc["error"]


def test_skip_failed_and_finished_rerun_say_what_was_skipped(tmp_path, dummy_env, capsys):
    """Issue 15 item 10: --skip-failed used to report failed items as "already done ... 0
    failed", and a finished re-run drew an empty 0/0 bar."""
    from segdeck.cli import main

    src = _pics(tmp_path / "pics", n=3)
    out = tmp_path / "out"
    assert main(["run", "tuidummy", str(src), "--out", str(out), "--delay", "0"]) == 1
    capsys.readouterr()
    assert main(["run", "tuidummy", str(src), "--out", str(out), "--delay", "0", "--skip-failed"]) == 1
    err = capsys.readouterr().err.replace(str(tmp_path), "TMP")
    assert "nothing to do: 3 done, 1 failed (not retried" in err
    assert "0/0" not in err and "4 already done" not in err and "3 of 4 items already done, 1 failed before" in err
    imageio.write_image(src / "new.png", np.zeros((4, 4, 3), np.uint8))
    assert main(["run", "tuidummy", str(src), "--out", str(out), "--delay", "0", "--skip-failed"]) == 1
    err = capsys.readouterr().err
    assert "1 done, 0 failed, 3 already done, 1 failed before (not retried)" in err
    (src / "broken.png").unlink()
    assert main(["run", "tuidummy", str(src), "--out", str(out), "--delay", "0"]) == 0
    capsys.readouterr()
    assert main(["run", "tuidummy", str(src), "--out", str(out), "--delay", "0"]) == 0
    err = capsys.readouterr().err.replace(str(tmp_path), "TMP")
    assert "nothing to do: 4 done -> TMP" in err and "0/0" not in err and "failed" not in err


def test_unknown_set_key_names_the_key_and_close_matches(tmp_path, dummy_env, capsys):
    """Issue 15 item 10: pydantic's "Extra inputs are not permitted" named no key."""
    from segdeck.cli import main

    src = _pics(tmp_path / "pics", n=1, broken=False)
    assert main(["run", "tuidummy", str(src), "--set", "dealy=0.1"]) == 2
    err = capsys.readouterr().err
    assert "dealy: unknown parameter; did you mean 'delay'?" in err and "Extra inputs" not in err
    assert main(["run", "tuidummy", str(src), "--set", "slow.factr=3", "--set", "fast.step=0"]) == 2
    lines = capsys.readouterr().err.splitlines()
    assert lines[0].startswith("error: bad parameters (2 problems)")
    assert any("slow.factr: unknown parameter; did you mean 'slow.factor'?" in ln for ln in lines)
    assert any(ln.strip().startswith("fast.step: Input should be greater than or equal to 1 (got 0)") for ln in lines)
    assert main(["run", "tuidummy", str(src), "--set", "zz.top=1"]) == 2
    err = capsys.readouterr().err
    assert "zz.top: unknown parameter; known: delay, method, " in err and " fast., slow." in err
    assert main(["run", "tuidummy", str(src), "--set", "method=slwo"]) == 2
    assert "did you mean 'slow'?" in capsys.readouterr().err
    assert not list(tmp_path.glob("*.segdeck"))


def test_jobs_lists_out_elsewhere_with_and_without_input_and_prunes(tmp_path, dummy_env, monkeypatch, capsys):
    """Issue 15 item 6: a job written with --out elsewhere was listed nowhere."""
    from segdeck.cli import main
    from segdeck.core.jobs.registry import recent

    monkeypatch.setenv("SEGDECK_STATE_DIR", str(tmp_path / "state"))
    src = _pics(tmp_path / "pics", broken=False)
    other = _pics(tmp_path / "other", broken=False)
    assert main(["run", "tuidummy", str(src), "--out", str(tmp_path / "far" / "away"), "--delay", "0"]) == 0
    assert main(["run", "tuidummy", str(other), "--delay", "0"]) == 0
    far = next((tmp_path / "far" / "away").iterdir())
    near = next((tmp_path / "other.segdeck").iterdir())
    capsys.readouterr()
    assert main(["jobs", str(src)]) == 0  # with INPUT: its job, although written elsewhere
    out = "".join(capsys.readouterr().out.split())
    assert str(far) in out and str(near) not in out
    monkeypatch.chdir(tmp_path / "far")
    assert main(["jobs"]) == 0  # without INPUT: every recent job
    out = "".join(capsys.readouterr().out.split())
    assert str(far) in out and str(near) in out
    import shutil

    shutil.rmtree(far)
    assert main(["jobs"]) == 0
    out = "".join(capsys.readouterr().out.split())
    assert str(far) not in out and str(near) in out and recent() == [near]


def test_jobs_says_why_a_job_is_in_error_or_failed(tmp_path, dummy_env, monkeypatch, capsys):
    from tui_dummy_job import DummyJob, DummyParams

    from segdeck.cli import main
    from segdeck.core.jobs.runner import job_dir_for, run_job

    class NoModel(DummyJob):
        def setup(self, emit):
            raise ImportError("No module named 'torch'")  # not a SegdeckError: used to escape as a traceback

    src = _pics(tmp_path / "pics")
    params = DummyParams(delay=0.0, tag="x")
    summary = run_job(NoModel(params, src, job_dir_for(NoModel, params, src, tmp_path / "o1")))
    assert summary.status == "error" and "torch" in summary.error
    run_job(DummyJob(DummyParams(delay=0.0), src, job_dir_for(DummyJob, DummyParams(delay=0.0), src, tmp_path / "o2")))
    capsys.readouterr()
    assert main(["jobs", str(src)]) == 0
    out = capsys.readouterr().out
    why = out[out.index("why"):]
    assert "(error): ImportError: No module named 'torch'" in why
    assert "(failed): 1 failed, last: broken.png: not an image file" in why


def test_jobs_cancel_says_when_nothing_runs(tmp_path, dummy_env, monkeypatch, capsys):
    """Issue 15 item 10: ``jobs --cancel`` was silent (exit 0) when nothing ran."""
    from segdeck.cli import main

    monkeypatch.setenv("SEGDECK_STATE_DIR", str(tmp_path / "state"))
    src = _pics(tmp_path / "pics", broken=False)
    assert main(["jobs", "--cancel", str(src)]) == 1
    assert "no jobs found; nothing to cancel" in capsys.readouterr().err
    assert main(["run", "tuidummy", str(src), "--delay", "0"]) == 0
    capsys.readouterr()
    assert main(["jobs", "--cancel", str(src)]) == 1
    assert "nothing to cancel: none of the 1 jobs listed is running" in capsys.readouterr().err


def test_jobs_why_keeps_a_multi_line_reason_under_its_job(tmp_path, capsys):
    """A reason of several lines (a propagate dry run's per-group table) is printed
    indented under its job, not as lines that read like other jobs' entries."""
    from tui_dummy_job import DummyJob, DummyParams

    from segdeck.core.errors import SegdeckError
    from segdeck.core.jobs.runner import job_dir_for, run_job

    class TableJob(DummyJob):
        def setup(self, emit):
            raise SegdeckError("dry run: 1 of 2 groups cannot be propagated\n  group  refs\n  ant    0/2")

    root = tmp_path / "pics"
    root.mkdir()
    imageio.write_image(root / "0.png", np.zeros((4, 4, 3), np.uint8))
    params = DummyParams(delay=0.0)
    job_dir = job_dir_for(TableJob, params, root, None)
    assert run_job(TableJob(params, root, job_dir)).status == "error"
    assert main(["jobs", str(root)]) == 0
    lines = capsys.readouterr().out.splitlines()
    why = lines[next(i for i, line in enumerate(lines) if line.strip() == "why") + 1:]
    assert why[0].strip().endswith("dry run: 1 of 2 groups cannot be propagated")
    assert why[1] == "        group  refs" and why[2] == "        ant    0/2"
