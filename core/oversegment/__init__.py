"""Classical over-segmentation: one module per method, one registry.

Every method module defines a pydantic ``Params`` model (fields with description and
range) and one public function ``segment(image, params) -> labels`` taking an
(H, W, 3) uint8 RGB image and returning an (H, W) int32 label map: 0 = edge /
unassigned pixels, 1..N segments.

Use :func:`segment` here rather than a method module: it runs the method at a
bounded working resolution (``max_side``) and maps the labels back to the full
resolution (nearest neighbour), so a 12-megapixel photo costs what a ~1 MP one does.
"""

from __future__ import annotations

import importlib
from typing import Any

import numpy as np
from pydantic import BaseModel

#: method name -> module (under segdeck.core.oversegment) defining ``Params`` and ``segment``.
METHODS: dict[str, str] = {
    "edge": "edge",
    "slic": "superpixel",
    "slico": "superpixel",
    "mslic": "superpixel",
    "seeds": "superpixel",
    "lsc": "superpixel",
    "kmeans": "kmeans",
    "slic_kmeans": "slic_kmeans",
    "chan_vese": "chan_vese",
    "felzenszwalb": "felzenszwalb",
    "quickshift": "quickshift",
    "graph": "felzenszwalb",
}


def method_names() -> list[str]:
    """Registered method names, in registry order."""
    return list(METHODS)


def _module(method: str):
    try:
        mod = METHODS[method]
    except KeyError:
        raise ValueError(f"unknown over-segmentation method {method!r}; known: {', '.join(METHODS)}") from None
    return importlib.import_module(f"segdeck.core.oversegment.{mod}")


def params_model(method: str) -> type[BaseModel]:
    """The pydantic params model of ``method``.

    Raises
    ------
    ValueError
        Unknown method.
    """
    mod = _module(method)
    models = getattr(mod, "PARAMS", None)
    return models[method] if models else mod.Params


def segment(
    image: np.ndarray,
    method: str,
    params: BaseModel | dict[str, Any] | None = None,
    *,
    max_side: int | None = 1024,
) -> np.ndarray:
    """Over-segment an image with a registered method.

    Parameters
    ----------
    image : ndarray of shape (H, W, 3), dtype uint8
        RGB image.
    method : str
        A name from :data:`METHODS`.
    params : pydantic model or dict, optional
        The method's parameters (defaults when omitted). Sizes in the params
        (region size, min size, ...) are in working-resolution pixels.
    max_side : int or None
        Longest side of the working resolution; ``None`` works at full resolution.

    Returns
    -------
    ndarray of shape (H, W), dtype int32
        Label map at the input's full resolution; 0 = edge, 1..N segments.

    Raises
    ------
    ValueError
        Unknown method, bad params, or an image that is not (H, W, 3) uint8.
    """
    from segdeck.core.oversegment._resize import run_at_working_size

    if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        raise ValueError(f"expected an (H, W, 3) uint8 RGB image, got {image.dtype} {image.shape}")
    model = params_model(method)
    if params is None:
        params = model()
    elif isinstance(params, dict):
        params = model.model_validate(params)
    mod = _module(method)
    fn = getattr(mod, "segment_" + method, None) or mod.segment
    return run_at_working_size(lambda img: fn(img, params), image, max_side)
