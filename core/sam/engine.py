"""One interface for SAM 2.1 and SAM-HQ: encode an image once, prompt it fast, or
generate every mask automatically.

>>> eng = open_engine("sam2.1-tiny")                        # doctest: +SKIP
>>> eng.set_image(rgb)                  # doctest: +SKIP (H, W, 3) uint8 RGB; cached
>>> r = eng.predict(points=[[120, 80]], labels=[1])         # doctest: +SKIP
>>> r.masks.shape, r.scores.shape                           # doctest: +SKIP
((1, H, W), (1,))
>>> g = eng.generate(rgb, GeneratorParams(points_per_side=16))  # doctest: +SKIP

Conventions: points are (x, y) pixels of the original image, boxes XYXY pixels,
masks bool (M, H, W) at the image's size. Device: CUDA when available, else CPU;
on CUDA the image encoder runs under bfloat16 autocast (the decoder in float32).

Family differences (everything else is shared):

* ``predict(multimask=True)``: SAM 2 returns the 3 multimask outputs; SAM-HQ returns
  one mask (the best of the 3 SAM masks, refined with the HQ mask), as its official
  predictor does. ``predict(multimask=False)`` on SAM 2 uses its "dynamic multimask"
  fallback (the single-mask output unless unstable), as the official predictor.
* ``hq_token_only``: SAM-HQ only (SAM 2 ignores it).
* ``use_m2m`` in :class:`~.params.GeneratorParams`: SAM 2 only.

Layout: the families are registered in :mod:`.families` (builder, checkpoint layout,
engine class, generator quirks); each has its engine subclass in its own module
(:mod:`.sam2_image`, :mod:`.sam_hq`). Embeddings go through one cache
(:mod:`.cache`: a few in memory, more on disk under ``<model cache>/embeddings/<model>/``,
keyed by the image content and the model file's sha256), used by :meth:`SamEngine.set_image`
and :meth:`SamEngine.precompute` (the next picture, from a background thread).
:meth:`SamEngine.predict` and :meth:`SamEngine.generate` take the engine's lock, so one
engine may be shared between threads.

Prompts are decoded through one seam (:mod:`.decoders`): the fast decoder of
:mod:`.fast` (prompt-independent layer-0 tensors once per image, attention projections
folded onto the few prompt tokens, the mask upscaling as matrix products) or the
family's official decoder module, chosen by :class:`~.options.EngineOptions`; both give
the official predictors' results up to float rounding (``benchmarks/sam.py`` times the
fast one against the official predictor).
"""

from __future__ import annotations

import dataclasses
import hashlib
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segdeck.core.errors import SetupError
from segdeck.core.sam.cache import EmbeddingCache
from segdeck.core.sam.options import EngineOptions
from segdeck.core.sam.params import GeneratorParams


@dataclass
class PredictResult:
    """Masks for one prompt.

    Attributes
    ----------
    masks : np.ndarray
        (M, H, W) bool at the image's size.
    scores : np.ndarray
        (M,) float32 predicted IoU of each mask.
    low_res_logits : np.ndarray
        (M, 256, 256) float32 logits, clamped to [-32, 32] for SAM 2 as its predictor
        does; pass one (1, 256, 256) slice back as ``mask_input`` to refine.
    """

    masks: np.ndarray
    scores: np.ndarray
    low_res_logits: np.ndarray

    @property
    def best(self) -> int:
        """Index of the highest-scoring mask."""
        return int(np.argmax(self.scores)) if len(self.scores) else 0


@dataclass
class MaskRecord:
    """One automatically generated mask.

    Attributes
    ----------
    mask : np.ndarray
        (H, W) bool.
    area : int
        Pixels in the mask.
    box : tuple of int
        XYXY, inclusive pixel bounds as SAM computes them (x1, y1 are the last pixels).
    predicted_iou, stability_score : float
    point : tuple of float
        (x, y) prompt that produced it.
    crop_box : tuple of int
        XYXY crop it came from.
    """

    mask: np.ndarray
    area: int
    box: tuple
    predicted_iou: float
    stability_score: float
    point: tuple
    crop_box: tuple

    def to_official(self, output_mode: str = "binary_mask") -> dict:
        """The record as the official generators return it (``bbox`` / ``crop_box`` XYWH)."""
        from segdeck.core.outputs import masks_to_rles

        if output_mode == "binary_mask":
            seg: Any = self.mask
        elif output_mode == "coco_rle":
            seg = masks_to_rles(self.mask[None])[0]
        else:
            seg = _uncompressed_rle(self.mask)
        x0, y0, x1, y1 = self.box
        cx0, cy0, cx1, cy1 = self.crop_box
        return {
            "segmentation": seg,
            "area": int(self.area),
            "bbox": [x0, y0, x1 - x0, y1 - y0],
            "predicted_iou": float(self.predicted_iou),
            "point_coords": [list(self.point)],
            "stability_score": float(self.stability_score),
            "crop_box": [cx0, cy0, cx1 - cx0, cy1 - cy0],
        }


def _uncompressed_rle(mask: np.ndarray) -> dict:
    flat = np.asarray(mask, bool).T.ravel()
    change = np.flatnonzero(flat[1:] != flat[:-1]) + 1
    idx = np.concatenate([[0], change, [flat.size]])
    counts = np.diff(idx).tolist()
    if flat.size and flat[0]:
        counts = [0, *counts]
    return {"size": list(mask.shape), "counts": counts}


@dataclass
class GenerateResult:
    """All masks of one image from :meth:`SamEngine.generate`, in the generator's order
    (by NMS score).

    Attributes
    ----------
    masks : np.ndarray
        (N, H, W) bool.
    scores : np.ndarray
        (N,) float32 predicted IoU.
    stability : np.ndarray
        (N,) float32 stability score.
    boxes : np.ndarray
        (N, 4) int64 XYXY (inclusive last pixel, SAM's convention).
    points : np.ndarray
        (N, 2) float32 (x, y) prompts.
    crop_boxes : np.ndarray
        (N, 4) int64 XYXY crops.
    """

    masks: np.ndarray
    scores: np.ndarray
    stability: np.ndarray
    boxes: np.ndarray
    points: np.ndarray
    crop_boxes: np.ndarray

    def __len__(self) -> int:
        return int(self.masks.shape[0])

    @property
    def areas(self) -> np.ndarray:
        """(N,) int64 mask areas in pixels."""
        return self.masks.reshape(len(self), -1).sum(1).astype(np.int64)

    def records(self) -> list[MaskRecord]:
        """One :class:`MaskRecord` per mask."""
        areas = self.areas
        return [
            MaskRecord(
                mask=self.masks[i],
                area=int(areas[i]),
                box=tuple(int(v) for v in self.boxes[i]),
                predicted_iou=float(self.scores[i]),
                stability_score=float(self.stability[i]),
                point=tuple(float(v) for v in self.points[i]),
                crop_box=tuple(int(v) for v in self.crop_boxes[i]),
            )
            for i in range(len(self))
        ]


def default_device() -> str:
    """``"cuda"`` when a CUDA device is usable, else ``"cpu"``."""
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


_ENGINES: dict[tuple, SamEngine] = {}
_ENGINES_LOCK = threading.Lock()


def clear_engine_cache() -> None:
    """Forget the engines :func:`open_engine` keeps (tests, model re-imports)."""
    with _ENGINES_LOCK:
        _ENGINES.clear()


def checkpoint_spec(model_name: str, checkpoint: str | Path):
    """The spec of a custom checkpoint of a registered model's family and size.

    The file is fine-tuned weights of ``model_name``'s architecture (as micro-sam or a
    SAM 2 training run save them, in the family's checkpoint layout); it is not in the
    sha256 table, so the returned spec carries the file's own sha256 and size (the
    engine cache and the embedding cache key on it), its path's name as ``filename`` and
    ``extra["checkpoint"]`` = the resolved path. The weights are checked when loaded
    (:func:`~.loading.load_model`: strict keys and shapes).

    Parameters
    ----------
    model_name : str
        Registered SAM model naming the family and size (``"sam2.1-tiny"``).
    checkpoint : str or Path
        The weights file.

    Raises
    ------
    SetupError
        Unknown model, not a SAM family, or no such file.
    """
    from segdeck.core.models import get_spec
    from segdeck.core.sam.families import get_family
    from segdeck.core.sam.params import checkpoint_sha256

    spec = get_spec(model_name)
    get_family(spec.family)
    path = Path(checkpoint).expanduser().resolve()
    if not path.is_file():
        raise SetupError(f"{checkpoint}: checkpoint file not found")
    sha = checkpoint_sha256(path)
    return dataclasses.replace(
        spec, sha256=sha, bytes=path.stat().st_size, filename=path.name, url=path.as_uri(),
        description=f"{spec.description}, weights from {path.name}",
        extra={**spec.extra, "checkpoint": str(path)},
    )


def open_engine(
    model_name: str,
    device: str | None = None,
    *,
    checkpoint: str | Path | None = None,
    options: EngineOptions | None = None,
    emit=None,
    download: bool = True,
) -> SamEngine:
    """Load a registered SAM model (downloading it if needed) behind the common interface.

    Engines are kept per (model, device, checkpoint sha256, options) in this process, so
    a second call is free.

    Parameters
    ----------
    model_name : str
        A name from :func:`segdeck.core.models.list_models` of a family in
        :data:`~.families.FAMILIES`.
    device : str, optional
        torch device; default :func:`default_device`.
    checkpoint : str or Path, optional
        Fine-tuned weights of ``model_name``'s family and size instead of the official
        file (:func:`checkpoint_spec`): nothing is downloaded, the file's sha256 is not
        looked up in a table, the keys and shapes are checked strictly.
    options : EngineOptions, optional
        Decoder choices; default :meth:`EngineOptions.from_env` (the two compatibility
        environment switches, read here once).
    emit : callable, optional
        Receives download / verify ``Progress`` events.
    download : bool
        Download a missing model (False: raise :class:`SetupError` instead).

    Raises
    ------
    SetupError
        Unknown model, not a SAM image family, offline and not cached, a missing
        checkpoint file, or a checkpoint that does not match the architecture.
    """
    from segdeck.core.models import ensure_model, get_spec
    from segdeck.core.sam.families import get_family

    spec = get_spec(model_name)
    try:
        family = get_family(spec.family)
    except SetupError:
        raise SetupError(f"model {model_name} is a {spec.family} model, not a SAM model") from None
    if family.kind != "image":
        raise SetupError(f"model {model_name} is a {family.title} model, not a SAM image model")
    options = options or EngineOptions.from_env()
    device = device or default_device()
    if checkpoint is not None:
        spec = checkpoint_spec(model_name, checkpoint)
    key = (spec.name, device, spec.sha256, options)
    with _ENGINES_LOCK:
        eng = _ENGINES.get(key)
    if eng is not None:
        return eng
    path = spec.extra["checkpoint"] if checkpoint is not None else ensure_model(model_name, emit, allow_download=download)
    from segdeck.core.sam.loading import load_model

    model = load_model(spec, path, device)
    eng = family.engine_class()(spec, model, device, options)
    with _ENGINES_LOCK:
        _ENGINES[key] = eng
    return eng


@dataclass
class ImageState:
    """The current image of an engine.

    Attributes
    ----------
    key : str
        Cache key (:meth:`SamEngine.image_key`; empty for a generator crop).
    orig_hw : tuple of int
        (H, W) of the image.
    feats : dict
        The encoder's output (family-specific names, see the family modules).
    tensors : TensorGroup
        Per-image tensors of the fast decoder (the family's ``ImageTensors``).
    extra : dict
        Family-specific values (SAM-HQ: ``input_size``).
    """

    key: str
    orig_hw: tuple[int, int]
    feats: dict
    tensors: Any = None
    extra: dict = field(default_factory=dict)


class SamEngine:
    """Common interface of the SAM image families. Use :func:`open_engine` to get one.

    Attributes
    ----------
    spec : ModelSpec
        The model (for a custom checkpoint: its sha256 and file, see
        :func:`checkpoint_spec`).
    family : str
        A key of :data:`~.families.FAMILIES`.
    device : str
    model : torch.nn.Module
    options : EngineOptions
    decoder : Decoder
        The prompt decoder (:mod:`.decoders`).
    cache : EmbeddingCache
    """

    family = ""
    #: The family's :class:`~.fast.TensorGroup` of per-image decoder tensors.
    ImageTensors: type = type(None)
    #: Side of the low-resolution mask logits.
    low_res = 256

    def __init__(self, spec, model, device: str, options: EngineOptions | None = None):
        import torch

        from segdeck.core.models import cache_dir
        from segdeck.core.sam.decoders import make_decoder
        from segdeck.core.sam.families import get_family

        self.spec = spec
        self.model = model
        self.device = device
        self.options = options or EngineOptions()
        self.family_entry = get_family(self.family)
        self._torch = torch
        self._state: ImageState | None = None
        self._lock = threading.RLock()
        self.cache = EmbeddingCache(cache_dir() / "embeddings" / spec.name, device)
        self.decoder = make_decoder(self, self.options)

    # ---- embeddings -----------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def disk_cache(self) -> bool:
        """Whether embeddings are read from and written to disk (default True)."""
        return self.cache.disk

    @disk_cache.setter
    def disk_cache(self, value: bool) -> None:
        self.cache.disk = bool(value)

    def image_key(self, image: np.ndarray) -> str:
        """Cache key of an image for this model: sha256 over model hash, shape and pixels."""
        h = hashlib.sha256()
        h.update(f"{self.family}:{self.spec.sha256}:{image.shape}:{image.dtype}".encode())
        h.update(np.ascontiguousarray(image).data)
        return h.hexdigest()[:40]

    def embedding_dir(self) -> Path:
        """Folder of this model's on-disk embeddings."""
        return self.cache.folder

    def _check_image(self, image: np.ndarray) -> np.ndarray:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"image must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
        if min(image.shape[:2]) < 1:
            raise ValueError(f"image is empty: {image.shape}")
        return np.ascontiguousarray(image)

    def set_image(self, image: np.ndarray, *, cache: bool = True) -> None:
        """Compute (or fetch from cache) the embedding of ``image`` for later :meth:`predict`.

        Parameters
        ----------
        image : np.ndarray
            (H, W, 3) uint8 RGB.
        cache : bool
            Use and fill the memory and on-disk embedding caches.

        Raises
        ------
        ValueError
            Not an (H, W, 3) uint8 image.
        """
        image = self._check_image(image)
        key = self.image_key(image)
        with self._lock:
            if self._state is not None and self._state.key == key:
                return
            feats = self.cache.fetch(key, lambda: self._encode(image), use=cache)
            self._state = self._make_state(key, image.shape[:2], feats)
            self.decoder.warm_up(self._state)

    def precompute(self, image: np.ndarray) -> str:
        """Compute and cache the embedding of ``image`` without making it the current image
        (call it from a background thread for the next picture; a later :meth:`set_image`
        of the same image is then instant). Returns the image's cache key."""
        image = self._check_image(image)
        key = self.image_key(image)
        self.cache.fetch(key, lambda: self._encode(image))
        return key

    def is_cached(self, image: np.ndarray) -> bool:
        """Whether :meth:`set_image` of ``image`` would skip the encoder."""
        return self.cache.is_cached(self.image_key(self._check_image(image)))

    def reset_image(self) -> None:
        """Forget the current image (the caches keep its embedding)."""
        self._state = None

    # ---- family hooks ------------------------------------------------------------------
    def _encode(self, image: np.ndarray) -> dict:
        """(H, W, 3) uint8 RGB -> the encoder's tensors (a dict, the cache stores it)."""
        raise NotImplementedError

    def _make_state(self, key, hw, feats) -> ImageState:
        """An :class:`ImageState` (with the fast decoder's tensors) from cached ``feats``."""
        raise NotImplementedError

    def _embed_prompts(self, state, points, labels, box, mask_input):
        """Checked numpy prompts -> (sparse (1, T, C), dense None or (1, C, h, w))."""
        raise NotImplementedError

    def _prompt_embed(self, coords, labels, boxes=None, masks=None):
        """Batched model-frame prompts (tensors) -> (sparse, dense or None)."""
        raise NotImplementedError

    def _decode(self, state, sparse, dense):
        """(B, T, C) sparse, dense None or (B, C, h, w) -> low-res logits of every mask
        token (B, M, 256, 256) and predicted IoUs (B, M'), through :attr:`decoder`."""
        return self.decoder.decode(state, sparse, dense)

    def _fast_decode(self, sparse, dense, tensors):
        """:meth:`_decode` by :mod:`.fast`, reading the image's named ``tensors``
        (:attr:`ImageTensors`) only, so it can be traced."""
        raise NotImplementedError

    def _official_decode(self, state, sparse, dense):
        """:meth:`_decode` by the family's own mask decoder module."""
        raise NotImplementedError

    def _dense_or_no_mask(self, prompt_encoder, image_embed, sparse, dense):
        """``dense``, or the no-mask embedding expanded to (B, C, h, w) as the official
        prompt encoders return it when there is no mask input."""
        if dense is not None:
            return dense
        h, w = image_embed.shape[-2:]
        return prompt_encoder.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(sparse.shape[0], -1, h, w)

    def _select(self, masks, iou, multimask: bool, hq_token_only: bool):
        """Every mask token's logits / IoUs -> the family's output masks (official rule)."""
        raise NotImplementedError

    def _upsample(self, state, low):
        """(M, 1, 256, 256) low-res logits -> (M, 1, H, W) at the image's size."""
        raise NotImplementedError

    def _autocast(self):
        import contextlib

        if self.device.startswith("cuda"):
            return self._torch.autocast("cuda", dtype=self._torch.bfloat16)
        return contextlib.nullcontext()

    # ---- prompting ---------------------------------------------------------------------
    def predict(
        self,
        points=None,
        labels=None,
        box=None,
        mask_input=None,
        multimask: bool = False,
        hq_token_only: bool = False,
        mask_threshold: float = 0.0,
    ) -> PredictResult:
        """Masks for point / box / mask prompts on the image given to :meth:`set_image`.

        Parameters
        ----------
        points : array-like, optional
            (K, 2) float (x, y) pixel coordinates of the original image.
        labels : array-like, optional
            (K,) int, 1 positive (foreground) / 0 negative (background).
        box : array-like, optional
            (4,) XYXY pixels.
        mask_input : array-like, optional
            (1, 256, 256) or (256, 256) low-res logits from an earlier ``predict``.
        multimask : bool
            Several candidate masks (see the module docstring for the families).
        hq_token_only : bool
            SAM-HQ only: the HQ token's mask alone.
        mask_threshold : float
            Logit threshold for the binary masks.

        Returns
        -------
        PredictResult

        Raises
        ------
        RuntimeError
            No image set.
        ValueError
            Malformed prompts (shapes, labels not 0/1, no prompt at all).
        """
        torch = self._torch
        state = self._state
        if state is None:
            raise RuntimeError("call set_image(...) before predict(...)")
        pts, lab, bx, mi = _check_prompts(points, labels, box, mask_input, self.low_res)
        with self._lock, torch.inference_mode():
            sparse, dense = self._embed_prompts(state, pts, lab, bx, mi)
            masks, iou = self._decode(state, sparse, dense)
            low, iou = self._select(masks, iou, multimask, hq_token_only)
            full = self._upsample(state, low[0:1])[0]
            # numpy's comparison is ~3x faster than torch's on CPU; on a GPU compare there
            full = full.numpy() > mask_threshold if full.device.type == "cpu" else (full > mask_threshold).cpu().numpy()
            clamp = self.family_entry.clamp_low_res
            low_out = low[0] if clamp is None else torch.clamp(low[0], -clamp, clamp)
            return PredictResult(
                masks=full,
                scores=iou[0].float().cpu().numpy(),
                low_res_logits=low_out.float().cpu().numpy(),
            )

    # ---- automatic masks -----------------------------------------------------------------
    def generate(self, image: np.ndarray, params: GeneratorParams | dict | None = None, **overrides) -> GenerateResult:
        """Every mask of an image from a grid of point prompts (the official automatic
        generator's algorithm, same parameters and masks, less repeated work).

        Parameters
        ----------
        image : np.ndarray
            (H, W, 3) uint8 RGB.
        params : GeneratorParams or dict, optional
            Defaults: the official ones. ``overrides`` replace single fields.

        Returns
        -------
        GenerateResult
        """
        from segdeck.core.sam.generate import generate

        if params is None:
            params = GeneratorParams(**overrides)
        elif isinstance(params, dict):
            params = GeneratorParams(**{**params, **overrides})
        elif overrides:
            params = params.model_copy(update=overrides)
        image = self._check_image(image)
        with self._lock, self._torch.inference_mode():
            return generate(self, image, params)

    # ---- reference implementations (tests, benchmarks) -----------------------------------
    def official_predictor(self):
        """The family's official predictor on the same model (for comparisons)."""
        raise NotImplementedError

    def official_generator(self, params: GeneratorParams | None = None):
        """The family's official automatic generator with ``params``; call ``.generate(image)``."""
        raise NotImplementedError


def _check_prompts(points, labels, box, mask_input, low_res: int):
    pts = lab = bx = mi = None
    if points is not None and len(points):
        pts = np.asarray(points, np.float32).reshape(-1, 2)
        if labels is None:
            raise ValueError("labels are required with points (1 positive, 0 negative)")
        lab = np.asarray(labels).reshape(-1).astype(np.int64)
        if len(lab) != len(pts):
            raise ValueError(f"{len(pts)} points but {len(lab)} labels")
        if not ((lab == 0) | (lab == 1)).all():
            raise ValueError(f"labels must be 0 or 1, got {np.unique(lab).tolist()}")
        if not np.isfinite(pts).all():
            raise ValueError("points must be finite")
    if box is not None:
        bx = np.asarray(box, np.float32).reshape(-1)
        if bx.shape != (4,) or not np.isfinite(bx).all():
            raise ValueError(f"box must be 4 finite numbers XYXY, got {box!r}")
    if mask_input is not None:
        mi = np.asarray(mask_input, np.float32)
        if mi.shape == (low_res, low_res):
            mi = mi[None]
        if mi.shape != (1, low_res, low_res):
            raise ValueError(f"mask_input must be (1, {low_res}, {low_res}) logits, got {mi.shape}")
    if pts is None and bx is None and mi is None:
        raise ValueError("give at least one prompt: points, box or mask_input")
    return pts, lab, bx, mi
