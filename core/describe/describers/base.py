"""The describer interface: one region (image + mask) in, one text out.

A :class:`Describer` is opened once per job (:meth:`Describer.open`: reach the server,
load the model), describes any number of :class:`RegionRequest` (yielding
:class:`Description` objects as they complete, several in flight when the describer
allows it) and is closed after the job (:meth:`Describer.close`: free the model).

Failures come in two kinds:

- one region could not be described (a timeout, a malformed answer, a refusal, an
  out-of-memory on a large region): its :class:`Description` carries ``error`` and the
  other regions go on; a re-run of the job redoes only these;
- the describer cannot work at all (wrong API key, unreachable server, DAM on a
  machine without CUDA, remote code not trusted, missing extra): :class:`DescriberFatal`,
  one line, raised by ``open`` or from the ``describe`` iterator, and the job stops.

Subclasses implement :meth:`Describer._describe_one` (one region -> text, raising
:class:`RegionFailed` for a region's error) and set :attr:`Describer.concurrency`; the
base class runs that many requests at once, each on its own (daemon) thread.
"""

from __future__ import annotations

import queue
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import ClassVar, Literal

import numpy as np

from segdeck.core.errors import RunStop

#: Grey level of the neutral background around a masked crop (RGB = (128, 128, 128)).
NEUTRAL_GREY = 128


@dataclass(frozen=True)
class RegionRequest:
    """One region to describe.

    Attributes
    ----------
    index : int
        Region number, ``D<index>`` in the job's outputs (1-based by convention).
    image : numpy.ndarray
        The whole image, (H, W, 3) uint8 RGB.
    mask : numpy.ndarray
        The region, (H, W) bool, same H and W as ``image``.
    box : tuple of int
        The region's box, XYXY pixels ``(x1, y1, x2, y2)``, last pixel exclusive
        (``x2 - x1`` is the width), inside the image.
    """

    index: int
    image: np.ndarray
    mask: np.ndarray
    box: tuple[int, int, int, int]


@dataclass(frozen=True)
class Description:
    """The result for one region.

    Attributes
    ----------
    index : int
        The request's ``index``.
    text : str or None
        The description; None when the region failed or the describer is ``none``.
    error : str or None
        One line saying why the region has no description (None on success and for
        ``none``). Never contains an API key.
    seconds : float
        Wall time spent on this region (retries included), seconds.
    """

    index: int
    text: str | None
    error: str | None
    seconds: float


class DescriberFatal(RunStop):
    """The describer cannot work at all (wrong key, unreachable server, no CUDA for DAM,
    remote code not trusted, missing extra). One line; the job stops before (or at)
    the next region."""


class RegionFailed(Exception):
    """Raised by :meth:`Describer._describe_one` when one region cannot be described;
    the message becomes that region's :attr:`Description.error`."""


def check_request(request: RegionRequest) -> None:
    """Validate a request's shapes and box.

    Raises
    ------
    ValueError
        Image not (H, W, 3) uint8, mask not (H, W) bool of the same size, or a box that
        is empty or leaves the image (the message names the value).
    """
    image, mask = request.image, request.mask
    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"region D{request.index}: image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
    if mask.shape != image.shape[:2] or mask.dtype != bool:
        raise ValueError(f"region D{request.index}: mask must be (H, W) bool of the image's size, got {mask.shape} {mask.dtype}")
    x1, y1, x2, y2 = request.box
    h, w = mask.shape
    if not (0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h):
        raise ValueError(f"region D{request.index}: box {request.box} is empty or outside the {w}x{h} image")


def region_image(
    request: RegionRequest,
    view: Literal["crop", "outline"] = "crop",
    *,
    background: int = NEUTRAL_GREY,
    pad: int = 0,
    max_side: int = 0,
    min_side: int = 0,
    outline_rgb: tuple[int, int, int] = (255, 0, 0),
) -> np.ndarray:
    """The picture of a region that a vision-language model is shown.

    Parameters
    ----------
    request : RegionRequest
    view : {"crop", "outline"}
        ``"crop"``: the region's box (grown by ``pad`` pixels on each side, clipped to the
        image) with every pixel outside the mask set to ``background``. ``"outline"``:
        the whole image with the mask's outer contour drawn in ``outline_rgb``
        (thickness ``max(2, round(max(H, W) / 250))`` pixels).
    background : int
        Grey level 0..255 of the neutral background of ``"crop"``.
    pad : int
        Margin in pixels around the box in ``"crop"`` (background-filled where outside
        the mask).
    max_side : int
        When > 0, the picture is shrunk (area interpolation, aspect kept) so that its
        longer side is at most this many pixels.
    min_side : int
        When > 0, a smaller picture is enlarged (bicubic, aspect kept) so that its
        shorter side is at least this many pixels (some vision encoders refuse pictures
        under 28 pixels a side), as far as ``max_side`` allows.
    outline_rgb : tuple of int
        Outline colour (RGB).

    Returns
    -------
    numpy.ndarray
        (h, w, 3) uint8 RGB.

    Raises
    ------
    ValueError
        Bad request shapes or box (:func:`check_request`), unknown ``view``.
    """
    import cv2

    check_request(request)
    image, mask = request.image, request.mask
    h, w = mask.shape
    if view == "crop":
        x1, y1, x2, y2 = request.box
        x1, y1 = max(0, x1 - pad), max(0, y1 - pad)
        x2, y2 = min(w, x2 + pad), min(h, y2 + pad)
        out = np.full((y2 - y1, x2 - x1, 3), background, np.uint8)
        sub = mask[y1:y2, x1:x2]
        out[sub] = image[y1:y2, x1:x2][sub]
    elif view == "outline":
        out = np.ascontiguousarray(image).copy()
        contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_NONE)
        thickness = max(2, round(max(h, w) / 250))
        cv2.drawContours(out, contours, -1, tuple(int(c) for c in outline_rgb), thickness)
    else:
        raise ValueError(f"unknown region view {view!r}; expected 'crop' or 'outline'")
    short, side = min(out.shape[:2]), max(out.shape[:2])
    scale = 1.0
    if min_side > 0 and short < min_side:
        scale = min_side / short
    if max_side > 0 and side * scale > max_side:
        scale = max_side / side
    if scale != 1.0:
        size = (max(1, round(out.shape[1] * scale)), max(1, round(out.shape[0] * scale)))
        out = cv2.resize(out, size, interpolation=cv2.INTER_AREA if scale < 1 else cv2.INTER_CUBIC)
    return out


class _Stop:
    """The caller's cancel event or the iterator's own end, whichever comes first."""

    def __init__(self, cancel: threading.Event | None):
        self.cancel = cancel
        self.local = threading.Event()

    def is_set(self) -> bool:
        return self.local.is_set() or (self.cancel is not None and self.cancel.is_set())

    def wait(self, seconds: float) -> bool:
        """Sleep up to ``seconds``; True as soon as a stop is requested."""
        end = time.monotonic() + seconds
        while not self.is_set():
            left = end - time.monotonic()
            if left <= 0:
                return False
            self.local.wait(min(left, 0.05))
        return True


class Describer(ABC):
    """Base class of the describers (``none``, ``openai``, ``dam``).

    Use as ``with make_describer(...) as d: for desc in d.describe(requests): ...`` or
    call :meth:`open` / :meth:`close` yourself. Instances are not shared between
    threads; :meth:`describe` itself runs up to :attr:`concurrency` regions at once.
    """

    #: Registry name (``"openai"``).
    name: ClassVar[str]
    #: Regions in flight at once in :meth:`describe`.
    concurrency: int = 1

    def __init__(self) -> None:
        self._opened = False

    # -- lifecycle -----------------------------------------------------------------
    def open(self) -> None:
        """Reach the server / load the model once.

        Raises
        ------
        DescriberFatal
            The describer cannot work (one line saying why and what to do).
        """
        self._opened = True

    def close(self) -> None:
        """Release what :meth:`open` took (connections, GPU memory). Idempotent."""
        self._opened = False

    def __enter__(self) -> Describer:
        self.open()
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- work ----------------------------------------------------------------------
    @abstractmethod
    def _describe_one(self, request: RegionRequest, cancel: _Stop) -> str:
        """Describe one region (called on a worker thread). ``cancel.is_set()`` /
        ``cancel.wait(seconds)`` tell it to give up (a cancel, or the iterator ended).

        Raises
        ------
        RegionFailed
            This region has no description (the message is its error).
        DescriberFatal
            Nothing more can be described.
        """

    def describe(
        self, requests: Iterable[RegionRequest], cancel: threading.Event | None = None
    ) -> Iterator[Description]:
        """Describe regions, yielding each result as soon as it completes.

        Parameters
        ----------
        requests : iterable of RegionRequest
            Consumed lazily: at most :attr:`concurrency` requests are taken ahead of the
            results.
        cancel : threading.Event, optional
            When set, no new region is started, regions waiting in a retry back-off
            give up and the iterator ends at once: no further result is yielded, also
            not from regions in flight (their worker threads are daemons that end with
            their request).

        Yields
        ------
        Description
            One per request, in completion order (not request order; match by
            ``index``). A region that fails has ``error`` set; unexpected exceptions
            of one region become its error too.

        Raises
        ------
        DescriberFatal
            Nothing more can be described (wrong key mid-run, server gone); regions not
            yet started are dropped.
        RuntimeError
            :meth:`open` was not called.
        """
        if not self._opened:
            raise RuntimeError(f"{type(self).__name__}.describe() before open()")
        stop = _Stop(cancel)
        it = iter(requests)
        n = max(1, int(self.concurrency))
        done: queue.SimpleQueue = queue.SimpleQueue()
        in_flight = 0
        exhausted = False

        def work(req: RegionRequest) -> None:
            try:
                done.put(self._run_one(req, stop))
            except BaseException as exc:  # DescriberFatal, handed to the iterating thread
                done.put(exc)

        try:
            while True:
                while not exhausted and not stop.is_set() and in_flight < n:
                    try:
                        req = next(it)
                    except StopIteration:
                        exhausted = True
                        break
                    # daemon threads: a request stuck until its timeout never holds up the
                    # end of the process after a cancel
                    threading.Thread(target=work, args=(req,), daemon=True,
                                     name=f"describe-{self.name}-{req.index}").start()
                    in_flight += 1
                if not in_flight:
                    return
                try:
                    result = done.get(timeout=0.05)
                except queue.Empty:
                    if stop.is_set():
                        return
                    continue
                in_flight -= 1
                if isinstance(result, BaseException):
                    raise result
                if stop.is_set():  # cancelled: nothing more is yielded
                    return
                yield result
        finally:
            # the iterator ends (done, cancelled, fatal, or dropped by its caller): workers
            # still sleeping in a back-off give up
            stop.local.set()

    def _run_one(self, request: RegionRequest, cancel: _Stop) -> Description:
        start = time.perf_counter()
        if cancel.is_set():
            return Description(request.index, None, "cancelled", 0.0)
        try:
            check_request(request)
            text = self._describe_one(request, cancel)
        except DescriberFatal:
            raise
        except RegionFailed as exc:
            return Description(request.index, None, self._redact(str(exc)), time.perf_counter() - start)
        except Exception as exc:  # one region's surprise must not end the job
            msg = self._redact(f"{type(exc).__name__}: {exc}".splitlines()[0][:300])
            return Description(request.index, None, msg, time.perf_counter() - start)
        return Description(request.index, text, None, time.perf_counter() - start)

    def _redact(self, text: str) -> str:
        """Hook: remove secrets from a message (the OpenAI describer removes its key)."""
        return text
