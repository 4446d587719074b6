"""The ``automask`` job end to end through the real model loading path (random-weight
SAM-HQ vit_tiny checkpoint, registered with its sha256), plus params and presets."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segdeck.core import models as M
from segdeck.core.jobs.registry import get_job_class
from segdeck.core.params import field_specs, resolve


def test_params_presets_and_fields():
    cls = get_job_class("automask")
    names = [s.name for s in field_specs(cls.Params)]
    for f in ["model", "points_per_side", "points_per_batch", "pred_iou_thresh", "stability_score_thresh",
              "stability_score_offset", "box_nms_thresh", "crop_n_layers", "crop_nms_thresh", "crop_overlap_ratio",
              "crop_n_points_downscale_factor", "min_mask_region_area", "output_mode", "use_m2m", "hq_token_only",
              "multimask_output", "filters.min_area", "overlay.format"]:
        assert f in names, f
    model = next(s for s in field_specs(cls.Params) if s.name == "model")
    assert model.kind == "choice" and "sam2.1-large" in model.choices and "sam-hq-vit_h" in model.choices
    dense = resolve(cls.Params, "automask", preset="dense")
    assert (dense.points_per_side, dense.crop_n_layers, dense.pred_iou_thresh, dense.stability_score_thresh,
            dense.min_mask_region_area, dense.box_nms_thresh) == (64, 0, 0.85, 0.90, 500, 0.7)
    default = resolve(cls.Params, "automask", preset="default")
    assert default.points_per_side == 32 and default.model == "sam2.1-tiny"
    hq = resolve(cls.Params, "automask", preset="sam-hq-filters")
    assert hq.filters.enabled and hq.model == "sam-hq-vit_b"
    from segdeck.core.errors import ParamsError

    with pytest.raises(ParamsError):
        resolve(cls.Params, "automask", overrides={"model": "nope"})
    with pytest.raises(ParamsError):
        resolve(cls.Params, "automask", overrides={"points_per_side": 0})


def test_defaults_are_the_installed_official_generators():
    """Every generator default, per family, equals the installed official signature's."""
    import inspect

    from segdeck.core.automask import generator_params
    from segdeck.core.sam.params import FAMILY_ONLY

    sam2_gen = pytest.importorskip("sam2.automatic_mask_generator").SAM2AutomaticMaskGenerator
    hq_gen = pytest.importorskip("segment_anything_hq.automatic_mask_generator").SamAutomaticMaskGenerator
    gp = generator_params(get_job_class("automask").Params())
    for family, cls in (("sam2", sam2_gen), ("sam-hq", hq_gen)):
        sig = inspect.signature(cls.__init__).parameters
        resolved = gp.for_family(family)
        kwargs = gp.generator_kwargs(family)
        assert set(kwargs) <= set(sig), set(kwargs) - set(sig)  # the official class takes them all
        for name, param in sig.items():
            if name in ("self", "model", "kwargs") or param.default is inspect.Parameter.empty:
                continue
            if FAMILY_ONLY.get(name, family) != family:
                continue
            assert getattr(resolved, name) == pytest.approx(param.default) if param.default is not None \
                else getattr(resolved, name) is None, (family, name)
            assert kwargs[name] == param.default or kwargs[name] == pytest.approx(param.default), (family, name)
    assert gp.for_family("sam2").pred_iou_thresh == 0.8 and gp.for_family("sam-hq").pred_iou_thresh == 0.88
    # an explicit value wins over the family default
    explicit = resolve(get_job_class("automask").Params, "automask", overrides={"pred_iou_thresh": 0.5})
    assert generator_params(explicit).for_family("sam2").pred_iou_thresh == 0.5


def test_point_grids_file(tmp_path):
    from segdeck.core.errors import ParamsError
    from segdeck.core.sam.params import GeneratorParams, read_point_grids

    cls = get_job_class("automask")
    one = tmp_path / "grid.txt"
    one.write_text("# x y, normalised\n0.5 0.5\n0.25,0.75\n")
    grids = read_point_grids(one)
    assert len(grids) == 1 and grids[0].tolist() == [[0.5, 0.5], [0.25, 0.75]] and grids[0].dtype == np.float32
    two = tmp_path / "two.txt"
    two.write_text("0.5 0.5\n\n0.1 0.1\n0.9 0.9\n")
    assert [len(g) for g in read_point_grids(two, crop_n_layers=1)] == [1, 2]
    npy = tmp_path / "g.npy"
    np.save(npy, np.array([[0.1, 0.2]]))
    assert GeneratorParams(point_grids=str(npy)).grids()[0].tolist() == [[pytest.approx(0.1), pytest.approx(0.2)]]
    kw = GeneratorParams(point_grids=str(one)).generator_kwargs("sam2")
    assert kw["points_per_side"] is None and len(kw["point_grids"]) == 1
    p = resolve(cls.Params, "automask", overrides={"point_grids": str(one)})
    assert cls.run_name(p).startswith("automask-sam2.1-tiny-grid-")
    bad = tmp_path / "bad.txt"
    for text, msg in (("0.5\n", "line 1: expected 'x y'"), ("1.5 0.2\n", "normalised to"), ("", "no point")):
        bad.write_text(text)
        with pytest.raises(ParamsError, match=msg):
            resolve(cls.Params, "automask", overrides={"point_grids": str(bad)})
    with pytest.raises(ParamsError, match="not found"):
        resolve(cls.Params, "automask", overrides={"point_grids": str(tmp_path / "nope.txt")})
    with pytest.raises(ParamsError, match="needs 2"):
        resolve(cls.Params, "automask", overrides={"point_grids": str(one), "crop_n_layers": 1})


def test_export_options_do_not_change_the_run_folder():
    cls = get_job_class("automask")
    a = resolve(cls.Params, "automask")
    b = resolve(cls.Params, "automask", overrides={"export.formats": "coco,masks"})
    assert b.export.formats == ["coco", "masks"] and cls.run_name(a) == cls.run_name(b)
    c = resolve(cls.Params, "automask", overrides={"points_per_side": 16})
    assert cls.run_name(c) != cls.run_name(a)


def _folder(tmp_path):
    import cv2
    import skimage.data

    from segdeck.core import imageio

    d = tmp_path / "photos"
    (d / "sub").mkdir(parents=True)
    imageio.write_image(d / "astronaut.png", cv2.resize(skimage.data.astronaut(), (200, 150)))
    imageio.write_image(d / "sub" / "coffee.png", cv2.resize(skimage.data.coffee(), (160, 120)))
    return d


def test_offline_job_stops_before_first_image(tmp_path, monkeypatch):
    from segdeck.core.jobs.runner import job_dir_for, run_job

    monkeypatch.setenv(M.ENV_MODEL_DIR, str(tmp_path / "empty-cache"))
    for var in ("HTTPS_PROXY", "HTTP_PROXY", "https_proxy", "http_proxy"):
        monkeypatch.setenv(var, "http://127.0.0.1:9")
    cls = get_job_class("automask")
    params = resolve(cls.Params, "automask", overrides={"model": "sam2.1-tiny", "device": "cpu"})
    folder = _folder(tmp_path)
    job = cls(params, folder, job_dir_for(cls, params, folder, tmp_path / "out"))
    summary = run_job(job)
    assert summary.status == "error" and summary.done == 0 and summary.failed == 0
    assert "segdeck models import sam2.1-tiny FILE" in summary.error
    assert "https://dl.fbaipublicfiles.com" in summary.error and "\n" not in summary.error
    assert not list(job.job_dir.glob("*.labels.png"))


@pytest.mark.slow
def test_automask_job_end_to_end(tmp_path):
    pytest.importorskip("segment_anything_hq")
    from test_sam import install_random_model, restore_spec

    from segdeck.core.jobs.runner import job_dir_for, run_job
    from segdeck.core.sam import clear_engine_cache

    mp = pytest.MonkeyPatch()
    mp.setenv(M.ENV_MODEL_DIR, str(tmp_path / "models"))
    try:
        install_random_model("sam-hq-vit_tiny", tmp_path / "models")
        clear_engine_cache()
        cls = get_job_class("automask")
        # random weights pass no quality threshold: switch them off so masks come out
        params = resolve(cls.Params, "automask", overrides={
            "model": "sam-hq-vit_tiny", "device": "cpu", "points_per_side": 2, "pred_iou_thresh": 0.0,
            "stability_score_thresh": 0.0, "box_nms_thresh": 1.0, "output_mode": "binary_mask",
            "export.formats": "coco,masks,yolo-seg", "export.segmentation": "polygons"})
        folder = _folder(tmp_path)
        job = cls(params, folder, job_dir_for(cls, params, folder, tmp_path / "out"))
        summary = run_job(job)
        assert summary.status == "done" and summary.done == 2, summary
        d = job.job_dir
        for stem, (h, w) in (("astronaut.png", (150, 200)), ("sub__coffee.png", (120, 160))):
            from segdeck.core import imageio

            labels = imageio.read_label_map(d / f"{stem}.labels.png")
            assert labels.shape == (h, w) and labels.max() >= 1
            raw = np.load(d / "masks" / f"{stem}.npz")
            n = int(raw["shape"][0])
            assert n >= 1 and raw["boxes_xyxy"].shape == (n, 4) and raw["predicted_iou"].shape == (n,)
            masks = np.unpackbits(raw["packed"], axis=1, count=h * w).reshape(n, h, w).astype(bool)
            csv_rows = (d / f"{stem}.regions.csv").read_text().strip().splitlines()
            assert "predicted_iou" in csv_rows[0] and len(csv_rows) == n + 1  # filters off: every mask
            assert set(np.unique(labels)) <= set(range(n + 1))
            # small masks are drawn over large ones
            areas = masks.reshape(n, -1).sum(1)
            smallest = int(np.argmin(areas))
            assert (labels[masks[smallest]] == smallest + 1).all() or areas[smallest] == 0
            assert (d / f"{stem}.overlay.jpg").is_file()
        coco = json.loads((d / "coco.json").read_text())
        assert len(coco["images"]) == 2 and len(coco["annotations"]) >= 2
        from pycocotools import mask as mask_utils

        ann = coco["annotations"][0]
        assert mask_utils.decode(ann["segmentation"]).sum() == ann["area"] and "score" in ann
        # exports keep the overlapping masks: polygons decode to each whole mask
        exp = json.loads((d / "export" / "coco" / "coco.json").read_text())
        assert len(exp["annotations"]) == len(coco["annotations"])
        for a, b in zip(coco["annotations"], exp["annotations"], strict=True):
            h, w = a["segmentation"]["size"]
            rle = mask_utils.merge(mask_utils.frPyObjects(b["segmentation"], h, w))
            np.testing.assert_array_equal(mask_utils.decode(rle), mask_utils.decode(a["segmentation"]))
            assert b["attributes"]["predicted_iou"] == a["predicted_iou"] and b["score"] == a["score"]
        import cv2

        from segdeck.core import imageio

        m16 = cv2.imread(str(d / "export" / "masks" / "sub" / "coffee.png"), cv2.IMREAD_UNCHANGED)
        assert m16.dtype == np.uint16
        np.testing.assert_array_equal(m16, imageio.read_label_map(d / "sub__coffee.png.labels.png"))
        assert (d / "regions.csv").read_text().startswith("image,annotation_id,label,area,")
        # custom point grid: the prompts are exactly those points
        from segdeck.core.sam import GeneratorParams, open_engine

        grid = tmp_path / "grid.txt"
        grid.write_text("0.25 0.25\n0.75 0.5\n")
        img = imageio.load_rgb(folder / "astronaut.png")
        res = open_engine("sam-hq-vit_tiny", "cpu").generate(img, GeneratorParams(
            point_grids=str(grid), pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0))
        assert len(res.points) >= 1
        assert {tuple(p) for p in np.round(res.points, 3).tolist()} <= {(50.0, 37.5), (150.0, 75.0)}
        # a second run resumes: nothing to do
        again = run_job(cls(params, folder, job.job_dir))
        assert again.status == "done" and again.skipped == 2 and again.done == 0
        # region filters on + RLE records: another folder, filters applied
        p2 = params.model_copy(update={"output_mode": "coco_rle"})
        p2.filters.enabled = True
        p2.filters.min_area = 10**6
        job2 = cls(p2, folder, job_dir_for(cls, p2, folder, tmp_path / "out"))
        assert job2.job_dir != job.job_dir
        s2 = run_job(job2)
        assert s2.status == "done"
        recs = json.loads((job2.job_dir / "masks" / "astronaut.png.json").read_text())
        assert recs and "counts" in recs[0]["segmentation"] and len(recs[0]["bbox"]) == 4
        assert (job2.job_dir / "astronaut.png.regions.csv").read_text().strip().count("\n") == 0  # all filtered
    finally:
        clear_engine_cache()
        restore_spec("sam-hq-vit_tiny")
        mp.undo()


def test_checkpoint_sha256_is_derived_not_an_option():
    """The checkpoint's sha256 is filled in from the file: recorded, never typed. The CLI
    does not offer it (the TUI form hides it by the same mark)."""
    import subprocess
    import sys

    from segdeck.core.automask import AutomaskParams
    from segdeck.core.params import field_specs
    from segdeck.core.propagate.job import PropagateParams

    for model in (AutomaskParams, PropagateParams):
        specs = {s.name: s for s in field_specs(model)}
        assert specs["checkpoint_sha256"].derived and not specs["checkpoint"].derived
    out = subprocess.run([sys.executable, "-m", "segdeck", "run", "automask", "--help"],
                         capture_output=True, text=True, timeout=60).stdout
    assert "--checkpoint " in out and "--checkpoint-sha256" not in out
