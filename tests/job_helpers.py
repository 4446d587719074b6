"""Helpers shared by the job tests."""

from __future__ import annotations

import json
import os
import signal
import subprocess


def kill_after_first_done(proc: subprocess.Popen) -> tuple[str | None, str]:
    """Read a ``segdeck run --events`` child's stdout (text mode) until its first
    ``ItemDone`` event, then ``kill -9`` it.

    Returns
    -------
    (item, stderr)
        The item of the first ``ItemDone`` (None when the process ended without one)
        and whatever the child wrote to stderr (empty when stderr was not piped).
    """
    first = None
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            event = json.loads(line)
            if event.get("kind") == "ItemDone":
                first = event["item"]
                os.kill(proc.pid, signal.SIGKILL)
                break
    finally:
        proc.kill()
        proc.wait(30)
        stderr = proc.stderr.read() if proc.stderr is not None else ""
        for stream in (proc.stdout, proc.stderr):
            if stream is not None:
                stream.close()
    return first, stderr
