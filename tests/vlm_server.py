"""A fake OpenAI-compatible vision chat server for tests and benchmarks (stdlib only).

``FakeVLM`` listens on ``127.0.0.1:<free port>`` (``ThreadingHTTPServer``), answers
``GET /v1/models`` and ``POST /v1/chat/completions``, records every request and can be
scripted::

    with FakeVLM(latency=0.3) as srv:                 # srv.base_url == "http://127.0.0.1:PORT/v1"
        srv.script("500", "ok")                       # next chat requests, in order
        srv.on_text("region 3", "malformed")          # any chat request whose prompt contains it
        ...
        srv.requests[0].json["model"]; srv.max_in_flight; srv.shutdown()  # then: server down

Actions: ``"ok"`` (answer), ``"500"`` / ``"503"`` / ``"429"`` (an error JSON; 429 with
``Retry-After: 0``), ``"401"``, ``"400"`` (a refusal), ``"malformed"`` (200 with a
body that is not JSON), ``"nochoices"`` (JSON without ``choices``), ``"filter"``
(``finish_reason: content_filter``), ``"empty"`` (empty content) and ``"sleep:S"``
(sleep S seconds, then answer: a client with a shorter timeout gives up).

The default answer describes the picture it was sent: ``"<W>x<H> mean <r>,<g>,<b>"``
(the decoded PNG's size and mean colour), so a test can tell which region an answer
belongs to. With ``api_key`` set every route wants ``Authorization: Bearer <key>``
(else 401).
"""

from __future__ import annotations

import base64
import io
import json
import socket
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Recorded:
    """One request the server received."""

    method: str
    path: str
    headers: dict[str, str]
    json: dict | None = None
    action: str = ""
    t_start: float = 0.0
    t_end: float = 0.0

    @property
    def prompt(self) -> str:
        """The user message's text part."""
        for part in self.user_content():
            if part.get("type") == "text":
                return part["text"]
        return ""

    @property
    def image_uri(self) -> str:
        """The user message's ``image_url`` data URI."""
        for part in self.user_content():
            if part.get("type") == "image_url":
                return part["image_url"]["url"]
        return ""

    def user_content(self) -> list[dict]:
        for msg in (self.json or {}).get("messages", []):
            if msg.get("role") == "user" and isinstance(msg.get("content"), list):
                return msg["content"]
        return []

    def image(self):
        """The decoded picture: (H, W, 3) uint8 RGB numpy array (PNG only)."""
        import numpy as np
        from PIL import Image

        head, _, data = self.image_uri.partition(",")
        assert head == "data:image/png;base64", head
        raw = base64.b64decode(data)
        assert raw[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
        return np.asarray(Image.open(io.BytesIO(raw)).convert("RGB"))


def describe_picture(rec: Recorded) -> str:
    """Default answer: ``"<W>x<H> mean <r>,<g>,<b>"`` of the picture sent."""
    img = rec.image()
    r, g, b = (int(round(v)) for v in img.reshape(-1, 3).mean(axis=0))
    return f"{img.shape[1]}x{img.shape[0]} mean {r},{g},{b}"


@dataclass
class FakeVLM:
    """The fake server (see the module docstring). Starts on construction.

    Parameters
    ----------
    latency : float
        Seconds every chat request waits before its answer.
    models : list of str
        What ``GET /v1/models`` lists; None answers that route with 404.
    api_key : str or None
        Required bearer token.
    echo_auth : bool
        The ``"400"`` refusal quotes the ``Authorization`` header it got (a leak test).
    answer : callable
        ``Recorded -> str``, the text of an ``"ok"`` answer.
    """

    latency: float = 0.0
    models: list[str] | None = field(default_factory=lambda: ["fake-vlm"])
    api_key: str | None = None
    answer: Callable[[Recorded], str] = describe_picture
    echo_auth: bool = False
    requests: list[Recorded] = field(default_factory=list, init=False)
    max_in_flight: int = field(default=0, init=False)

    def __post_init__(self):
        self._lock = threading.Lock()
        self._queue: deque[str] = deque()
        self._rules: list[tuple[str, str]] = []
        self._in_flight = 0
        self._stop = threading.Event()
        self._conns: set = set()
        handler = type("Handler", (_Handler,), {"fake": self})
        self.server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.server.daemon_threads = True
        self.server.request_queue_size = 128
        self._thread = threading.Thread(target=self.server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name="fake-vlm", daemon=True)
        self._thread.start()
        self._down = False

    # -- scripting ------------------------------------------------------------------
    @property
    def port(self) -> int:
        return self.server.server_address[1]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def script(self, *actions: str) -> None:
        """Queue actions for the next chat requests (after them: ``"ok"``)."""
        for a in actions:
            _check_action(a)
        with self._lock:
            self._queue.extend(actions)

    def on_text(self, text: str, action: str) -> None:
        """Every chat request whose prompt contains ``text`` gets ``action`` (before the queue)."""
        _check_action(action)
        with self._lock:
            self._rules.append((text, action))

    def clear(self) -> None:
        """Forget the recorded requests, queued actions and rules."""
        with self._lock:
            self.requests.clear()
            self._queue.clear()
            self._rules.clear()
            self.max_in_flight = 0

    @property
    def chats(self) -> list[Recorded]:
        """The chat-completions requests received."""
        return [r for r in self.requests if r.path.endswith("/chat/completions")]

    def _next_action(self, rec: Recorded) -> str:
        with self._lock:
            for text, action in self._rules:
                if text in rec.prompt:
                    return action
            return self._queue.popleft() if self._queue else "ok"

    # -- lifecycle ------------------------------------------------------------------
    def shutdown(self) -> None:
        """Stop serving and close the port (later connections are refused)."""
        if self._down:
            return
        self._down = True
        self._stop.set()
        self.server.shutdown()
        self.server.server_close()
        with self._lock:  # kept-alive connections die with the server, as in a real crash
            conns, self._conns = list(self._conns), set()
        for sock in conns:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        self._thread.join(5)

    def __enter__(self) -> FakeVLM:
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()


_ACTIONS = ("ok", "500", "502", "503", "429", "401", "400", "malformed", "nochoices", "filter", "empty")


def _check_action(action: str) -> None:
    if action in _ACTIONS:
        return
    if action.startswith("sleep:"):
        float(action.partition(":")[2])
        return
    raise ValueError(f"unknown fake action {action!r}; known: {', '.join(_ACTIONS)}, sleep:SECONDS")


class _Handler(BaseHTTPRequestHandler):
    fake: FakeVLM
    protocol_version = "HTTP/1.1"

    def log_message(self, *args) -> None:  # keep test output clean
        pass

    def setup(self) -> None:
        super().setup()
        with self.fake._lock:
            self.fake._conns.add(self.connection)

    def finish(self) -> None:
        with self.fake._lock:
            self.fake._conns.discard(self.connection)
        try:
            super().finish()
        except OSError:
            pass

    def _send(self, status: int, body: bytes | dict, headers: dict | None = None) -> None:
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        try:
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            for k, v in (headers or {}).items():
                self.send_header(k, v)
            self.end_headers()
            self.wfile.write(data)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up (timeout)
            self.close_connection = True

    def _authorised(self) -> bool:
        key = self.fake.api_key
        return key is None or self.headers.get("Authorization") == f"Bearer {key}"

    def do_GET(self) -> None:  # noqa: N802 - http.server's naming
        fake = self.fake
        rec = Recorded("GET", self.path, dict(self.headers.items()), t_start=time.monotonic())
        with fake._lock:
            fake.requests.append(rec)
        if not self._authorised():
            self._send(401, {"error": {"message": "invalid api key", "type": "invalid_request_error"}})
        elif self.path.rstrip("/") == "/v1/models" and fake.models is not None:
            self._send(200, {"object": "list", "data": [{"id": m, "object": "model"} for m in fake.models]})
        else:
            self._send(404, {"error": {"message": f"no route {self.path}"}})
        rec.t_end = time.monotonic()

    def do_POST(self) -> None:  # noqa: N802
        fake = self.fake
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body = json.loads(raw)
        except ValueError:
            body = None
        rec = Recorded("POST", self.path, dict(self.headers.items()), body, t_start=time.monotonic())
        with fake._lock:
            fake.requests.append(rec)
            fake._in_flight += 1
            fake.max_in_flight = max(fake.max_in_flight, fake._in_flight)
        try:
            self._chat(rec)
        finally:
            with fake._lock:
                fake._in_flight -= 1
            rec.t_end = time.monotonic()

    def _chat(self, rec: Recorded) -> None:
        fake = self.fake
        if self.path.rstrip("/") != "/v1/chat/completions":
            self._send(404, {"error": {"message": f"no route {self.path}"}})
            return
        if not self._authorised():
            self._send(401, {"error": {"message": "invalid api key", "type": "invalid_request_error"}})
            return
        if rec.json is None:
            self._send(400, {"error": {"message": "body is not JSON"}})
            return
        action = rec.action = fake._next_action(rec)
        if fake.latency and fake._stop.wait(fake.latency):
            return
        if action.startswith("sleep:"):
            if fake._stop.wait(float(action.partition(":")[2])):
                return
            action = "ok"
        if action in ("500", "502", "503"):
            self._send(int(action), {"error": {"message": "model crashed", "type": "server_error"}})
        elif action == "429":
            self._send(429, {"error": {"message": "slow down"}}, {"Retry-After": "0"})
        elif action == "401":
            self._send(401, {"error": {"message": "invalid api key", "type": "invalid_request_error"}})
        elif action == "400":
            msg = "image refused by policy"
            if fake.echo_auth:  # like servers that quote the key they were given
                msg += f" (request authorised with {self.headers.get('Authorization', '')})"
            self._send(400, {"error": {"message": msg}})
        elif action == "malformed":
            self._send(200, b"<html>not json{")
        elif action == "nochoices":
            self._send(200, {"id": "x", "object": "chat.completion"})
        else:
            content = {"ok": None, "empty": "", "filter": ""}[action]
            text = fake.answer(rec) if content is None else content
            finish = "content_filter" if action == "filter" else "stop"
            self._send(200, {
                "id": "chatcmpl-fake", "object": "chat.completion", "model": rec.json.get("model"),
                "choices": [{"index": 0, "finish_reason": finish,
                             "message": {"role": "assistant", "content": text}}],
                "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
            })
