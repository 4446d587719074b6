"""The painting windows: a segment window and a colour window around a :class:`PaintState`.

The display is cached at display resolution: the visible image (with segment
boundaries drawn in) and the visible labels are rebuilt only when the view or the
labels change; a fill or unfill recolours only that segment's pixels inside its
bounding box, so a click costs far less than one ``imshow``.
"""

from __future__ import annotations

import math

import cv2
import numpy as np
from scipy import ndimage

from segdeck.annotate.gui import (
    DEFAULT_MAX_WINDOW,
    STATUS_BAR,
    Gui,
    View,
    WindowLoop,
    place_next_to,
    put_status,
)
from segdeck.annotate.state import PALETTE, Outcome, PaintState

PALETTE_BGR = np.ascontiguousarray(PALETTE[:, ::-1])
BOUNDARY_BGR = np.array((80, 230, 230), np.uint8)
EDGE_BGR = np.array((0, 0, 0), np.uint8)


class PaintDisplay:
    """Display buffers of a painting session for one :class:`View`.

    ``frame`` is (dh + STATUS_BAR, dw, 3) BGR; ``disp`` (the picture) and ``bar`` (the
    status line) are views into it, so showing it needs no copy.
    """

    def __init__(self, image: np.ndarray, state: PaintState, view: View, fit_view: dict | None = None):
        self.image = image
        self.state = state
        self.view = view
        self.frame = np.zeros((view.dh + STATUS_BAR, view.dw, 3), np.uint8)
        self.disp = self.frame[: view.dh]
        self.bar = self.frame[view.dh :]
        self._view_version = None
        if fit_view is not None and fit_view["img"].shape[:2] == (view.dh, view.dw) and view.zoom == 1.0:
            # prepared in the background (see prepare_fit_view): nothing left but colouring
            self.img, self.rows, self.cols = fit_view["img"], fit_view["rows"], fit_view["cols"]
            self._view_version = view.version
            if fit_view["labels"] is state.labels:
                self.lv, self.base, self.boxes = fit_view["lv"], fit_view["base"], fit_view["boxes"]
                self.compose((slice(None), slice(None)))
                return
        self.rebuild()

    def rebuild(self) -> None:
        """Everything: image view (if the view moved), labels, boundaries, colours."""
        v = self.view
        if self._view_version != v.version:
            self.img = cv2.cvtColor(np.ascontiguousarray(v.image_view(self.image)), cv2.COLOR_RGB2BGR)
            self.rows, self.cols = v.sample_index()
            self._view_version = v.version
        self.lv = self.state.labels[self.rows][:, self.cols]
        self.base = self._with_boundaries(self.img, self.lv)
        self.boxes = list(ndimage.find_objects(self.lv))
        self.compose((slice(None), slice(None)))

    @staticmethod
    def prepare_fit_view(image: np.ndarray, labels: np.ndarray, view: View) -> dict:
        """Everything of the whole-image display except the colours, for a worker thread."""
        rows, cols = view.sample_index()
        img = cv2.cvtColor(np.ascontiguousarray(view.image_view(image)), cv2.COLOR_RGB2BGR)
        lv = labels[rows][:, cols]
        return {"img": img, "rows": rows, "cols": cols, "labels": labels, "lv": lv,
                "base": PaintDisplay._with_boundaries(img, lv), "boxes": list(ndimage.find_objects(lv))}

    @staticmethod
    def _with_boundaries(img: np.ndarray, lv: np.ndarray) -> np.ndarray:
        base = img.copy()
        b = np.zeros(lv.shape, bool)
        b[:, 1:] |= lv[:, 1:] != lv[:, :-1]
        b[1:, :] |= lv[1:, :] != lv[:-1, :]
        base[b] = BOUNDARY_BGR
        base[lv == 0] = EDGE_BGR
        return base

    def compose(self, rect) -> None:
        """Recolour the display rectangle ``rect`` (rows, cols slices) from the state."""
        lv, base, disp = self.lv[rect], self.base[rect], self.disp[rect]
        sc = self.state.seg_color
        if self.state.debug:
            rng = np.random.default_rng(7)
            lut = rng.integers(40, 255, size=(len(sc), 3), dtype=np.uint8)
            lut[0] = 0
            out = lut[lv]
            cidx = sc[lv]
            painted = cidx > 0
            out[painted] = PALETTE_BGR[cidx[painted]]
            disp[:] = out
            return
        cidx = sc[lv]
        disp[:] = base
        painted = cidx > 0
        if painted.any():
            disp[painted] = base[painted] // 2 + PALETTE_BGR[cidx[painted]] // 2

    def update_segments(self, ids) -> None:
        """Recolour only the pixels of the given segments (fill / unfill)."""
        if self.state.debug:
            self.compose((slice(None), slice(None)))
            return
        sc = self.state.seg_color
        for s in ids:
            if s - 1 >= len(self.boxes) or self.boxes[s - 1] is None:
                continue  # too small to be visible at this zoom
            bb = self.boxes[s - 1]
            m = self.lv[bb] == s
            sub, base = self.disp[bb], self.base[bb]
            c = sc[s] if s < len(sc) else 0
            if c:
                sub[m] = base[m] // 2 + PALETTE_BGR[c] // 2
            else:
                sub[m] = base[m]

    def update_region(self, region) -> None:
        """Labels changed inside an image (rows, cols) slice: resample that part of the display."""
        rect = self.view.display_rect(region)
        if rect[0].stop <= rect[0].start or rect[1].stop <= rect[1].start:
            return
        self.lv[rect] = self.state.labels[self.rows[rect[0]][:, None], self.cols[rect[1]][None, :]]
        self.base[rect] = self._with_boundaries(self.img[rect], self.lv[rect])
        self.boxes = list(ndimage.find_objects(self.lv))
        self.compose(rect)

    def sync(self) -> bool:
        """Apply the state's pending changes; True when anything changed."""
        segs, regions, everything = self.state.consume_changes()
        if everything:
            self.rebuild()
            return True
        for r in regions:
            self.update_region(r)
        if segs:
            self.update_segments(segs)
        return bool(segs or regions)


class PaintWindow(WindowLoop):
    """Segment window + colour window for one image.

    ``run()`` returns the state's outcome: ``Outcome.QUIT | NEXT | PREVIOUS | SAVE_NEXT``
    (:class:`~segdeck.annotate.state.Outcome`).
    """

    SEG = "segdeck paint"
    COL = "segdeck colours"
    ROW = 30
    COL_WIDTH = 240
    #: Key hints of the status bar, most important first: (action(s), label); the keys
    #: come from the keymap (:meth:`Keymap.hints`).
    HINTS = (
        ("fill", "fill"), ("unfill", "unfill"), (tuple(f"colour_{k}" for k in range(1, 10)), "colour"),
        ("save_next", "save+next"), ("undo", "undo"), ("quit", "quit"), ("next", "next"),
        ("previous", "prev"), ("toggle_fill_mode", "cont. fill"), ("cut", "cut"), ("end_cut", "end cut"),
        ("template", "template"), ("reset", "reset"), (("zoom_in", "zoom_out"), "zoom"), ("debug", "debug"),
    )

    def __init__(self, state: PaintState, image: np.ndarray, *, title: str = "", index: int = 1,
                 total: int = 1, max_window: tuple[int, int] = DEFAULT_MAX_WINDOW, gui: Gui | None = None,
                 frames_log=None, template=None, keep_open: bool = False, fit_view: dict | None = None):
        super().__init__(gui, frames_log, keep_open=keep_open)
        self.state = state
        self.image = image
        self.title, self.index, self.total = title, index, total
        self.view = View((image.shape[1], image.shape[0]), max_window)
        state.cut_width = max(1, math.ceil(1.0 / self.view.scale))
        self.display = PaintDisplay(image, state, self.view, fit_view)
        self.template = template
        self.windows = {self.SEG: self._seg_mouse, self.COL: self._col_mouse}
        n = state.n_colours
        self.col_frame = np.zeros((self.ROW * n + 2 * self.ROW, self.COL_WIDTH, 3), np.uint8)
        self.positions = {self.SEG: (0, 0), self.COL: place_next_to((self.view.dw, self.view.dh + STATUS_BAR),
                                                                    self.col_frame.shape[1::-1])}
        self.hints = state.keymap.hints("paint", self.HINTS)

    # -- events --------------------------------------------------------------
    def _after(self, changed: bool) -> bool:
        st = self.state
        if st.template_request:
            st.template_request = False
            self._template()
            changed = True
        if self.display.sync():
            changed = True
        if st.ui_dirty:
            st.ui_dirty = False
            self.mark(self.COL)
            changed = True
        if changed:
            self.mark(self.SEG)
        if st.outcome:
            self.outcome = st.outcome
        return changed

    def _template(self) -> None:
        from segdeck.annotate.template import template_paint

        st = self.state
        if self.template is None:
            st.message = "template painting needs --template FILE"
            return
        try:
            found = template_paint(st, self.image, self.template, PALETTE)
        except ValueError as exc:
            st.message = str(exc)
            return
        st.message = f"template: {len(found)} match(es) painted"

    def _seg_mouse(self, kind, button, u, v, ctrl) -> bool:
        if v >= self.view.dh and kind != "up":
            return False
        x, y = self.view.to_image(u, v)
        if kind in ("wheel-up", "wheel-down"):
            act = self.state.keymap.mouse_action("paint", kind)
            return self._view(act, (x, y))
        return self._after(self.state.mouse(kind, button, x, y, ctrl))

    def _col_mouse(self, kind, button, u, v, ctrl) -> bool:
        if kind != "down":
            return False
        gesture = f"ctrl+{button}" if ctrl else button
        act = self.state.keymap.mouse_action("colours", gesture) or self.state.keymap.mouse_action("colours", button)
        if act != "pick":
            return False
        k = v // self.ROW + 1
        return self._after(self.state.select_colour(k))

    def _view(self, act, pointer=None) -> bool:
        if not self.view.view_action(act, pointer):
            return False
        self.state.cut_width = max(1, math.ceil(1.0 / self.view.scale))
        self.display.rebuild()
        self.mark(self.SEG)
        return True

    def on_key(self, code: int) -> bool:
        act = self.state.keymap.key_action("paint", code)
        if act is None:
            return False
        if act.startswith(("zoom_", "pan_")):
            return self._view(act, self.state.pointer)
        return self._after(self.state.action(act))

    def on_windows_closed(self, names: list[str]) -> None:
        """A window closed with the window manager's X is the quit key: with unsaved
        painting the closed window comes back with the question in the status bar
        (:meth:`PaintState.window_closed`; closing again or ``q`` quits without saving,
        space saves); else the session ends (``Outcome.QUIT``)."""
        if self.state.window_closed():
            self.outcome = Outcome.QUIT
            return
        self.reopen(names)
        self._after(True)

    # -- drawing -------------------------------------------------------------
    def status_text(self) -> str:
        st = self.state
        mode = {"click": "click", "fill": "CONTINUOUS FILL", "unfill": "CONTINUOUS UNFILL"}[st.mode]
        parts = [f"{self.index}/{self.total} {self.title}", f"colour {st.colour}", mode]
        if st.cut_anchor is not None:
            parts.append(f"cut from {st.cut_anchor[0]},{st.cut_anchor[1]}")
        if st.debug:
            parts.append("debug")
        if self.view.zoom != 1.0:
            parts.append(f"zoom {self.view.zoom:.1f}x")
        if st.unsaved:
            parts.append("unsaved")
        if st.message:
            parts.append(st.message)
        return " | ".join(parts)

    def draw(self, name: str) -> np.ndarray:
        if name == self.SEG:
            put_status(self.display.bar, self.status_text(), self.hints)
            return self.display.frame
        f = self.col_frame
        f[:] = 30
        st = self.state
        for k in range(1, st.n_colours + 1):
            y0 = (k - 1) * self.ROW
            cv2.rectangle(f, (4, y0 + 3), (235, y0 + self.ROW - 3), tuple(int(c) for c in PALETTE_BGR[k]), -1)
            if k == st.colour:
                cv2.rectangle(f, (1, y0 + 1), (238, y0 + self.ROW - 1), (255, 255, 255), 2)
            cv2.putText(f, f"{k}  label {k}", (12, y0 + 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        mode = {"click": "mode: click", "fill": "mode: continuous fill", "unfill": "mode: continuous unfill"}[st.mode]
        y = st.n_colours * self.ROW
        cv2.putText(f, mode, (8, y + 20), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        cut = "cut: " + ("on" if st.cut_anchor is not None else "off")
        cv2.putText(f, cut, (8, y + 20 + self.ROW), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (200, 200, 200), 1, cv2.LINE_AA)
        return f
