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

Embeddings are cached in memory (a few images) and on disk under
``<model cache>/embeddings/<model>/`` keyed by the image content and the model's
sha256, so a second ``set_image`` of the same picture, in this or another process,
skips the encoder; :meth:`SamEngine.precompute` fills the cache from a background
thread (the next picture). :meth:`SamEngine.predict` and :meth:`SamEngine.generate`
take the engine's lock, so one engine may be shared between threads.

Speed: prompts are decoded by :mod:`.fast` (prompt-independent layer-0 tensors computed
once per image, attention projections folded onto the few prompt tokens, the mask
upscaling as matrix products in four sub-pixel row blocks); results equal the official
predictors' up to float rounding (``benchmarks/sam.py`` measures both).
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from segdeck.core.errors import SetupError
from segdeck.core.sam.params import GeneratorParams

#: Embeddings kept in memory per engine.
MEMORY_CACHE_SIZE = 4
#: Files kept in the on-disk embedding cache per model (oldest removed first).
DISK_CACHE_FILES = 48


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


def open_engine(model_name: str, device: str | None = None, *, emit=None, download: bool = True) -> SamEngine:
    """Load a registered SAM model (downloading it if needed) behind the common interface.

    Engines are kept per (model, device, checkpoint hash) in this process, so a second
    call is free.

    Parameters
    ----------
    model_name : str
        A name from :func:`segdeck.core.models.list_models` of family ``sam2`` or ``sam-hq``.
    device : str, optional
        torch device; default :func:`default_device`.
    emit : callable, optional
        Receives download / verify ``Progress`` events.
    download : bool
        Download a missing model (False: raise :class:`SetupError` instead).

    Raises
    ------
    SetupError
        Unknown model, not a SAM family, offline and not cached, or a bad checkpoint.
    """
    from segdeck.core.models import SAM_FAMILIES, ensure_model, get_spec

    spec = get_spec(model_name)
    if spec.family not in SAM_FAMILIES:
        raise SetupError(f"model {model_name} is a {spec.family} model, not a SAM model")
    device = device or default_device()
    key = (spec.name, device, spec.sha256)
    with _ENGINES_LOCK:
        eng = _ENGINES.get(key)
    if eng is not None:
        return eng
    path = ensure_model(model_name, emit, allow_download=download)
    from segdeck.core.sam.loading import load_model

    model = load_model(spec, path, device)
    cls = Sam2Engine if spec.family == "sam2" else SamHQEngine
    eng = cls(spec, model, device)
    with _ENGINES_LOCK:
        _ENGINES[key] = eng
    return eng


@dataclass
class _ImageState:
    key: str
    orig_hw: tuple[int, int]
    feats: dict
    zero: Any = None
    extra: dict = field(default_factory=dict)


class SamEngine:
    """Common interface of the SAM families. Use :func:`open_engine` to get one.

    Attributes
    ----------
    spec : ModelSpec
    family : str
        ``"sam2"`` or ``"sam-hq"``.
    device : str
    model : torch.nn.Module
    """

    family = ""
    #: Side of the low-resolution mask logits.
    low_res = 256

    def __init__(self, spec, model, device: str):
        import torch

        self.spec = spec
        self.model = model
        self.device = device
        self._torch = torch
        self._state: _ImageState | None = None
        self._memory: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.RLock()
        self.disk_cache = True
        from segdeck.core.sam.fast import TraceCache, jit_enabled

        #: Decoder traces per prompt shape (CPU; None: eager).
        self._traces = TraceCache(self._decode_flat) if device == "cpu" and jit_enabled() else None
        self._warmed = False

    # ---- embeddings -----------------------------------------------------------------
    @property
    def name(self) -> str:
        return self.spec.name

    def image_key(self, image: np.ndarray) -> str:
        """Cache key of an image for this model: sha256 over model hash, shape and pixels."""
        h = hashlib.sha256()
        h.update(f"{self.family}:{self.spec.sha256}:{image.shape}:{image.dtype}".encode())
        h.update(np.ascontiguousarray(image).data)
        return h.hexdigest()[:40]

    def embedding_dir(self) -> Path:
        from segdeck.core.models import cache_dir

        return cache_dir() / "embeddings" / self.spec.name

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
            feats = self._memory.get(key) if cache else None
            if feats is None and cache and self.disk_cache:
                feats = self._load_disk(key)
            if feats is None:
                feats = self._encode(image)
                if cache and self.disk_cache:
                    self._save_disk(key, feats)
            if cache:
                self._memory[key] = feats
                self._memory.move_to_end(key)
                while len(self._memory) > MEMORY_CACHE_SIZE:
                    self._memory.popitem(last=False)
            self._state = self._make_state(key, image.shape[:2], feats)
            self._warm_up(self._state)

    def _warm_up(self, state) -> None:
        """Record (and let TorchScript optimise) the one-point decoder trace on the first
        image, while the user waits for the encoder anyway, so the first click runs at full
        speed (~0.1-0.2 s once per engine)."""
        if self._traces is None or self._warmed:
            return
        self._warmed = True
        torch = self._torch
        with torch.inference_mode():
            sparse, dense = self._embed_prompts(state, np.zeros((1, 2), np.float32), np.ones(1, np.int64), None, None)
            for _ in range(3):  # the trace, then the executor's profiling and optimised runs
                self._decode(state, sparse, dense)

    def precompute(self, image: np.ndarray) -> str:
        """Compute and cache the embedding of ``image`` without making it the current image
        (call it from a background thread for the next picture; a later :meth:`set_image`
        of the same image is then instant). Returns the image's cache key."""
        image = self._check_image(image)
        key = self.image_key(image)
        with self._lock:
            if key in self._memory:
                return key
        feats = self._load_disk(key) if self.disk_cache else None
        if feats is None:
            feats = self._encode(image)
            if self.disk_cache:
                self._save_disk(key, feats)
        with self._lock:
            self._memory[key] = feats
            while len(self._memory) > MEMORY_CACHE_SIZE:
                self._memory.popitem(last=False)
        return key

    def is_cached(self, image: np.ndarray) -> bool:
        """Whether :meth:`set_image` of ``image`` would skip the encoder."""
        key = self.image_key(self._check_image(image))
        return key in self._memory or (self.embedding_dir() / f"{key}.pt").is_file()

    def reset_image(self) -> None:
        self._state = None

    def _load_disk(self, key: str) -> dict | None:
        path = self.embedding_dir() / f"{key}.pt"
        if not path.is_file():
            return None
        try:
            feats = self._torch.load(path, map_location=self.device, weights_only=True)
            path.touch()
            return feats
        except Exception:  # noqa: BLE001 - a damaged cache entry is recomputed
            path.unlink(missing_ok=True)
            return None

    def _save_disk(self, key: str, feats: dict) -> None:
        folder = self.embedding_dir()
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{key}.pt.tmp"
            self._torch.save({k: _to_cpu(v) for k, v in feats.items()}, tmp)
            tmp.replace(folder / f"{key}.pt")
            files = sorted(folder.glob("*.pt"), key=lambda p: p.stat().st_mtime)
            for old in files[:-DISK_CACHE_FILES]:
                old.unlink(missing_ok=True)
        except OSError:
            pass  # the cache is an optimisation; a read-only disk must not break prompting

    # ---- family hooks ------------------------------------------------------------------
    def _encode(self, image: np.ndarray) -> dict:
        raise NotImplementedError

    def _make_state(self, key, hw, feats) -> _ImageState:
        raise NotImplementedError

    def _embed_prompts(self, state, points, labels, box, mask_input):
        raise NotImplementedError

    def _decode(self, state, sparse, dense):
        """(B, T, C) sparse, dense None or (B, C, h, w) -> low-res logits of every mask
        token (B, M, 256, 256) and predicted IoUs (B, M'): through the trace of this prompt
        shape on CPU, eagerly otherwise."""
        run = self._decode_flat if self._traces is None else self._traces
        return run(sparse, dense, *self._image_tensors(state))

    def _image_tensors(self, state) -> tuple:
        """The per-image tensors :meth:`_decode_flat` reads, in its argument order."""
        raise NotImplementedError

    def _decode_flat(self, sparse, dense, *image_tensors):
        """:meth:`_decode` as a function of tensors only (what is traced)."""
        raise NotImplementedError

    def _select(self, masks, iou, multimask: bool, hq_token_only: bool):
        raise NotImplementedError

    def _upsample(self, state, low):
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
            low_out = torch.clamp(low[0], -32.0, 32.0) if self.family == "sam2" else low[0]
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


def _to_cpu(v):
    if isinstance(v, (list, tuple)):
        return [x.cpu() for x in v]
    return v.cpu() if hasattr(v, "cpu") else v


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


#: SAM 2's high-res feature blocks (di, ei), in :meth:`Sam2Engine._image_tensors` order.
_S0_BLOCKS = ((0, 0), (0, 1), (1, 0), (1, 1))


# ======================================================================================
class Sam2Engine(SamEngine):
    """SAM 2 / 2.1 image engine (Ravi et al., "SAM 2", arXiv:2408.00714)."""

    family = "sam2"
    _bb_feat_sizes = [(256, 256), (128, 128), (64, 64)]

    def __init__(self, spec, model, device):
        super().__init__(spec, model, device)
        import warnings

        from sam2.utils.transforms import SAM2Transforms

        with warnings.catch_warnings():
            # sam2 scripts its resize + normalise with torch.jit.script, which torch now
            # deprecates; nothing of ours to fix, so only this one warning is hidden
            warnings.filterwarnings("ignore", message=r"`torch\.jit\.script` is deprecated", category=FutureWarning)
            self._transforms = SAM2Transforms(resolution=model.image_size, mask_threshold=0.0)
        from segdeck.core.sam.fast import PointEmbedder, stack_mlps, upscale_weights

        with self._torch.inference_mode():
            self._pe = model.sam_prompt_encoder.get_dense_pe()
            self._up = upscale_weights(model.sam_mask_decoder)
            self._hyper = stack_mlps(model.sam_mask_decoder.output_hypernetworks_mlps)
        self._points = PointEmbedder(model.sam_prompt_encoder)

    def _encode(self, image):
        torch = self._torch
        with torch.inference_mode(), self._autocast():
            # torchvision's ToTensor wraps the array without copying and warns when it is
            # read-only (images decoded through PIL are): hand it a writable one
            x = self._transforms(np.require(image, requirements="W"))[None].to(self.device)
            backbone_out = self.model.forward_image(x)
            _, vision_feats, _, _ = self.model._prepare_backbone_features(backbone_out)
            if self.model.directly_add_no_mem_embed:
                vision_feats[-1] = vision_feats[-1] + self.model.no_mem_embed
            feats = [
                feat.permute(1, 2, 0).reshape(1, -1, *fs).float()
                for feat, fs in zip(vision_feats[::-1], self._bb_feat_sizes[::-1], strict=True)
            ][::-1]
        return {"image_embed": feats[-1], "feat_s0": feats[0], "feat_s1": feats[1]}

    def _make_state(self, key, hw, feats):
        from segdeck.core.sam.fast import arrange_high_res, prepare_image

        pe_ = self.model.sam_prompt_encoder
        with self._torch.inference_mode():
            src = feats["image_embed"] + pe_.no_mask_embed.weight.reshape(1, -1, 1, 1)
            zero = prepare_image(self.model.sam_mask_decoder.transformer, src, self._pe)
            s0, s1 = arrange_high_res(feats["feat_s0"], feats["feat_s1"], self._up)
        st = _ImageState(key, tuple(hw), feats, zero)
        st.extra.update(s0=s0, s1=s1)
        return st

    def transform_points(self, state, pts):
        """(K, 2) pixel (x, y) -> model input coordinates (1024-square frame)."""
        h, w = state.orig_hw
        r = self.model.image_size
        out = pts.astype(np.float32).copy()
        out[..., 0] = out[..., 0] / w
        out[..., 1] = out[..., 1] / h
        return out * r

    def _embed_prompts(self, state, pts, lab, bx, mi):
        torch = self._torch
        parts = []  # (model-frame coords (k, 2), labels (k,)); box corners first, as official
        if bx is not None:
            parts.append((self.transform_points(state, bx.reshape(2, 2)), np.array([2, 3])))
        if pts is not None:
            parts.append((self.transform_points(state, pts), lab))
        if not parts:
            masks = torch.as_tensor(mi, device=self.device)[None]
            return self._prompt_embed(None, None, masks)
        c = np.concatenate([p[0] for p in parts]).astype(np.float32)
        lb = np.concatenate([p[1] for p in parts]).astype(np.int64)
        if mi is None and self.device == "cpu":
            return torch.from_numpy(self._points(c, lb)), None
        coords = torch.as_tensor(c, device=self.device)[None]
        labels = torch.as_tensor(lb, dtype=torch.int, device=self.device)[None]
        masks = None if mi is None else torch.as_tensor(mi, device=self.device)[None]
        return self._prompt_embed(coords, labels, masks)

    def _prompt_embed(self, coords, labels, masks):
        pe_ = self.model.sam_prompt_encoder
        points = None if coords is None else (coords, labels)
        if masks is None:
            bs = coords.shape[0]
            sparse = pe_._embed_points(coords, labels, pad=True) if coords is not None else None
            if sparse is None:
                sparse = self._torch.empty((bs, 0, pe_.embed_dim), device=self.device)
            return sparse, None
        return pe_(points=points, boxes=None, masks=masks)

    def _image_tensors(self, state):
        from segdeck.core.sam.fast import upscale_packed

        ex = state.extra
        s0 = tuple(ex["s0"][k] for k in _S0_BLOCKS)
        return (*state.zero.tensors(), state.feats["image_embed"], *s0, *ex["s1"], *upscale_packed(self._up))

    def _decode_flat(self, sparse, dense, *tensors):
        from segdeck.core.sam.fast import LayerZero, upscale_bind

        zero, (image_embed, *rest) = LayerZero.from_tensors(tensors)
        s0 = dict(zip(_S0_BLOCKS, rest[:4], strict=True))
        up = upscale_bind(self._up, rest[6:])
        return self._decode_image(sparse, dense, zero, image_embed, s0, rest[4:6], up)

    def _decode_image(self, sparse, dense, zero, image_embed, s0, s1, up):
        """(B, T, C) sparse, dense None or (B, C, 64, 64) -> all masks (B, 4, 256, 256), iou (B, 4)."""
        from segdeck.core.sam.fast import mask_logits, run_stacked_mlps, two_way, upscale_features

        torch = self._torch
        dec = self.model.sam_mask_decoder
        B = sparse.shape[0]
        if dec.pred_obj_scores:
            out_tok = torch.cat([dec.obj_score_token.weight, dec.iou_token.weight, dec.mask_tokens.weight], 0)
            s = 1
        else:
            out_tok = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight], 0)
            s = 0
        tokens = torch.cat([out_tok.unsqueeze(0).expand(B, -1, -1), sparse], 1)
        src = None
        if dense is not None:
            src = (image_embed + dense).flatten(2).transpose(1, 2)
        # only the IoU and mask tokens are read: the final attention skips the others
        hs, keys = two_way(dec.transformer, tokens, zero, src, rows=(s, s + 1 + dec.num_mask_tokens))
        mt = hs[:, 1:]
        if self._hyper is not None:
            hyper = run_stacked_mlps(self._hyper, mt)
        else:
            hyper = torch.stack([mlp(mt[:, i]) for i, mlp in enumerate(dec.output_hypernetworks_mlps)], 1)
        grid = tuple(image_embed.shape[-2:])
        # one prompt at a time: its upscaling (~12 MB) stays in the CPU cache; all mask
        # tokens in one product, as the official decoder computes them
        masks = torch.stack([
            mask_logits(upscale_features(up, keys[b], s0, s1), hyper[b], grid) for b in range(B)
        ])
        iou = dec.iou_prediction_head(hs[:, 0])
        return masks, iou

    def _select(self, masks, iou, multimask, hq_token_only):
        dec = self.model.sam_mask_decoder
        if multimask:
            return masks[:, 1:], iou[:, 1:]
        if dec.dynamic_multimask_via_stability:
            if masks.shape[0] != 1:
                return dec._dynamic_multimask_via_stability(masks, iou)
            # one prompt: the same rule as the official decoder in a few operations --
            # keep mask 0 when its stability score reaches the threshold, else the
            # multimask output with the highest predicted IoU
            m0 = masks[0, 0]
            delta = dec.dynamic_multimask_stability_delta
            area_i = (m0 > delta).sum().float()
            area_u = (m0 > -delta).sum().float()
            stable = bool(area_u <= 0) or bool(area_i / area_u >= dec.dynamic_multimask_stability_thresh)
            k = 0 if stable else 1 + int(self._torch.argmax(iou[0, 1:]))
            return masks[:, k : k + 1], iou[:, k : k + 1]
        return masks[:, 0:1], iou[:, 0:1]

    def _upsample(self, state, low):
        import torch.nn.functional as F

        return F.interpolate(low.float(), state.orig_hw, mode="bilinear", align_corners=False)

    def official_predictor(self):
        from sam2.sam2_image_predictor import SAM2ImagePredictor

        return SAM2ImagePredictor(self.model)

    def official_generator(self, params=None):
        from sam2.automatic_mask_generator import SAM2AutomaticMaskGenerator

        params = params or GeneratorParams()
        return SAM2AutomaticMaskGenerator(self.model, **params.generator_kwargs("sam2"))


# ======================================================================================
class SamHQEngine(SamEngine):
    """SAM-HQ engine (Ke et al., "Segment Anything in High Quality", arXiv:2306.01567)."""

    family = "sam-hq"

    def __init__(self, spec, model, device):
        super().__init__(spec, model, device)
        from segment_anything_hq.utils.transforms import ResizeLongestSide

        self._resize = ResizeLongestSide(model.image_encoder.img_size)
        with self._torch.inference_mode():
            self._pe = model.prompt_encoder.get_dense_pe()

    def _encode(self, image):
        torch = self._torch
        with torch.inference_mode(), self._autocast():
            x = self._resize.apply_image(image)
            input_size = x.shape[:2]
            t = torch.as_tensor(x, device=self.device).permute(2, 0, 1).contiguous()[None]
            t = self.model.preprocess(t)
            feats, interm = self.model.image_encoder(t)
            dec = self.model.mask_decoder
            vit = interm[0].permute(0, 3, 1, 2)
            hq = dec.embedding_encoder(feats) + dec.compress_vit_feat(vit)
        return {
            "image_embed": feats.float(),
            "hq_features": hq.float(),
            "input_size": torch.tensor(input_size),
        }

    def _make_state(self, key, hw, feats):
        from segdeck.core.sam.fast import prepare_image

        pe_ = self.model.prompt_encoder
        with self._torch.inference_mode():
            src = feats["image_embed"] + pe_.no_mask_embed.weight.reshape(1, -1, 1, 1)
            zero = prepare_image(self.model.mask_decoder.transformer, src, self._pe)
        st = _ImageState(key, tuple(hw), feats, zero)
        st.extra["input_size"] = tuple(int(v) for v in feats["input_size"].tolist())
        return st

    def transform_points(self, state, pts):
        return self._resize.apply_coords(pts.astype(np.float32), state.orig_hw).astype(np.float32)

    def _embed_prompts(self, state, pts, lab, bx, mi):
        torch = self._torch
        coords = labels = boxes = masks = None
        if pts is not None:
            coords = torch.as_tensor(self.transform_points(state, pts), device=self.device)[None]
            labels = torch.as_tensor(lab, dtype=torch.int, device=self.device)[None]
        if bx is not None:
            b = self._resize.apply_boxes(bx[None].astype(np.float32), state.orig_hw)
            boxes = torch.as_tensor(b, dtype=torch.float, device=self.device)
        if mi is not None:
            masks = torch.as_tensor(mi, device=self.device)[None]
        return self._prompt_embed(coords, labels, boxes, masks)

    def _prompt_embed(self, coords, labels, boxes, masks):
        pe_ = self.model.prompt_encoder
        points = None if coords is None else (coords, labels)
        sparse, dense = pe_(points=points, boxes=boxes, masks=masks)
        return sparse, (dense if masks is not None else None)

    def _image_tensors(self, state):
        return (*state.zero.tensors(), state.feats["image_embed"], state.feats["hq_features"])

    def _decode_flat(self, sparse, dense, *tensors):
        from segdeck.core.sam.fast import LayerZero

        zero, (image_embed, hq_features) = LayerZero.from_tensors(tensors)
        return self._decode_image(sparse, dense, zero, image_embed, hq_features)

    def _decode_image(self, sparse, dense, zero, image_embed, hq_features):
        """-> masks (B, 5, 256, 256) (4 SAM masks + HQ mask), iou (B, 4)."""
        from segdeck.core.sam.fast import two_way

        torch = self._torch
        dec = self.model.mask_decoder
        B = sparse.shape[0]
        out_tok = torch.cat([dec.iou_token.weight, dec.mask_tokens.weight, dec.hf_token.weight], 0)
        tokens = torch.cat([out_tok.unsqueeze(0).expand(B, -1, -1), sparse], 1)
        src = None
        if dense is not None:
            src = (image_embed + dense).flatten(2).transpose(1, 2)
        n = dec.num_mask_tokens
        hs, keys = two_way(dec.transformer, tokens, zero, src, rows=(0, 1 + n))
        h = w = int(round(keys.shape[1] ** 0.5))
        x = keys.transpose(1, 2).reshape(B, -1, h, w)
        up_sam = dec.output_upscaling(x)
        mt = hs[:, 1 : 1 + n]
        hyper = [dec.output_hypernetworks_mlps[i](mt[:, i]) for i in range(n - 1)]
        hyper = torch.stack(hyper + [dec.hf_mlp(mt[:, n - 1])], 1)
        b, c, hh, ww = up_sam.shape
        m_sam = torch.bmm(hyper[:, : n - 1], up_sam.view(b, c, hh * ww))
        # HQ mask = h . (conv2(a) + hq_features) with a = GELU(LN(conv1(up_sam))): conv2 is
        # linear, so fold the hypernetwork vector h into it (one output channel instead of
        # c, per prompt: a grouped convolution) -- the same value, far fewer operations
        conv1, ln, act, conv2 = dec.embedding_maskfeature
        a = act(ln(conv1(up_sam)))
        h = hyper[:, n - 1]  # (B, c)
        w_eff = torch.einsum("bc,cikl->bikl", h, conv2.weight)
        b_eff = h @ conv2.bias
        ci = a.shape[1]
        m_hq = torch.nn.functional.conv2d(
            a.reshape(1, b * ci, hh, ww), w_eff, b_eff, padding=conv2.padding, groups=b
        ).view(b, 1, hh * ww)
        m_hq = m_hq + torch.matmul(h, hq_features.view(c, hh * ww)).unsqueeze(1)
        masks = torch.cat([m_sam, m_hq], 1).view(b, -1, hh, ww)
        iou = dec.iou_prediction_head(hs[:, 0])
        return masks, iou

    def _select(self, masks, iou, multimask, hq_token_only):
        torch = self._torch
        n = self.model.mask_decoder.num_mask_tokens
        if multimask:
            iou_m = iou[:, 1 : n - 1]
            iou_best, idx = torch.max(iou_m, dim=1)
            iou_sel = iou_best.unsqueeze(1)
            m_multi = masks[:, 1 : n - 1]
            m_sam = m_multi[torch.arange(m_multi.size(0)), idx].unsqueeze(1)
        else:
            iou_sel = iou[:, 0:1]
            m_sam = masks[:, 0:1]
        m_hq = masks[:, n - 1 : n]
        return (m_hq if hq_token_only else m_sam + m_hq), iou_sel

    def _upsample(self, state, low):
        import torch.nn.functional as F

        size = self.model.image_encoder.img_size
        ih, iw = state.extra["input_size"]
        m = F.interpolate(low.float(), (size, size), mode="bilinear", align_corners=False)
        m = m[..., :ih, :iw]
        return F.interpolate(m, state.orig_hw, mode="bilinear", align_corners=False)

    def official_predictor(self):
        from segment_anything_hq import SamPredictor

        return SamPredictor(self.model)

    def official_generator(self, params=None):
        from segment_anything_hq import SamAutomaticMaskGenerator

        params = params or GeneratorParams()
        gen = SamAutomaticMaskGenerator(self.model, **params.generator_kwargs("sam-hq"))
        multimask = params.multimask_output
        orig = gen.generate
        gen.generate = lambda image: orig(image, multimask_output=multimask)
        return gen
