"""The thin highgui layer: display check, zoom / pan view, the draw-only-when-dirty loop.

Nothing here knows about painting, GrabCut or SAM; the sessions subclass
:class:`WindowLoop`. All OpenCV window calls go through :class:`Gui` so tests can
replace it with a fake and count frames without a display.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

from segdeck.annotate.state import Outcome
from segdeck.core.errors import SetupError

#: Default bound on the pixels a window shows (width, height): keeps X11 forwarding
#: traffic small; on a smaller screen :func:`default_max_window` bounds it further.
DEFAULT_MAX_WINDOW = (1280, 800)
#: Screen pixels left for what surrounds a window (width, height): frame, title bar and
#: desktop panels, so a window with its status bar stays on the screen.
SCREEN_MARGIN = (16, 80)
#: Gap between windows placed side by side or one below the other, and the height
#: allowed for a window's title bar (or a desktop panel) when stacking them.
WINDOW_GAP = 12
TITLE_BAR = 32
#: One status line; the strip below the image holds two: the status and the key hints.
STATUS_LINE = 20
STATUS_BAR = 2 * STATUS_LINE

NO_DISPLAY_MESSAGE = (
    "no display: the annotation windows need an X display. Over SSH connect with "
    "`ssh -X user@host` (or `ssh -Y`), on the machine itself set DISPLAY (e.g. `export DISPLAY=:0`), "
    "or run under a virtual one: `xvfb-run -a segdeck annotate ...`"
)


#: Environment for Qt's xcb backend, set before the first highgui window opens
#: (Qt reads it when it creates its application object). MIT-SHM makes the X server
#: read frames from shared memory; a forwarded display (``ssh -X``: a TCP connection,
#: ``DISPLAY=localhost:10.0``) and a container with its own IPC namespace share no
#: memory and pass no file descriptors, and OpenCV's Qt backend then blocks forever
#: after creating its window. Frames are small (bounded by ``--max-window``) and drawn
#: only when something changed, so sending them over the socket costs nothing visible.
QT_X11_ENV = {"QT_XCB_NO_MITSHM": "1", "QT_X11_NO_MITSHM": "1"}


def prepare_qt_environment(environ: dict | None = None) -> dict[str, str]:
    """Set what Qt's X11 backend needs to work over SSH X forwarding, before highgui loads.

    Shared-memory image transfer (MIT-SHM) is switched off (Qt only tests whether the
    variables are set). Variables the user set already are kept; ``SEGDECK_MITSHM=1``
    leaves MIT-SHM on (a local display, where it saves a copy per frame). Must run
    before the first ``cv2.namedWindow`` of the process; later calls change nothing Qt
    already read.

    Parameters
    ----------
    environ : dict, optional
        The environment to update (default ``os.environ``).

    Returns
    -------
    dict
        The variables this call set (empty when the user had set them).
    """
    env = os.environ if environ is None else environ
    changed: dict[str, str] = {}
    if env.get("SEGDECK_MITSHM") == "1":
        return changed
    for key, value in QT_X11_ENV.items():
        if key not in env:
            env[key] = value
            changed[key] = value
    return changed


def check_display() -> None:
    """Make sure a window can open, BEFORE anything touches highgui (Qt aborts otherwise).

    On Linux / BSD, DISPLAY must be set and an X connection must open (``XOpenDisplay``
    via ctypes, or ``xdpyinfo`` when libX11 cannot be loaded). macOS and Windows
    always have a display.

    Also sets the Qt environment for forwarded displays (:func:`prepare_qt_environment`).

    Raises
    ------
    SetupError
        With :data:`NO_DISPLAY_MESSAGE` (plus the DISPLAY value that failed).
    """
    prepare_qt_environment()
    if sys.platform in ("darwin", "win32"):
        return
    if os.environ.get("QT_QPA_PLATFORM", "").startswith("offscreen"):
        return
    display = os.environ.get("DISPLAY", "")
    if not display:
        if os.environ.get("WAYLAND_DISPLAY"):
            os.environ.setdefault("QT_QPA_PLATFORM", "wayland")
            return
        raise SetupError(NO_DISPLAY_MESSAGE)
    x11 = _libx11()
    if x11 is not None:
        handle = x11.XOpenDisplay(display.encode())
        if not handle:
            raise SetupError(f"cannot connect to DISPLAY={display}; " + NO_DISPLAY_MESSAGE)
        x11.XCloseDisplay(handle)
        return
    tool = shutil.which("xdpyinfo")
    if tool:
        ok = subprocess.run([tool], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=10).returncode == 0
        if not ok:
            raise SetupError(f"cannot connect to DISPLAY={display}; " + NO_DISPLAY_MESSAGE)


@functools.lru_cache(maxsize=1)
def _libx11():
    """libX11 through ctypes with the signatures used here, or None when it cannot be loaded."""
    lib = ctypes.util.find_library("X11")
    if not lib:
        return None
    try:
        x11 = ctypes.CDLL(lib)
        x11.XOpenDisplay.restype = ctypes.c_void_p
        x11.XOpenDisplay.argtypes = [ctypes.c_char_p]
        x11.XCloseDisplay.argtypes = [ctypes.c_void_p]
        x11.XDefaultScreen.argtypes = [ctypes.c_void_p]
        x11.XDisplayWidth.argtypes = x11.XDisplayHeight.argtypes = [ctypes.c_void_p, ctypes.c_int]
    except (OSError, AttributeError):
        return None
    return x11


@functools.lru_cache(maxsize=1)
def screen_size() -> tuple[int, int] | None:
    """(width, height) of the X screen in pixels, or None when it cannot be read.

    Read through libX11 (``XDisplayWidth`` / ``XDisplayHeight`` of the default screen,
    via ctypes), else from ``xdpyinfo``. None on macOS / Windows, without DISPLAY, and
    for Qt's offscreen platform. Cached: one X connection per process.
    """
    display = os.environ.get("DISPLAY", "")
    if sys.platform in ("darwin", "win32") or not display or os.environ.get("QT_QPA_PLATFORM", "").startswith("offscreen"):
        return None
    x11 = _libx11()
    if x11 is not None:
        handle = x11.XOpenDisplay(display.encode())
        if not handle:
            return None
        try:
            screen = x11.XDefaultScreen(handle)
            size = (int(x11.XDisplayWidth(handle, screen)), int(x11.XDisplayHeight(handle, screen)))
        finally:
            x11.XCloseDisplay(handle)
        return size if min(size) > 0 else None
    tool = shutil.which("xdpyinfo")
    if tool:
        try:
            out = subprocess.run([tool], capture_output=True, text=True, timeout=10).stdout
        except (OSError, subprocess.TimeoutExpired):
            return None
        for line in out.splitlines():
            if line.strip().startswith("dimensions:"):
                try:
                    return parse_size(line.split()[1])
                except (IndexError, ValueError):
                    return None
    return None


def default_max_window(screen: tuple[int, int] | None = None) -> tuple[int, int]:
    """The ``--max-window`` default: :data:`DEFAULT_MAX_WINDOW`, smaller when the screen is.

    Parameters
    ----------
    screen : (width, height), optional
        Screen size in pixels (default: :func:`screen_size`; unknown -> 1280x800).

    Returns
    -------
    (width, height)
        At most the screen less :data:`SCREEN_MARGIN` (a 1366x768 laptop: 1280x688).
    """
    screen = screen or screen_size()
    w, h = DEFAULT_MAX_WINDOW
    if screen is None:
        return w, h
    return max(160, min(w, screen[0] - SCREEN_MARGIN[0])), max(120, min(h, screen[1] - SCREEN_MARGIN[1]))


def place_next_to(first: tuple[int, int], second: tuple[int, int],
                  screen: tuple[int, int] | None = None) -> tuple[int, int]:
    """Where a second window goes when the first one (size ``first``) is at (0, 0).

    To the right when both fit the screen's width, else below (title bar included) when
    it fits above a desktop panel's height, else at the right edge of the screen (over
    the first window, but on the screen).

    Parameters
    ----------
    first, second : (width, height)
        Window contents in pixels.
    screen : (width, height), optional
        Default :func:`screen_size`; unknown: always to the right.

    Returns
    -------
    (x, y)
        Screen position of the second window.
    """
    screen = screen or screen_size()
    right = (first[0] + WINDOW_GAP, 0)
    if screen is None or right[0] + second[0] <= screen[0] - SCREEN_MARGIN[0]:
        return right
    below = first[1] + WINDOW_GAP + TITLE_BAR
    if below + second[1] <= screen[1] - TITLE_BAR:
        return 0, below
    return max(0, screen[0] - SCREEN_MARGIN[0] - second[0]), 0


def parse_size(text: str) -> tuple[int, int]:
    """``"1280x800"`` -> (1280, 800).

    Raises
    ------
    ValueError
        Not ``WIDTHxHEIGHT`` with both between 64 and 16384.
    """
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ValueError(f"window size {text!r} is not WIDTHxHEIGHT, e.g. 1280x800") from None
    if not (64 <= w <= 16384 and 64 <= h <= 16384):
        raise ValueError(f"window size {text!r} out of range 64..16384")
    return w, h


class View:
    """Maps between an image of ``size`` (W, H) and a display at most ``max_window``.

    The display size is fixed (the whole image fitted into the bound, never larger);
    zoom > 1 shows a smaller part of the image at the same display size, centred on
    ``(cx, cy)``. Coordinates: image pixels (x, y) <-> display pixels (u, v).
    """

    MAX_ZOOM = 32.0

    def __init__(self, size: tuple[int, int], max_window: tuple[int, int] = DEFAULT_MAX_WINDOW, *,
                 status_bar: int = STATUS_BAR):
        self.w, self.h = int(size[0]), int(size[1])
        bw, bh = max_window[0], max(max_window[1] - status_bar, 32)
        self.s0 = min(bw / self.w, bh / self.h)
        self.dw = max(1, min(bw, round(self.w * self.s0)))
        self.dh = max(1, min(bh, round(self.h * self.s0)))
        self.zoom = 1.0
        self.cx, self.cy = self.w / 2, self.h / 2
        self.version = 0

    @property
    def scale(self) -> float:
        """Display pixels per image pixel."""
        return self.s0 * self.zoom

    def origin(self) -> tuple[float, float]:
        vw, vh = self.dw / self.scale, self.dh / self.scale
        x0 = min(max(self.cx - vw / 2, 0.0), max(self.w - vw, 0.0))
        y0 = min(max(self.cy - vh / 2, 0.0), max(self.h - vh, 0.0))
        return x0, y0

    def to_image(self, u: float, v: float) -> tuple[int, int]:
        x0, y0 = self.origin()
        x = int(x0 + (u + 0.5) / self.scale)
        y = int(y0 + (v + 0.5) / self.scale)
        return min(max(x, 0), self.w - 1), min(max(y, 0), self.h - 1)

    def to_display(self, x: float, y: float) -> tuple[int, int]:
        x0, y0 = self.origin()
        return int((x - x0) * self.scale), int((y - y0) * self.scale)

    def sample_index(self) -> tuple[np.ndarray, np.ndarray]:
        """(rows (dh,), cols (dw,)) int: the image pixel shown at each display row / column."""
        x0, y0 = self.origin()
        cols = np.minimum((x0 + (np.arange(self.dw) + 0.5) / self.scale).astype(np.int64), self.w - 1)
        rows = np.minimum((y0 + (np.arange(self.dh) + 0.5) / self.scale).astype(np.int64), self.h - 1)
        return rows, cols

    def display_rect(self, region: tuple[slice, slice]) -> tuple[slice, slice]:
        """Display (rows, cols) slice covering an image (rows, cols) slice (1 px margin)."""
        u0, v0 = self.to_display(region[1].start, region[0].start)
        u1, v1 = self.to_display(region[1].stop, region[0].stop)
        return (slice(max(v0 - 1, 0), min(v1 + 2, self.dh)), slice(max(u0 - 1, 0), min(u1 + 2, self.dw)))

    def set_zoom(self, zoom: float, around: tuple[float, float] | None = None) -> bool:
        zoom = min(max(zoom, 1.0), self.MAX_ZOOM)
        if zoom == self.zoom:
            return False
        if around is not None:
            # keep the image point under the pointer where it is
            x0, y0 = self.origin()
            px, py = around
            fx, fy = (px - x0) * self.scale / self.dw, (py - y0) * self.scale / self.dh
            self.zoom = zoom
            vw, vh = self.dw / self.scale, self.dh / self.scale
            self.cx, self.cy = px - fx * vw + vw / 2, py - fy * vh + vh / 2
        else:
            self.zoom = zoom
        self._clamp()
        self.version += 1
        return True

    def pan(self, dx: float, dy: float) -> bool:
        """Pan by a fraction of the visible width / height."""
        if self.zoom == 1.0:
            return False
        before = self.origin()
        self.cx += dx * self.dw / self.scale
        self.cy += dy * self.dh / self.scale
        self._clamp()
        if self.origin() == before:
            return False
        self.version += 1
        return True

    def _clamp(self) -> None:
        vw, vh = self.dw / self.scale, self.dh / self.scale
        self.cx = min(max(self.cx, vw / 2), self.w - vw / 2)
        self.cy = min(max(self.cy, vh / 2), self.h - vh / 2)

    def view_action(self, name: str | None, pointer: tuple[int, int] | None = None) -> bool:
        """Apply a shared ``view`` keymap action; True when the view changed."""
        if name == "zoom_in":
            return self.set_zoom(self.zoom * 1.25, pointer)
        if name == "zoom_out":
            return self.set_zoom(self.zoom / 1.25, pointer)
        if name == "zoom_fit":
            return self.set_zoom(1.0)
        step = 0.25
        if name == "pan_left":
            return self.pan(-step, 0)
        if name == "pan_right":
            return self.pan(step, 0)
        if name == "pan_up":
            return self.pan(0, -step)
        if name == "pan_down":
            return self.pan(0, step)
        return False

    def image_view(self, image: np.ndarray) -> np.ndarray:
        """The visible part of ``image`` (H, W, C) resampled to (dh, dw, C): area
        averaging when shrinking, nearest when magnifying."""
        import cv2

        x0, y0 = self.origin()
        vw, vh = self.dw / self.scale, self.dh / self.scale
        xa, ya = int(np.floor(x0)), int(np.floor(y0))
        xb, yb = min(int(np.ceil(x0 + vw)), self.w), min(int(np.ceil(y0 + vh)), self.h)
        crop = image[ya:yb, xa:xb]
        if self.scale < 1.0:
            return cv2.resize(crop, (self.dw, self.dh), interpolation=cv2.INTER_AREA)
        rows, cols = self.sample_index()
        return image[rows[:, None], cols[None, :]]


def fit_hints(hints, width: int, scale: float = 0.4) -> str:
    """As many of ``hints`` (in order) as fit ``width`` pixels, two spaces apart."""
    import cv2

    text = ""
    for hint in hints:
        candidate = f"{text}  {hint}" if text else hint
        if cv2.getTextSize(candidate, cv2.FONT_HERSHEY_SIMPLEX, scale, 1)[0][0] > width:
            break
        text = candidate
    return text


def put_status(bar: np.ndarray, text: str, hints=()) -> None:
    """Write the status line and the key hints into a (STATUS_BAR, W, 3) BGR strip (cleared first).

    Parameters
    ----------
    bar : ndarray (STATUS_BAR, W, 3) uint8
    text : str
        The first line: image, mode, messages.
    hints : sequence of str
        ``"KEYS action"`` items for the second line (``Keymap.hints``), most important
        first; those that do not fit the width are left out.
    """
    import cv2

    bar[:] = (40, 40, 40)
    cv2.putText(bar, text, (6, STATUS_LINE - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.45, (235, 235, 235), 1, cv2.LINE_AA)
    if hints and bar.shape[0] >= 2 * STATUS_LINE:
        line = fit_hints(hints, bar.shape[1] - 12)
        cv2.putText(bar, line, (6, 2 * STATUS_LINE - 6), cv2.FONT_HERSHEY_SIMPLEX, 0.4, (170, 200, 235), 1, cv2.LINE_AA)


def wheel_delta(flags: int) -> int:
    """The signed wheel step of a highgui ``EVENT_MOUSEWHEEL`` / ``EVENT_MOUSEHWHEEL``.

    highgui packs it into the high 16 bits of ``flags`` (Qt: +-120 per notch, positive
    = away from the user); C++ has ``cv::getMouseWheelDelta`` for it, which the Python
    bindings of the pip wheels lack. Uses the binding where a build has it, else
    decodes the bits (``flags`` may arrive as a negative int when the delta is).
    """
    import cv2

    fn = getattr(cv2, "getMouseWheelDelta", None)
    if fn is not None:
        return int(fn(flags))
    high = (int(flags) >> 16) & 0xFFFF
    return high - 0x10000 if high & 0x8000 else high


class Gui:
    """The highgui calls the loops use; replaced by a fake in tests."""

    def __init__(self):
        prepare_qt_environment()  # before Qt starts: the first window creates its application
        import cv2

        self.cv2 = cv2

    def open(self, name: str, on_mouse, position: tuple[int, int] | None = None) -> None:
        cv2 = self.cv2
        cv2.namedWindow(name, cv2.WINDOW_AUTOSIZE | cv2.WINDOW_GUI_NORMAL)
        cv2.setMouseCallback(name, on_mouse)
        if position is not None:
            cv2.moveWindow(name, int(position[0]), int(position[1]))

    def show(self, name: str, frame: np.ndarray) -> None:
        self.cv2.imshow(name, frame)

    def wait_key(self, ms: int) -> int:
        return self.cv2.waitKeyEx(ms)

    def idle_wait(self, ms: int) -> int:
        """Sleep ``ms`` milliseconds, then handle the window events that came meanwhile.

        Qt's ``waitKey`` polls every millisecond however long it waits (~900 wakeups/s);
        a plain sleep wakes once. Events that arrive while sleeping wait for the end of it.
        """
        time.sleep(ms / 1000)
        return self.cv2.waitKeyEx(1)

    def pump(self, ms: int) -> None:
        """Process window events for ``ms`` milliseconds, ignoring keys (while loading)."""
        self.cv2.waitKeyEx(ms)

    def is_open(self, name: str) -> bool:
        try:
            return self.cv2.getWindowProperty(name, self.cv2.WND_PROP_VISIBLE) >= 1
        except self.cv2.error:
            return False

    def close(self, name: str) -> None:
        try:
            self.cv2.destroyWindow(name)
        except self.cv2.error:
            pass

    def mouse_event(self, event: int, flags: int) -> tuple[str | None, str | None, bool]:
        """(kind, button, ctrl) for a highgui mouse event code and flags."""
        cv2 = self.cv2
        ctrl = bool(flags & cv2.EVENT_FLAG_CTRLKEY)
        table = {
            cv2.EVENT_LBUTTONDOWN: ("down", "left"), cv2.EVENT_RBUTTONDOWN: ("down", "right"),
            cv2.EVENT_MBUTTONDOWN: ("down", "middle"), cv2.EVENT_LBUTTONUP: ("up", "left"),
            cv2.EVENT_RBUTTONUP: ("up", "right"), cv2.EVENT_MBUTTONUP: ("up", "middle"),
            cv2.EVENT_LBUTTONDBLCLK: ("double", "left"), cv2.EVENT_RBUTTONDBLCLK: ("double", "right"),
            cv2.EVENT_MBUTTONDBLCLK: ("double", "middle"), cv2.EVENT_MOUSEMOVE: ("move", None),
        }
        if event in table:
            kind, button = table[event]
            return kind, button, ctrl
        if event == cv2.EVENT_MOUSEWHEEL:
            delta = wheel_delta(flags)
            if delta == 0:  # a backend that sent no step: no direction to act on
                return None, None, ctrl
            return ("wheel-up" if delta > 0 else "wheel-down"), None, ctrl
        return None, None, ctrl


class WindowLoop:
    """Base of a window session: windows, mouse routing, key dispatch, dirty-flag drawing.

    Subclasses fill ``self.windows`` (name -> mouse handler ``(kind, button, u, v, ctrl)``),
    implement ``draw(name) -> frame`` and ``on_key(code) -> bool`` and set
    ``self.outcome`` to leave :meth:`run`. A window is drawn only when its name is in
    ``self.dirty``; while idle the loop only waits, so it draws zero frames.

    Waiting: ``waitKeyEx(wait_ms)`` while the user is active; after ``idle_after``
    seconds without a key or mouse event, sleeps of up to ``idle_max_ms`` between
    short event checks (:meth:`Gui.idle_wait`), because Qt's ``waitKey`` wakes the
    process every millisecond. The first event after a pause then waits at most
    ``idle_max_ms``; the next ones are handled at once again. :meth:`idle` runs on
    every turn of the loop (e.g. SAM catching up with prompts while the engine was busy).
    """

    wait_ms = 30
    idle_after = 2.0
    idle_max_ms = 100

    def __init__(self, gui: Gui | None = None, frames_log: str | Path | None = None, keep_open: bool = False):
        self.gui = gui or Gui()
        self.keep_open = keep_open
        self.windows: dict[str, object] = {}
        #: where to place each window (screen pixels), e.g. side by side
        self.positions: dict[str, tuple[int, int]] = {}
        self.dirty: set[str] = set()
        self.frames = 0
        self.outcome: Outcome | None = None
        self.frames_log = Path(frames_log) if frames_log else None

    def mark(self, *names: str) -> None:
        self.dirty.update(names or self.windows)

    def _callback(self, name: str):
        def on_mouse(event, u, v, flags, _param=None):
            self.last_input = time.monotonic()
            kind, button, ctrl = self.gui.mouse_event(event, flags)
            if kind is None:
                return
            handler = self.windows[name]
            try:
                if handler(kind, button, u, v, ctrl):
                    self.draw_dirty()
            except Exception as exc:  # a callback must never kill the Qt loop
                self.error = exc
                self.outcome = Outcome.ERROR

        return on_mouse

    def draw_dirty(self) -> None:
        for name in list(self.windows):
            if name in self.dirty:
                self.dirty.discard(name)
                frame = self.draw(name)
                self.gui.show(name, frame)
                self.frames += 1
                if self.frames_log:
                    with open(self.frames_log, "a") as fh:
                        fh.write(f"{time.time():.4f} {name}\n")

    def run(self) -> Outcome:
        self.error: Exception | None = None
        for name in self.windows:
            self.gui.open(name, self._callback(name), self.positions.get(name))
        self.mark()
        self.draw_dirty()
        self.last_input = time.monotonic()
        try:
            while self.outcome is None:
                code = self.gui.wait_key(self.wait_ms) if self.busy() else self.gui.idle_wait(self.pause_ms())
                if code is not None and code != -1:
                    self.last_input = time.monotonic()
                    self.on_key(code)
                self.idle()
                if self.outcome is None:
                    closed = [n for n in self.windows if not self.gui.is_open(n)]
                    if closed:
                        self.on_windows_closed(closed)
                if self.outcome is None:
                    self.draw_dirty()
        finally:
            if not self.keep_open or self.outcome in (Outcome.QUIT, Outcome.ERROR):
                for name in self.windows:
                    self.gui.close(name)
                self.gui.wait_key(1)
        if self.error is not None:
            raise self.error
        return self.outcome

    def busy(self) -> bool:
        """Whether to wait the responsive way: input within ``idle_after`` seconds."""
        return time.monotonic() - self.last_input < self.idle_after

    def pause_ms(self) -> int:
        """The idle sleep: from ``wait_ms`` up to ``idle_max_ms`` over the second after ``idle_after``."""
        quiet = time.monotonic() - self.last_input - self.idle_after
        return int(min(self.idle_max_ms, self.wait_ms + quiet * (self.idle_max_ms - self.wait_ms)))

    def reopen(self, names) -> None:
        """Open the windows ``names`` again (closed by the user) and redraw every window."""
        for name in names:
            self.gui.close(name)  # whatever is left of it
            self.gui.open(name, self._callback(name), self.positions.get(name))
        self.mark()

    # -- overridden --------------------------------------------------------
    def on_windows_closed(self, names: list[str]) -> None:
        """The user closed the windows ``names`` (the window manager's close button:
        ``cv2.getWindowProperty(name, WND_PROP_VISIBLE) < 1``). Default: the session
        ends with ``Outcome.QUIT``; a session with work to lose asks first instead
        (it sets no outcome and calls :meth:`reopen`)."""
        self.outcome = Outcome.QUIT

    def idle(self) -> None:
        """Called on every turn of the loop; draw by marking windows dirty."""

    def draw(self, name: str) -> np.ndarray:  # pragma: no cover - abstract
        raise NotImplementedError

    def on_key(self, code: int) -> bool:  # pragma: no cover - abstract
        raise NotImplementedError


class ImageSession(WindowLoop):
    """A window session over one image with a prompt state (GrabCut, SAM).

    Sets up what those sessions share: the state (a
    :class:`~segdeck.annotate.state.MaskState`), the screen-bounded :class:`View` of the
    image and its cached display (:meth:`base_view`), the status-line fields, mouse
    routing (:meth:`image_mouse`) and key dispatch (:meth:`on_key`). Subclasses set
    ``SESSION`` (their keymap section) and ``HINTS`` (the status bar's key hints, see
    :meth:`Keymap.hints`), fill ``windows`` and ``positions`` after calling
    ``super().__init__`` and implement ``draw``.
    """

    SESSION = ""
    HINTS: tuple = ()

    def __init__(self, state, *, title: str = "", index: int = 1, total: int = 1,
                 max_window: tuple[int, int] = DEFAULT_MAX_WINDOW, gui: Gui | None = None, frames_log=None,
                 keep_open: bool = False):
        super().__init__(gui, frames_log, keep_open=keep_open)
        self.state = state
        h, w = state.image.shape[:2]
        self.view = View((w, h), max_window)
        self.title, self.index, self.total = title, index, total
        self._img_version = None
        #: the image in OpenCV's channel order, for drawing
        self.bgr = np.ascontiguousarray(state.image[:, :, ::-1])
        self.hints = state.keymap.hints(self.SESSION, self.HINTS)

    def base_view(self) -> np.ndarray:
        """The visible part of the image at display size, BGR (cached per view change);
        ``self._rows`` / ``self._cols`` index the working image's pixels shown."""
        if self._img_version != self.view.version:
            self._img = self.view.image_view(self.bgr)
            self._rows, self._cols = self.view.sample_index()
            self._img_version = self.view.version
        return self._img

    def on_key(self, code: int) -> bool:
        """A key of the ``SESSION`` keymap section: zoom / pan the view, else the state's
        action (after :meth:`before_action`); a state that sets ``outcome`` ends the loop."""
        act = self.state.keymap.key_action(self.SESSION, code)
        if act is None:
            return False
        if act.startswith(("zoom_", "pan_")):
            changed = self.view.view_action(act, self.state.pointer)
        else:
            self.before_action(act)
            changed = self.state.action(act)
        if self.state.outcome:
            self.outcome = self.state.outcome
        if changed:
            self.mark()
        return changed

    def before_action(self, act: str) -> None:
        """Called before the state handles the key action ``act`` (default: nothing)."""

    def _mouse(self, kind, button, u, v, ctrl) -> bool:
        return self.image_mouse(self.SESSION, kind, button, u, v, ctrl)

    def image_mouse(self, session: str, kind: str, button, u: int, v: int, ctrl: bool) -> bool:
        """Mouse handling shared by the image windows of the GrabCut and SAM sessions.

        Events on the status strip below the image are ignored; the wheel zooms around
        the pointer (the ``session``'s keymap decides the action); every other event goes
        to ``self.state.mouse`` in full-resolution image pixels (x, y). A state that sets
        ``outcome`` ends the loop. Returns whether anything changed.
        """
        if v >= self.view.dh and kind != "up":
            return False
        x, y = self.view.to_image(u, v)
        if kind in ("wheel-up", "wheel-down"):
            act = self.state.keymap.mouse_action(session, kind)
            if self.view.view_action(act, (x, y)):
                self.mark()
                return True
            return False
        changed = self.state.mouse(kind, button, x, y, ctrl)
        if getattr(self.state, "outcome", None):
            self.outcome = self.state.outcome
        if changed:
            self.mark()
        return changed

