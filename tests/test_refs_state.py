"""The reference-labelling state machine without a display: candidate selection, typed
object IDs, point prompts, saves through the project's ReferenceStore, seeded swaps,
per-group progress, the on-disk candidate cache."""

from __future__ import annotations

import json

import cv2
import numpy as np

from segdeck.annotate.keymap import load_keymap
from segdeck.annotate.refs import (
    Candidate,
    CandidateSource,
    ProjectRefs,
    Reference,
    RefImage,
    RefsState,
    make_loader,
)
from segdeck.annotate.state import Outcome

KM = load_keymap("default", user_file=False)
H, W = 30, 40


def masks_big_small():
    """Candidate 0: big (rows 0..19, every column); 1: small inside it (rows 5..9, cols 5..9);
    2: elsewhere (rows 25..29, cols 30..39)."""
    big = np.zeros((H, W), bool)
    big[:20] = True
    small = np.zeros((H, W), bool)
    small[5:10, 5:10] = True
    other = np.zeros((H, W), bool)
    other[25:, 30:] = True
    return np.stack([big, small, other])


class Sink:
    """A ReferenceSink that keeps what it is given."""

    def __init__(self):
        self.saved: dict[tuple[str, str], tuple[np.ndarray, list[int]]] = {}

    def save(self, group, key, label_map, ids):
        self.saved[(group, key)] = (label_map.copy(), list(ids))
        return f"/refs/{group}/{key}.png"

    def labelled(self, group):
        return [k for g, k in self.saved if g == group]


def make_state(refs=None, full_size=None, engine=None, sink=None, swap=None):
    refs = refs or [Reference("g1", "a", "a.png"), Reference("g1", "b", "b.png"), Reference("g2", "c", "c.png")]
    img = np.full((H, W, 3), 90, np.uint8)
    events = []

    def load(ref):
        return RefImage.build(ref, img, masks_big_small(), full_size=full_size)

    st = RefsState(refs, load, sink or Sink(), engine=engine, keymap=KM, report=events.append, swap=swap)
    st.ensure_loaded()
    st.events = events
    return st


def click(st, x, y, button="left", ctrl=False):
    return st.mouse("down", button, x, y, ctrl)


def key(st, name):
    codes = {"enter": 13, "tab": 9, "space": 32, "backspace": 8}
    return st.key(codes[name] if name in codes else ord(name))


def test_click_selects_the_smallest_candidate_and_again_deselects():
    st = make_state()
    click(st, 7, 7)  # inside big and small: the small one
    assert st.selected == 1
    click(st, 8, 6)  # the selected candidate again: deselect
    assert st.selected is None
    click(st, 30, 15)  # only the big one
    assert st.selected == 0
    click(st, 35, 27)  # another candidate: selected instead
    assert st.selected == 2
    click(st, 20, 22)  # no candidate: nothing selected
    assert st.selected is None and "no candidate" in st.message
    st.mouse("move", None, 7, 7)
    key(st, "tab")  # the smallest under the pointer, then the next larger, then around
    assert st.selected == 1
    key(st, "tab")
    assert st.selected == 0
    key(st, "tab")
    assert st.selected == 1


def test_typed_ids_single_digit_multi_digit_enter_and_limits():
    st = make_state()
    key(st, "3")
    assert st.current.ids == {} and "select a mask first" in st.message
    click(st, 7, 7)
    key(st, "4")
    assert st.current.ids == {1: 4} and st.current.unsaved  # 1-9 at once
    key(st, "2")
    key(st, "0")  # 0 extends an ID being typed (it is zoom_fit otherwise)
    assert st.current.ids == {1: 420} and st.typing == "420"
    key(st, "enter")
    assert st.typing is None
    key(st, "0")  # not typing: the view's key, the ID stays
    assert st.current.ids == {1: 420}
    key(st, "7")  # a new ID replaces the old one
    assert st.current.ids == {1: 7}
    click(st, 30, 15)  # selecting another mask ends the typing
    key(st, "1")
    key(st, "2")
    assert st.current.ids == {1: 7, 0: 12}
    key(st, "enter")
    for d in "65536":  # above 65535: the last digit is refused
        key(st, d)
    assert st.current.ids[0] == 6553 and "65535" in st.message
    key(st, "enter")
    key(st, "backspace")
    assert st.current.ids == {1: 7}


def test_save_writes_the_ids_on_exactly_the_candidates_pixels():
    sink = Sink()
    st = make_state(sink=sink)
    click(st, 30, 15)
    key(st, "2")  # big: 2
    click(st, 7, 7)
    key(st, "5")  # small inside it: 5 (drawn over the big one)
    assert st.progress() == "group g1: 0/2 references labelled"
    key(st, "space")
    lm, ids = sink.saved[("g1", "a")]
    masks = masks_big_small()
    assert lm.dtype == np.uint8 and lm.shape == (H, W) and ids == [2, 5]
    assert (lm[masks[1]] == 5).all()
    assert (lm[masks[0] & ~masks[1]] == 2).all()
    assert (lm[~masks[0]] == 0).all()
    assert st.index == 1 and not st.images[st.refs[0]].unsaved  # save moves on
    ev = st.events[-1]
    assert ev["event"] == "saved" and ev["kind"] == "reference" and ev["key"] == "a" and ev["ids"] == [2, 5]
    assert ev["progress"] == "group g1: 1/2 references labelled" == st.progress("g1")
    assert st.progress("g2") == "group g2: 0/1 references labelled"
    st.ensure_loaded()
    key(st, "space")  # nothing with an ID: not saved
    assert ("g1", "b") not in sink.saved and "nothing to save" in st.message


def test_save_at_full_size_and_uint16_above_255():
    sink = Sink()
    st = make_state(sink=sink, full_size=(2 * W, 2 * H))  # the photo is twice the working image
    click(st, 35, 27)
    for d in "300":
        key(st, d)
    key(st, "space")
    lm, ids = sink.saved[("g1", "a")]
    assert lm.shape == (2 * H, 2 * W) and lm.dtype == np.uint16 and ids == [300]
    big = cv2.resize(masks_big_small()[2].astype(np.uint8), (2 * W, 2 * H), interpolation=cv2.INTER_NEAREST) > 0
    assert (lm[big] == 300).all() and (lm[~big] == 0).all()


def test_quit_asks_about_unsaved_references_and_navigation_keeps_labels():
    st = make_state()
    key(st, "q")
    assert st.outcome is Outcome.QUIT  # nothing unsaved: at once
    st = make_state()
    click(st, 7, 7)
    key(st, "1")
    key(st, "n")
    st.ensure_loaded()
    key(st, "p")
    assert st.index == 0 and st.current.ids == {1: 1}  # kept in memory while the window runs
    key(st, "q")
    assert st.outcome is None and "1 unsaved reference(s)" in st.message
    click(st, 7, 7)  # anything else cancels the question
    key(st, "q")
    assert st.outcome is None
    key(st, "q")
    assert st.outcome is Outcome.QUIT


class FakeEngine:
    """Masks from prompts: a 5x5 square per positive point, cleared around negative ones,
    clipped to the box when one is given."""

    def __init__(self):
        self.calls = []

    def set_image(self, image):
        self.shape = image.shape[:2]

    def predict(self, points=None, labels=None, box=None, multimask=False):
        self.calls.append((None if points is None else points.tolist(), None if box is None else box.tolist()))
        m = np.zeros(self.shape, bool)
        for (x, y), lab in zip(points, labels, strict=True):
            if lab == 1:
                m[max(int(y) - 2, 0) : int(y) + 3, max(int(x) - 2, 0) : int(x) + 3] = True
        for (x, y), lab in zip(points, labels, strict=True):
            if lab == 0:
                m[max(int(y) - 1, 0) : int(y) + 2, max(int(x) - 1, 0) : int(x) + 2] = False
        if box is not None:
            x0, y0, x1, y1 = (int(v) for v in box)
            clip = np.zeros_like(m)
            clip[y0 : y1 + 1, x0 : x1 + 1] = True
            m &= clip
        return type("R", (), {"masks": m[None], "scores": np.ones(1, np.float32)})()


def test_point_prompts_add_and_refine_masks():
    eng = FakeEngine()
    st = make_state(engine=eng)
    click(st, 20, 25, button="right")  # negative with nothing selected: refused
    assert not eng.calls and "positive point" in st.message
    click(st, 20, 25, button="left", ctrl=True)  # positive, nothing selected: a new mask
    new = len(st.current.candidates) - 1
    assert st.selected == new and st.current.candidates[new].mask[25, 20] and st.current.candidates[new].area == 25
    key(st, "8")
    click(st, 20, 25, button="right")  # negative: refines the selected mask
    assert not st.current.candidates[new].mask[25, 20] and st.current.candidates[new].area == 16
    key(st, "z")
    assert st.current.candidates[new].area == 25
    key(st, "z")  # the first point of a prompted mask: the mask goes, with its ID
    assert len(st.current.candidates) == new and st.selected is None and 8 not in st.current.ids.values()
    click(st, 7, 7)  # refine an automatic candidate: its box is the box prompt
    click(st, 8, 8, button="middle")
    assert eng.calls[-1][1] == [5.0, 5.0, 9.0, 9.0]
    key(st, "z")
    assert (st.current.candidates[1].mask == masks_big_small()[1]).all()  # back to the candidate


def write_project(tmp_path, n_per_group=4, references=2):
    root = tmp_path / "imgs"
    root.mkdir()
    lines = ["id,specimen,file"]
    for g in ("s1", "s2"):
        for k in range(n_per_group):
            name = f"{g}_{k}.png"
            img = np.full((24, 32, 3), 40 + 10 * k, np.uint8)
            cv2.imwrite(str(root / name), img)
            lines.append(f"{g}-{k},{g},{name}")
    (tmp_path / "meta.csv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    spec = tmp_path / "proj.toml"
    spec.write_text(f'csv = "meta.csv"\nkey = "id"\npath = "file"\ngroup_by = ["specimen"]\nroot = "imgs"\n'
                    f"references = {references}\nseed = 3\n", encoding="utf-8")
    return spec


def test_project_references_swap_is_seeded_recorded_and_saves_land_in_the_store(tmp_path):
    from segdeck.core.propagate import load_project

    spec = write_project(tmp_path)
    pr = ProjectRefs(load_project(spec))
    refs = pr.references()
    assert [r.group for r in refs] == ["specimen=s1"] * 2 + ["specimen=s2"] * 2
    assert refs == ProjectRefs(load_project(spec)).references()  # same seed, same references
    one = m = np.zeros((24, 32), bool)
    m[2:6, 3:9] = True

    def load(ref):
        return RefImage.build(ref, cv2.imread(str(ref.path))[:, :, ::-1], one[None])

    st = RefsState(refs, load, pr, swap=pr.swap, keymap=KM, report=lambda e: None)
    st.ensure_loaded()
    click(st, 4, 3)
    key(st, "9")
    key(st, "space")
    group = pr.group("specimen=s1")
    lm, entry = pr.store.load(group, refs[0].key)
    assert (lm == np.where(m, 9, 0)).all() and entry.ids == (9,)
    assert st.progress("specimen=s1") == "group specimen=s1: 1/2 references labelled"
    # swap the first reference (it has IDs: asked first), then the second
    st.goto(0)
    key(st, "s")
    assert st.refs[0] == refs[0] and "again" in st.message
    key(st, "s")
    first = st.refs[0]
    assert first != refs[0] and first.group == refs[0].group and first.key not in {r.key for r in refs}
    assert pr.store.entry(group, refs[0].key) is None  # a swapped-out reference is no reference any more
    assert st.progress("specimen=s1") == "group specimen=s1: 0/2 references labelled"
    # the same swaps in a fresh session over a fresh copy give the same images
    other = tmp_path / "copy"
    other.mkdir()
    spec2 = write_project(other)
    pr2 = ProjectRefs(load_project(spec2))
    again = pr2.swap(pr2.references()[0], pr2.references()[:2])
    assert again.key == first.key
    # reopening the project shows the swapped list
    reopened = ProjectRefs(load_project(spec)).references()
    assert reopened[0].key == first.key and reopened[1].key == refs[1].key
    chosen = json.loads((pr.store.refs_dir / group.slug / "references.json").read_text())
    assert chosen["keys"][0] == first.key and chosen["turn"] == 1


def test_swap_in_a_group_without_other_images_says_so(tmp_path):
    from segdeck.core.propagate import load_project

    pr = ProjectRefs(load_project(write_project(tmp_path, n_per_group=2, references=2)))
    st = RefsState(pr.references(), lambda r: RefImage.failed(r, "x"), pr, swap=pr.swap, keymap=KM)
    key(st, "s")
    assert "no other image" in st.message and st.refs == pr.references()


class CountingEngine:
    def __init__(self):
        self.generated = 0

    def image_key(self, image):
        return str(hash(image.tobytes()))

    def generate(self, image, params=None):
        self.generated += 1
        return type("G", (), {"masks": masks_big_small()})()


def test_candidates_are_cached_on_disk_and_saved_labels_come_back(tmp_path):
    from segdeck.core import imageio

    img = np.full((H, W, 3), 90, np.uint8)
    imageio.write_image(tmp_path / "a.png", img)
    eng = CountingEngine()
    cache = tmp_path / "cache"
    first = CandidateSource(eng, None, cache).masks(img)
    again = CandidateSource(eng, None, cache).masks(img)  # a new session: from the disk
    assert eng.generated == 1 and (first == again).all() and len(list(cache.glob("*.npz"))) == 1
    saved = np.zeros((H, W), np.uint16)
    saved[0:3, 0:3] = 12
    ref = Reference("g", "a", tmp_path / "a.png")
    loaded = make_loader(CandidateSource(eng, None, cache), lambda r: saved, max_side=1024)(ref)
    assert loaded.ids == {0: 12} and (loaded.candidates[0].mask == (saved == 12)).all()
    assert len(loaded.candidates) == 4 and not loaded.unsaved and eng.generated == 1
    bad = make_loader(None)(Reference("g", "x", tmp_path / "missing.png"))
    assert bad.error and "missing.png" in bad.error


def test_cli_bad_spec_and_missing_display_are_one_line_exit_2(tmp_path):
    import os
    import subprocess
    import sys

    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "QT_QPA_PLATFORM")}
    spec = write_project(tmp_path)
    bad = tmp_path / "bad.toml"
    bad.write_text('csv = "meta.csv"\nkey = "nope"\npath = "file"\nroot = "imgs"\n', encoding="utf-8")
    for args, expect in (([str(spec)], "no display"), ([str(bad)], "column 'nope'"),
                         ([str(spec), "--set", "points_per_side=0"], "points_per_side")):
        r = subprocess.run([sys.executable, "-m", "segdeck", "annotate", "refs", *args], env=env,
                           capture_output=True, text=True, timeout=120)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        assert r.returncode == 2 and len(lines) == 1 and expect in lines[0], r.stderr


def test_far_saved_references_are_unloaded_unsaved_ones_kept():
    refs = [Reference("g", f"k{i}", f"{i}.png") for i in range(12)]
    loads = []
    img = np.full((H, W, 3), 90, np.uint8)

    def load(ref):
        loads.append(ref.key)
        return RefImage.build(ref, img, masks_big_small())

    st = RefsState(refs, load, Sink(), keymap=KM)
    st.ensure_loaded()
    click(st, 7, 7)
    key(st, "3")  # k0 unsaved: kept whatever happens
    for _ in range(11):
        key(st, "n")
        st.ensure_loaded()
    assert refs[0] in st.images and st.images[refs[0]].ids == {1: 3}
    assert len(st.images) <= 1 + 2 + RefsState.KEEP_LOADED
    assert refs[5] not in st.images  # far and clean: unloaded, loaded again when shown
    st.goto(5)
    st.ensure_loaded()
    assert loads.count("k5") == 2


def test_exif_rotated_reference_is_labelled_upright_at_full_size(tmp_path):
    """A JPEG with EXIF orientation 6 (stored 40x30, shown 30x40): the working image and
    the saved label map are upright; a large photo works at max_side, saves at full size."""
    from PIL import Image

    arr = np.zeros((30, 40, 3), np.uint8)
    arr[:, :10] = 255  # stored: the left 10 columns white -> upright: the top 10 rows
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.fromarray(arr).save(tmp_path / "r.jpg", exif=exif.tobytes(), quality=95)
    ref = Reference("g", "r", tmp_path / "r.jpg")
    img = make_loader(None, max_side=20)(ref)
    assert img.image.shape[:2] == (20, 15) and img.full_size == (30, 40)
    top = np.zeros((20, 15), bool)
    top[:5] = True
    img.candidates.append(Candidate(top, base=top))
    img.ids[0] = 4
    lm = img.label_map()
    assert lm.shape == (40, 30) and (lm[:10] == 4).all() and (lm[10:] == 0).all()
    assert img.image[:5].mean() > 200 and img.image[6:].mean() < 50  # upright pixels


def test_a_damaged_reference_record_is_a_message_not_a_crash(tmp_path):
    from segdeck.core.propagate import load_project

    pr = ProjectRefs(load_project(write_project(tmp_path)))
    refs = pr.references()
    folder = pr.store.refs_dir / pr.group(refs[0].group).slug
    folder.mkdir(parents=True)
    (folder / "x.json").write_text("{not json", encoding="utf-8")
    st = RefsState(refs, lambda r: RefImage.failed(r, "unreadable"), pr, swap=pr.swap, keymap=KM)
    assert st.progress().startswith("group specimen=s1: ?/2 references labelled (") and "x.json" in st.progress()
    st.ensure_loaded()
    key(st, "space")
    assert "cannot save" in st.message and "unreadable" in st.message


def test_a_prompt_while_the_engine_is_busy_follows_when_it_is_free():
    import threading

    eng = FakeEngine()
    lock = threading.Lock()
    st = make_state(engine=eng)
    st.engine_lock = lock
    lock.acquire()  # another thread computes candidates
    click(st, 20, 25, ctrl=True)
    assert st.pending is not None and not eng.calls and "busy" in st.message
    assert not st.refresh(block=False)
    lock.release()
    assert st.refresh(block=False) and st.pending is None
    assert st.current.candidates[st.selected].mask[25, 20] and len(eng.calls) == 1
    lock.acquire()
    key(st, "7")
    click(st, 21, 26, button="right")  # pending again; saving waits for it
    threading.Timer(0.2, lock.release).start()
    key(st, "space")
    assert len(eng.calls) == 2 and st.pending is None and st.saves == 1


def test_a_narrow_window_shows_the_message_before_the_state():
    """A portrait photo (or a long group label) makes the status bar shorter than the
    whole line: the question about unsaved references comes first, where the bar does
    not cut it; a wide bar keeps the usual order."""
    from segdeck.annotate.refs import RefsWindow, fit_status, status_text_width

    refs = [Reference("specimen=ABC-12345, view=dorsal", "ABC-12345-0001", "a.png"),
            Reference("specimen=ABC-12345, view=dorsal", "ABC-12345-0002", "b.png")]
    st = make_state(refs=refs)
    win = RefsWindow(st, max_window=(560, 560), gui=object(), background=False)
    click(st, 7, 7)
    key(st, "1")
    key(st, "q")
    question = "1 unsaved reference(s): q again to quit without saving, space saves"
    assert st.message == question
    width = 560
    narrow = win.status_text(width)
    assert narrow.startswith(question + " | 1/2 ABC-12345-0001 | "), narrow
    assert status_text_width(question) <= width - 12  # the question itself is on screen
    wide = win.status_text(4000)
    assert wide.startswith("1/2 ABC-12345-0001 | group specimen=ABC-12345, view=dorsal") and wide.endswith(question)
    assert "typing ID 1" in wide and "1 object(s)" in wide
    win._sync_view()  # what the window loop does before drawing
    frame = win.draw("segdeck refs")
    assert frame.shape[1] == win.view.dw <= 560
    # no message: nothing moves; a message that fits stays last
    assert fit_status(["1/2 a", "b"], "", 100) == "1/2 a | b"
    assert fit_status(["1/2 a", "b"], "ok", 4000) == "1/2 a | b | ok"
    assert fit_status(["1/2 a", "", "b"], "a long message " * 5, 200).startswith("a long message")


def test_reopening_starts_at_the_first_reference_not_labelled(tmp_path):
    """A second session over a half-labelled project opens at the first reference its
    group has not saved (not at reference 1 again); all saved: the first one."""
    from segdeck.annotate.refs import first_unlabelled
    from segdeck.core.propagate import load_project

    spec = write_project(tmp_path)
    pr = ProjectRefs(load_project(spec))
    refs = pr.references()
    assert first_unlabelled(refs, pr) == 0
    m = np.zeros((24, 32), np.uint8)
    m[2:6, 3:9] = 4
    for ref in refs[:3]:  # group s1 done, the first of s2
        pr.save(ref.group, ref.key, m, [4])
    reopened = ProjectRefs(load_project(spec))
    assert first_unlabelled(reopened.references(), reopened) == 3
    st = RefsState(refs, lambda r: RefImage.build(r, np.zeros((24, 32, 3), np.uint8), (m > 0)[None]), reopened,
                   keymap=KM, start=first_unlabelled(refs, reopened))
    assert st.index == 3 and st.ref == refs[3]
    key(st, "p")
    assert st.index == 2  # the labelled ones are a key away
    pr.save(refs[3].group, refs[3].key, m, [4])
    assert first_unlabelled(refs, ProjectRefs(load_project(spec))) == 0
    assert RefsState(refs, st.load, pr, start=99).index == len(refs) - 1  # clamped


def test_closing_the_window_with_unsaved_references_asks_first():
    """The window manager's close button is the quit key: nothing unsaved ends the
    session; unsaved references bring the window back with the question, and a second
    close (or q) quits without saving."""
    from segdeck.annotate.refs import RefsWindow

    class FakeGui:
        def __init__(self):
            self.calls = []

        def open(self, name, on_mouse, position=None):
            self.calls.append(("open", name))

        def close(self, name):
            self.calls.append(("close", name))

    st = make_state()
    win = RefsWindow(st, gui=FakeGui(), background=False)
    win.on_windows_closed(["segdeck refs"])
    assert win.outcome is Outcome.QUIT  # nothing to lose
    st = make_state()
    gui = FakeGui()
    win = RefsWindow(st, gui=gui, background=False)
    click(st, 7, 7)
    key(st, "1")
    win.on_windows_closed(["segdeck refs"])
    assert win.outcome is None and st.outcome is None
    assert gui.calls == [("close", "segdeck refs"), ("open", "segdeck refs")]  # shown again
    assert st.message == "1 unsaved reference(s): close again or q to quit without saving, space saves"
    win.on_windows_closed(["segdeck refs"])
    assert win.outcome is Outcome.QUIT and st.store.saved == {}  # quit without saving
    # asked, then the quit key quits as well
    st = make_state()
    win = RefsWindow(st, gui=FakeGui(), background=False)
    click(st, 7, 7)
    key(st, "2")
    win.on_windows_closed(["segdeck refs"])
    key(st, "q")
    assert st.outcome is Outcome.QUIT
