"""Issue 15, the TUI as a newcomer sees it: the 80x24 layout (Run line and footer on
screen, panes that grow with the terminal), full job names, jobs run with ``--out``
elsewhere listed through the recent-jobs registry, the preview pane (half-block
pictures of an image, its overlay, a running job's newest output), the job summary,
and the model picker / threshold curve offered only where they apply.
"""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
from tui_helpers import ready_form, wait_for

from segdeck.core import imageio
from segdeck.core.jobs import registry


@pytest.fixture(autouse=True)
def own_recent_jobs(tmp_path, monkeypatch):
    """Each test its own recent-jobs registry (the TUI lists what is recorded there)."""
    monkeypatch.setenv("SEGDECK_STATE_DIR", str(tmp_path / "state"))
    monkeypatch.setenv("SEGDECK_PREVIEW", "halfcell")


@pytest.fixture
def photos(tmp_path):
    root = tmp_path / "photos"
    root.mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):
        img = np.zeros((24, 32, 3), np.uint8)
        img[:] = rng.integers(40, 200, 3, dtype=np.uint8)
        img[8:16, 8:24] = (0, 200, 0)
        imageio.write_image(root / f"img{i:02d}.png", img)
    return root


def notes(app) -> list[str]:
    return [str(n.message) for n in app._notifications]


def visible_region(widget):
    """The widget's region on screen, clipped by its containers (empty: not shown)."""
    return widget.screen.find_widget(widget).region if widget.display else None


# ---- layout ------------------------------------------------------------------------


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_80x24_shows_run_line_and_footer_and_panes_grow(photos, dummy_job):
    from textual.widgets import Button, Footer

    from segdeck.tui.app import SegdeckApp

    app = SegdeckApp(photos)
    async with app.run_test(size=(80, 24)) as pilot:
        screen, form = await ready_form(app, pilot)
        await pilot.pause()
        run = screen.query_one("#run", Button)
        footer = screen.query_one(Footer)
        r_run = screen.find_widget(run).region
        r_footer = screen.find_widget(footer).region
        assert r_footer.y == 23 and r_footer.height == 1
        assert r_run.height == 1 and r_run.bottom <= 22, r_run
        # the form shows fields, one line each (hints hidden on a short terminal)
        fields = [w for w in form.query(".field") if w.display]
        assert len(fields) >= 3
        shown = [f for f in fields if screen.find_widget(f).region.height > 0] if fields else []
        assert shown and all(screen.find_widget(f).region.height == 1 for f in shown[:3])
        assert not screen.query_one("#preview").display  # narrow: preview hidden ...
        jobs_h24 = screen.query_one("#jobs").size.height
        log_h24 = screen.query_one("#log").size.height
        await pilot.press("f3")  # ... until asked for: it shows the folder's first image
        await pilot.pause()
        assert screen.query_one("#preview").display
        await wait_for(pilot, lambda: screen.query_one("#preview").path == photos / "img00.png", what="preview")
        await pilot.press("f3")
        await pilot.pause()
        assert not screen.query_one("#preview").display
    app = SegdeckApp(photos)
    async with app.run_test(size=(160, 50)) as pilot:
        screen, form = await ready_form(app, pilot)
        await pilot.pause()
        assert screen.query_one("#preview").display
        assert screen.query_one("#jobs").size.height >= jobs_h24 + 4
        assert screen.query_one("#log").size.height >= log_h24 + 3
        assert screen.find_widget(screen.query_one("#run")).region.bottom < 49


def test_short_name_middle_ellipsis():
    from segdeck.tui.widgets.job_list import short_name

    a = "segment-chan_vese-it500-dt0.1-da249312"
    b = "segment-chan_vese-it500-dt0.1-494be4bf"
    assert short_name(a, 60) == a
    sa, sb = short_name(a, 24), short_name(b, 24)
    assert len(sa) == 24 and sa.startswith("segment-…") and sa.endswith("dt0.1-da249312")
    assert sa != sb and sb.endswith("494be4bf")


@pytest.mark.asyncio
@pytest.mark.timeout(90)
async def test_full_names_and_out_elsewhere_listed_in_new_tui(tmp_path, photos, dummy_job):
    """A job run from the CLI with ``--out`` in an unrelated folder is listed by a TUI
    started afterwards on another folder (the recent-jobs registry), with its full name
    on a wide terminal, and its summary."""
    from segdeck.tui.app import SegdeckApp
    from segdeck.tui.widgets.job_list import JobList
    from segdeck.tui.widgets.job_summary import JobSummary

    elsewhere = tmp_path / "far" / "away"
    out = subprocess.run(
        [sys.executable, "-m", "segdeck", "run", "tuidummy", str(photos), "--out", str(elsewhere),
         "--set", "delay=0", "--set", 'tag="far"'],
        capture_output=True, text=True, timeout=60,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    (job_dir,) = [p for p in elsewhere.iterdir() if (p / "job.toml").is_file()]
    other = tmp_path / "other"
    other.mkdir()
    app = SegdeckApp(other)
    async with app.run_test(size=(160, 40)) as pilot:
        await ready_form(app, pilot)
        jobs = app.screen.query_one(JobList)
        await wait_for(pilot, lambda: job_dir.resolve() in jobs.snapshots, timeout=30, what="--out job listed")
        await wait_for(pilot, lambda: jobs.snapshots[job_dir.resolve()].state == "done", what="done")
        row = [str(c) for c in jobs.get_row(str(job_dir.resolve()))]
        assert row[0] == job_dir.name  # in full
        summary = app.screen.query_one(JobSummary)
        await wait_for(pilot, lambda: "per item: median" in str(summary.render()), what="summary")
        text = str(summary.render())
        assert job_dir.name in text.replace("\n", "") or job_dir.name in str(summary.content)
        assert "6 done · 0 failed · 0 to do · 6 items" in text


# ---- preview -----------------------------------------------------------------------


def halfblock_colors(widget) -> set:
    """Colours of the half-block cells the widget draws now (empty: no half-blocks)."""
    from textual.geometry import Region

    colors = set()
    for strip in widget.render_lines(Region(0, 0, widget.size.width, widget.size.height)):
        for seg in strip:
            if seg.text.strip() == "▀" * len(seg.text.strip()) and seg.text.strip() and seg.style:
                for c in (seg.style.color, seg.style.bgcolor):
                    if c is not None:
                        colors.add(c.get_truecolor().hex)
    return colors


@pytest.mark.asyncio
@pytest.mark.timeout(120)
async def test_preview_overlay_halfblocks_follows_running_job(photos, dummy_job):
    from textual.widgets import Input, Switch

    from segdeck.tui.app import SegdeckApp
    from segdeck.tui.widgets.folder_tree import FolderTree
    from segdeck.tui.widgets.job_list import JobList
    from segdeck.tui.widgets.preview import PreviewPane

    app = SegdeckApp(photos)
    async with app.run_test(size=(160, 50)) as pilot:
        screen, form = await ready_form(app, pilot)
        preview = screen.query_one(PreviewPane)
        # a selected folder: its first image in half-blocks
        screen.query_one(FolderTree).focus()
        await pilot.press("down", "up")
        await wait_for(pilot, lambda: preview.path == photos / "img00.png" and preview._image_widget is not None
                       and halfblock_colors(preview._image_widget), what="image preview")
        assert type(preview._image_widget).__name__ == "HalfcellImage"
        assert "#00c800" in halfblock_colors(preview._image_widget)  # the green square
        await pilot.press("right_square_bracket")  # ]: the next image
        await wait_for(pilot, lambda: preview.path == photos / "img01.png", what="next image")
        await pilot.press("left_square_bracket")
        await wait_for(pilot, lambda: preview.path == photos / "img00.png", what="previous image")
        # a running job: its newest overlay, followed as it writes new ones
        screen.query_one("#p-delay", Input).value = "1.0"
        screen.query_one("#p-overlays", Switch).value = True
        await wait_for(pilot, lambda: form.params is not None and form.params.overlays, what="form")
        await pilot.press("ctrl+r")
        jobs = screen.query_one(JobList)
        await wait_for(pilot, lambda: jobs.selected_snapshot is not None, what="job row")
        jobs.focus()
        await wait_for(pilot, lambda: preview.path is not None and preview.path.name.endswith(".overlay.png"),
                       timeout=30, what="first overlay")
        first = preview.path
        await wait_for(pilot, lambda: "#ff0000" in halfblock_colors(preview._image_widget), what="overlay drawn")
        await wait_for(pilot, lambda: preview.path != first and preview.path.name.endswith(".overlay.png"),
                       timeout=30, what="newer overlay while running")
        assert jobs.selected_snapshot.state == "running"
        await wait_for(pilot, lambda: preview.path is not None and preview.path.name.endswith(".overlay.png")
                       and "#ff0000" in halfblock_colors(preview._image_widget), what="newer overlay drawn")
        jobs.focus()
        await pilot.press("x")
        await wait_for(pilot, lambda: jobs.selected_snapshot.state == "cancelled", timeout=30, what="cancelled")
        # the folder's image and, with v, its overlay from the selected job
        screen.query_one(FolderTree).focus()
        await pilot.press("down", "up")
        await wait_for(pilot, lambda: preview.path == photos / "img00.png", what="image again")
        await pilot.press("v")
        await wait_for(pilot, lambda: preview.path is not None and preview.path.name == "img00.png.overlay.png",
                       what="overlay of the image")
        await wait_for(pilot, lambda: "#ff0000" in halfblock_colors(preview._image_widget), what="overlay drawn")
        await pilot.press("v")
        await wait_for(pilot, lambda: preview.path == photos / "img00.png", what="back to the image")


def test_label_map_colored_and_newest_output(tmp_path):
    from segdeck.tui.widgets.preview import colorize_labels, load_preview, newest_output

    labels = np.zeros((10, 12), np.uint16)
    labels[2:5, 2:5] = 1
    labels[6:9, 6:11] = 300
    rgb = colorize_labels(labels)
    assert rgb.shape == (10, 12, 3) and rgb.dtype == np.uint8
    assert (rgb[0, 0] == 0).all() and rgb[3, 3].max() > 0 and not (rgb[3, 3] == rgb[7, 7]).all()
    imageio.write_image(tmp_path / "a.labels.png", labels)
    im = load_preview(tmp_path / "a.labels.png", (6, 5))
    assert im.mode == "RGB" and im.size[0] <= 6 and im.size[1] <= 5
    assert newest_output(tmp_path) == tmp_path / "a.labels.png"
    imageio.write_image(tmp_path / "a.overlay.png", np.zeros((4, 4, 3), np.uint8))
    assert newest_output(tmp_path) == tmp_path / "a.overlay.png"  # overlays first
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(OSError):
        load_preview(tmp_path / "bad.png", (10, 10))


# ---- model picker / threshold curve only where they apply ---------------------------


@pytest.mark.asyncio
@pytest.mark.timeout(90)
async def test_models_and_curve_only_where_they_apply(photos):
    if "cluster" not in registry.job_names():
        pytest.skip("the cluster job is not importable in this install")
    from textual.widgets import Select

    from segdeck.tui.app import SegdeckApp
    from segdeck.tui.screens.models import ModelScreen

    app = SegdeckApp(photos)
    async with app.run_test(size=(120, 40)) as pilot:
        screen, form = await ready_form(app, pilot, job="cluster")
        assert form.params.method == "dup"
        from textual.widgets import Static

        # the threshold methods explained in plain words
        method_note = str(screen.query_one("#note-p-method", Static).render())
        assert "threshold methods" in method_note and "pairs at or above the threshold" in method_note
        screen.query_one("#folders").focus()
        await pilot.press("m")
        await wait_for(pilot, lambda: any("uses no model" in n for n in notes(app)), what="no model field")
        assert not isinstance(app.screen, ModelScreen)
        assert not any("has no model field" in n for n in notes(app))
        # Ctrl+T on dup: said at once, nothing computed
        await pilot.press("ctrl+t")
        await wait_for(pilot, lambda: any("no threshold curve" in n for n in notes(app)), what="dup refusal")
        assert not any("computing" in n for n in notes(app)) and not form.loading
        # deep: the pretrained networks of its features are offered
        screen.query_one("#p-method", Select).value = "deep"
        await wait_for(pilot, lambda: form.params is not None and form.params.method == "deep", what="deep")
        screen.query_one("#folders").focus()
        await pilot.press("m")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelScreen) and app.screen.rows, what="networks")
        names = [r[0].name for r in app.screen.rows]
        assert names == ["efficientnet-lite0", "torchvision-resnet18"]
        assert app.screen.highlighted == "efficientnet-lite0"  # the form's default features
        app.screen.query_one("DataTable").move_cursor(row=1)
        await pilot.pause()
        await pilot.press("enter")
        await wait_for(pilot, lambda: form.params is not None and form.params.deep.features == "resnet18",
                       what="features applied")
        # the autoencoder with the perceptual loss: m offers that loss's backbone instead
        form.apply_values({"deep": {"features": "autoencoder", "loss": "perceptual"}})
        await wait_for(pilot, lambda: form.params is not None and form.params.deep.loss == "perceptual",
                       what="perceptual loss")
        screen.query_one("#folders").focus()
        await pilot.press("m")
        await wait_for(pilot, lambda: isinstance(app.screen, ModelScreen) and app.screen.rows
                       and app.screen.rows[0][0].name == "torchvision-vgg19", what="backbones")
        assert [r[0].name for r in app.screen.rows] == ["torchvision-vgg19", "torchvision-resnet18"]
        app.screen.query_one("DataTable").move_cursor(row=1)
        await pilot.pause()
        await pilot.press("enter")
        await wait_for(pilot, lambda: form.params is not None and form.params.deep.backbone == "resnet18",
                       what="backbone applied")
        assert form.params.deep.features == "autoencoder"


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_threshold_curve_is_a_plot(tmp_path):
    """The picker draws the curve with textual-plotext (braille dots), the highlighted
    threshold moves with the keys and the estimates line follows it."""
    pytest.importorskip("segdeck.core.cluster.threshold")
    from textual.app import App
    from textual.geometry import Region
    from textual_plotext import PlotextPlot

    from segdeck.tui.screens.threshold import ThresholdScreen

    thresholds = [0.5, 0.6, 0.7, 0.8, 0.9]
    curve = {"method": "phash", "thresholds": thresholds, "pairs": [40, 20, 10, 4, 1],
             "clusters": [1, 3, 5, 4, 1], "clustered": [20, 18, 14, 8, 2], "largest": [20, 8, 4, 2, 2],
             "sample_size": 20, "total": 20, "auto": 0.7}
    picked = []

    class PlotApp(App):
        def on_mount(self):
            self.push_screen(ThresholdScreen(curve), picked.append)

    app = PlotApp()
    async with app.run_test(size=(110, 40)) as pilot:
        await pilot.pause()
        screen = app.screen
        assert isinstance(screen, ThresholdScreen) and screen.threshold == 0.7
        plot = screen.query_one("#thr-plot", PlotextPlot)
        assert plot.size.height >= 8

        def text():
            return "\n".join(s.text for s in plot.render_lines(Region(0, 0, plot.size.width, plot.size.height)))

        drawn = text()
        assert any(0x2800 < ord(ch) <= 0x28FF for ch in drawn), drawn  # braille curve dots
        assert "threshold" in drawn
        assert screen.series()["threshold"] == thresholds
        assert "0.7" in screen.status_text()
        await pilot.press("right")
        assert screen.threshold == 0.8 and "0.8" in screen.status_text()
        assert text() != drawn  # the highlighted threshold's line moved
        await pilot.press("enter")
        await pilot.pause()
    assert picked == [0.8]


def test_terminal_graphics_choice(monkeypatch):
    """Kitty / Sixel are asked for only where the terminal hints at them (the query
    must run before Textual starts); plain terminals and pipes get half-blocks."""
    from segdeck.tui.widgets import preview

    assert preview._graphics_hinted({"TERM": "xterm-kitty"})
    assert preview._graphics_hinted({"TERM_PROGRAM": "WezTerm"})
    assert preview._graphics_hinted({"TERM": "foot"})
    assert not preview._graphics_hinted({"TERM": "xterm-256color"})
    assert not preview._graphics_hinted({"TERM": "tmux-256color", "TERM_PROGRAM": "tmux"})
    import io

    monkeypatch.setattr(sys, "__stdout__", io.StringIO())  # output into a pipe: no terminal to ask
    monkeypatch.setenv("SEGDECK_PREVIEW", "auto")
    monkeypatch.setenv("TERM", "xterm-kitty")
    assert preview.prepare_terminal_graphics() == "halfcell"
    monkeypatch.setenv("SEGDECK_PREVIEW", "halfcell")
    assert preview.image_widget_class().__name__ == "HalfcellImage"
