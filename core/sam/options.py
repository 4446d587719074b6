"""How an engine decodes prompts: one options object, given to
:func:`segdeck.core.sam.open_engine` (import-light: stdlib only).

Nothing below :func:`~segdeck.core.sam.open_engine` reads the environment; the two
switches earlier versions read at every call, ``SEGDECK_JIT`` and ``SEGDECK_ONEDNN``
(``0`` / ``false`` / ``no`` / ``off`` turn them off), are still honoured, parsed once
by :meth:`EngineOptions.from_env` when no options are given.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

_OFF = ("0", "false", "no", "off")


@dataclass(frozen=True)
class EngineOptions:
    """Prompt-decoding choices of a :class:`~segdeck.core.sam.engine.SamEngine`.

    None of them changes the masks beyond float rounding (the tests compare every
    combination with the official predictors); they trade start-up work for click
    latency and let a user rule out the paths that use private torch operations.

    Attributes
    ----------
    decoder : {"fast", "official"}
        ``"fast"``: :mod:`segdeck.core.sam.fast` (prompt-independent layer-0 tensors
        once per image, projections folded onto the prompt tokens); ``"official"``: the
        family's own mask decoder module (``predict_masks``), the reference.
    jit : bool
        Fast decoder on CPU only: replay TorchScript traces of the decoder, one per
        prompt shape (:class:`~segdeck.core.sam.fast.TraceCache`).
    onednn : bool
        Fast decoder on CPU only: allow oneDNN's packed products through the private
        ``torch.ops.mkldnn._linear_pointwise`` (probed once; ``torch.matmul`` when the
        op is missing or disagrees with ``torch.matmul``).
    """

    decoder: Literal["fast", "official"] = "fast"
    jit: bool = True
    onednn: bool = True

    def __post_init__(self) -> None:
        if self.decoder not in ("fast", "official"):
            raise ValueError(f"decoder must be 'fast' or 'official', got {self.decoder!r}")

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> EngineOptions:
        """Defaults, with ``SEGDECK_JIT`` / ``SEGDECK_ONEDNN`` set to an off value
        (``0``, ``false``, ``no``, ``off``) turning ``jit`` / ``onednn`` off."""
        env = os.environ if environ is None else environ

        def on(name: str) -> bool:
            return env.get(name, "1").strip().lower() not in _OFF

        return cls(jit=on("SEGDECK_JIT"), onednn=on("SEGDECK_ONEDNN"))
