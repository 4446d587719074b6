"""Which fields the job form shows: bookkeeping fields the model fills in itself
(``checkpoint_sha256``) or marks hidden are not editable in the form, yet still reach
``job.toml`` and the run name through validation."""

from __future__ import annotations

import hashlib
from typing import Literal

import numpy as np
import pytest
from pydantic import Field, model_validator
from tui_helpers import ready_form

from segdeck.core import imageio
from segdeck.core.jobs import registry
from segdeck.core.params import DERIVED, JobParams, field_specs, to_toml_dict

SIZE = (100, 30)


@pytest.fixture(autouse=True)
def own_recent_jobs(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGDECK_STATE_DIR", str(tmp_path / "state"))


class _Section(JobParams):
    level: int = Field(1, ge=0, description="a level")
    secret: str = Field("x", description="marked hidden", json_schema_extra={"tui": "hidden"})


class _Probe(JobParams):
    path: str | None = Field(None, description="a file")
    path_upper: str | None = Field(None, description="derived: the path in capitals", json_schema_extra=DERIVED)
    name: str = Field("a", description="a plain text setting")
    mode: Literal["a", "b"] = Field("a", description="a choice")
    section: _Section = Field(default_factory=_Section)

    @model_validator(mode="after")
    def _derive(self):
        self.__dict__["path_upper"] = None if self.path is None else self.path.upper()
        return self


def test_hidden_fields_derived_and_marked():
    from segdeck.tui.widgets.param_form import form_hidden_fields

    assert form_hidden_fields(_Probe) == {"path_upper", "section.secret"}
    from tui_dummy_job import DummyParams

    assert form_hidden_fields(DummyParams) == frozenset()  # plain text fields stay


def test_every_job_form_hides_only_bookkeeping():
    """Of the shipped jobs' parameters only ``checkpoint_sha256`` (automask, propagate)
    is left out of the form; the settings next to it (``checkpoint``) stay."""
    from segdeck.tui.widgets.param_form import form_hidden_fields

    expected = {"segment": set(), "automask": {"checkpoint_sha256"}, "cluster": set(), "describe": set(),
                "propagate": {"checkpoint_sha256"}}
    for name, hidden in expected.items():
        if name not in registry.job_names():
            continue
        try:
            cls = registry.get_job_class(name)
        except ImportError:
            continue
        assert set(form_hidden_fields(cls.Params)) == hidden, name
        names = {s.name for s in field_specs(cls.Params)}
        assert hidden <= names
        if "checkpoint" in names:
            assert "checkpoint" not in form_hidden_fields(cls.Params)


@pytest.mark.asyncio
@pytest.mark.timeout(90)
async def test_automask_form_has_no_sha_field_but_params_keep_it(tmp_path, monkeypatch):
    """Known defect: the automask form showed ``checkpoint_sha256`` as an editable field
    (whatever was typed was replaced by the file's hash). It is gone from the form; a
    checkpoint typed in the form still gives its sha256 in the validated params, in
    ``job.toml``'s dict and in the run name."""
    from textual.widgets import Input

    from segdeck.tui.app import SegdeckApp

    if "automask" not in registry.job_names():
        pytest.skip("no automask job in this install")
    photos = tmp_path / "photos"
    photos.mkdir()
    imageio.write_image(photos / "a.png", np.zeros((8, 8, 3), np.uint8))
    ckpt = tmp_path / "tuned.pt"
    ckpt.write_bytes(b"not really weights, only hashed")
    sha = hashlib.sha256(ckpt.read_bytes()).hexdigest()
    cls = registry.get_job_class("automask")
    app = SegdeckApp(photos)
    async with app.run_test(size=SIZE) as pilot:
        screen, form = await ready_form(app, pilot, job="automask")
        assert not screen.query("#p-checkpoint_sha256"), "checkpoint_sha256 is an editable field"
        assert form.spec("checkpoint_sha256") is None
        assert screen.query("#p-checkpoint")  # the setting itself stays
        screen.query_one("#p-checkpoint", Input).value = str(ckpt)
        await pilot.pause()
        for _ in range(20):
            if form.params is not None and form.params.checkpoint_sha256:
                break
            await pilot.pause(0.1)
        assert form.params is not None, form.errors
        assert form.params.checkpoint_sha256 == sha
        assert to_toml_dict(form.params)["checkpoint_sha256"] == sha
        assert f"ckpt{sha[:8]}" in cls.run_name(form.params)
        assert "checkpoint_sha256" not in form.launch_values()  # the run computes it again


@pytest.mark.asyncio
@pytest.mark.timeout(60)
async def test_hints_use_the_form_width_at_80_columns(tmp_path, dummy_job):
    """At 80 columns the hint under a field was indented by the label column (18 cells of
    a 48-cell form), so long help ran to 20 lines (cluster's ``method``); now hints, notes
    and errors use the form's width there, and stay under the inputs on a wide terminal."""
    from segdeck.tui.app import SegdeckApp

    photos = tmp_path / "photos"
    photos.mkdir()
    imageio.write_image(photos / "a.png", np.zeros((8, 8, 3), np.uint8))
    for size, narrow in (((80, 40), True), ((160, 50), False)):
        app = SegdeckApp(photos)
        async with app.run_test(size=size) as pilot:
            screen, form = await ready_form(app, pilot)
            await pilot.pause()
            hint = screen.query_one("#row-p-delay .hint")
            field_width = form.scrollable_content_region.width
            if narrow:
                assert hint.content_region.width >= field_width - 4, (hint.content_region, field_width)
            else:
                assert hint.content_region.x - form.scrollable_content_region.x >= 18


@pytest.mark.asyncio
@pytest.mark.timeout(90)
async def test_cluster_deep_algorithms_list_is_one_line_and_round_trips(tmp_path):
    """Known defect: a list field (the cluster job's ``deep.algorithms``) was shown as
    multi-line TOML (``[\\n    "kmeans",\\n ...``) in a one-line input: the row drew
    over its neighbours and the text could not be edited. It is one line now, the
    default validates back to the same list, and a comma-separated edit is taken."""
    from textual.widgets import Input, Select

    from segdeck.tui.app import SegdeckApp
    from segdeck.tui.widgets.param_form import field_id

    if "cluster" not in registry.job_names():
        pytest.skip("no cluster job in this install")
    photos = tmp_path / "photos"
    photos.mkdir()
    imageio.write_image(photos / "a.png", np.zeros((8, 8, 3), np.uint8))
    app = SegdeckApp(photos)
    async with app.run_test(size=SIZE) as pilot:
        screen, form = await ready_form(app, pilot, job="cluster")
        screen.query_one(f"#{field_id('method')}", Select).value = "deep"
        for _ in range(40):
            if form.widget_for("deep.algorithms") is not None:
                break
            await pilot.pause(0.1)
        widget = form.widget_for("deep.algorithms")
        assert isinstance(widget, Input)
        default = form.spec("deep.algorithms").default
        assert "\n" not in widget.value and all(a in widget.value for a in default), widget.value
        assert form.params is not None and form.params.deep.algorithms == default, form.errors
        widget.value = "kmeans, gmm"
        for _ in range(20):
            await pilot.pause(0.1)
            if form.params is not None and form.params.deep.algorithms == ["kmeans", "gmm"]:
                break
        assert form.params is not None and form.params.deep.algorithms == ["kmeans", "gmm"], form.errors
        assert form.launch_values()["deep.algorithms"] == ["kmeans", "gmm"]
