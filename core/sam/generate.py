"""Automatic mask generation: the official SAM / SAM 2 generator algorithm
(Kirillov et al. 2023, arXiv:2304.02643, sec. 7.1 / appendix A; ``SAM2AutomaticMaskGenerator``
and ``segment_anything_hq.SamAutomaticMaskGenerator``) with the same parameters and
masks, arranged so that CPU time goes into the model and not into bookkeeping:

* the prompt-independent part of the decoder is computed once per crop, not once per
  point (:mod:`.fast`), and prompts are decoded in small sub-batches that stay in cache;
* the predicted-IoU filter runs on the 256x256 logits *before* upsampling, so only the
  masks that survive it are upsampled to full resolution (the official code upsamples
  all ``points_per_batch * 3`` masks first, then drops most of them);
* kept masks are stored bit-packed in crop coordinates instead of being encoded to RLE
  in Python and decoded again; only the masks that survive NMS are unpacked and pasted
  into the full image.

Every decision uses the same quantities in the same order as the official code
(predicted IoU > thresh, stability on the full-resolution logits >= thresh, crop-edge
filter, box NMS ordered by predicted IoU, crop NMS preferring smaller crops,
small-region post-processing), so the kept masks are the same.
"""

from __future__ import annotations

import numpy as np

from segdeck.core.sam.params import GeneratorParams

#: Prompts decoded together inside one ``points_per_batch`` batch (cache-friendly size;
#: does not change results).
DECODE_CHUNK = 4
#: Full-resolution logits materialised at once (masks), bounds memory.
UPSAMPLE_CHUNK = 24


def _fill_small_lowres(low, min_area: int, thr: float):
    """SAM 2's ``max_hole_area`` / ``max_sprinkle_area`` post-processing of low-res logits:
    8-connected background components of area <= ``min_area`` become foreground
    (``thr + 10``), foreground components of area <= ``min_area`` background (``thr - 10``),
    both found on the input logits. (M, h, w) float tensor -> new tensor."""
    import cv2
    import torch

    arr = low.detach().cpu().numpy()
    out = arr.copy()
    for i in range(arr.shape[0]):
        fg = (arr[i] > thr).astype(np.uint8)
        for mask_u8, value in ((1 - fg, thr + 10.0), (fg, thr - 10.0)):
            n, lab, stats, _ = cv2.connectedComponentsWithStats(mask_u8, connectivity=8)
            if n <= 1:
                continue
            small = np.flatnonzero(stats[1:, cv2.CC_STAT_AREA] <= min_area) + 1
            if small.size:
                out[i][np.isin(lab, small)] = value
    return torch.from_numpy(out).to(low.device)


def _decode_points(eng, state, in_points, multimask: bool, hq_token_only: bool, mask_input=None):
    """Decode (B, 2) model-frame points -> low-res logits (B, M, 256, 256), iou (B, M)."""
    import torch

    lows, ious = [], []
    for s in range(0, in_points.shape[0], DECODE_CHUNK):
        pts = in_points[s : s + DECODE_CHUNK]
        coords = pts[:, None, :]
        labels = torch.ones((pts.shape[0], 1), dtype=torch.int, device=pts.device)
        mi = None if mask_input is None else mask_input[s : s + DECODE_CHUNK]
        sparse, dense = eng._prompt_embed(coords, labels, masks=mi)
        masks, iou = eng._decode(state, sparse, dense)
        masks, iou = eng._select(masks, iou, multimask, hq_token_only)
        lows.append(masks)
        ious.append(iou)
    return torch.cat(lows), torch.cat(ious)


def _process_crop(eng, image, crop_box, layer_idx, orig_size, grids, p: GeneratorParams, out: dict):
    import torch
    from sam2.utils.amg import batched_mask_to_box, calculate_stability_score, is_box_near_crop_edge
    from torchvision.ops.boxes import batched_nms

    x0, y0, x1, y1 = crop_box
    crop = np.ascontiguousarray(image[y0:y1, x0:x1])
    ch, cw = crop.shape[:2]
    key = eng.image_key(crop)
    feats = eng.cache.get(key)
    if feats is None:
        feats = eng._encode(crop)
    state = eng._make_state("", (ch, cw), feats)
    points_for_image = grids[layer_idx] * np.array([[cw, ch]])
    orig_h, orig_w = orig_size
    family = eng.family_entry  # its generator quirks (m2m, where small regions are removed)
    multimask = p.multimask_output
    min_area = p.min_mask_region_area

    boxes_l, ious_l, stab_l, pts_l, packed_l = [], [], [], [], []
    for s in range(0, len(points_for_image), p.points_per_batch):
        pts = points_for_image[s : s + p.points_per_batch].astype(np.float32)
        in_pts = torch.as_tensor(eng.transform_points(state, pts), device=eng.device)
        low, iou = _decode_points(eng, state, in_pts, multimask, p.hq_token_only)
        m_per = low.shape[1]
        low = low.flatten(0, 1)
        iou = iou.flatten(0, 1)
        pts_rep = np.repeat(pts, m_per, axis=0)
        if family.m2m and p.use_m2m:
            # official: refine every mask (clamped low-res logits as mask input), then filter
            mi = torch.clamp(low, -32.0, 32.0)[:, None]
            in_rep = torch.as_tensor(eng.transform_points(state, pts_rep), device=eng.device)
            low, iou = _decode_points(eng, state, in_rep, False, False, mask_input=mi)
            low, iou = low[:, 0], iou[:, 0]
        if p.pred_iou_thresh > 0.0:
            keep = iou > p.pred_iou_thresh
            low, iou, pts_rep = low[keep], iou[keep], pts_rep[keep.cpu().numpy()]
        if low.shape[0] == 0:
            continue
        if family.small_regions == "lowres" and min_area > 0:
            low = _fill_small_lowres(low, min_area, p.mask_threshold)
        for u in range(0, low.shape[0], UPSAMPLE_CHUNK):
            logits = eng._upsample(state, low[u : u + UPSAMPLE_CHUNK][:, None])[:, 0]
            thr = p.mask_threshold
            stab = calculate_stability_score(logits, thr, p.stability_score_offset)
            sel_iou = iou[u : u + UPSAMPLE_CHUNK]
            sel_pts = pts_rep[u : u + UPSAMPLE_CHUNK]
            if p.stability_score_thresh > 0.0:
                keep = stab >= p.stability_score_thresh
                logits, stab, sel_iou = logits[keep], stab[keep], sel_iou[keep]
                sel_pts = sel_pts[keep.cpu().numpy()]
            if logits.shape[0] == 0:
                continue
            masks = logits > thr
            del logits
            boxes = batched_mask_to_box(masks)
            keep = ~is_box_near_crop_edge(boxes, list(crop_box), [0, 0, orig_w, orig_h])
            if not torch.all(keep):
                masks, boxes, stab, sel_iou = masks[keep], boxes[keep], stab[keep], sel_iou[keep]
                sel_pts = sel_pts[keep.cpu().numpy()]
            if masks.shape[0] == 0:
                continue
            packed_l.append(np.packbits(masks.reshape(masks.shape[0], -1).cpu().numpy(), axis=1))
            boxes_l.append(boxes)
            ious_l.append(sel_iou.float())
            stab_l.append(stab.float())
            pts_l.append(sel_pts)
    if not boxes_l:
        return
    boxes = torch.cat(boxes_l)
    ious = torch.cat(ious_l)
    keep = batched_nms(boxes.float(), ious, torch.zeros_like(boxes[:, 0]), iou_threshold=p.box_nms_thresh)
    keep_np = keep.cpu().numpy()
    packed = np.concatenate(packed_l)[keep_np]
    off = torch.tensor([[x0, y0, x0, y0]], device=boxes.device)
    out["boxes"].append((boxes[keep] + off).cpu().numpy().astype(np.int64))
    out["ious"].append(ious[keep].cpu().numpy())
    out["stab"].append(torch.cat(stab_l)[keep].cpu().numpy())
    out["points"].append(np.concatenate(pts_l)[keep_np] + np.array([[x0, y0]], np.float32))
    out["crop_boxes"].append(np.tile(np.array([crop_box], np.int64), (len(keep_np), 1)))
    out["packed"].append(packed)
    out["crop_index"].append(np.full(len(keep_np), len(out["crops"]), np.int64))
    out["crops"].append((x0, y0, cw, ch))


def _postprocess_small_regions(masks: np.ndarray, boxes: np.ndarray, min_area: int, nms_thresh: float):
    """SAM-HQ / SAM: remove holes and islands < ``min_area`` in each full-res mask, then
    box NMS preferring unchanged masks (official ``postprocess_small_regions``)."""
    import torch
    from sam2.utils.amg import batched_mask_to_box, remove_small_regions
    from torchvision.ops.boxes import batched_nms

    if len(masks) == 0:
        return np.zeros(0, np.int64), masks, boxes
    new, scores = [], []
    for m in masks:
        m2, changed1 = remove_small_regions(m, min_area, mode="holes")
        m2, changed2 = remove_small_regions(m2, min_area, mode="islands")
        new.append(m2)
        scores.append(float(not (changed1 or changed2)))
    new_t = torch.as_tensor(np.stack(new))
    new_boxes = batched_mask_to_box(new_t)
    keep = batched_nms(new_boxes.float(), torch.as_tensor(scores), torch.zeros_like(new_boxes[:, 0]), iou_threshold=nms_thresh)
    keep = keep.numpy()
    out_masks = masks.copy()
    out_boxes = boxes.copy()
    for i in keep:
        if scores[i] == 0.0:
            out_masks[i] = new[i]
            out_boxes[i] = new_boxes[i].numpy()
    return keep, out_masks, out_boxes


def generate(eng, image: np.ndarray, p: GeneratorParams):
    """See :meth:`segdeck.core.sam.engine.SamEngine.generate`."""
    import torch
    from sam2.utils.amg import build_all_layer_point_grids, generate_crop_boxes
    from torchvision.ops.boxes import batched_nms

    from segdeck.core.sam.engine import GenerateResult

    H, W = image.shape[:2]
    p = p.for_family(eng.family)  # family defaults (SAM 2 pred_iou_thresh 0.8, SAM-HQ 0.88)
    grids = p.grids() or build_all_layer_point_grids(p.points_per_side, p.crop_n_layers, p.crop_n_points_downscale_factor)
    crop_boxes, layer_idxs = generate_crop_boxes((H, W), p.crop_n_layers, p.crop_overlap_ratio)
    out = {k: [] for k in ("boxes", "ious", "stab", "points", "crop_boxes", "packed", "crop_index", "crops")}
    for crop_box, layer_idx in zip(crop_boxes, layer_idxs, strict=True):
        _process_crop(eng, image, crop_box, layer_idx, (H, W), grids, p, out)
    if not out["boxes"]:
        z = np.zeros
        return GenerateResult(z((0, H, W), bool), z(0, np.float32), z(0, np.float32), z((0, 4), np.int64),
                              z((0, 2), np.float32), z((0, 4), np.int64))
    boxes = np.concatenate(out["boxes"])
    ious = np.concatenate(out["ious"]).astype(np.float32)
    stab = np.concatenate(out["stab"]).astype(np.float32)
    points = np.concatenate(out["points"]).astype(np.float32)
    cboxes = np.concatenate(out["crop_boxes"])
    crop_index = np.concatenate(out["crop_index"])
    packed = [row for block in out["packed"] for row in block]
    order = np.arange(len(boxes))
    if len(crop_boxes) > 1:
        cb = torch.as_tensor(cboxes).float()
        scores = 1 / ((cb[:, 2] - cb[:, 0]) * (cb[:, 3] - cb[:, 1]))
        bt = torch.as_tensor(boxes)
        order = batched_nms(bt.float(), scores, torch.zeros_like(bt[:, 0]), iou_threshold=p.crop_nms_thresh).numpy()
    masks = np.zeros((len(order), H, W), bool)
    for j, i in enumerate(order):
        x0, y0, cw, ch = out["crops"][crop_index[i]]
        m = np.unpackbits(packed[i], count=ch * cw).reshape(ch, cw).astype(bool)
        masks[j, y0 : y0 + ch, x0 : x0 + cw] = m
    boxes, ious, stab, points, cboxes = boxes[order], ious[order], stab[order], points[order], cboxes[order]
    if p.min_mask_region_area > 0 and eng.family_entry.small_regions == "fullres":
        keep, masks, boxes = _postprocess_small_regions(masks, boxes, p.min_mask_region_area, p.box_nms_thresh)
        masks, boxes, ious, stab, points, cboxes = masks[keep], boxes[keep], ious[keep], stab[keep], points[keep], cboxes[keep]
    return GenerateResult(masks, ious, stab, boxes.astype(np.int64), points, cboxes.astype(np.int64))
