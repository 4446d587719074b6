"""Group propagation with SAM 2's video predictor: a few labelled reference images of a
group condition SAM 2's memory, and every other image of the group gets a label map.

This is "Static Segmentation by Tracking" (SST; Stevens et al., arXiv:2501.06749) on
SAM 2 (Ravi et al., "SAM 2: Segment Anything in Images and Videos", arXiv:2408.00714):
the photos of a group are treated as frames of a video whose first frames carry the
reference masks.

>>> prop = open_propagator("sam2.1-tiny")                       # doctest: +SKIP
>>> prop.set_references([(rgb0, labels0), (rgb1, labels1)])     # doctest: +SKIP
[1, 2]
>>> maps = prop.predict([rgb5, rgb6])            # doctest: +SKIP (H_i, W_i) int32 each

How it drives the official ``SAM2VideoPredictor`` (``sam2/sam2_video_predictor.py``):

* One inference state per group, built by ``init_state`` over an in-memory frame
  sequence (the module-level ``load_video_frames`` of ``sam2.sam2_video_predictor`` is
  replaced while ``init_state`` runs; no JPEG folder is written). Its frames are the
  references ``0..K-1`` and **one reusable target slot** ``K``. Each frame tensor is made
  as the package makes it (:meth:`GroupPropagator.frame_tensor`: RGB stretched to
  S x S with PIL's default bicubic resampling, scaled to [0, 1], ImageNet mean/std).
* Every object id gets a mask on every reference (``add_new_mask``; all-zero where the
  object is absent there), then ``propagate_in_video_preflight`` encodes the references'
  memories once.
* Each target is encoded by the image encoder (several targets may share one batched
  forward pass), put in the slot and decoded per object by the step
  ``propagate_in_video`` takes on a non-conditioning frame
  (``_run_single_frame_inference``), without the memory encoder (its output would only
  matter for later frames) and without storing the slot's output. So a target sees the
  references' memories and nothing else: results do not depend on the order of the
  targets, on batching or on what was predicted before, and memory does not grow with the
  number of targets (SAM 2's own sessions keep every tracked frame's memory).
* Output: each object's 256 x 256 (S/4) mask logits resized to the target's own size
  (bilinear, as ``_get_orig_video_res_output``; frames are stretched, not padded, so
  this is exact for any aspect ratio), then per pixel the object with the highest logit
  where that logit is > 0 (ties: the lower object id), else 0.

Settings: ``fill_hole_area = 0`` (the package's hole filling needs the CUDA extension
``sam2._C``), no reverse tracking (fails on CPU: bf16 memory features without autocast),
``clear_non_cond_mem_around_input`` off (calls a method the package never defines),
``non_overlap_masks`` off (objects may overlap; the label map takes the highest logit).
Everything runs in float32; on CUDA too (no autocast), so GPU and CPU results agree up
to float rounding.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from segdeck.core.errors import SetupError

#: ImageNet normalisation the SAM 2 video loader applies (``load_video_frames``).
IMG_MEAN = (0.485, 0.456, 0.406)
IMG_STD = (0.229, 0.224, 0.225)

_MODELS: dict[tuple, Any] = {}
_MODELS_LOCK = threading.Lock()
#: ``init_state`` runs with the package's module-level frame loader replaced; one at a time.
_INIT_LOCK = threading.Lock()


def clear_propagator_cache() -> None:
    """Forget the video predictors :func:`open_propagator` keeps (tests, model re-imports)."""
    with _MODELS_LOCK:
        _MODELS.clear()


def open_propagator(
    name: str = "sam2.1-tiny",
    device: str | None = None,
    *,
    checkpoint: str | Path | None = None,
    image_size: int | None = None,
    emit=None,
    download: bool = True,
) -> GroupPropagator:
    """A :class:`GroupPropagator` over the SAM 2 video predictor of a registered model.

    The predictor (the network) is built and loaded once per (model, device, weights'
    sha256, image size) in this process, like :func:`~.engine.open_engine`; every call
    returns a new :class:`GroupPropagator` (its own inference state) sharing it.

    Parameters
    ----------
    name : str
        A registered model of a SAM family with a video predictor (the SAM 2 / 2.1
        names: ``"sam2.1-tiny"`` ... ``"sam2.1-large"``). Its checkpoint is the image
        model's: the video predictor's state dict is the same.
    device : str, optional
        torch device; default CUDA when available, else CPU.
    checkpoint : str or Path, optional
        Fine-tuned weights of ``name``'s family and size
        (:func:`~.engine.checkpoint_spec`: nothing downloaded, strict key/shape check).
    image_size : int, optional
        The model's input side S in pixels (frames are stretched to S x S); None = the
        config's (1024 for SAM 2.1). A smaller S (a multiple of 64, e.g. 256) is for tests
        with random weights; trained weights expect 1024.
    emit : callable, optional
        Receives download / verify progress events.
    download : bool
        Download a missing model (False: raise :class:`SetupError` instead).

    Returns
    -------
    GroupPropagator

    Raises
    ------
    SetupError
        Unknown model, a family without a video predictor (SAM-HQ), a model not cached
        and not downloadable, a missing or mismatching checkpoint (one line each).
    ValueError
        ``image_size`` not a positive multiple of 64.
    """
    from segdeck.core.models import ensure_model, get_spec
    from segdeck.core.sam.engine import checkpoint_spec, default_device
    from segdeck.core.sam.families import get_family

    spec = get_spec(name)
    try:
        family = get_family(spec.family)
    except SetupError:
        raise SetupError(f"model {name} is a {spec.family} model, not a SAM model") from None
    if family.video is None:
        raise SetupError(
            f"model {name} is a {family.title} model without a video predictor; "
            "group propagation needs a SAM 2 model (e.g. sam2.1-tiny)"
        )
    video = get_family(family.video)
    if image_size is not None:
        if isinstance(image_size, bool) or not isinstance(image_size, (int, np.integer)) or image_size <= 0 \
                or image_size % 64:
            raise ValueError(f"image_size must be a positive multiple of 64, got {image_size!r}")
        image_size = int(image_size)
    device = device or default_device()
    if checkpoint is not None:
        spec = checkpoint_spec(name, checkpoint)
    key = (spec.name, device, spec.sha256, image_size)
    with _MODELS_LOCK:
        model = _MODELS.get(key)
    if model is None:
        from segdeck.core.sam.loading import load_strict, read_state_dict

        path = spec.extra["checkpoint"] if checkpoint is not None else ensure_model(name, emit, allow_download=download)
        state = read_state_dict(spec, path)
        model = video.build(spec, image_size=image_size)
        load_strict(model, state, path, spec.name)
        model.eval()
        for p in model.parameters():
            p.requires_grad_(False)
        model = model.to(device)
        with _MODELS_LOCK:
            model = _MODELS.setdefault(key, model)
    return GroupPropagator(spec, model, device)


class _FrameSlots:
    """The frame sequence of one group's inference state: the reference frames, then
    one slot whose tensor is replaced for every target. ``len`` and ``[i]`` are all the
    video predictor asks of its ``images``."""

    def __init__(self, references: list, slot):
        self.references = references
        self.slot = slot

    def __len__(self) -> int:
        return len(self.references) + 1

    def __getitem__(self, index: int):
        if index < 0:
            index += len(self)
        if index == len(self.references):
            return self.slot
        return self.references[index]


class GroupPropagator:
    """SAM 2 video predictor conditioned on one group's reference images; predicts a
    label map for any other image of the group. Use :func:`open_propagator` to get one.

    Not thread-safe on its own state: one group at a time per propagator (its methods
    take a lock). Several propagators may share one network.

    Attributes
    ----------
    spec : ModelSpec
        The model (for a custom checkpoint: its file's sha256, see
        :func:`~.engine.checkpoint_spec`).
    model : sam2.sam2_video_predictor.SAM2VideoPredictor
        The shared network (eval mode, ``fill_hole_area = 0``).
    device : str
    image_size : int
        Input side S; frames are stretched to S x S.
    object_ids : list of int
        Sorted object ids of the current references (empty before
        :meth:`set_references`).
    """

    def __init__(self, spec, model, device: str):
        self.spec = spec
        self.model = model
        self.device = device
        self.image_size = int(model.image_size)
        self.object_ids: list[int] = []
        self._state: dict | None = None
        self._frames: _FrameSlots | None = None
        self._lock = threading.RLock()

    @property
    def name(self) -> str:
        return self.spec.name

    @property
    def num_references(self) -> int:
        """Reference frames in the current state (0 before :meth:`set_references`)."""
        return len(self._frames.references) if self._frames is not None else 0

    # ---- frames -------------------------------------------------------------------------
    @staticmethod
    def _check_image(image, what: str) -> np.ndarray:
        image = np.asarray(image)
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"{what} must be (H, W, 3) uint8 RGB, got {image.shape} {image.dtype}")
        if min(image.shape[:2]) < 1:
            raise ValueError(f"{what} is empty: {image.shape}")
        return np.ascontiguousarray(image)

    def frame_tensor(self, image: np.ndarray):
        """The video predictor's input for one image, as its JPEG loader makes it.

        Parameters
        ----------
        image : np.ndarray
            (H, W, 3) uint8 RGB, any size (EXIF orientation already applied by the caller,
            e.g. :mod:`segdeck.core.imageio`).

        Returns
        -------
        torch.Tensor
            (3, S, S) float32 on the CPU: the image stretched to S x S (PIL ``resize``,
            default bicubic filter, as ``sam2.utils.misc._load_img_as_tensor``), divided by
            255, minus the ImageNet mean, divided by the ImageNet std (per channel).

        Raises
        ------
        ValueError
            Not an (H, W, 3) uint8 array.
        """
        import torch
        from PIL import Image

        image = self._check_image(image, "image")
        s = self.image_size
        resized = np.asarray(Image.fromarray(image).resize((s, s))) / 255.0
        t = torch.from_numpy(resized).permute(2, 0, 1).to(torch.float32)
        t -= torch.tensor(IMG_MEAN, dtype=torch.float32)[:, None, None]
        t /= torch.tensor(IMG_STD, dtype=torch.float32)[:, None, None]
        return t.contiguous()

    def _encode(self, frames: list) -> list[tuple]:
        """Image encoder over ``frames`` ((3, S, S) each) in one forward pass; the
        ``(image, backbone_out)`` cache entry of each, as ``_get_image_feature`` keeps it."""
        import torch

        batch = torch.stack(frames).to(self.device).float()
        out = self.model.forward_image(batch)
        return [
            (batch[i : i + 1], {
                "backbone_fpn": [f[i : i + 1] for f in out["backbone_fpn"]],
                "vision_pos_enc": [p[i : i + 1] for p in out["vision_pos_enc"]],
            })
            for i in range(len(frames))
        ]

    def _init_state(self, frames: _FrameSlots) -> dict:
        """``init_state`` over the in-memory frames (its warm-up encodes frame 0)."""
        from unittest import mock

        import sam2.sam2_video_predictor as svp

        low = self.image_size // 4

        def load_frames(**_kwargs):
            # video size = the low-res logits' size: add_new_mask's return value (unused
            # here) then needs no resize; predict() resizes to each target's own size.
            return frames, low, low

        with _INIT_LOCK, mock.patch.object(svp, "load_video_frames", load_frames):
            return self.model.init_state("<in-memory group>")

    # ---- the group ----------------------------------------------------------------------
    def set_references(self, references: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[int]:
        """Condition the predictor on a group's labelled reference images.

        Builds a new inference state (references + one reusable target slot; any previous
        state is dropped), adds every object id's mask on every reference (an all-zero
        mask where the object is absent on that reference: "not here") and encodes the
        references' memories.

        Parameters
        ----------
        references : sequence of (np.ndarray, np.ndarray)
            (image, label map) pairs, each at its own size: image (H, W, 3) uint8 RGB,
            label map (H, W) integer (any integer dtype, values 0 .. 2**31 - 1; 0 =
            background, > 0 = object id, kept as is: uint16 ids such as 300 survive).

        Returns
        -------
        list of int
            The sorted object ids (> 0) found on the references.

        Raises
        ------
        ValueError
            No references, an image or label map of the wrong shape or dtype, a label map
            not the size of its image, negative labels, or no reference holding any object.
        """
        import torch

        refs = list(references)
        if not refs:
            raise ValueError("no reference images: give at least one (image, label map) pair")
        checked = []
        ids: set[int] = set()
        for i, pair in enumerate(refs):
            try:
                image, labels = pair
            except (TypeError, ValueError):
                raise ValueError(f"reference {i}: expected an (image, label map) pair") from None
            image = self._check_image(image, f"reference {i} image")
            labels = np.asarray(labels)
            if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
                raise ValueError(f"reference {i}: label map must be (H, W) integer, got {labels.shape} {labels.dtype}")
            if labels.shape != image.shape[:2]:
                raise ValueError(
                    f"reference {i}: label map is {labels.shape[1]}x{labels.shape[0]} but its image is "
                    f"{image.shape[1]}x{image.shape[0]} (W x H)"
                )
            if labels.size and labels.min() < 0:
                raise ValueError(f"reference {i}: label map has negative labels (min {labels.min()})")
            if labels.size and int(labels.max()) > np.iinfo(np.int32).max:
                raise ValueError(f"reference {i}: object id {int(labels.max())} does not fit the int32 label maps")
            ids.update(int(v) for v in np.unique(labels) if v > 0)
            checked.append((image, labels))
        if not ids:
            raise ValueError(
                f"no reference holds any object: all {len(checked)} reference label maps are background (0) only"
            )
        object_ids = sorted(ids)
        with self._lock:
            self.close()
            frames = _FrameSlots([self.frame_tensor(img) for img, _ in checked], None)
            frames.slot = torch.zeros_like(frames.references[0])
            with torch.inference_mode():
                state = self._init_state(frames)
                model = self.model
                # init_state's warm-up encoded reference 0; encode the others one at a
                # time (as SAM 2 does per frame) and keep all of them for the preflight's
                # memory encoder, which visits every (object, reference) pair.
                feats = dict(state["cached_features"])
                for k in range(1, len(checked)):
                    feats[k] = self._encode([frames.references[k]])[0]
                state["cached_features"] = feats
                for k, (_, labels) in enumerate(checked):
                    for oid in object_ids:
                        model.add_new_mask(state, k, oid, torch.from_numpy(labels == oid))
                model.propagate_in_video_preflight(state)
                state["cached_features"] = {}
            self._state, self._frames, self.object_ids = state, frames, object_ids
        return list(object_ids)

    def predict(self, images: Sequence[np.ndarray]) -> list[np.ndarray]:
        """Label maps of target images from the references alone.

        Parameters
        ----------
        images : sequence of np.ndarray
            Targets, (H_i, W_i, 3) uint8 RGB each, any sizes. All of them go through the
            image encoder in one forward pass (the job's ``--batch-size`` sets how many);
            the results equal one-by-one prediction (bit for bit on CPU, tested; on CUDA
            a kernel chosen for the batch size may round differently).

        Returns
        -------
        list of np.ndarray
            One (H_i, W_i) int32 label map per target: the reference object ids, 0 =
            background. Each object's mask logits are resized to the target's size
            (bilinear); a pixel gets the object with the highest logit where that logit
            is > 0 (ties: the lower id), else 0.

        Raises
        ------
        RuntimeError
            :meth:`set_references` was not called (or :meth:`close` was).
        ValueError
            An image of the wrong shape or dtype.
        """
        import torch

        images = [self._check_image(img, f"target {i}") for i, img in enumerate(images)]
        if not images:
            return []
        with self._lock:
            if self._state is None:
                raise RuntimeError("set_references() first: the propagator has no reference frames")
            state, frames, model = self._state, self._frames, self.model
            slot = len(frames.references)
            tensors = [self.frame_tensor(img) for img in images]
            ids = torch.tensor(self.object_ids, dtype=torch.int32)
            results = []
            try:
                with torch.inference_mode():
                    encoded = self._encode(tensors)
                    for img, t, feat in zip(images, tensors, encoded, strict=True):
                        frames.slot = t
                        # the feature cache is keyed by frame index only: this target's
                        # features, nothing else
                        state["cached_features"] = {slot: feat}
                        logits = []
                        for obj_idx in range(len(self.object_ids)):
                            out = state["output_dict_per_obj"][obj_idx]
                            out["non_cond_frame_outputs"].pop(slot, None)
                            _, pred = model._run_single_frame_inference(
                                inference_state=state,
                                output_dict=out,
                                frame_idx=slot,
                                batch_size=1,
                                is_init_cond_frame=False,
                                point_inputs=None,
                                mask_inputs=None,
                                reverse=False,
                                run_mem_encoder=False,
                            )
                            logits.append(pred)
                        results.append(self._label_map(logits, img.shape[:2], ids))
                        del logits
            finally:
                state["cached_features"] = {}
                frames.slot = torch.zeros_like(frames.slot)
        return results

    @staticmethod
    def _label_map(logits: list, size: tuple[int, int], ids) -> np.ndarray:
        """(H, W) int32 label map from per-object (1, 1, s, s) logits: each resized to
        ``size`` (bilinear, ``align_corners=False``), the highest logit > 0 wins (ties:
        the earlier object). One object at a time: memory is a few (H, W) planes
        whatever the object count."""
        import torch
        import torch.nn.functional as F

        h, w = size
        best = arg = None
        for j, lg in enumerate(logits):
            up = F.interpolate(lg, size=(h, w), mode="bilinear", align_corners=False)[0, 0]
            if best is None:
                best, arg = up, torch.zeros((h, w), dtype=torch.int64, device=up.device)
            else:
                better = up > best
                best = torch.where(better, up, best)
                arg[better] = j
        labels = torch.where(best > 0, ids.to(arg.device)[arg], 0)
        return labels.to("cpu", torch.int32).numpy()

    def close(self) -> None:
        """Drop the inference state and frames (frees their memory); the network stays."""
        with self._lock:
            self._state = None
            self._frames = None
            self.object_ids = []
