"""The TUI in a real terminal (tmux), as a user types into it: keys sent together with
``tmux send-keys`` arrive in one read, which is how a Backspace got applied after the
digits that followed it (Backspace 1 2 in a numeric field gave "1"); Esc leaves the
field; at 80x24 the form's Run line and the footer are on screen.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
import uuid

import numpy as np
import pytest

from segdeck.core import imageio
from segdeck.core.jobs import registry

pytestmark = pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")


class Tmux:
    """One tmux server (own socket) running ``segdeck tui`` in a sized window."""

    def __init__(self, cwd, args, size=(100, 30), env=None):
        self.sock = f"segdeck-test-{uuid.uuid4().hex[:8]}"
        cmd = " ".join([sys.executable, "-m", "segdeck", "tui", *args])
        env_args = []
        for k, v in (env or {}).items():
            env_args += ["-e", f"{k}={v}"]
        self.run("new-session", "-d", "-x", str(size[0]), "-y", str(size[1]), *env_args, "-c", str(cwd),
                 f"{cmd}; sleep 30")

    def run(self, *args) -> str:
        return subprocess.run(["tmux", "-L", self.sock, *args], capture_output=True, text=True,
                              timeout=20).stdout

    def keys(self, *keys) -> None:
        self.run("send-keys", "-t", "0", *keys)

    def screen(self) -> list[str]:
        return self.run("capture-pane", "-p", "-t", "0").splitlines()

    def wait(self, cond, timeout=40.0, what="screen"):
        t0 = time.monotonic()
        while time.monotonic() - t0 < timeout:
            lines = self.screen()
            if cond(lines):
                return lines
            time.sleep(0.2)
        raise AssertionError(f"timed out waiting for {what}:\n" + "\n".join(self.screen()))

    def close(self) -> None:
        subprocess.run(["tmux", "-L", self.sock, "kill-server"], capture_output=True, timeout=20)


@pytest.fixture
def photos(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    for i in range(3):
        imageio.write_image(root / f"img{i}.png", np.full((16, 16, 3), 60 * i, np.uint8))
    return root


def field_line(lines, name):
    return next((ln for ln in lines if f" {name} " in ln), "")


@pytest.mark.timeout(120)
def test_tmux_fast_keys_escape_and_80x24(photos, tmp_path):
    if "segment" not in registry.job_names():
        pytest.skip("the segment job is not importable in this install")
    env = {"SEGDECK_STATE_DIR": str(tmp_path / "state"), "TERM": "xterm-256color"}
    tm = Tmux(photos.parent, [str(photos)], size=(80, 24), env=env)
    try:
        lines = tm.wait(lambda ls: "max_side" in "\n".join(ls) and "ready:" in "\n".join(ls), what="segment form")
        # 80x24: the Run line and the footer are on screen
        assert any("Run ^r" in ln for ln in lines), lines
        assert "^r Run" in lines[-1] or "Run" in lines[-1], lines[-1]
        assert len(lines) <= 24
        tm.keys("p")  # the first field (method), then Tab to max_side
        time.sleep(0.5)
        tm.keys("Tab")
        time.sleep(0.5)
        tm.keys("BSpace", "1", "2")  # one burst: the selected 1024 is replaced by 12
        lines = tm.wait(lambda ls: "max_side 12" in field_line(ls, "max_side") + " ", what="12 typed")
        assert field_line(lines, "max_side").split("max_side", 1)[1].split()[0] == "12"
        tm.keys("BSpace", "6", "7")
        lines = tm.wait(lambda ls: "max_side 167" in field_line(ls, "max_side"), what="167 typed")
        tm.keys("Escape")
        time.sleep(0.5)
        tm.keys("j")  # focuses the jobs list, types nothing
        time.sleep(1.0)
        assert field_line(tm.screen(), "max_side").split("max_side", 1)[1].split()[0] == "167"
    finally:
        tm.close()
