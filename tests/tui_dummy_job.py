"""Small jobs for the TUI tests (registered through ``SEGDECK_EXTRA_JOBS`` so the
``segdeck run`` child process finds them too): :class:`DummyJob` sleeps ``delay``
seconds per image; :class:`CsvJob` takes a CSV file, one item per row, in sub-steps."""

from __future__ import annotations

import time
from typing import Literal

from pydantic import Field

from segdeck.core import imageio
from segdeck.core.jobs.base import Job
from segdeck.core.params import JobParams


class FastSection(JobParams):
    """Options of the fast method."""

    step: int = Field(1, ge=1, le=10, description="step size")


class SlowSection(JobParams):
    """Options of the slow method."""

    factor: float = Field(2.0, ge=1.0, le=10.0, description="slowdown factor")


class DummyParams(JobParams):
    """Test job parameters."""

    delay: float = Field(0.05, ge=0.0, le=5.0, description="seconds of sleep per image")
    method: Literal["fast", "slow"] = Field("fast", description="which method")
    fast: FastSection = Field(default_factory=FastSection)
    slow: SlowSection = Field(default_factory=SlowSection)
    tag: str = Field("t", description="a label written into each output")
    loud: bool = Field(False, description="a switch")
    stability_score_thresh: float = Field(0.3413333333333333, ge=0.0, le=1.0,
                                          description="a long name and a float with many digits")
    overlays: bool = Field(False, description="also write an overlay PNG per image (the preview pane's input)")


class DummyJob(Job):
    name = "tuidummy"
    Params = DummyParams
    description = "Test job: writes each image's mean colour, slowly."

    def process(self, item, data):
        delay = self.params.delay * (self.params.slow.factor if self.params.method == "slow" else 1.0)
        time.sleep(delay)
        return data.reshape(-1, 3).mean(0)

    def write(self, item, result):
        out = f"{self.output_stem(item)}.txt"
        imageio.write_text_atomic(self.job_dir / out, f"{self.params.tag} " + " ".join(f"{v:.2f}" for v in result))
        if not self.params.overlays:
            return [out]
        import numpy as np

        # a 32x48 overlay: the image's mean colour with a red bar whose height counts
        # the overlays written so far (each new output looks different)
        img = np.empty((32, 48, 3), np.uint8)
        img[:] = np.asarray(result, np.float64).clip(0, 255).astype(np.uint8)
        n = len(list(self.job_dir.glob("*.overlay.png")))
        img[: min(32, 4 * (n + 1)), :8] = (255, 0, 0)
        png = f"{self.output_stem(item)}.overlay.png"
        imageio.write_image(self.job_dir / png, img)
        return [out, png]


def tool_screen(job_dir):
    """A stand-in for a job tool screen (the ``t`` hook): dismisses at once with values."""
    from textual.screen import ModalScreen

    class ToolScreen(ModalScreen):
        def __init__(self, job_dir):
            super().__init__()
            self.job_dir = job_dir

        def on_mount(self) -> None:
            self.dismiss({"tag": f"from-{self.job_dir.name[:8]}", "fast": {"step": 7}})

    return ToolScreen(job_dir)


class DeclaredParams(DummyParams):
    """The dummy job's parameters plus a model under another field name."""

    weights: str = Field("sam2.1-tiny", description="a registered model")


def declared_curve(input_path, params, emit=None):
    """A small threshold curve (the ``tui_curve`` of :class:`DeclaredJob`), as a dict."""
    return {"method": params.method, "thresholds": [0.2, 0.4, 0.6], "pairs": [3, 2, 1], "clusters": [1, 1, 1],
            "clustered": [3, 2, 2], "largest": [3, 2, 2], "sample_size": 3, "total": 3, "auto": 0.4}


class DeclaredJob(DummyJob):
    """A job that declares all its TUI behaviour (``Job.tui_*``): no TUI code knows it."""

    name = "tuideclared"
    Params = DeclaredParams
    tui_curve = "tui_dummy_job:declared_curve"
    tui_curve_field = "stability_score_thresh"
    tui_no_curve_methods = {"slow": "slow has no similarity"}
    tui_model_field = "weights"
    tui_tool_screen = "tui_dummy_job:tool_screen"
    tui_field_notes = {"tag": "declared note under the tag"}


class RowsParams(JobParams):
    """Rows of a CSV, in sub-steps."""

    steps: int = Field(3, ge=1, le=500, description="sub-steps per row")
    delay: float = Field(0.02, ge=0.0, le=5.0, description="seconds per sub-step")


class CsvJob(Job):
    """A CSV-driven job for the TUI tests: one item per row of ``id,text``, written as
    ``<id>.txt`` (the text in upper case) after ``steps`` sub-steps ("part k/steps")."""

    name = "tuicsv"
    Params = RowsParams
    description = "Test job: one item per CSV row (id, text), in sub-steps."
    input_help = "a CSV file with columns id, text"
    tui_input_files = (".csv",)
    tui_annotate = "refs"

    @classmethod
    def check_input(cls, input_path):
        from segdeck.core.jobs.items import csv_items

        if not input_path.is_file() or input_path.suffix.lower() != ".csv":
            raise ValueError(f"{input_path.name}: a CSV file (id, text) is expected")
        items = csv_items(input_path, id_column="id")
        if items and "text" not in items[0].row:
            raise ValueError(f"{input_path.name}: no column 'text'")

    def list_items(self):
        from segdeck.core.jobs.items import csv_items

        return csv_items(self.input_path, id_column="id")

    def load(self, item):
        return item.row["text"]

    def process(self, item, data):
        for k in range(self.params.steps):
            time.sleep(self.params.delay)
            self.step(k + 1, self.params.steps, "part")
        return data.upper()

    def write(self, item, result):
        out = f"{self.output_stem(item)}.txt"
        imageio.write_text_atomic(self.job_dir / out, result)
        return [out]
