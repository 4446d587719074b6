"""Describers (core/describe/describers): what the openai describer sends to an
OpenAI-compatible server and how it treats its faults (against tests/vlm_server.py),
the DAM adapter against a stub of transformers' ``from_pretrained``, and ``none``."""

from __future__ import annotations

import gc
import io
import sys
import threading
import time
import types
import weakref

import numpy as np
import pytest
from pydantic import ValidationError
from vlm_server import FakeVLM

from segdeck.core.describe.describers import (
    DESCRIBER_NAMES,
    DamOptions,
    DescriberFatal,
    OpenAIOptions,
    RegionRequest,
    make_describer,
    region_image,
)
from segdeck.core.describe.describers.base import RegionFailed
from segdeck.core.describe.describers.dam import DamDescriber
from segdeck.core.describe.describers.openai import _answer_text

pytestmark = pytest.mark.timeout(60)

KEY = "sk-test-9f8e7d6c5b4a-secret"
KEY_ENV = "SEGDECK_TEST_VLM_KEY"


def make_regions(n: int = 3, h: int = 36, w: int = 48) -> list[RegionRequest]:
    """``n`` non-rectangular regions (discs of different colours) on a striped image."""
    rng = np.random.default_rng(7)
    image = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
    yy, xx = np.mgrid[:h, :w]
    out = []
    for i in range(n):
        cx, cy, r = 8 + (i * 13) % (w - 16), 8 + (i * 7) % (h - 16), 6 + i % 3
        mask = (xx - cx) ** 2 + (yy - cy) ** 2 <= r * r
        image[mask] = (40 * i % 256, 200, (255 - 30 * i) % 256)  # a flat colour per region ...
        image[cy, cx] = (0, 0, 0)  # ... with one dark pixel, so the mean differs from the grey
        ys, xs = np.nonzero(mask)
        box = (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1)
        out.append((i + 1, mask, box))
    return [RegionRequest(i, image, m, b) for i, m, b in out]


def expected_crop(req: RegionRequest, pad: int, grey: int = 128) -> np.ndarray:
    """The masked crop on grey, written independently of ``region_image``."""
    x1, y1, x2, y2 = req.box
    h, w = req.mask.shape
    x1, y1, x2, y2 = max(0, x1 - pad), max(0, y1 - pad), min(w, x2 + pad), min(h, y2 + pad)
    m = req.mask[y1:y2, x1:x2, None]
    return np.where(m, req.image[y1:y2, x1:x2], np.uint8(grey)).astype(np.uint8)


def summary(img: np.ndarray) -> str:
    r, g, b = (int(round(v)) for v in img.reshape(-1, 3).mean(axis=0))
    return f"{img.shape[1]}x{img.shape[0]} mean {r},{g},{b}"


@pytest.fixture
def srv():
    server = FakeVLM()
    yield server
    server.shutdown()


def opts(srv: FakeVLM, **kw) -> OpenAIOptions:
    base = dict(base_url=srv.base_url, api_key_env="", backoff=0.01, timeout=5.0, prompt="region {index}", min_side=0)
    base.update(kw)
    return OpenAIOptions(**base)


def run(describer, requests, cancel=None) -> dict[int, object]:
    with describer:
        return {d.index: d for d in describer.describe(requests, cancel)}


# ---- what is sent, what is parsed --------------------------------------------------

def test_sends_model_key_prompt_and_the_masked_crop(srv, monkeypatch):
    srv.api_key = KEY
    monkeypatch.setenv(KEY_ENV, KEY)
    reqs = make_regions(3)
    o = opts(srv, model="vision-7b", api_key_env=KEY_ENV, pad=2, max_tokens=77, temperature=0.5,
             ttl=30, prompt="region {index} box {x1},{y1},{x2},{y2} {width}x{height}", system_prompt="be brief")
    got = run(make_describer("openai", o), reqs)

    assert srv.requests[0].method == "GET" and srv.requests[0].path == "/v1/models"  # checked first
    assert len(srv.chats) == 3
    by_index = {int(c.prompt.split()[1]): c for c in srv.chats}
    for req in reqs:
        chat = by_index[req.index]
        body = chat.json
        assert chat.path == "/v1/chat/completions"
        assert chat.headers["Authorization"] == f"Bearer {KEY}"
        assert body["model"] == "vision-7b" and body["max_tokens"] == 77 and body["temperature"] == 0.5
        assert body["ttl"] == 30 and body["stream"] is False
        assert body["messages"][0] == {"role": "system", "content": "be brief"}
        x1, y1, x2, y2 = req.box
        assert chat.prompt == f"region {req.index} box {x1},{y1},{x2},{y2} {x2 - x1}x{y2 - y1}"
        want = expected_crop(req, pad=2)
        np.testing.assert_array_equal(chat.image(), want)  # lossless PNG of the masked crop
        d = got[req.index]
        assert d.error is None and d.text == summary(want) and d.seconds > 0


def test_model_defaults_to_the_first_listed_and_ttl_is_optional(srv):
    srv.models = ["first-model", "second"]
    got = run(make_describer("openai", opts(srv)), make_regions(1))
    assert got[1].error is None
    assert srv.chats[0].json["model"] == "first-model"
    assert "ttl" not in srv.chats[0].json and "Authorization" not in srv.chats[0].headers


def test_outline_view_sends_the_whole_image_with_the_region_outlined(srv):
    req = make_regions(2)[1]
    run(make_describer("openai", opts(srv, view="outline")), [req])
    sent = srv.chats[0].image()
    assert sent.shape == req.image.shape
    changed = np.any(sent != req.image, axis=2)
    red = np.all(sent == (255, 0, 0), axis=2)
    assert changed.any() and np.array_equal(changed, red & changed)  # only red pixels drawn
    # drawn on the region's border, not far from it
    from scipy.ndimage import binary_dilation

    sq = np.ones((3, 3), bool)
    band = binary_dilation(req.mask, sq, iterations=3) & binary_dilation(~req.mask, sq, iterations=3)
    assert not (changed & ~band).any() and changed[band].mean() > 0.3


def test_max_side_shrinks_the_picture():
    req = make_regions(1, h=60, w=200)[0]
    full = np.ones((60, 200), bool)
    req = RegionRequest(1, req.image, full, (0, 0, 200, 60))
    assert region_image(req, "crop", max_side=50).shape == (15, 50, 3)
    assert region_image(req, "crop", max_side=500).shape == (60, 200, 3)
    assert region_image(req, "crop", min_side=90).shape == (90, 300, 3)
    assert region_image(req, "crop", min_side=90, max_side=250).shape == (75, 250, 3)  # max_side wins


def test_small_regions_are_enlarged_by_default(srv):
    req = make_regions(1)[0]  # a disc 13 px wide, 29 px with the margin
    run(make_describer("openai", opts(srv, min_side=OpenAIOptions().min_side)), [req])
    h, w = srv.chats[0].image().shape[:2]
    assert min(h, w) == 64 and abs(w / h - 1) < 0.05


def test_answer_as_content_parts_is_joined():
    parts = [{"type": "text", "text": "a "}, {"type": "text", "text": "cat"}]
    assert _answer_text({"choices": [{"message": {"content": parts}}]}) == "a cat"
    with pytest.raises(RegionFailed, match="content is int"):
        _answer_text({"choices": [{"message": {"content": 3}}]})


# ---- faults ------------------------------------------------------------------------

def test_500_and_429_then_success_are_retried(srv):
    srv.script("500", "429")
    got = run(make_describer("openai", opts(srv, retries=3, concurrency=1)), make_regions(1))
    assert got[1].error is None and got[1].text == summary(expected_crop(make_regions(1)[0], pad=8))
    assert [c.action for c in srv.chats] == ["500", "429", "ok"]


def test_5xx_beyond_the_retries_is_the_regions_error(srv):
    srv.on_text("region 2", "503")
    got = run(make_describer("openai", opts(srv, retries=1)), make_regions(3))
    assert got[2].text is None and "HTTP 503" in got[2].error and "2 tries" in got[2].error
    assert got[1].error is None and got[3].error is None
    assert sum(c.action == "503" for c in srv.chats) == 2


def test_timeout_is_the_regions_error_and_the_others_go_on(srv):
    srv.on_text("region 1", "sleep:3")
    t0 = time.monotonic()
    got = run(make_describer("openai", opts(srv, timeout=0.4, concurrency=2)), make_regions(3))
    assert got[1].text is None and got[1].error == "no answer within 0.4 s"
    assert got[2].error is None and got[3].error is None
    assert sum("region 1" in c.prompt for c in srv.chats) == 1  # a read timeout is not retried
    assert time.monotonic() - t0 < 2.5


@pytest.mark.parametrize("action, error", [
    ("malformed", "malformed answer: not JSON"),
    ("nochoices", "malformed answer: no choices[0].message.content"),
    ("empty", "empty answer"),
    ("filter", "refused: the server's content filter"),
    ("400", "refused: HTTP 400: image refused by policy"),
])
def test_bad_answers_are_the_regions_error(srv, action, error):
    srv.on_text("region 2", action)
    got = run(make_describer("openai", opts(srv)), make_regions(3))
    assert got[2].text is None and got[2].error.startswith(error)
    assert got[1].text and got[3].text
    assert sum("region 2" in c.prompt for c in srv.chats) == 1  # not retried


def test_wrong_key_stops_at_open_and_the_key_is_never_shown(srv, monkeypatch, capfd, caplog):
    srv.api_key = "the-right-key"
    monkeypatch.setenv(KEY_ENV, KEY)
    d = make_describer("openai", opts(srv, api_key_env=KEY_ENV))
    with pytest.raises(DescriberFatal) as ei:
        d.open()
    msg = str(ei.value)
    assert "401" in msg and f"${KEY_ENV}" in msg and KEY not in msg
    assert not srv.chats  # stopped before any region
    out, err = capfd.readouterr()
    assert KEY not in out + err + caplog.text


def test_missing_key_says_which_variable_to_set(srv, monkeypatch):
    srv.api_key = KEY
    monkeypatch.delenv(KEY_ENV, raising=False)
    with pytest.raises(DescriberFatal, match=f"set the environment variable {KEY_ENV}"):
        make_describer("openai", opts(srv, api_key_env=KEY_ENV)).open()


def test_401_mid_run_is_fatal_and_errors_never_hold_the_key(srv, monkeypatch, capfd, caplog):
    srv.api_key, srv.echo_auth = KEY, True
    monkeypatch.setenv(KEY_ENV, KEY)
    srv.on_text("region 1", "400")  # the server quotes the key in its refusal
    srv.on_text("region 3", "401")
    d = make_describer("openai", opts(srv, api_key_env=KEY_ENV, concurrency=1))
    seen = []
    with d, pytest.raises(DescriberFatal) as ei:
        for desc in d.describe(make_regions(5)):
            seen.append(desc)
    assert "401" in str(ei.value) and KEY not in str(ei.value)
    assert [s.index for s in seen] == [1, 2]
    assert "refused: HTTP 400" in seen[0].error and "***" in seen[0].error and KEY not in seen[0].error
    assert len(srv.chats) == 3  # regions 4 and 5 never sent
    out, err = capfd.readouterr()
    assert KEY not in out + err + caplog.text


def test_server_down_stops_at_open():
    server = FakeVLM()
    url = server.base_url
    server.shutdown()
    d = make_describer("openai", OpenAIOptions(base_url=url, model="m", api_key_env=""))
    t0 = time.monotonic()
    with pytest.raises(DescriberFatal, match=r"cannot reach http://127\.0\.0\.1:\d+/v1 \(connection refused\)"):
        d.open()
    assert time.monotonic() - t0 < 5


def test_server_gone_mid_run_is_fatal_after_the_retries(srv):
    d = make_describer("openai", opts(srv, retries=2, concurrency=1))
    with d:
        srv.shutdown()
        with pytest.raises(DescriberFatal, match=r"lost .* \(connection refused\) after 3 tries"):
            list(d.describe(make_regions(2)))


def test_server_without_a_models_route(srv):
    srv.models = None
    got = run(make_describer("openai", opts(srv, model="given")), make_regions(1))
    assert got[1].error is None and srv.chats[0].json["model"] == "given"
    with pytest.raises(DescriberFatal, match="pass --openai.model"):
        make_describer("openai", opts(srv)).open()


def test_wrong_address_is_fatal_not_a_region_error_each(srv):
    base = srv.base_url.removesuffix("/v1")  # /v1 forgotten: no route answers
    d = make_describer("openai", OpenAIOptions(base_url=base, model="m", api_key_env="", concurrency=1))
    with d, pytest.raises(DescriberFatal, match=r"/chat/completions: HTTP 404 .*check --openai.base-url"):
        list(d.describe(make_regions(3)))
    assert len(srv.chats) == 1


# ---- concurrency, cancel -------------------------------------------------------------

@pytest.mark.parametrize("n", [1, 4])
def test_requests_in_flight(srv, n):
    srv.latency = 0.1
    reqs = make_regions(8)
    got = run(make_describer("openai", opts(srv, concurrency=n)), reqs)
    assert srv.max_in_flight == n
    assert sorted(got) == [r.index for r in reqs]
    for r in reqs:  # every answer belongs to its own region despite the completion order
        assert got[r.index].text == summary(expected_crop(r, pad=8))
    if n > 1:  # the requests really overlapped in time
        chats = sorted(srv.chats, key=lambda c: c.t_start)
        assert chats[1].t_start < chats[0].t_end


def test_cancel_stops_starting_regions(srv):
    srv.latency = 0.1
    cancel = threading.Event()
    d = make_describer("openai", opts(srv, concurrency=2))
    out = []
    with d:
        for desc in d.describe(make_regions(10), cancel):
            out.append(desc)
            cancel.set()
    assert 1 <= len(out) <= 2 and len(srv.chats) == 2


def test_cancel_interrupts_the_back_off(srv):
    srv.script("500")
    cancel = threading.Event()
    d = make_describer("openai", opts(srv, backoff=30, concurrency=1))
    threading.Timer(0.3, cancel.set).start()
    t0 = time.monotonic()
    with d:
        got = list(d.describe(make_regions(1), cancel))
        assert time.monotonic() - t0 < 3
        assert got == []  # the region is not yielded: a re-run redoes it
        worker = [t for t in threading.enumerate() if t.name.startswith("describe-openai")]
        for t in worker:
            t.join(2)  # the worker left its 30 s back-off
        assert not any(t.is_alive() for t in worker)
    assert [c.action for c in srv.chats] == ["500"]


def test_cancel_does_not_wait_for_requests_in_flight(srv):
    srv.latency = 5
    cancel = threading.Event()
    threading.Timer(0.5, cancel.set).start()
    t0 = time.monotonic()
    with make_describer("openai", opts(srv, concurrency=3, timeout=30)) as d:
        assert list(d.describe(make_regions(6), cancel)) == []
    assert time.monotonic() - t0 < 2.5 and len(srv.chats) == 3


def test_describe_before_open_is_an_error(srv):
    with pytest.raises(RuntimeError, match="before open"):
        list(make_describer("openai", opts(srv)).describe(make_regions(1)))


def test_bad_request_is_the_regions_error(srv):
    good = make_regions(1)[0]
    bad = RegionRequest(2, good.image, good.mask, (5, 5, 5, 9))  # empty box
    got = run(make_describer("openai", opts(srv)), [good, bad])
    assert got[1].error is None and "box (5, 5, 5, 9) is empty" in got[2].error


# ---- options and registry ------------------------------------------------------------

def test_options_validation():
    with pytest.raises(ValidationError, match="unknown placeholder"):
        OpenAIOptions(prompt="describe {thing}")
    with pytest.raises(ValidationError, match="http"):
        OpenAIOptions(base_url="localhost:1234")
    assert OpenAIOptions(base_url="http://h:1/v1/").base_url == "http://h:1/v1"
    assert DamOptions(query="<image>\nWhat is it?").query == "What is it?"
    assert "api_key" not in OpenAIOptions.model_fields  # only the variable's name is an option


def test_make_describer_takes_the_options_or_a_params_group():
    class Params:
        openai = OpenAIOptions(model="x")
        dam = DamOptions()

    assert set(DESCRIBER_NAMES) == {"none", "openai", "dam"}
    assert make_describer("openai", Params()).options.model == "x"
    assert isinstance(make_describer("dam", Params()), DamDescriber)
    with pytest.raises(ValueError, match="unknown describer 'gpt'"):
        make_describer("gpt")
    with pytest.raises(ValueError, match="takes OpenAIOptions"):
        make_describer("openai", DamOptions())


def test_none_gives_regions_without_text():
    reqs = make_regions(3)
    with make_describer("none") as d:
        got = list(d.describe(reqs))
    assert [(g.index, g.text, g.error) for g in got] == [(1, None, None), (2, None, None), (3, None, None)]


# ---- DAM with a stub of from_pretrained ----------------------------------------------

class _StubDam:
    def __init__(self, log):
        self.log = log

    def get_description(self, image, mask, query, **kw):
        self.log.append(("get_description", image, mask, query, kw))
        if "boom" in query:
            raise RuntimeError("kaput")
        return iter(["a disc ", "of colour"]) if kw.get("num_beams") == 2 else f"  region of {int(np.array(mask).sum() // 255)} px "


class _StubModel:
    def __init__(self, log):
        self.log = log

    def to(self, device):
        self.log.append(("to", device))
        return self

    def init_dam(self, **kw):
        self.log.append(("init_dam", kw))
        return _StubDam(self.log)


@pytest.fixture
def stub_dam(monkeypatch, tmp_path):
    """A fake ``transformers`` whose AutoModel.from_pretrained returns a stub DAM, a
    torch that reports CUDA, and an empty model cache."""
    import torch

    monkeypatch.setenv("SEGDECK_MODEL_DIR", str(tmp_path / "models"))

    log: list = []
    models: list = []

    def from_pretrained(path, **kw):
        log.append(("from_pretrained", path, kw))
        m = _StubModel(log)
        models.append(weakref.ref(m))
        return m

    fake = types.ModuleType("transformers")
    fake.AutoModel = types.SimpleNamespace(from_pretrained=from_pretrained)
    monkeypatch.setitem(sys.modules, "transformers", fake)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "empty_cache", lambda: log.append(("empty_cache",)))
    return types.SimpleNamespace(log=log, models=models)


def test_dam_loads_once_and_passes_image_mask_and_prompt(stub_dam):
    import torch
    from PIL import Image

    reqs = make_regions(2)
    d = make_describer("dam", DamOptions(trust_remote_code=True, query="What is this?", max_new_tokens=64))
    with d:
        got = {x.index: x for x in d.describe(reqs)}
    log = stub_dam.log
    assert [e[0] for e in log].count("from_pretrained") == 1
    _, path, kw = log[0]
    assert path == "nvidia/DAM-3B-Self-Contained"
    assert kw == {"trust_remote_code": True, "torch_dtype": torch.float16}
    assert log[1] == ("to", "cuda")
    assert log[2] == ("init_dam", {"conv_mode": "v1", "prompt_mode": "full+focal_crop"})
    calls = [e for e in log if e[0] == "get_description"]
    assert len(calls) == 2
    for (_, image, mask, query, kw), req in zip(calls, reqs, strict=True):
        assert isinstance(image, Image.Image) and image.mode == "RGB" and image.size == (48, 36)
        np.testing.assert_array_equal(np.asarray(image), req.image)
        assert isinstance(mask, Image.Image) and mask.mode == "L" and mask.size == (48, 36)
        np.testing.assert_array_equal(np.asarray(mask), req.mask.astype(np.uint8) * 255)
        assert query == "<image>\nWhat is this?"
        assert kw == {"streaming": False, "temperature": 0.2, "top_p": 0.5, "num_beams": 1, "max_new_tokens": 64}
        assert got[req.index].text == f"region of {int(req.mask.sum())} px" and got[req.index].error is None


def test_dam_close_frees_the_model(stub_dam):
    d = make_describer("dam", DamOptions(trust_remote_code=True))
    d.open()
    gc.collect()
    assert stub_dam.models[0]() is not None
    d.close()
    assert stub_dam.models[0]() is None  # no reference left
    assert ("empty_cache",) in stub_dam.log


def test_dam_streamed_pieces_and_a_failing_region(stub_dam):
    with make_describer("dam", DamOptions(trust_remote_code=True, num_beams=2)) as d:
        assert [x.text for x in d.describe(make_regions(1))] == ["a disc of colour"]
    with make_describer("dam", DamOptions(trust_remote_code=True, query="boom")) as d:
        (x,) = d.describe(make_regions(1))
    assert x.text is None and x.error == "RuntimeError: kaput"


def test_dam_needs_trust_remote_code(stub_dam):
    with pytest.raises(DescriberFatal) as ei:
        make_describer("dam", DamOptions()).open()
    msg = str(ei.value)
    assert "--dam.trust-remote-code" in msg and "own Python code" in msg and "\n" not in msg
    assert not stub_dam.log  # nothing loaded


def test_dam_on_cpu_is_one_line(stub_dam, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(DescriberFatal, match=r"^dam: needs a CUDA GPU .*--describer openai$"):
        make_describer("dam", DamOptions(trust_remote_code=True)).open()
    assert not stub_dam.log


def test_dam_without_the_extra_names_it(stub_dam, monkeypatch):
    monkeypatch.setitem(sys.modules, "transformers", None)  # import fails
    with pytest.raises(DescriberFatal, match=r"pip install 'segdeck\[dam\]'"):
        make_describer("dam", DamOptions(trust_remote_code=True)).open()


def test_dam_load_failure_is_one_line(stub_dam, monkeypatch):
    def broken(path, **kw):
        raise OSError(f"{path} is not a local folder\nand not a valid model identifier")

    sys.modules["transformers"].AutoModel.from_pretrained = broken
    with pytest.raises(DescriberFatal, match=r"^dam: cannot load nowhere: OSError: nowhere is not a local folder$"):
        make_describer("dam", DamOptions(trust_remote_code=True, model="nowhere")).open()


def test_dam_local_folder(stub_dam, tmp_path):
    with make_describer("dam", DamOptions(trust_remote_code=True, model=str(tmp_path))):
        pass
    assert stub_dam.log[0][1] == str(tmp_path)


def test_dam_in_the_model_manager(stub_dam, tmp_path):
    from segdeck.core import models

    spec = models.get_spec("dam-3b")
    assert spec.folder and spec.config == "nvidia/DAM-3B-Self-Contained"
    assert [(s.name, cached) for s, cached, _ in models.list_models("dam")] == [("dam-3b", False)]
    with pytest.raises(DescriberFatal, match="segdeck models download dam-3b"):
        make_describer("dam", DamOptions(trust_remote_code=True, model="dam-3b")).open()
    src = tmp_path / "fetched"
    src.mkdir()
    (src / "config.json").write_text("{}")
    with pytest.raises(models.SetupError, match="not a model folder"):
        models.import_file("dam-3b", src)  # no weights yet
    (src / "model.safetensors").write_bytes(b"w")
    dest = models.import_file("dam-3b", src)
    assert models.model_path("dam-3b") == dest and models.verify("dam-3b") == dest
    assert [cached for _, cached, _ in models.list_models("dam")] == [True]
    for name in ("dam-3b", "nvidia/DAM-3B-Self-Contained"):  # both load the manager's copy
        with make_describer("dam", DamOptions(trust_remote_code=True, model=name)):
            pass
        loads = [e for e in stub_dam.log if e[0] == "from_pretrained"]
        assert loads[-1][1] == str(dest)


def test_png_round_trip_is_lossless():
    from PIL import Image

    from segdeck.core.describe.describers.openai import png_data_uri

    img = make_regions(1)[0].image
    import base64

    raw = base64.b64decode(png_data_uri(img).split(",", 1)[1])
    np.testing.assert_array_equal(np.asarray(Image.open(io.BytesIO(raw))), img)
