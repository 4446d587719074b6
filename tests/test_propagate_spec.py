"""Group propagation's project spec (issue 12): the TOML spec, the metadata CSV (BOM,
quotes, delimiters, encodings), image paths from a column or a column-only template,
groups, seeded references and swaps, the reference store and the mask modes."""

from __future__ import annotations

import json

import numpy as np
import pytest

from segdeck.core import imageio
from segdeck.core.propagate import (
    ReferenceError,
    ReferenceStore,
    SpecError,
    file_slug,
    load_project,
    load_spec,
    read_csv,
    sample_references,
    swap_reference,
)
from segdeck.core.propagate.modes import apply_mode, position_labels, reference_labels
from segdeck.core.propagate.spec import template_fields


def _png(path, h=6, w=8):
    path.parent.mkdir(parents=True, exist_ok=True)
    imageio.write_image(path, np.zeros((h, w, 3), np.uint8))


def _project(tmp_path, csv_bytes: bytes, spec: str = "", images=()):
    (tmp_path / "m.csv").write_bytes(csv_bytes)
    for rel in images:
        _png(tmp_path / "img" / rel)
    (tmp_path / "img").mkdir(exist_ok=True)
    text = 'csv = "m.csv"\nkey = "id"\nroot = "img"\n' + (spec or 'template = "{spec}/{name}.png"\ngroup_by = ["spec"]\n')
    (tmp_path / "p.toml").write_text(text)
    return tmp_path / "p.toml"


def test_template_fields_only_name_columns():
    assert template_fields("{specimen}/{view}_{id}.jpg") == ["specimen", "view", "id"]
    assert template_fields("{{x}}/{a}.png") == ["a"]
    for bad, why in [("{a!r}.jpg", "conversions"), ("{a:>3}.jpg", "format specs"), ("{a.b}.jpg", "attribute"),
                     ("{a[0]}.jpg", "attribute"), ("{}.jpg", "name a column"), ("{0}.jpg", "name a column"),
                     ("{a.jpg", "template"), ("plain.jpg", "names no column")]:
        with pytest.raises(ValueError, match=why):
            template_fields(bad)


def test_spec_errors_are_one_line(tmp_path):
    p = tmp_path / "s.toml"
    p.write_text('csv = "m.csv"\nkey = "id"\npath = "p"\ntemplate = "{a}.jpg"\n')
    with pytest.raises(SpecError, match="exactly one of 'path'"):
        load_spec(p)
    p.write_text('csv = "m.csv"\nkey = "id"\npath = "p"\nmodel = "sam-hq-vit_tiny"\nbogus = 1\n')
    with pytest.raises(SpecError) as err:
        load_spec(p)
    assert "unknown SAM 2.1 model 'sam-hq-vit_tiny'" in str(err.value) and "bogus: unknown setting" in str(err.value)
    assert "\n" not in str(err.value)
    p.write_text('csv = "m.csv"\nkey = "id"\ntemplate = "{a!s}.jpg"\n')
    with pytest.raises(SpecError, match="conversions"):
        load_spec(p)
    p.write_text("csv = [")
    with pytest.raises(SpecError, match="not valid TOML"):
        load_spec(p)
    spec = load_spec(_project(tmp_path, b"id\n1\n"))
    assert (spec.model, spec.mask_mode, spec.references, spec.seed) == ("sam2.1-tiny", "original", 5, 0)


def test_csv_bom_quotes_newlines_and_delimiters(tmp_path):
    src = tmp_path / "a.csv"
    src.write_bytes('\ufeffid,note,name\n1,"a, b",x\n2,"two\nlines ""q""",y\n\n3,,z\n'.encode())
    cols, rows = read_csv(src)
    assert cols == ["id", "note", "name"]
    assert [(n, r["note"]) for n, r in rows] == [(2, "a, b"), (3, 'two\nlines "q"'), (6, "")]
    src.write_bytes(b"id;note;name\n1;a,b;x\n2;\"c;d\";y\n")
    assert [r["note"] for _, r in read_csv(src)[1]] == ["a,b", "c;d"]
    src.write_bytes(b"id\tnote\tname\n1\ta;b,c\tx\n")
    assert read_csv(src)[1][0][1] == {"id": "1", "note": "a;b,c", "name": "x"}
    src.write_bytes("id,name\n1,é\n".encode("utf-16"))  # spreadsheet "Unicode text"
    assert read_csv(src)[1][0][1]["name"] == "é"
    src.write_bytes("id,name\n1,ok\n2,caf\xe9\n".encode("latin-1"))
    with pytest.raises(SpecError, match=r"not UTF-8 text \(byte 0xe9 at byte offset 18, line 3\)"):
        read_csv(src)
    src.write_bytes(b"id,name\n1,x,extra\n")
    with pytest.raises(SpecError, match="line 2: 3 fields but the header has 2"):
        read_csv(src)
    src.write_bytes(b"id,id\n1,2\n")
    with pytest.raises(SpecError, match="names column 'id' twice"):
        read_csv(src)


def test_project_groups_paths_and_missing_files(tmp_path):
    spec = _project(tmp_path, b'id,spec,name\n1,s1,a\n2,s1,"b c"\n3,s2,d\n4,s2,gone\n',
                    images=["s1/a.png", "s1/b c.png", "s2/d.png"])
    proj = load_project(spec)
    assert [(g.label, g.slug, [r.key for r in g.rows]) for g in proj.groups] == [
        ("spec=s1", "spec=s1", ["1", "2"]), ("spec=s2", "spec=s2", ["3", "4"])]
    assert proj.row("2").path == tmp_path / "img" / "s1" / "b c.png"
    assert [r.key for r in proj.missing] == ["4"]
    assert proj.missing_text() == f"1 of 4 images missing under {tmp_path / 'img'}: 's2/gone.png' (line 5)"
    assert [r.key for r in proj.present_rows(proj.groups[1])] == ["3"]
    one = _project(tmp_path, b"id,file\n1,s1\\a.png\n", spec='path = "file"\n')
    p1 = load_project(one)  # no group_by: one group; backslashes are folder separators
    assert [g.label for g in p1.groups] == ["all"] and p1.rows[0].relpath == "s1/a.png" and not p1.missing


@pytest.mark.parametrize(("csv_text", "spec", "message"), [
    (b"id,spec,name\n1,s1,a\n", 'template = "{spec}/{nme}.png"\n',
     "template names column 'nme', which m.csv lacks (columns: id, spec, name)"),
    (b"id,spec,name\n1,s1,a\n", 'path = "name"\ngroup_by = ["specimen"]\n', "group_by names column 'specimen'"),
    (b"id,name\n1,a\n2,b\n1,c\n3,d\n2,e\n", 'path = "name"\n',
     "duplicate primary keys in column 'id': '1' on lines 2, 4; '2' on lines 3, 6"),
    (b"id,name\n1,../a.png\n2,/etc/passwd\n3,C:\\x.png\n4,ok.png\n", 'path = "name"\n',
     "image paths must stay inside the root (no absolute paths, no '..'): '../a.png' (line 2), "
     "'/etc/passwd' (line 3), 'C:\\\\x.png' (line 4)"),
    (b"id,name\n1,a\n2,\n", 'path = "name"\n', "empty image path (column 'name') on line(s) 3"),
    (b"id,name\n a b ,x\na-b,y\n", 'path = "name"\n', "primary keys 'a b' (line 2) and 'a-b' (line 3) give the same"),
    (b"id,name\n", 'path = "name"\n', "no data rows"),
    (b'id,name\n"a\nb",x\n', 'path = "name"\n', "primary key 'id' holds a line break on line(s) 2"),
])
def test_project_refuses_bad_csvs_with_one_line(tmp_path, csv_text, spec, message):
    with pytest.raises(SpecError) as err:
        load_project(_project(tmp_path, csv_text, spec))
    assert message in str(err.value) and "\n" not in str(err.value)


def test_slugs():
    assert file_slug("specimen=12, view=dorsal") == "specimen=12-view=dorsal"
    assert file_slug("../../etc") == "etc" and file_slug("..") == "_" and file_slug("a/b\\c") == "a-b-c"


def test_seeded_references_and_swaps():
    rows = [f"r{k}" for k in range(20)]
    a = sample_references(rows, 5, seed=0)
    assert a == sample_references(rows, 5, seed=0) and len(set(a)) == 5
    assert a != sample_references(rows, 5, seed=1)
    import random

    assert a == random.Random(0).sample(rows, 5)  # SST's rule
    assert sorted(sample_references(rows[:3], 5, seed=0)) == rows[:3]
    b = swap_reference(rows, a, 2, seed=0, turn=0)
    assert b == swap_reference(rows, a, 2, seed=0, turn=0) and b[:2] == a[:2] and b[3:] == a[3:]
    assert b[2] not in a
    assert swap_reference(rows[:5], sorted(rows[:5]), 0, seed=0) == sorted(rows[:5])  # nothing left to swap in
    with pytest.raises(ValueError):
        sample_references(rows, 0, seed=0)


def test_reference_store_round_trip_and_progress(tmp_path):
    spec = _project(tmp_path, b"id,spec,name\n1,s1,a\n2,s1,b\n3,s1,c\n", images=["s1/a.png", "s1/b.png", "s1/c.png"])
    proj = load_project(spec)
    store = ReferenceStore(proj.refs_dir)
    g = proj.groups[0]
    assert proj.refs_dir == tmp_path / "p.refs" and store.labelled(g) == {}
    big = np.zeros((6, 8), np.int32)
    big[1:3, 1:3] = 300  # above 255: a uint16 PNG
    big[4:, 5:] = 2
    entry = store.save(g, "1", big, ids=[2, 300], image="s1/a.png")
    assert entry.labels_path == tmp_path / "p.refs" / "spec=s1" / "1.png"
    labels, again = store.load(g, "1")
    assert np.array_equal(labels, big) and again.ids == (2, 300) and (again.width, again.height) == (8, 6)
    meta = json.loads(entry.json_path.read_text())
    assert meta["group"] == {"spec": "s1"} and meta["image"] == "s1/a.png"
    with pytest.raises(ValueError, match=r"ids \[1, 2\] differ from the labels in the map \[2, 300\]"):
        store.save(g, "2", big, ids=[1, 2])
    store.save(g, "2", np.ones((6, 8), np.uint8))
    assert store.progress(g, 3) == "group spec=s1: 2/3 references labelled"
    assert list(store.labelled(g)) == ["1", "2"]
    entry.labels_path.unlink()
    with pytest.raises(ReferenceError, match="label map 1.png is missing"):
        store.labelled(g)
    store.delete(g, "1")
    assert list(store.labelled(g)) == ["2"]
    store.choose(g, ["2", "3"], turn=1)
    assert store.chosen(g) == (["2", "3"], 1)
    store.save(g, "References", np.ones((6, 8), np.uint8))  # a key named like the reference list
    assert store.chosen(g) == (["2", "3"], 1) and sorted(store.labelled(g)) == ["2", "References"]
    assert store.paths(g, "References")[1].name == "References~ref.json"


def test_image_jobs_never_take_reference_label_maps_for_photos(tmp_path):
    """The store marks its folder, wherever it is (the default p.refs or a custom
    refs_dir): `segdeck run segment PROJECT_DIR` lists the photos, not the label maps."""
    from segdeck.core import imageio

    spec = _project(tmp_path, b"id,spec,name\n1,s1,a\n2,s1,b\n", images=["s1/a.png", "s1/b.png"])
    proj = load_project(spec)
    custom = ReferenceStore(tmp_path / "labels")  # a refs_dir named like any folder
    for store in (ReferenceStore(proj.refs_dir), custom):
        store.save(proj.groups[0], "1", np.ones((6, 8), np.uint8))
    found = [p.relative_to(tmp_path).as_posix() for p in imageio.discover(tmp_path)]
    assert found and not [f for f in found if f.startswith(("p.refs/", "labels/"))], found
    assert (proj.refs_dir / imageio.STORE_MARKER).is_file()


def test_position_mode_quadrants_ties_and_more_than_four():
    lab = np.zeros((10, 10), np.int32)
    lab[0:2, 0:2] = 7  # top-left
    lab[0:2, 8:10] = 3  # top-right
    lab[8:10, 0:2] = 9  # bottom-left
    lab[8:10, 8:10] = 1  # bottom-right
    pos = position_labels(lab)
    assert pos[0, 0] == 1 and pos[0, 9] == 2 and pos[9, 0] == 3 and pos[9, 9] == 4
    assert set(np.unique(pos)) == {0, 1, 2, 3, 4}
    lone = np.zeros((5, 5), np.int32)
    lone[2, 2] = 5
    assert position_labels(lone)[2, 2] == 1  # ties go left and up
    pair = np.zeros((4, 6), np.int32)
    pair[1, 0], pair[1, 5] = 4, 8  # side by side at one height: 1 and 2
    assert position_labels(pair)[1, 0] == 1 and position_labels(pair)[1, 5] == 2
    lab[0:2, 4:5] = 11  # a fifth object, also up and left of the mean: merged into 1
    pos5 = position_labels(lab)
    assert pos5[0, 4] == 1 and set(np.unique(pos5)) == {0, 1, 2, 3, 4}
    assert np.array_equal(apply_mode(lab, "binary"), (lab > 0).astype(np.int32))
    assert np.array_equal(apply_mode(lab, "original"), lab) and np.array_equal(reference_labels(lab, "binary"), lab)
    assert np.array_equal(reference_labels(lab, "position"), pos5)
    with pytest.raises(ValueError):
        apply_mode(lab, "bogus")


def test_the_metadata_csv_given_as_the_spec_says_how_to_write_one(tmp_path):
    """A newcomer hands the CSV (or an image) where the spec goes (`annotate refs`,
    `run propagate`): one line saying a spec is expected and which key names the CSV,
    not a TOML parse error."""
    from segdeck.core.propagate.job import PropagateJob

    csv = tmp_path / "metadata.csv"
    csv.write_text("id,specimen,view\n1,a,d\n", encoding="utf-8")
    with pytest.raises(SpecError) as err:
        load_spec(csv)
    line = str(err.value)
    assert "\n" not in line and "not valid TOML" not in line
    assert "a project spec (.toml) is expected" in line and 'csv = "metadata.csv"' in line
    with pytest.raises(ValueError, match='csv = "metadata.csv"'):
        PropagateJob.check_input(csv)
    photo = tmp_path / "a.jpg"
    photo.write_bytes(b"\xff\xd8\xff\xe0 not utf-8 \xff")
    with pytest.raises(SpecError) as err:
        load_spec(photo)
    assert str(err.value) == f"{photo}: a project spec (.toml) is expected"
    spec = tmp_path / "bad.toml"
    spec.write_bytes(b"csv = \"\xff\"\n")
    with pytest.raises(SpecError, match="not UTF-8 text"):  # a spec with a bad byte keeps its own line
        load_spec(spec)


def test_a_spec_setting_given_as_a_run_option_says_where_it_lives(tmp_path):
    """`segdeck run propagate p.toml --set mask_mode=binary`: one line per field, the
    spec's settings named as such (edit p.toml), a real typo keeps its suggestion."""
    import os
    import subprocess
    import sys

    from segdeck.core.propagate import ProjectSpec
    from segdeck.core.propagate.job import PropagateJob

    assert set(PropagateJob.input_settings) == set(ProjectSpec.model_fields)  # every spec key, no other
    spec = _project(tmp_path, b"id,spec,name\n1,a,x\n", images=["a/x.png"])
    env = {**os.environ, "SEGDECK_STATE_DIR": str(tmp_path / "state")}
    r = subprocess.run([sys.executable, "-m", "segdeck", "run", "propagate", str(spec), "--set", "mask_mode=binary",
                        "--set", "max_frame=2"], capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
    assert "  mask_mode: a setting of p.toml, not a run option (edit it there)" in r.stderr.splitlines(), r.stderr
    assert "max_frame: unknown parameter; did you mean 'max_frames'?" in r.stderr
    assert not (tmp_path / "p.segdeck").exists()  # refused before a job folder exists


def test_a_passing_dry_run_ends_with_a_dry_run_line(tmp_path):
    """`--dry-run` with every group ready: the table, then `dry run done`, exit 0 (it
    used to end with "nothing to do: 0 done", which reads as if nothing would run)."""
    import os
    import subprocess
    import sys

    from segdeck.core.propagate import ReferenceStore, load_project

    spec = _project(tmp_path, b"id,spec,name\n1,a,x\n2,a,y\n", spec='template = "{spec}/{name}.png"\ngroup_by = ["spec"]\n'
                    'references = 1\n', images=["a/x.png", "a/y.png"])
    project = load_project(spec)
    ref = project.sampled_references(project.groups[0])[0]
    w, h = imageio.image_size(ref.path)
    lm = np.zeros((h, w), np.uint8)
    lm[:2, :2] = 1
    ReferenceStore(project.refs_dir).save(project.groups[0], ref.key, lm, image=ref.relpath)
    env = {**os.environ, "SEGDECK_STATE_DIR": str(tmp_path / "state")}
    r = subprocess.run([sys.executable, "-m", "segdeck", "run", "propagate", str(spec), "--dry-run"],
                       capture_output=True, text=True, timeout=60, env=env)
    assert r.returncode == 0, r.stderr
    assert "dry run: 1 group(s) ready, 1 images to propagate; no model loaded" in r.stderr
    assert "dry run done: nothing computed -> " in r.stderr and "nothing to do" not in r.stderr, r.stderr
