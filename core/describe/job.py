"""The ``describe`` job: sweep each image with point prompts, segment region by region
with SAM, describe every region with a vision-language model, report.

``segdeck run describe INPUT [--describer openai|dam|none] [--openai.base-url URL] ...``

Per image:

1. point proposals (:mod:`.points`: contour interior points, largest contours first,
   then a grid);
2. one SAM 2.1 / SAM-HQ image encode, then one click per point; each region is the
   mask minus the pixels earlier regions claimed, kept when it has at least
   ``min_area`` pixels (:mod:`.sweep`); sub-steps ``region 7/31``;
3. the describer (:mod:`.describers`) runs over the kept regions, several in flight;
   sub-steps ``described 12/31``, and each description is logged as it arrives;
4. outputs (:mod:`.report`): visualisation with numbered boxes and a legend, text
   report, JSON lines, label map, regions CSV and COCO RLE with each annotation's
   description; per job ``coco.json``, ``regions.csv`` and ``descriptions.jsonl``.

Failures: a region the describer could not describe (timeout, malformed answer,
refusal) is recorded on that region (``error``), the item's files are written, and the
item is marked failed ("2 of 31 regions not described"), so a re-run (the default
retries failed items) reads the segmentation back from ``<stem>.regions.json`` and the
label map and describes only the missing regions. A cancel while regions are being
described keeps the item's segmentation and descriptions so far the same way. A describer that cannot work at all
(:class:`~.describers.DescriberFatal`: wrong API key, unreachable server, DAM without
CUDA) stops the job before the first image with one line (exit code 2) when
:meth:`~.describers.Describer.open` finds it; found mid-run, the item at hand keeps
its segmentation and the remaining items fail at once with the same line, without
segmenting. The API key is never a parameter: only the name of the environment
variable holding it is (``openai.api_key_env``).

This module imports nothing heavy (the CLI and the TUI build forms from its params).
"""

from __future__ import annotations

import hashlib
import json
import threading
from dataclasses import dataclass, field
from typing import Literal

import numpy as np
from pydantic import Field

from segdeck.core.describe.describers import DESCRIBER_NAMES, DamOptions, OpenAIOptions
from segdeck.core.describe.points import PointParams
from segdeck.core.describe.report import RegionText
from segdeck.core.describe.sweep import Region
from segdeck.core.errors import SegdeckError
from segdeck.core.jobs.base import Job, slug
from segdeck.core.jobs.events import Message, Sink
from segdeck.core.models import SAM_MODELS
from segdeck.core.params import JobParams

ModelName = Literal[SAM_MODELS]  # type: ignore[valid-type]
DescriberName = Literal[DESCRIBER_NAMES]  # type: ignore[valid-type]

#: Job-level outputs.
DESCRIPTIONS_NAME = "descriptions.jsonl"
#: ``openai`` options left out of the run name's digest: how requests are made, not
#: what is asked or answered.
RUNTIME_OPTIONS = ("concurrency", "timeout", "retries", "backoff", "ttl")
#: A description is logged cut to this many characters.
LOG_CHARS = 300


class DescribeParams(JobParams):
    """Point sweep + SAM segmentation + region descriptions for every image."""

    model: ModelName = Field("sam2.1-tiny", description="SAM checkpoint that segments the regions (see `segdeck models list`)")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="SAM's compute device (auto: CUDA when available)")
    describer: DescriberName = Field(
        "openai", description="who describes each region: openai (any OpenAI-compatible server: LM Studio, vLLM, "
        "Ollama, llama.cpp), dam (Describe Anything, CUDA), none (regions only)")
    min_area: int = Field(100, ge=1, le=100_000_000, description="smallest region kept, in pixels not claimed by earlier regions")
    multimask: bool = Field(True, description="take the best of SAM's candidate masks for each point (else its single-mask output)")
    legend: bool = Field(True, description="legend panel with the descriptions on the visualisation")
    points: PointParams = Field(default_factory=PointParams, description="point proposals")
    openai: OpenAIOptions = Field(default_factory=OpenAIOptions, description="openai describer")
    dam: DamOptions = Field(default_factory=DamOptions, description="dam describer")


class DescriptionsMissing(SegdeckError):
    """Some regions of an item have no description (their errors are in the outputs);
    the item is failed so that a re-run describes them."""


@dataclass
class DescribeResult:
    """One item's result (from :meth:`DescribeJob.process` to :meth:`DescribeJob.write`)."""

    image: np.ndarray
    labels: np.ndarray
    regions: list[Region]
    texts: dict[int, RegionText]
    points: int
    reused: bool
    fatal: str | None = None
    meta: dict = field(default_factory=dict)


class DescribeJob(Job):
    """Sweep, segment and describe the regions of every image."""

    name = "describe"
    Params = DescribeParams
    description = (
        "segment each image region by region from point prompts (SAM 2.1 / SAM-HQ, no overlaps) and describe "
        "every region with a vision-language model; visualisation, text report, JSON lines, label map, COCO RLE "
        "with descriptions"
    )
    #: ``--executor ray``: the SAM model and the describer live on the workers (write and
    #: finalize need neither), so the driver opens no model and no server connection.
    setup_on_driver = False
    #: ``m`` on the dam group offers the model manager's Describe Anything folder
    tui_extra_model_fields = {"dam.model": ("", {"dam-3b": "dam-3b"})}
    tui_field_notes = {
        "openai.base_url": "LM Studio http://localhost:1234/v1, Ollama http://localhost:11434/v1, vLLM http://localhost:8000/v1",
        "openai.api_key_env": "the key stays in that environment variable; it is never saved",
        "dam.trust_remote_code": "DAM's model code ships with its weights; needed to load it (CUDA only)",
    }

    @classmethod
    def run_name(cls, params) -> str:
        """``describe-<model>-<describer>-<digest>``. The digest leaves out the options of
        the describers not used and the openai options that change how requests are
        made, not what is asked (:data:`RUNTIME_OPTIONS`), so a re-run with a longer
        timeout or more requests in flight fills the same folder's missing descriptions."""
        data = params.model_dump(mode="json")
        for name in ("openai", "dam"):
            if name != params.describer:
                data.pop(name)
        for key in RUNTIME_OPTIONS:
            data.get("openai", {}).pop(key, None)
        blob = json.dumps(data, sort_keys=True).encode()
        digest = hashlib.sha256(blob).hexdigest()[:8]
        return slug("-".join([cls.name, params.model, params.describer, digest]))

    def __init__(self, params, input_path, job_dir):
        super().__init__(params, input_path, job_dir)
        self.engine = None
        self.describer = None
        self._emit: Sink | None = None
        self._fatal: str | None = None
        self._engine_lock = threading.Lock()

    def expected_outputs(self, item: str) -> list[str]:
        from segdeck.core.describe.report import names

        return list(names(self.output_stem(item)).values())

    # ---- life cycle -----------------------------------------------------------------
    def setup(self, emit: Sink) -> None:
        """Open the describer first (a wrong key or a server that is down stops the job
        before SAM loads), then the SAM engine."""
        from segdeck.core.describe.describers import make_describer
        from segdeck.core.errors import SetupError
        from segdeck.core.models import model_path

        p = self.params
        self._emit = emit
        if p.describer != "none":
            describer = make_describer(p.describer, p)
            describer.open()  # DescriberFatal: one line, the run ends with exit code 2
            self.describer = describer
            model = getattr(describer, "model", "") or ""
            emit(Message(text=f"describer {p.describer} ready" + (f" (model {model})" if model else "")))
        if model_path(p.model) is None:
            emit(Message(text=f"model {p.model} is not cached: downloading"))
        device = None if p.device == "auto" else p.device
        if device == "cuda":
            import torch

            if not torch.cuda.is_available():
                raise SetupError("device = cuda but no CUDA device is available; use device = auto or cpu")
        from segdeck.core.sam import open_engine

        self.engine = open_engine(p.model, device, emit=emit)
        emit(Message(text=f"model {p.model} loaded on {self.engine.device}"))

    def load(self, item: str):
        """The image, and what an earlier run saved for it (or None)."""
        from segdeck.core import imageio
        from segdeck.core.describe.report import read_saved

        image = imageio.load_rgb(self.item_path(item))
        return image, read_saved(self.job_dir, self.output_stem(item), image)

    def process(self, item: str, data) -> DescribeResult:
        from segdeck.core.describe.describers import DescriberFatal

        if self._fatal is not None:
            raise DescriberFatal(self._fatal)
        image, saved = data
        if saved is None:
            labels, regions, npoints = self._segment(image)
            texts: dict[int, RegionText] = {}
        else:
            labels, regions, npoints = saved.labels, saved.regions, saved.points
            texts = dict(saved.texts)
        p = self.params
        meta = {"model": p.model, "describer": p.describer, "points": npoints}
        if p.describer == "openai":
            meta["describer_model"] = getattr(self.describer, "model", "") or p.openai.model
        elif p.describer == "dam":
            meta["describer_model"] = p.dam.model
        result = DescribeResult(image, labels, regions, texts, npoints, saved is not None, meta=meta)
        if p.describer != "none":
            try:
                self._describe(item, result)
            except DescriberFatal as exc:
                self._fatal = result.fatal = str(exc)
        return result

    def _segment(self, image: np.ndarray) -> tuple[np.ndarray, list[Region], int]:
        from segdeck.core.describe.points import propose_points
        from segdeck.core.describe.sweep import SweepCancelled, sweep
        from segdeck.core.jobs.base import ItemCancelled

        p = self.params
        pts = propose_points(image, p.points)
        try:
            res = sweep(self.engine, image, pts, min_area=p.min_area, multimask=p.multimask,
                        on_step=lambda d, t: self.step(d, t, "region"), cancel=self.cancel)
        except SweepCancelled:
            raise ItemCancelled("cancelled") from None
        return res.labels, res.regions, len(pts)

    def _describe(self, item: str, result: DescribeResult) -> None:
        """Describe the regions without a description; fills ``result.texts``.

        A cancel stops it after the regions in flight; the result (the segmentation and
        the descriptions so far) is still returned, so :meth:`write` keeps them and the
        next run describes only the rest."""
        from segdeck.core.describe.describers import RegionRequest

        todo = [r for r in result.regions if result.texts.get(r.index, RegionText()).text is None]
        if not todo:
            return
        labels, image = result.labels, result.image
        requests = (RegionRequest(index=r.index, image=image, mask=labels == r.index, box=r.box) for r in todo)
        total = len(todo)
        self.step(0, total, "described")
        for k, d in enumerate(self.describer.describe(requests, cancel=self.cancel), 1):
            result.texts[d.index] = RegionText(d.text, d.error, d.seconds)
            # the item's sink (the runner's, or a Ray worker's that travels with the item)
            sink = self._step_target[1] if self._step_target is not None else self._emit
            if sink is not None:
                said = d.text if d.text is not None else f"not described ({d.error})"
                said = " ".join(said.split())
                if len(said) > LOG_CHARS:
                    said = said[: LOG_CHARS - 1] + "…"
                sink(Message(text=f"{item} D{d.index}: {said}", level="info" if d.text is not None else "warning"))
            if not self.cancel.is_set():  # a cancel keeps what is done: write() saves it
                self.step(k, total, "described")
        if self.cancel.is_set():
            for r in todo:
                if r.index not in result.texts:
                    result.texts[r.index] = RegionText(None, "cancelled", 0.0)

    def write(self, item: str, result: DescribeResult) -> list[str]:
        from segdeck.core.describe.describers import DescriberFatal
        from segdeck.core.describe.report import write_item

        written = write_item(self.job_dir, self.output_stem(item), item, result.image, result.labels,
                             result.regions, result.texts, meta=result.meta, legend=self.params.legend)
        if result.fatal is not None:
            raise DescriberFatal(result.fatal)
        if self.params.describer != "none":
            missing = [r for r in result.regions if result.texts.get(r.index, RegionText()).text is None]
            if missing:
                first = missing[0]
                why = result.texts.get(first.index, RegionText()).error or "not described"
                raise DescriptionsMissing(
                    f"{item}: {len(missing)} of {len(result.regions)} regions not described ({first.name}: {why}); "
                    "a re-run describes only these")
        return written

    def finalize(self, emit: Sink) -> list[str]:
        from segdeck.core import imageio, outputs
        from segdeck.core.describe.report import names

        stems = [self.output_stem(i) for i in self.list_items()]
        written = outputs.finalize_job(self.job_dir, stems=stems, description=f"segdeck describe ({self.params.model}, "
                                       f"{self.params.describer})")
        lines = []
        for stem in stems:
            path = self.job_dir / names(stem)["jsonl"]
            try:
                lines.append(path.read_text(encoding="utf-8"))
            except OSError:
                continue
        if lines:
            imageio.write_text_atomic(self.job_dir / DESCRIPTIONS_NAME, "".join(lines))
            written.append(DESCRIPTIONS_NAME)
        return written

    def teardown(self) -> None:
        if self.describer is not None:
            self.describer.close()
            self.describer = None
        self.engine = None
