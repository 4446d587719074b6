"""A newcomer's pass over ``segdeck run cluster --method deep`` with its default
features (the EfficientNet-Lite0 embedding): what the CLI, the model commands and the
TUI form say and do. Every test here failed before its fix (issue 14)."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from segdeck.core import models
from segdeck.core.cluster import deep

NAME = deep.EFFICIENTNET["name"]


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty model cache; the EfficientNet spec registered."""
    monkeypatch.setenv(models.ENV_MODEL_DIR, str(tmp_path / "models"))
    deep.register_backbones()
    return tmp_path / "models"


def _folder(path, n=2):
    path.mkdir()
    rng = np.random.default_rng(0)
    for k in range(n):
        Image.fromarray(rng.integers(0, 255, (24, 24, 3), dtype=np.uint8)).save(path / f"{k}.png")
    return path


def test_cli_empty_optional_value_means_the_default(tmp_path, capsys):
    """``--deep.embedding-weight ''`` (and ``--threshold ''``) empty the field as the TUI
    form does, instead of 'unable to parse string as a number'; the run name equals the
    default's, and ``--help`` names the empty default instead of 'None'."""
    from segdeck.cli import main
    from segdeck.core.cluster.job import ClusterJob, ClusterParams

    src = _folder(tmp_path / "p")
    out = tmp_path / "out"
    common = ["run", "cluster", str(src), "--method", "deep", "--deep.features", "descriptors",
              "--out", str(out), "--json"]
    rc = main(common + ["--deep.embedding-weight", "", "--threshold", " "])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    summary = json.loads(captured.out.strip().splitlines()[-1])
    expected = ClusterJob.run_name(ClusterParams(method="deep", deep={"features": "descriptors"}))
    assert summary["job_dir"].endswith(expected)
    rc = main(common + ["--deep.embedding-weight", "abc"])
    err = capsys.readouterr().err
    assert rc == 2 and "deep.embedding_weight" in err and len(err.strip().splitlines()) == 1
    with pytest.raises(SystemExit):
        main(["run", "cluster", "--help"])
    helptext = " ".join(capsys.readouterr().out.split())
    assert "(default: empty; '' = empty)" in helptext and "(default: None)" not in helptext
