"""Window-free state machines shared by the annotation sessions.

:class:`GestureState` turns raw mouse events (down / up / move / double / wheel with a
button and a ctrl flag) into keymap actions; :class:`PaintState` is the segment-painting
session: a label map of segments (0 = edge) and one colour index per segment;
:class:`MaskState` is the base of the prompt sessions whose result is one foreground
mask (GrabCut, SAM). Every session ends with an :class:`Outcome`.

Coordinates are full-resolution pixel positions ``(x, y)`` of the session's image.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

import cv2
import numpy as np
from scipy import ndimage

from segdeck.annotate.keymap import Keymap, load_keymap

#: Paint colours (RGB); label k of the saved label map is colour k (1-based).
PALETTE = np.array(
    [
        (0, 0, 0),  # 0: unpainted
        (204, 0, 0),
        (0, 170, 0),
        (0, 90, 230),
        (235, 200, 0),
        (200, 0, 200),
        (0, 200, 200),
        (255, 128, 0),
        (130, 60, 255),
        (140, 90, 40),
    ],
    np.uint8,
)

BUTTONS = ("left", "right", "middle")


class Outcome(StrEnum):
    """How a session (state or window) ended: what the driver does next.

    A ``StrEnum``: each member equals its keymap action name (``Outcome.QUIT == "quit"``).
    """

    #: GrabCut / SAM: the mask is handed over to painting.
    FINISH = "finish"
    #: Stop the run (the window was closed, or the quit key).
    QUIT = "quit"
    #: Painting: go to the next / the previous image without saving.
    NEXT = "next"
    PREVIOUS = "previous"
    #: Painting: save the image's painting, then go to the next image.
    SAVE_NEXT = "save_next"
    #: A mouse callback raised; the window loop re-raises it.
    ERROR = "error"


def colour_hex(rgb) -> str:
    return "{:02x}{:02x}{:02x}".format(*(int(c) for c in rgb))


_default_keymap: Keymap | None = None


def default_keymap() -> Keymap:
    """The shipped default keymap without the user's file (cached)."""
    global _default_keymap
    if _default_keymap is None:
        _default_keymap = load_keymap("default", user_file=False)
    return _default_keymap


class GestureState:
    """Maps raw mouse events to the session's keymap actions.

    Subclasses implement ``on_press(action, x, y)``, ``on_drag(action, phase, x, y)``
    (phase ``"start" | "move" | "end"``), ``on_move(x, y)`` and ``action(name)``.
    Every handler returns True when the state changed (the window must redraw).
    """

    session = ""

    def __init__(self, keymap: Keymap | None = None):
        self.keymap = keymap or default_keymap()
        self._drag: tuple[str, str] | None = None  # (action, button)
        self.pointer: tuple[int, int] | None = None
        self.message = ""

    # -- raw events ---------------------------------------------------------
    def mouse(self, kind: str, button: str | None, x: int, y: int, ctrl: bool = False) -> bool:
        """Feed one mouse event.

        Parameters
        ----------
        kind : {"down", "up", "move", "double", "wheel-up", "wheel-down"}
        button : {"left", "right", "middle"} or None
        x, y : int
            Pointer position in image pixels.
        ctrl : bool
            Ctrl held.

        Returns
        -------
        bool
            True when the state changed.
        """
        x, y = int(x), int(y)
        self.pointer = (x, y)
        km, s = self.keymap, self.session
        if kind == "down" and button in BUTTONS:
            gestures = [f"ctrl+{button}", button] if ctrl and button != "middle" else [button]
            for g in gestures:
                act = km.mouse_action(s, g + "-drag")
                if act:
                    self._drag = (act, button)
                    return bool(self.on_drag(act, "start", x, y))
            for g in gestures:
                act = km.mouse_action(s, g)
                if act:
                    return bool(self.on_press(act, x, y))
            return False
        if kind == "move":
            if self._drag:
                return bool(self.on_drag(self._drag[0], "move", x, y))
            return bool(self.on_move(x, y))
        if kind == "up":
            if self._drag and (button is None or button == self._drag[1]):
                act = self._drag[0]
                self._drag = None
                return bool(self.on_drag(act, "end", x, y))
            return False
        if kind == "double" and button in BUTTONS:
            act = km.mouse_action(s, f"{button}-double")
            return bool(self.on_press(act, x, y)) if act else False
        if kind in ("wheel-up", "wheel-down"):
            act = km.mouse_action(s, kind)
            return bool(self.action(act)) if act else False
        return False

    def key(self, code: int) -> bool:
        """Feed a ``waitKeyEx`` code; returns True when the state changed."""
        act = self.keymap.key_action(self.session, code)
        return bool(self.action(act)) if act else False

    # -- overridden -----------------------------------------------------------
    def on_press(self, action: str, x: int, y: int) -> bool:
        return False

    def on_drag(self, action: str, phase: str, x: int, y: int) -> bool:
        return False

    def on_move(self, x: int, y: int) -> bool:
        return False

    def action(self, name: str | None) -> bool:
        return False


class MaskState(GestureState):
    """Base of a prompt session whose result is one foreground mask of a working image.

    Shared by :class:`~segdeck.annotate.grabcut.GrabCutState` and
    :class:`~segdeck.annotate.sam.SamState`: the ``finish`` and ``quit`` actions and the
    mask scaled to full resolution (:meth:`full_mask`). Subclasses bring ``mask`` up to
    date in :meth:`settle` and handle their own actions before calling
    ``super().action(name)``.

    Parameters
    ----------
    image : ndarray (h, w, 3) uint8 RGB
        The working image; event coordinates are its pixels (x, y).
    keymap : Keymap, optional

    Attributes
    ----------
    mask : ndarray (h, w) bool or None
        The current foreground.
    outcome : Outcome or None
        ``FINISH`` (a non-empty mask) or ``QUIT`` once the session is over.
    """

    #: The message when ``finish`` finds no foreground.
    NOTHING_TO_FINISH = "nothing to finish: no foreground yet"

    def __init__(self, image: np.ndarray, keymap: Keymap | None = None):
        super().__init__(keymap)
        self.image = np.ascontiguousarray(image)
        self.mask: np.ndarray | None = None
        self.outcome: Outcome | None = None
        self._drag_start: tuple[int, int] | None = None

    def drag_box(self, phase: str, x: int, y: int) -> tuple[int, int, int, int] | None:
        """Follow a rectangle dragged from the ``"start"`` event's pixel to (x, y).

        Parameters
        ----------
        phase : {"start", "move", "end"}
            ``"end"`` forgets the start.
        x, y : int
            The pointer in working-image pixels.

        Returns
        -------
        tuple (x0, y0, x1, y1) or None
            XYXY with x1 / y1 inclusive (the corners' pixels, sorted); None at the start
            or without one.
        """
        if phase == "start":
            self._drag_start = (x, y)
            return None
        if self._drag_start is None:
            return None
        x0, y0 = self._drag_start
        if phase == "end":
            self._drag_start = None
        return (min(x0, x), min(y0, y), max(x0, x), max(y0, y))

    def settle(self) -> None:
        """Bring ``mask`` up to date with the prompts before finishing (default: nothing)."""

    def action(self, name: str | None) -> bool:
        if name == Outcome.FINISH:
            self.settle()
            if self.mask is None or not self.mask.any():
                self.message = self.NOTHING_TO_FINISH
                return True
            self.outcome = Outcome.FINISH
            return True
        if name == Outcome.QUIT:
            self.outcome = Outcome.QUIT
            return True
        return False

    def full_mask(self, size: tuple[int, int]) -> np.ndarray:
        """The mask at ``size`` (W, H), nearest-neighbour scaled.

        Returns
        -------
        ndarray (H, W) bool
            All False before any mask.
        """
        if self.mask is None:
            return np.zeros((size[1], size[0]), bool)
        return cv2.resize(self.mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)


@dataclass
class _Undo:
    kind: str  # "colours" | "labels" | "batch" (ids holds the entries)
    ids: list = field(default_factory=list)
    old: list = field(default_factory=list)
    region: tuple[slice, slice] | None = None
    old_labels: np.ndarray | None = None
    old_seg_color: np.ndarray | None = None


class PaintState(GestureState):
    """Segment painting: fill / unfill segments, continuous modes, cut lines, undo, reset.

    Parameters
    ----------
    labels : ndarray of shape (H, W), integer
        Segments at full resolution; 0 = edge (never painted), 1..N segments.
    seg_color : ndarray of shape (N + 1,), uint8, optional
        Colour index (0 = unpainted, k = ``PALETTE[k]``) per segment, to restore a session.
    original : ndarray of shape (H, W), optional
        The segments :meth:`reset` returns to (default: ``labels``).
    keymap : Keymap, optional
        Bindings (default: the shipped default keymap).

    unsaved : bool
        The painting already differs from what is saved (a mask handed over by GrabCut
        or SAM), so leaving asks first even before the first edit.
    colour : int
        The paint colour to start with (1..``n_colours``; e.g. the previous image's).

    Notes
    -----
    ``outcome`` becomes ``"quit" | "next" | "previous" | "save_next"`` when the
    matching action arrives; the window loop reads it. With unsaved painting
    (:attr:`unsaved`) the leaving actions ``quit``, ``next`` and ``previous`` ask first:
    the first press only sets ``confirming`` and a message, the same action again
    leaves, anything else cancels. Changes for the display are
    collected in ``dirty_segments`` (recolour only), ``dirty_regions`` (labels
    changed in a full-resolution (rows, cols) slice) and ``dirty_all``.
    """

    session = "paint"
    MAX_UNDO = 200
    #: Actions that leave the image without saving it (asked first when unsaved).
    DISCARDING = {"quit": "quit", "next": "go to the next image", "previous": "go to the previous image"}

    def __init__(self, labels: np.ndarray, seg_color: np.ndarray | None = None, *,
                 original: np.ndarray | None = None, keymap: Keymap | None = None,
                 n_colours: int = len(PALETTE) - 1, unsaved: bool = False, colour: int = 1):
        super().__init__(keymap)
        labels = np.ascontiguousarray(labels, dtype=np.int32)
        if labels.ndim != 2:
            raise ValueError(f"labels must be (H, W), got shape {labels.shape}")
        if labels.size and labels.min() < 0:
            raise ValueError("labels must be >= 0")
        self.labels = labels
        self.original = labels if original is None else np.ascontiguousarray(original, dtype=np.int32)
        top = int(labels.max()) if labels.size else 0
        self.seg_color = np.zeros(top + 1, np.uint8)
        if seg_color is not None:
            sc = np.asarray(seg_color, np.uint8)[: top + 1]
            self.seg_color[: len(sc)] = sc
        self.n_colours = n_colours
        self.colour = int(colour) if 1 <= int(colour) <= n_colours else 1
        self._unsaved_base = bool(unsaved)
        self._edits = 0  # undo steps pushed minus undone: 0 = as loaded
        self.confirming: str | None = None
        self.mode = "click"  # "click" | "fill" | "unfill"
        self.cut_anchor: tuple[int, int] | None = None
        self.cut_width = 1
        self.debug = False
        self.outcome: str | None = None
        self.template_request = False
        self.undo_stack: list[_Undo] = []
        self._group: _Undo | None = None
        self._bboxes: list | None = None
        self.dirty_segments: set[int] = set()
        self.dirty_regions: list[tuple[slice, slice]] = []
        self.dirty_all = False
        self.ui_dirty = False  # status / colour window only

    # -- queries ------------------------------------------------------------
    @property
    def shape(self) -> tuple[int, int]:
        return self.labels.shape

    def segment_at(self, x: int, y: int) -> int:
        h, w = self.labels.shape
        if not (0 <= x < w and 0 <= y < h):
            return 0
        return int(self.labels[y, x])

    def colour_map(self, fill_edges: bool = True) -> np.ndarray:
        """(H, W) uint8 colour index per pixel (0 = unpainted), the saved label map.

        With ``fill_edges``, an edge pixel (label 0) whose 3x3 neighbours are all painted
        with one colour takes that colour, so cut lines and edge-method borders inside
        one painted object do not leave holes in its mask.
        """
        cmap = self.seg_color[self.labels]
        if fill_edges:
            edge = self.labels == 0
            if edge.any():
                kernel = np.ones((3, 3), np.uint8)
                hi = cv2.dilate(np.where(edge, 0, cmap).astype(np.uint8), kernel)
                lo = cv2.erode(np.where(edge, 255, cmap).astype(np.uint8), kernel)
                fill = edge & (hi == lo) & (hi > 0) & (hi < 255)
                cmap[fill] = hi[fill]
        return cmap

    def masks(self) -> dict[int, np.ndarray]:
        """Colour index -> (H, W) bool mask, for every colour in use."""
        cmap = self.colour_map()
        return {int(k): cmap == k for k in np.unique(cmap) if k}

    @property
    def unsaved(self) -> bool:
        """True when the painting differs from what was loaded (undoing every edit makes it False again)."""
        return self._unsaved_base or self._edits > 0

    def bboxes(self) -> list:
        """Bounding slices per label (index label - 1), as ``scipy.ndimage.find_objects``."""
        if self._bboxes is None:
            self._bboxes = list(ndimage.find_objects(self.labels))
        n = len(self.seg_color) - 1
        if len(self._bboxes) < n:
            self._bboxes += [None] * (n - len(self._bboxes))
        return self._bboxes

    # -- painting -------------------------------------------------------------
    def _set_colour(self, seg: int, colour: int, group: _Undo | None = None) -> bool:
        if seg <= 0 or self.seg_color[seg] == colour:
            return False
        entry = group or _Undo("colours")
        entry.ids.append(seg)
        entry.old.append(int(self.seg_color[seg]))
        if group is None:
            self._push(entry)
        self.seg_color[seg] = colour
        self.dirty_segments.add(seg)
        return True

    def fill(self, x: int, y: int) -> bool:
        """Paint the segment at (x, y) with the current colour."""
        self._end_group()
        return self._set_colour(self.segment_at(x, y), self.colour)

    def unfill(self, x: int, y: int) -> bool:
        """Remove the paint of the segment at (x, y)."""
        self._end_group()
        return self._set_colour(self.segment_at(x, y), 0)

    def toggle_mode(self, mode: str) -> bool:
        """Switch continuous ``"fill"`` / ``"unfill"`` mode on, or back to ``"click"``."""
        self._end_group()
        self.mode = "click" if self.mode == mode else mode
        self.ui_dirty = True
        return True

    def on_move(self, x: int, y: int) -> bool:
        if self.mode == "click":
            return False
        if self._group is None:
            self._group = _Undo("colours")
        changed = self._set_colour(self.segment_at(x, y), self.colour if self.mode == "fill" else 0, self._group)
        if changed and self._group not in self.undo_stack:
            self._push(self._group)
        return changed

    def _end_group(self) -> None:
        self._group = None

    def select_colour(self, k: int) -> bool:
        k = int(k)
        if not 1 <= k <= self.n_colours or k == self.colour:
            return False
        self._end_group()
        self.colour = k
        self.ui_dirty = True
        return True

    # -- cuts -----------------------------------------------------------------
    def cut(self, x: int, y: int) -> bool:
        """A cut point: from the second point on, the line from the previous point
        becomes edge (label 0, ``cut_width`` pixels wide) and the segments it splits
        are relabelled by connected component (4-connectivity)."""
        self._end_group()
        h, w = self.labels.shape
        x, y = min(max(int(x), 0), w - 1), min(max(int(y), 0), h - 1)
        if self.cut_anchor is None:
            self.cut_anchor = (x, y)
            self.ui_dirty = True
            return True
        p0, self.cut_anchor = self.cut_anchor, (x, y)
        self.cut_line(p0, (x, y), self.cut_width)
        return True

    def end_cut(self) -> bool:
        if self.cut_anchor is None:
            return False
        self.cut_anchor = None
        self.ui_dirty = True
        return True

    def cut_line(self, p0, p1, width: int = 1) -> list[int]:
        """Turn the pixels of the segment p0-p1 (points (x, y), ``width`` px) into edge.

        Returns
        -------
        list of int
            The labels of the new segments created by the split.
        """
        h, w = self.labels.shape
        width = max(1, int(width))
        r = width // 2 + 1
        x0, x1 = max(min(p0[0], p1[0]) - r, 0), min(max(p0[0], p1[0]) + r + 1, w)
        y0, y1 = max(min(p0[1], p1[1]) - r, 0), min(max(p0[1], p1[1]) + r + 1, h)
        line = np.zeros((y1 - y0, x1 - x0), np.uint8)
        cv2.line(line, (p0[0] - x0, p0[1] - y0), (p1[0] - x0, p1[1] - y0), 1, width)
        on = line.astype(bool)
        touched = np.unique(self.labels[y0:y1, x0:x1][on])
        touched = [int(t) for t in touched if t > 0]
        if not touched:
            return []
        boxes = self.bboxes()
        ys = [boxes[t - 1][0] for t in touched if boxes[t - 1] is not None]
        xs = [boxes[t - 1][1] for t in touched if boxes[t - 1] is not None]
        ry0, ry1 = min([y0] + [s.start for s in ys]), max([y1] + [s.stop for s in ys])
        rx0, rx1 = min([x0] + [s.start for s in xs]), max([x1] + [s.stop for s in xs])
        region = (slice(ry0, ry1), slice(rx0, rx1))
        entry = _Undo("labels", region=region, old_labels=self.labels[region].copy(),
                      old_seg_color=self.seg_color.copy())
        self._push(entry)
        self.labels[y0:y1, x0:x1][on] = 0
        return self._split(region, touched)

    def _split(self, region, touched) -> list[int]:
        """Relabel each touched segment inside ``region`` by connected components."""
        sub = self.labels[region]
        new_ids: list[int] = []
        for t in touched:
            m = (sub == t).astype(np.uint8)
            n, cc, stats, _ = cv2.connectedComponentsWithStats(m, connectivity=4)
            if n <= 2:
                continue
            areas = stats[1:, cv2.CC_STAT_AREA]
            keep = 1 + int(np.argmax(areas))
            for comp in range(1, n):
                if comp == keep:
                    continue
                nid = len(self.seg_color)
                self.seg_color = np.append(self.seg_color, self.seg_color[t])
                sub[cc == comp] = nid
                new_ids.append(nid)
        self._refresh_boxes(region, touched + new_ids)
        self.dirty_regions.append(region)
        return new_ids

    def _refresh_boxes(self, region, ids) -> None:
        boxes = self.bboxes()
        if not ids:
            return
        sub = self.labels[region]
        oy, ox = region[0].start, region[1].start
        for i in ids:
            ys, xs = np.nonzero(sub == i)
            while len(boxes) < i:
                boxes.append(None)
            boxes[i - 1] = (slice(oy + ys.min(), oy + ys.max() + 1), slice(ox + xs.min(), ox + xs.max() + 1)) if len(ys) else None

    # -- template painting ------------------------------------------------------
    def paint_pixels(self, box_xyxy, colours: np.ndarray) -> list[int]:
        """Carve painted pixels into new segments (template painting).

        Parameters
        ----------
        box_xyxy : (x0, y0, x1, y1) int
            Where ``colours`` goes, full-resolution pixels (clipped to the image).
        colours : ndarray of shape (y1 - y0, x1 - x0), uint8
            Colour index per pixel; 0 leaves the pixel as it is.

        Returns
        -------
        list of int
            The new segment labels (one per colour used).
        """
        self._end_group()
        h, w = self.labels.shape
        x0, y0, x1, y1 = (int(v) for v in box_xyxy)
        cx0, cy0, cx1, cy1 = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
        if cx1 <= cx0 or cy1 <= cy0:
            return []
        colours = np.asarray(colours)[cy0 - y0 : cy1 - y0, cx0 - x0 : cx1 - x0]
        if not colours.any():
            return []
        region = (slice(cy0, cy1), slice(cx0, cx1))
        self._push(_Undo("labels", region=region, old_labels=self.labels[region].copy(),
                         old_seg_color=self.seg_color.copy()))
        sub = self.labels[region]
        new_ids = []
        for k in np.unique(colours):
            if k == 0:
                continue
            nid = len(self.seg_color)
            self.seg_color = np.append(self.seg_color, np.uint8(k))
            sub[colours == k] = nid
            new_ids.append(nid)
        self._refresh_boxes(region, new_ids)  # boxes of overwritten segments stay (supersets)
        self.dirty_regions.append(region)
        return new_ids

    # -- undo / reset -----------------------------------------------------------
    def _push(self, entry: _Undo) -> None:
        self._edits += 1
        self.undo_stack.append(entry)
        if len(self.undo_stack) > self.MAX_UNDO:
            del self.undo_stack[0]

    def undo(self) -> bool:
        """Revert the last fill, unfill, continuous stroke, cut, template paint or reset."""
        self._end_group()
        if not self.undo_stack:
            self.message = "nothing to undo"
            self.ui_dirty = True
            return True
        self._revert(self.undo_stack.pop())
        self._edits -= 1
        return True

    def _revert(self, e: _Undo) -> None:
        if e.kind == "batch":
            for sub in reversed(e.ids):
                self._revert(sub)
        elif e.kind == "colours":
            for seg, old in zip(reversed(e.ids), reversed(e.old), strict=True):
                self.seg_color[seg] = old
                self.dirty_segments.add(seg)
        else:
            if e.region is None:
                self.labels = e.old_labels
            else:
                self.labels[e.region] = e.old_labels
            self.seg_color = e.old_seg_color
            self._bboxes = None
            self.dirty_all = True

    def group_undo(self, since: int) -> None:
        """Make the undo entries pushed since the stack had ``since`` entries one step."""
        if len(self.undo_stack) - since > 1:
            batch = _Undo("batch", ids=self.undo_stack[since:])
            self._edits -= len(batch.ids)
            del self.undo_stack[since:]
            self._push(batch)

    def reset(self) -> bool:
        """Back to the original segments with nothing painted (undoable)."""
        self._end_group()
        self._push(_Undo("labels", region=None, old_labels=self.labels, old_seg_color=self.seg_color.copy()))
        self.labels = self.original.copy()
        self.seg_color = np.zeros(int(self.labels.max()) + 1 if self.labels.size else 1, np.uint8)
        self._bboxes = None
        self.mode = "click"
        self.cut_anchor = None
        self.dirty_all = True
        return True

    # -- dispatch ---------------------------------------------------------------
    def on_press(self, action: str, x: int, y: int) -> bool:
        self._cancel_confirm()
        if action == "fill":
            return self.fill(x, y)
        if action == "unfill":
            return self.unfill(x, y)
        if action == "toggle_fill_mode":
            return self.toggle_mode("fill")
        if action == "toggle_unfill_mode":
            return self.toggle_mode("unfill")
        if action == "cut":
            return self.cut(x, y)
        if action == "end_cut":
            return self.end_cut()
        return self.action(action)

    def _cancel_confirm(self) -> None:
        if self.confirming is not None:
            self.confirming = None
            self.message = ""
            self.ui_dirty = True

    def action(self, name: str | None) -> bool:
        if name in self.DISCARDING and self.unsaved and self.confirming != name:
            self.confirming = name
            again = "/".join(self.keymap.keys_for(self.session, name)) or name
            save = "/".join(self.keymap.keys_for(self.session, "save_next")) or "save_next"
            self.message = f"unsaved painting: {again} again to {self.DISCARDING[name]} without saving, {save} saves"
            return True
        if name is not None:
            self._cancel_confirm()
        if name in (Outcome.QUIT, Outcome.NEXT, Outcome.PREVIOUS, Outcome.SAVE_NEXT):
            self.outcome = Outcome(name)
            return True
        if name == "undo":
            return self.undo()
        if name == "reset":
            return self.reset()
        if name == "debug":
            self.debug = not self.debug
            self.dirty_all = True
            return True
        if name == "end_cut":
            return self.end_cut()
        if name == "template":
            self.template_request = True
            return True
        if name == "next_colour":
            return self.select_colour(self.colour % self.n_colours + 1)
        if name == "previous_colour":
            return self.select_colour((self.colour - 2) % self.n_colours + 1)
        if name and name.startswith("colour_"):
            return self.select_colour(int(name.split("_")[1]))
        return False

    def window_closed(self) -> bool:
        """The user closed a window with the window manager (the title bar's X): like
        the quit key.

        Without unsaved painting the session ends (``outcome`` becomes ``"quit"``). With
        unsaved painting (:attr:`unsaved`) the first close only asks, as the first ``q``
        does: ``confirming`` becomes ``"quit"`` and :attr:`message` says how to quit
        without saving (close again, or the quit key) and how to save; the window loop
        then shows the window again. A close while that question is shown quits.

        Returns
        -------
        bool
            True when the session ends, False when the window must come back.
        """
        if self.unsaved and self.confirming != Outcome.QUIT:
            self.action(Outcome.QUIT)
            again = "/".join(self.keymap.keys_for(self.session, "quit")) or "quit"
            save = "/".join(self.keymap.keys_for(self.session, "save_next")) or "save_next"
            self.message = f"unsaved painting: close again or {again} to quit without saving, {save} saves"
            self.ui_dirty = True
            return False
        self._cancel_confirm()
        self.outcome = Outcome.QUIT
        return True

    def consume_changes(self) -> tuple[set[int], list, bool]:
        """Return and clear (dirty segments, dirty regions, dirty_all)."""
        out = (self.dirty_segments, self.dirty_regions, self.dirty_all)
        self.dirty_segments, self.dirty_regions, self.dirty_all = set(), [], False
        return out
