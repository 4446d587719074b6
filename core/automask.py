"""The ``automask`` job: SAM 2.1 / SAM-HQ automatic masks for a folder of photos.

For each image: generate every mask with :meth:`segdeck.core.sam.SamEngine.generate`
(the official automatic generator's algorithm and parameters), optionally apply the
two-stage region filters of :mod:`segdeck.core.regions`, and write, as the ``segment``
job does (:mod:`segdeck.core.outputs`):

* ``<stem>.labels.png``: label map, smaller masks drawn over larger ones;
* ``<stem>.overlay.jpg``: contours, fills and per-region stats;
* ``<stem>.regions.csv``: one row per mask (area, intensity, ratio, bbox, centroid,
  predicted_iou, stability_score);
* ``parts/<stem>.coco.json`` -> the job's ``coco.json`` (RLE, overlapping masks kept)
  and ``regions.csv`` (every image's rows with ``image`` and ``annotation_id``);
* ``export/<format>/``: the exports of ``export.formats`` (:mod:`segdeck.core.export`);
* ``masks/<stem>.npz`` (``output_mode = "binary_mask"``: the generator's raw masks,
  bit-packed, with scores, boxes and prompt points) or ``masks/<stem>.json``
  (``coco_rle`` / ``uncompressed_rle``: the official generator's records).

The model is loaded once in :meth:`AutomaskJob.setup`; a model that is not cached is
downloaded with progress, or, offline, the job stops before the first image with one
line naming the URL and ``segdeck models import``.

This module imports nothing heavy (the CLI and TUI build forms from it).
"""

from __future__ import annotations

import json
from typing import Literal

import numpy as np
from pydantic import Field, create_model, model_validator

from segdeck.core import outputs
from segdeck.core.jobs.base import Job
from segdeck.core.jobs.events import Message, Sink
from segdeck.core.models import SAM_MODELS
from segdeck.core.params import DERIVED, JobParams
from segdeck.core.regions import RegionFilterParams
from segdeck.core.sam.params import GeneratorParams, check_point_grids, fill_checkpoint_sha256

ModelName = Literal[SAM_MODELS]  # type: ignore[valid-type]
MASKS_DIR = "masks"


class AutomaskFilterParams(RegionFilterParams):
    """Two-stage region filters (off by default for ``automask``: every SAM mask is kept)."""

    enabled: bool = Field(False, description="apply the region filters (area / intensity / ratio, then pixel aggregate range)")


class _AutomaskHead(JobParams):
    model: ModelName = Field("sam2.1-tiny", description="SAM checkpoint (see `segdeck models list`)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="compute device (auto: CUDA when available)")
    checkpoint: str | None = Field(
        None, description="fine-tuned weights of the model's family and size (a file) instead of the official ones",
    )
    checkpoint_sha256: str | None = Field(
        None, description="sha256 of the checkpoint file (filled in from the file; recorded in job.toml and the run name)",
        json_schema_extra=DERIVED,
    )

    _fill_checkpoint_sha256 = model_validator(mode="after")(fill_checkpoint_sha256)


_GEN_FIELDS = {name: (info.annotation, info) for name, info in GeneratorParams.model_fields.items()}

AutomaskParams = create_model(  # type: ignore[call-overload]
    "AutomaskParams",
    __base__=_AutomaskHead,
    __doc__="Automatic SAM masks for every image, region filters, label maps, overlays, CSV and COCO.",
    __validators__={"_check_point_grids": model_validator(mode="after")(check_point_grids)},
    **_GEN_FIELDS,
    filters=(AutomaskFilterParams, Field(default_factory=AutomaskFilterParams, description="region filters")),
    overlay=(outputs.OverlayParams, Field(default_factory=outputs.OverlayParams, description="overlay drawing")),
    export=(outputs.ExportParams, Field(default_factory=outputs.ExportParams, description="exports for other tools")),
)


def options_markdown() -> str:
    """The README's automask option table (``segdeck run automask --help`` as Markdown).

    One row per parameter of :data:`AutomaskParams`, in model order: the CLI flag, the
    default and the description. ``tests/test_readme.py`` checks the README holds exactly
    this table between ``<!-- automask-options:start -->`` and ``<!-- automask-options:end -->``.
    """
    from segdeck.core.params import field_specs

    def show(value) -> str:
        if value is None:
            return "(none)"
        if isinstance(value, bool):
            return "true" if value else "false"
        if isinstance(value, float):
            return f"{value:g}"
        if isinstance(value, list):
            return ", ".join(map(str, value)) or "(none)"
        return str(value)

    from segdeck.core.sam.params import FAMILY_DEFAULTS

    rows = ["| option | default | meaning |", "|---|---|---|"]
    for spec in field_specs(AutomaskParams):
        flag = "--" + spec.name.replace("_", "-")
        text = spec.description.replace("|", "\\|")
        default = f"`{show(spec.default)}`"
        if spec.default is None and spec.name in FAMILY_DEFAULTS["sam2"]:
            default = f"`{FAMILY_DEFAULTS['sam2'][spec.name]}` SAM 2, `{FAMILY_DEFAULTS['sam-hq'][spec.name]}` SAM-HQ"
        rows.append(f"| `{flag}` | {default} | {text} |")
    return "\n".join(rows) + "\n"


def generator_params(params) -> GeneratorParams:
    """The :class:`GeneratorParams` part of :class:`AutomaskParams`."""
    return GeneratorParams(**{k: getattr(params, k) for k in GeneratorParams.model_fields})


class AutomaskJob(Job):
    """SAM 2.1 / SAM-HQ automatic mask generation over a folder, with region filters."""

    name = "automask"
    Params = AutomaskParams
    #: ``--executor ray``: the model lives on the workers only (write and finalize need
    #: none), so the driver needs neither the weights nor a GPU.
    setup_on_driver = False
    description = (
        "automatic SAM 2.1 / SAM-HQ masks for every image (official generator parameters), "
        "optional region filters; label maps, overlays, region CSVs, COCO RLE"
    )

    @classmethod
    def run_name(cls, params) -> str:
        """``automask-<model>-pps<n>-...-<digest>``; the digest leaves out ``export`` (exports
        are rewritten from the outputs after every run, so changing them reuses the folder)."""
        import hashlib

        from segdeck.core.jobs.base import slug

        blob = json.dumps(params.model_dump(mode="json", exclude={"export"}), sort_keys=True).encode()
        digest = hashlib.sha256(blob).hexdigest()[:8]
        return slug("-".join([cls.name, *cls.name_parts(params), digest]))

    @classmethod
    def name_parts(cls, params) -> list[str]:
        parts = [params.model, f"pps{params.points_per_side}" if params.point_grids is None else "grid"]
        if params.checkpoint_sha256:
            parts.append(f"ckpt{params.checkpoint_sha256[:8]}")
        if params.crop_n_layers:
            parts.append(f"crops{params.crop_n_layers}")
        if params.filters.enabled:
            parts.append("filtered")
        return parts

    def setup(self, emit: Sink) -> None:
        from segdeck.core.models import model_path
        from segdeck.core.sam import open_engine

        p = self.params
        if p.checkpoint is None and model_path(p.model) is None:
            emit(Message(text=f"model {p.model} is not cached: downloading"))
        device = None if p.device == "auto" else p.device
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                from segdeck.core.errors import SetupError

                raise SetupError("device = cuda but no CUDA device is available; use device = auto or cpu")
        self.engine = open_engine(p.model, device, checkpoint=p.checkpoint, emit=emit)
        if p.checkpoint is not None and self.engine.spec.sha256 != p.checkpoint_sha256:
            from segdeck.core.errors import SetupError

            raise SetupError(f"checkpoint {p.checkpoint} changed since the job was set up (sha256 differs); run it again")
        self.gen = generator_params(p)
        weights = f" (weights {p.checkpoint}, sha256 {p.checkpoint_sha256[:12]})" if p.checkpoint else ""
        emit(Message(text=f"model {p.model}{weights} loaded on {self.engine.device}"))

    def process(self, item: str, data):
        from segdeck.core import regions

        image = data
        res = self.engine.generate(image, self.gen)
        aggregate = regions.aggregate_map(image)
        fr = regions.filter_masks(
            res.masks, aggregate, self.params.filters,
            scores={"predicted_iou": res.scores, "stability_score": res.stability},
        )
        labels = regions.masks_to_label_map(fr.regions, order="area")
        return image, labels, fr, res

    def write(self, item: str, result) -> list[str]:
        image, labels, fr, res = result
        stem = self.output_stem(item)
        written = self._write_raw(stem, res)
        # the COCO sidecar stays last (the runner's completeness marker)
        written += outputs.write_image_outputs(
            self.job_dir, stem, item, image, labels, fr.stats, masks=fr.regions, overlay=self.params.overlay
        )
        return written

    def _write_raw(self, stem: str, res) -> list[str]:
        import io

        from segdeck.core import imageio

        folder = self.job_dir / MASKS_DIR
        folder.mkdir(parents=True, exist_ok=True)
        mode = self.params.output_mode
        if mode == "binary_mask":
            n, h, w = res.masks.shape
            buf = io.BytesIO()
            np.savez_compressed(
                buf, packed=np.packbits(res.masks.reshape(n, -1), axis=1), shape=np.array([n, h, w]),
                predicted_iou=res.scores, stability_score=res.stability, boxes_xyxy=res.boxes,
                point_coords=res.points, crop_boxes_xyxy=res.crop_boxes,
            )
            rel = f"{MASKS_DIR}/{stem}.npz"
            imageio.write_bytes_atomic(self.job_dir / rel, buf.getvalue())
        else:
            recs = [r.to_official(mode) for r in res.records()]
            for r in recs:
                seg = r["segmentation"]
                if isinstance(seg, dict) and isinstance(seg.get("counts"), bytes):
                    seg["counts"] = seg["counts"].decode("ascii")
            rel = f"{MASKS_DIR}/{stem}.json"
            imageio.write_text_atomic(self.job_dir / rel, json.dumps(recs))
        return [rel]

    def finalize(self, emit: Sink) -> list[str]:
        stems = [self.output_stem(i) for i in self.list_items()]
        return outputs.finalize_job(
            self.job_dir, stems=stems, description=f"segdeck automask ({self.params.model})", export=self.params.export
        )

    def teardown(self) -> None:
        self.engine = None

