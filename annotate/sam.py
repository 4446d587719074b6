"""SAM prompting session: box and point prompts, the mask follows every prompt, hand it to painting.

The engine is :func:`segdeck.core.sam.open_engine` (any object with ``set_image(image)``
and ``predict(points=, labels=, box=, multimask=) -> result with .masks, .scores`` works,
which is how the tests drive it). The image is prompted at a working resolution (longest
side ``max_side``, SAM resizes to 1024 anyway); :meth:`SamState.full_mask` scales the
mask back up. Every prompt change predicts at once (a prompt costs ~20 ms once the image
is embedded); while the embedding is still being computed in the background the mask
follows as soon as it is ready (:meth:`SamState.refresh`). Kirillov et al., "Segment
Anything", ICCV 2023 (arXiv:2304.02643).
"""

from __future__ import annotations

import threading
from typing import Protocol

import cv2
import numpy as np

from segdeck.annotate.gui import (
    STATUS_BAR,
    ImageSession,
    put_status,
)
from segdeck.annotate.keymap import Keymap
from segdeck.annotate.state import MaskState


class MaskResult(Protocol):
    """What a SAM engine returns: ``masks`` (M, H, W) bool, ``scores`` (M,) float
    (:class:`segdeck.core.sam.engine.PredictResult`, ``GenerateResult``)."""

    masks: np.ndarray
    scores: np.ndarray


class SamEngine(Protocol):
    """What the annotation windows use of :func:`segdeck.core.sam.open_engine`'s engine.

    ``set_image`` and ``predict`` serve the ``sam`` method's prompts, ``generate`` the
    ``sam-auto`` method's automatic masks; the tests drive the windows with small fakes.
    """

    def set_image(self, image: np.ndarray) -> None:
        """Embed ``image`` ((H, W, 3) uint8 RGB) for the next predictions (cached per image)."""
        ...

    def predict(self, points=None, labels=None, box=None, multimask: bool = False) -> MaskResult:
        """Masks for points (N, 2) (x, y) with labels (N,) 1 / 0 and a box XYXY, at the image's size."""
        ...

    def generate(self, image: np.ndarray, params=None) -> MaskResult:
        """All automatic masks of ``image`` (only ``masks`` is used)."""
        ...


class SamState(MaskState):
    """Prompts in, mask out.

    Parameters
    ----------
    image : ndarray (h, w, 3) uint8 RGB
        The working image; prompts are its pixels, points (x, y), box XYXY.
    engine : SamEngine
        ``set_image`` is called before every prediction (engines cache the embedding per image).
    live : bool
        Predict on every prompt change (default); False waits for the ``predict`` action.

    Attributes
    ----------
    prompts : list of ("point", (x, y, label)) or ("box", (x0, y0, x1, y1))
        In the order given; :meth:`undo` removes the last one.
    mask : ndarray (h, w) bool or None
    stale : bool
        The prompts changed since ``mask`` was predicted (the engine was busy, e.g.
        embedding the image); :meth:`refresh` catches up.
    """

    session = "sam"
    NOTHING_TO_FINISH = "nothing to finish: predict a mask first"

    def __init__(self, image: np.ndarray, engine: SamEngine, keymap: Keymap | None = None, *,
                 engine_lock: threading.Lock | None = None, live: bool = True):
        super().__init__(image, keymap)
        self.engine = engine
        self.engine_lock = engine_lock or threading.Lock()
        self.live = live
        self.box_preview: tuple[int, int, int, int] | None = None
        self.predictions = 0
        self.reset()

    def reset(self) -> bool:
        self.prompts: list[tuple[str, tuple]] = []
        self.mask: np.ndarray | None = None
        self.score: float | None = None
        self.stale = False
        self.message = ""
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
            return self._prompts_changed()
        return self.action(action)

    def _prompts_changed(self) -> bool:
        """After a prompt was added or removed: no prompt = no mask, else predict now
        when live (or as soon as the engine is free)."""
        if not self.prompts:
            self.mask, self.score, self.stale = None, None, False
            return True
        self.stale = True
        if self.live:
            self.refresh(block=False)
        return True

    def refresh(self, block: bool = False) -> bool:
        """Predict for the current prompts if they changed since the last mask.

        Parameters
        ----------
        block : bool
            Wait for the engine; False returns at once while it is busy (another
            thread computing an embedding), leaving ``stale`` set for the next try.

        Returns
        -------
        bool
            True when a new mask was predicted.
        """
        if not self.stale or not self.prompts:
            return False
        if not self.engine_lock.acquire(blocking=block):
            self.message = "computing the image embedding ... the mask follows"
            return False
        try:
            self._predict_locked()
        finally:
            self.engine_lock.release()
        return True

    def on_drag(self, action: str, phase: str, x: int, y: int) -> bool:
        if action != "box":
            return False
        b = self.drag_box(phase, x, y)
        if b is None:
            return False
        if phase == "move":
            self.box_preview = b
            return True
        self.box_preview = None
        if b[2] - b[0] < 2 or b[3] - b[1] < 2:
            self.message = "box too small"
            return True
        self.prompts = [p for p in self.prompts if p[0] != "box"]
        self.prompts.append(("box", b))
        return self._prompts_changed()

    def undo(self) -> bool:
        if not self.prompts:
            self.message = "no prompt to remove"
            return True
        self.prompts.pop()
        return self._prompts_changed()

    def predict(self) -> bool:
        """Run the engine on the current prompts now, waiting for the image embedding if needed."""
        if not self.prompts:
            self.message = "add a point or a box first"
            return True
        self.stale = True
        return self.refresh(block=True)

    def _predict_locked(self) -> None:
        """One prediction; the caller holds ``engine_lock``."""
        pts, lab, box = self.points, self.labels, self.box
        self.engine.set_image(self.image)
        res = self.engine.predict(points=pts if len(pts) else None, labels=lab if len(lab) else None,
                                  box=box, multimask=False)
        self.stale = False
        masks = np.asarray(res.masks)
        best = int(np.argmax(res.scores)) if len(res.scores) else 0
        self.mask = masks[best].astype(bool)
        self.score = float(res.scores[best]) if len(res.scores) else None
        self.predictions += 1
        self.message = f"mask {int(self.mask.sum())} px" + (f", score {self.score:.2f}" if self.score is not None else "")

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
        return super().action(name)

    def settle(self) -> None:
        """Finishing with prompts newer than the mask predicts first (waiting for the engine)."""
        if self.prompts and (self.stale or self.mask is None):
            self.predict()


class SamWindow(ImageSession):
    """One window: the image, the prompts and the predicted mask."""

    WIN = "segdeck sam"

    SESSION = "sam"
    #: Key hints of the status bar (most important first); keys from the keymap.
    HINTS = (
        ("positive", "+point"), ("negative", "-point"), ("box", "box"), ("undo", "undo"), ("finish", "finish"),
        ("predict", "predict"), ("reset", "reset"), ("quit", "quit"), (("zoom_in", "zoom_out"), "zoom"),
    )

    def __init__(self, state: SamState, **kwargs):
        super().__init__(state, **kwargs)
        self.windows = {self.WIN: self._mouse}
        self.positions = {self.WIN: (0, 0)}

    def busy(self) -> bool:
        """Stay responsive while a mask is pending (the engine was busy embedding)."""
        return self.state.stale or super().busy()

    def idle(self) -> None:
        """Show the mask of prompts given while the engine was busy, once it is free."""
        if self.state.stale and self.state.refresh(block=False):
            self.mark()

    def before_action(self, act: str) -> None:
        """Say "predicting" on screen before an action that waits for the engine."""
        if self.state.prompts and (act == "predict" or (act == "finish" and self.state.stale)):
            self.state.message = "predicting ... (the first time waits for the image embedding)"
            self.mark()
            self.draw_dirty()
            self.gui.pump(1)

    def draw(self, name: str) -> np.ndarray:
        st, v = self.state, self.view
        frame = np.zeros((v.dh + STATUS_BAR, v.dw, 3), np.uint8)
        disp = frame[: v.dh]
        disp[:] = self.base_view()
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
        put_status(frame[v.dh :], f"{self.index}/{self.total} {self.title} | {len(st.prompts)} prompt(s) | {st.message}",
                   self.hints)
        return frame
