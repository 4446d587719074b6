"""``dam`` describer: Describe Anything (Lian et al., "Describe Anything: Detailed
Localized Image and Video Captioning", 2025), ``nvidia/DAM-3B-Self-Contained``.

The model is loaded through transformers' remote code::

    model = AutoModel.from_pretrained(path, trust_remote_code=True, torch_dtype=torch.float16)
    dam = model.to("cuda").init_dam(conv_mode="v1", prompt_mode="full+focal_crop")
    dam.get_description(image_pil, mask_pil_L, "<image>\\n<query>", streaming=False, ...)

It is shown the whole image and the region's mask (a PIL ``"L"`` image of the image's
size, 255 inside the region) and builds its own focal crop. Its code hard-codes CUDA
and float16, so it needs an NVIDIA GPU; the model is loaded once in
:meth:`DamDescriber.open` and freed in :meth:`DamDescriber.close`. Regions are
described one at a time (a list of images would be one multi-frame prompt, not a
batch).

Requirements: the optional extra ``segdeck[dam]`` (``transformers>=4.41,<5`` and
``accelerate``; the remote code imports names that transformers 5 moved) and the
explicit :attr:`DamOptions.trust_remote_code` (the model's architecture is Python code
downloaded with its weights; loading it runs that code).
"""

from __future__ import annotations

import gc
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator

from segdeck.core.describe.describers.base import (
    Describer,
    DescriberFatal,
    RegionFailed,
    RegionRequest,
)

#: Hugging Face repository of the self-contained DAM checkpoint.
DAM_REPO = "nvidia/DAM-3B-Self-Contained"
#: Its name in segdeck's model manager (``segdeck models``).
DAM_MODEL_NAME = "dam-3b"


class DamOptions(BaseModel):
    """Options of the ``dam`` describer (the job's ``dam`` group: ``--dam.trust-remote-code``)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    model: str = Field(DAM_REPO, description="Hugging Face repo id, a local model folder, or dam-3b (the model manager's folder)")
    trust_remote_code: bool = Field(False, description="allow running the Python code shipped with the model (DAM's architecture is not part of transformers)")
    query: str = Field("Describe the masked region in detail.", description="question asked about each region (<image> is prepended)")
    conv_mode: str = Field("v1", description="DAM conversation template")
    prompt_mode: str = Field("full+focal_crop", description="DAM prompt mode: the full image plus a focal crop of the region")
    temperature: float = Field(0.2, ge=0.0, le=2.0, description="sampling temperature")
    top_p: float = Field(0.5, gt=0.0, le=1.0, description="nucleus sampling mass")
    num_beams: int = Field(1, ge=1, le=16, description="beam search width")
    max_new_tokens: int = Field(512, ge=1, le=8192, description="longest answer in tokens")

    @field_validator("query")
    @classmethod
    def _no_image_tag(cls, v: str) -> str:
        v = v.replace("<image>", "").strip()  # the describer puts the image tag first itself
        if not v:
            raise ValueError("must not be empty")
        return v


def resolve_model(name: str) -> str:
    """Where to load DAM from.

    Parameters
    ----------
    name : str
        An existing local folder; :data:`DAM_MODEL_NAME` (the model manager's cache
        folder, which must exist); :data:`DAM_REPO` (the model manager's folder when
        present, else the repo id); or another Hugging Face repo id (returned
        unchanged; transformers downloads it into its own cache).

    Returns
    -------
    str

    Raises
    ------
    DescriberFatal
        ``dam-3b`` is not in the model manager's cache.
    """
    from segdeck.core import models

    path = Path(name).expanduser()
    if path.is_dir():
        return str(path)
    if name in (DAM_MODEL_NAME, DAM_REPO):
        folder = models.model_path(DAM_MODEL_NAME)
        if folder is not None:  # the model manager's copy (downloaded or imported)
            return str(folder)
        if name == DAM_MODEL_NAME:
            raise DescriberFatal(f"dam: {DAM_MODEL_NAME} is not downloaded; "
                                 f"`segdeck models download {DAM_MODEL_NAME}` or pass --dam.model {DAM_REPO}")
    return name


def _prompt(query: str) -> str:
    return f"<image>\n{query}"


class DamDescriber(Describer):
    """Describe regions with Describe Anything on a CUDA GPU.

    Parameters
    ----------
    options : DamOptions
    """

    name = "dam"
    concurrency = 1

    def __init__(self, options: DamOptions | None = None):
        super().__init__()
        self.options = options or DamOptions()
        self._model = None
        self._dam = None

    def open(self) -> None:
        """Check the preconditions and load the model once (fp16, on ``cuda``).

        Raises
        ------
        DescriberFatal
            ``trust_remote_code`` not given (the message says why it is needed); no
            CUDA GPU; ``segdeck[dam]`` (transformers) not installed; the model cannot
            be loaded (bad folder, offline without a cached copy).
        """
        opts = self.options
        if not opts.trust_remote_code:
            raise DescriberFatal(
                f"dam: {opts.model} is loaded with its own Python code (DAM's architecture is not part of "
                "transformers), and that code runs on this machine; pass --dam.trust-remote-code if you trust it")
        try:
            import torch
        except ImportError:
            raise DescriberFatal("dam: needs PyTorch with CUDA: pip install 'segdeck[sam,dam]'") from None
        if not torch.cuda.is_available():
            raise DescriberFatal("dam: needs a CUDA GPU (its code hard-codes .cuda() and float16); "
                                 "on this machine use --describer openai")
        try:
            from transformers import AutoModel
        except ImportError:
            raise DescriberFatal("dam: transformers is not installed: pip install 'segdeck[dam]'") from None
        path = resolve_model(opts.model)
        try:
            model = AutoModel.from_pretrained(path, trust_remote_code=True, torch_dtype=torch.float16)
            model = model.to("cuda")
            dam = model.init_dam(conv_mode=opts.conv_mode, prompt_mode=opts.prompt_mode)
        except DescriberFatal:
            raise
        except Exception as exc:  # OSError (not found, offline), ImportError in remote code, ...
            first = (str(exc).strip().splitlines() or [""])[0][:300]
            raise DescriberFatal(f"dam: cannot load {path}: {type(exc).__name__}: {first}") from None
        self._model, self._dam = model, dam
        super().open()

    def close(self) -> None:
        """Drop the model and return its GPU memory (``torch.cuda.empty_cache``)."""
        loaded = self._model is not None
        self._dam = None
        self._model = None
        if loaded:
            gc.collect()
            import torch

            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        super().close()

    def _describe_one(self, request: RegionRequest, cancel) -> str:
        import numpy as np
        import torch
        from PIL import Image

        if self._dam is None:
            raise RuntimeError("DamDescriber used after close()")
        opts = self.options
        image = Image.fromarray(np.ascontiguousarray(request.image))  # RGB
        mask = Image.fromarray(request.mask.astype(np.uint8) * 255)  # "L", 255 = region
        try:
            with torch.inference_mode():
                out = self._dam.get_description(
                    image, mask, _prompt(opts.query), streaming=False, temperature=opts.temperature,
                    top_p=opts.top_p, num_beams=opts.num_beams, max_new_tokens=opts.max_new_tokens)
                if not isinstance(out, str):  # a streaming generator of pieces
                    out = "".join(str(piece) for piece in out)
        except torch.cuda.OutOfMemoryError:
            gc.collect()
            torch.cuda.empty_cache()
            raise RegionFailed("out of GPU memory on this region") from None
        text = out.strip()
        if not text:
            raise RegionFailed("empty answer")
        return text
