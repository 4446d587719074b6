"""The SAM model families segdeck can run: one registry entry per family (import-light).

Everything that differs between families is here or in the family's engine class;
code elsewhere asks the entry (``family.m2m``, ``family.small_regions``, ...) instead
of comparing family names. A :class:`~segdeck.core.models.ModelSpec`'s ``family``
field is a key of :data:`FAMILIES`; its ``config`` is the family's build config.

=============  ==========================================  ==========================
family         architecture (``spec.config``)              engine
=============  ==========================================  ==========================
``sam2``       SAM 2 / 2.1 image model, a sam2 hydra        :mod:`.sam2_image`
               config (``configs/sam2.1/sam2.1_hiera_t
               .yaml``); Ravi et al., arXiv:2408.00714
``sam-hq``     SAM-HQ, a ``segment_anything_hq.             :mod:`.sam_hq`
               sam_model_registry`` key (``vit_tiny``);
               Ke et al., arXiv:2306.01567
``sam2-video`` SAM 2 / 2.1 video predictor                  :mod:`.video`
               (``SAM2VideoPredictor``) over a ``sam2``     (``open_propagator``)
               model's config and checkpoint (the image
               family names it in ``video``)
=============  ==========================================  ==========================

Adding a family: a
builder (architecture with random weights, eval mode, on CPU), the checkpoint layout,
an engine class (a :class:`~segdeck.core.sam.engine.SamEngine` subclass for image
families; a video family gets its own interface, ``kind = "video"``, and
:func:`~segdeck.core.sam.open_engine` refuses it), the generator quirks below, and
:class:`~segdeck.core.models.ModelSpec` registrations of its checkpoints.
"""

from __future__ import annotations

import contextlib
import importlib
import io
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from segdeck.core.errors import SetupError

if TYPE_CHECKING:
    from segdeck.core.models import ModelSpec


@dataclass(frozen=True)
class Family:
    """One SAM model family.

    Attributes
    ----------
    name : str
        Registry key, the ``family`` of its model specs.
    title : str
        Human name.
    kind : {"image", "video"}
        Image families run behind :class:`~segdeck.core.sam.engine.SamEngine`.
    build : callable
        ``build(spec) -> torch.nn.Module``: the architecture of ``spec.config`` with
        random weights, eval mode, on CPU (the family package's builder, called without
        a checkpoint: its loader is lenient and prints).
    checkpoint_key : str or None
        The official checkpoints' layout: ``{checkpoint_key: state_dict}`` (SAM 2.1:
        ``"model"``), or None for a plain state dict (SAM-HQ; a ``{"model": ...}``
        wrapper is accepted too).
    engine : str
        ``"module:Class"`` of the engine class (imported on first use).
    m2m : bool
        Generator: ``use_m2m`` (one mask-to-mask refinement step) exists.
    small_regions : {"lowres", "fullres"}
        Generator: ``min_mask_region_area`` fills holes / removes islands on the 256x256
        logits before upsampling (SAM 2's ``max_hole_area`` / ``max_sprinkle_area``), or on
        the full-resolution masks afterwards followed by box NMS (SAM / SAM-HQ).
    clamp_low_res : float or None
        ``predict`` clamps its low-res logits to +-this (SAM 2's predictor does).
    generator_drop : tuple of str
        :class:`~.params.GeneratorParams` fields the official generator's constructor
        does not take.
    multimask_in_generate : bool
        The official generator takes ``multimask_output`` as an argument of
        ``generate()`` rather than of the constructor (SAM-HQ).
    video : str or None
        Image families: the video family whose predictor loads this family's
        checkpoints unchanged (``sam2`` -> ``sam2-video``), or None. A video family's
        ``build(spec, image_size=None)`` takes the image family's spec.
    """

    name: str
    title: str
    kind: Literal["image", "video"]
    build: Callable
    checkpoint_key: str | None
    engine: str
    m2m: bool
    small_regions: Literal["lowres", "fullres"]
    clamp_low_res: float | None
    generator_drop: tuple[str, ...]
    multimask_in_generate: bool
    video: str | None = None

    def engine_class(self) -> type:
        """The engine class (imports torch and the family's package)."""
        module, _, cls = self.engine.partition(":")
        return getattr(importlib.import_module(module), cls)


def _build_sam2(spec: ModelSpec):
    from sam2.build_sam import build_sam2

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return build_sam2(spec.config, ckpt_path=None, device="cpu", mode="eval")


def _build_sam2_video(spec: ModelSpec, image_size: int | None = None):
    """``SAM2VideoPredictor`` of ``spec.config`` with the official post-processing
    overrides, optionally at another input size, and ``fill_hole_area = 0`` (hole filling
    needs the CUDA extension ``sam2._C``; off everywhere so results do not depend on it)."""
    from sam2.build_sam import build_sam2_video_predictor

    extra = [] if image_size is None else [f"++model.image_size={int(image_size)}"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = build_sam2_video_predictor(spec.config, ckpt_path=None, device="cpu", mode="eval",
                                           hydra_overrides_extra=extra)
    model.fill_hole_area = 0
    return model


def _build_sam_hq(spec: ModelSpec):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from segment_anything_hq import sam_model_registry

        if spec.config not in sam_model_registry:
            raise SetupError(f"model {spec.name}: unknown SAM-HQ variant {spec.config!r}")
        with contextlib.redirect_stdout(io.StringIO()):
            return sam_model_registry[spec.config](checkpoint=None)


#: Family name -> :class:`Family`.
FAMILIES: dict[str, Family] = {
    "sam2": Family(
        name="sam2",
        title="SAM 2",
        kind="image",
        build=_build_sam2,
        checkpoint_key="model",
        engine="segdeck.core.sam.sam2_image:Sam2Engine",
        m2m=True,
        small_regions="lowres",
        clamp_low_res=32.0,
        generator_drop=("hq_token_only",),
        multimask_in_generate=False,
        video="sam2-video",
    ),
    "sam-hq": Family(
        name="sam-hq",
        title="SAM-HQ",
        kind="image",
        build=_build_sam_hq,
        checkpoint_key=None,
        engine="segdeck.core.sam.sam_hq:SamHQEngine",
        m2m=False,
        small_regions="fullres",
        clamp_low_res=None,
        generator_drop=("use_m2m", "mask_threshold", "multimask_output", "hq_token_only"),
        multimask_in_generate=True,
    ),
    "sam2-video": Family(
        name="sam2-video",
        title="SAM 2 video",
        kind="video",
        build=_build_sam2_video,
        checkpoint_key="model",
        engine="segdeck.core.sam.video:GroupPropagator",
        m2m=False,
        small_regions="lowres",
        clamp_low_res=None,
        generator_drop=(),
        multimask_in_generate=False,
    ),
}


def get_family(name: str) -> Family:
    """The registered family ``name``.

    Raises
    ------
    SetupError
        Not a SAM family; the message lists the known ones.
    """
    try:
        return FAMILIES[name]
    except KeyError:
        raise SetupError(f"family {name!r} is not a SAM family; known: {', '.join(FAMILIES)}") from None
