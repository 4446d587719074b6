"""Template painting: find every place an image looks like a template and paint a shape there.

Four images, after Segmentatimg's template painting:

- *template* (h, w, 3): what to look for;
- *attention* (h, w) bool, optional: which template pixels count when matching;
- *segment* (h, w, 3): the paint put over a match;
- *mask* (h, w) bool, optional: which segment pixels are painted.

Derived when not given (:func:`derive_mask`): from the file's alpha channel when it has
one (alpha > 0), otherwise every pixel that is not pure black; an all-black result
falls back to all pixels. So a template / segment drawn on a transparent or black
background needs no extra files.

Matching is OpenCV's ``cv2.matchTemplate`` with the attention as its ``mask``
(``TM_CCOEFF_NORMED`` by default: the correlation of the mean-subtracted pixels, score 1 =
perfect, about 0 on plain background; ``TM_CCORR_NORMED`` without the mean subtraction,
which scores ~0.99 on any plain area of a similar colour; or ``TM_SQDIFF`` turned into a
similarity ``1 - sqdiff / (attended pixels * 3 * 255^2)``), then greedy non-maximum suppression:
the best remaining position is kept and every position whose box overlaps it with an
IoU above ``nms_iou`` is dropped, until no score reaches ``threshold``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from segdeck.core.errors import ImageError

#: Attended template pixels whose per-channel standard deviation stays below this (0..255
#: levels) are one flat colour: ``ccoeff_normed`` has nothing to correlate there.
FLAT_STD = 2.0


@dataclass(frozen=True)
class Match:
    """One match: box XYXY in image pixels (x1, y1 exclusive) and its score in [0, 1]."""

    x0: int
    y0: int
    x1: int
    y1: int
    score: float


@dataclass
class TemplateSpec:
    """The four template-painting images (RGB uint8 / bool) and matching settings."""

    template: np.ndarray
    segment: np.ndarray
    attention: np.ndarray | None = None
    mask: np.ndarray | None = None
    threshold: float = 0.9
    nms_iou: float = 0.1
    method: str = "ccoeff_normed"
    max_matches: int = 200


def derive_mask(rgba: np.ndarray) -> np.ndarray:
    """Which pixels of a template / segment image matter: alpha > 0 when there is an
    alpha channel, else not pure black; all pixels when that leaves none.

    Parameters
    ----------
    rgba : ndarray (h, w), (h, w, 3) or (h, w, 4), uint8

    Returns
    -------
    ndarray (h, w) bool
    """
    arr = np.asarray(rgba)
    if arr.ndim == 3 and arr.shape[2] == 4:
        m = arr[:, :, 3] > 0
    elif arr.ndim == 3:
        m = arr.any(axis=2)
    else:
        m = arr > 0
    return m if m.any() else np.ones(arr.shape[:2], bool)


def load_rgba(path: str | Path) -> np.ndarray:
    """Read a template-painting image keeping its alpha: (h, w, 3) or (h, w, 4) uint8 RGB(A).

    Raises
    ------
    ImageError
        Unreadable file.
    """
    from PIL import Image, ImageOps

    try:
        with Image.open(path) as im:
            im = ImageOps.exif_transpose(im)
            im = im.convert("RGBA") if im.mode in ("RGBA", "LA", "PA", "P") else im.convert("RGB")
            return np.asarray(im).copy()
    except FileNotFoundError:
        raise ImageError(path, "file not found") from None
    except Exception as exc:
        raise ImageError(path, str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None


def load_spec(template: str | Path, segment: str | Path | None = None, attention: str | Path | None = None,
              mask: str | Path | None = None, **settings) -> TemplateSpec:
    """Build a :class:`TemplateSpec` from files (segment defaults to the template itself).

    Raises
    ------
    ImageError
        Unreadable file. ValueError: sizes that differ.
    """
    t = load_rgba(template)
    s = load_rgba(segment) if segment else t
    att = derive_mask(load_rgba(attention)[..., :3]) if attention else derive_mask(t)
    m = derive_mask(load_rgba(mask)[..., :3]) if mask else derive_mask(s)
    spec = TemplateSpec(template=np.ascontiguousarray(t[..., :3]), segment=np.ascontiguousarray(s[..., :3]),
                        attention=att, mask=m, **settings)
    check_spec(spec)
    return spec


def check_spec(spec: TemplateSpec) -> None:
    h, w = spec.template.shape[:2]
    for name in ("segment", "attention", "mask"):
        arr = getattr(spec, name)
        if arr is not None and arr.shape[:2] != (h, w):
            raise ValueError(f"template painting: the {name} is {arr.shape[1]}x{arr.shape[0]}, the template {w}x{h}; they must match")


def _iou_map(w: int, h: int) -> np.ndarray:
    """IoU of a (w, h) box with the same box shifted by (dx, dy), for |dx| < w, |dy| < h."""
    dx = w - np.abs(np.arange(-w + 1, w))
    dy = h - np.abs(np.arange(-h + 1, h))
    inter = dy[:, None].astype(np.float64) * dx[None, :]
    return inter / (2.0 * w * h - inter)


def match_template(image: np.ndarray, template: np.ndarray, attention: np.ndarray | None = None, *,
                   threshold: float = 0.9, nms_iou: float = 0.1, method: str = "ccoeff_normed",
                   max_matches: int = 200) -> list[Match]:
    """Every place ``image`` matches ``template`` with a score >= ``threshold``, overlaps suppressed.

    Parameters
    ----------
    image : ndarray (H, W, 3) uint8 RGB
    template : ndarray (h, w, 3) uint8 RGB, h <= H, w <= W
    attention : ndarray (h, w) bool, optional
        Template pixels that count (all when None).
    threshold : float in [0, 1]
        Minimum score.
    nms_iou : float in [0, 1)
        Boxes overlapping a better match with an IoU above this are dropped (0 = no overlap at all).
    method : {"ccoeff_normed", "ccorr_normed", "sqdiff"}
        ``ccoeff_normed`` (default) is insensitive to brightness and contrast and
        scores plain background near 0; it needs attended template pixels that are not
        all one colour.
    max_matches : int

    Returns
    -------
    list of Match
        Best first; boxes XYXY.

    Raises
    ------
    ValueError
        Template larger than the image, unknown method, empty attention, or (for
        ``ccoeff_normed``) attended template pixels of one flat colour.
    """
    H, W = image.shape[:2]
    h, w = template.shape[:2]
    if h > H or w > W:
        raise ValueError(f"template {w}x{h} is larger than the image {W}x{H}")
    if attention is not None and not attention.any():
        raise ValueError("template painting: the attention mask selects no pixel")
    mask = None if attention is None else np.repeat(attention.astype(np.uint8)[:, :, None] * 255, 3, axis=2)
    if method == "ccoeff_normed":
        attended = template[attention] if attention is not None else template.reshape(-1, 3)
        if float(attended.astype(np.float32).std(axis=0).max()) < FLAT_STD:
            raise ValueError("template painting: the attended template pixels are one flat colour, which "
                             "matches every plain area of that colour; give an --attention that takes in some "
                             "of the template's surroundings or edges")
        res = cv2.matchTemplate(image, template, cv2.TM_CCOEFF_NORMED, mask=mask)
    elif method == "ccorr_normed":
        res = cv2.matchTemplate(image, template, cv2.TM_CCORR_NORMED, mask=mask)
    elif method == "sqdiff":
        raw = cv2.matchTemplate(image.astype(np.float32), template.astype(np.float32), cv2.TM_SQDIFF,
                                mask=None if mask is None else mask.astype(np.float32))
        n = (int(attention.sum()) if attention is not None else h * w) * 3 * 255.0**2
        res = 1.0 - raw / n
    else:
        raise ValueError(f"unknown template matching method {method!r} (ccoeff_normed, ccorr_normed, sqdiff)")
    res = np.nan_to_num(res.astype(np.float32), nan=-1.0, posinf=-1.0, neginf=-1.0)
    iou = _iou_map(w, h) > nms_iou
    out: list[Match] = []
    while len(out) < max_matches:
        _, best, _, (x, y) = cv2.minMaxLoc(res)
        if best < threshold:
            break
        out.append(Match(int(x), int(y), int(x + w), int(y + h), float(min(best, 1.0))))
        ry0, rx0 = y - h + 1, x - w + 1
        ya, xa = max(ry0, 0), max(rx0, 0)
        yb, xb = min(y + h, res.shape[0]), min(x + w, res.shape[1])
        sub = iou[ya - ry0 : yb - ry0, xa - rx0 : xb - rx0]
        res[ya:yb, xa:xb][sub] = -1.0
    return out


def segment_colours(segment: np.ndarray, mask: np.ndarray, palette: np.ndarray, current: int) -> np.ndarray:
    """Colour index per segment pixel: a pixel whose colour is a palette colour paints that
    label, any other masked pixel the current colour; unmasked pixels 0.

    Returns
    -------
    ndarray (h, w) uint8
    """
    out = np.where(mask, np.uint8(current), np.uint8(0)).astype(np.uint8)
    for k in range(1, len(palette)):
        hit = mask & np.all(segment == palette[k], axis=2)
        out[hit] = k
    return out


def template_paint(state, image: np.ndarray, spec: TemplateSpec, palette: np.ndarray,
                   work_pixels: int = 4_000_000) -> list[Match]:
    """Find the template in ``image`` and carve the painted segment into ``state`` at each match.

    Large images are matched at a reduced scale (at most ``work_pixels`` pixels, template
    scaled alike); boxes come back in full-resolution pixels.

    Parameters
    ----------
    state : PaintState
    image : ndarray (H, W, 3) uint8 RGB, the state's image
    spec : TemplateSpec
    palette : ndarray (K, 3) uint8 RGB

    Returns
    -------
    list of Match
        In full-resolution pixels.
    """
    check_spec(spec)
    H, W = image.shape[:2]
    f = min(1.0, (work_pixels / float(H * W)) ** 0.5)
    h, w = spec.template.shape[:2]
    att = spec.attention if spec.attention is not None else derive_mask(spec.template)
    if f < 1.0:
        small = cv2.resize(image, (max(1, round(W * f)), max(1, round(H * f))), interpolation=cv2.INTER_AREA)
        ts = (max(1, round(w * f)), max(1, round(h * f)))
        tpl = cv2.resize(spec.template, ts, interpolation=cv2.INTER_AREA)
        att_s = cv2.resize(att.astype(np.uint8), ts, interpolation=cv2.INTER_NEAREST).astype(bool)
    else:
        small, tpl, att_s = image, spec.template, att
    found = match_template(small, tpl, att_s if not att_s.all() else None, threshold=spec.threshold,
                           nms_iou=spec.nms_iou, method=spec.method, max_matches=spec.max_matches)
    colours = segment_colours(spec.segment, spec.mask if spec.mask is not None else derive_mask(spec.segment),
                              palette, state.colour)
    out = []
    since = len(state.undo_stack)
    for m in found:
        x0 = min(round(m.x0 / f), W - w) if f < 1.0 else m.x0
        y0 = min(round(m.y0 / f), H - h) if f < 1.0 else m.y0
        full = Match(int(x0), int(y0), int(x0 + w), int(y0 + h), m.score)
        state.paint_pixels((full.x0, full.y0, full.x1, full.y1), colours)
        out.append(full)
    state.group_undo(since)  # one template paint = one undo step
    return out
