"""The threshold curve of a job's form, computed on a sample in a thread worker.

The worker posts :class:`CurveProgress` (one status line) while it runs and one
:class:`CurveReady` at the end; the screen shows the progress and opens the picker.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path

from textual import work
from textual.message import Message

from segdeck.tui import hooks
from segdeck.tui.controllers.base import Controller


@dataclass
class CurveProgress(Message):
    """Progress of the threshold curve's sample (one line for the status bar)."""

    text: str


@dataclass
class CurveReady(Message):
    """A threshold curve computed in the background (or the one-line reason it failed).

    ``curve`` and ``error`` both None: the user stopped it.
    """

    job: str
    curve: object | None
    error: str | None


class _CurveCancelled(Exception):
    """Raised from the progress callback when the user stops the curve."""


class CurveController(Controller):
    """Computes one threshold curve at a time; :meth:`stop` ends it early."""

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        #: True from :meth:`start` until its :class:`CurveReady` is handled.
        self.busy = False
        self._cancel = threading.Event()

    def start(self, job: str, function: str, input_path: Path, params) -> None:
        """Compute ``function(input_path, params, emit=…)`` in a thread worker.

        Parameters
        ----------
        job : str
            The job's name (given back in :class:`CurveReady`).
        function : str
            ``"module:function"`` computing the curve (the job's ``tui_curve``).
        input_path : Path
            The folder (or file) the sample is drawn from.
        params : JobParams
            The form's validated parameters (a copy: the worker reads them).
        """
        self.busy = True
        self._cancel.clear()
        self._compute(job, function, input_path, params)

    def stop(self) -> bool:
        """Ask the running computation to stop; False when none runs."""
        if not self.busy:
            return False
        self._cancel.set()
        return True

    @work(thread=True, exclusive=True, group="curve")
    def _compute(self, job: str, function: str, input_path: Path, params) -> None:
        from segdeck.core.errors import SegdeckError
        from segdeck.core.jobs.events import Progress

        cancel = self._cancel
        last = [-1]

        def emit(event) -> None:
            if cancel.is_set():
                raise _CurveCancelled
            if isinstance(event, Progress) and event.total:
                pct = int(100 * event.done / event.total)
                if pct != last[0]:
                    last[0] = pct
                    self.post_message(CurveProgress(f"{event.what}: {event.done:g}/{event.total:g} (Esc stops)"))

        try:
            fn = hooks.load(function)
            curve = fn(input_path, params, emit=emit)
        except _CurveCancelled:
            self.post_message(CurveReady(job, None, None))
        except (ValueError, SegdeckError) as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            self.post_message(CurveReady(job, None, first))
        except Exception as exc:  # noqa: BLE001 - one line, never a traceback in the UI
            first = (str(exc).strip().splitlines() or [""])[0]
            self.post_message(CurveReady(job, None, f"{type(exc).__name__}: {first}".rstrip(": ")))
        else:
            self.post_message(CurveReady(job, curve, None))

    def on_curve_ready(self, message: CurveReady) -> None:
        self.busy = False  # then the message bubbles to the screen


__all__ = ["CurveController", "CurveProgress", "CurveReady"]
