"""``none`` describer: regions only, no text (segmentation without a vision-language model)."""

from __future__ import annotations

import threading
from collections.abc import Iterable, Iterator

from segdeck.core.describe.describers.base import Describer, Description, RegionRequest


class NoDescriber(Describer):
    """Yield a :class:`~.base.Description` with ``text=None`` and ``error=None`` per region."""

    name = "none"

    def __init__(self, options=None):
        super().__init__()

    def _describe_one(self, request: RegionRequest, cancel) -> str:  # pragma: no cover - unused
        raise NotImplementedError

    def describe(self, requests: Iterable[RegionRequest], cancel: threading.Event | None = None
                 ) -> Iterator[Description]:
        """One empty description per request, in request order; stops at a cancel."""
        if not self._opened:
            raise RuntimeError("NoDescriber.describe() before open()")
        for req in requests:
            if cancel is not None and cancel.is_set():
                return
            yield Description(req.index, None, None, 0.0)
