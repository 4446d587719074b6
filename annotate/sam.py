"""SAM prompting session: box and point prompts, predict on request, hand the mask to painting.

The engine is :func:`segdeck.core.sam.open_engine` (any object with ``set_image(image)``
and ``predict(points=, labels=, box=, multimask=) -> result with .masks, .scores`` works,
which is how the tests drive it). The image is prompted at a working resolution (longest
side ``max_side``, SAM resizes to 1024 anyway); :meth:`SamState.full_mask` scales the
mask back up. Kirillov et al., "Segment Anything", ICCV 2023 (arXiv:2304.02643).
"""

from __future__ import annotations

import threading

import cv2
import numpy as np

from segdeck.annotate.gui import (
    STATUS_BAR,
    ImageSession,
    put_status,
)
from segdeck.annotate.keymap import Keymap
from segdeck.annotate.state import GestureState


class SamState(GestureState):
    """Prompts in, mask out.

    Parameters
    ----------
    image : ndarray (h, w, 3) uint8 RGB
        The working image; prompts are its pixels, points (x, y), box XYXY.
    engine : object with ``set_image`` and ``predict``
        ``set_image`` is called lazily on the first prediction (once per image).

    Attributes
    ----------
    prompts : list of ("point", (x, y, label)) or ("box", (x0, y0, x1, y1))
        In the order given; :meth:`undo` removes the last one.
    mask : ndarray (h, w) bool or None
    """

    session = "sam"

    def __init__(self, image: np.ndarray, engine, keymap: Keymap | None = None, *,
                 engine_lock: threading.Lock | None = None):
        super().__init__(keymap)
        self.image = np.ascontiguousarray(image)
        self.engine = engine
        self.engine_lock = engine_lock or threading.Lock()
        self.outcome: str | None = None
        self._box_start: tuple[int, int] | None = None
        self.box_preview: tuple[int, int, int, int] | None = None
        self.predictions = 0
        self.reset()

    def reset(self) -> bool:
        self.prompts: list[tuple[str, tuple]] = []
        self.mask: np.ndarray | None = None
        self.score: float | None = None
        self.message = "left/right click points, middle-drag a box, space predicts"
        return True

    # -- prompts -----------------------------------------------------------------------
    @property
    def points(self) -> np.ndarray:
        pts = [p[1][:2] for p in self.prompts if p[0] == "point"]
        return np.array(pts, np.float32).reshape(-1, 2)

    @property
    def labels(self) -> np.ndarray:
        return np.array([p[1][2] for p in self.prompts if p[0] == "point"], np.int32)

    @property
    def box(self) -> np.ndarray | None:
        boxes = [p[1] for p in self.prompts if p[0] == "box"]
        return np.array(boxes[-1], np.float32) if boxes else None

    def on_press(self, action: str, x: int, y: int) -> bool:
        if action in ("positive", "negative"):
            self.prompts.append(("point", (x, y, 1 if action == "positive" else 0)))
            return True
        return self.action(action)

    def on_drag(self, action: str, phase: str, x: int, y: int) -> bool:
        if action != "box":
            return False
        if phase == "start":
            self._box_start = (x, y)
            return False
        if self._box_start is None:
            return False
        x0, y0 = self._box_start
        b = (min(x0, x), min(y0, y), max(x0, x), max(y0, y))
        if phase == "move":
            self.box_preview = b
            return True
        self._box_start = None
        self.box_preview = None
        if b[2] - b[0] < 2 or b[3] - b[1] < 2:
            self.message = "box too small"
            return True
        self.prompts = [p for p in self.prompts if p[0] != "box"]
        self.prompts.append(("box", b))
        return True

    def undo(self) -> bool:
        if not self.prompts:
            self.message = "no prompt to remove"
            return True
        self.prompts.pop()
        return True

    def predict(self) -> bool:
        """Run the engine on the current prompts (embedding computed on first use)."""
        if not self.prompts:
            self.message = "add a point or a box first"
            return True
        pts, lab, box = self.points, self.labels, self.box
        with self.engine_lock:
            self.engine.set_image(self.image)
            res = self.engine.predict(points=pts if len(pts) else None, labels=lab if len(lab) else None,
                                      box=box, multimask=False)
        masks = np.asarray(res.masks)
        best = int(np.argmax(res.scores)) if len(res.scores) else 0
        self.mask = masks[best].astype(bool)
        self.score = float(res.scores[best]) if len(res.scores) else None
        self.predictions += 1
        self.message = f"mask {int(self.mask.sum())} px" + (f", score {self.score:.2f}" if self.score is not None else "")
        return True

    def action(self, name: str | None) -> bool:
        if name in ("positive", "negative"):  # bound to a key: a point at the pointer
            if self.pointer is None:
                self.message = "move the pointer over the image first"
                return True
            return self.on_press(name, *self.pointer)
        if name == "predict":
            return self.predict()
        if name == "undo":
            return self.undo()
        if name == "reset":
            return self.reset()
        if name == "finish":
            if self.mask is None and self.prompts:
                self.predict()
            if self.mask is None or not self.mask.any():
                self.message = "nothing to finish: predict a mask first"
                return True
            self.outcome = "finish"
            return True
        if name == "quit":
            self.outcome = "quit"
            return True
        return False

    def full_mask(self, size: tuple[int, int]) -> np.ndarray:
        """The mask at ``size`` (W, H), nearest-neighbour scaled; bool (H, W)."""
        if self.mask is None:
            return np.zeros((size[1], size[0]), bool)
        return cv2.resize(self.mask.astype(np.uint8), size, interpolation=cv2.INTER_NEAREST).astype(bool)


class SamWindow(ImageSession):
    """One window: the image, the prompts and the predicted mask."""

    WIN = "segdeck sam"

    SESSION = "sam"

    def __init__(self, state: SamState, **kwargs):
        super().__init__(state, **kwargs)
        self.windows = {self.WIN: self._mouse}
        self.positions = {self.WIN: (0, 0)}
        self.bgr = cv2.cvtColor(state.image, cv2.COLOR_RGB2BGR)

    def on_key(self, code: int) -> bool:
        act = self.state.keymap.key_action("sam", code)
        if act is None:
            return False
        if act.startswith(("zoom_", "pan_")):
            changed = self.view.view_action(act, self.state.pointer)
        else:
            if act in ("predict", "finish") and self.state.prompts:
                self.state.message = "predicting ... (the first time waits for the image embedding)"
                self.mark()
                self.draw_dirty()
                self.gui.pump(1)
            changed = self.state.action(act)
        if self.state.outcome:
            self.outcome = self.state.outcome
        if changed:
            self.mark()
        return changed

    def draw(self, name: str) -> np.ndarray:
        st, v = self.state, self.view
        if self._img_version != v.version:
            self._img = v.image_view(self.bgr)
            self._rows, self._cols = v.sample_index()
            self._img_version = v.version
        frame = np.zeros((v.dh + STATUS_BAR, v.dw, 3), np.uint8)
        disp = frame[: v.dh]
        disp[:] = self._img
        if st.mask is not None:
            m = st.mask[self._rows[:, None], self._cols[None, :]]
            disp[m] = disp[m] // 2 + np.array((0, 110, 0), np.uint8)
        for kind, val in st.prompts:
            if kind == "point":
                col = (0, 220, 0) if val[2] == 1 else (0, 0, 230)
                cv2.circle(disp, v.to_display(val[0], val[1]), 5, col, -1)
                cv2.circle(disp, v.to_display(val[0], val[1]), 5, (255, 255, 255), 1)
            else:
                cv2.rectangle(disp, v.to_display(val[0], val[1]), v.to_display(val[2], val[3]), (255, 180, 0), 2)
        if st.box_preview is not None:
            b = st.box_preview
            cv2.rectangle(disp, v.to_display(b[0], b[1]), v.to_display(b[2], b[3]), (255, 255, 255), 1)
        put_status(frame[v.dh :], f"{self.index}/{self.total} {self.title} | {len(st.prompts)} prompt(s) | {st.message}")
        return frame
