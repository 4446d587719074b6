"""SAM 2.1 and SAM-HQ behind one interface (:mod:`.engine`), import-light.

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
    clear_engine_cache,
    default_device,
    open_engine,
)
from segdeck.core.sam.params import FAMILY_ONLY, GeneratorParams

__all__ = [
    "FAMILY_ONLY",
    "GenerateResult",
    "GeneratorParams",
    "MaskRecord",
    "PredictResult",
    "SamEngine",
    "clear_engine_cache",
    "default_device",
    "open_engine",
]
