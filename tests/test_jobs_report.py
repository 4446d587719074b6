"""One reporter (issue 16): ``segdeck.core.jobs.report.event_line`` words every event
type, and ``job.log`` and ``segdeck run`` show exactly its text."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np

from segdeck.core import imageio
from segdeck.core.jobs.events import (
    EVENT_TYPES,
    ItemDone,
    ItemFailed,
    ItemProgress,
    JobFinished,
    JobStarted,
    Message,
    Progress,
    read_events,
)
from segdeck.core.jobs.report import LEVELS, event_line

TESTS = Path(__file__).parent

SAMPLES = [
    JobStarted(job="segment", total=5, todo=3, pid=42, t=1.0),
    ItemDone(item="a.png", seconds=0.25, outputs=["a.png.labels.png"], t=1.0),
    ItemFailed(item="b.png", error="cannot decode", t=1.0),
    ItemFailed(item="c.png", error="/in/c.png: not an image", t=1.0),
    ItemProgress(item="d.png", done=12, total=40, what="region", t=1.0),
    ItemProgress(item="d.png", done=3, what="", t=1.0),
    ItemProgress(item="e", done=2, total=9, what="region", partial={"caption": "a red\ncar"}, t=1.0),
    ItemProgress(item="e", done=3, total=9, what="region", partial="x" * 100, t=1.0),
    Message(text="resuming", t=1.0),
    Message(text="careful", level="warning", t=1.0),
    Progress(what="download sam2", done=5.0, total=10.0, t=1.0),
    Progress(what="verify efficientnet-lite0", done=8388608.0, total=18826032.0, unit="bytes", t=1.0),
    JobFinished(status="failed", done=3, failed=1, skipped=2, seconds=1.25, skipped_failed=1, t=1.0),
    JobFinished(status="error", done=0, failed=0, skipped=0, seconds=0.5, error="disk full at /x", t=1.0),
]


def test_every_event_type_has_one_line_of_text():
    assert {type(e) for e in SAMPLES} == set(EVENT_TYPES.values())  # a new event type needs its text
    texts = [event_line(e) for e in SAMPLES]
    assert all(x is not None and "\n" not in x.text and x.level in LEVELS for x in texts)
    assert [x.text for x in texts] == [
        "started segment: 5 items, 3 to do (pid 42)",
        "done a.png in 0.25 s",
        "failed b.png: cannot decode",
        "failed /in/c.png: not an image",
        "d.png: region 12/40",
        "d.png: 3",
        'e: region 2/9: {"caption":"a red\\ncar"}',
        "e: region 3/9: " + "x" * 79 + "…",
        "resuming",
        "careful",
        "download sam2: 5/10",
        "verify efficientnet-lite0: 8.4/18.8 MB",  # the model manager counts bytes
        "finished: failed, 3 done, 1 failed, 2 already done, 1 failed before (not retried), 1.2 s",
        "finished: error, 0 done, 0 failed, 0 already done, 0.5 s (disk full at /x)",
    ]
    assert [x.level for x in texts][:3] == ["title", "done", "error"] and texts[9].level == "warning"


def test_job_log_and_cli_show_the_reporters_text(tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    for i in range(3):
        imageio.write_image(src / f"{i}.png", np.full((4, 4, 3), i, np.uint8))
    (src / "bad.png").write_text("not an image")
    env = dict(os.environ)
    env["SEGDECK_EXTRA_JOBS"] = "tuidummy=tui_dummy_job:DummyJob"
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(TESTS), env.get("PYTHONPATH")]))
    env["SEGDECK_STATE_DIR"] = str(tmp_path / "state")
    env["COLUMNS"] = "400"
    args = [sys.executable, "-m", "segdeck", "run", "tuidummy", str(src), "--out", str(tmp_path / "out"),
            "--delay", "0"]
    subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)
    proc = subprocess.run(args, capture_output=True, text=True, env=env, timeout=120)  # resume: a Message too
    assert proc.returncode == 1, proc.stderr
    job_dir = Path(proc.stdout.splitlines()[-1])
    events = read_events(job_dir)[0]
    expected = [event_line(e).text for e in events if not isinstance(e, (ItemProgress, Progress))]
    logged = [ln.split(" ", 3)[3] for ln in (job_dir / "job.log").read_text().splitlines()]
    assert logged == expected
    second_run = events[[i for i, e in enumerate(events) if isinstance(e, JobStarted)][-1]:]
    shown = [event_line(e).text for e in second_run if isinstance(e, (ItemFailed, Message))]
    assert shown and all(text in proc.stderr for text in shown), proc.stderr
