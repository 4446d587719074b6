"""Drive the annotation windows over a folder: prepare images in the background, run the
sessions, save what was painted and report every saved file as a JSON line on stdout.

Output folder (default ``<INPUT>.segdeck/annotate-<method>/``), per image, with the
image's flattened relative name ``NAME`` (:func:`segdeck.core.imageio.flatten_name`):

- ``NAME.labels.png`` label map at full resolution: pixel = colour index k of the
  painting (1..9, 0 = unpainted), uint8;
- ``NAME.mask-<k>-<rrggbb>.png`` one 0 / 255 mask per colour used, full resolution;
- ``NAME.session.npz`` the session (segments after cuts, original segments, colour per
  segment, method, params) so reopening the image restores its painting.

Each saved file is reported on stdout as ``{"event": "saved", "kind": "labels" | "mask" |
"session", "file": ..., "image": ..., ...}``; unreadable images as ``{"event": "error", "image": ..., "error": "one line"}``;
the end as ``{"event": "done", "images": N, "saved_images": K, "failed": F, "out_dir": ...}``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segdeck.annotate.state import PALETTE, PaintState, colour_hex
from segdeck.core import imageio
from segdeck.core.errors import SegdeckError

INTERACTIVE_SOURCES = ("grabcut", "sam")
AUTO_SAM = "sam-auto"

_print_lock = threading.Lock()


def emit_json(obj: dict) -> None:
    """Print one JSON object as a line on stdout (thread-safe, flushed)."""
    with _print_lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


# -- files ----------------------------------------------------------------------------------
def labels_path(out_dir: Path, flat: str) -> Path:
    return out_dir / f"{flat}.labels.png"


def session_path(out_dir: Path, flat: str) -> Path:
    return out_dir / f"{flat}.session.npz"


def mask_path(out_dir: Path, flat: str, k: int) -> Path:
    return out_dir / f"{flat}.mask-{k}-{colour_hex(PALETTE[k])}.png"


def _small_uint(arr: np.ndarray) -> np.ndarray:
    top = int(arr.max()) if arr.size else 0
    return arr.astype(np.uint16 if top < 65536 else np.uint32)


def save_painting(out_dir: Path, flat: str, image_path: Path, labels: np.ndarray, original: np.ndarray,
                  seg_color: np.ndarray, meta: dict, report: Callable[[dict], None] | None = None) -> list[Path]:
    """Write label map, masks and session for one image (atomic writes), full resolution.

    Parameters
    ----------
    labels, original : ndarray (H, W) int
        Current and original segments.
    seg_color : ndarray (N + 1,) uint8
        Colour index per segment.
    meta : dict
        JSON-able facts stored with the session (method, params, ...).
    report : callable, optional
        Called with one dict per written file.

    Returns
    -------
    list of Path
    """
    state = PaintState(labels, seg_color, original=original)
    cmap = state.colour_map()
    written: list[tuple[Path, dict]] = []
    dest = imageio.write_label_map(labels_path(out_dir, flat), cmap)
    written.append((dest, {"kind": "labels", "labels": sorted(int(k) for k in np.unique(cmap) if k)}))
    used = set()
    for k in range(1, len(PALETTE)):
        m = cmap == k
        if m.any():
            used.add(k)
            dest = imageio.write_image(mask_path(out_dir, flat, k), m)
            written.append((dest, {"kind": "mask", "label": k, "colour": "#" + colour_hex(PALETTE[k]),
                                   "pixels": int(m.sum())}))
    prefix = f"{flat}.mask-"
    for old in out_dir.iterdir():  # masks of colours no longer used
        if old.name.startswith(prefix) and old.suffix == ".png":
            try:
                k = int(old.name[len(prefix):].split("-")[0])
            except ValueError:
                continue
            if k not in used:
                old.unlink(missing_ok=True)
    spath = session_path(out_dir, flat)
    same = original is labels or np.array_equal(original, labels)
    with imageio.atomic_path(spath) as tmp:
        arrays = {"labels": _small_uint(labels), "seg_color": np.asarray(seg_color, np.uint8),
                  "meta": np.array(json.dumps({**meta, "image": str(image_path), "shape": list(labels.shape)}))}
        if not same:
            arrays["original"] = _small_uint(original)
        np.savez_compressed(tmp, **arrays)
    written.append((spath, {"kind": "session"}))
    for path, info in written:
        if report:
            report({"event": "saved", "image": str(image_path), "file": str(path), **info})
    return [p for p, _ in written]


def load_session(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray, dict]:
    """(labels, original, seg_color, meta) of a saved session.

    Raises
    ------
    ValueError
        Not a segdeck session file.
    """
    try:
        with np.load(path, allow_pickle=False) as z:
            labels = z["labels"].astype(np.int32)
            original = z["original"].astype(np.int32) if "original" in z.files else labels
            seg_color = z["seg_color"].astype(np.uint8)
            meta = json.loads(str(z["meta"]))
    except Exception as exc:
        raise ValueError(f"{path}: not a readable segdeck session ({type(exc).__name__})") from None
    return labels, original, seg_color, meta


# -- segment sources --------------------------------------------------------------------------
def automask_labels(masks: np.ndarray) -> np.ndarray:
    """SAM automatic masks as a segment map: :func:`segdeck.core.regions.masks_to_label_map`
    (larger masks first, smaller ones drawn over them; mask ``i`` is segment ``i + 1``),
    and pixels no mask covers become segments of their own (4-connected components).

    Parameters
    ----------
    masks : ndarray of shape (N, H, W), bool

    Returns
    -------
    ndarray of shape (H, W), int32
        Segment ids >= 1 (ids of masks hidden by smaller ones are skipped).
    """
    import cv2

    from segdeck.core.regions import masks_to_label_map

    labels = masks_to_label_map(masks, order="area")
    free = labels == 0
    if free.any():
        _, cc = cv2.connectedComponents(free.astype(np.uint8), connectivity=4)
        labels[free] = cc[free] + labels.max()
    return labels


@dataclass
class Prepared:
    """One image made ready in the background."""

    path: Path
    image: np.ndarray | None = None
    labels: np.ndarray | None = None
    original: np.ndarray | None = None
    seg_color: np.ndarray | None = None
    restored: bool = False
    error: str | None = None
    seconds: float = 0.0
    extra: dict = field(default_factory=dict)


class Preparer:
    """Loads and segments images on worker threads, one ahead of the one shown."""

    def __init__(self, paths: list[Path], make: Callable[[Path], Prepared], *, workers: int = 2, ahead: int = 1,
                 finish: Callable[[Prepared], None] | None = None):
        self.paths = paths
        self.make = make
        self.finish = finish
        self.ahead = ahead
        self.pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="segdeck-prepare")
        self.futures: dict[int, Future] = {}
        self.lock = threading.Lock()

    def _safe(self, path: Path) -> Prepared:
        t0 = time.perf_counter()
        try:
            p = self.make(path)
            if self.finish is not None and p.image is not None:
                self.finish(p)
        except SegdeckError as exc:
            p = Prepared(path, error=str(exc))
        except ValueError as exc:
            p = Prepared(path, error=f"{path}: {exc}")
        except MemoryError:
            p = Prepared(path, error=f"{path}: out of memory")
        p.seconds = time.perf_counter() - t0
        return p

    def future(self, i: int) -> Future:
        with self.lock:
            fut = self.futures.get(i)
            if fut is None:
                fut = self.pool.submit(self._safe, self.paths[i])
                self.futures[i] = fut
            return fut

    def get(self, i: int) -> Prepared:
        """The prepared image ``i`` (waits for it) and starts preparing the next ones."""
        fut = self.future(i)
        for j in range(i + 1, min(i + 1 + self.ahead, len(self.paths))):
            self.future(j)
        with self.lock:  # keep memory bounded: forget far-away images
            for j in list(self.futures):
                if j < i - 1 or j > i + self.ahead:
                    self.futures.pop(j).cancel()
        return fut.result()

    def invalidate(self, i: int) -> None:
        with self.lock:
            self.futures.pop(i, None)

    def close(self) -> None:
        self.pool.shutdown(wait=False, cancel_futures=True)


class Saver:
    """Writes paintings on a background thread; :meth:`wait` before exiting."""

    def __init__(self, report: Callable[[dict], None]):
        self.pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="segdeck-save")
        self.report = report
        self.pending: dict[Path, Future] = {}
        self.errors: list[str] = []

    def save(self, out_dir: Path, flat: str, image_path: Path, state: PaintState, meta: dict) -> Future:
        labels, original, seg_color = state.labels.copy(), state.original, state.seg_color.copy()

        def job():
            try:
                return save_painting(out_dir, flat, image_path, labels, original, seg_color, meta, self.report)
            except (SegdeckError, OSError, ValueError) as exc:
                msg = f"{image_path}: saving failed: {exc}"
                self.errors.append(msg)
                self.report({"event": "error", "image": str(image_path), "error": msg})
                return []

        fut = self.pool.submit(job)
        self.pending[image_path] = fut
        return fut

    def wait_for(self, image_path: Path) -> None:
        fut = self.pending.get(image_path)
        if fut is not None:
            fut.result()

    def wait(self) -> None:
        self.pool.shutdown(wait=True)


# -- the session driver -----------------------------------------------------------------------
@dataclass
class Options:
    """Everything a run of ``segdeck annotate`` needs besides the images."""

    mode: str  # "paint" | "grabcut" | "sam"
    method: str  # registry name, "grabcut", "sam", "sam-auto"
    params: Any = None
    out_dir: Path = Path(".")
    root: Path = Path(".")
    max_side: int = 1024
    max_window: tuple[int, int] = (1280, 800)
    keymap: Any = None
    template: Any = None
    engine: Any = None
    frames_log: Path | None = None


def _meta(opts: Options) -> dict:
    params = opts.params
    if hasattr(params, "model_dump"):
        params = params.model_dump(mode="json")
    return {"method": opts.method, "params": params or {}, "segdeck": "annotate"}


def make_preparer(paths: list[Path], opts: Options, saver: Saver) -> Preparer:
    from segdeck.annotate.grabcut import working_image
    from segdeck.core.oversegment import method_names, segment

    registry = set(method_names())

    def make(path: Path) -> Prepared:
        saver.wait_for(path)
        flat = imageio.flatten_name(path, opts.root)
        spath = session_path(opts.out_dir, flat)
        if opts.method in registry and not spath.is_file():
            fast = _segment_jpeg_fast(path, opts)
            if fast is not None:
                return fast
        image = imageio.load_rgb(path)
        if spath.is_file():
            try:
                labels, original, seg_color, _ = load_session(spath)
                if labels.shape == image.shape[:2]:
                    return Prepared(path, image, labels, original, seg_color, restored=True)
            except ValueError:
                pass
        if opts.method in registry:
            labels = segment(image, opts.method, opts.params, max_side=opts.max_side)
            return Prepared(path, image, labels)
        if opts.method == AUTO_SAM:
            work = working_image(image, opts.max_side)
            res = opts.engine.generate(work, opts.params)
            small = automask_labels(np.asarray(res.masks).reshape(-1, *work.shape[:2]))
            import cv2

            labels = cv2.resize(small, (image.shape[1], image.shape[0]), interpolation=cv2.INTER_NEAREST)
            return Prepared(path, image, labels.astype(np.int32))
        return Prepared(path, image, extra={"work": working_image(image, opts.max_side)})

    def fit_view(p: Prepared) -> None:
        """The whole-image display (image, labels, boundaries), so showing it costs nothing."""
        from segdeck.annotate.gui import View
        from segdeck.annotate.paint import PaintDisplay

        if p.labels is None:
            return
        view = View((p.image.shape[1], p.image.shape[0]), opts.max_window)
        p.extra["fit_view"] = PaintDisplay.prepare_fit_view(p.image, p.labels, view)

    return Preparer(paths, make, finish=fit_view)


def _segment_jpeg_fast(path: Path, opts: Options) -> Prepared | None:
    """Segment a large JPEG without waiting for its full decode.

    The full-resolution decode (:func:`segdeck.core.imageio.load_rgb`) runs on a second
    thread while this one decodes a DCT-scaled copy
    (:func:`segdeck.core.imageio.decode_reduced`: 1/2..1/8 size, EXIF orientation
    applied), shrinks it to the working size and runs the registry method
    there; the labels are then scaled to full resolution. Returns None (caller takes
    the plain path) for anything that is not a plain colour / gray JPEG or is not larger
    than the working size.
    """
    if path.suffix.lower() not in (".jpg", ".jpeg"):
        return None
    import cv2

    from segdeck.core.oversegment import segment
    from segdeck.core.oversegment._resize import upscale_labels, working_shape

    try:
        W, H = imageio.image_size(path)
    except SegdeckError:
        return None
    if max(W, H) <= 2 * opts.max_side:
        return None
    small = imageio.decode_reduced(path, opts.max_side)
    if small is None:
        return None
    result: dict = {}

    def full():
        try:
            result["image"] = imageio.load_rgb(path)
        except BaseException as exc:  # reported from the caller's thread
            result["error"] = exc

    t = threading.Thread(target=full, name="segdeck-decode", daemon=True)
    t.start()
    wh, ww = working_shape((H, W), opts.max_side)
    work = cv2.resize(small, (ww, wh), interpolation=cv2.INTER_AREA)
    labels_small = segment(work, opts.method, opts.params, max_side=None)
    t.join()
    if "error" in result:
        raise result["error"]
    image = result["image"]
    if image.shape[:2] != (H, W):
        return None
    return Prepared(path, image, upscale_labels(labels_small, (H, W)).astype(np.int32, copy=False))


def run_annotate(paths: list[Path], opts: Options, *, gui=None, report: Callable[[dict], None] = emit_json,
                 log: Callable[[str], None] | None = None) -> int:
    """Run the windows over ``paths`` until the user quits or passes the last image.

    Returns
    -------
    int
        Exit code: 0, or 1 when an image could not be loaded or saved.
    """
    from segdeck.annotate.gui import Gui
    from segdeck.annotate.paint import PaintWindow

    log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
    gui = gui or Gui()
    saver = Saver(report)
    prep = make_preparer(paths, opts, saver)
    engine_lock = threading.Lock()
    failed = 0
    n = len(paths)
    i = 0
    colour = 1  # the paint colour carries over from image to image
    open_windows: set[str] = set()
    try:
        while 0 <= i < n:
            fut = prep.future(i)
            if not fut.done() and opts.method not in INTERACTIVE_SOURCES:
                # open the window now (Qt starts meanwhile) and keep it responsive while loading
                _placeholder(gui, paths[i], opts, i, n)
                open_windows.add(PaintWindow.SEG)
                while not fut.done():
                    gui.pump(30)
            p = prep.get(i)
            title = imageio.flatten_name(p.path, opts.root)
            if p.error:
                failed += 1
                log(p.error)
                report({"event": "error", "image": str(p.path), "error": p.error})
                i += 1
                continue
            labels, seg_color, original = p.labels, p.seg_color, p.original
            if labels is None:  # interactive source first
                for name in open_windows:
                    gui.close(name)
                open_windows.clear()
                work = p.extra["work"]
                if opts.method == "grabcut":
                    from segdeck.annotate.grabcut import GrabCutState, GrabCutWindow

                    gst = GrabCutState(work, keymap=opts.keymap)
                    win = GrabCutWindow(gst, title=title, index=i + 1, total=n, max_window=opts.max_window,
                                        gui=gui, frames_log=opts.frames_log)
                else:
                    from segdeck.annotate.sam import SamState, SamWindow

                    gst = SamState(work, opts.engine, keymap=opts.keymap, engine_lock=engine_lock)
                    _embed_in_background(opts.engine, work, engine_lock)  # ready by the first predict
                    win = SamWindow(gst, title=title, index=i + 1, total=n, max_window=opts.max_window,
                                    gui=gui, frames_log=opts.frames_log)
                outcome = win.run()
                if outcome != "finish":
                    break
                from segdeck.annotate.grabcut import mask_to_segments

                labels = mask_to_segments(gst.full_mask((p.image.shape[1], p.image.shape[0])))
                seg_color = np.array([0, 0, 0], np.uint8)
                if opts.method == "sam" and i + 1 < n:
                    _prefetch_embedding(prep, i + 1, opts, engine_lock)
            handed_over = p.labels is None
            state = PaintState(labels, seg_color, original=original, keymap=opts.keymap, colour=colour,
                               unsaved=handed_over)
            if handed_over:
                state.seg_color[1] = state.colour  # the handed-over mask comes painted
            if p.restored:
                state.message = "session restored"
            win = PaintWindow(state, p.image, title=title, index=i + 1, total=n, max_window=opts.max_window,
                              gui=gui, frames_log=opts.frames_log, template=opts.template,
                              keep_open=opts.method not in INTERACTIVE_SOURCES, fit_view=p.extra.get("fit_view"))
            open_windows.update(win.windows)
            outcome = win.run()
            colour = state.colour
            if outcome == "quit":
                break
            if outcome == "save_next":
                saver.save(opts.out_dir, title, p.path, state, _meta(opts))
                prep.invalidate(i)
                i += 1
            elif outcome == "next":
                i += 1
            elif outcome == "previous":
                i = max(i - 1, 0)
            else:
                break
    finally:
        for name in open_windows:
            gui.close(name)
        prep.close()
        saver.wait()
    report({"event": "done", "images": n, "saved_images": len(saver.pending), "failed": failed + len(saver.errors),
            "out_dir": str(opts.out_dir)})
    return 1 if (failed or saver.errors) else 0


def _placeholder(gui, path: Path, opts: Options, i: int, n: int) -> None:
    """Show a 'loading' frame of the image's display size in the segment window."""
    from segdeck.annotate.gui import STATUS_BAR, View, put_status
    from segdeck.annotate.paint import PaintWindow

    try:
        size = imageio.image_size(path)
    except SegdeckError:
        size = opts.max_window
    view = View(size, opts.max_window)
    frame = np.full((view.dh + STATUS_BAR, view.dw, 3), 48, np.uint8)
    put_status(frame[view.dh :], f"{i + 1}/{n} {imageio.flatten_name(path, opts.root)} | loading and segmenting ...")
    gui.open(PaintWindow.SEG, lambda *a: None, (0, 0))
    gui.show(PaintWindow.SEG, frame)
    if opts.frames_log:
        with open(opts.frames_log, "a") as fh:
            fh.write(f"{time.time():.4f} placeholder:{PaintWindow.SEG}\n")


def _embed_in_background(engine, image: np.ndarray, lock: threading.Lock) -> None:
    """Start computing ``image``'s SAM embedding now; predict() finds it in the engine's cache."""

    def work():
        with lock:
            engine.set_image(image)

    threading.Thread(target=work, name="segdeck-sam-embed", daemon=True).start()


def _prefetch_embedding(prep: Preparer, j: int, opts: Options, lock: threading.Lock) -> None:
    """Compute image ``j``'s SAM embedding on a background thread (the engine caches it)."""

    def work():
        p = prep.future(j).result()
        if p.error or p.labels is not None:
            return
        with lock:
            opts.engine.set_image(p.extra["work"])

    threading.Thread(target=work, name="segdeck-sam-prefetch", daemon=True).start()
