"""SAM 2.1 and SAM-HQ behind one interface (:mod:`.engine`), import-light.

Families are registered in :mod:`.families`; decoding choices are an
:class:`~.options.EngineOptions`; ``open_engine(name, checkpoint=FILE)`` loads fine-tuned
weights of a registered family and size.

>>> from segdeck.core.sam import open_engine          # doctest: +SKIP
>>> eng = open_engine("sam2.1-tiny")                   # doctest: +SKIP
>>> eng.set_image(rgb)                                 # doctest: +SKIP
>>> res = eng.predict(points=[[120, 80]], labels=[1])  # doctest: +SKIP
"""

from segdeck.core.sam.engine import (
    GenerateResult,
    MaskRecord,
    PredictResult,
    SamEngine,
    checkpoint_spec,
    clear_engine_cache,
    default_device,
    open_engine,
)
from segdeck.core.sam.families import FAMILIES
from segdeck.core.sam.options import EngineOptions
from segdeck.core.sam.params import FAMILY_ONLY, GeneratorParams

__all__ = [
    "FAMILIES",
    "FAMILY_ONLY",
    "EngineOptions",
    "GenerateResult",
    "GeneratorParams",
    "MaskRecord",
    "PredictResult",
    "SamEngine",
    "checkpoint_spec",
    "clear_engine_cache",
    "default_device",
    "open_engine",
]
