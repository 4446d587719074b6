"""The seam between a SAM engine and its prompt decoder.

A decoder turns the sparse / dense prompt embeddings of ``B`` prompts on the current
image into the low-resolution logits of *every* mask token and their predicted IoUs,
before the family picks its output masks (:meth:`SamEngine._select
<segdeck.core.sam.engine.SamEngine._select>`):

* :class:`OfficialDecoder`: the family's own mask decoder module (``predict_masks``),
  the reference;
* :class:`FastDecoder`: :mod:`.fast`'s re-arranged transformer and upscaling (same
  values up to float rounding), on CPU through TorchScript traces of the decode.

Which one an engine uses is :attr:`EngineOptions.decoder
<segdeck.core.sam.options.EngineOptions.decoder>`. The per-family arithmetic lives in
the family's engine class (``_fast_decode`` / ``_official_decode``); a decoder owns only
how it is called.
"""

from __future__ import annotations

from typing import Protocol


class Decoder(Protocol):
    """Prompt decoding of one engine.

    ``decode(state, sparse, dense) -> (masks, iou)``: ``state`` the engine's current
    image state, ``sparse`` (B, T, C) prompt tokens, ``dense`` None (no mask input) or
    (B, C, h, w) dense embeddings; ``masks`` (B, M, 256, 256) logits of every mask token
    and ``iou`` (B, M') predicted IoUs. ``warm_up(state)`` prepares for the first click
    while the user waits for the encoder anyway.
    """

    name: str

    def decode(self, state, sparse, dense): ...

    def warm_up(self, state) -> None: ...


class OfficialDecoder:
    """The family's official mask decoder (``engine._official_decode``)."""

    name = "official"

    def __init__(self, engine):
        self.engine = engine

    def decode(self, state, sparse, dense):
        return self.engine._official_decode(state, sparse, dense)

    def warm_up(self, state) -> None:
        return None


class FastDecoder:
    """:mod:`.fast`'s decoder (``engine._fast_decode``), traced per prompt shape on CPU.

    Parameters
    ----------
    engine : SamEngine
        Provides ``_fast_decode(sparse, dense, tensors)`` and ``ImageTensors`` (the
        :class:`~.fast.TensorGroup` of the per-image tensors it reads).
    jit : bool
        On CPU, replay the decode through :class:`~.fast.TraceCache` (a trace takes
        tensors only, so the image's named tensors travel flattened).

    Attributes
    ----------
    traces : TraceCache or None
        None: eager.
    """

    name = "fast"

    def __init__(self, engine, jit: bool = True):
        from segdeck.core.sam.fast import TraceCache

        self.engine = engine
        self.traces = TraceCache(self._decode_flat) if jit and engine.device == "cpu" else None
        self._warmed = False

    def _decode_flat(self, sparse, dense, *flat):
        """The decode as a function of tensors only (what is traced)."""
        eng = self.engine
        return eng._fast_decode(sparse, dense, eng.ImageTensors.from_flat(flat))

    def decode(self, state, sparse, dense):
        if self.traces is None:
            return self.engine._fast_decode(sparse, dense, state.tensors)
        return self.traces(sparse, dense, *state.tensors.flat())

    def warm_up(self, state) -> None:
        """Record (and let TorchScript optimise) the one-point trace on the first image
        (a fraction of a second, once per engine), so the first click runs at full speed."""
        if self.traces is None or self._warmed:
            return
        self._warmed = True
        import numpy as np
        import torch

        with torch.inference_mode():
            sparse, dense = self.engine._embed_prompts(state, np.zeros((1, 2), np.float32), np.ones(1, np.int64), None, None)
            for _ in range(3):  # the trace, then the executor's profiling and optimised runs
                self.decode(state, sparse, dense)


def make_decoder(engine, options) -> Decoder:
    """The decoder ``options.decoder`` names, for ``engine``."""
    if options.decoder == "official":
        return OfficialDecoder(engine)
    return FastDecoder(engine, jit=options.jit)
