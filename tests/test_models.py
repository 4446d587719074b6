"""Model manager: registry, cache, verified import, resumable download, offline errors,
and the ``segdeck models`` CLI. No torch, no internet (a local HTTP server)."""

from __future__ import annotations

import hashlib
import http.server
import os
import subprocess
import sys
import threading

import pytest

from segdeck.core import models as M
from segdeck.core.errors import SetupError
from segdeck.core.jobs.events import Progress

PAYLOAD = bytes(range(256)) * 4096  # 1 MiB
SHA = hashlib.sha256(PAYLOAD).hexdigest()


@pytest.fixture
def model_dir(tmp_path, monkeypatch):
    d = tmp_path / "models"
    monkeypatch.setenv(M.ENV_MODEL_DIR, str(d))
    return d


class _RangeHandler(http.server.BaseHTTPRequestHandler):
    data = PAYLOAD
    requests_seen: list = []

    def do_GET(self):  # noqa: N802
        rng = self.headers.get("Range")
        type(self).requests_seen.append(rng)
        body, status = self.data, 200
        if rng:
            start = int(rng.split("=")[1].split("-")[0])
            body, status = self.data[start:], 206
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        if status == 206:
            self.send_header("Content-Range", f"bytes {len(self.data) - len(body)}-{len(self.data) - 1}/{len(self.data)}")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args):
        pass


@pytest.fixture
def server():
    _RangeHandler.requests_seen = []
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _RangeHandler)
    t = threading.Thread(target=httpd.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


@pytest.fixture
def spec(server):
    s = M.ModelSpec("test-blob", "test", f"{server}/blob.bin", len(PAYLOAD), SHA, "blob.bin", description="test")
    M.register(s, replace=True)
    yield s
    M.unregister(s.name)


def test_official_registry_entries():
    names = M.model_names()
    for n in ["sam2.1-tiny", "sam2.1-small", "sam2.1-base_plus", "sam2.1-large",
              "sam-hq-vit_tiny", "sam-hq-vit_b", "sam-hq-vit_l", "sam-hq-vit_h"]:
        assert n in names
        s = M.get_spec(n)
        assert s.url.startswith("https://") and s.full_hash
    assert M.get_spec("sam2.1-tiny").config == "configs/sam2.1/sam2.1_hiera_t.yaml"
    assert M.get_spec("sam2.1-tiny").bytes == 156008466
    assert M.get_spec("sam-hq-vit_tiny").bytes is None  # only "~42.5 MB" is published
    assert M.get_spec("sam-hq-vit_l").bytes is None
    with pytest.raises(SetupError, match="unknown model"):
        M.get_spec("nope")


def test_spec_validation_and_prefix_hash(tmp_path, model_dir):
    with pytest.raises(ValueError):
        M.ModelSpec("x", "test", "https://x", None, "xyz", "x.bin")
    f = tmp_path / "w.pth"
    f.write_bytes(PAYLOAD)
    pre = M.ModelSpec("pre", "torchvision", "https://x/w.pth", None, SHA[:8].upper(), "w.pth")
    assert not pre.full_hash and pre.sha256 == SHA[:8]
    M.register(pre, replace=True)
    try:
        assert M.import_file("pre", f) == model_dir / "w.pth"
        M.verify("pre")
        bad = M.ModelSpec("pre", "torchvision", "https://x/w.pth", None, "00000000", "w.pth")
        M.register(bad, replace=True)
        with pytest.raises(SetupError, match="prefix"):
            M.verify("pre")
    finally:
        M.unregister("pre")


def test_import_verify_and_mismatch(tmp_path, model_dir, spec):
    assert M.model_path(spec.name) is None
    assert [c for s, c, _ in M.list_models("test")] == [False]
    good = tmp_path / "good.bin"
    good.write_bytes(PAYLOAD)
    wrong = tmp_path / "wrong.bin"
    wrong.write_bytes(PAYLOAD[:-1] + b"\x00")
    with pytest.raises(SetupError) as exc:
        M.import_file(spec.name, wrong)
    msg = str(exc.value)
    assert "sha256 mismatch" in msg and "\n" not in msg and SHA in msg
    short = tmp_path / "short.bin"
    short.write_bytes(PAYLOAD[:1000])
    with pytest.raises(SetupError, match="truncated"):
        M.import_file(spec.name, short)
    assert M.model_path(spec.name) is None
    dest = M.import_file(spec.name, good)
    assert dest.read_bytes() == PAYLOAD and M.model_path(spec.name) == dest
    assert [c for s, c, _ in M.list_models("test")] == [True]
    assert M.verify(spec.name) == dest
    dest.write_bytes(PAYLOAD[:-1] + b"\x01")
    with pytest.raises(SetupError, match="mismatch"):
        M.verify(spec.name)


def test_download_resume_and_progress(model_dir, spec):
    model_dir.mkdir(parents=True)
    part = model_dir / "blob.bin.part"
    part.write_bytes(PAYLOAD[:300_000])
    events = []
    path = M.download(spec.name, events.append)
    assert path.read_bytes() == PAYLOAD
    assert not part.exists()
    assert _RangeHandler.requests_seen == ["bytes=300000-"]
    prog = [e for e in events if isinstance(e, Progress) and e.what.startswith("download")]
    assert prog and prog[-1].done == len(PAYLOAD) and prog[-1].total == len(PAYLOAD)
    assert M.ensure_model(spec.name) == path  # cached: no request
    assert len(_RangeHandler.requests_seen) == 1


def test_download_bad_content_is_removed(model_dir, server):
    s = M.ModelSpec("test-bad", "test", f"{server}/blob.bin", len(PAYLOAD), "ab" * 32, "bad.bin")
    M.register(s, replace=True)
    try:
        with pytest.raises(SetupError, match="did not verify"):
            M.download("test-bad")
        assert not (model_dir / "bad.bin").exists() and not (model_dir / "bad.bin.part").exists()
    finally:
        M.unregister("test-bad")


def test_offline_message(model_dir):
    s = M.ModelSpec("test-off", "test", "http://127.0.0.1:9/x.pt", 10, "ab" * 32, "x.pt")
    M.register(s, replace=True)
    try:
        with pytest.raises(SetupError) as exc:
            M.ensure_model("test-off")
        msg = str(exc.value)
        assert "http://127.0.0.1:9/x.pt" in msg and "segdeck models import test-off FILE" in msg
        assert "\n" not in msg
        with pytest.raises(SetupError, match="downloads disabled"):
            M.ensure_model("test-off", allow_download=False)
    finally:
        M.unregister("test-off")


def _cli(args, env_extra, timeout=60):
    env = {**os.environ, **env_extra}
    return subprocess.run([sys.executable, "-m", "segdeck", *args], capture_output=True, text=True, env=env, timeout=timeout)


@pytest.mark.timeout(120)
def test_cli_download_offline_one_line(tmp_path):
    # a proxy on a closed port: no request can leave this machine
    env = {M.ENV_MODEL_DIR: str(tmp_path), "HTTPS_PROXY": "http://127.0.0.1:9", "HTTP_PROXY": "http://127.0.0.1:9",
           "https_proxy": "http://127.0.0.1:9", "http_proxy": "http://127.0.0.1:9", "COLUMNS": "400"}
    r = _cli(["models", "download", "sam2.1-tiny"], env)
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert "https://dl.fbaipublicfiles.com/segment_anything_2/092824/sam2.1_hiera_tiny.pt" in lines[0]
    assert "segdeck models import sam2.1-tiny FILE" in lines[0]


@pytest.mark.timeout(120)
def test_cli_list_import_verify(tmp_path):
    env = {M.ENV_MODEL_DIR: str(tmp_path / "cache"), "COLUMNS": "200"}
    r = _cli(["models", "list"], env)
    assert r.returncode == 0 and "sam2.1-tiny" in r.stdout and "sam-hq-vit_h" in r.stdout
    bogus = tmp_path / "bogus.pt"
    bogus.write_bytes(b"not a checkpoint")
    r = _cli(["models", "import", "sam-hq-vit_tiny", str(bogus)], env)
    assert r.returncode == 2 and "mismatch" in r.stderr and "Traceback" not in r.stderr
    r = _cli(["models", "verify"], env)
    assert r.returncode == 0
    r = _cli(["models", "verify", "nope"], env)
    assert r.returncode == 2 and "unknown model" in r.stderr
