"""Reference labelling for group propagation (``segdeck annotate refs SPEC``).

For every group of a project spec, a seeded sample of reference images is labelled:
each reference is shown with SAM's automatic candidate masks; the user selects a
candidate (a click), gives it an integer object ID (typed digits), refines it or adds a
new mask with positive / negative point prompts (SAM's prompt path), and saves the
reference's label map and IDs. The ``propagate`` job then carries those objects to the
other images of the group with SAM 2's memory (Ravi et al., "SAM 2: Segment Anything in
Images and Videos", arXiv:2408.00714; the "Static Segmentation by Tracking" idea,
arXiv:2501.06749).

The parts:

- :class:`RefImage`: one reference's working image, candidate masks and IDs;
  :meth:`RefImage.label_map` composes the label map (smaller masks drawn over larger
  ones) and scales it to the image's full size.
- :class:`RefsState`: the window-free state machine over all references (events in,
  arrays out; keymap session ``refs``). Selection rule: a click selects the
  *smallest* candidate covering the pixel; when that candidate is already selected the
  click deselects it; ``tab`` walks to the next larger candidate under the pointer. Object
  IDs: a digit 1-9 assigns that ID at once; while an ID is being typed every further
  digit (0 included) extends it (``1`` then ``2`` gives 12) until ``enter``, a new
  selection or any other action ends it. IDs run from 1 to 65535 (uint8 label maps up
  to 255, uint16 above).
- :class:`CandidateSource`: the automatic masks of a working image from the engine's
  ``generate`` (:mod:`segdeck.core.sam.generate`), cached on disk per image, model and
  generator parameters, so reopening a reference is instant.
- :class:`RefsWindow`: the highgui window (:mod:`segdeck.annotate.gui`'s loop) with
  background loading of the next reference.

Coordinates: points are (x, y) pixels of the working image (the photo after EXIF
orientation, longest side at most ``max_side``); boxes XYXY with the last pixel
inclusive (SAM's mask-box convention).
"""

from __future__ import annotations

import hashlib
import json
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import cv2
import numpy as np

from segdeck.annotate.gui import STATUS_BAR, Gui, View, WindowLoop, put_status
from segdeck.annotate.keymap import Keymap
from segdeck.annotate.state import GestureState, Outcome

#: Largest object ID (the label map is a 16-bit PNG at most).
MAX_ID = 65535
#: The window's name (also its title).
WIN = "segdeck refs"
_DIGITS = {ord(str(d)): str(d) for d in range(10)}


def id_colour(obj_id: int) -> np.ndarray:
    """The display colour (BGR uint8) of object ID ``obj_id`` >= 1.

    Hues step by the golden ratio (ID k: hue ``k * 0.618...`` of the circle, saturation
    0.75, value 0.95), so neighbouring IDs differ clearly and an ID has the same colour
    in every image and in both windows (``annotate refs``, ``view``).
    """
    import colorsys

    hue = (int(obj_id) * 0.6180339887) % 1.0
    r, g, b = colorsys.hsv_to_rgb(hue, 0.75, 0.95)
    return np.array([round(b * 255), round(g * 255), round(r * 255)], np.uint8)


#: The status line's font as ``put_status`` draws it (Hershey simplex, scale 0.45,
#: thickness 1) and its left margin, to measure what fits the bar.
_STATUS_FONT = (cv2.FONT_HERSHEY_SIMPLEX, 0.45, 1)
_STATUS_MARGIN = 6


def status_text_width(text: str) -> int:
    """Width in pixels of ``text`` on the status line of the annotation windows."""
    font, scale, thickness = _STATUS_FONT
    return int(cv2.getTextSize(text, font, scale, thickness)[0][0])


def fit_status(parts: list[str], message: str, width: int) -> str:
    """The status line's text for a bar ``width`` pixels wide.

    ``parts`` (position, group progress, object count, ...) come first and the message
    last, joined by ``" | "``, when the whole fits. When it does not (a portrait photo
    makes the window narrow; a long group label), the message comes first, so a
    question such as "q again to quit without saving, space saves" or a refusal is
    never the part the bar cuts off; the parts follow as far as they fit.

    Parameters
    ----------
    parts : list of str
        The state shown on every frame, in display order; empty strings are left out.
    message : str
        The last action's message ("" for none).
    width : int
        Bar width in pixels.

    Returns
    -------
    str
    """
    parts = [p for p in parts if p]
    whole = " | ".join(parts + ([message] if message else []))
    if not message or status_text_width(whole) <= width - 2 * _STATUS_MARGIN:
        return whole
    return " | ".join([message, *parts])


@dataclass(frozen=True)
class Reference:
    """One reference image of a group.

    Attributes
    ----------
    group : str
        The group's label, e.g. ``"specimen=12"`` (``"all"`` without group columns).
    key : str
        The image's primary key (the row's value in the spec's key column).
    path : Path
        The image file.
    """

    group: str
    key: str
    path: Path


@dataclass
class Candidate:
    """One mask of a reference: an automatic candidate, a saved object or a prompted mask.

    Attributes
    ----------
    mask : ndarray (h, w) bool
        At the working size.
    base : ndarray (h, w) bool or None
        The mask before any point prompt (automatic or saved candidates); None for a
        mask made from prompts alone.
    points : list of (x, y, label)
        Point prompts, label 1 positive / 0 negative, working-image pixels.
    """

    mask: np.ndarray
    base: np.ndarray | None = None
    points: list[tuple[int, int, int]] = field(default_factory=list)

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    def box(self) -> np.ndarray | None:
        """XYXY (last pixel inclusive) of :attr:`base`, the box prompt of a refinement; None without a base."""
        if self.base is None or not self.base.any():
            return None
        ys, xs = np.nonzero(self.base)
        return np.array([xs.min(), ys.min(), xs.max(), ys.max()], np.float32)


@dataclass
class RefImage:
    """A loaded reference: working image, candidates, object IDs.

    Attributes
    ----------
    ref : Reference
    image : ndarray (h, w, 3) uint8 RGB
        The working image (EXIF applied, longest side at most the session's max side).
    full_size : (int, int)
        (W, H) of the photo after EXIF orientation; label maps are saved at this size.
    candidates : list of Candidate
    ids : dict of int -> int
        Candidate index -> object ID (1..:data:`MAX_ID`).
    unsaved : bool
        Edited since it was loaded or saved.
    error : str or None
        Why the image could not be loaded (one line); nothing else is set then.
    """

    ref: Reference
    image: np.ndarray | None = None
    full_size: tuple[int, int] = (0, 0)
    candidates: list[Candidate] = field(default_factory=list)
    ids: dict[int, int] = field(default_factory=dict)
    unsaved: bool = False
    error: str | None = None
    version: int = 0

    @classmethod
    def build(cls, ref: Reference, image: np.ndarray, masks: np.ndarray, full_size: tuple[int, int] | None = None,
              saved: np.ndarray | None = None) -> RefImage:
        """A reference from its working image, candidate masks and (optionally) its saved label map.

        Parameters
        ----------
        image : ndarray (h, w, 3) uint8 RGB
        masks : ndarray (N, h, w) bool
            Automatic candidates.
        full_size : (W, H), optional
            Default: the working image's size.
        saved : ndarray (H', W') integer, optional
            A saved label map (any size; nearest-neighbour scaled to the working size):
            each object becomes a candidate with its ID, listed before the automatic ones.

        Raises
        ------
        ValueError
            Masks whose size is not the image's.
        """
        h, w = image.shape[:2]
        masks = np.asarray(masks, bool).reshape(-1, h, w) if np.asarray(masks).size else np.zeros((0, h, w), bool)
        if masks.shape[1:] != (h, w):
            raise ValueError(f"candidate masks {masks.shape[1:]} do not match the image {(h, w)}")
        out = cls(ref, image=np.ascontiguousarray(image), full_size=full_size or (w, h))
        if saved is not None and np.asarray(saved).size:
            lm = np.asarray(saved)
            if lm.shape != (h, w):
                lm = cv2.resize(lm.astype(np.uint16), (w, h), interpolation=cv2.INTER_NEAREST)
            for obj in (int(v) for v in np.unique(lm) if v != 0):
                m = lm == obj
                out.ids[len(out.candidates)] = obj
                out.candidates.append(Candidate(m, base=m.copy()))
        for m in masks:
            out.candidates.append(Candidate(m.copy(), base=m.copy()))
        return out

    @classmethod
    def failed(cls, ref: Reference, error: str) -> RefImage:
        """A reference whose image could not be loaded; ``error`` is the one line shown."""
        return cls(ref, error=error)

    def hits(self, x: int, y: int) -> list[int]:
        """Candidates covering pixel (x, y), smallest area first (ties: list order)."""
        if self.image is None:
            return []
        h, w = self.image.shape[:2]
        if not (0 <= x < w and 0 <= y < h):
            return []
        found = [i for i, c in enumerate(self.candidates) if c.mask[y, x]]
        return sorted(found, key=lambda i: (self.candidates[i].area, i))

    def label_map(self, size: tuple[int, int] | None = None) -> np.ndarray:
        """The objects as a label map: 0 background, each candidate with an ID painted with it.

        Larger masks are painted first, so a smaller mask inside a larger one keeps its
        ID; candidates that share an ID are one object.

        Parameters
        ----------
        size : (W, H), optional
            Output size (nearest-neighbour scaling); default :attr:`full_size`.

        Returns
        -------
        ndarray (H, W)
            uint8 when every ID is <= 255, else uint16.
        """
        h, w = self.image.shape[:2]
        top = max(self.ids.values(), default=0)
        dtype = np.uint8 if top <= 255 else np.uint16
        lm = np.zeros((h, w), dtype)
        for i in sorted(self.ids, key=lambda i: (-self.candidates[i].area, i)):
            lm[self.candidates[i].mask] = self.ids[i]
        size = size or self.full_size
        if (w, h) != tuple(size):
            lm = cv2.resize(lm, tuple(int(v) for v in size), interpolation=cv2.INTER_NEAREST)
        return lm

    def object_ids(self) -> list[int]:
        """The object IDs given, sorted, each once."""
        return sorted(set(self.ids.values()))


class ReferenceSink(Protocol):
    """Where saved references go (:class:`segdeck.core.propagate.references.ReferenceStore`)."""

    def save(self, group: str, key: str, label_map: np.ndarray, ids) -> object:
        """Write one reference's label map ((H, W) uint8 / uint16) and its object IDs; returns the path written."""
        ...

    def labelled(self, group: str):
        """Keys of the group's saved references."""
        ...


class PromptEngine(Protocol):
    """What the state uses of a SAM engine (:func:`segdeck.core.sam.open_engine`)."""

    def set_image(self, image: np.ndarray) -> None: ...

    def predict(self, points=None, labels=None, box=None, multimask: bool = False): ...


class RefsState(GestureState):
    """The reference-labelling session over all references of all groups.

    Parameters
    ----------
    refs : list of Reference
        In display order (group by group).
    load : callable (Reference) -> RefImage
        Loads one reference (working image, candidates, saved labels). The window runs
        it in the background; :meth:`ensure_loaded` calls it directly.
    store : ReferenceSink
        Saves label maps and IDs; its ``labelled(group)`` gives the progress.
    swap : callable (Reference, list of Reference) -> Reference or None, optional
        Another image of ``ref``'s group not among the given current references
        (seeded); None when the group has no other image.
    engine : PromptEngine, optional
        For point prompts; without one they only say so.
    engine_lock : threading.Lock, optional
        Held around each prompt's ``set_image`` + ``predict`` (the window computes the
        next reference's candidates with the same engine on another thread).
    keymap : Keymap, optional
    report : callable (dict) -> None, optional
        Called with ``{"event": "saved", "kind": "reference", ...}`` after each save.
    start : int, optional
        The reference shown first (clamped to the list; :func:`first_unlabelled`
        resumes a session where the last one stopped).

    Attributes
    ----------
    index : int
        The reference shown.
    selected : int or None
        The selected candidate of the current reference.
    typing : str or None
        The digits of the object ID being typed, None when no ID is being typed.
    outcome : Outcome or None
        ``QUIT`` at the end.
    """

    session = "refs"

    def __init__(self, refs: list[Reference], load: Callable[[Reference], RefImage], store: ReferenceSink, *,
                 swap: Callable[[Reference, list[Reference]], Reference | None] | None = None,
                 engine: PromptEngine | None = None, engine_lock: threading.Lock | None = None,
                 keymap: Keymap | None = None, report: Callable[[dict], None] | None = None, start: int = 0):
        super().__init__(keymap)
        if not refs:
            raise ValueError("no references to label")
        self.refs = list(refs)
        self.load = load
        self.store = store
        self.swap_fn = swap
        self.engine = engine
        self.engine_lock = engine_lock or threading.Lock()
        self.report = report or (lambda event: None)
        self.images: dict[Reference, RefImage] = {}
        self.index = min(max(int(start), 0), len(self.refs) - 1)
        self.selected: int | None = None
        self.typing: str | None = None
        self.show_candidates = True
        self.confirming: str | None = None
        self.outcome: Outcome | None = None
        self.saves = 0
        self.predictions = 0
        #: (reference, candidate) whose prompts changed while the engine was busy
        self.pending: tuple[RefImage, Candidate] | None = None

    # -- references ------------------------------------------------------------------
    @property
    def ref(self) -> Reference:
        return self.refs[self.index]

    @property
    def current(self) -> RefImage | None:
        """The shown reference once loaded (None while it loads)."""
        return self.images.get(self.ref)

    #: Loaded references kept besides the shown one, its neighbours and unsaved ones
    #: (each holds its candidates; reloading one is quick from the caches).
    KEEP_LOADED = 4

    def provide(self, img: RefImage) -> bool:
        """Install a loaded reference (from the window's background loader)."""
        if img.ref in self.images:
            return False
        self.images[img.ref] = img
        self._evict()
        return img.ref == self.ref

    def ensure_loaded(self) -> RefImage:
        """Load the shown reference now (blocking) if it is not loaded yet."""
        if self.ref not in self.images:
            self.images[self.ref] = self.load(self.ref)
            self._evict()
        return self.images[self.ref]

    def _evict(self) -> None:
        """Forget loaded references beyond :attr:`KEEP_LOADED` (never unsaved ones, the
        shown one or its neighbours), the farthest from the shown one first."""
        near = set(self.refs[max(self.index - 1, 0) : self.index + 2])
        pos = {r: i for i, r in enumerate(self.refs)}
        spare = [r for r, img in self.images.items() if r not in near and not img.unsaved]
        spare.sort(key=lambda r: -abs(pos.get(r, -10**9) - self.index))
        for r in spare[: max(0, len(spare) - self.KEEP_LOADED)]:
            del self.images[r]

    def group_refs(self, group: str) -> list[Reference]:
        """The current references of ``group`` (a group label), in display order."""
        return [r for r in self.refs if r.group == group]

    def progress(self, group: str | None = None) -> str:
        """``"group specimen=12: 3/5 references labelled"`` for ``group`` (default: the shown one's).

        A reference counts as labelled once saved (the store's ``labelled(group)``).
        """
        group = self.ref.group if group is None else group
        mine = self.group_refs(group)
        try:
            done = set(self.store.labelled(group) or ())
        except (OSError, ValueError) as exc:  # a damaged reference record: say so, keep going
            return f"group {group}: ?/{len(mine)} references labelled ({exc})"
        n = sum(1 for r in mine if r.key in done)
        return f"group {group}: {n}/{len(mine)} references labelled"

    def unsaved(self) -> list[Reference]:
        """References edited and not saved."""
        return [r for r in self.refs if r in self.images and self.images[r].unsaved]

    def goto(self, i: int) -> bool:
        """Show reference ``i`` (clamped to the list; at either end a message says so).

        The selection and any ID being typed end; the labels of the reference left stay
        in memory (saved or not)."""
        i = min(max(i, 0), len(self.refs) - 1)
        if i == self.index:
            self.message = "last reference" if i == len(self.refs) - 1 else "first reference"
            return True
        self.index = i
        self.selected = None
        self.typing = None
        self.message = ""
        return True

    # -- selection ---------------------------------------------------------------------
    def select_at(self, x: int, y: int) -> bool:
        """Select the smallest candidate at (x, y); when that is the selected one, deselect it."""
        img = self.current
        self.typing = None
        if img is None or img.image is None:
            return False
        hits = img.hits(x, y)
        if self.selected is not None and hits and hits[0] == self.selected:
            self.selected = None
            self.message = "deselected"
            return True
        if not hits:
            changed = self.selected is not None
            self.selected = None
            self.message = "no candidate mask here: a positive point starts one"
            return changed or True
        self.selected = hits[0]
        self.message = self._describe(hits[0])
        return True

    def cycle(self) -> bool:
        """Select the next larger candidate under the pointer (wrapping to the smallest)."""
        img = self.current
        self.typing = None
        if img is None or img.image is None or self.pointer is None:
            return False
        hits = img.hits(*self.pointer)
        if not hits:
            self.message = "no candidate mask under the pointer"
            return True
        if self.selected in hits:
            self.selected = hits[(hits.index(self.selected) + 1) % len(hits)]
        else:
            self.selected = hits[0]
        self.message = self._describe(self.selected)
        return True

    def _describe(self, i: int) -> str:
        img = self.current
        obj = img.ids.get(i)
        return f"mask {i} ({img.candidates[i].area} px)" + (f", ID {obj}" if obj else ", no ID yet: type one")

    # -- object IDs --------------------------------------------------------------------
    def type_digit(self, digit: str) -> bool:
        """Add a digit to the ID being typed (or start one) and give it to the selected mask.

        Returns True when the state changed. A leading 0 and IDs above :data:`MAX_ID`
        are refused with a message.
        """
        img = self.current
        if img is None or img.image is None:
            return False
        if self.selected is None:
            self.message = "select a mask first (click it), then type its object ID"
            return True
        text = (self.typing or "") + digit
        if text.startswith("0"):
            self.message = "object IDs start at 1"
            return True
        if int(text) > MAX_ID:
            self.message = f"object IDs go up to {MAX_ID}"
            return True
        self.typing = text
        if img.ids.get(self.selected) != int(text):
            img.ids[self.selected] = int(text)
            img.unsaved = True
            img.version += 1
        self.message = f"mask {self.selected}: ID {text} (more digits extend it, enter ends it)"
        return True

    def end_id(self) -> bool:
        """End the ID being typed (the next digit starts a new ID); False when none was."""
        if self.typing is None:
            return False
        self.message = f"mask {self.selected}: ID {self.typing}"
        self.typing = None
        return True

    def clear_id(self) -> bool:
        """Remove the selected mask's object ID."""
        img = self.current
        self.typing = None
        if img is None or self.selected is None or self.selected not in img.ids:
            self.message = "the selected mask has no ID" if self.selected is not None else "select a mask first"
            return True
        del img.ids[self.selected]
        img.unsaved = True
        img.version += 1
        self.message = f"mask {self.selected}: ID removed"
        return True

    # -- prompts -------------------------------------------------------------------------
    def prompt(self, x: int, y: int, label: int) -> bool:
        """A point prompt: refine the selected mask, or (positive, nothing selected) start a new one."""
        img = self.current
        self.typing = None
        if img is None or img.image is None:
            return False
        if self.engine is None:
            self.message = "no SAM engine: point prompts are off"
            return True
        if self.selected is None:
            if label == 0:
                self.message = "select a mask (or start one with a positive point) before a negative point"
                return True
            img.candidates.append(Candidate(np.zeros(img.image.shape[:2], bool)))
            self.selected = len(img.candidates) - 1
        cand = img.candidates[self.selected]
        cand.points.append((int(x), int(y), int(label)))
        self._predict(img, cand)
        return True

    def _predict(self, img: RefImage, cand: Candidate) -> None:
        """Predict ``cand``'s mask from its points now, or as soon as the engine is free
        (the window computes the next reference's candidates meanwhile): see :meth:`refresh`."""
        self.pending = (img, cand)
        self.refresh(block=False)

    def refresh(self, block: bool = False) -> bool:
        """Predict the mask whose prompts changed last, if any.

        Parameters
        ----------
        block : bool
            Wait for the engine; False returns at once while another thread uses it,
            leaving :attr:`pending` set for the next try (the window's idle turn).

        Returns
        -------
        bool
            True when a mask was predicted.
        """
        if self.pending is None:
            return False
        if not self.engine_lock.acquire(blocking=block):
            self.message = "the engine is busy (candidates of the next reference) ... the mask follows"
            return False
        img, cand = self.pending
        try:
            self.pending = None
            if not cand.points:
                return False
            pts = np.array([p[:2] for p in cand.points], np.float32).reshape(-1, 2)
            lab = np.array([p[2] for p in cand.points], np.int32)
            self.engine.set_image(img.image)
            res = self.engine.predict(points=pts, labels=lab, box=cand.box(), multimask=False)
        finally:
            self.engine_lock.release()
        masks = np.asarray(res.masks)
        best = int(np.argmax(res.scores)) if len(res.scores) else 0
        cand.mask = masks[best].astype(bool)
        self.predictions += 1
        img.version += 1
        i = next((k for k, c in enumerate(img.candidates) if c is cand), None)
        if i in img.ids:
            img.unsaved = True
        self.message = f"mask {i}: {cand.area} px from {len(cand.points)} point(s)"
        return True

    def undo(self) -> bool:
        """Remove the selected mask's last point prompt (its first one: back to the
        candidate, or gone for a mask made from points)."""
        img = self.current
        self.typing = None
        if img is None or self.selected is None or not img.candidates[self.selected].points:
            self.message = "no point prompt to remove"
            return True
        cand = img.candidates[self.selected]
        cand.points.pop()
        img.version += 1
        if self.selected in img.ids:
            img.unsaved = True
        if cand.points:
            self._predict(img, cand)
        elif cand.base is not None:
            cand.mask = cand.base.copy()
            self.message = f"mask {self.selected}: back to the candidate"
        else:
            self._remove(self.selected)
        return True

    def _remove(self, i: int) -> None:
        img = self.current
        if self.pending is not None and self.pending[1] is img.candidates[i]:
            self.pending = None
        del img.candidates[i]
        img.ids = {(j if j < i else j - 1): v for j, v in img.ids.items() if j != i}
        self.selected = None
        self.message = "mask removed"

    # -- save, swap, quit ------------------------------------------------------------------
    def save(self) -> bool:
        """Save the shown reference (label map + IDs) through the store, then show the next one.

        A reference without any object ID is not saved (the propagation needs at least
        one object per reference).
        """
        self.refresh(block=True)  # prompts newer than their mask: predict first
        img = self.current
        self.typing = None
        if img is None:
            return False
        if img.error:
            self.message = f"cannot save: {img.error}"
            return True
        if not img.ids:
            self.message = "nothing to save: give a mask an object ID first"
            return True
        lm = img.label_map()
        ids = [int(v) for v in np.unique(lm) if v != 0]  # an ID whose pixels are all covered is gone
        if not ids:
            self.message = "nothing to save: the masks with IDs are empty at the image's size"
            return True
        try:
            written = self.store.save(img.ref.group, img.ref.key, lm, ids)
        except (OSError, ValueError) as exc:
            self.message = f"cannot save {img.ref.key}: {exc}"
            self.report({"event": "error", "image": str(img.ref.path), "error": self.message})
            return True
        img.unsaved = False
        self.saves += 1
        self.report({"event": "saved", "kind": "reference", "file": str(written) if written is not None else None,
                     "image": str(img.ref.path), "group": img.ref.group, "key": img.ref.key, "ids": ids,
                     "progress": self.progress(img.ref.group)})
        if self.index + 1 < len(self.refs):
            self.goto(self.index + 1)
            self.message = f"saved {img.ref.key}"
        else:
            self.message = f"saved {img.ref.key} (last reference)"
        return True

    def swap(self) -> bool:
        """Replace the shown reference by another image of its group (seeded by the caller's ``swap``)."""
        self.typing = None
        if self.swap_fn is None:
            self.message = "swapping references is not available"
            return True
        old = self.ref
        try:
            new = self.swap_fn(old, self.group_refs(old.group))
        except (OSError, ValueError) as exc:
            self.message = f"cannot swap {old.key}: {exc}"
            return True
        if new is None:
            self.message = f"group {old.group} has no other image to swap in"
            return True
        self.refs[self.index] = new
        self.images.pop(old, None)
        self.selected = None
        self.message = f"swapped {old.key} for {new.key}"
        return True

    #: Actions that lose unsaved labels (asked first).
    DISCARDING = {"quit": "quit", "swap": "swap this reference"}

    def _needs_confirm(self, name: str) -> bool:
        if name == "quit":
            return bool(self.unsaved())
        if name == "swap":
            img = self.current
            return img is not None and bool(img.ids)
        return False

    def window_closed(self) -> bool:
        """The user closed the window with the window manager (the title bar's X): like
        the quit key.

        Without unsaved references the session ends (:attr:`outcome` becomes
        ``Outcome.QUIT``). With unsaved ones the first close only asks: ``confirming``
        becomes ``"quit"`` and :attr:`message` says how to quit without saving (close
        again, or the quit key) and how to save; the window then comes back. A close
        while that question is shown quits.

        Returns
        -------
        bool
            True when the session ends, False when the window must come back.
        """
        if self.unsaved() and self.confirming != "quit":
            self.confirming = "quit"
            again = "/".join(self.keymap.keys_for(self.session, "quit")) or "quit"
            save = "/".join(self.keymap.keys_for(self.session, "save")) or "save"
            self.message = (f"{len(self.unsaved())} unsaved reference(s): close again or {again} to quit "
                            f"without saving, {save} saves")
            return False
        self.confirming = None
        self.outcome = Outcome.QUIT
        return True

    def action(self, name: str | None) -> bool:
        if name is None:
            return False
        if name in self.DISCARDING and self.confirming != name and self._needs_confirm(name):
            self.confirming = name
            again = "/".join(self.keymap.keys_for(self.session, name)) or name
            save = "/".join(self.keymap.keys_for(self.session, "save")) or "save"
            what = f"{len(self.unsaved())} unsaved reference(s)" if name == "quit" else "this reference has IDs"
            self.message = f"{what}: {again} again to {self.DISCARDING[name]} without saving, {save} saves"
            return True
        self.confirming = None
        if name != "end_id" and not name.startswith("id_"):
            self.typing = None
        if name == "quit":
            self.outcome = Outcome.QUIT
            return True
        if name == "next":
            return self.goto(self.index + 1)
        if name == "previous":
            return self.goto(self.index - 1)
        if name == "save":
            return self.save()
        if name == "swap":
            return self.swap()
        if name == "cycle":
            return self.cycle()
        if name == "undo":
            return self.undo()
        if name == "clear_id":
            return self.clear_id()
        if name == "end_id":
            return self.end_id()
        if name.startswith("id_"):
            return self.type_digit(name[3:])
        if name == "toggle_candidates":
            self.show_candidates = not self.show_candidates
            return True
        if name in ("positive", "negative"):  # bound to a key: at the pointer
            if self.pointer is None:
                self.message = "move the pointer over the image first"
                return True
            return self.prompt(*self.pointer, 1 if name == "positive" else 0)
        return False

    def key(self, code: int) -> bool:
        """A ``waitKeyEx`` code: while an ID is being typed every digit key extends it."""
        if self.typing is not None and code in _DIGITS:
            self.confirming = None
            return self.type_digit(_DIGITS[code])
        return super().key(code)

    def on_press(self, action: str, x: int, y: int) -> bool:
        self.confirming = None
        if action == "select":
            return self.select_at(x, y)
        if action in ("positive", "negative"):
            return self.prompt(x, y, 1 if action == "positive" else 0)
        return self.action(action)


# ---- candidates ----------------------------------------------------------------------------------


class CandidateSource:
    """Automatic candidate masks of working images, cached on disk.

    Parameters
    ----------
    engine : SAM engine
        ``generate(image, params) -> result with .masks (N, h, w) bool`` and
        ``image_key(image)`` (model and pixels; :class:`segdeck.core.sam.engine.SamEngine`).
    params : GeneratorParams or None
        The official automatic generator's parameters (None: the defaults).
    cache_dir : Path or None
        One ``<key>.npz`` per image (bit-packed masks), the key covering the model's
        sha256, the image's pixels and the parameters; None: no disk cache.
    lock : threading.Lock, optional
        Held while the engine runs (shared with the window's prompts).
    """

    def __init__(self, engine, params=None, cache_dir: Path | None = None, lock: threading.Lock | None = None):
        self.engine = engine
        self.params = params
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.lock = lock or threading.Lock()
        self.computed = 0

    def key(self, image: np.ndarray) -> str:
        """The cache key of a working image: model and pixels (the engine's ``image_key``) and the parameters."""
        h = hashlib.sha256()
        h.update(str(self.engine.image_key(image)).encode())
        params = self.params.model_dump(mode="json") if self.params is not None else {}
        h.update(json.dumps(params, sort_keys=True, default=str).encode())
        return h.hexdigest()[:32]

    def masks(self, image: np.ndarray) -> np.ndarray:
        """(N, h, w) bool candidate masks of ``image`` ((h, w, 3) uint8 RGB), from the cache when there."""
        h, w = image.shape[:2]
        path = self.cache_dir / f"{self.key(image)}.npz" if self.cache_dir else None
        if path is not None and path.is_file():
            try:
                with np.load(path) as z:
                    n = int(z["count"])
                    bits = np.unpackbits(z["bits"], count=n * h * w)
                    return bits.reshape(n, h, w).astype(bool)
            except (OSError, ValueError, KeyError):
                pass  # a damaged cache file is recomputed
        with self.lock:
            res = self.engine.generate(image, self.params)
        masks = np.asarray(res.masks, bool).reshape(-1, h, w)
        self.computed += 1
        if path is not None:
            import io

            from segdeck.core.imageio import write_bytes_atomic

            buf = io.BytesIO()
            np.savez_compressed(buf, count=np.int64(len(masks)), bits=np.packbits(masks.reshape(-1)))
            path.parent.mkdir(parents=True, exist_ok=True)
            write_bytes_atomic(path, buf.getvalue())
        return masks


def make_loader(source: CandidateSource | None, load_saved: Callable[[Reference], np.ndarray | None] | None = None,
                max_side: int = 1024) -> Callable[[Reference], RefImage]:
    """A ``load`` function for :class:`RefsState`: photo (EXIF applied) -> working image ->
    candidates (``source``; none without one) -> saved label map (``load_saved``).

    A file that cannot be read gives a :class:`RefImage` with ``error`` set (one line)
    instead of raising.
    """
    from segdeck.core import imageio
    from segdeck.core.errors import SegdeckError

    def load(ref: Reference) -> RefImage:
        try:
            full = imageio.load_rgb(ref.path)
        except (SegdeckError, OSError, ValueError) as exc:
            return RefImage.failed(ref, f"{ref.path}: {exc}")
        work = imageio.shrink(full, max_side)
        h, w = work.shape[:2]
        masks = source.masks(work) if source is not None else np.zeros((0, h, w), bool)
        saved = load_saved(ref) if load_saved is not None else None
        return RefImage.build(ref, work, masks, full_size=(full.shape[1], full.shape[0]), saved=saved)

    return load


# ---- the window ---------------------------------------------------------------------------------


class RefsWindow(WindowLoop):
    """One highgui window over :class:`RefsState`: the reference, its candidates and IDs.

    References are loaded on a background thread (the shown one first, then the next),
    so moving on rarely waits; while one loads the window says so.
    """

    HINTS = (
        ("select", "select"), (tuple(f"id_{k}" for k in range(1, 10)), "ID"), ("end_id", "end ID"),
        ("save", "save+next"), ("positive", "+point"), ("negative", "-point"), ("next", "next"),
        ("previous", "prev"), ("swap", "swap"), ("cycle", "next mask"), ("clear_id", "clear ID"),
        ("undo", "undo"), ("toggle_candidates", "outlines"), ("quit", "quit"), (("zoom_in", "zoom_out"), "zoom"),
    )

    def __init__(self, state: RefsState, *, max_window: tuple[int, int] = (1280, 800), gui: Gui | None = None,
                 frames_log=None, background: bool = True):
        super().__init__(gui, frames_log)
        self.state = state
        self.max_window = max_window
        self.windows = {WIN: self._mouse}
        self.positions = {WIN: (0, 0)}
        self.hints = state.keymap.hints("refs", self.HINTS)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="segdeck-refs") if background else None
        self._futures: dict[Reference, Future] = {}
        self._shown: tuple | None = None
        self.view = View((max_window[0], max_window[1] - STATUS_BAR), max_window)
        self._cache_key = None
        self._request()

    # -- loading -------------------------------------------------------------------------
    def _request(self) -> None:
        st = self.state
        wanted = [st.ref] + ([st.refs[st.index + 1]] if st.index + 1 < len(st.refs) else [])
        for ref in wanted:
            if ref in st.images or ref in self._futures:
                continue
            if self._pool is None:
                st.images[ref] = st.load(ref)
            else:
                self._futures[ref] = self._pool.submit(st.load, ref)

    def idle(self) -> None:
        st = self.state
        if st.pending is not None and st.refresh(block=False):
            self.mark()
        for ref, fut in list(self._futures.items()):
            if fut.done():
                del self._futures[ref]
                try:
                    img = fut.result()
                except Exception as exc:  # noqa: BLE001 - one line in the window, never a dead loop
                    img = RefImage.failed(ref, f"{ref.path}: {exc}")
                if st.provide(img):
                    self.mark()
        self._request()
        self._sync_view()

    def busy(self) -> bool:
        """Stay responsive while references load or a mask waits for the engine."""
        return bool(self._futures) or self.state.pending is not None or super().busy()

    def _sync_view(self) -> None:
        img = self.state.current
        key = (self.state.ref, None if img is None or img.image is None else img.image.shape)
        if key != self._shown:
            self._shown = key
            if img is not None and img.image is not None:
                h, w = img.image.shape[:2]
                self.view = View((w, h), self.max_window)
            self.mark()

    def run(self) -> Outcome:
        try:
            return super().run()
        finally:
            if self._pool is not None:
                self._pool.shutdown(wait=False, cancel_futures=True)

    def on_windows_closed(self, names: list[str]) -> None:
        """The window closed with the window manager's X is the quit key: with unsaved
        references it comes back with the question in the status bar
        (:meth:`RefsState.window_closed`; closing again or the quit key quits without
        saving, the save key saves); else the session ends."""
        if self.state.window_closed():
            self.outcome = Outcome.QUIT
            return
        self.reopen(names)

    # -- input -----------------------------------------------------------------------------
    def on_key(self, code: int) -> bool:
        st = self.state
        act = st.keymap.key_action("refs", code)
        if st.typing is not None and code in _DIGITS:  # a digit of the ID being typed ("0" too)
            changed = st.key(code)
        elif act and act.startswith(("zoom_", "pan_")):
            changed = self.view.view_action(act, st.pointer)
        else:
            changed = st.key(code)
        if st.outcome:
            self.outcome = st.outcome
        self._request()
        self._sync_view()
        if changed:
            self.mark()
        return changed

    def _mouse(self, kind, button, u, v, ctrl) -> bool:
        st = self.state
        if st.current is None or st.current.image is None:
            return False
        if v >= self.view.dh and kind != "up":
            return False
        x, y = self.view.to_image(u, v)
        if kind in ("wheel-up", "wheel-down"):
            act = st.keymap.mouse_action("refs", kind)
            if self.view.view_action(act, (x, y)):
                self.mark()
                return True
            return False
        changed = st.mouse(kind, button, x, y, ctrl)
        if st.outcome:
            self.outcome = st.outcome
        if changed:
            self.mark()
        return changed

    # -- drawing ---------------------------------------------------------------------------
    def _outlines(self, img: RefImage, rows, cols) -> np.ndarray:
        """(dh, dw) bool: outlines of the candidates without an ID (cached per view and edit)."""
        key = (img.ref, img.version, self.view.version, len(img.candidates))
        if key != self._cache_key:
            out = np.zeros((len(rows), len(cols)), bool)
            for i, c in enumerate(img.candidates):
                if i in img.ids:
                    continue
                m = c.mask[rows[:, None], cols[None, :]]
                b = np.zeros_like(m)
                b[:, 1:] |= m[:, 1:] != m[:, :-1]
                b[1:, :] |= m[1:, :] != m[:-1, :]
                out |= b
            self._outline, self._cache_key = out, key
        return self._outline

    def status_text(self, width: int) -> str:
        """The status line of the shown reference for a window ``width`` pixels wide:
        position and key, group progress, object count, the ID being typed and the last
        message (first when the whole does not fit: :func:`fit_status`)."""
        st = self.state
        img = st.current
        parts = [f"{st.index + 1}/{len(st.refs)} {st.ref.key}", st.progress()]
        if img is None or img.image is None:
            loading = img.error if img is not None and img.error else "loading and computing candidate masks ..."
            return fit_status(parts, loading, width)
        parts += [f"{len(img.ids)} object(s)", f"typing ID {st.typing}" if st.typing else ""]
        return fit_status(parts, st.message, width)

    def draw(self, name: str) -> np.ndarray:
        st, v = self.state, self.view
        img = st.current
        frame = np.zeros((v.dh + STATUS_BAR, v.dw, 3), np.uint8)
        disp = frame[: v.dh]
        if img is None or img.image is None:
            disp[:] = 48
            put_status(frame[v.dh :], self.status_text(v.dw), self.hints)
            return frame
        disp[:] = v.image_view(np.ascontiguousarray(img.image[:, :, ::-1]))
        rows, cols = v.sample_index()
        if st.show_candidates:
            disp[self._outlines(img, rows, cols)] = (0, 220, 255)
        for i in sorted(img.ids, key=lambda i: -img.candidates[i].area):
            m = img.candidates[i].mask[rows[:, None], cols[None, :]]
            disp[m] = disp[m] // 2 + id_colour(img.ids[i]) // 2
        if st.selected is not None and st.selected < len(img.candidates):
            m = img.candidates[st.selected].mask[rows[:, None], cols[None, :]]
            disp[m] = disp[m] // 2 + np.array((128, 128, 0), np.uint8)
            edge = np.zeros_like(m)
            edge[:, 1:] |= m[:, 1:] != m[:, :-1]
            edge[1:, :] |= m[1:, :] != m[:-1, :]
            disp[cv2.dilate(edge.astype(np.uint8), np.ones((3, 3), np.uint8)) > 0] = (255, 255, 255)
            for x, y, lab in img.candidates[st.selected].points:
                col = (0, 220, 0) if lab == 1 else (0, 0, 230)
                cv2.circle(disp, v.to_display(x, y), 5, col, -1)
                cv2.circle(disp, v.to_display(x, y), 5, (255, 255, 255), 1)
        for i, obj in img.ids.items():
            m = img.candidates[i].mask
            if not m.any():
                continue
            ys, xs = np.nonzero(m)
            u, w = v.to_display(float(xs.mean()), float(ys.mean()))
            if 0 <= u < v.dw and 0 <= w < v.dh:
                cv2.putText(disp, str(obj), (u - 6, w + 6), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 3, cv2.LINE_AA)
                cv2.putText(disp, str(obj), (u - 6, w + 6), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (255, 255, 255), 1,
                            cv2.LINE_AA)
        put_status(frame[v.dh :], self.status_text(v.dw), self.hints)
        return frame


# ---- the project: references, store, swaps ----------------------------------------------------


class ProjectRefs:
    """A loaded project (:func:`segdeck.core.propagate.load_project`) seen by the window:
    its references, the :class:`~segdeck.core.propagate.ReferenceStore` behind the
    window's saves, and seeded swaps.

    Each group's references are its recorded list (``store.chosen``, written after a
    swap) when every key there is still an image of the group, else the seeded sample
    (:meth:`Project.sampled_references`). A swap draws with
    :func:`~segdeck.core.propagate.swap_reference` (the spec's seed and the group's swap
    count), records the new list, and forgets the swapped-out reference's saved files
    (it is no reference any more). Groups without any existing image have no references.

    Parameters
    ----------
    project : Project
    store : ReferenceStore, optional
        Default: one over ``project.refs_dir``.
    """

    def __init__(self, project, store=None):
        from segdeck.core.propagate import ReferenceStore

        self.project = project
        self.store = store or ReferenceStore(project.refs_dir)
        self._groups = {g.label: g for g in project.groups}
        self._turns: dict[str, int] = {}

    def group(self, label: str):
        """The project's :class:`~segdeck.core.propagate.Group` with this label."""
        return self._groups[label]

    def references(self) -> list[Reference]:
        """Every group's references, group by group (CSV order of first appearance)."""
        out = []
        for g in self.project.groups:
            present = self.project.present_rows(g)
            if not present:
                continue
            keys = None
            chosen = self.store.chosen(g)
            if chosen is not None:
                recorded, turn = chosen
                have = {r.key for r in present}
                if recorded and all(k in have for k in recorded) and len(set(recorded)) == len(recorded):
                    keys, self._turns[g.label] = recorded, turn
            rows = [self.project.row(k) for k in keys] if keys else self.project.sampled_references(g)
            out.extend(Reference(g.label, r.key, r.path) for r in rows)
        return out

    # ReferenceSink
    def save(self, group: str, key: str, label_map: np.ndarray, ids) -> Path:
        """Write the reference through the store; returns the label map's path."""
        entry = self.store.save(self.group(group), key, label_map, ids, image=self.project.row(key).relpath)
        return entry.labels_path

    def labelled(self, group: str) -> list[str]:
        """Keys of the group's saved references (the store's JSON records)."""
        return list(self.store.labelled(self.group(group)))

    def load_saved(self, ref: Reference) -> np.ndarray | None:
        """The saved label map of ``ref`` or None (an unreadable one counts as none)."""
        from segdeck.core.propagate import ReferenceError

        try:
            got = self.store.load(self.group(ref.group), ref.key)
        except ReferenceError:
            return None
        return None if got is None else got[0]

    def swap(self, ref: Reference, current: list[Reference]) -> Reference | None:
        """Another image of ``ref``'s group in place of ``ref`` (seeded), or None when the
        group has no image left that is not a reference."""
        from segdeck.core.propagate import swap_reference

        g = self.group(ref.group)
        rows = self.project.present_rows(g)
        cur = [self.project.row(r.key) for r in current]
        pos = [r.key for r in current].index(ref.key)
        turn = self._turns.get(g.label, 0)
        new = swap_reference(rows, cur, pos, self.project.spec.seed, turn)
        if new[pos].key == ref.key:
            return None
        self._turns[g.label] = turn + 1
        self.store.choose(g, [r.key for r in new], turn + 1)
        self.store.delete(g, ref.key)
        return Reference(g.label, new[pos].key, new[pos].path)


def first_unlabelled(refs: list[Reference], store: ReferenceSink) -> int:
    """Index of the first reference of ``refs`` its group has not saved yet (0 when all
    are saved): reopening the window continues where the last session stopped instead
    of walking through the labelled references again (each one a candidate computation)."""
    saved: dict[str, set[str]] = {}
    for i, ref in enumerate(refs):
        if ref.group not in saved:
            saved[ref.group] = set(store.labelled(ref.group))
        if ref.key not in saved[ref.group]:
            return i
    return 0


def run_refs(project_refs: ProjectRefs, engine, *, params=None, max_side: int = 1024,
             max_window: tuple[int, int] = (1280, 800), keymap: Keymap | None = None, gui: Gui | None = None,
             frames_log: Path | None = None, report: Callable[[dict], None] | None = None) -> int:
    """Run the reference-labelling window over a project until the user quits.

    Candidates are cached under ``<refs_dir>/.candidates/`` (a name no group folder can
    have). The window opens at the first reference not saved yet
    (:func:`first_unlabelled`). Every save is reported as ``{"event": "saved", "kind": "reference", "file",
    "image", "group", "key", "ids", "progress"}``; the end as ``{"event": "done",
    "references": N, "saved_references": K, "refs_dir": ...}``.

    Parameters
    ----------
    project_refs : ProjectRefs
    engine : SAM engine or None
        ``generate`` for the candidates, ``set_image`` / ``predict`` for point prompts;
        None shows no candidates and refuses prompts (saved references still show).
    params : GeneratorParams, optional
        The automatic generator's parameters.
    max_side : int
        Longest side of the working image (label maps are saved at full size).

    Returns
    -------
    int
        0.

    Raises
    ------
    ValueError
        No group has an existing image.
    """
    from segdeck.annotate.app import emit_json

    report = report or emit_json
    refs = project_refs.references()
    if not refs:
        raise ValueError("no group has an existing image: nothing to label")
    lock = threading.Lock()
    refs_dir = Path(project_refs.project.refs_dir)
    source = CandidateSource(engine, params, refs_dir / ".candidates", lock) if engine is not None else None
    load = make_loader(source, project_refs.load_saved, max_side)
    start = first_unlabelled(refs, project_refs)
    state = RefsState(refs, load, project_refs, swap=project_refs.swap, engine=engine, engine_lock=lock,
                      keymap=keymap, report=report, start=start)
    if start:
        back = "/".join(state.keymap.keys_for("refs", "previous")) or "previous"
        state.message = f"{start} reference(s) before this one already labelled ({back} goes back)"
    win = RefsWindow(state, max_window=max_window, gui=gui, frames_log=frames_log)
    win.run()
    report({"event": "done", "references": len(state.refs), "saved_references": state.saves,
            "refs_dir": str(refs_dir)})
    return 0
