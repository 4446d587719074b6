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

Defaults are the installed official generators' signatures; the one that differs by
family, ``pred_iou_thresh`` (SAM 2 0.8, SAM-HQ 0.88), is ``None`` here and resolved per
family (:data:`FAMILY_DEFAULTS`, :meth:`GeneratorParams.for_family`).

``point_grids`` names a file of normalised points to prompt with instead of the
``points_per_side`` grid (:func:`read_point_grids`).

``min_mask_region_area`` differs by family in the official code and is kept so here:
SAM 2 fills holes and removes islands up to that area on the 256x256 low-res logits
before upsampling (``max_hole_area`` / ``max_sprinkle_area`` of SAM2Transforms; the
official package needs its optional CUDA extension for it and skips it otherwise, we
compute the same 8-connected components with OpenCV); SAM-HQ removes small holes and
islands on the full-resolution masks afterwards and re-runs box NMS.
"""

from __future__ import annotations

from pathlib import Path
from typing import Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field, model_validator

#: Parameters only one family understands (name -> family); ignored by the other one.
FAMILY_ONLY = {"use_m2m": "sam2", "hq_token_only": "sam-hq"}

#: Official defaults that differ by family (``SAM2AutomaticMaskGenerator`` and
#: ``segment_anything_hq.SamAutomaticMaskGenerator`` signatures); a ``None`` field
#: takes its family's value.
FAMILY_DEFAULTS = {"sam2": {"pred_iou_thresh": 0.8}, "sam-hq": {"pred_iou_thresh": 0.88}}


def read_point_grids(path: str | Path, crop_n_layers: int = 0) -> list[np.ndarray]:
    """Read a point-grid file: the official generators' ``point_grids``.

    The file is text: one point per line, ``x y`` (or ``x,y``), normalised to the image
    (or crop) width and height, so ``0 0`` is the top-left corner and ``1 1`` the
    bottom-right one; ``#`` starts a comment. A blank line starts the grid of the next
    crop layer; with crop layers, one grid per layer (``crop_n_layers + 1``). A ``.npy``
    file holds one (N, 2) grid.

    Returns
    -------
    list of ndarray of shape (N, 2), float32
        One grid per crop layer.

    Raises
    ------
    ValueError
        Missing or unreadable file, a malformed line, a value outside [0, 1], or a
        number of grids other than ``crop_n_layers + 1``.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"point_grids file {path} not found")
    if path.suffix.lower() == ".npy":
        try:
            arr = np.load(path, allow_pickle=False)
        except (OSError, ValueError) as exc:
            raise ValueError(f"point_grids file {path}: cannot read ({exc})") from None
        if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] == 0:
            raise ValueError(f"point_grids file {path}: expected an (N, 2) array, got shape {arr.shape}")
        grids = [arr.astype(np.float32)]
    else:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ValueError(f"point_grids file {path}: cannot read ({exc})") from None
        grids, current = [], []
        for n, raw in enumerate(text.splitlines(), 1):
            line = raw.split("#", 1)[0].strip()
            if not line:
                if current and not raw.strip():
                    grids.append(np.array(current, np.float32))
                    current = []
                continue
            parts = line.replace(",", " ").split()
            try:
                if len(parts) != 2:
                    raise ValueError
                current.append([float(parts[0]), float(parts[1])])
            except ValueError:
                raise ValueError(f"point_grids file {path}, line {n}: expected 'x y', got {raw.strip()!r}") from None
        if current:
            grids.append(np.array(current, np.float32))
    if not grids:
        raise ValueError(f"point_grids file {path} holds no point")
    for g in grids:
        if not np.all(np.isfinite(g)) or g.min() < 0.0 or g.max() > 1.0:
            raise ValueError(f"point_grids file {path}: coordinates must be normalised to [0, 1]")
    if len(grids) != crop_n_layers + 1:
        raise ValueError(
            f"point_grids file {path} has {len(grids)} grid(s) but crop_n_layers = {crop_n_layers} needs "
            f"{crop_n_layers + 1} (one per layer, separated by a blank line)"
        )
    return grids


_SHA_CACHE: dict[tuple, str] = {}


def checkpoint_sha256(path: str | Path) -> str:
    """Hex sha256 of a checkpoint file, remembered per (path, size, modification time) so
    validating the same params again does not re-read the file.

    Raises
    ------
    ValueError
        No such file (the message names it).
    """
    import hashlib

    p = Path(path).expanduser()
    try:
        st = p.stat()
    except OSError:
        st = None
    if st is None or not p.is_file():
        raise ValueError(f"checkpoint {path}: no such file")
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            while chunk := fh.read(1 << 23):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def fill_checkpoint_sha256(model):
    """Model validator of params with ``checkpoint`` and ``checkpoint_sha256`` fields: the
    latter is always the sha256 of the former's file (None without one), whatever was
    given, so ``job.toml`` records which weights ran and the run name can carry them."""
    path = model.checkpoint
    sha = None if path is None or str(path).strip() == "" else checkpoint_sha256(path)
    # set without validation (no recursion); the path made absolute, so a re-run from
    # job.toml in another folder finds the same file
    model.__dict__["checkpoint_sha256"] = sha
    model.__dict__["checkpoint"] = None if sha is None else str(Path(path).expanduser().resolve())
    return model


def check_point_grids(model):
    """Model validator: the ``point_grids`` file reads and matches ``crop_n_layers``."""
    if model.point_grids is not None:
        read_point_grids(model.point_grids, model.crop_n_layers)
    return model


class GeneratorParams(BaseModel):
    """Automatic mask generation settings (defaults: the official SAM / SAM-HQ ones)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    points_per_side: int = Field(32, ge=1, le=256, description="grid points per image side (points_per_side**2 prompts per crop)")
    points_per_batch: int = Field(64, ge=1, le=4096, description="prompts decoded together (memory vs speed; does not change the masks)")
    pred_iou_thresh: float | None = Field(
        None, ge=0.0, le=1.0,
        description="keep masks whose predicted IoU is above this (0: no filter; empty: the family's official value, SAM 2 0.8, SAM-HQ 0.88)",
    )
    stability_score_thresh: float = Field(0.95, ge=0.0, le=1.0, description="keep masks whose stability score is at least this (0: no filter)")
    stability_score_offset: float = Field(1.0, ge=0.0, le=100.0, description="logit offset used to compute the stability score")
    mask_threshold: float = Field(0.0, ge=-100.0, le=100.0, description="logit threshold that binarizes masks")
    box_nms_thresh: float = Field(0.7, ge=0.0, le=1.0, description="box IoU above which duplicate masks are suppressed")
    crop_n_layers: int = Field(0, ge=0, le=4, description="extra crop layers (layer i has 4**i crops; 0: whole image only)")
    crop_nms_thresh: float = Field(0.7, ge=0.0, le=1.0, description="box IoU for suppressing duplicates between crops")
    crop_overlap_ratio: float = Field(512 / 1500, ge=0.0, le=1.0, description="overlap of neighbouring crops as a fraction of the image side")
    crop_n_points_downscale_factor: int = Field(1, ge=1, le=16, description="points per side in crop layer n are divided by this**n")
    point_grids: str | None = Field(
        None, description="file of normalised 'x y' points (one per line, a blank line between crop layers) used instead of points_per_side",
    )
    min_mask_region_area: int = Field(0, ge=0, le=10_000_000, description="remove holes and islands smaller than this many pixels (0: off)")
    multimask_output: bool = Field(True, description="several candidate masks per grid point")
    use_m2m: bool = Field(False, description="SAM 2 only: one mask-to-mask refinement step per mask")
    hq_token_only: bool = Field(False, description="SAM-HQ only: use the HQ token's mask alone")
    output_mode: Literal["binary_mask", "uncompressed_rle", "coco_rle"] = Field(
        "binary_mask", description="form of the segmentation in mask records"
    )

    _check_point_grids = model_validator(mode="after")(check_point_grids)

    def for_family(self, family: str) -> GeneratorParams:
        """A copy with the family-dependent defaults (:data:`FAMILY_DEFAULTS`) filled in."""
        fill = {k: v for k, v in FAMILY_DEFAULTS[family].items() if getattr(self, k) is None}
        return self.model_copy(update=fill) if fill else self

    def grids(self) -> list[np.ndarray] | None:
        """The ``point_grids`` file's grids (:func:`read_point_grids`), or None."""
        return None if self.point_grids is None else read_point_grids(self.point_grids, self.crop_n_layers)

    def generator_kwargs(self, family: str) -> dict:
        """Keyword arguments for the official generator class of ``family``."""
        from segdeck.core.sam.families import get_family

        out = self.for_family(family).model_dump()
        out["point_grids"] = self.grids()
        if out["point_grids"] is not None:
            out["points_per_side"] = None
        for name in get_family(family).generator_drop:
            out.pop(name)
        return out
