"""Cluster methods as objects: one module per method, one registry.

Each module defines one :class:`~segdeck.core.cluster.methods.base.ClusterMethod` and
registers it; :data:`MODULES` lists them in display order. The ``cluster`` job's
``method`` parameter (a ``Literal`` of :data:`METHOD_NAMES`), the CLI choices and the
TUI form are built from :data:`REGISTRY`. Importing this package is light (numpy and
pydantic only); each method imports OpenCV, scikit-image, datasketch or torch inside
the call that needs it.
"""

from __future__ import annotations

from importlib import import_module

from segdeck.core.cluster.methods.base import (
    REGISTRY,
    Clustering,
    ClusterMethod,
    IndexedMethod,
    PairwiseMethod,
    ThresholdMethod,
    get_method,
    register,
)

#: Method modules, imported (and so registered) in display order.
MODULES = ("dup", "phash", "ssim", "minhash", "orb", "tm", "deep")

for _module in MODULES:
    import_module(f"{__name__}.{_module}")

#: Registered method names, in display order.
METHOD_NAMES = tuple(REGISTRY)

__all__ = ["METHOD_NAMES", "MODULES", "REGISTRY", "ClusterMethod", "Clustering", "IndexedMethod",
           "PairwiseMethod", "ThresholdMethod", "get_method", "register"]
