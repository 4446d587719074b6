"""Shared fixtures: small synthetic images with known regions, temp folders."""

from __future__ import annotations

import os

import numpy as np
import pytest

os.environ.setdefault("QT_QPA_PLATFORM", "offscreen")


@pytest.fixture(autouse=True, scope="session")
def _isolated_state_dir(tmp_path_factory):
    """The recent-jobs registry (and any other segdeck state) goes to a temp folder for
    the whole session, inherited by the ``segdeck run`` child processes the tests start,
    so the tests neither read nor fill the user's own state folder."""
    old = os.environ.get("SEGDECK_STATE_DIR")
    os.environ["SEGDECK_STATE_DIR"] = str(tmp_path_factory.mktemp("segdeck-state"))
    yield
    if old is None:
        os.environ.pop("SEGDECK_STATE_DIR", None)
    else:
        os.environ["SEGDECK_STATE_DIR"] = old


@pytest.fixture
def rng():
    return np.random.default_rng(0)


@pytest.fixture
def three_regions():
    """(64, 96, 3) uint8 RGB image with three flat regions (left red, middle green,
    right blue, 32 columns each) and its (64, 96) int label map 1..3."""
    img = np.zeros((64, 96, 3), np.uint8)
    img[:, :32] = (220, 30, 30)
    img[:, 32:64] = (30, 200, 40)
    img[:, 64:] = (20, 40, 210)
    labels = np.zeros((64, 96), np.int32)
    labels[:, :32], labels[:, 32:64], labels[:, 64:] = 1, 2, 3
    return img, labels


@pytest.fixture
def dummy_job(monkeypatch):
    """Only the TUI tests' quick dummy job (tests/tui_dummy_job.py), here and in child processes."""
    from tui_helpers import DUMMY, TESTS

    from segdeck.core.jobs import registry

    monkeypatch.setattr(registry, "JOBS", {"tuidummy": "tui_dummy_job:DummyJob"})
    monkeypatch.setenv("SEGDECK_EXTRA_JOBS", DUMMY)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(TESTS), os.environ.get("PYTHONPATH")])))
    return "tuidummy"
