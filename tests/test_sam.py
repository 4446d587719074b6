"""SAM engine with random-weight models built from the packaged configs, saved in the
official checkpoint layouts, registered with their computed sha256 and loaded through
the real path (``open_engine`` -> ``ensure_model`` -> strict load). Compares with the
official predictors / generators; never checks mask quality."""

from __future__ import annotations

import atexit
import contextlib
import dataclasses
import os
import shutil
import tempfile
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")
pytest.importorskip("segment_anything_hq")

from segdeck.core import models as M  # noqa: E402
from segdeck.core.errors import SetupError  # noqa: E402

pytestmark = pytest.mark.slow

_BUILT: dict[tuple, tuple[Path, str]] = {}
_BUILD_DIR = Path(tempfile.gettempdir()) / f"segdeck-test-ckpt-{os.getpid()}"
# the random checkpoints (hundreds of MB per test session) go when the session ends
atexit.register(shutil.rmtree, _BUILD_DIR, True)


def random_checkpoint(name: str, seed: int = 0) -> tuple[Path, str]:
    """Build ``name``'s architecture with seeded random weights, save it in the official
    layout once per test session; returns (path, sha256)."""
    key = (name, seed)
    if key not in _BUILT:
        from segdeck.core.sam.loading import save_random_checkpoint

        spec = M.get_spec(name)
        _BUILD_DIR.mkdir(parents=True, exist_ok=True)
        path = save_random_checkpoint(spec, _BUILD_DIR / f"{name}-{seed}{Path(spec.filename).suffix}", seed)
        _BUILT[key] = (path, M.file_sha256(path))
    return _BUILT[key]


def install_random_model(name: str, model_dir: Path, seed: int = 0) -> Path:
    """Register ``name`` with the random checkpoint's size and sha256 and import it into
    ``model_dir`` (which must be $SEGDECK_MODEL_DIR). Returns the checkpoint path.
    Restore the registry with :func:`restore_spec`."""
    path, sha = random_checkpoint(name, seed)
    spec = M.get_spec(name)
    _ORIGINAL.setdefault(name, spec)
    M.register(dataclasses.replace(spec, sha256=sha, bytes=path.stat().st_size), replace=True)
    M.import_file(name, path)
    return path


_ORIGINAL: dict[str, M.ModelSpec] = {}


def restore_spec(name: str) -> None:
    if name in _ORIGINAL:
        M.register(_ORIGINAL.pop(name), replace=True)


@contextlib.contextmanager
def random_models(model_dir: Path, names):
    """A module's model set-up: ``$SEGDECK_MODEL_DIR`` = ``model_dir`` holding the random
    checkpoints of ``names`` (registered with their sha256), 1–2 torch threads, the
    engine and propagator caches cleared on entry and exit, the registry restored.
    Yields {name: checkpoint path}."""
    from segdeck.core.sam import clear_engine_cache
    from segdeck.core.sam.video import clear_propagator_cache

    mp = pytest.MonkeyPatch()
    mp.setenv(M.ENV_MODEL_DIR, str(model_dir))
    torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))
    try:
        paths = {name: install_random_model(name, model_dir) for name in names}
        clear_engine_cache()
        clear_propagator_cache()
        yield paths
    finally:
        clear_engine_cache()
        clear_propagator_cache()
        for name in names:
            restore_spec(name)
        mp.undo()


def test_image(h=240, w=320):
    import cv2
    import skimage.data

    return np.ascontiguousarray(cv2.resize(skimage.data.astronaut(), (w, h), interpolation=cv2.INTER_AREA))


test_image.__test__ = False  # a helper, not a test


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    d = tmp_path_factory.mktemp("models")
    with random_models(d, ("sam2.1-tiny", "sam-hq-vit_tiny")):
        yield d


@pytest.fixture(scope="module", params=["sam2.1-tiny", "sam-hq-vit_tiny"])
def engine(request, env):
    from segdeck.core.sam import open_engine

    eng = open_engine(request.param, "cpu")
    img = test_image()
    eng.set_image(img)
    off = eng.official_predictor()
    off.set_image(img)
    return eng, off, img


def _iou(a, b):
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    return (a & b).sum() / max((a | b).sum(), 1)


def test_open_engine_is_cached_and_typed(engine):
    from segdeck.core.sam import open_engine

    eng, _, _ = engine
    assert open_engine(eng.name, "cpu") is eng
    assert eng.family in ("sam2", "sam-hq") and eng.device == "cpu"


@pytest.mark.parametrize("multimask", [False, True])
def test_predict_points_matches_official(engine, multimask):
    eng, off, img = engine
    h, w = img.shape[:2]
    rng = np.random.default_rng(1)
    for k in (1, 3):
        pts = rng.uniform([0, 0], [w, h], size=(k, 2)).astype(np.float32)
        lab = np.r_[1, rng.integers(0, 2, k - 1)]
        r = eng.predict(pts, lab, multimask=multimask)
        mo, so, lo = off.predict(pts, lab, multimask_output=multimask)
        assert r.masks.dtype == bool and r.masks.shape == mo.shape and r.masks.shape[1:] == (h, w)
        assert r.scores.dtype == np.float32 and r.scores.shape == (r.masks.shape[0],)
        assert r.low_res_logits.shape == (r.masks.shape[0], 256, 256)
        np.testing.assert_allclose(r.scores, so, atol=1e-3)
        for a, b in zip(r.masks, mo, strict=True):
            assert _iou(a, b) > 0.995
    expected = 3 if (multimask and eng.family == "sam2") else 1
    assert r.masks.shape[0] == expected


def test_predict_box_and_mask_input_match_official(engine):
    eng, off, img = engine
    box = np.array([40, 30, 200, 180], np.float32)
    r = eng.predict(box=box)
    mo, so, lo = off.predict(box=box, multimask_output=False)
    assert _iou(r.masks[0], mo[0]) > 0.995
    pts, lab = np.array([[100.0, 90.0]], np.float32), np.array([1])
    r2 = eng.predict(pts, lab, box=box, mask_input=r.low_res_logits[:1])
    mo2, so2, _ = off.predict(pts, lab, box=box, mask_input=lo[:1], multimask_output=False)
    assert _iou(r2.masks[0], mo2[0]) > 0.995
    np.testing.assert_allclose(r2.scores, so2, atol=1e-3)


def test_predict_is_deterministic_and_validates(engine):
    eng, _, _ = engine
    a = eng.predict([[50, 60]], [1], multimask=True)
    b = eng.predict([[50, 60]], [1], multimask=True)
    assert np.array_equal(a.masks, b.masks) and np.array_equal(a.scores, b.scores)
    with pytest.raises(ValueError, match="labels"):
        eng.predict([[1, 2]], [2])
    with pytest.raises(ValueError, match="prompt"):
        eng.predict()
    with pytest.raises(ValueError, match="box"):
        eng.predict(box=[1, 2, 3])
    with pytest.raises(ValueError):
        eng.set_image(np.zeros((10, 10), np.uint8))


def test_embedding_cache_reused_across_engines(engine, monkeypatch):
    from segdeck.core.sam import clear_engine_cache, open_engine

    eng, _, img = engine
    files = list(eng.embedding_dir().glob("*.pt"))
    assert len(files) >= 1
    ref = eng.predict([[70, 80]], [1])
    # a fresh engine (as in a new process) must not run the encoder for the same image
    clear_engine_cache()
    eng2 = open_engine(eng.name, "cpu")
    assert eng2 is not eng

    def boom(*a, **k):
        raise AssertionError("encoder ran although the embedding is cached")

    monkeypatch.setattr(eng2, "_encode", boom)
    eng2.set_image(img)
    r = eng2.predict([[70, 80]], [1])
    assert np.array_equal(r.masks, ref.masks)


def test_predict_before_set_image(env):
    from segdeck.core.sam import clear_engine_cache, open_engine

    clear_engine_cache()
    eng = open_engine("sam2.1-tiny", "cpu")
    eng.reset_image()
    with pytest.raises(RuntimeError, match="set_image"):
        eng.predict([[1, 1]], [1])


def test_generate_matches_official_generator(engine):
    from pycocotools import mask as mask_utils

    from segdeck.core.sam import GeneratorParams

    eng, _, img = engine
    # random weights pass no quality threshold: switch them off so both sides keep masks
    pps = 3 if eng.family == "sam2" else 2  # SAM-HQ's decoder is heavy on CPU
    gp = GeneratorParams(points_per_side=pps, pred_iou_thresh=0.0, stability_score_thresh=0.0, box_nms_thresh=1.0)
    res = eng.generate(img, gp)
    recs = eng.official_generator(gp).generate(img)
    n, h, w = res.masks.shape
    assert n == len(recs) > 0 and (h, w) == img.shape[:2]
    assert res.masks.dtype == bool and res.boxes.dtype == np.int64 and res.boxes.shape == (n, 4)
    assert res.scores.shape == res.stability.shape == (n,) and res.points.shape == (n, 2)
    off = np.stack([np.asarray(mask_utils.decode(r["segmentation"]) if isinstance(r["segmentation"], dict)
                               else r["segmentation"], bool) for r in recs])
    ious = [_iou(a, b) for a, b in zip(res.masks, off, strict=True)]
    assert min(ious) > 0.99
    np.testing.assert_allclose(res.scores, [r["predicted_iou"] for r in recs], atol=1e-3)
    x, y, bw, bh = recs[0]["bbox"]
    assert list(res.boxes[0]) == [x, y, x + bw, y + bh]
    rec = res.records()[0].to_official("coco_rle")
    assert rec["area"] == int(res.masks[0].sum()) and "counts" in rec["segmentation"]
    again = eng.generate(img, gp)
    assert np.array_equal(again.masks, res.masks)


def test_generate_thresholds_and_crops(engine):
    from segdeck.core.sam import GeneratorParams

    eng, _, img = engine
    none = eng.generate(img, GeneratorParams(points_per_side=2, pred_iou_thresh=1.0))
    assert len(none) == 0 and none.masks.shape == (0, *img.shape[:2])
    if eng.family != "sam-hq":
        return  # crops re-encode 5 images: once (with the cheaper TinyViT encoder) is enough
    gp = GeneratorParams(points_per_side=1, pred_iou_thresh=0.0, stability_score_thresh=0.0, crop_n_layers=1,
                         min_mask_region_area=20)
    res = eng.generate(img, gp)
    assert len(res) >= 1
    h, w = img.shape[:2]
    assert ((res.crop_boxes[:, 2] <= w) & (res.crop_boxes[:, 3] <= h)).all()
    assert (res.boxes[:, 0] >= res.crop_boxes[:, 0]).all() and (res.boxes[:, 2] <= res.crop_boxes[:, 2]).all()


def test_lowres_hole_and_island_fill():
    from segdeck.core.sam.generate import _fill_small_lowres

    low = -np.ones((1, 40, 40), np.float32)
    low[0, 5:30, 5:30] = 1.0  # object
    low[0, 10:12, 10:12] = -1.0  # 4-pixel hole
    low[0, 35:37, 35:37] = 1.0  # 4-pixel island
    out = _fill_small_lowres(torch.from_numpy(low), 4, 0.0).numpy()[0]
    assert out[10, 10] > 0 and out[35, 35] < 0 and out[20, 20] == 1.0 and out[0, 0] == -1.0
    same = _fill_small_lowres(torch.from_numpy(low), 3, 0.0).numpy()[0]
    assert np.array_equal(same, low[0])


# ---- bad checkpoints ------------------------------------------------------------------------

def test_truncated_checkpoint_is_a_clear_error(env, tmp_path):
    from segdeck.core.sam.loading import load_model

    path, _ = random_checkpoint("sam2.1-tiny")
    bad = tmp_path / "trunc.pt"
    bad.write_bytes(path.read_bytes()[: 2_000_000])
    with pytest.raises(SetupError) as exc:
        load_model(M.get_spec("sam2.1-tiny"), bad)
    msg = str(exc.value)
    assert "trunc.pt" in msg and ("truncated" in msg or "corrupt" in msg) and "\n" not in msg


def test_sha_mismatch_and_strict_keys(env, tmp_path):
    from segdeck.core.sam import clear_engine_cache, open_engine
    from segdeck.core.sam.loading import load_model

    # sha256 mismatch at import time
    path, _ = random_checkpoint("sam-hq-vit_tiny")
    other, _ = random_checkpoint("sam-hq-vit_tiny", seed=1)
    with pytest.raises(SetupError, match="mismatch"):
        M.import_file("sam-hq-vit_tiny", other)
    # a checkpoint with a missing and an extra key
    state = torch.load(path, weights_only=True)
    state.pop(next(iter(state)))
    state["bogus.weight"] = torch.zeros(1)
    bad = tmp_path / "keys.pth"
    torch.save(state, bad)
    with pytest.raises(SetupError) as exc:
        load_model(M.get_spec("sam-hq-vit_tiny"), bad)
    msg = str(exc.value)
    assert "missing" in msg and "unexpected" in msg and "bogus.weight" in msg
    # a SAM-HQ file where a SAM 2 checkpoint is expected
    with pytest.raises(SetupError, match="SAM 2 checkpoint"):
        load_model(M.get_spec("sam2.1-tiny"), path)
    # a cached file damaged after import is caught by verify
    clear_engine_cache()
    cached = M.model_path("sam-hq-vit_tiny")
    data = bytearray(cached.read_bytes())
    data[5000] ^= 0xFF
    cached.write_bytes(bytes(data))
    with pytest.raises(SetupError, match="mismatch"):
        M.verify("sam-hq-vit_tiny")
    M.import_file("sam-hq-vit_tiny", path)  # repair for later tests
    assert open_engine("sam-hq-vit_tiny", "cpu") is not None


def test_offline_not_cached_open_engine(env, monkeypatch, tmp_path):
    from segdeck.core.sam import clear_engine_cache, open_engine

    monkeypatch.setenv(M.ENV_MODEL_DIR, str(tmp_path / "empty"))
    clear_engine_cache()
    with pytest.raises(SetupError) as exc:
        open_engine("sam2.1-tiny", "cpu", download=False)
    assert "segdeck models import sam2.1-tiny FILE" in str(exc.value)
    clear_engine_cache()


def test_precompute_next_image(engine, monkeypatch):
    eng, _, img = engine
    if eng.family != "sam-hq":
        pytest.skip("one family is enough (each run costs an encode)")
    nxt = np.ascontiguousarray(img[:, ::-1])
    assert not eng.is_cached(nxt)
    key = eng.precompute(nxt)
    assert eng.is_cached(nxt) and key == eng.image_key(nxt)

    def boom(*a, **k):
        raise AssertionError("encoder ran although the embedding was precomputed")

    monkeypatch.setattr(eng, "_encode", boom)
    eng.set_image(nxt)
    assert eng.predict([[10, 10]], [1]).masks.shape == (1, *nxt.shape[:2])
    eng.set_image(img)


def test_packed_product_equals_matmul_and_can_be_turned_off(monkeypatch):
    import torch

    from segdeck.core.sam.fast import Packed, _mm, _mm_t

    g = torch.Generator().manual_seed(1)
    w = torch.randn(96, 40, generator=g)
    x = torch.randn(2, 7, 96, generator=g)
    p = Packed(w, 7)
    if torch.backends.mkldnn.is_available():
        assert p.packed is not None  # this build has oneDNN: the packed path is the one tested
    torch.testing.assert_close(p(x), x @ w, rtol=1e-5, atol=1e-4)
    a, b = torch.randn(1, 5, 96, generator=g), torch.randn(1, 300, 96, generator=g)
    torch.testing.assert_close(_mm_t(a, b), a @ b.transpose(1, 2), rtol=1e-5, atol=1e-4)
    c = torch.randn(1, 96, 33, generator=g)
    torch.testing.assert_close(_mm(a, c), a @ c, rtol=1e-5, atol=1e-4)
    off = Packed(w, 7, onednn=False)
    assert off.packed is None
    torch.testing.assert_close(off(x), x @ w)


def test_engine_options_parse_the_environment_once():
    from segdeck.core.sam import EngineOptions

    assert EngineOptions.from_env({}) == EngineOptions(decoder="fast", jit=True, onednn=True)
    assert EngineOptions.from_env({"SEGDECK_JIT": "0", "SEGDECK_ONEDNN": "off"}) == EngineOptions(jit=False, onednn=False)
    assert EngineOptions.from_env({"SEGDECK_JIT": "1", "SEGDECK_ONEDNN": "yes"}) == EngineOptions()
    with pytest.raises(ValueError, match="decoder"):
        EngineOptions(decoder="mine")


def test_official_decoder_behind_the_seam_equals_the_fast_one(engine):
    """The same prompts through the family's own mask decoder module (``decoder =
    "official"``) and through :mod:`.fast` give the same masks and scores."""
    from segdeck.core.sam import EngineOptions, open_engine
    from segdeck.core.sam.decoders import FastDecoder, OfficialDecoder

    eng, _, img = engine
    ref = open_engine(eng.name, "cpu", options=EngineOptions(decoder="official"))
    assert isinstance(ref.decoder, OfficialDecoder) and isinstance(eng.decoder, FastDecoder)
    assert ref is not eng and ref.model is not eng.model
    ref.set_image(img)
    for kw in ({"points": [[60, 70], [150, 120]], "labels": [1, 0], "multimask": True},
               {"points": [[60, 70]], "labels": [1]}, {"box": [20, 30, 200, 180]}):
        a, b = eng.predict(**kw), ref.predict(**kw)
        assert a.masks.shape == b.masks.shape
        assert min(_iou(x, y) for x, y in zip(a.masks, b.masks, strict=True)) > 0.995
        np.testing.assert_allclose(a.scores, b.scores, atol=1e-4)
        np.testing.assert_allclose(a.low_res_logits, b.low_res_logits, rtol=0, atol=2e-3)


class _NoPrivateOps:
    """``torch.ops.mkldnn`` of a torch build without oneDNN's private linear ops."""

    def __getattr__(self, name):
        if name in ("_linear_pointwise", "_reorder_linear_weight"):
            raise AttributeError(f"'_OpNamespace' 'mkldnn' object has no attribute '{name}'")
        return getattr(_REAL_MKLDNN, name)


_REAL_MKLDNN = torch.ops.mkldnn


def test_missing_private_op_runs_torch_matmul_and_matches_official(env, monkeypatch):
    """Where ``torch.ops.mkldnn._linear_pointwise`` does not exist, the probe finds it
    missing, every product is ``torch.matmul`` and clicks still equal the official
    predictor's."""
    from segdeck.core.sam import EngineOptions, clear_engine_cache, open_engine
    from segdeck.core.sam.fast import Packed, _mm_t, onednn_available

    monkeypatch.setattr(torch.ops, "mkldnn", _NoPrivateOps())
    onednn_available.cache_clear()
    assert not onednn_available()
    g = torch.Generator().manual_seed(7)
    w = torch.randn(32, 8, generator=g)
    p = Packed(w, 4)
    assert p.packed is None
    a, b = torch.randn(1, 3, 32, generator=g), torch.randn(1, 50, 32, generator=g)
    torch.testing.assert_close(_mm_t(a, b), a @ b.transpose(1, 2))
    clear_engine_cache()
    try:
        eng = open_engine("sam2.1-tiny", "cpu", options=EngineOptions(jit=False))
        assert all(q.packed is None for q in (*eng._up["p1"], *eng._up["p2"]))
        img = test_image()
        eng.set_image(img, cache=False)
        off = eng.official_predictor()
        off.set_image(img)
        pts, lab = np.array([[60.0, 70.0], [150.0, 120.0]], np.float32), np.array([1, 0])
        r = eng.predict(pts, lab, multimask=True)
        mo, so, _ = off.predict(pts, lab, multimask_output=True)
        assert min(_iou(x, y) for x, y in zip(r.masks, mo, strict=True)) > 0.995
        np.testing.assert_allclose(r.scores, so, atol=1e-3)
    finally:
        clear_engine_cache()
        monkeypatch.undo()  # the real torch.ops.mkldnn back before probing again
        onednn_available.cache_clear()


def test_packed_add_and_bind_trace_through_onednn():
    """``Packed.add`` (product with the sum fused) equals matmul + add, eagerly and in a
    trace that takes the packed matrix as an input (:meth:`Packed.bind`)."""
    import warnings

    from segdeck.core.sam.fast import Packed

    g = torch.Generator().manual_seed(2)
    w, x, o = torch.randn(64, 24, generator=g), torch.randn(50, 64, generator=g), torch.randn(50, 24, generator=g)
    p = Packed(w, 50)
    torch.testing.assert_close(p.add(x, o), x @ w + o, rtol=1e-5, atol=1e-4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        if p.packed is not None:
            tr = torch.jit.trace(lambda a, b, k: p.bind(k).add(a, b), (x, o, p.packed), check_trace=False)
            x2, o2 = torch.randn(50, 64, generator=g), torch.randn(50, 24, generator=g)
            torch.testing.assert_close(tr(x2, o2, p.packed), x2 @ w + o2, rtol=1e-5, atol=1e-4)
        plain = Packed(w, 50).bind(None)
        tr = torch.jit.trace(lambda a, b: plain.add(a, b), (x, o), check_trace=False)
        torch.testing.assert_close(tr(x, o), x @ w + o, rtol=1e-5, atol=1e-4)


def test_point_embedder_equals_sam2_prompt_encoder(engine):
    eng, _, _ = engine
    if eng.family != "sam2":
        pytest.skip("SAM 2 only (its predict embeds points in numpy)")
    from segdeck.core.sam.fast import PointEmbedder

    pe = eng.model.sam_prompt_encoder
    emb = PointEmbedder(pe)
    rng = np.random.default_rng(4)
    for labels in ([1], [2, 3], [2, 3, 1, 0, 0], [0, 1, 1, 0, 1, 1, 0, 1, 1]):
        c = rng.uniform(0, 1024, size=(len(labels), 2)).astype(np.float32)
        got = emb(c, np.array(labels))
        with torch.inference_mode():
            want = pe._embed_points(torch.from_numpy(c)[None], torch.tensor([labels], dtype=torch.int), pad=True)
        assert got.shape == tuple(want.shape) == (1, len(labels) + 1, pe.embed_dim)
        np.testing.assert_allclose(got, want.numpy(), rtol=0, atol=2e-5)


def test_trace_cache_keys_by_signature_and_falls_back():
    from segdeck.core.sam.fast import TraceCache

    calls = []

    def fn(a, b):
        calls.append(1)
        return a * 2 if b is None else a * b

    tc = TraceCache(fn, limit=2)
    x, y = torch.arange(6.0).view(2, 3), torch.full((2, 3), 3.0)
    assert torch.equal(tc(x, y), x * y)
    n = len(calls)
    assert torch.equal(tc(x + 1, y - 1), (x + 1) * (y - 1))  # replayed: fn not called again
    assert len(calls) == n and len(tc) == 1
    assert torch.equal(tc(x, None), x * 2)  # None is part of the signature
    assert torch.equal(tc(torch.ones(4), torch.ones(4)), torch.ones(4))  # a new shape
    assert len(tc) == 2  # least recently used dropped

    def untraceable(a):
        if torch.jit.is_tracing():
            raise RuntimeError("cannot trace")
        return a + 1

    tc2 = TraceCache(untraceable)
    assert torch.equal(tc2(x), x + 1) and torch.equal(tc2(x), x + 1)


def test_set_image_records_the_one_point_trace(engine):
    from segdeck.core.sam import clear_engine_cache, open_engine

    eng, _, img = engine
    clear_engine_cache()
    fresh = open_engine(eng.name, "cpu")
    traces = fresh.decoder.traces
    if traces is None:
        pytest.skip("decoder traces are off (SEGDECK_JIT=0)")
    assert len(traces) == 0
    fresh.set_image(img)
    assert len(traces) == 1  # recorded while the user waits for the encoder
    fresh.predict([[30, 40]], [1])
    assert len(traces) == 1  # the first click found it
    fresh.predict([[30, 40], [90, 60]], [1, 0])
    assert len(traces) == 2


def test_decoder_traces_are_reused_across_images(engine):
    """A trace holds no image: the second image (same prompt shape, no new trace) gets
    its own masks, equal to the official predictor's and to the eager decoder's."""
    eng, _, img = engine
    if eng.decoder.traces is None:
        pytest.skip("decoder traces are off (SEGDECK_JIT=0)")
    other = np.ascontiguousarray(img[::-1, ::-1])
    pts, lab = np.array([[60.0, 70.0], [150.0, 120.0]], np.float32), np.array([1, 0])
    eng.predict(pts, lab, multimask=True)
    n = len(eng.decoder.traces)
    eng.set_image(other)
    try:
        r = eng.predict(pts, lab, multimask=True)
        assert len(eng.decoder.traces) == n
        off = eng.official_predictor()
        off.set_image(other)
        mo, so, _ = off.predict(pts, lab, multimask_output=True)
        assert _iou(r.masks[0], mo[0]) > 0.995
        np.testing.assert_allclose(r.scores[:1], so[:1], atol=1e-3)
        traces, eng.decoder.traces = eng.decoder.traces, None
        try:
            e = eng.predict(pts, lab, multimask=True)
        finally:
            eng.decoder.traces = traces
        assert np.array_equal(r.masks, e.masks)
        np.testing.assert_allclose(r.low_res_logits, e.low_res_logits, rtol=0, atol=1e-4)
    finally:
        eng.set_image(img)


def test_single_mask_selection_and_stacked_hypernetworks_match_official(engine):
    """SAM 2's one-prompt mask choice (stability of token 0, else best IoU of 1-3) and the
    batched hypernetwork MLPs equal the official decoder's, stable and unstable cases."""
    eng, _, _ = engine
    if eng.family != "sam2":
        pytest.skip("SAM 2 only (dynamic multimask via stability)")
    from segdeck.core.sam.fast import run_stacked_mlps

    dec = eng.model.sam_mask_decoder
    g = torch.Generator().manual_seed(3)
    iou = torch.rand(1, 4, generator=g)
    for scale in (100.0, 0.01):  # saturated logits: stable; tiny logits: unstable
        masks = torch.randn(1, 4, 64, 64, generator=g) * scale
        got_m, got_i = eng._select(masks, iou, multimask=False, hq_token_only=False)
        ref_m, ref_i = dec._dynamic_multimask_via_stability(masks, iou)
        assert torch.equal(got_m, ref_m) and torch.equal(got_i, ref_i)
    tokens = torch.randn(3, dec.num_mask_tokens, dec.transformer_dim, generator=g)
    with torch.inference_mode():
        ref = torch.stack([mlp(tokens[:, i]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)], 1)
        got = run_stacked_mlps(eng._hyper, tokens)
    torch.testing.assert_close(got, ref, rtol=1e-5, atol=1e-5)


def test_block_upscaling_equals_the_decoders_modules(engine):
    """The four-block upscaling (fast.upscale_features + mask_logits) gives the logits of
    SAM 2's own output_upscaling modules and hypernetwork product, in image order."""
    eng, _, _ = engine
    if eng.family != "sam2":
        pytest.skip("SAM 2 only (high-res features in the upscaling)")
    from segdeck.core.sam.fast import arrange_high_res, mask_logits, upscale_features

    dec = eng.model.sam_mask_decoder
    g = torch.Generator().manual_seed(5)
    keys = torch.randn(1, 64 * 64, 256, generator=g)
    f0 = torch.randn(1, 32, 256, 256, generator=g)
    f1 = torch.randn(1, 64, 128, 128, generator=g)
    hyper = torch.randn(3, 32, generator=g)
    with torch.inference_mode():
        dc1, ln1, act1, dc2, act2 = dec.output_upscaling
        up = act1(ln1(dc1(keys.transpose(1, 2).reshape(1, 256, 64, 64)) + f1))
        up = act2(dc2(up) + f0)
        want = (hyper @ up.view(32, -1)).view(3, 256, 256)
        s0, s1 = arrange_high_res(f0, f1, eng._up)
        got = mask_logits(upscale_features(eng._up, keys[0], s0, s1), hyper, (64, 64))
    torch.testing.assert_close(got, want, rtol=1e-4, atol=1e-4)


# ---- custom checkpoints ------------------------------------------------------------------


def _run_cli(args, model_dir, timeout=280):
    import subprocess
    import sys

    # no registry edit reaches the child; an empty model cache and a dead proxy prove
    # nothing is looked up or downloaded
    env = {**os.environ, M.ENV_MODEL_DIR: str(model_dir), "COLUMNS": "400",
           "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
           "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9"}
    return subprocess.run([sys.executable, "-m", "segdeck", *args], capture_output=True, text=True, env=env,
                          timeout=timeout)


@pytest.fixture(scope="module")
def photos(tmp_path_factory):
    from segdeck.core import imageio

    d = tmp_path_factory.mktemp("photos")
    imageio.write_image(d / "a.png", test_image(96, 128))
    return d


@pytest.mark.timeout(600)
def test_automask_runs_a_custom_checkpoint_end_to_end(photos, tmp_path):
    """A random-weight SAM 2.1-tiny checkpoint (not registered, not in the model cache)
    runs ``segdeck run automask DIR --model sam2.1-tiny --checkpoint FILE`` in a fresh
    process; its sha256 is in job.toml and the run name, and the masks are the ones the
    same weights give in this process."""
    import tomllib

    from segdeck.core.sam import GeneratorParams, clear_engine_cache, open_engine

    ckpt, sha = random_checkpoint("sam2.1-tiny", seed=5)
    assert sha != M.get_spec("sam2.1-tiny").sha256
    out = tmp_path / "out"
    args = ["run", "automask", str(photos), "--model", "sam2.1-tiny", "--checkpoint", str(ckpt), "--device", "cpu",
            "--points-per-side", "4", "--pred-iou-thresh", "0", "--stability-score-thresh", "0", "--out", str(out)]
    r = _run_cli(args, tmp_path / "models")
    assert r.returncode == 0, r.stderr[-2000:]
    job_dir = Path(r.stdout.strip().splitlines()[-1])
    assert f"ckpt{sha[:8]}" in job_dir.name
    params = tomllib.loads((job_dir / "job.toml").read_text())
    flat = params.get("params", params)
    assert flat["checkpoint_sha256"] == sha and Path(flat["checkpoint"]) == ckpt.resolve()
    assert not (tmp_path / "models" / M.get_spec("sam2.1-tiny").filename).exists()
    raw = np.load(job_dir / "masks" / "a.png.npz")
    mp = pytest.MonkeyPatch()
    mp.setenv(M.ENV_MODEL_DIR, str(tmp_path / "models"))
    try:
        clear_engine_cache()
        eng = open_engine("sam2.1-tiny", "cpu", checkpoint=ckpt)
        assert eng.spec.sha256 == sha and open_engine("sam2.1-tiny", "cpu", checkpoint=ckpt) is eng
        res = eng.generate(test_image(96, 128), GeneratorParams(points_per_side=4, pred_iou_thresh=0.0,
                                                                 stability_score_thresh=0.0))
        assert int(raw["shape"][0]) == len(res) > 0
        np.testing.assert_allclose(raw["predicted_iou"], res.scores, atol=1e-4)
    finally:
        clear_engine_cache()
        mp.undo()


@pytest.mark.timeout(600)
@pytest.mark.parametrize("case", ["family", "size"])
def test_checkpoint_of_another_family_or_size_is_one_line_exit_2(photos, tmp_path, case):
    """A SAM-HQ file given as SAM 2.1-tiny weights, or SAM 2.1-tiny weights given for
    SAM 2.1-small: one line on stderr, exit 2, no traceback."""
    if case == "family":
        ckpt, _ = random_checkpoint("sam-hq-vit_tiny")
        model, expect = "sam2.1-tiny", "expected a SAM 2 checkpoint"
    else:
        ckpt, _ = random_checkpoint("sam2.1-tiny")
        model, expect = "sam2.1-small", "checkpoint does not match sam2.1-small"
    r = _run_cli(["run", "automask", str(photos), "--model", model, "--checkpoint", str(ckpt), "--device", "cpu",
                  "--out", str(tmp_path / "out")], tmp_path / "models")
    assert r.returncode == 2, r.stderr[-2000:]
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    assert len(errors) == 1 and lines[-1] == errors[0], r.stderr  # above it only the (empty) progress bar
    assert expect in errors[0] and str(ckpt) in errors[0]
    assert "Traceback" not in r.stderr + r.stdout


def test_missing_checkpoint_file_is_a_parameter_error(photos, tmp_path):
    from segdeck.core.automask import AutomaskParams
    from segdeck.core.errors import SegdeckError
    from segdeck.core.params import resolve

    with pytest.raises(SegdeckError, match="no such file") as info:
        resolve(AutomaskParams, "automask", overrides={"checkpoint": str(tmp_path / "nope.pt")})
    assert str(info.value) == f"checkpoint {tmp_path / 'nope.pt'}: no such file"  # no pydantic prefixes
    not_torch = tmp_path / "photo.pt"
    not_torch.write_bytes(b"\xff\xd8\xff\xe0 not a checkpoint")
    with pytest.raises(SetupError) as info:
        from segdeck.core.sam.loading import read_state_dict

        read_state_dict(M.get_spec("sam2.1-tiny"), not_torch)
    assert "weights_only" not in str(info.value) and "\n" not in str(info.value)  # not torch's unsafe advice
    with pytest.raises(SetupError, match="not found"):
        from segdeck.core.sam import open_engine

        open_engine("sam2.1-tiny", "cpu", checkpoint=tmp_path / "nope.pt")


def test_annotate_opens_a_custom_checkpoint_or_says_why(env, capfd):
    """``segdeck annotate sam --checkpoint FILE``'s engine: the file's weights (its sha256),
    or one line and exit code 2 for weights of another family."""
    from segdeck.commands.annotate import _open_engine
    from segdeck.core.sam import clear_engine_cache

    ckpt, sha = random_checkpoint("sam2.1-tiny", seed=5)
    try:
        eng = _open_engine("sam2.1-tiny", str(ckpt))
        assert not isinstance(eng, int) and eng.spec.sha256 == sha and eng.family == "sam2"
        capfd.readouterr()
        hq, _ = random_checkpoint("sam-hq-vit_tiny")
        assert _open_engine("sam2.1-tiny", str(hq)) == 2
        lines = [ln for ln in capfd.readouterr().err.splitlines() if ln.strip()]
        assert len(lines) == 1 and "expected a SAM 2 checkpoint" in lines[0], lines
    finally:
        clear_engine_cache()
