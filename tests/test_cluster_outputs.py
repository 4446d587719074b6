"""Cluster job fixes: CSV tables, deep re-runs and "no valid clustering", model selection
scoring, truncated JPEGs, the feature cache under --out, options that were ignored."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from segdeck.core.cluster import deep
from segdeck.core.cluster.cache import CACHE_NAME
from segdeck.core.cluster.job import ClusterJob, ClusterParams
from segdeck.core.cluster.output import PAIRS_NAME, REPORT_NAME, TABLE_NAME
from segdeck.core.jobs.events import Message
from segdeck.core.jobs.runner import job_dir_for, run_job
from tests.test_cluster import scene
from tests.test_cluster_job import _run, _save, folder  # noqa: F401 - the fixture

DEEP_FAST = {"features": "autoencoder", "epochs": 1, "image_size": 16, "latent": 8, "batch": 8, "k_min": 2, "k_max": 4,
             "algorithms": ["kmeans", "gmm"]}


def _read_csv(path):
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


@pytest.mark.parametrize("method", ["dup", "phash"])
def test_clusters_csv_and_pairs_csv_agree_with_the_report(folder, method):  # noqa: F811
    src, _ = folder
    params = ClusterParams(method=method, threshold=None if method == "dup" else 0.84)
    job_dir, _ = _run(src, params)
    report = json.loads((job_dir / REPORT_NAME).read_text())
    rows = _read_csv(job_dir / TABLE_NAME)
    assert {r["input"]: r["cluster"] for r in rows} == report["files"]
    for r in rows:
        if r["cluster"] == "failed":
            assert r["output"] == "" and r["reason"]  # the one-line reason of the manifest
        else:
            assert (job_dir / r["output"]).is_file() and r["output"].startswith(r["cluster"] + "/")
    pairs = _read_csv(job_dir / PAIRS_NAME)
    assert pairs and {p["method"] for p in pairs} == {method}
    stages = {"dup": {"sure", "verified", "link"}, "phash": {"threshold"}}[method]
    for p in pairs:
        assert p["stage"] in stages and 0.0 <= float(p["similarity"]) <= 1.0
        assert p["a"] in report["files"] and p["b"] in report["files"]
    # every cluster is connected by its accepted pairs, and no pair joins two clusters
    # (a threshold method clusters connected components of its pairs)
    for p in pairs:
        if method == "phash":
            assert report["files"][p["a"]] == report["files"][p["b"]] != "outliers"
    clustered = {f for c in report["clusters"] for f in c["files"]}
    in_pairs = {p["a"] for p in pairs} | {p["b"] for p in pairs}
    assert clustered <= in_pairs


def test_truncated_jpeg_fails_with_a_reason_and_no_libjpeg_noise(tmp_path, capfd):
    src = tmp_path / "photos"
    for k in range(3):
        _save(src / f"a{k}.jpg", scene(300 + k, size=160))
    whole = (src / "a0.jpg").read_bytes()
    (src / "cut.jpg").write_bytes(whole[: len(whole) * 2 // 3])
    capfd.readouterr()
    job_dir, summary = _run(src, ClusterParams(method="phash", threshold=0.9))
    err = capfd.readouterr().err
    assert summary.failed == 1 and summary.done == 3
    assert "Premature end of JPEG" not in err and "Corrupt JPEG" not in err
    report = json.loads((job_dir / REPORT_NAME).read_text())
    assert report["files"]["cut.jpg"] == "failed"
    (row,) = [r for r in _read_csv(job_dir / TABLE_NAME) if r["input"] == "cut.jpg"]
    assert "truncated" in row["reason"]


def test_feature_cache_lives_in_the_out_folder(folder, tmp_path):  # noqa: F811
    src, _ = folder
    out = tmp_path / "elsewhere"
    params = ClusterParams(method="phash", threshold=0.9)
    job = ClusterJob(params, src, job_dir_for(ClusterJob, params, src, out))
    run_job(job)
    assert (out / CACHE_NAME).is_file()
    assert [p for p in tmp_path.rglob(CACHE_NAME) if not p.is_relative_to(out)] == []
    assert not (src.parent / "photos.segdeck").exists()


def test_finished_deep_job_reruns_and_resumes(folder):  # noqa: F811
    src, _ = folder
    params = ClusterParams(method="deep", deep=DEEP_FAST)
    job_dir, first = _run(src, params)
    assert first.done == 14
    before = json.loads((job_dir / REPORT_NAME).read_text())
    (job_dir / REPORT_NAME).unlink()
    events = []
    _, again = _run(src, params, sink=events.append)  # every item done: the runner skips setup
    assert not any(isinstance(e, Message) and "no image could be read" in e.text for e in events)
    after = json.loads((job_dir / REPORT_NAME).read_text())
    assert after["files"] == before["files"]


def test_deep_without_a_valid_clustering_puts_everything_in_outliers(tmp_path):
    src = tmp_path / "two"
    _save(src / "a.jpg", scene(1, size=96))
    _save(src / "b.jpg", scene(2, size=96))
    events = []
    job_dir, _ = _run(src, ClusterParams(method="deep", deep=DEEP_FAST), sink=events.append)
    report = json.loads((job_dir / REPORT_NAME).read_text())
    assert report["n_clusters"] == 0 and sorted(report["outliers"]) == ["a.jpg", "b.jpg"]
    assert report["outliers_reason"].startswith("no valid clustering")
    assert all(r["reason"].startswith("no valid clustering") for r in _read_csv(job_dir / TABLE_NAME))
    assert any(isinstance(e, Message) and e.level == "warning" and "no valid clustering" in e.text for e in events)
    assert report["outliers_reason"] == "no valid clustering: 2 images are too few to cluster"


def test_deep_on_one_image_says_so_in_one_sentence(tmp_path):
    src = tmp_path / "one"
    _save(src / "a.jpg", scene(1, size=96))
    job_dir, summary = _run(src, ClusterParams(method="deep"))
    report = json.loads((job_dir / REPORT_NAME).read_text())
    assert summary.status == "done" and report["outliers"] == ["a.jpg"]
    assert report["outliers_reason"] == "no valid clustering: 1 image is too few to cluster"


def _blobs_with_scatter(seed=0):
    rng = np.random.default_rng(seed)
    centres = np.array([[0, 0], [6, 0], [0, 6]], float)
    x = np.concatenate([c + rng.normal(scale=0.5, size=(20, 2)) for c in centres])
    scatter = rng.uniform(-4, 10, size=(15, 2))
    return np.concatenate([x, scatter])


def test_model_selection_charges_noise_and_takes_the_chosen_metric():
    from sklearn.metrics import silhouette_score

    x = _blobs_with_scatter()
    labels, cands, best = deep.select_model(x, ["kmeans", "dbscan"], 2, 5, metric="silhouette")
    xp = deep._prepare(x)
    valid = [c for c in cands if c.valid]
    assert best == max(valid, key=lambda c: c.silhouette)
    keep = labels >= 0  # the winner's silhouette: on its clustered points, times their share
    raw = silhouette_score(xp[keep], labels[keep])
    assert best.silhouette == pytest.approx(raw * keep.mean(), rel=1e-6, abs=1e-9)
    for metric, pick in (("davies_bouldin", min), ("calinski_harabasz", max)):
        _, cands, best = deep.select_model(x, ["kmeans", "dbscan"], 2, 5, metric=metric)
        assert getattr(best, metric) == pick(getattr(c, metric) for c in cands if c.valid)
    with pytest.raises(ValueError, match="metric"):
        deep.select_model(x, ["kmeans"], 2, 3, metric="nope")
    # no valid candidate: every point is noise, no single cluster
    lab, _, none = deep.select_model(np.zeros((2, 3)), ["kmeans"], 2, 3)
    assert none is None and (lab == -1).all()


def test_list_options_are_comma_separated_on_the_cli(tmp_path):
    assert deep.DeepParams(algorithms="kmeans,gmm").algorithms == ["kmeans", "gmm"]
    assert deep.DeepParams(algorithms="kmeans").algorithms == ["kmeans"]
    with pytest.raises(ValueError, match="unknown"):
        deep.DeepParams(algorithms="kmeans,bogus")
    from segdeck.cli import main

    src = tmp_path / "p"
    for k in range(4):
        _save(src / f"{k}.jpg", scene(10 + k, size=64))
    rc = main(["run", "cluster", str(src), "--method", "deep", "--deep.algorithms", "kmeans,gmm",
               "--deep.epochs", "1", "--deep.image-size", "16", "--deep.k-max", "3",
               "--deep.metric", "silhouette", "--events"])
    assert rc == 0
    (job_dir,) = [p for p in (tmp_path / "p.segdeck").iterdir() if p.is_dir()]
    report = json.loads((job_dir / REPORT_NAME).read_text())
    assert report["params"]["deep"]["algorithms"] == ["kmeans", "gmm"]
    assert report["deep"]["metric"] == "silhouette"


def test_dup_says_it_does_not_use_the_batch_size(folder):  # noqa: F811
    src, _ = folder
    events = []
    _run(src, ClusterParams(batch_size=5), sink=events.append)
    assert any(isinstance(e, Message) and "--batch-size 5 is not used" in e.text for e in events)


def test_images_that_cannot_be_placed_end_the_run_with_one_line(tmp_path, monkeypatch):
    """Known defect: ``--output hardlink`` with ``--out`` on another file system placed
    no image ("Invalid cross-device link" per file) and the run still ended ``done``,
    exit 0, with the images missing from ``clusters.csv``. Now the run ends with an
    error (exit 2) whose line says how many images were not placed and why, and
    ``clusters.csv`` lists each with its cluster and the reason."""
    import csv
    import json

    from PIL import Image

    from segdeck.core.cluster import output
    from segdeck.core.cluster.job import ClusterJob, ClusterParams
    from segdeck.core.jobs.runner import job_dir_for, run_job

    src = tmp_path / "photos"
    src.mkdir()
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (64, 64, 3), np.uint8)
    Image.fromarray(base).save(src / "a.png")
    Image.fromarray(base).save(src / "b.png")
    Image.fromarray(rng.integers(0, 255, (64, 64, 3), np.uint8)).save(src / "c.png")
    params = ClusterParams(method="phash", threshold=0.9, output="hardlink")
    job_dir = job_dir_for(ClusterJob, params, src, None)
    real = output._place

    def cross_device(s, dest, mode):
        if s.name == "b.png":
            raise OSError(f"cannot hard-link {s} into {dest.parent} (Invalid cross-device link); hard links need "
                          "the same file system: use --output copy or symlink")
        return real(s, dest, mode)

    monkeypatch.setattr(output, "_place", cross_device)
    summary = run_job(ClusterJob(params, src, job_dir))
    assert summary.status == "error" and summary.exit_code == 2, summary
    assert "1 of 3 images could not be placed" in summary.error and "cross-device" in summary.error
    assert "\n" not in summary.error and "Error:" not in summary.error
    rows = {r["input"]: r for r in csv.DictReader((job_dir / output.TABLE_NAME).open())}
    assert set(rows) == {"a.png", "b.png", "c.png"}
    assert rows["b.png"]["cluster"] == rows["a.png"]["cluster"] == "cluster_0001"
    assert rows["b.png"]["output"] == "" and "cross-device" in rows["b.png"]["reason"]
    report = json.loads((job_dir / output.REPORT_NAME).read_text())
    assert "cross-device" in report["unplaced"]["b.png"]
