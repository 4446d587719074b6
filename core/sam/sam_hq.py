"""The SAM-HQ family behind :class:`~segdeck.core.sam.engine.SamEngine` (Ke et al.,
"Segment Anything in High Quality", NeurIPS 2023, arXiv:2306.01567).

The embedding is ``image_embed`` (1, 256, 64, 64) plus ``hq_features`` (1, 32, 256, 256)
(the decoder's ``embedding_encoder`` of the embedding + ``compress_vit_feat`` of the
first global-attention ViT block's output, as ``MaskDecoderHQ.forward`` computes them),
float32, and ``input_size`` (the resized image's size inside the 1024 square).
``predict(multimask=True)`` returns one mask, the best of SAM's three refined with the HQ
mask, as the official ``SamPredictor`` does.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from segdeck.core.sam.engine import ImageState, SamEngine
from segdeck.core.sam.fast import LayerZero, TensorGroup, tensors
from segdeck.core.sam.params import GeneratorParams


@dataclass
class HQImageTensors(TensorGroup):
    """Per-image tensors of SAM-HQ's fast decoder (what a decoder trace takes as inputs).

    Attributes
    ----------
    zero : LayerZero
        Prompt-independent layer-0 tensors (:func:`~.fast.prepare_image`).
    image_embed : torch.Tensor
        (1, 256, 64, 64) image embedding.
    hq_features : torch.Tensor
        (1, 32, 256, 256) HQ features.
    """

    zero: LayerZero = tensors(group=LayerZero)
    image_embed: object = tensors()
    hq_features: object = tensors()


class SamHQEngine(SamEngine):
    """SAM-HQ engine (Ke et al., "Segment Anything in High Quality", arXiv:2306.01567)."""

    family = "sam-hq"
    ImageTensors = HQImageTensors

    def __init__(self, spec, model, device, options=None):
        super().__init__(spec, model, device, options)
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
        tensors = HQImageTensors(zero=zero, image_embed=feats["image_embed"], hq_features=feats["hq_features"])
        st = ImageState(key, tuple(hw), feats, tensors)
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

    def _prompt_embed(self, coords, labels, boxes=None, masks=None):
        """Official prompt embedding of (B, K, 2) model-frame points, (B, 4) boxes, (B, 1,
        256, 256) mask inputs -> sparse (B, T, C), dense None (no mask input) or (B, C, 64, 64)."""
        pe_ = self.model.prompt_encoder
        points = None if coords is None else (coords, labels)
        sparse, dense = pe_(points=points, boxes=boxes, masks=masks)
        return sparse, (dense if masks is not None else None)

    def _fast_decode(self, sparse, dense, t: HQImageTensors):
        return self._decode_image(sparse, dense, t.zero, t.image_embed, t.hq_features)

    def _official_decode(self, state, sparse, dense):
        """SAM-HQ's ``MaskDecoderHQ.predict_masks`` -> masks (B, 5, 256, 256) (4 SAM masks +
        the HQ mask), iou (B, 4)."""
        feats = state.feats
        dense = self._dense_or_no_mask(self.model.prompt_encoder, feats["image_embed"], sparse, dense)
        return self.model.mask_decoder.predict_masks(
            image_embeddings=feats["image_embed"], image_pe=self._pe, sparse_prompt_embeddings=sparse,
            dense_prompt_embeddings=dense, hq_features=feats["hq_features"],
        )

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
        hs, keys = two_way(dec.transformer, tokens, zero, src, rows=(0, 1 + n), onednn=self.options.onednn)
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
        gen = SamAutomaticMaskGenerator(self.model, **params.generator_kwargs(self.family))
        multimask = params.multimask_output
        orig = gen.generate
        gen.generate = lambda image: orig(image, multimask_output=multimask)
        return gen
