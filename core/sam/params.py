"""Parameters of automatic mask generation (import-light: pydantic only).

Every parameter of the official generators (``sam2.automatic_mask_generator.
SAM2AutomaticMaskGenerator`` and ``segment_anything_hq.SamAutomaticMaskGenerator``)
is here with the same name and meaning. Family-specific ones:

============================  =========  ===================================================
parameter                     family     meaning
============================  =========  ===================================================
``use_m2m``                   sam2       one refinement step feeding each mask's low-res
                                         logits back as ``mask_input`` (SAM-HQ lacks it)
``hq_token_only``             sam-hq     use only the HQ output token's mask instead of
                                         SAM's mask + HQ mask (SAM 2 lacks it)
``multimask_output``          both       three masks per point (SAM 2: the 3 multimask
                                         outputs; SAM-HQ: the best of 3 plus the HQ mask,
                                         i.e. one mask per point)
============================  =========  ===================================================

``min_mask_region_area`` differs by family in the official code and is kept so here:
SAM 2 fills holes and removes islands up to that area on the 256x256 low-res logits
before upsampling (``max_hole_area`` / ``max_sprinkle_area`` of SAM2Transforms; the
official package needs its optional CUDA extension for it and skips it otherwise, we
compute the same 8-connected components with OpenCV); SAM-HQ removes small holes and
islands on the full-resolution masks afterwards and re-runs box NMS.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

#: Parameters only one family understands (name -> family); ignored by the other one.
FAMILY_ONLY = {"use_m2m": "sam2", "hq_token_only": "sam-hq"}


class GeneratorParams(BaseModel):
    """Automatic mask generation settings (defaults: the official SAM / SAM-HQ ones)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    points_per_side: int = Field(32, ge=1, le=256, description="grid points per image side (points_per_side**2 prompts per crop)")
    points_per_batch: int = Field(64, ge=1, le=4096, description="prompts decoded together (memory vs speed; does not change the masks)")
    pred_iou_thresh: float = Field(0.88, ge=0.0, le=1.0, description="keep masks whose predicted IoU is above this (0: no filter)")
    stability_score_thresh: float = Field(0.95, ge=0.0, le=1.0, description="keep masks whose stability score is at least this (0: no filter)")
    stability_score_offset: float = Field(1.0, ge=0.0, le=100.0, description="logit offset used to compute the stability score")
    mask_threshold: float = Field(0.0, ge=-100.0, le=100.0, description="logit threshold that binarizes masks")
    box_nms_thresh: float = Field(0.7, ge=0.0, le=1.0, description="box IoU above which duplicate masks are suppressed")
    crop_n_layers: int = Field(0, ge=0, le=4, description="extra crop layers (layer i has 4**i crops; 0: whole image only)")
    crop_nms_thresh: float = Field(0.7, ge=0.0, le=1.0, description="box IoU for suppressing duplicates between crops")
    crop_overlap_ratio: float = Field(512 / 1500, ge=0.0, le=1.0, description="overlap of neighbouring crops as a fraction of the image side")
    crop_n_points_downscale_factor: int = Field(1, ge=1, le=16, description="points per side in crop layer n are divided by this**n")
    min_mask_region_area: int = Field(0, ge=0, le=10_000_000, description="remove holes and islands smaller than this many pixels (0: off)")
    multimask_output: bool = Field(True, description="several candidate masks per grid point")
    use_m2m: bool = Field(False, description="SAM 2 only: one mask-to-mask refinement step per mask")
    hq_token_only: bool = Field(False, description="SAM-HQ only: use the HQ token's mask alone")
    output_mode: Literal["binary_mask", "uncompressed_rle", "coco_rle"] = Field(
        "binary_mask", description="form of the segmentation in mask records"
    )

    def generator_kwargs(self, family: str) -> dict:
        """Keyword arguments for the official generator class of ``family``."""
        out = self.model_dump()
        out.pop("mask_threshold") if family == "sam-hq" else None
        for name, fam in FAMILY_ONLY.items():
            if fam != family:
                out.pop(name)
        if family == "sam-hq":
            out.pop("multimask_output")  # HQ takes it as an argument of generate()
            out.pop("hq_token_only")
        return out
