"""Threshold picker for the cluster job: the curve threshold vs similar pairs.

Push ``ThresholdScreen(curve)`` with a
:class:`segdeck.core.cluster.threshold.ThresholdCurve` (or its ``to_dict()``); it
dismisses with the chosen threshold (float) on Enter, or None on Escape. The curve is
a plot (`textual-plotext <https://github.com/Textualize/textual-plotext>`_): the
threshold on x, the estimated similar pairs and clusters for the whole folder on y
(log scale), the highlighted threshold as a vertical line and the automatic choice as
a dashed one; the line under the plot gives the estimates at the highlighted threshold.

:class:`JobThresholdScreen` shows the curve a finished job saved in its folder
(``threshold_curve.json``) and dismisses with ``{"method", "threshold"}`` for the form.

Get a curve before the job runs with
:func:`segdeck.core.cluster.job.sample_curve` (in a worker thread), then start the job
with ``threshold`` set to the returned value.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static
from textual_plotext import PlotextPlot

from segdeck.core.cluster.threshold import ThresholdCurve


class ThresholdScreen(ModalScreen[float | None]):
    """Pick a similarity threshold with the arrow keys; Enter accepts, Escape cancels."""

    CSS_PATH = "threshold.tcss"

    BINDINGS = [
        Binding("up,k,right,l", "move(1)", "Higher threshold"),
        Binding("down,j,left,h", "move(-1)", "Lower threshold"),
        Binding("pageup", "move(5)", "5 steps up", show=False),
        Binding("pagedown", "move(-5)", "5 steps down", show=False),
        Binding("home", "jump('top')", "Highest", show=False),
        Binding("end", "jump('bottom')", "Lowest", show=False),
        Binding("a", "jump('auto')", "Automatic choice"),
        Binding("enter", "accept", "Use this threshold"),
        Binding("escape", "cancel", "Cancel"),
    ]

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
            yield PlotextPlot(id="thr-plot")
            yield Static(id="thr-status")
            yield Static("→/↑ (l/k) higher · ←/↓ (h/j) lower · PgUp/PgDn 5 steps · a automatic · "
                         "Enter use · Esc cancel", id="thr-foot")

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

    def series(self) -> dict[str, list[float]]:
        """The plotted data: thresholds (ascending) and, per threshold, the folder's
        estimated similar pairs and clusters (each + 1, for the log axis)."""
        c = self.curve
        order = sorted(range(len(c.thresholds)), key=lambda k: c.thresholds[k])
        est = [c.estimate(k) for k in order]
        return {
            "threshold": [float(c.thresholds[k]) for k in order],
            "pairs": [1.0 + max(0.0, e["pairs"]) for e in est],
            "clusters": [1.0 + max(0.0, e["clusters"]) for e in est],
        }

    def draw_plot(self) -> None:
        """(Re)draw the curve with the highlighted threshold."""
        plot = self.query_one("#thr-plot", PlotextPlot)
        plt = plot.plt
        plt.clear_data()
        plt.clear_figure()
        data = self.series()
        xs = data["threshold"]
        plt.plot(xs, data["pairs"], marker="braille", label="similar pairs + 1", color="cyan")
        plt.plot(xs, data["clusters"], marker="braille", label="clusters + 1", color="green")
        plt.yscale("log")
        if self.curve.auto is not None:
            plt.vline(float(self.curve.auto), color="gray")
        plt.vline(float(self.threshold), color="red")
        plt.xlabel("threshold (red: highlighted, gray: automatic)")
        if len(xs) > 1 and xs[0] != xs[-1]:
            plt.xlim(xs[0], xs[-1])
        plot.refresh()

    def refresh_view(self) -> None:
        self.draw_plot()
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
