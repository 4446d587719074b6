"""Cluster methods as objects: the registry, one small test per method module on tiny
synthetic images, and a new method registered in one module reaching the CLI and the form."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import typing

import numpy as np
import pytest

from segdeck.core.cluster import methods
from segdeck.core.cluster.job import ClusterJob, ClusterParams
from segdeck.core.cluster.methods import REGISTRY, ClusterMethod, ThresholdMethod, get_method
from segdeck.core.params import field_specs
from tests.test_cluster import scene, variant


def test_registry_is_the_single_list_of_methods():
    assert tuple(REGISTRY) == methods.METHOD_NAMES == methods.MODULES
    assert typing.get_args(ClusterParams.model_fields["method"].annotation) == methods.METHOD_NAMES
    (spec,) = [s for s in field_specs(ClusterParams) if s.name == "method"]
    assert tuple(spec.choices) == methods.METHOD_NAMES  # the CLI choices and the TUI form use these specs
    with pytest.raises(ValueError, match="known: dup, phash"):
        get_method("nope")


@pytest.mark.parametrize("name", [m for m in methods.METHOD_NAMES if m != "deep"])
def test_each_method_module_on_tiny_synthetic_images(name, tmp_path):
    """Every hand-made method: its key names it, its decode is small, its feature is
    cacheable arrays, and a copy (noise + brightness) clusters with its original while
    an unrelated scene stays apart."""
    from PIL import Image

    from segdeck.core.cluster.features import pack, unpack

    m = get_method(name)
    assert isinstance(m, ClusterMethod) and m.name == name
    params = ClusterParams(method=name, threshold=None)
    assert m.feature_key(params).startswith(f"{name}:")
    assert 32 <= m.decode_side(params) <= params.max_side
    a, b = scene(11, size=128), scene(12, size=128)
    paths = []
    for k, img in enumerate([a, variant(a, 1), b]):
        paths.append(tmp_path / f"{k}.png")
        Image.fromarray(img).save(paths[-1])
    imgs = [m.load(p, params) for p in paths]
    assert all(max(im.shape[:2]) <= m.decode_side(params) for im in imgs)
    feats = [m.extract(im, params) for im in imgs]
    for f in feats:
        assert all(isinstance(v, np.ndarray) for v in f.values())
        assert {k: v.tolist() for k, v in unpack(pack(f)).items()} == {k: v.tolist() for k, v in f.items()}
    if isinstance(m, ThresholdMethod):
        assert m.pair(feats[0], feats[1]) > m.pair(feats[0], feats[2])
        t = (m.pair(feats[0], feats[1]) + m.pair(feats[0], feats[2])) / 2
        params = ClusterParams(method=name, threshold=t)
    job = ClusterJob(params, tmp_path, tmp_path / "job")
    result = m.cluster(job, [p.name for p in paths], feats, lambda e: None)
    labels = result.labels
    assert labels[0] == labels[1] != labels[2] or (labels[2] < 0 and labels[0] == labels[1] >= 0)
    i, j, _, _ = result.pairs
    assert (0, 1) in set(zip(i.tolist(), j.tolist(), strict=True))
    if job._cache is not None:
        job._cache.close()


def test_a_method_registered_in_one_module_reaches_the_cli_and_the_form(tmp_path):
    """A new method: one module that registers it. The params Literal, the CLI choices
    and the form's specs list it, and a job runs with it."""
    (tmp_path / "meanpx.py").write_text(textwrap.dedent('''
        import numpy as np
        from segdeck.core.cluster.methods import IndexedMethod, register

        class MeanPixel(IndexedMethod):
            name = "meanpx"
            description = "mean brightness (test method)"
            side = 32

            def extract(self, image, params=None, job=None):
                return {"m": np.array([image.mean() / 255.0])}

            def pair(self, fa, fb):
                return 1.0 - abs(float(fa["m"][0] - fb["m"][0]))

            def search(self, feats, idx, threshold):
                i, j, s = self.all_pairs(feats, idx)
                keep = s >= threshold
                return i[keep], j[keep], s[keep]

        register(MeanPixel())
    '''))
    script = textwrap.dedent(f'''
        import sys, json, contextlib, io
        sys.path.insert(0, {str(tmp_path)!r})
        import meanpx  # the one module
        from segdeck.core.params import field_specs
        from segdeck.core.cluster.job import ClusterParams
        from segdeck.cli import main
        (spec,) = [s for s in field_specs(ClusterParams) if s.name == "method"]
        out = io.StringIO()
        with contextlib.redirect_stdout(out):
            try:
                main(["run", "cluster", "--help"])
            except SystemExit:
                pass
        print(json.dumps({{"form": list(spec.choices), "help": out.getvalue()}}))
    ''')
    res = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    import json

    got = json.loads(res.stdout.strip().splitlines()[-1])
    assert got["form"][-1] == "meanpx" and "dup" in got["form"]
    assert "meanpx" in got["help"]


def test_dup_verification_stops_when_cancelled():
    """The verification (the slow part of dup's clustering) checks the cancel flag: once
    set, no more ORB keys are computed and unverified pairs are not accepted."""
    from segdeck.core.cluster import dedup, features

    base = [scene(40 + k, size=96) for k in range(3)]
    grays = [features.to_gray(im) for im in base] + [features.to_gray(variant(im, k)) for k, im in enumerate(base)]
    codes = features.phash_codes_fast(grays)
    params = dedup.DupParams(sure_radius=0, radius=32, min_ncc=-1.0)  # everything goes to verification
    calls = []

    def gray(k):
        calls.append(k)
        return grays[k]

    dedup.cluster_codes(codes, params, gray=gray)
    assert calls  # verification ran
    calls.clear()
    decisions = []
    dedup.cluster_codes(codes, params, gray=gray, cancel=lambda: True, decisions=decisions)
    assert calls == [] and not (decisions[0].stage == "verified").any()


def test_method_note_in_the_form_says_what_each_method_does_now():
    """Known defect: the TUI's note under ``method`` still called ``deep`` "learned image
    features" after its default became colour and texture descriptors (no model); it
    names the registered methods."""
    from segdeck.core.cluster.job import ClusterJob
    from segdeck.core.cluster.methods import REGISTRY

    note = ClusterJob.tui_field_notes["method"]
    assert all(m.name in note for m in REGISTRY.values())
    assert "learned image features" not in note and "descriptors" in note and "EfficientNet" in note
