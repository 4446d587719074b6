"""GrabCut session: rectangle + sure / probable strokes, one GrabCut iteration per press.

The state machine works on a working-resolution copy of the image (longest side
``max_side``); :meth:`GrabCutState.full_mask` scales the result back to the full
resolution for painting. GrabCut: Rother, Kolmogorov, Blake, "GrabCut: interactive
foreground extraction using iterated graph cuts", SIGGRAPH 2004 (doi:10.1145/1015706.1015720),
via ``cv2.grabCut``.
"""

from __future__ import annotations

import cv2
import numpy as np

from segdeck.annotate.gui import (
    STATUS_BAR,
    ImageSession,
    place_next_to,
    put_status,
)
from segdeck.annotate.keymap import Keymap
from segdeck.annotate.state import MaskState

NO_MARK = 255
STROKES = {
    "sure_foreground": cv2.GC_FGD,
    "sure_background": cv2.GC_BGD,
    "probable_foreground": cv2.GC_PR_FGD,
    "probable_background": cv2.GC_PR_BGD,
}
MARK_BGR = {
    cv2.GC_FGD: (0, 0, 230),
    cv2.GC_BGD: (230, 60, 0),
    cv2.GC_PR_FGD: (150, 150, 255),
    cv2.GC_PR_BGD: (255, 200, 120),
}


def working_image(image: np.ndarray, max_side: int) -> np.ndarray:
    """``image`` shrunk (area averaging) so its longest side is at most ``max_side``."""
    h, w = image.shape[:2]
    f = min(1.0, max_side / float(max(h, w)))
    if f >= 1.0:
        return image
    return cv2.resize(image, (max(1, round(w * f)), max(1, round(h * f))), interpolation=cv2.INTER_AREA)


class GrabCutState(MaskState):
    """Events in, GrabCut mask out (``image`` and ``keymap``: :class:`~segdeck.annotate.state.MaskState`).

    Parameters
    ----------
    brush : int, optional
        Stroke radius in working-image pixels (default: 1/150 of the shorter side).

    Attributes
    ----------
    rect : tuple (x0, y0, x1, y1) or None
        XYXY, x1 / y1 exclusive.
    marks : ndarray (h, w) uint8
        Stroke labels (``cv2.GC_*``), 255 where nothing was drawn.
    mask : ndarray (h, w) bool or None
        Foreground after the last iteration.
    """

    session = "grabcut"

    def __init__(self, image: np.ndarray, keymap: Keymap | None = None, brush: int | None = None):
        super().__init__(image, keymap)
        self.bgr = cv2.cvtColor(self.image, cv2.COLOR_RGB2BGR)
        h, w = image.shape[:2]
        self.brush = brush or max(2, round(min(h, w) / 150))
        self.reset()

    def reset(self) -> bool:
        h, w = self.image.shape[:2]
        self.rect: tuple[int, int, int, int] | None = None
        self._drag_start = None
        self.marks = np.full((h, w), NO_MARK, np.uint8)
        self.gc_mask: np.ndarray | None = None
        self.bgd = np.zeros((1, 65), np.float64)
        self.fgd = np.zeros((1, 65), np.float64)
        self.iterations = 0
        self.mask: np.ndarray | None = None
        self._last: tuple[int, int] | None = None
        self.message = ""
        return True

    def stroke(self, value: int, p0, p1) -> None:
        cv2.line(self.marks, tuple(p0), tuple(p1), int(value), 2 * self.brush + 1)
        cv2.circle(self.marks, tuple(p1), self.brush, int(value), -1)

    def on_drag(self, action: str, phase: str, x: int, y: int) -> bool:
        if action == "rectangle":
            b = self.drag_box(phase, x, y)
            if b is None:
                return False
            r = (b[0], b[1], b[2] + 1, b[3] + 1)
            if phase == "end" and (r[2] - r[0] < 3 or r[3] - r[1] < 3):
                self.message = "rectangle too small"
                return True
            self.rect = r
            return True
        if action in STROKES:
            p = (x, y)
            self.stroke(STROKES[action], self._last if (phase != "start" and self._last) else p, p)
            self._last = None if phase == "end" else p
            return True
        return False

    def iterate(self) -> bool:
        """One GrabCut iteration (the first one initialises from rectangle and strokes)."""
        h, w = self.image.shape[:2]
        if self.gc_mask is None:
            rect = self.rect
            if rect is None:
                m = max(2, round(0.01 * min(h, w)))
                rect = (m, m, w - m, h - m)
            gc = np.full((h, w), cv2.GC_BGD, np.uint8)
            gc[rect[1] : rect[3], rect[0] : rect[2]] = cv2.GC_PR_FGD
            self.gc_mask = gc
        drawn = self.marks != NO_MARK
        self.gc_mask[drawn] = self.marks[drawn]
        fg = np.isin(self.gc_mask, (cv2.GC_FGD, cv2.GC_PR_FGD)).any()
        bg = np.isin(self.gc_mask, (cv2.GC_BGD, cv2.GC_PR_BGD)).any()
        if not (fg and bg):
            self.message = "GrabCut needs both foreground and background pixels"
            return True
        try:
            cv2.grabCut(self.bgr, self.gc_mask, None, self.bgd, self.fgd, 1, cv2.GC_INIT_WITH_MASK)
        except cv2.error as exc:
            self.message = f"GrabCut failed: {str(exc).strip().splitlines()[-1][:80]}"
            return True
        self.iterations += 1
        self.mask = np.isin(self.gc_mask, (cv2.GC_FGD, cv2.GC_PR_FGD))
        self.message = f"{self.iterations} iteration(s), foreground {int(self.mask.sum())} px"
        return True

    def action(self, name: str | None) -> bool:
        if name == "iterate":
            return self.iterate()
        if name == "reset":
            return self.reset()
        if name == "brush_bigger":
            self.brush = min(self.brush + 1, 100)
            return True
        if name == "brush_smaller":
            self.brush = max(self.brush - 1, 1)
            return True
        return super().action(name)

    def settle(self) -> None:
        """Finishing before any iteration runs one."""
        if self.mask is None:
            self.iterate()


def mask_to_segments(mask: np.ndarray) -> np.ndarray:
    """A foreground mask as painting segments: 1 = foreground, 2 = the rest. (H, W) int32."""
    return np.where(mask, 1, 2).astype(np.int32)


class GrabCutWindow(ImageSession):
    """Segments window (result) + annotations window (rectangle and strokes)."""

    SEG = "segdeck grabcut segments"
    ANN = "segdeck grabcut annotations"

    SESSION = "grabcut"
    #: Key hints of the status bars (most important first); keys from the keymap.
    HINTS = (
        ("rectangle", "rectangle"), ("sure_foreground", "fg"), ("sure_background", "bg"),
        ("probable_foreground", "probable fg"), ("probable_background", "probable bg"), ("iterate", "iterate"),
        ("finish", "finish"), ("reset", "reset"), ("quit", "quit"), (("brush_smaller", "brush_bigger"), "brush"),
        (("zoom_in", "zoom_out"), "zoom"),
    )

    def __init__(self, state: GrabCutState, **kwargs):
        super().__init__(state, **kwargs)
        self.windows = {self.SEG: self._mouse, self.ANN: self._mouse}
        size = (self.view.dw, self.view.dh + STATUS_BAR)
        self.positions = {self.ANN: (0, 0), self.SEG: place_next_to(size, size)}

    def draw(self, name: str) -> np.ndarray:
        st, v = self.state, self.view
        img = self.base_view()
        frame = np.zeros((v.dh + STATUS_BAR, v.dw, 3), np.uint8)
        disp = frame[: v.dh]
        if name == self.SEG:
            if st.mask is None:
                disp[:] = img
            else:
                m = st.mask[self._rows[:, None], self._cols[None, :]]
                disp[:] = img // 3
                disp[m] = img[m]
            put_status(frame[v.dh :], f"{self.index}/{self.total} {self.title} | {st.message}", self.hints)
        else:
            disp[:] = img
            marks = st.marks[self._rows[:, None], self._cols[None, :]]
            for val, col in MARK_BGR.items():
                sel = marks == val
                if sel.any():
                    disp[sel] = col
            if st.rect is not None:
                x0, y0, x1, y1 = st.rect
                p0, p1 = v.to_display(x0, y0), v.to_display(x1, y1)
                cv2.rectangle(disp, p0, p1, (0, 220, 0), 2)
            put_status(frame[v.dh :], f"brush {st.brush} | iterations {st.iterations} | rect {'set' if st.rect else 'none'}",
                       self.hints)
        return frame
