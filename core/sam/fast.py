"""Prompt decoding without repeated work: SAM's two-way transformer re-arranged.

SAM 2 and SAM-HQ share the mask decoder's two-way transformer (Kirillov et al.,
"Segment Anything", arXiv:2304.02643, Fig. 14). For a few prompt tokens ``T`` against
``N = 64*64`` image tokens, most of its cost is the projections of the image tokens.
Two exact re-arrangements remove most of it:

1. In layer 0 the image tokens do not depend on the prompt (when there is no mask
   input), so the keys / values of token-to-image attention and the queries of
   image-to-token attention are computed once per image (:func:`prepare_image`)
   and shared by every prompt and every batch.
2. Attention between ``N`` image tokens and ``T`` prompt tokens only needs the
   projections folded into the small side: ``(X Wq^T) K^T = X (Wq^T K^T)`` and
   ``out_proj(P V) = P (V Wo^T) + b`` (rows of ``P`` sum to 1), and likewise for the
   other direction; the per-query key bias only shifts a softmax row and drops out.
   With ``heads * T < internal_dim`` this costs ``heads*T`` instead of
   ``internal_dim`` multiply-adds per image token and channel.

The results equal the original modules up to float rounding (the tests compare the
masks with the official predictors).

On CPU the large products with a fixed right-hand matrix (the upscaling weights) go
through oneDNN with the matrix packed once
(:class:`Packed`); they give the same values as ``torch.matmul`` up to float rounding
(``benchmarks/sam.py --onednn-ab`` times the two on the machine at hand). ``onednn=False`` (from
:class:`~segdeck.core.sam.options.EngineOptions`) uses plain ``torch.matmul`` everywhere,
and so does a torch build without the private op ``torch.ops.mkldnn._linear_pointwise``
or one whose packed product disagrees with ``torch.matmul`` on a probe.

SAM 2's mask upscaling (two stride-2 transposed convolutions) runs as matrix products in
four sub-pixel row blocks, so the mask logits come out in image order without a gather
(:func:`upscale_features`, :func:`mask_logits`).
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass, field, fields

import numpy as np


@functools.lru_cache(maxsize=1)
def onednn_available() -> bool:
    """Whether this torch build has oneDNN's private linear ops (``torch.ops.mkldnn.
    _reorder_linear_weight`` and ``_linear_pointwise``). They are not public API: every
    user checks this (or catches their failure) and falls back to ``torch.matmul``.
    Probed once per process (the look-up costs tens of microseconds; ``cache_clear()``
    probes again)."""
    import torch

    if not torch.backends.mkldnn.is_available():
        return False
    try:
        ops = torch.ops.mkldnn
        return hasattr(ops, "_linear_pointwise") and hasattr(ops, "_reorder_linear_weight")
    except (AttributeError, RuntimeError):
        return False


def _onednn_enabled(t, onednn: bool = True) -> bool:
    import torch

    if not onednn or torch.jit.is_tracing():  # oneDNN's linear ops do not trace
        return False
    return t.device.type == "cpu" and t.dtype == torch.float32 and onednn_available()


class Packed:
    """``x @ w`` for a fixed (K, M) float32 matrix ``w``.

    On CPU, when this torch build exposes oneDNN's linear kernels, ``w`` is packed once into
    oneDNN's blocked layout and every product runs through ``mkldnn._linear_pointwise``;
    otherwise (GPU, other dtypes, a build without it, or a packed product that disagrees
    with ``torch.matmul`` on a probe) it is ``torch.matmul``.

    Parameters
    ----------
    w : torch.Tensor
        (K, M) matrix.
    rows : int
        Typical number of rows of ``x`` (oneDNN picks its blocking for it; any number works).
    onednn : bool
        False: always ``torch.matmul``.
    """

    def __init__(self, w, rows: int, onednn: bool = True):
        import torch

        self.w = w
        self.packed = None
        if not _onednn_enabled(w, onednn):
            return
        try:
            ops = torch.ops.mkldnn
            packed = ops._reorder_linear_weight(w.t().contiguous(), rows)
            probe = torch.randn(3, w.shape[0], generator=torch.Generator().manual_seed(0))
            got = ops._linear_pointwise(probe, packed, None, "none", [], "")
            want = probe @ w
            if torch.allclose(got, want, rtol=1e-4, atol=1e-4 * float(want.abs().max()) + 1e-6):
                self.packed = packed
        except Exception:  # noqa: BLE001 - any failure means: use torch.matmul
            self.packed = None

    def __call__(self, x):
        """(..., K) -> (..., M). (While tracing: ``torch.matmul``, oneDNN's plain linear op
        does not trace.)"""
        import torch

        if self.packed is not None and not torch.jit.is_tracing():
            return torch.ops.mkldnn._linear_pointwise(x, self.packed, None, "none", [], "")
        return torch.matmul(x, self.w)

    def add(self, x, other):
        """``x @ w + other`` for x (R, K) and other (R, M), the sum fused into the product on
        oneDNN. Traceable when the packed matrix is a trace input (see :meth:`bind`)."""
        import torch

        if self.packed is not None:
            return torch.ops.mkldnn._linear_pointwise.binary(x, other, self.packed, None, "add")
        return torch.matmul(x, self.w).add_(other)

    def bind(self, packed) -> Packed:
        """The same product with ``packed`` (this one's packed matrix passed through a trace
        as an input; a trace cannot hold an opaque oneDNN tensor as a constant)."""
        out = object.__new__(Packed)
        out.w, out.packed = self.w, packed
        return out


def _one_prompt_product(a, w, fallback, onednn: bool = True):
    """``a[0] @ w^T`` through oneDNN for a (1, R, K) and a (N, K) matrix ``w`` (any strides
    oneDNN takes as a linear weight) on CPU; ``fallback()`` otherwise."""
    import torch

    if a.shape[0] == 1 and _onednn_enabled(a, onednn) and (w.is_contiguous() or w.t().is_contiguous()):
        try:
            return torch.ops.mkldnn._linear_pointwise(a[0], w, None, "none", [], "").unsqueeze(0)
        except Exception:  # noqa: BLE001 - any failure means: use torch.matmul
            pass
    return fallback()


def _mm(a, b, onednn: bool = True):
    """``a @ b`` for a (B, R, K) and b (B or 1, K, M) -> (B, R, M) (oneDNN for one prompt)."""
    import torch

    if b.shape[0] != 1:
        return torch.matmul(a, b)
    return _one_prompt_product(a, b[0].t(), lambda: torch.matmul(a, b), onednn)


def _mm_t(a, b, onednn: bool = True):
    """``a @ b^T`` for a (B, R, K) and b (B or 1, N, K) -> (B, R, N) (oneDNN for one prompt)."""
    import torch

    if b.shape[0] != 1:
        return torch.matmul(a, b.transpose(-1, -2))
    return _one_prompt_product(a, b[0], lambda: torch.matmul(a, b.transpose(-1, -2)), onednn)


def tensors(n: int | None = None, group: type | None = None):
    """A field of a :class:`TensorGroup`: one tensor (default), a tuple of ``n`` tensors,
    or a nested ``group``."""
    return field(metadata={"n": n, "group": group})


class TensorGroup:
    """Named tensors that travel as one flat tuple (a decoder trace takes tensors only).

    Subclasses are dataclasses whose fields are declared with :func:`tensors`. A field
    holds a tensor (or None: an absent input, part of a trace's signature), a tuple of
    a fixed number of them, or a nested group. :meth:`flat` lists them in field order;
    :meth:`from_flat` reads such a tuple back by name, so no caller slices it by hand.
    """

    def flat(self) -> tuple:
        """Every tensor, in field order (nested groups and tuples spliced in)."""
        out: list = []
        for f in fields(self):
            v = getattr(self, f.name)
            if f.metadata.get("group") is not None:
                out.extend(v.flat())
            elif f.metadata.get("n") is not None:
                out.extend(v)
            else:
                out.append(v)
        return tuple(out)

    @classmethod
    def size(cls) -> int:
        """Length of :meth:`flat`."""
        n = 0
        for f in fields(cls):
            group, k = f.metadata.get("group"), f.metadata.get("n")
            n += group.size() if group is not None else (k if k is not None else 1)
        return n

    @classmethod
    def from_flat(cls, flat) -> TensorGroup:
        """The group from a tuple of exactly :meth:`size` tensors (from :meth:`flat`)."""
        flat = tuple(flat)
        if len(flat) != cls.size():
            raise ValueError(f"{cls.__name__} takes {cls.size()} tensors, got {len(flat)}")
        values, i = {}, 0
        for f in fields(cls):
            group, k = f.metadata.get("group"), f.metadata.get("n")
            if group is not None:
                values[f.name] = group.from_flat(flat[i : i + group.size()])
                i += group.size()
            elif k is not None:
                values[f.name] = flat[i : i + k]
                i += k
            else:
                values[f.name] = flat[i]
                i += 1
        return cls(**values)


@dataclass
class LayerZero(TensorGroup):
    """Prompt-independent tensors of layer 0 for one image (no mask input).

    Attributes
    ----------
    keys : torch.Tensor
        (N, C) image tokens (image embedding + no-mask dense embedding).
    pe : torch.Tensor
        (N, C) dense positional encoding.
    kpe : torch.Tensor
        (N, C) ``keys + pe``.
    k_t2i, v_t2i : torch.Tensor
        (heads, N, d) token-to-image keys and values.
    q_i2t : torch.Tensor
        (N, internal_dim) image-to-token queries.
    """

    keys: object = tensors()
    pe: object = tensors()
    kpe: object = tensors()
    k_t2i: object = tensors()
    v_t2i: object = tensors()
    q_i2t: object = tensors()


def _heads(x, h):
    # (..., n, h*d) -> (..., h, n, d)
    *lead, n, c = x.shape
    return x.reshape(*lead, n, h, c // h).transpose(-3, -2)


def _merge(x):
    # (..., h, n, d) -> (..., n, h*d)
    *lead, h, n, d = x.shape
    return x.transpose(-3, -2).reshape(*lead, n, h * d)


def prepare_image(transformer, src, pe) -> LayerZero:
    """Layer-0 tensors for one image.

    Parameters
    ----------
    transformer : TwoWayTransformer
        The mask decoder's transformer (SAM 2 or SAM-HQ).
    src : torch.Tensor
        (1, C, h, w) image embedding plus dense prompt embedding.
    pe : torch.Tensor
        (1, C, h, w) dense positional encoding (``prompt_encoder.get_dense_pe()``).
    """
    keys = src.flatten(2)[0].transpose(0, 1).contiguous()
    pe = pe.flatten(2)[0].transpose(0, 1).contiguous()
    kpe = keys + pe
    l0 = transformer.layers[0]
    t2i, i2t = l0.cross_attn_token_to_image, l0.cross_attn_image_to_token
    q_i2t = i2t.q_proj(kpe).contiguous()
    return LayerZero(
        keys=keys,
        pe=pe,
        kpe=kpe,
        k_t2i=_heads(t2i.k_proj(kpe), t2i.num_heads).contiguous(),
        v_t2i=_heads(t2i.v_proj(keys), t2i.num_heads).contiguous(),
        q_i2t=q_i2t,
    )


def _t2i_cached(attn, q, k, v):
    """Token-to-image attention with precomputed (heads, N, d) keys / values; q (B, T, C)."""
    import torch

    qh = _heads(attn.q_proj(q), attn.num_heads)  # (B, H, T, d)
    qh = qh * (1.0 / math.sqrt(qh.shape[-1]))
    s = torch.matmul(qh, k.transpose(-1, -2).unsqueeze(0))  # (B, H, T, N)
    p = torch.softmax(s, dim=-1)
    out = torch.matmul(p, v.unsqueeze(0))  # (B, H, T, d)
    return attn.out_proj(_merge(out))


def _t2i(attn, q, kpe, keys, onednn: bool = True):
    """Token-to-image attention; q (B, T, C), kpe / keys (B or 1, N, C) -> (B, T, C)."""
    import torch

    H = attn.num_heads
    B, T, C = q.shape
    D = attn.internal_dim
    d = D // H
    if H * T >= D:  # folding does not pay: the plain form
        kh = _heads(attn.k_proj(kpe), H)
        vh = _heads(attn.v_proj(keys), H)
        qh = _heads(attn.q_proj(q), H)
        s = torch.matmul(qh, kh.transpose(-1, -2)) / math.sqrt(d)
        return attn.out_proj(_merge(torch.matmul(torch.softmax(s, -1), vh)))
    qh = _heads(attn.q_proj(q), H) * (1.0 / math.sqrt(d))  # (B, H, T, d)
    wk = attn.k_proj.weight.view(H, d, C)
    a = torch.einsum("bhtd,hdc->bhtc", qh, wk).reshape(B, H * T, C)
    s = _mm_t(a, kpe, onednn)  # (B, H*T, N); the key bias cancels in softmax
    p = torch.softmax(s, dim=-1)
    py = _mm(p, keys, onednn).view(B, H, T, C)
    wv = attn.v_proj.weight.view(H, d, C)
    out = torch.einsum("bhtc,hdc->bhtd", py, wv) + attn.v_proj.bias.view(1, H, 1, d)
    return attn.out_proj(_merge(out))


def _i2t(attn, kpe, qtok, vtok, q_cached=None, residual=None, onednn: bool = True):
    """Image-to-token attention; kpe (B or 1, N, C) image tokens + pe, qtok / vtok (B, T, C)
    prompt tokens (+ pe / plain) -> (B, N, C). ``q_cached``: the (N, D) projected queries,
    when they are known (layer 0).
    ``residual`` (B or 1, N, C), when given, is added to the output (fused).

    Scores are kept as (B, heads, T, N) so the softmax over the few tokens runs along
    contiguous image positions (a softmax over a last axis of length T is slow on CPU)."""
    import torch

    H = attn.num_heads
    B, T, C = qtok.shape
    D = attn.internal_dim
    d = D // H
    scale = 1.0 / math.sqrt(d)
    kh = _heads(attn.k_proj(qtok), H) * scale  # (B, H, T, d)
    vh = _heads(attn.v_proj(vtok), H)  # (B, H, T, d)
    fold = H * T < D
    if q_cached is not None:
        # block-diagonal (H*T, D): head h's T rows meet head h's d columns only
        eye = torch.eye(H, dtype=kh.dtype, device=kh.device)
        m = torch.einsum("bhtd,hg->bhtgd", kh, eye).reshape(B, H * T, D)
        s = torch.matmul(m, q_cached.t())  # (B, H*T, N)
    elif fold:
        wq = attn.q_proj.weight.view(H, d, C)
        m = torch.einsum("bhtd,hdc->bhtc", kh, wq).reshape(B, H * T, C)
        bias = torch.einsum("hd,bhtd->bht", attn.q_proj.bias.view(H, d), kh).reshape(B, H * T, 1)
        s = _mm_t(m, kpe, onednn).add_(bias)  # (B, H*T, N)
    else:
        qh = _heads(attn.q_proj(kpe), H)  # (B, H, N, d)
        s = torch.matmul(kh, qh.transpose(-1, -2))  # (B, H, T, N)
    n = s.shape[-1]
    p = torch.softmax(s.view(B, H, T, n), dim=2)
    if not fold:
        out = attn.out_proj(_merge(torch.matmul(p.transpose(-1, -2), vh)))  # (B, N, C)
        return out if residual is None else out + residual
    wo = attn.out_proj.weight.view(C, H, d)
    # each head's probabilities sum to 1 per image position, so adding bias / H to every
    # row of u adds exactly the output bias; the residual is added by the same product
    u = torch.einsum("bhtd,chd->bhtc", vh, wo) + (attn.out_proj.bias / H)
    u = u.reshape(B, H * T, C)
    pt = p.view(B, H * T, n).transpose(1, 2)
    out = torch.bmm(pt, u)
    return out if residual is None else out.add_(residual)


def two_way(transformer, tokens, zero: LayerZero, src=None, rows=None, onednn: bool = True):
    """Run a SAM two-way transformer for ``B`` prompts on one image.

    Parameters
    ----------
    transformer : TwoWayTransformer
    tokens : torch.Tensor
        (B, T, C) output tokens + sparse prompt embeddings.
    zero : LayerZero
        From :func:`prepare_image` (gives ``pe`` and, when ``src`` is None, the cached layer 0).
    src : torch.Tensor, optional
        (B, N, C) image tokens when they depend on the prompt (mask input); the layer-0
        cache is not used then.
    rows : tuple of int, optional
        ``(start, stop)``: only these output tokens are needed (the final token-to-image
        attention and norm act per token, so the others are skipped there).
    onednn : bool
        Allow oneDNN's products for one prompt on CPU (False: ``torch.matmul``).

    Returns
    -------
    queries : torch.Tensor
        (B, T, C) processed tokens, or (B, stop - start, C) with ``rows``.
    keys : torch.Tensor
        (B, N, C) processed image tokens.
    """
    import torch.nn.functional as F

    pe = zero.pe.unsqueeze(0)
    qpe = tokens
    queries = tokens
    keys = zero.keys.unsqueeze(0) if src is None else src
    for i, layer in enumerate(transformer.layers):
        if layer.skip_first_layer_pe:
            queries = layer.self_attn(q=queries, k=queries, v=queries)
        else:
            q = queries + qpe
            queries = queries + layer.self_attn(q=q, k=q, v=queries)
        queries = layer.norm1(queries)
        q = queries + qpe
        cached = i == 0 and src is None
        kpe = zero.kpe.unsqueeze(0) if cached else keys + pe
        if cached:
            attn_out = _t2i_cached(layer.cross_attn_token_to_image, q, zero.k_t2i, zero.v_t2i)
        else:
            attn_out = _t2i(layer.cross_attn_token_to_image, q, kpe, keys, onednn)
        queries = layer.norm2(queries + attn_out)
        queries = layer.norm3(queries + layer.mlp(queries))
        q = queries + qpe
        keys = _i2t(
            layer.cross_attn_image_to_token, kpe, q, queries, zero.q_i2t if cached else None, residual=keys,
            onednn=onednn,
        )
        norm = layer.norm4
        keys = F.layer_norm(keys, norm.normalized_shape, norm.weight, norm.bias, norm.eps)
    if rows is not None:
        queries, qpe = queries[:, rows[0] : rows[1]], qpe[:, rows[0] : rows[1]]
    q = queries + qpe
    attn_out = _t2i(transformer.final_attn_token_to_image, q, keys + pe, keys, onednn)
    queries = transformer.norm_final_attn(queries + attn_out)
    return queries, keys


# ---- SAM 2 mask upscaling as matrix products in four sub-pixel blocks ------------------
#
# ``output_upscaling`` is ConvTranspose(k=2, s=2) -> (+ high-res feature) -> LayerNorm2d ->
# GELU -> ConvTranspose(k=2, s=2) -> (+ high-res feature) -> GELU. A stride-2 2x2 transposed
# convolution is one matrix product per input pixel. Output pixel (y, x) of the 4x grid is
# y = 4i + 2di + ei, x = 4j + 2dj + ej for token (i, j) and sub-pixel offsets di, dj (first
# convolution) and ei, ej (second). Splitting the products by the row offsets (di, ei) gives
# four blocks whose rows are ordered (i, j, dj, ej): a block's mask logits are whole image
# rows 4i + 2di + ei, so masks reach image order by copying rows, with no gather. The
# high-res features are put in block order once per image.


def upscale_weights(dec, onednn: bool = True):
    """Block matrices of the decoder's two transposed convolutions (computed once per model;
    ``onednn`` False: no oneDNN packing).

    Returns a dict: ``p1[di]`` / ``p2[ei]`` (:class:`Packed`) map (rows, C) -> (rows, 2*c1)
    and (rows, c1) -> (rows, 2*c2) with columns ordered (dj, channel) / (ej, channel);
    ``b1`` / ``b2`` the matching biases; ``ln`` the LayerNorm2d; ``c1`` / ``c2`` channels.
    """
    dc1, ln1, _act1, dc2, _act2 = dec.output_upscaling
    c1, c2 = dc1.weight.shape[1], dc2.weight.shape[1]
    w1 = dc1.weight.permute(0, 2, 3, 1)  # (C, di, dj, c1)
    w2 = dc2.weight.permute(0, 2, 3, 1)  # (c1, ei, ej, c2)
    return {
        "p1": [Packed(w1[:, d].reshape(w1.shape[0], 2 * c1).contiguous(), 4096, onednn) for d in range(2)],
        "p2": [Packed(w2[:, e].reshape(c1, 2 * c2).contiguous(), 8192, onednn) for e in range(2)],
        "b1": dc1.bias.repeat(2), "b2": dc2.bias.repeat(2), "ln": ln1, "c1": c1, "c2": c2,
    }


def arrange_high_res(feat_s0, feat_s1, wts):
    """High-res features in block order, transposed-convolution biases added.

    Parameters
    ----------
    feat_s0, feat_s1 : torch.Tensor
        (1, c2, 4h, 4w) and (1, c1, 2h, 2w) float features of the image encoder.
    wts : dict
        From :func:`upscale_weights`.

    Returns
    -------
    s0 : dict
        ``s0[di, ei]``: (h*w*2, 2*c2), rows (i, j, dj), columns (ej, channel).
    s1 : list
        ``s1[di]``: (h*w, 2*c1), rows (i, j), columns (dj, channel).
    """
    _, c1, h2, w2 = feat_s1.shape
    h, w = h2 // 2, w2 // 2
    c2 = feat_s0.shape[1]
    f1 = feat_s1[0].view(c1, h, 2, w, 2)  # (c, i, di, j, dj)
    s1 = [(f1[:, :, d].permute(1, 2, 3, 0).reshape(h * w, 2 * c1) + wts["b1"]).contiguous() for d in range(2)]
    f0 = feat_s0[0].view(c2, h, 2, 2, w, 2, 2)  # (c, i, di, ei, j, dj, ej)
    s0 = {
        (d, e): (f0[:, :, d, e].permute(1, 2, 3, 4, 0).reshape(h * w * 2, 2 * c2) + wts["b2"]).contiguous()
        for d in range(2)
        for e in range(2)
    }
    return s0, s1


def upscale_features(wts, keys, s0, s1):
    """Per-pixel mask features of one prompt, in the four blocks.

    Parameters
    ----------
    wts : dict
        From :func:`upscale_weights`.
    keys : torch.Tensor
        (N, C) processed image tokens, N = h * w.
    s0, s1
        From :func:`arrange_high_res`.

    Returns
    -------
    dict
        ``z[di, ei]``: (N*4, c2) features, rows (i, j, dj, ej) = image row 4i + 2di + ei.
    """
    import torch
    import torch.nn.functional as F

    N = keys.shape[0]
    c1, c2, ln = wts["c1"], wts["c2"], wts["ln"]
    z = {}
    for d in range(2):
        y = wts["p1"][d].add(keys, s1[d]).view(N * 2, c1)
        y = torch.ops.aten.gelu_(F.layer_norm(y, (c1,), ln.weight, ln.bias, ln.eps))
        for e in range(2):
            z[d, e] = torch.ops.aten.gelu_(wts["p2"][e].add(y, s0[d, e])).view(N * 4, c2)
    return z


def upscale_packed(wts) -> tuple:
    """The oneDNN matrices of :func:`upscale_weights` (None where unpacked): ``p1[0]``,
    ``p1[1]``, ``p2[0]``, ``p2[1]``, the order :func:`upscale_bind` takes them (trace
    inputs)."""
    return tuple(p.packed for p in (*wts["p1"], *wts["p2"]))


def upscale_bind(wts, packed) -> dict:
    """``wts`` with its products bound to ``packed`` (from :func:`upscale_packed`, passed
    through a trace)."""
    ps = [p.bind(k) for p, k in zip((*wts["p1"], *wts["p2"]), packed, strict=True)]
    return {**wts, "p1": ps[:2], "p2": ps[2:]}


def mask_logits(z, hyper, hw):
    """Mask logits in image order from block features.

    Parameters
    ----------
    z : dict
        From :func:`upscale_features`.
    hyper : torch.Tensor
        (M, c2) hypernetwork outputs, one row per mask.
    hw : tuple
        (h, w) token grid.

    Returns
    -------
    torch.Tensor
        (M, 4h, 4w) logits.
    """
    import torch

    h, w = hw
    M = hyper.shape[0]
    out = torch.empty((M, h, 2, 2, 4 * w), dtype=hyper.dtype, device=hyper.device)
    for (d, e), f in z.items():
        out[:, :, d, e].copy_(torch.matmul(hyper, f.t()).view(M, h, 4 * w))
    return out.view(M, 4 * h, 4 * w)


# ---- point prompts of one click, in numpy ---------------------------------------------


class PointEmbedder:
    """SAM 2's sparse prompt embedding of one prompt's points, in numpy.

    The same values as ``PromptEncoder._embed_points(coords, labels, pad=True)`` (random
    Fourier features of the pixel centres, plus the learned embedding of each label, plus
    one padding point) up to float rounding, in a dozen numpy operations on a few rows
    instead of some thirty torch operations.

    Parameters
    ----------
    prompt_encoder : sam2.modeling.sam.prompt_encoder.PromptEncoder
    """

    def __init__(self, prompt_encoder):
        pe = prompt_encoder
        self.gauss = pe.pe_layer.positional_encoding_gaussian_matrix.detach().cpu().numpy().astype(np.float32)
        h, w = pe.input_image_size
        self.size = np.array([w, h], np.float32)  # coords are (x, y)
        rows = [pe.not_a_point_embed.weight] + [e.weight for e in pe.point_embeddings]
        self.table = np.concatenate([r.detach().cpu().numpy() for r in rows]).astype(np.float32)  # label + 1

    def __call__(self, coords: np.ndarray, labels: np.ndarray) -> np.ndarray:
        """(K, 2) float32 (x, y) model-frame coordinates and (K,) labels (0 negative, 1
        positive, 2 / 3 box corners) -> (1, K + 1, C) float32 sparse embedding."""
        pts = np.concatenate([coords + np.float32(0.5), np.zeros((1, 2), np.float32)])
        lab = np.append(labels, -1)
        c = (pts / self.size) * np.float32(2.0) - np.float32(1.0)
        c = np.float32(2.0 * np.pi) * (c @ self.gauss)
        out = np.concatenate([np.sin(c), np.cos(c)], 1)
        out[lab == -1] = 0.0
        out += self.table[lab + 1]
        return out[None]


# ---- hypernetwork MLPs of all mask tokens as batched products --------------------------


def stack_mlps(mlps):
    """Weights of same-shaped SAM ``MLP`` modules stacked for :func:`run_stacked_mlps`, or
    None when they differ in shape, activation or output sigmoid."""
    import torch

    mlps = list(mlps)
    if not mlps:
        return None
    first = mlps[0]
    for m in mlps:
        if len(m.layers) != len(first.layers) or getattr(m, "sigmoid_output", False):
            return None
        if type(getattr(m, "act", None)) is not torch.nn.ReLU:
            return None
        for a, b in zip(m.layers, first.layers, strict=True):
            if a.weight.shape != b.weight.shape or a.bias is None:
                return None
    return [
        (torch.stack([m.layers[k].weight.t() for m in mlps]).contiguous(),  # (M, in, out)
         torch.stack([m.layers[k].bias for m in mlps]).unsqueeze(1).contiguous())  # (M, 1, out)
        for k in range(len(first.layers))
    ]


def run_stacked_mlps(stacked, x):
    """(B, M, C) tokens -> (B, M, out): token m through MLP m (ReLU between layers)."""
    import torch

    h = x.transpose(0, 1)  # (M, B, C)
    for k, (w, b) in enumerate(stacked):
        h = torch.baddbmm(b, h, w)
        if k < len(stacked) - 1:
            h = torch.relu_(h)
    return h.transpose(0, 1)


# ---- TorchScript traces: the decoder without Python's per-operation overhead -----------


class TraceCache:
    """``fn(*args)`` through TorchScript traces, one per input signature.

    A SAM decode is about a thousand small tensor operations, and on a small CPU the Python
    side of dispatching them is a noticeable part of a click (``benchmarks/sam.py
    --jit-ab`` measures it). ``torch.jit.trace``
    records the operations once and replays them from C++ with the same kernels, so the
    values are the same. A trace fixes every shape and every Python branch it saw, so it is
    keyed by the shapes, dtypes and devices of the arguments (and which are None): a new
    number of prompt points is a new trace (recorded once). Everything that changes
    between calls must be an argument: tensors the function reads from elsewhere (model
    weights) are frozen into the trace.

    Parameters
    ----------
    fn : callable
        Function of tensors (or None) returning a tensor or a tuple of tensors; no
        data-dependent Python control flow.
    limit : int
        Traces kept (least recently used dropped).

    Notes
    -----
    When tracing a signature fails, that signature runs ``fn`` eagerly from then on.
    """

    def __init__(self, fn, limit: int = 32):
        from collections import OrderedDict

        self.fn = fn
        self.limit = limit
        self._traces: OrderedDict = OrderedDict()

    @staticmethod
    def _key(args):
        return tuple(None if a is None else (tuple(a.shape), a.dtype, a.device.type) for a in args)

    def __len__(self) -> int:
        return len(self._traces)

    def __call__(self, *args):
        key = self._key(args)
        present = tuple(a for a in args if a is not None)
        tr = self._traces.get(key)
        if tr is None:
            tr = self._trace(args, present)
            self._traces[key] = tr
            while len(self._traces) > self.limit:
                self._traces.popitem(last=False)
        else:
            self._traces.move_to_end(key)
        if tr is False:
            return self.fn(*args)
        return tr(*present)

    def _trace(self, args, present):
        import warnings

        import torch

        slots = tuple(a is not None for a in args)

        def flat(*ts):
            it = iter(ts)
            return self.fn(*(next(it) if s else None for s in slots))

        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                return torch.jit.trace(flat, present, check_trace=False)
        except Exception:  # noqa: BLE001 - an untraceable signature runs eagerly
            return False
