"""The preview pane: an image, its overlay or label map, or a job's latest output,
drawn in the terminal with `textual-image <https://github.com/lnqs/textual-image>`_.

Kitty's graphics protocol or Sixel where the terminal has them, Unicode half-blocks
(two pixels per cell, any colour terminal, plain SSH) otherwise. Files are decoded and
shrunk to the pane's size in a thread worker (:meth:`PreviewPane._decode`), which posts
:class:`PreviewPane.Decoded`; the UI thread only swaps the picture.

What it shows (the screen decides, see :mod:`segdeck.tui.screens.main`):

* a folder chosen in the tree: its first image (``[`` / ``]`` step through them);
  ``v`` cycles the image, its overlay and its label map from the selected job's folder
  (``<stem>.overlay.*``, ``<stem>.labels.png``) when that job has them;
* a job chosen in the jobs list: its newest output image, followed while the job runs
  (:meth:`PreviewPane.follow_job` is called on every poll).

Terminal graphics
-----------------
textual-image learns what the terminal can do by asking it (escape-sequence queries)
when ``textual_image.widget`` is first imported, which only works before Textual starts
reading the terminal. :func:`prepare_terminal_graphics` (called by
:func:`segdeck.tui.app.main` before the app runs) does that import when the terminal
may have Kitty or Sixel graphics (its environment says so, or ``SEGDECK_PREVIEW=query``);
otherwise half-blocks are used and the import waits until the pane first draws (after
the first frame, without the queries). ``SEGDECK_PREVIEW=halfcell`` forces half-blocks.
"""

from __future__ import annotations

import contextlib
import os
import sys
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from textual import work
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.message import Message
from textual.widget import MountError, Widget
from textual.widgets import Static

#: Environment variable choosing the picture protocol: ``auto`` (default), ``query``
#: (always ask the terminal before start), ``halfcell``.
PREVIEW_ENV = "SEGDECK_PREVIEW"
#: File suffixes the pane shows (what PIL decodes; TIFF via PIL as well).
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")
#: Output kinds in the order ``v`` cycles them (``image`` is the input file).
VIEWS = ("overlay", "labels", "image")


def _graphics_hinted(env: dict | os._Environ = os.environ) -> bool:
    """Whether the terminal's environment suggests Kitty graphics or Sixel."""
    term = env.get("TERM", "")
    program = env.get("TERM_PROGRAM", "")
    return bool(
        env.get("KITTY_WINDOW_ID") or env.get("KONSOLE_VERSION") or env.get("WEZTERM_EXECUTABLE")
        or "kitty" in term or term.startswith(("foot", "mlterm", "yaft")) or "sixel" in term
        or program in ("WezTerm", "iTerm.app", "ghostty", "mlterm", "vscode")
    )


def prepare_terminal_graphics() -> str:
    """Before the app starts: let textual-image ask the terminal for Kitty / Sixel
    support when that may pay off. Returns the mode, ``query`` or ``halfcell``.

    Costs ~0.2 s of imports (numpy, PIL) and up to 0.2 s of terminal round-trips, so it
    is skipped where the environment gives no hint of terminal graphics (plain SSH,
    tmux, the Linux console): half-blocks need no query.
    """
    mode = os.environ.get(PREVIEW_ENV, "auto").strip().lower()
    if mode == "halfcell" or not (sys.__stdout__ and sys.__stdout__.isatty()):
        return "halfcell"
    if mode == "query" or _graphics_hinted():
        try:
            import textual_image.widget  # noqa: F401 - the import asks the terminal
        except Exception:  # noqa: BLE001 - no pictures is no reason not to start
            return "halfcell"
        return "query"
    return "halfcell"


class _NotATty:
    """Stands in for ``sys.__stdout__`` while textual-image is imported after start."""

    def isatty(self) -> bool:
        return False

    def write(self, text: str) -> int:
        return len(text)

    def flush(self) -> None:
        pass


@contextlib.contextmanager
def _no_terminal_queries():
    saved = sys.__stdout__
    sys.__stdout__ = _NotATty()
    try:
        yield
    finally:
        sys.__stdout__ = saved


_import_lock = threading.Lock()


def image_widget_class() -> type[Widget]:
    """The textual-image widget class to draw with: the detected protocol's when
    :func:`prepare_terminal_graphics` asked the terminal, else the half-block one.

    The first call imports textual-image (~0.1-0.2 s); the pane makes it from its
    decoding thread. Textual draws on stderr, so hiding ``sys.__stdout__`` from the
    import for a moment does not disturb it.
    """
    with _import_lock:
        if "textual_image.widget" not in sys.modules:
            with _no_terminal_queries():  # Textual owns the terminal now: no queries
                import textual_image.widget  # noqa: F401
    from textual_image.renderable import HalfcellImage as HalfcellRenderable
    from textual_image.renderable import Image as AutoRenderable
    from textual_image.renderable import UnicodeImage as UnicodeRenderable
    from textual_image.widget import HalfcellImage, Image

    forced = os.environ.get(PREVIEW_ENV, "auto").strip().lower() == "halfcell"
    if forced or AutoRenderable in (HalfcellRenderable, UnicodeRenderable):
        return HalfcellImage
    return Image


def _steady(cls: type[Widget]) -> type[Widget]:
    """``cls`` (a textual-image widget) whose refreshes skip the layout while
    ``keep_layout`` is set."""

    class Steady(cls, Renderable=cls._Renderable):
        keep_layout = False

        def refresh(self, *regions, repaint: bool = True, layout: bool = False, recompose: bool = False):
            return super().refresh(*regions, repaint=repaint, layout=layout and not self.keep_layout,
                                   recompose=recompose)

    Steady.__name__ = cls.__name__
    Steady.__qualname__ = cls.__qualname__
    return Steady


def cell_pixels() -> tuple[int, int]:
    """(width, height) of a terminal cell in pixels as textual-image assumes it.

    Before textual-image is imported: 10 x 20 (the VT340 cell its import without a
    terminal settles on); asking now could send a terminal query (when the terminal
    reports no pixel size) whose answer Textual's input reader would take for keys.
    """
    if "textual_image.widget" not in sys.modules:
        return 10, 20
    from textual_image._terminal import get_cell_size

    try:
        size = get_cell_size()
        return int(size.width), int(size.height)
    except Exception:  # noqa: BLE001 - closed stdout etc.: VT340 cell
        return 10, 20


def colorize_labels(labels):
    """A label map as RGB: 0 black, each label a fixed bright colour.

    Parameters
    ----------
    labels : numpy.ndarray, shape (H, W), integer
        0 = background, 1..N regions.

    Returns
    -------
    numpy.ndarray, shape (H, W, 3), uint8
    """
    import numpy as np

    lab = labels.astype(np.int64)
    # a cheap hash of the label to a hue-like colour, stable across images
    r = (lab * 97 + 31) % 200 + 55
    g = (lab * 57 + 101) % 200 + 55
    b = (lab * 23 + 197) % 200 + 55
    rgb = np.stack([r, g, b], axis=-1).astype(np.uint8)
    rgb[lab == 0] = 0
    return rgb


def load_preview(path: Path, max_px: tuple[int, int]):
    """Decode an image file for the pane: RGB, shrunk to fit ``max_px``.

    Parameters
    ----------
    path : Path
        An image; ``*.labels.png`` (and other single-channel integer images named
        ``labels``) are coloured per label.
    max_px : (int, int)
        (width, height) in pixels the picture must fit in.

    Returns
    -------
    PIL.Image.Image
        Mode RGB, at most ``max_px``, aspect ratio kept.

    Raises
    ------
    OSError
        The file is missing or not a readable image.
    """
    from PIL import Image, ImageOps

    with Image.open(path) as im:
        im = ImageOps.exif_transpose(im)
        is_labels = "labels" in path.name and im.mode in ("L", "I", "I;16", "I;16B", "P")
        if is_labels:
            import numpy as np

            im = Image.fromarray(colorize_labels(np.asarray(im)))
            im.thumbnail(max_px, Image.Resampling.NEAREST)
        else:
            if im.mode in ("I;16", "I;16B", "I"):
                import numpy as np

                a = np.asarray(im).astype(np.float64)
                a = (255 * (a - a.min()) / max(1.0, a.max() - a.min())).astype(np.uint8)
                im = Image.fromarray(a)
            im.draft("RGB", (max_px[0] * 2, max_px[1] * 2))  # JPEG: decode at a reduced scale
            im = im.convert("RGB")
            im.thumbnail(max_px, Image.Resampling.BILINEAR)
        im.load()
        return im


def newest_output(job_dir: Path, kinds: tuple[str, ...] = ("overlay", "labels")) -> Path | None:
    """The newest output image of a job folder: an ``.overlay.*`` file if there is one,
    else a ``.labels.png``, else any image (None if it has none)."""
    best: dict[str, tuple[float, Path]] = {}
    try:
        entries = list(os.scandir(job_dir))
    except OSError:
        return None
    for e in entries:
        name = e.name
        if not name.lower().endswith(IMAGE_SUFFIXES) or name.startswith("."):
            continue
        kind = next((k for k in kinds if f".{k}." in name), "other")
        try:
            t = e.stat().st_mtime
        except OSError:
            continue
        if kind not in best or t > best[kind][0] or (t == best[kind][0] and name > best[kind][1].name):
            best[kind] = (t, Path(e.path))
    for kind in (*kinds, "other"):
        if kind in best:
            return best[kind][1]
    return None


def outputs_for(job_dir: Path | None, image: Path, input_root: Path | None = None) -> dict[str, Path]:
    """The job's overlay and label map of ``image``, if it wrote them.

    A job names an item's outputs after :func:`segdeck.core.imageio.flat_item_name` of
    the item's path relative to the job's input (``a/b.jpg`` -> ``a__b.jpg``), then
    ``.overlay.*`` / ``.labels.png``; the bare file stem is tried as well.
    """
    found: dict[str, Path] = {}
    if job_dir is None:
        return found
    stems = []
    if input_root is not None:
        from segdeck.core.imageio import flat_item_name

        try:
            stems.append(flat_item_name(image.relative_to(input_root).as_posix()))
        except ValueError:
            pass
    stems += [image.name, image.stem]
    for kind in ("overlay", "labels"):
        for stem in stems:
            hits = sorted(p for p in job_dir.glob(f"{glob_escape(stem)}.{kind}.*")
                          if p.name.lower().endswith(IMAGE_SUFFIXES))
            if hits:
                found[kind] = hits[0]
                break
    return found


def glob_escape(text: str) -> str:
    """``text`` with glob's special characters escaped (file names with ``[``)."""
    import glob

    return glob.escape(text)


class PreviewPane(Vertical):
    """A caption line and the picture."""

    @dataclass
    class Decoded(Message):
        """A picture decoded in the worker (``image`` None: ``error`` says why)."""

        token: int
        path: Path
        image: object | None
        error: str | None

    @dataclass
    class Listed(Message):
        """A folder's images, listed in the worker."""

        folder: Path
        images: list
        job_dir: Path | None
        input_root: Path | None

    @dataclass
    class NewestOutput(Message):
        """The newest output image of a followed job folder (None: none yet)."""

        job_dir: Path
        path: Path | None

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.path: Path | None = None  # the file shown (or being decoded)
        self.caption = ""
        self._token = 0
        self._stamp: tuple | None = None
        self._image_widget: Widget | None = None
        # folder mode: its images, the index shown, the view kind
        self.images: list[Path] = []
        self.index = 0
        self.view = "image"
        self.job_dir: Path | None = None
        self.input_root: Path | None = None
        self.following: Path | None = None  # job folder whose newest output is shown
        self._wanted_folder: Path | None = None
        self._followed_at = 0.0

    def compose(self) -> ComposeResult:
        yield Static("", id="preview-caption", markup=False)
        yield Static("no picture", id="preview-empty", markup=False)

    # ---- what to show -------------------------------------------------------------
    def show_folder(self, folder: Path, images: list[Path], job_dir: Path | None = None,
                    input_root: Path | None = None) -> None:
        """Show the first image of ``folder`` (``images``: its images, sorted); overlay
        and label map looked up in ``job_dir`` (a job run on ``input_root``)."""
        self.following = None
        self.images, self.index = list(images), 0
        self.job_dir, self.input_root = job_dir, input_root
        self.view = "image"
        self._show_current()

    def open_folder(self, folder: Path, job_dir: Path | None = None, input_root: Path | None = None) -> None:
        """Show ``folder``'s images (its own, else up to 500 below it), listed in a
        thread worker; see :meth:`show_folder`."""
        self._wanted_folder = folder
        self._list_images(folder, job_dir, input_root)

    @work(thread=True, exclusive=True, group="preview-list")
    def _list_images(self, folder: Path, job_dir: Path | None, input_root: Path | None) -> None:
        from segdeck.core.imageio import discover

        try:
            images = discover(folder, recursive=False) or discover(folder)[:500]
        except (OSError, ValueError):
            images = []
        self.post_message(self.Listed(folder, images, job_dir, input_root))

    def on_preview_pane_listed(self, message: Listed) -> None:
        message.stop()
        if message.folder == self._wanted_folder:
            self.show_folder(message.folder, message.images, message.job_dir, message.input_root)

    def set_job_dir(self, job_dir: Path | None, input_root: Path | None = None) -> None:
        """The job folder (run on ``input_root``) whose overlays and label maps ``v``
        shows for the images."""
        self.job_dir, self.input_root = job_dir, input_root

    def step(self, delta: int) -> None:
        """Next / previous image of the folder (or the job's outputs)."""
        if self.following is not None:
            outs = sorted((p for p in self.following.iterdir() if p.name.lower().endswith(IMAGE_SUFFIXES)),
                          key=lambda p: p.name)
            if not outs:
                return
            cur = outs.index(self.path) if self.path in outs else 0
            self._show(outs[(cur + delta) % len(outs)], f"{self.following.name}: ")
            return
        if not self.images:
            return
        self.index = (self.index + delta) % len(self.images)
        self._show_current()

    def cycle_view(self) -> None:
        """Image → overlay → label map (those the job folder has) → image."""
        if not self.images:
            return
        image = self.images[self.index]
        have = outputs_for(self.job_dir, image, self.input_root)
        order = [v for v in VIEWS if v == "image" or v in have]
        self.view = order[(order.index(self.view) + 1) % len(order)] if self.view in order else "image"
        self._show_current()

    def _show_current(self) -> None:
        if not self.images:
            self._set_empty("no images here")
            return
        image = self.images[self.index]
        path = image
        if self.view != "image":
            path = outputs_for(self.job_dir, image, self.input_root).get(self.view, image)
        kind = "image" if path == image else self.view
        self._show(path, f"{image.name} ({self.index + 1}/{len(self.images)}) {kind}")

    #: Seconds between two looks for a newer output of the same running job: drawing a
    #: picture costs the UI thread ~10-20 ms (half-blocks), a fast job writes several a
    #: second.
    FOLLOW_EVERY_S = 1.5

    def follow_job(self, job_dir: Path, poll: bool = False) -> None:
        """Show ``job_dir``'s newest output and keep to it: call again with ``poll`` on
        every poll (at most one look per ``FOLLOW_EVERY_S``). The folder is scanned in a
        thread worker (a job folder may hold thousands of files); the picture is
        decoded only when the newest file changes."""
        now = time.monotonic()
        if self.following != job_dir:
            self.following = job_dir
            self.path, self._stamp = None, None
        elif poll and now - self._followed_at < self.FOLLOW_EVERY_S:
            return
        self._followed_at = now
        self._scan(job_dir)

    @work(thread=True, exclusive=True, group="preview-scan")
    def _scan(self, job_dir: Path) -> None:
        self.post_message(self.NewestOutput(job_dir, newest_output(job_dir)))

    def on_preview_pane_newest_output(self, message: NewestOutput) -> None:
        message.stop()
        job_dir = message.job_dir
        if self.following != job_dir:  # the user moved on meanwhile
            return
        if message.path is None:
            if self.path is None:
                self._set_empty(f"{job_dir.name}: no output image yet")
            return
        self._show(message.path, f"{job_dir.name}: ")

    # ---- decoding --------------------------------------------------------------------
    def _show(self, path: Path, caption: str) -> None:
        """Decode and show ``path`` (unless it is shown already, unchanged, at this
        size); ``caption`` ending in ``": "`` gets the file name appended."""
        try:
            st = path.stat()
            stamp = (path, st.st_mtime_ns, st.st_size, self.size)
        except OSError:
            stamp = (path, None, None, self.size)
        if stamp == self._stamp:
            return
        self._stamp = stamp
        self.path = path
        self.caption = caption + path.name if caption.endswith(": ") else caption
        self.query_one("#preview-caption", Static).update(self.caption, layout=False)  # fixed size
        self._token += 1
        cw, ch = cell_pixels()
        cols = max(4, self.content_size.width)
        rows = max(2, self.content_size.height - 1)
        self._decode(self._token, path, (cols * cw, rows * ch))

    @work(thread=True, exclusive=True, group="preview")
    def _decode(self, token: int, path: Path, max_px: tuple[int, int]) -> None:
        try:
            image = load_preview(path, max_px)
            if self._image_widget is None:
                image_widget_class()  # textual-image (numpy, PIL) imported here, not on the UI thread
        except Exception as exc:  # noqa: BLE001 - one line in the pane, never a traceback
            self.post_message(self.Decoded(token, path, None, f"{type(exc).__name__}: {exc}".splitlines()[0]))
            return
        self.post_message(self.Decoded(token, path, image, None))

    async def on_preview_pane_decoded(self, message: Decoded) -> None:
        message.stop()
        if message.token != self._token:  # a newer request is on its way
            return
        if message.image is None:
            self._set_empty(f"cannot show {message.path.name}: {message.error}")
            return
        if not self.is_mounted or not self.is_attached:  # the app is closing
            return
        if self._image_widget is None:
            widget = _steady(image_widget_class())(id="preview-image")
            try:
                await self.mount(widget)
            except MountError:  # removed meanwhile (the app is closing)
                return
            self._image_widget = widget
        self.query_one("#preview-empty").display = False
        widget = self._image_widget
        widget.display = True
        old = widget.image
        # the same picture size (a job's outputs, one after another): repaint only,
        # no re-layout of the whole screen (textual-image lays out on every new image)
        widget.keep_layout = old is not None and getattr(old, "size", None) == message.image.size
        try:
            widget.image = message.image
        finally:
            widget.keep_layout = False

    def _set_empty(self, text: str) -> None:
        self.path, self._stamp = None, None
        self._token += 1
        self.query_one("#preview-caption", Static).update("")
        empty = self.query_one("#preview-empty", Static)
        empty.update(text)
        empty.display = True
        if self._image_widget is not None:
            self._image_widget.display = False

    def on_resize(self) -> None:
        # a new size: decode again to fit (the stamp includes the size)
        if self.path is not None and self.display:
            path, caption = self.path, self.caption
            self._stamp = None
            self._show(path, caption)


__all__ = ["PREVIEW_ENV", "PreviewPane", "colorize_labels", "image_widget_class", "load_preview",
           "newest_output", "outputs_for", "prepare_terminal_graphics"]
