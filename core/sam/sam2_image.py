"""The SAM 2 / 2.1 image family behind :class:`~segdeck.core.sam.engine.SamEngine`
(Ravi et al., "SAM 2: Segment Anything in Images and Videos", arXiv:2408.00714).

The image encoder is sam2's own (``forward_image`` + ``_prepare_backbone_features``, the
no-memory embedding added as ``SAM2ImagePredictor`` does); the embedding is
``image_embed`` (1, 256, 64, 64) plus the high-resolution features ``feat_s0``
(1, 32, 256, 256) and ``feat_s1`` (1, 64, 128, 128), float32. Points are embedded in
numpy on CPU (:class:`~.fast.PointEmbedder`); a box is two corner points (labels 2, 3)
before the clicked points, as the official predictor orders them.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segdeck.core.sam.engine import ImageState, SamEngine
from segdeck.core.sam.fast import LayerZero, TensorGroup, tensors
from segdeck.core.sam.params import GeneratorParams

#: SAM 2's high-res feature blocks (di, ei), in :attr:`Sam2ImageTensors.s0` order.
S0_BLOCKS = ((0, 0), (0, 1), (1, 0), (1, 1))


@dataclass
class Sam2ImageTensors(TensorGroup):
    """Per-image tensors of SAM 2's fast decoder (what a decoder trace takes as inputs).

    Attributes
    ----------
    zero : LayerZero
        Prompt-independent layer-0 tensors (:func:`~.fast.prepare_image`).
    image_embed : torch.Tensor
        (1, 256, 64, 64) image embedding.
    s0 : tuple of torch.Tensor
        High-res features ``feat_s0`` in the four upscaling blocks, :data:`S0_BLOCKS`
        order, each (64*64*2, 2*32) (:func:`~.fast.arrange_high_res`).
    s1 : tuple of torch.Tensor
        ``feat_s1`` in the two first-convolution blocks, each (64*64, 2*64).
    packed : tuple
        The upscaling's four oneDNN-packed matrices (:func:`~.fast.upscale_packed`;
        None where unpacked).
    """

    zero: LayerZero = tensors(group=LayerZero)
    image_embed: object = tensors()
    s0: tuple = tensors(n=4)
    s1: tuple = tensors(n=2)
    packed: tuple = tensors(n=4)


class Sam2Engine(SamEngine):
    """SAM 2 / 2.1 image engine (Ravi et al., "SAM 2", arXiv:2408.00714)."""

    family = "sam2"
    ImageTensors = Sam2ImageTensors
    _bb_feat_sizes = [(256, 256), (128, 128), (64, 64)]

    def __init__(self, spec, model, device, options=None):
        super().__init__(spec, model, device, options)
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
            self._up = upscale_weights(model.sam_mask_decoder, self.options.onednn)
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
        from segdeck.core.sam.fast import upscale_packed

        tensors = Sam2ImageTensors(
            zero=zero, image_embed=feats["image_embed"], s0=tuple(s0[k] for k in S0_BLOCKS), s1=tuple(s1),
            packed=upscale_packed(self._up),
        )
        return ImageState(key, tuple(hw), feats, tensors)

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
            return self._prompt_embed(None, None, masks=masks)
        c = np.concatenate([p[0] for p in parts]).astype(np.float32)
        lb = np.concatenate([p[1] for p in parts]).astype(np.int64)
        if mi is None and self.device == "cpu":
            return torch.from_numpy(self._points(c, lb)), None
        coords = torch.as_tensor(c, device=self.device)[None]
        labels = torch.as_tensor(lb, dtype=torch.int, device=self.device)[None]
        masks = None if mi is None else torch.as_tensor(mi, device=self.device)[None]
        return self._prompt_embed(coords, labels, masks=masks)

    def _prompt_embed(self, coords, labels, boxes=None, masks=None):
        """Official prompt embedding of (B, K, 2) model-frame points (a box is two corner
        points, labels 2 and 3, so ``boxes`` is unused) -> sparse (B, K+1, C), dense None
        (no mask input) or (B, C, 64, 64)."""
        pe_ = self.model.sam_prompt_encoder
        points = None if coords is None else (coords, labels)
        if masks is None:
            bs = coords.shape[0]
            sparse = pe_._embed_points(coords, labels, pad=True) if coords is not None else None
            if sparse is None:
                sparse = self._torch.empty((bs, 0, pe_.embed_dim), device=self.device)
            return sparse, None
        return pe_(points=points, boxes=None, masks=masks)

    def _fast_decode(self, sparse, dense, t: Sam2ImageTensors):
        from segdeck.core.sam.fast import upscale_bind

        s0 = dict(zip(S0_BLOCKS, t.s0, strict=True))
        return self._decode_image(sparse, dense, t.zero, t.image_embed, s0, t.s1, upscale_bind(self._up, t.packed))

    def _official_decode(self, state, sparse, dense):
        """SAM 2's ``MaskDecoder.predict_masks`` -> masks (B, 4, 256, 256), iou (B, 4)."""
        feats = state.feats
        dense = self._dense_or_no_mask(self.model.sam_prompt_encoder, feats["image_embed"], sparse, dense)
        masks, iou, _, _ = self.model.sam_mask_decoder.predict_masks(
            image_embeddings=feats["image_embed"], image_pe=self._pe, sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense, repeat_image=True, high_res_features=[feats["feat_s0"], feats["feat_s1"]],
        )
        return masks, iou

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
        hs, keys = two_way(
            dec.transformer, tokens, zero, src, rows=(s, s + 1 + dec.num_mask_tokens), onednn=self.options.onednn
        )
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
        return SAM2AutomaticMaskGenerator(self.model, **params.generator_kwargs(self.family))
