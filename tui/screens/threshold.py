"""Threshold picker for the cluster job: the curve threshold vs similar pairs.

Push ``ThresholdScreen(curve)`` with a
:class:`segdeck.core.cluster.threshold.ThresholdCurve` (or its ``to_dict()``); it
dismisses with the chosen threshold (float) on Enter, or None on Escape. Rows are the
thresholds (highest on top, as the y axis of the seed's plot), bars the similar
pairs (log scale); the line under the chart shows the estimated clusters, clustered
images and pairs for the whole folder at the highlighted threshold.

:class:`JobThresholdScreen` shows the curve a finished job saved in its folder
(``threshold_curve.json``) and dismisses with ``{"method", "threshold"}`` for the form.

Get a curve before the job runs with
:func:`segdeck.core.cluster.job.sample_curve` (in a worker thread), then start the job
with ``threshold`` set to the returned value.
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from segdeck.core.cluster.threshold import ThresholdCurve


class ThresholdScreen(ModalScreen[float | None]):
    """Pick a similarity threshold with the arrow keys; Enter accepts, Escape cancels."""

    DEFAULT_CSS = """
    ThresholdScreen { align: center middle; }
    #thr-box { width: 90; max-width: 100%; height: auto; max-height: 100%;
               border: round $accent; background: $surface; padding: 0 1; }
    #thr-title { text-style: bold; }
    #thr-status { color: $text; background: $boost; margin-top: 1; }
    #thr-foot { color: $text-muted; }
    """

    BINDINGS = [
        Binding("up,k", "move(1)", "Higher threshold"),
        Binding("down,j", "move(-1)", "Lower threshold"),
        Binding("pageup", "move(5)", "5 steps up", show=False),
        Binding("pagedown", "move(-5)", "5 steps down", show=False),
        Binding("home", "jump('top')", "Highest", show=False),
        Binding("end", "jump('bottom')", "Lowest", show=False),
        Binding("a", "jump('auto')", "Automatic choice"),
        Binding("enter", "accept", "Use this threshold"),
        Binding("escape", "cancel", "Cancel"),
    ]

    #: Rows shown at once (a window around the highlighted threshold).
    WINDOW = 15

    def __init__(self, curve: ThresholdCurve | dict, start: float | None = None):
        super().__init__()
        self.curve = curve if isinstance(curve, ThresholdCurve) else ThresholdCurve.from_dict(curve)
        if not self.curve.thresholds:
            raise ValueError("the threshold curve is empty")
        first = start if start is not None else (self.curve.auto if self.curve.auto is not None else self.curve.thresholds[0])
        self.index = self.curve.index_of(first)

    # ---- view ---------------------------------------------------------------------
    def compose(self) -> ComposeResult:
        c = self.curve
        with Vertical(id="thr-box"):
            yield Static(f"{c.method}: threshold vs similar pairs (sample of {c.sample_size} of {c.total} images)", id="thr-title")
            yield Static(id="thr-chart")
            yield Static(id="thr-status")
            yield Static("↑/↓ (k/j) move · PgUp/PgDn 5 steps · a automatic · Enter use · Esc cancel", id="thr-foot")

    def on_mount(self) -> None:
        self.refresh_view()

    @property
    def threshold(self) -> float:
        """The highlighted threshold."""
        return self.curve.thresholds[self.index]

    def status_text(self) -> str:
        """One line: the highlighted threshold and its estimates for the folder."""
        e = self.curve.estimate(self.index)
        auto = " (automatic choice)" if self.curve.auto is not None and self.curve.index_of(self.curve.auto) == self.index else ""
        return (f"threshold {e['threshold']:.4g}{auto}: ~{e['clusters']:.0f} clusters, "
                f"~{e['clustered']:.0f} images clustered, ~{e['pairs']:.0f} similar pairs")

    def chart(self) -> Table:
        c = self.curve
        n = len(c.thresholds)
        order = list(range(n - 1, -1, -1))  # highest threshold on top
        pos = order.index(self.index)
        lo = max(0, min(pos - self.WINDOW // 2, n - self.WINDOW))
        rows = order[lo:lo + self.WINDOW]
        top = max(1.0, max(math.log10(1 + c.estimate(k)["pairs"]) for k in range(n)))
        table = Table(box=None, padding=(0, 1), show_header=True, header_style="bold")
        table.add_column("threshold", justify="right")
        table.add_column("similar pairs (est.)", ratio=1)
        table.add_column("clusters", justify="right")
        table.add_column("largest", justify="right")
        for k in rows:
            e = c.estimate(k)
            width = int(round(30 * math.log10(1 + e["pairs"]) / top))
            bar = Text("█" * width + f" {e['pairs']:.0f}")
            style = "reverse bold" if k == self.index else ""
            table.add_row(f"{c.thresholds[k]:.4g}", bar, f"{e['clusters']:.0f}", str(c.largest[k]), style=style)
        return table

    def refresh_view(self) -> None:
        self.query_one("#thr-chart", Static).update(self.chart())
        self.query_one("#thr-status", Static).update(self.status_text())

    # ---- actions ------------------------------------------------------------------
    def action_move(self, step: int) -> None:
        self.index = max(0, min(len(self.curve.thresholds) - 1, self.index + int(step)))
        self.refresh_view()

    def action_jump(self, where: str) -> None:
        if where == "top":
            self.index = len(self.curve.thresholds) - 1
        elif where == "bottom":
            self.index = 0
        elif self.curve.auto is not None:
            self.index = self.curve.index_of(self.curve.auto)
        self.refresh_view()

    def action_accept(self) -> None:
        self.dismiss(float(self.threshold))

    def action_cancel(self) -> None:
        self.dismiss(None)


class JobThresholdScreen(ThresholdScreen):
    """The threshold curve saved in a cluster job's folder, opened at the threshold the
    job used; Enter dismisses with ``{"method": ..., "threshold": ...}`` (applied to the
    form for a re-run), Escape with None.

    Raises
    ------
    ValueError
        The folder has no readable ``threshold_curve.json`` (the job was given a
        threshold, or its method has no curve).
    """

    def __init__(self, job_dir: str | Path):
        from segdeck.core.cluster.threshold import CURVE_JSON

        path = Path(job_dir) / CURVE_JSON
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            raise ValueError(f"{Path(job_dir).name} saved no threshold curve "
                             "(its threshold was given, or its method has none)") from None
        names = {f.name for f in dataclasses.fields(ThresholdCurve)}
        chosen = data.get("chosen")
        try:
            curve = ThresholdCurve.from_dict({k: v for k, v in data.items() if k in names})
        except TypeError as exc:
            raise ValueError(f"{path}: not a threshold curve ({exc})") from None
        super().__init__(curve, start=chosen if isinstance(chosen, (int, float)) else None)

    def action_accept(self) -> None:
        self.dismiss({"method": self.curve.method, "threshold": float(self.threshold)})
