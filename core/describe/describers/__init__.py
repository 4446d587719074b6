"""Region describers: one interface (whole image + region mask -> text), three back-ends.

======== ================================================================ ==================
name     what                                                             options
======== ================================================================ ==================
none     regions only (text None)                                         -
openai   any OpenAI-compatible chat-completions server (LM Studio, vLLM,  :class:`OpenAIOptions`
         llama.cpp server, Ollama, OpenAI); N requests in flight
dam      Describe Anything (``nvidia/DAM-3B-Self-Contained``) on a CUDA   :class:`DamOptions`
         GPU; extra ``segdeck[dam]``, explicit ``trust_remote_code``
======== ================================================================ ==================

Usage::

    with make_describer("openai", params.openai) as d:
        for desc in d.describe(requests, cancel):   # completion order
            ...

Importing this package imports pydantic and numpy only (requests, torch and
transformers are imported when a describer opens).
"""

from __future__ import annotations

import importlib
from typing import Any

from segdeck.core.describe.describers.base import (
    NEUTRAL_GREY,
    Describer,
    DescriberFatal,
    Description,
    RegionFailed,
    RegionRequest,
    check_request,
    region_image,
)
from segdeck.core.describe.describers.dam import DamOptions
from segdeck.core.describe.describers.openai import OpenAIOptions

#: name -> "module:Class" (imported on use).
DESCRIBERS: dict[str, str] = {
    "none": "segdeck.core.describe.describers.none:NoDescriber",
    "openai": "segdeck.core.describe.describers.openai:OpenAIDescriber",
    "dam": "segdeck.core.describe.describers.dam:DamDescriber",
}
#: The registry's names, for a params ``Literal``.
DESCRIBER_NAMES = tuple(DESCRIBERS)
#: The options model each describer takes (and the name of its params group).
OPTIONS: dict[str, type | None] = {"none": None, "openai": OpenAIOptions, "dam": DamOptions}


def describer_class(name: str) -> type[Describer]:
    """The :class:`Describer` subclass registered as ``name``.

    Raises
    ------
    ValueError
        Unknown name (the message lists the known ones).
    """
    try:
        target = DESCRIBERS[name]
    except KeyError:
        raise ValueError(f"unknown describer {name!r}; known: {', '.join(DESCRIBERS)}") from None
    module, _, cls = target.partition(":")
    return getattr(importlib.import_module(module), cls)


def make_describer(name: str, options: Any = None) -> Describer:
    """Build (not open) the describer ``name``.

    Parameters
    ----------
    name : {"none", "openai", "dam"}
    options : OpenAIOptions, DamOptions, a model with ``openai`` / ``dam`` groups, or None
        The describer's options, or a job's params holding them as a nested group named
        after the describer (``params.openai``); None gives the defaults.

    Returns
    -------
    Describer
        Call :meth:`~Describer.open` (or use it as a context manager) before
        :meth:`~Describer.describe`.

    Raises
    ------
    ValueError
        Unknown name, or options of another describer.
    """
    cls = describer_class(name)
    want = OPTIONS[name]
    if want is None:
        return cls()
    if options is not None and not isinstance(options, want):
        group = getattr(options, name, None)
        if not isinstance(group, want):
            raise ValueError(f"describer {name!r} takes {want.__name__}, got {type(options).__name__}")
        options = group
    return cls(options)


__all__ = [
    "DESCRIBERS", "DESCRIBER_NAMES", "NEUTRAL_GREY", "OPTIONS", "DamOptions", "Describer",
    "DescriberFatal", "Description", "OpenAIOptions", "RegionFailed", "RegionRequest",
    "check_request", "describer_class", "make_describer", "region_image",
]
