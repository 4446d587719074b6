"""Group propagation engine (core/sam/video.py) against the official SAM 2 video predictor.

A random-weight SAM 2.1-tiny is saved in the official layout, registered with its sha256
and loaded through the real path (``open_propagator`` -> ``ensure_model`` -> strict load).
The official ``SAM2VideoPredictor`` is driven the official way (``init_state`` /
``add_new_mask`` / ``propagate_in_video``) on the video [references..., target], fed the
same frame tensors through the module-level ``load_video_frames`` seam that ``init_state``
calls. Most tests run at input size 256 (random weights make the size free); one runs at
the real 1024. Mask quality is never checked, only agreement.
"""

from __future__ import annotations

from unittest import mock

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("sam2")

from segdeck.core.errors import SetupError  # noqa: E402

pytestmark = pytest.mark.slow

IDS = (7, 300)


def _photo(h: int, w: int, shift: int) -> np.ndarray:
    import cv2
    import skimage.data

    base = np.roll(skimage.data.astronaut(), shift, axis=1)
    return np.ascontiguousarray(cv2.resize(base, (w, h), interpolation=cv2.INTER_AREA))


def _references() -> list[tuple[np.ndarray, np.ndarray]]:
    """Three references of different sizes, uint16 label maps with ids 7 and 300;
    id 7 is absent from the last one."""
    refs = []
    for k, (h, w) in enumerate(((120, 160), (130, 150), (110, 170))):
        img = _photo(h, w, 7 * k)
        lab = np.zeros((h, w), np.uint16)
        lab[20:70, 30:90] = IDS[0]
        lab[60:105, 95:145] = IDS[1]
        if k == 2:
            lab[lab == IDS[0]] = 0
        refs.append((img, lab))
    return refs


#: Targets of mixed sizes (H, W): landscape, portrait, square.
TARGETS = [_photo(100, 140, 3), _photo(150, 96, 19), _photo(90, 90, 41)]


@pytest.fixture(scope="module")
def env(tmp_path_factory):
    from test_sam import random_models

    with random_models(tmp_path_factory.mktemp("models"), ["sam2.1-tiny"]) as paths:
        yield paths["sam2.1-tiny"]


@pytest.fixture(scope="module")
def group(env):
    """A propagator at S = 256 with the references set, and its one-by-one predictions."""
    from segdeck.core.sam.video import open_propagator

    prop = open_propagator("sam2.1-tiny", "cpu", image_size=256)
    ids = prop.set_references(_references())
    singles = [prop.predict([t])[0] for t in TARGETS]
    return prop, ids, singles


def _official_label_map(prop, refs, target, ids) -> tuple[np.ndarray, np.ndarray]:
    """The official predictor on the video [refs..., target]: returns the target's
    (O, H, W) logits at its size and their label map (argmax where > 0)."""
    import sam2.sam2_video_predictor as svp

    model = prop.model  # the SAM2VideoPredictor built by the family builder
    frames = torch.stack([prop.frame_tensor(img) for img, _ in refs] + [prop.frame_tensor(target)])
    h, w = target.shape[:2]

    def load_video_frames(**kwargs):
        assert kwargs["image_size"] == prop.image_size
        return frames, h, w

    with mock.patch.object(svp, "load_video_frames", load_video_frames):
        state = model.init_state(video_path="<frames in memory>")
    for k, (_, lab) in enumerate(refs):
        for oid in ids:
            model.add_new_mask(state, frame_idx=k, obj_id=oid, mask=lab == oid)
    last = None
    for frame_idx, obj_ids, masks in model.propagate_in_video(state):
        assert list(obj_ids) == list(ids)
        if frame_idx == len(refs):
            last = masks[:, 0].numpy()
    assert last is not None and last.shape == (len(ids), h, w)
    best, arg = last.max(0), last.argmax(0)
    return last, np.where(best > 0, np.asarray(ids)[arg], 0)


def _iou(a, b) -> float:
    a, b = np.asarray(a, bool), np.asarray(b, bool)
    union = (a | b).sum()
    return 1.0 if union == 0 else float((a & b).sum() / union)


def test_each_target_equals_the_official_video_predictor(group):
    prop, ids, singles = group
    refs = _references()
    assert ids == list(IDS) and prop.object_ids == list(IDS) and prop.num_references == 3
    assert prop.model.fill_hole_area == 0
    # the portrait target (the references are landscape): one official run costs ten
    # image-encoder passes, so one target here; the 1024 test below checks another
    target, ours = TARGETS[1], singles[1]
    _, official = _official_label_map(prop, refs, target, ids)
    assert ours.shape == target.shape[:2] and ours.dtype == np.int32
    for oid in ids:
        assert (official == oid).any()
        assert _iou(ours == oid, official == oid) >= 0.999, oid
    assert _iou(ours > 0, official > 0) >= 0.999


def test_mixed_sizes_come_back_at_their_own_size(group):
    _, _, singles = group
    assert [m.shape for m in singles] == [t.shape[:2] for t in TARGETS]
    assert all(m.dtype == np.int32 for m in singles)
    # both ids (one of them above uint8) come back as themselves, not as indices
    assert set(np.unique(np.concatenate([m.ravel() for m in singles])).tolist()) == {0, *IDS}


def test_order_and_batching_do_not_change_results(group):
    prop, _, singles = group
    # one batched forward pass, reversed order: TARGETS[0] now comes after the others
    # and must still be bit-identical (the slot keeps nothing between targets)
    batched_reversed = prop.predict(TARGETS[::-1])[::-1]
    for a, b in zip(singles, batched_reversed, strict=True):
        assert np.array_equal(a, b)


def test_state_does_not_grow_with_targets(group):
    prop, _, _ = group
    state = prop._state

    def stored():
        return sorted(
            (obj, kind, t)
            for obj, d in state["output_dict_per_obj"].items()
            for kind in ("cond_frame_outputs", "non_cond_frame_outputs")
            for t in d[kind]
        )

    # the fixture predicted three targets: only the references' outputs are kept
    assert stored() == sorted((o, "cond_frame_outputs", k) for o in range(len(IDS)) for k in range(3))
    assert state["cached_features"] == {}
    assert len(prop._frames) == 4  # references + one slot


def test_bad_references_and_calls(env):
    from segdeck.core.sam.video import open_propagator

    prop = open_propagator("sam2.1-tiny", "cpu", image_size=256)  # the cached network
    img = _photo(40, 50, 0)
    with pytest.raises(RuntimeError, match="set_references"):
        prop.predict([img])
    with pytest.raises(ValueError, match="no reference holds any object"):
        prop.set_references([(img, np.zeros((40, 50), np.uint8)), (img, np.zeros((40, 50), np.uint16))])
    with pytest.raises(ValueError, match="no reference images"):
        prop.set_references([])
    with pytest.raises(ValueError, match="label map is 49x40 but its image is 50x40"):
        prop.set_references([(img, np.ones((40, 49), np.uint8))])
    with pytest.raises(ValueError, match="integer"):
        prop.set_references([(img, np.ones((40, 50), np.float32))])
    with pytest.raises(ValueError, match="does not fit"):
        prop.set_references([(img, np.full((40, 50), 2**31, np.int64))])
    with pytest.raises(ValueError, match="negative"):
        prop.set_references([(img, np.full((40, 50), -1, np.int16))])
    with pytest.raises(ValueError, match="uint8 RGB"):
        prop.set_references([(img[..., 0], np.ones((40, 50), np.uint8))])
    with pytest.raises(ValueError, match="multiple of 64"):
        open_propagator("sam2.1-tiny", "cpu", image_size=100)


def test_missing_or_wrong_model_is_one_line(env):
    from segdeck.core.sam.video import open_propagator

    with pytest.raises(SetupError) as err:
        open_propagator("sam2.1-small", "cpu", image_size=256, download=False)
    assert "\n" not in str(err.value) and "sam2.1-small" in str(err.value)
    with pytest.raises(SetupError, match="video predictor") as err:
        open_propagator("sam-hq-vit_tiny", "cpu")
    assert "\n" not in str(err.value)
    with pytest.raises(SetupError, match="not found"):
        open_propagator("sam2.1-tiny", "cpu", checkpoint=env.parent / "nope.pt")


def test_real_input_size_1024_matches_official(env):
    """The contract at the config's own size (1024), weights given as ``checkpoint=``:
    one reference with one object, one target of another size and aspect ratio."""
    from segdeck.core.sam.video import open_propagator

    prop = open_propagator("sam2.1-tiny", "cpu", checkpoint=env)
    assert prop.image_size == 1024
    ref = _photo(64, 96, 0)
    lab = np.zeros((64, 96), np.uint16)
    lab[10:40, 20:60] = 300
    assert prop.set_references([(ref, lab)]) == [300]
    target = _photo(72, 60, 23)
    (ours,) = prop.predict([target])
    _, official = _official_label_map(prop, [(ref, lab)], target, [300])
    assert ours.shape == (72, 60)
    assert _iou(ours == 300, official == 300) >= 0.999
    prop.close()
    with pytest.raises(RuntimeError):
        prop.predict([target])
