"""``segdeck view PATH``: an image with its label map drawn over it, in a highgui window.

PATH is a label map (``NAME.labels.png``), an image, or a folder of results: a job
folder (``job.toml``: segment, automask, propagate, ...) or an annotation folder
(``<INPUT>.segdeck/annotate-<method>/``). The pairs (image, label map) come from the
folder's layout:

- a job folder: the job's own items and output names (the registered job class,
  rebuilt from ``job.toml``: ``list_items``, ``item_path``, ``output_stem``), so a
  propagate job's ``<key>.labels.png`` finds its row's image through the project spec;
  when the job cannot be rebuilt (its module or input is gone) the label maps are shown
  without their images;
- an annotation folder: ``NAME.labels.png`` where NAME is the image's flattened name
  under the input folder beside the ``.segdeck`` folder
  (:func:`segdeck.core.imageio.flatten_name`);
- an image: the result folders under the ``.segdeck`` folders of its own folder and of
  the folders above it (up to :data:`SEARCH_UP` levels) that hold a label map for it.
- a ``propagate`` reference store (``<spec stem>.refs/``, a group folder in it, or one
  reference's ``<key>.png``): each reference's label map over its image, found
  through the project spec beside the store (:func:`reference_items`).

:class:`ViewerState` is window-free (items, index, overlay switch, opacity);
:class:`ViewerWindow` draws it (wheel zoom like the other windows) and reports each
image shown, and every change of the overlay, as a JSON line ``{"event": "shown",
"index", "total", "name", "image", "mask", "overlay", "opacity"}``.
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from segdeck.annotate.gui import STATUS_BAR, Gui, View, WindowLoop, put_status
from segdeck.annotate.keymap import Keymap
from segdeck.annotate.state import Outcome, default_keymap
from segdeck.core import imageio
from segdeck.core.errors import SegdeckError

WIN = "segdeck view"
LABELS_SUFFIX = ".labels.png"
#: Overlay opacities the ``opacity`` key cycles through.
OPACITIES = (0.5, 0.75, 1.0, 0.25)
#: How many folders above an image are searched for result folders.
SEARCH_UP = 4


@dataclass(frozen=True)
class ViewItem:
    """One image and its label map (either may be missing, not both).

    Attributes
    ----------
    name : str
        What the status line calls it (the output stem).
    image : Path or None
    mask : Path or None
        A label map PNG: (H, W) integer, 0 = background.
    """

    name: str
    image: Path | None
    mask: Path | None


def _stem(mask: Path) -> str:
    return mask.name[: -len(LABELS_SUFFIX)] if mask.name.endswith(LABELS_SUFFIX) else mask.stem


def job_items(job_dir: Path) -> list[ViewItem]:
    """The (image, label map) pairs of a job folder, in the job's item order.

    The job is rebuilt from ``job.toml`` (its registered class and parameters) to name
    each item's image and output stem. Label maps it does not account for (the job
    cannot be rebuilt, or no longer lists the item) are matched by name: under a folder
    input by the flattened image name, under a project spec input (``propagate``) by
    the primary key's file slug; else they show without an image.

    Raises
    ------
    SegdeckError
        ``job.toml`` unreadable.
    """
    try:
        doc = tomllib.loads((job_dir / "job.toml").read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise SegdeckError(f"{job_dir}: cannot read job.toml ({exc})") from None
    masks = {_stem(p): p for p in job_dir.glob(f"*{LABELS_SUFFIX}")}
    out = []
    try:
        from segdeck.core.jobs.registry import rebuild_job

        job = rebuild_job(job_dir)
        for item in job.list_items():
            stem = job.output_stem(item)
            if stem in masks:
                out.append(ViewItem(stem, job.item_path(item), masks.pop(stem)))
    except Exception:  # noqa: BLE001 - a job that cannot be rebuilt: matched by name below
        pass
    if masks:
        images = _images_by_name(Path(str(doc.get("input", ""))))
        out += [ViewItem(s, images.get(s), p) for s, p in sorted(masks.items())]
    return out


def _images_by_name(source: Path) -> dict[str, Path]:
    """Output stem -> image for a job's input: a folder (flattened names), an image, or a
    project spec (primary keys' file slugs). Empty when the input cannot be read."""
    try:
        if source.is_dir():
            return {imageio.flatten_name(p, source): p for p in imageio.discover(source)}
        if source.suffix.lower() == ".toml" and source.is_file():
            from segdeck.core.propagate import file_slug, load_project

            return {file_slug(r.key): r.path for r in load_project(source).rows}
        if source.is_file():
            return {source.name: source}
    except (SegdeckError, OSError, ValueError):
        pass
    return {}


def annotation_items(folder: Path) -> list[ViewItem]:
    """Pairs of an annotation folder ``<INPUT>.segdeck/<name>/`` (images under INPUT)."""
    masks = {_stem(p): p for p in folder.glob(f"*{LABELS_SUFFIX}")}
    images: dict[str, Path] = {}
    parent = folder.parent
    if parent.name.endswith(imageio.OUTPUT_ROOT_SUFFIX):
        base = parent.parent / parent.name[: -len(imageio.OUTPUT_ROOT_SUFFIX)]
        roots = [base] if base.is_dir() else [p for p in parent.parent.glob(f"{base.name}.*") if p.is_file()]
        for root in roots:
            try:
                for p in imageio.discover(root):
                    images[imageio.flatten_name(p, root)] = p
            except (FileNotFoundError, OSError):
                pass
    return [ViewItem(s, images.get(s), p) for s, p in sorted(masks.items())]


def _reference_records(folder: Path) -> list[tuple[dict, Path]]:
    """(record, label map) of the reference records directly in ``folder`` (a group
    folder of a propagate reference store: ``<key>.json`` beside ``<key>.png``)."""
    import json

    from segdeck.core.propagate.references import CHOICE_NAME

    out = []
    for js in sorted(folder.glob("*.json")):
        png = js.with_suffix(".png")
        if js.name.lower() == CHOICE_NAME or not png.is_file():
            continue
        try:
            meta = json.loads(js.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, ValueError):
            continue
        if isinstance(meta, dict) and "key" in meta and "ids" in meta:
            out.append((meta, png))
    return out


def _store_spec_root(store: Path) -> Path | None:
    """The image root of the project spec whose reference store is ``store`` (a spec
    ``*.toml`` in the store's folder or the one above it), or None."""
    from segdeck.core.propagate import load_project

    target = store.resolve()
    for base in (store.parent, store.parent.parent):
        for spec in sorted(base.glob("*.toml")):
            try:
                project = load_project(spec)
            except Exception:  # noqa: BLE001 - any spec that does not load is not this store's
                continue
            if project.refs_dir.resolve() == target:
                return project.root
    return None


def reference_items(folder: Path) -> list[ViewItem]:
    """The references of a ``propagate`` reference store (``segdeck annotate refs``):
    the store ``<spec stem>.refs/`` (every group) or one group folder in it.

    Each reference's label map ``<key>.png`` is paired with its image: the record's
    image path under the root of the project spec that owns the store (found beside
    the store or one folder up); without that spec the label maps show alone.
    Empty when ``folder`` holds no reference record.
    """
    groups = [folder] if _reference_records(folder) else sorted(
        d for d in folder.iterdir() if d.is_dir() and not d.name.startswith(".")) if folder.is_dir() else []
    found = [(g, rec) for g in groups for rec in _reference_records(g)]
    if not found:
        return []
    store = folder.parent if groups == [folder] else folder
    root = _store_spec_root(store)
    out = []
    for group, (meta, png) in found:
        image = root / str(meta["image"]) if root is not None and meta.get("image") else None
        name = f"{group.name}/{meta['key']}" if len(groups) > 1 else str(meta["key"])
        out.append(ViewItem(name, image, png))
    return out


def folder_items(folder: Path) -> list[ViewItem]:
    """The pairs of a result folder: a job folder, an annotation folder, or a propagate
    reference store (or one of its group folders)."""
    if (folder / "job.toml").is_file():
        return job_items(folder)
    return annotation_items(folder) or reference_items(folder)


def _result_folders(image: Path) -> list[Path]:
    """Result folders that may hold a label map of ``image``."""
    out = []
    roots = [_output_root(image)]
    for anc in list(image.parents)[:SEARCH_UP]:
        roots.append(_output_root(anc))
    for root in roots:
        if root.is_dir():
            out += sorted(p for p in root.iterdir() if p.is_dir())
    return out


def _output_root(path: Path) -> Path:
    from segdeck.core.jobs.base import default_output_root

    return default_output_root(path)


def results_of(path: Path, limit: int = 3) -> list[tuple[Path, int]]:
    """Result folders made from the input ``path`` that hold label maps.

    A newcomer gives ``segdeck view`` the folder (or the project spec) they ran a job
    on; its results are elsewhere: in the job folders of its output root
    (``<name>.segdeck/``, also when ``path`` is that root itself) and in recently run
    job folders (``segdeck jobs``) whose ``job.toml`` names ``path`` as input (``--out``).

    Parameters
    ----------
    path : Path
        A folder of images, an image, a project spec or an output root.
    limit : int
        At most this many folders.

    Returns
    -------
    list of (Path, int)
        Folders and their number of ``*.labels.png``, newest first; only folders with
        at least one. Never raises (unreadable folders are left out).
    """
    try:
        target = path.resolve()
        folders: list[Path] = []
        roots = [_output_root(path)]
        if path.is_dir() and path.name.endswith(imageio.OUTPUT_ROOT_SUFFIX):
            roots.append(path)
        elif path.is_dir():  # a project folder: the output roots of the inputs in it
            roots += sorted(c for c in path.iterdir() if c.is_dir() and c.name.endswith(imageio.OUTPUT_ROOT_SUFFIX))
        for root in roots:
            if root.is_dir():
                folders += [d for d in root.iterdir() if d.is_dir()]
        from segdeck.core.jobs.registry import recent

        for job_dir in recent():
            try:
                doc = tomllib.loads((job_dir / "job.toml").read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError):
                continue
            if doc.get("input") and Path(str(doc["input"])).resolve() == target:
                folders.append(job_dir)
    except OSError:
        return []
    found: dict[Path, tuple[float, int]] = {}
    for d in folders:
        try:
            key = d.resolve()
            if key in found:
                continue
            n = sum(1 for _ in d.glob(f"*{LABELS_SUFFIX}"))
            if n:
                found[key] = (d.stat().st_mtime, n)
        except OSError:
            continue
    newest = sorted(found.items(), key=lambda kv: -kv[1][0])[:limit]
    return [(d, n) for d, (_t, n) in newest]


def _results_hint(path: Path) -> str:
    """``"; its results: A (5 label maps), B (3 label maps): segdeck view FOLDER"`` or ""."""
    found = results_of(path)
    if not found:
        return ""
    here = Path.cwd()

    def show(d: Path) -> str:
        try:
            return str(d.relative_to(here))
        except ValueError:
            return str(d)

    listed = ", ".join(f"{show(d)} ({n} label map{'s' * (n != 1)})" for d, n in found)
    return f"; its results: {listed}: segdeck view FOLDER"


def resolve(path: str | Path) -> tuple[list[ViewItem], int]:
    """The items to walk and where to start for PATH (see the module docstring).

    Returns
    -------
    items : list of ViewItem
    start : int

    Raises
    ------
    SegdeckError
        PATH does not exist, or a folder without any label map.
    """
    p = Path(path).expanduser().absolute()
    if not p.exists():
        raise SegdeckError(f"{path}: no such file or folder")
    if p.is_dir():
        items = folder_items(p)
        if not items:
            raise SegdeckError(f"{path}: no label maps (*{LABELS_SUFFIX}) in this folder{_results_hint(p)}")
        return items, 0
    if not imageio.is_image_path(p):
        raise SegdeckError(f"{path}: not an image, a label map or a folder of results{_results_hint(p)}")
    if not p.name.endswith(LABELS_SUFFIX) and p.with_suffix(".json").is_file():  # a reference's label map?
        items = reference_items(p.parent)
        for i, it in enumerate(items):
            if it.mask is not None and it.mask.resolve() == p.resolve():
                return items, i
    if p.name.endswith(LABELS_SUFFIX):
        items = folder_items(p.parent)
        for i, it in enumerate(items):
            if it.mask is not None and it.mask.resolve() == p.resolve():
                return items, i
        return [ViewItem(_stem(p), None, p)], 0
    for folder in _result_folders(p):
        items = folder_items(folder)
        for i, it in enumerate(items):
            if it.image is not None and it.image.resolve() == p.resolve():
                return items, i
    return [ViewItem(p.name, p, None)], 0


def colour_labels(labels: np.ndarray) -> np.ndarray:
    """(H, W, 3) uint8 BGR colours of a label map: 0 black, label k the colour
    :func:`segdeck.annotate.refs.id_colour` gives object ID k (the same in every image
    and in the reference-labelling window)."""
    from segdeck.annotate.refs import id_colour

    values, inverse = np.unique(labels, return_inverse=True)
    lut = np.array([id_colour(v) if v > 0 else (0, 0, 0) for v in values], np.uint8).reshape(-1, 3)
    return lut[inverse.reshape(labels.shape)]


@dataclass
class Loaded:
    """An item read from disk: image (H, W, 3) BGR (or the label colours when the image
    is missing), labels (H, W) int (or None), a one-line note."""

    bgr: np.ndarray
    labels: np.ndarray | None
    note: str = ""


def load_item(item: ViewItem) -> Loaded:
    """Read an item; a missing or bad file becomes a note, never an exception."""
    labels = None
    notes = []
    if item.mask is not None:
        try:
            labels = imageio.read_label_map(item.mask)
            if labels.ndim != 2:
                notes.append(f"{item.mask.name}: not a label map")
                labels = None
        except (SegdeckError, OSError, ValueError) as exc:
            notes.append(f"{item.mask.name}: {exc}")
    bgr = None
    if item.image is not None:
        try:
            bgr = np.ascontiguousarray(imageio.load_rgb(item.image)[:, :, ::-1])
        except (SegdeckError, OSError, ValueError) as exc:
            notes.append(f"{item.image.name}: {exc}")
    else:
        notes.append("image not found")
    if bgr is None:
        if labels is None:
            bgr = np.full((240, 320, 3), 48, np.uint8)
        else:
            bgr = np.zeros((*labels.shape, 3), np.uint8)
    if labels is not None and labels.shape != bgr.shape[:2]:
        notes.append(f"mask {labels.shape[1]}x{labels.shape[0]} scaled to the image")
        labels = cv2.resize(labels.astype(np.int32).astype(np.float32), (bgr.shape[1], bgr.shape[0]),
                            interpolation=cv2.INTER_NEAREST).astype(np.int64)
    if item.mask is None:
        notes.append("no label map found for this image")
    return Loaded(bgr, labels, "; ".join(notes))


class ViewerState:
    """Which item is shown and how (window-free).

    Parameters
    ----------
    items : list of ViewItem
    start : int
    keymap : Keymap, optional

    Attributes
    ----------
    index : int
    overlay : bool
        The label map is drawn over the image.
    opacity : float
        0..1, one of :data:`OPACITIES`.
    outcome : Outcome or None
    """

    session = "viewer"

    def __init__(self, items: list[ViewItem], start: int = 0, keymap: Keymap | None = None):
        if not items:
            raise ValueError("nothing to view")
        self.items = items
        self.index = min(max(start, 0), len(items) - 1)
        self.keymap = keymap or default_keymap()
        self.overlay = True
        self._opacity = 0
        self.outcome: Outcome | None = None
        self.message = ""

    @property
    def opacity(self) -> float:
        return OPACITIES[self._opacity]

    @property
    def item(self) -> ViewItem:
        return self.items[self.index]

    def action(self, name: str | None) -> bool:
        """Apply a ``viewer`` keymap action; True when what is shown changed."""
        self.message = ""
        if name == "next":
            if self.index + 1 >= len(self.items):
                self.message = "last image"
                return True
            self.index += 1
            return True
        if name == "previous":
            if self.index == 0:
                self.message = "first image"
                return True
            self.index -= 1
            return True
        if name == "toggle_overlay":
            self.overlay = not self.overlay
            return True
        if name == "opacity":
            self._opacity = (self._opacity + 1) % len(OPACITIES)
            self.overlay = True
            return True
        if name == "quit":
            self.outcome = Outcome.QUIT
            return True
        return False


class ViewerWindow(WindowLoop):
    """The viewer's window: the image, the label map over it, a status line."""

    HINTS = (("next", "next"), ("previous", "prev"), ("toggle_overlay", "overlay"), ("opacity", "opacity"),
             ("quit", "quit"), (("zoom_in", "zoom_out"), "zoom"))

    def __init__(self, state: ViewerState, *, max_window: tuple[int, int] = (1280, 800), gui: Gui | None = None,
                 frames_log=None, report: Callable[[dict], None] | None = None):
        super().__init__(gui, frames_log)
        self.state = state
        self.max_window = max_window
        self.report = report or (lambda event: None)
        self.windows = {WIN: self._mouse}
        self.positions = {WIN: (0, 0)}
        self.hints = state.keymap.hints("viewer", self.HINTS)
        self._shown_index: int | None = None
        self.pointer: tuple[int, int] | None = None
        self._load()

    def _load(self) -> None:
        st = self.state
        if self._shown_index == st.index:
            return
        self._shown_index = st.index
        self.loaded = load_item(st.item)
        h, w = self.loaded.bgr.shape[:2]
        self.view = View((w, h), self.max_window)
        self._colours = colour_labels(self.loaded.labels) if self.loaded.labels is not None else None
        self._announce()
        self.mark()

    def _announce(self) -> None:
        """Report what is shown: image, label map, overlay switch and opacity."""
        st, it = self.state, self.state.item
        self.report({"event": "shown", "index": st.index, "total": len(st.items), "name": it.name,
                     "image": str(it.image) if it.image else None, "mask": str(it.mask) if it.mask else None,
                     "overlay": st.overlay, "opacity": st.opacity})

    def on_key(self, code: int) -> bool:
        st = self.state
        act = st.keymap.key_action("viewer", code)
        if act is None:
            return False
        if act.startswith(("zoom_", "pan_")):
            changed = self.view.view_action(act, self.pointer)
        else:
            changed = st.action(act)
        if st.outcome:
            self.outcome = st.outcome
            return True
        if self._shown_index != st.index:
            self._load()
        elif act in ("toggle_overlay", "opacity"):
            self._announce()
        if changed:
            self.mark()
        return changed

    def _mouse(self, kind, button, u, v, ctrl) -> bool:
        if v >= self.view.dh:
            return False
        self.pointer = self.view.to_image(u, v)
        if kind in ("wheel-up", "wheel-down"):
            act = self.state.keymap.mouse_action("viewer", kind)
            if self.view.view_action(act, self.pointer):
                self.mark()
                return True
        return False

    def draw(self, name: str) -> np.ndarray:
        st, v, ld = self.state, self.view, self.loaded
        frame = np.zeros((v.dh + STATUS_BAR, v.dw, 3), np.uint8)
        disp = frame[: v.dh]
        disp[:] = v.image_view(ld.bgr)
        if st.overlay and ld.labels is not None:
            rows, cols = v.sample_index()
            lab = ld.labels[rows[:, None], cols[None, :]]
            col = self._colours[rows[:, None], cols[None, :]]
            m = lab > 0
            a = st.opacity
            disp[m] = (disp[m].astype(np.float32) * (1 - a) + col[m].astype(np.float32) * a).astype(np.uint8)
        put_status(frame[v.dh :], self.status_text(v.dw), self.hints)
        return frame

    def status_text(self, width: int) -> str:
        """The status line for a window ``width`` pixels wide: position and name, object
        count, overlay state, then the notes (image not found, mask scaled, ...) and the
        last message, which come first when the whole does not fit
        (:func:`segdeck.annotate.refs.fit_status`)."""
        from segdeck.annotate.refs import fit_status

        st, ld = self.state, self.loaded
        n = 0 if ld.labels is None else len(np.unique(ld.labels)) - int((ld.labels == 0).any())
        state = f"overlay {int(st.opacity * 100)}%" if st.overlay else "overlay off"
        parts = [f"{st.index + 1}/{len(st.items)} {st.item.name}", f"{n} object(s)", state]
        return fit_status(parts, " | ".join(t for t in (ld.note, st.message) if t), width)


def run_viewer(items: list[ViewItem], start: int = 0, *, max_window: tuple[int, int] = (1280, 800),
               keymap: Keymap | None = None, gui: Gui | None = None, frames_log: Path | None = None,
               report: Callable[[dict], None] | None = None) -> int:
    """Show the items until the window is closed or the quit key; returns 0."""
    state = ViewerState(items, start, keymap)
    ViewerWindow(state, max_window=max_window, gui=gui, frames_log=frames_log, report=report).run()
    return 0
