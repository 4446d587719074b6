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
