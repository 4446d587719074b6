"""The ``segment`` job: classical over-segmentation of a folder of photos.

For each image: over-segment with one method of :mod:`segdeck.core.oversegment` at a
bounded working resolution (labels mapped back to full resolution), optionally apply
the two-stage region filters of :mod:`segdeck.core.regions`, and write a label map,
an overlay, a regions CSV and a COCO sidecar (:mod:`segdeck.core.outputs`). The job's
``coco.json`` is assembled from the sidecars after every run.

This module imports nothing heavy: the CLI and the TUI import it to build forms.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any, Literal

from pydantic import Field

from segdeck.core import outputs
from segdeck.core.jobs.base import Job, slug
from segdeck.core.jobs.events import Sink
from segdeck.core.oversegment import METHODS
from segdeck.core.oversegment.chan_vese import Params as ChanVeseParams
from segdeck.core.oversegment.edge import Params as EdgeParams
from segdeck.core.oversegment.felzenszwalb import FelzenszwalbParams, GraphParams
from segdeck.core.oversegment.kmeans import Params as KmeansParams
from segdeck.core.oversegment.quickshift import Params as QuickshiftParams
from segdeck.core.oversegment.slic_kmeans import Params as SlicKmeansParams
from segdeck.core.oversegment.superpixel import (
    LscParams,
    MslicParams,
    SeedsParams,
    SlicoParams,
    SlicParams,
)
from segdeck.core.params import JobParams
from segdeck.core.regions import RegionFilterParams

MethodName = Literal[tuple(METHODS)]  # type: ignore[valid-type]


class SegmentFilterParams(RegionFilterParams):
    """Two-stage region filters (off by default for ``segment``: every segment is kept)."""

    enabled: bool = Field(False, description="apply the region filters (area / intensity / ratio, then pixel aggregate range)")


class SegmentParams(JobParams):
    """Over-segment every image with one classical method, filter regions, write label maps, overlays, CSV and COCO."""

    method: MethodName = Field("slico", description="over-segmentation method")
    max_side: int = Field(
        1024, ge=0, le=100_000,
        description="longest side of the working resolution in pixels; labels are mapped back to full size (0: full resolution)",
    )
    edge: EdgeParams = Field(default_factory=EdgeParams, description="edge method parameters")
    slic: SlicParams = Field(default_factory=SlicParams, description="SLIC parameters")
    slico: SlicoParams = Field(default_factory=SlicoParams, description="SLICO parameters")
    mslic: MslicParams = Field(default_factory=MslicParams, description="MSLIC parameters")
    seeds: SeedsParams = Field(default_factory=SeedsParams, description="SEEDS parameters")
    lsc: LscParams = Field(default_factory=LscParams, description="LSC parameters")
    kmeans: KmeansParams = Field(default_factory=KmeansParams, description="k-means parameters")
    slic_kmeans: SlicKmeansParams = Field(default_factory=SlicKmeansParams, description="superpixel-then-k-means parameters")
    chan_vese: ChanVeseParams = Field(default_factory=ChanVeseParams, description="Chan-Vese parameters")
    felzenszwalb: FelzenszwalbParams = Field(default_factory=FelzenszwalbParams, description="Felzenszwalb parameters")
    quickshift: QuickshiftParams = Field(default_factory=QuickshiftParams, description="quickshift parameters")
    graph: GraphParams = Field(default_factory=GraphParams, description="OpenCV graph segmentation parameters")
    filters: SegmentFilterParams = Field(default_factory=SegmentFilterParams, description="region filters")
    overlay: outputs.OverlayParams = Field(default_factory=outputs.OverlayParams, description="overlay drawing")
    export: outputs.ExportParams = Field(default_factory=outputs.ExportParams, description="exports for other tools")

    def method_params(self):
        """The parameter section of the chosen method."""
        return getattr(self, self.method)

    def effective(self) -> dict[str, Any]:
        """The values that change the per-image outputs (the chosen method's section only;
        ``export`` is not here: exports are rewritten from the outputs after every run)."""
        return {
            "method": self.method,
            "max_side": self.max_side,
            self.method: self.method_params().model_dump(mode="json"),
            "filters": self.filters.model_dump(mode="json") if self.filters.enabled else {"enabled": False},
            "overlay": self.overlay.model_dump(mode="json"),
        }


def _short(value: Any) -> str:
    if isinstance(value, bool):
        return "on" if value else "off"
    if isinstance(value, float):
        return f"{value:g}"
    return str(value)


class SegmentJob(Job):
    """Classical over-segmentation of every image, with region statistics and filters."""

    name = "segment"
    Params = SegmentParams
    description = (
        "over-segment images (edge, SLIC/SLICO/MSLIC/SEEDS/LSC, k-means, Chan-Vese, Felzenszwalb, "
        "quickshift, graph) at a bounded working size; write label maps, overlays, region CSVs and COCO JSON"
    )

    #: how many leading fields of a method's params appear in the run folder name
    NAME_FIELDS = 2

    @classmethod
    def name_parts(cls, params: SegmentParams) -> list[str]:
        section = params.method_params()
        parts = [params.method]
        for key in list(type(section).model_fields)[: cls.NAME_FIELDS]:
            parts.append(f"{key}={_short(getattr(section, key))}")
        parts.append(f"w{params.max_side}" if params.max_side else "fullres")
        if params.filters.enabled:
            parts.append("filtered")
        return parts

    @classmethod
    def run_name(cls, params: SegmentParams) -> str:
        """``segment-<method>-<key params>-w<max_side>-<digest>``; the digest covers only
        the values that change the outputs, so editing another method's section reuses
        (and resumes) the same folder."""
        blob = json.dumps(params.effective(), sort_keys=True).encode()
        digest = hashlib.sha256(blob).hexdigest()[:8]
        return slug("-".join([cls.name, *cls.name_parts(params), digest]))

    def process(self, item: str, data):
        from segdeck.core import oversegment, regions

        image = data
        p = self.params
        labels = oversegment.segment(image, p.method, p.method_params(), max_side=p.max_side or None)
        aggregate = regions.aggregate_map(image)
        result = regions.filter_labels(labels, aggregate, p.filters)
        return image, result.regions, result.stats

    def write(self, item: str, result) -> list[str]:
        image, labels, stats = result
        return outputs.write_image_outputs(
            self.job_dir, self.output_stem(item), item, image, labels, stats, overlay=self.params.overlay
        )

    def finalize(self, emit: Sink) -> list[str]:
        stems = [self.output_stem(i) for i in self.list_items()]
        return outputs.finalize_job(
            self.job_dir, stems=stems, description=f"segdeck segment ({self.params.method})", export=self.params.export
        )

