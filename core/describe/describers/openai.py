"""``openai`` describer: any OpenAI-compatible chat-completions server.

Works with LM Studio (``http://localhost:1234/v1``), vLLM, the llama.cpp server,
Ollama (``http://localhost:11434/v1``) and OpenAI itself: each region is one
``POST {base_url}/chat/completions`` whose user message holds the prompt and the
region as a ``data:image/png;base64,...`` URI (an ``image_url`` content part). The
picture is the region's masked crop on a neutral grey background, or with
``view = "outline"`` the whole image with the region outlined in red
(:func:`~segdeck.core.describe.describers.base.region_image`).

The API key is read from the environment variable *named* by
:attr:`OpenAIOptions.api_key_env` when the describer opens; the key itself is never
an option, so it never reaches ``job.toml``, events, logs or error messages
(messages are scrubbed of it).

Faults: 429, 5xx and connection errors are retried with exponential back-off
(``Retry-After`` honoured, at most 60 s); 401 / 403 stop the job
(:class:`~.base.DescriberFatal`), as do a server that cannot be reached at all and a
404 / 405 (a wrong address or an unknown model: every region would fail); a
read timeout, a malformed answer, an empty answer or a refusal (another 4xx, the
content filter) is that region's error.
"""

from __future__ import annotations

import base64
import os
import string
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from segdeck.core.describe.describers.base import (
    NEUTRAL_GREY,
    Describer,
    DescriberFatal,
    RegionFailed,
    RegionRequest,
    region_image,
)

#: Placeholders a prompt template may use (``str.format`` fields).
PROMPT_FIELDS = ("index", "x1", "y1", "x2", "y2", "width", "height", "area")

DEFAULT_PROMPTS = {
    "crop": (
        "The picture shows one region cut out of a larger photo; everything outside the region "
        "is plain grey. Describe the object or material in the region in detail: what it is, "
        "its colour, shape, texture and state. Do not describe the grey background."
    ),
    "outline": (
        "Describe in detail the object or region outlined in red in this image: what it is, "
        "its colour, shape, texture and state. Describe only what is inside the red outline."
    ),
}

_RETRY_AFTER_MAX = 60.0


class OpenAIOptions(BaseModel):
    """Options of the ``openai`` describer (the job's ``openai`` group: ``--openai.base-url``)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    base_url: str = Field("http://localhost:1234/v1", description="server address up to /v1 (LM Studio :1234/v1, Ollama :11434/v1, vLLM :8000/v1)")
    model: str = Field("", description="model name on the server; empty = the first model the server lists")
    api_key_env: str = Field("SEGDECK_VLM_API_KEY", description="name of the environment variable holding the API key (the key itself is never stored); empty = no key")
    prompt: str = Field("", description="prompt template; may use {index} {x1} {y1} {x2} {y2} {width} {height} {area}; empty = a default for the view")
    system_prompt: str = Field("", description="system message; empty = none")
    view: Literal["crop", "outline"] = Field("crop", description="crop: the masked region on grey; outline: the whole image with the region outlined in red")
    pad: int = Field(8, ge=0, le=1024, description="grey margin around the crop in pixels")
    max_side: int = Field(1024, ge=0, le=8192, description="shrink the picture sent so its longer side is at most this (pixels; 0 = never)")
    min_side: int = Field(64, ge=0, le=1024, description="enlarge a smaller picture so its shorter side is at least this (pixels; 0 = never)")
    max_tokens: int = Field(300, ge=1, le=32768, description="longest answer in tokens")
    temperature: float = Field(0.2, ge=0.0, le=2.0, description="sampling temperature")
    timeout: float = Field(120.0, gt=0, le=3600, description="seconds to wait for one answer")
    retries: int = Field(3, ge=0, le=20, description="tries after the first on 429 / 5xx / connection errors")
    backoff: float = Field(1.0, ge=0, le=120, description="first retry delay in seconds, doubled each retry")
    concurrency: int = Field(4, ge=1, le=64, description="requests in flight at once")
    ttl: int = Field(0, ge=0, le=86400, description="LM Studio: unload the model this many seconds after the last request (0 = not sent)")

    @field_validator("base_url")
    @classmethod
    def _http_url(cls, v: str) -> str:
        v = v.strip().rstrip("/")
        if not v.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return v

    @field_validator("prompt")
    @classmethod
    def _known_fields(cls, v: str) -> str:
        try:
            names = [f for _, f, _, _ in string.Formatter().parse(v) if f is not None]
        except ValueError as exc:
            raise ValueError(f"bad template ({exc}); write {{{{ and }}}} for literal braces") from None
        unknown = sorted({n for n in names if n not in PROMPT_FIELDS})
        if unknown:
            raise ValueError(f"unknown placeholder(s) {', '.join(unknown)}; known: {', '.join(PROMPT_FIELDS)}")
        return v


def prompt_text(options: OpenAIOptions, request: RegionRequest) -> str:
    """The user prompt for one region: the template filled with the region's index and box.

    Parameters
    ----------
    options : OpenAIOptions
    request : RegionRequest

    Returns
    -------
    str
        ``options.prompt`` (or the view's default) with ``{index}``, ``{x1}`` .. ``{y2}``
        (XYXY pixels, last exclusive), ``{width}``, ``{height}`` and ``{area}`` (mask
        pixels) filled in.
    """
    template = options.prompt or DEFAULT_PROMPTS[options.view]
    x1, y1, x2, y2 = (int(v) for v in request.box)
    return template.format(index=request.index, x1=x1, y1=y1, x2=x2, y2=y2, width=x2 - x1,
                           height=y2 - y1, area=int(request.mask.sum()))


def png_data_uri(rgb) -> str:
    """``data:image/png;base64,...`` of an (H, W, 3) uint8 RGB array (lossless)."""
    import cv2

    ok, buf = cv2.imencode(".png", rgb[:, :, ::-1])
    if not ok:  # pragma: no cover - cv2 encodes any uint8 RGB array
        raise RegionFailed("could not encode the region as PNG")
    return "data:image/png;base64," + base64.b64encode(buf.tobytes()).decode("ascii")


def _answer_text(data: Any) -> str:
    """The text of a chat-completions answer; RegionFailed when there is none."""
    try:
        choice = data["choices"][0]
        content = choice["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise RegionFailed("malformed answer: no choices[0].message.content") from None
    if choice.get("finish_reason") == "content_filter":
        raise RegionFailed("refused: the server's content filter stopped the answer")
    if isinstance(content, list):  # content parts (DAM's server and a few others)
        content = "".join(p.get("text", "") for p in content if isinstance(p, dict))
    if content is None:
        refusal = choice["message"].get("refusal") if isinstance(choice.get("message"), dict) else None
        raise RegionFailed(f"refused: {str(refusal)[:200]}" if refusal else "empty answer")
    if not isinstance(content, str):
        raise RegionFailed(f"malformed answer: content is {type(content).__name__}")
    if not content.strip():
        raise RegionFailed("empty answer")
    return content.strip()


def _server_message(resp) -> str:
    """A short reason from an error response (its JSON ``error.message`` or text)."""
    try:
        data = resp.json()
        err = data.get("error", data) if isinstance(data, dict) else data
        msg = err.get("message", "") if isinstance(err, dict) else str(err)
    except ValueError:
        msg = resp.text
    msg = " ".join(str(msg).split())
    return msg[:200]


class OpenAIDescriber(Describer):
    """Describe regions with an OpenAI-compatible vision chat model.

    Parameters
    ----------
    options : OpenAIOptions
    """

    name = "openai"

    def __init__(self, options: OpenAIOptions | None = None):
        super().__init__()
        self.options = options or OpenAIOptions()
        self.concurrency = self.options.concurrency
        self.model = self.options.model
        self._key: str | None = None
        self._session = None

    # -- helpers -------------------------------------------------------------------
    def _redact(self, text: str) -> str:
        if self._key:
            text = text.replace(self._key, "***")
        return text

    def _fatal(self, text: str) -> DescriberFatal:
        return DescriberFatal(self._redact(f"openai: {text}"))

    def _auth_message(self, status: int) -> str:
        env = self.options.api_key_env
        if not self._key:
            how = f"set the environment variable {env}" if env else "set --openai.api-key-env to the variable holding the key"
            return f"{self.options.base_url} wants an API key (HTTP {status}): {how}"
        return (f"{self.options.base_url} refused the API key from ${env} (HTTP {status}); "
                "check the key and that it may use this model")

    # -- lifecycle -----------------------------------------------------------------
    def open(self) -> None:
        """Create the HTTP session, read the key, check the server and pick the model.

        ``GET {base_url}/models`` must answer: a connection failure or a 401 / 403 is
        a :class:`DescriberFatal`; servers without that route (404 or other answers) are
        tolerated when :attr:`OpenAIOptions.model` is set.

        Raises
        ------
        DescriberFatal
            Server unreachable, key refused, or no model named and none listed.
        """
        import requests
        from requests.adapters import HTTPAdapter

        opts = self.options
        self.close()  # opening twice starts afresh
        self._key = os.environ.get(opts.api_key_env) if opts.api_key_env else None
        self._key = self._key.strip() if self._key else None
        session = requests.Session()
        adapter = HTTPAdapter(pool_connections=1, pool_maxsize=max(4, opts.concurrency))
        session.mount("http://", adapter)
        session.mount("https://", adapter)
        if self._key:
            session.headers["Authorization"] = f"Bearer {self._key}"
        self._session = session
        try:
            resp = session.get(f"{opts.base_url}/models", timeout=min(10.0, opts.timeout))
        except requests.RequestException as exc:
            self.close()
            raise self._fatal(f"cannot reach {opts.base_url} ({_short_reason(exc)}); is the server running?") from None
        if resp.status_code in (401, 403):
            status = resp.status_code
            self.close()
            raise self._fatal(self._auth_message(status))
        listed: list[str] = []
        if resp.ok:
            try:
                listed = [m["id"] for m in resp.json().get("data", []) if isinstance(m, dict) and "id" in m]
            except (ValueError, AttributeError, TypeError):
                listed = []
        if not self.model:
            if not listed:
                self.close()
                raise self._fatal(f"no model named and {opts.base_url}/models lists none; pass --openai.model")
            self.model = listed[0]
        super().open()

    def close(self) -> None:
        """Close the HTTP session."""
        if self._session is not None:
            self._session.close()
            self._session = None
        super().close()

    # -- one region ----------------------------------------------------------------
    def payload(self, request: RegionRequest) -> dict:
        """The chat-completions request body for one region (what is POSTed).

        Returns
        -------
        dict
            ``model``, ``messages`` (optional system message; a user message with a
            text part and an ``image_url`` part holding the PNG data URI),
            ``max_tokens``, ``temperature``, ``stream: false`` and, when set, ``ttl``.
        """
        opts = self.options
        picture = region_image(request, opts.view, background=NEUTRAL_GREY, pad=opts.pad, max_side=opts.max_side,
                               min_side=opts.min_side)
        messages: list[dict] = []
        if opts.system_prompt:
            messages.append({"role": "system", "content": opts.system_prompt})
        messages.append({"role": "user", "content": [
            {"type": "text", "text": prompt_text(opts, request)},
            {"type": "image_url", "image_url": {"url": png_data_uri(picture)}},
        ]})
        body = {"model": self.model, "messages": messages, "max_tokens": opts.max_tokens,
                "temperature": opts.temperature, "stream": False}
        if opts.ttl:
            body["ttl"] = opts.ttl
        return body

    def _describe_one(self, request: RegionRequest, cancel) -> str:
        import requests

        opts = self.options
        session = self._session
        if session is None:
            raise RuntimeError("OpenAIDescriber used after close()")
        body = self.payload(request)
        url = f"{opts.base_url}/chat/completions"
        tries = opts.retries + 1
        reason = ""
        for attempt in range(tries):
            delay = opts.backoff * (2 ** attempt)
            try:
                resp = session.post(url, json=body, timeout=(min(10.0, opts.timeout), opts.timeout))
            except requests.exceptions.ReadTimeout:
                raise RegionFailed(f"no answer within {opts.timeout:g} s") from None
            except requests.RequestException as exc:  # connection refused / reset / connect timeout
                reason = _short_reason(exc)
                if attempt + 1 == tries:
                    raise self._fatal(f"lost {opts.base_url} ({reason}) after {tries} tries") from None
            else:
                status = resp.status_code
                if status in (401, 403):
                    raise self._fatal(self._auth_message(status))
                if status in (404, 405):  # wrong address or unknown model: every region would fail
                    msg = _server_message(resp)
                    raise self._fatal(f"{url}: HTTP {status}" + (f" ({msg})" if msg else "")
                                      + "; check --openai.base-url (it usually ends in /v1) and --openai.model")
                if status == 429 or status >= 500:
                    reason = f"HTTP {status}" + (f": {m}" if (m := _server_message(resp)) else "")
                    retry_after = resp.headers.get("Retry-After", "")
                    try:
                        delay = max(delay, min(float(retry_after), _RETRY_AFTER_MAX))
                    except ValueError:
                        pass
                    if attempt + 1 == tries:
                        raise RegionFailed(f"{reason} (after {tries} tries)")
                elif status >= 400:
                    msg = _server_message(resp)
                    raise RegionFailed(f"refused: HTTP {status}" + (f": {msg}" if msg else ""))
                else:
                    try:
                        data = resp.json()
                    except ValueError:
                        raise RegionFailed(f"malformed answer: not JSON ({_snippet(resp.text)})") from None
                    return _answer_text(data)
            if cancel.wait(delay):
                raise RegionFailed(f"cancelled while retrying ({reason})")
        raise AssertionError("unreachable")  # pragma: no cover


def _snippet(text: str, n: int = 60) -> str:
    text = " ".join(text.split())
    return repr(text[:n] + ("..." if len(text) > n else ""))


def _short_reason(exc: Exception) -> str:
    """One short line for a requests exception (the class name and the innermost reason)."""
    import requests

    if isinstance(exc, requests.exceptions.ConnectTimeout):
        return "connection timed out"
    if isinstance(exc, requests.exceptions.ConnectionError):
        text = str(exc)
        for key in ("Connection refused", "Name or service not known", "Temporary failure in name resolution",
                    "Connection reset", "Remote end closed connection", "No route to host"):
            if key in text:
                return key.lower()
        return "connection error"
    return type(exc).__name__
