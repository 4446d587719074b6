"""Real highgui windows under Xvfb, driven with xdotool: one test per session (paint,
GrabCut, SAM with a fake engine), each asserting the files it saved; plus zero frames
drawn while idle. Skipped when Xvfb or xdotool is missing (apt-get install xvfb xdotool)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
from xrelay import XTcpRelay

from segdeck.annotate.gui import STATUS_BAR
from segdeck.annotate.state import PALETTE, colour_hex

pytestmark = [
    pytest.mark.gui,
    pytest.mark.skipif(not (shutil.which("Xvfb") and shutil.which("xdotool")), reason="needs Xvfb and xdotool"),
]


@pytest.fixture(scope="module", params=["direct", "tcp-relay"])
def xdisplay(request):
    """A private Xvfb display; yields the environment for processes that use it.

    ``direct``: the Unix socket ``:N``. ``tcp-relay``: ``DISPLAY=127.0.0.1:M`` through a
    byte relay (:mod:`xrelay`), as over ``ssh -X`` — no shared memory, no file descriptors.
    The environment leaves the Qt MIT-SHM switches unset: segdeck must set them itself.
    """
    # -displayfd: Xvfb picks a free display number itself and writes it to the pipe, so
    # test runs in parallel never share (and then kill) each other's server
    rfd, wfd = os.pipe()
    # -noreset: without it Xvfb resets when its last client disconnects (between two
    # windows of a test), and a client connecting during the reset is refused
    proc = subprocess.Popen(["Xvfb", "-displayfd", str(wfd), "-screen", "0", "1600x1000x24", "-nolisten", "tcp",
                             "-noreset"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, pass_fds=(wfd,))
    os.close(wfd)
    with os.fdopen(rfd) as pipe:
        num_text = pipe.readline().strip()  # EOF (empty) when Xvfb failed to start
    if not num_text.isdigit():
        proc.kill()
        pytest.skip("Xvfb did not start")
    num = int(num_text)
    deadline = time.time() + 15
    while not os.path.exists(f"/tmp/.X11-unix/X{num}"):
        if time.time() > deadline or proc.poll() is not None:
            proc.kill()
            pytest.skip("Xvfb did not start")
        time.sleep(0.1)
    relay = None
    display = f":{num}"
    if request.param == "tcp-relay":
        relay = XTcpRelay(num)
        display = relay.display
    env = dict(os.environ, DISPLAY=display, QT_QPA_PLATFORM="xcb",
               SEGDECK_TEST_WINDOW_SETTLE="1.5" if relay else "0.5", SEGDECK_TEST_XDO_DISPLAY=f":{num}")
    for key in ("WAYLAND_DISPLAY", "QT_XCB_NO_MITSHM", "QT_X11_NO_MITSHM"):
        env.pop(key, None)
    yield env
    if relay is not None:
        assert relay.connections > 0, "nothing went through the TCP relay"
        relay.close()
    proc.terminate()
    proc.wait(timeout=10)


class Driver:
    """A running annotator process plus xdotool helpers."""

    def __init__(self, cmd: list[str], env: dict, tmp: Path):
        self.env = env
        self.frames = tmp / "frames.log"
        self.out = open(tmp / "stdout.txt", "w+")
        self.err = open(tmp / "stderr.txt", "w+")
        self.proc = subprocess.Popen(cmd + ["--frames-log", str(self.frames)], env=env, stdout=self.out,
                                     stderr=self.err, cwd=tmp)

    def xdo(self, *args: str) -> str:
        # the input comes from the X server's own side (the user's keyboard and mouse), as
        # over ssh -X: only the annotator's connection goes through the relay
        env = dict(self.env, DISPLAY=self.env.get("SEGDECK_TEST_XDO_DISPLAY", self.env["DISPLAY"]))
        r = subprocess.run(["xdotool", *args], env=env, capture_output=True, text=True, timeout=20)
        return r.stdout.strip()

    def window(self, name: str, timeout: float = 40.0) -> str:
        deadline = time.time() + timeout
        while time.time() < deadline:
            found = self.xdo("search", "--onlyvisible", "--name", f"^{name}$")
            drawn = self.frames.exists() and any(
                line.split(" ", 1)[-1] == name for line in self.frames.read_text().splitlines())
            if found and drawn:
                # mapped and drawn; Qt drops keys sent before it has handled the new window's
                # first events, which over a relayed display can take over a second on a busy machine
                time.sleep(float(self.env.get("SEGDECK_TEST_WINDOW_SETTLE", "0.5")))
                return found.splitlines()[0]
            if self.proc.poll() is not None:
                break
            time.sleep(0.2)
        raise AssertionError(f"window {name!r} did not appear: {self.stderr()}")

    def gone(self, name: str, timeout: float = 20.0) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline and self.xdo("search", "--name", f"^{name}$"):
            time.sleep(0.2)

    def frame_count(self) -> int:
        if not self.frames.exists():
            return 0
        return sum(1 for line in self.frames.read_text().splitlines() if "placeholder:" not in line)

    def wait_frames(self, before: int, timeout: float = 10.0) -> None:
        """Wait until a frame was drawn after ``before`` frames (the action took effect)."""
        deadline = time.time() + timeout
        while self.frame_count() <= before and time.time() < deadline:
            time.sleep(0.05)
        time.sleep(0.15)

    def click(self, win: str, x: int, y: int, button: int = 1, repeat: int = 1) -> None:
        self.xdo("mousemove", "--window", win, str(x), str(y))
        time.sleep(0.1)
        before = self.frame_count()
        self.xdo("click", "--repeat", str(repeat), "--delay", "60", str(button))
        self.wait_frames(before)
        time.sleep(0.2)

    def drag(self, win: str, p0, p1, button: int) -> None:
        before = self.frame_count()
        self.xdo("mousemove", "--window", win, str(p0[0]), str(p0[1]))
        time.sleep(0.1)
        self.xdo("mousedown", str(button))
        time.sleep(0.1)
        for t in (0.33, 0.66, 1.0):
            self.xdo("mousemove", "--window", win, str(int(p0[0] + t * (p1[0] - p0[0]))), str(int(p0[1] + t * (p1[1] - p0[1]))))
            time.sleep(0.1)
        self.xdo("mouseup", str(button))
        self.wait_frames(before)
        time.sleep(0.2)

    def press(self, win: str, key: str) -> None:
        """Give ``win`` the keyboard focus (what a window manager does on a click) and type
        ``key`` as a real key event (XTEST). Synthetic events sent to an unfocused window
        (``xdotool key --window``) were sometimes never delivered by Qt after a session
        switched windows (GrabCut -> paint), on the relayed display."""
        self.xdo("windowfocus", win)
        time.sleep(0.05)
        self.xdo("key", key)

    def key(self, win: str, key: str, wait: float = 0.2, expect: bool = True) -> None:
        before = self.frame_count()
        self.press(win, key)
        if expect:
            self.wait_frames(before)
        time.sleep(wait)

    def events(self) -> list[dict]:
        """The JSON lines the annotator printed so far (it flushes each one)."""
        self.out.flush()
        text = Path(self.out.name).read_text()
        return [json.loads(line) for line in text.splitlines() if line.startswith("{") and line.endswith("}")]

    def saved(self, kind: str = "labels") -> int:
        return sum(1 for r in self.events() if r.get("event") == "saved" and r.get("kind") == kind)

    def drawn(self, name: str) -> int:
        """Frames drawn so far in the window ``name``."""
        if not self.frames.exists():
            return 0
        return sum(1 for line in self.frames.read_text().splitlines() if line.split(" ", 1)[-1] == name)

    def key_until(self, win: str, key: str, done, tries: int = 3, wait: float = 8.0) -> None:
        """Send ``key`` until ``done()`` holds, at most ``tries`` times.

        For keys whose effect draws no frame in ``win`` (save, finish, quit). Without a
        window manager nothing gives a new window the keyboard focus, and on a busy
        machine Qt may drop a key sent while it still handles the window's first events;
        a key is sent again only when its effect did not happen at all.
        """
        for _ in range(tries):
            self.press(win, key)
            deadline = time.time() + wait
            while time.time() < deadline:
                if done():
                    return
                if self.proc.poll() is not None:
                    return
                time.sleep(0.1)
        raise AssertionError(f"key {key!r} had no effect after {tries} tries: {self.stderr()}")

    def finish(self, timeout: float = 40.0) -> tuple[int, list[dict]]:
        try:
            code = self.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.out.seek(0)
            frames = self.frames.read_text().splitlines()[-5:] if self.frames.exists() else []
            raise AssertionError(f"annotator did not exit: {self.stderr()}\nstdout: {self.out.read()[-1000:]}"
                                 f"\nlast frames: {frames}") from None
        self.out.seek(0)
        lines = [json.loads(line) for line in self.out.read().splitlines() if line.startswith("{")]
        return code, lines

    def stderr(self) -> str:
        self.err.seek(0)
        return self.err.read()[-2000:]

    def wm_close(self, win: str) -> None:
        """Close ``win`` as a window manager does on its title bar's X: a ``WM_PROTOCOLS``
        client message with ``WM_DELETE_WINDOW`` (Xvfb has no window manager; ``xdotool
        windowclose`` would destroy the X window under Qt's feet instead)."""
        send_wm_delete(self.env.get("SEGDECK_TEST_XDO_DISPLAY", self.env["DISPLAY"]), int(win))

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def send_wm_delete(display: str, window: int) -> None:
    """Send ``WM_DELETE_WINDOW`` to X window ``window`` on ``display`` (libX11 via ctypes)."""
    import ctypes
    import ctypes.util

    class ClientMessage(ctypes.Structure):
        _fields_ = [("type", ctypes.c_int), ("serial", ctypes.c_ulong), ("send_event", ctypes.c_int),
                    ("display", ctypes.c_void_p), ("window", ctypes.c_ulong), ("message_type", ctypes.c_ulong),
                    ("format", ctypes.c_int), ("l", ctypes.c_long * 5)]

    class XEvent(ctypes.Union):
        _fields_ = [("xclient", ClientMessage), ("pad", ctypes.c_long * 24)]

    x11 = ctypes.CDLL(ctypes.util.find_library("X11"))
    x11.XOpenDisplay.restype = ctypes.c_void_p
    x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
    x11.XInternAtom.restype = ctypes.c_ulong
    x11.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
    x11.XSendEvent.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_long, ctypes.POINTER(XEvent)]
    x11.XFlush.argtypes = x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
    dpy = x11.XOpenDisplay(display.encode())
    assert dpy, f"cannot open display {display}"
    try:
        ev = XEvent()
        ev.xclient.type = 33  # ClientMessage
        ev.xclient.window = window
        ev.xclient.message_type = x11.XInternAtom(dpy, b"WM_PROTOCOLS", False)
        ev.xclient.format = 32
        ev.xclient.l[0] = x11.XInternAtom(dpy, b"WM_DELETE_WINDOW", False)
        x11.XSendEvent(dpy, window, False, 0, ctypes.byref(ev))
        x11.XFlush(dpy)
    finally:
        x11.XCloseDisplay(dpy)


def three_band_image(path: Path) -> np.ndarray:
    rng = np.random.default_rng(0)
    img = np.zeros((240, 360, 3), np.uint8)
    img[:, :120], img[:, 120:240], img[:, 240:] = (220, 30, 30), (30, 200, 40), (20, 40, 210)
    img = (img.astype(np.int16) + rng.integers(0, 15, img.shape)).clip(0, 255).astype(np.uint8)
    cv2.imwrite(str(path), img[:, :, ::-1])
    return img


def square_image(path: Path) -> np.ndarray:
    rng = np.random.default_rng(3)
    img = rng.integers(0, 60, (200, 300, 3)).astype(np.uint8)
    img[50:150, 100:200] = rng.integers(180, 255, (100, 100, 3))
    cv2.imwrite(str(path), img[:, :, ::-1])
    return img


SEGDECK = [sys.executable, "-m", "segdeck"]


@pytest.mark.timeout(150)
def test_paint_window_clicks_modes_cut_keys_and_idle(xdisplay, tmp_path):
    src = tmp_path / "photos"
    src.mkdir()
    three_band_image(src / "a.png")
    three_band_image(src / "b.png")
    out = tmp_path / "ann"
    # the user's keymap file adds Ctrl+left as a second unfill gesture
    conf = tmp_path / "config"
    (conf / "segdeck").mkdir(parents=True)
    (conf / "segdeck" / "keymap.toml").write_text('[paint.unfill]\nmouse = ["right", "ctrl+left"]\n')
    env = dict(xdisplay, XDG_CONFIG_HOME=str(conf))
    # 360x240 image at scale 2: display 720x480 (+ status bar)
    d = Driver(SEGDECK + ["annotate", "paint", str(src), "--method", "slic", "--set", "region_size=20",
                          "--max-window", f"720x{480 + STATUS_BAR}", "--out", str(out)], env, tmp_path)
    try:
        seg = d.window("segdeck paint")
        col = d.window("segdeck colours")
        d.click(col, 60, 2 * 30 + 15)  # colour 3
        d.click(seg, 100, 100)  # fill the segment at image (50, 50)
        n0 = d.frame_count()
        for x, y in ((120, 130), (300, 200), (400, 300)):  # click mode: moving draws nothing
            d.xdo("mousemove", "--window", seg, str(x), str(y))
        time.sleep(1.2)
        assert d.frame_count() == n0, "frames drawn while idle"
        d.click(seg, 600, 400, button=1, repeat=2)  # double click: continuous fill on
        for x in range(560, 700, 20):
            d.xdo("mousemove", "--window", seg, str(x), "440")
            time.sleep(0.05)
        d.click(seg, 690, 440, button=1, repeat=2)  # continuous fill off
        d.click(seg, 100, 300, button=2)  # cut line from (50, 150) ...
        d.click(seg, 230, 300, button=2)  # ... to (115, 150)
        d.click(seg, 600, 100, button=1)  # fill, then undo it
        d.key(seg, "z")
        d.click(seg, 300, 100, button=1)  # fill ...
        d.click(seg, 300, 360, button=1)
        d.xdo("keydown", "ctrl")
        d.click(seg, 300, 100, button=1)  # ... and Ctrl+left (user binding) unfills
        d.xdo("keyup", "ctrl")
        d.key_until(seg, "space", lambda: d.saved() >= 1)  # save a.png, show b.png
        seg = d.window("segdeck paint")
        d.key(seg, "q", expect=False)
        code, lines = d.finish()
    finally:
        d.kill()
    assert code == 0, d.stderr()
    saved = [r for r in lines if r["event"] == "saved"]
    assert {r["kind"] for r in saved} == {"labels", "mask", "session"}
    assert all(r["image"] == str(src / "a.png") for r in saved)
    lm = cv2.imread(str(out / "a.png.labels.png"), cv2.IMREAD_UNCHANGED)
    assert lm.shape == (240, 360)
    assert lm[50, 50] == 3  # the first click
    assert all(lm[220, x // 2] == 3 for x in range(560, 700, 20))  # continuous fill where the pointer passed
    assert lm[50, 300] == 0  # filled then undone
    assert lm[50, 150] == 0  # filled, then unfilled by the Ctrl+click
    assert lm[180, 150] == 3
    assert (out / f"a.png.mask-3-{colour_hex(PALETTE[3])}.png").is_file()
    z = np.load(out / "a.png.session.npz")
    assert (z["labels"][150, 55:110] == 0).all()  # the cut line is edge


@pytest.mark.timeout(150)
def test_paint_wheel_zoom_and_quit_asks_about_unsaved_painting(xdisplay, tmp_path):
    """Issue 15 items 1 and 4: the wheel raised AttributeError (no cv2.getMouseWheelDelta) and
    never zoomed; q dropped unsaved painting without asking. Also: the screen size is read
    from the display (the --max-window default)."""
    r = subprocess.run([sys.executable, "-c", "from segdeck.annotate.gui import screen_size; print(screen_size())"],
                       env=xdisplay, capture_output=True, text=True, timeout=60)
    assert r.stdout.strip() == "(1600, 1000)", r.stderr
    src = tmp_path / "photos"
    src.mkdir()
    three_band_image(src / "a.png")  # bands x 0-119 red, 120-239 green, 240-359 blue
    out = tmp_path / "ann"
    d = Driver(SEGDECK + ["annotate", "paint", str(src), "--method", "slic", "--set", "region_size=20",
                          "--max-window", f"720x{480 + STATUS_BAR}", "--out", str(out)], xdisplay, tmp_path)
    try:
        seg = d.window("segdeck paint")
        d.window("segdeck colours")
        d.xdo("mousemove", "--window", seg, "360", "240")  # image (180, 120), the green band's middle
        time.sleep(0.3)
        before = d.frame_count()
        d.xdo("click", "4")  # wheel up: zoom in around the pointer
        d.wait_frames(before)
        assert d.frame_count() > before, f"the wheel drew no zoomed frame: {d.stderr()}"
        # display x 225 is image x 112 (red) unzoomed; zoomed around x 180 it is in the green band
        d.click(seg, 225, 240)
        d.key(seg, "q")  # unsaved painting: asks (a new status line), stays open
        time.sleep(1.0)
        assert d.proc.poll() is None, "q quit without asking about the unsaved painting"
        d.key(seg, "space", expect=False)  # save instead
        code, lines = d.finish()
    finally:
        d.kill()
    assert code == 0, d.stderr()
    assert "Traceback" not in d.stderr() and "getMouseWheelDelta" not in d.stderr()
    assert any(r.get("kind") == "labels" for r in lines)
    lm = cv2.imread(str(out / "a.png.labels.png"), cv2.IMREAD_UNCHANGED)
    assert lm[120, 130] == 1 and lm[120, 112] == 0, "the click did not land where the zoomed view showed"


@pytest.mark.timeout(150)
def test_paint_window_x_close_asks_about_unsaved_painting(xdisplay, tmp_path):
    """Known defect: closing the paint window with the window manager's X (Qt sees
    ``WM_DELETE_WINDOW``, highgui reports ``WND_PROP_VISIBLE < 1``) quit and dropped the
    unsaved painting. Now the window comes back with the question and space saves;
    without painting the close ends the session at once."""
    src = tmp_path / "photos"
    src.mkdir()
    three_band_image(src / "a.png")
    out = tmp_path / "ann"
    cmd = SEGDECK + ["annotate", "paint", str(src), "--method", "slic", "--set", "region_size=20",
                     "--max-window", f"720x{480 + STATUS_BAR}", "--out", str(out)]
    d = Driver(cmd, xdisplay, tmp_path)
    try:
        seg = d.window("segdeck paint")
        d.window("segdeck colours")
        d.click(seg, 60, 240)  # paint the red band
        drawn = d.drawn("segdeck paint")
        d.wm_close(seg)
        deadline = time.time() + 20
        while d.drawn("segdeck paint") <= drawn and d.proc.poll() is None and time.time() < deadline:
            time.sleep(0.1)
        assert d.proc.poll() is None, f"the X button quit with unsaved painting: {d.stderr()}"
        seg2 = d.window("segdeck paint")  # shown again (a new X window), drawn again
        assert d.drawn("segdeck paint") > drawn
        assert not (out / "a.png.labels.png").exists()
        d.key_until(seg2, "space", lambda: d.saved() > 0 or d.proc.poll() is not None)  # save instead
        code, lines = d.finish()
    finally:
        d.kill()
    assert code == 0, d.stderr()
    assert "Traceback" not in d.stderr()
    lm = cv2.imread(str(out / "a.png.labels.png"), cv2.IMREAD_UNCHANGED)
    assert lm is not None and lm[120, 30] == 1  # display (60, 240) is image (30, 120)
    # nothing unsaved: the X ends the session like q, nothing is written
    (tmp_path / "second").mkdir()
    out2 = tmp_path / "ann2"
    d = Driver(cmd[:-1] + [str(out2)], xdisplay, tmp_path / "second")
    try:
        seg = d.window("segdeck paint")
        d.wm_close(seg)
        code, lines = d.finish(timeout=30)
    finally:
        d.kill()
    assert code == 0, d.stderr()
    assert not any(r.get("event") == "saved" for r in lines) and not (out2 / "a.png.labels.png").exists()


@pytest.mark.timeout(150)
def test_grabcut_window_rectangle_strokes_ctrl_and_finish(xdisplay, tmp_path):
    img = tmp_path / "sq.png"
    square_image(img)
    out = tmp_path / "ann"
    d = Driver(SEGDECK + ["annotate", "grabcut", str(img), "--max-window", f"600x{400 + STATUS_BAR}", "--out", str(out)],
               xdisplay, tmp_path)
    try:
        ann = d.window("segdeck grabcut annotations")
        d.window("segdeck grabcut segments")
        # scale 2: the square is display (200..400, 100..300)
        d.drag(ann, (170, 70), (430, 330), button=2)  # rectangle
        d.drag(ann, (280, 180), (320, 220), button=1)  # sure foreground stroke
        d.xdo("keydown", "ctrl")
        d.click(ann, 180, 80, button=3)  # probable background
        d.xdo("keyup", "ctrl")
        d.key(ann, "space")
        d.key(ann, "space")
        d.key_until(ann, "f", lambda: d.drawn("segdeck paint") > 0)
        seg = d.window("segdeck paint")
        d.key_until(seg, "space", lambda: d.saved() >= 1)
        code, lines = d.finish()
    finally:
        d.kill()
    assert code == 0, d.stderr()
    mask_file = out / f"sq.png.mask-1-{colour_hex(PALETTE[1])}.png"
    assert str(mask_file) in [r.get("file") for r in lines]
    m = cv2.imread(str(mask_file), cv2.IMREAD_UNCHANGED) > 0
    truth = np.zeros((200, 300), bool)
    truth[50:150, 100:200] = True
    assert (m & truth).sum() / (m | truth).sum() > 0.85


SAM_SCRIPT = textwrap.dedent(
    """
    import sys
    from pathlib import Path
    import numpy as np
    from segdeck.annotate.app import Options, run_annotate
    from segdeck.annotate.gui import STATUS_BAR, check_display
    from segdeck.annotate.keymap import load_keymap

    class BoxEngine:
        def set_image(self, image):
            self.shape = image.shape[:2]
        def predict(self, points=None, labels=None, box=None, mask_input=None, multimask=False):
            m = np.zeros(self.shape, bool)
            if box is not None:  # the window predicts live, also for points before any box
                x0, y0, x1, y1 = (int(v) for v in box)
                m[y0:y1, x0:x1] = True
            for (x, y), lab in zip(points if points is not None else [], labels if labels is not None else []):
                if lab == 0:
                    m[int(y) - 5 : int(y) + 5, int(x) - 5 : int(x) + 5] = False
            return type("R", (), {"masks": m[None], "scores": np.ones(1, np.float32)})()

    img, out, frames = Path(sys.argv[1]), Path(sys.argv[2]), sys.argv[4]
    check_display()
    opts = Options(method="sam", out_dir=out, root=img, max_window=(600, 400 + STATUS_BAR),
                   keymap=load_keymap("default", user_file=False), engine=BoxEngine(), frames_log=Path(frames))
    sys.exit(run_annotate([img], opts))
    """
)


@pytest.mark.timeout(150)
def test_sam_window_box_points_undo_predict_finish(xdisplay, tmp_path):
    img = tmp_path / "sq.png"
    square_image(img)
    out = tmp_path / "ann"
    script = tmp_path / "sam_fake.py"
    script.write_text(SAM_SCRIPT, encoding="utf-8")
    d = Driver([sys.executable, str(script), str(img), str(out)], xdisplay, tmp_path)
    try:
        win = d.window("segdeck sam")
        d.drag(win, (200, 100), (400, 300), button=2)  # box = image (100, 50)..(200, 150)
        d.click(win, 300, 200, button=1)  # positive point
        d.click(win, 300, 160, button=3)  # negative point (150, 80)
        d.click(win, 260, 160, button=3)  # negative point (130, 80), removed by z below
        d.key(win, "z")
        d.key(win, "space")  # predict
        d.key_until(win, "f", lambda: d.drawn("segdeck paint") > 0)
        seg = d.window("segdeck paint")
        d.key_until(seg, "space", lambda: d.saved() >= 1)
        code, lines = d.finish()
    finally:
        d.kill()
    assert code == 0, d.stderr()
    m = cv2.imread(str(out / f"sq.png.mask-1-{colour_hex(PALETTE[1])}.png"), cv2.IMREAD_UNCHANGED) > 0
    assert m[100, 150] and m[60, 110] and not m[40, 150]
    assert not m[80, 150]  # the kept negative point cut a hole
    assert m[80, 130]  # the removed one did not
    assert any(r.get("kind") == "session" for r in lines)
    assert lines[-1]["event"] == "done" and lines[-1]["saved_images"] == 1


@pytest.mark.timeout(170)
def test_paint_every_sample_photo_in_real_window(xdisplay, tmp_path):
    from segdeck.core.imageio import discover
    from segdeck.core.samples import write_samples

    samples = tmp_path / "samples"
    write_samples(samples)
    paths = discover(samples)
    out = tmp_path / "ann"
    d = Driver(SEGDECK + ["annotate", "paint", str(samples), "--out", str(out), "--max-window", "640x480"],
               xdisplay, tmp_path)
    try:
        seg = d.window("segdeck paint")
        for i in range(len(paths)):
            d.click(seg, 200, 150)  # fill one segment (a new frame)
            before = d.frame_count()
            d.key_until(seg, "space", lambda i=i: d.saved() >= i + 1)
            if i + 1 < len(paths):  # wait for the next image's first frame
                deadline = time.time() + 60
                while d.frame_count() <= before and time.time() < deadline:
                    time.sleep(0.1)
                time.sleep(0.3)
        code, lines = d.finish(timeout=60)
    finally:
        d.kill()
    assert code == 0, d.stderr()
    saved = {r["image"] for r in lines if r.get("kind") == "labels"}
    assert saved == {str(p) for p in paths}
    assert sum(1 for r in lines if r.get("kind") == "mask") == len(paths)
