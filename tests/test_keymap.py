"""Keymaps: shipped files load without conflicts, user overrides, conflict reports,
`segdeck keys` output and the README section generated from the same file."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from segdeck.annotate.keymap import (
    KEYMAPS_DIR,
    KeymapError,
    available_keymaps,
    key_codes,
    load_keymap,
    readme_section,
    replace_readme_section,
)

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.parametrize("name", ["default", "xanylabeling"])
def test_shipped_keymaps_load_without_conflicts(name):
    km = load_keymap(name, user_file=False)
    assert km.conflicts() == []
    for session in ("paint", "colours", "grabcut", "sam", "view"):
        assert km.bindings[session]
        for b in km.bindings[session].values():
            assert b.description and "\n" not in b.description
            assert b.keys or b.mouse


def test_every_action_the_sessions_handle_is_bound():
    km = load_keymap("default", user_file=False)
    assert km.key_action("paint", ord("q")) == "quit"
    assert km.key_action("paint", 32) == "save_next"
    assert km.key_action("grabcut", 32) == "iterate"
    assert km.key_action("sam", 32) == "predict"
    assert km.key_action("sam", ord("z")) == "undo"
    assert km.key_action("paint", 0xFF51) == "pan_left"  # view actions are shared
    assert km.mouse_action("paint", "left-double") == "toggle_fill_mode"
    assert km.mouse_action("grabcut", "ctrl+right-drag") == "probable_background"
    assert km.mouse_action("colours", "left") == "pick"
    assert km.key_action("colours", ord("q")) is None


def test_user_file_overrides_single_binding_and_conflicts_are_reported(tmp_path):
    user = tmp_path / "keymap.toml"
    user.write_text('[paint.save_next]\nkeys = ["s"]\n', encoding="utf-8")
    km = load_keymap("default", user_file=user)
    assert km.key_action("paint", ord("s")) == "save_next"
    assert km.key_action("paint", 32) is None
    assert km.key_action("paint", ord("q")) == "quit"  # the rest is untouched
    assert km.conflicts() == []
    user.write_text('[paint.debug]\nkeys = ["q"]\n[sam.box]\nmouse = ["left"]\n', encoding="utf-8")
    lines = load_keymap("default", user_file=user).conflicts()
    assert any("paint" in line and "'q'" in line and "quit" in line and "debug" in line for line in lines)
    assert any("sam" in line and "left" in line and "positive" in line for line in lines)


def test_alternative_keymap_changes_bindings():
    km = load_keymap("xanylabeling", user_file=False)
    assert km.key_action("paint", ord("d")) == "next"
    assert km.key_action("paint", ord("a")) == "previous"
    assert km.key_action("paint", ord("s")) == "save_next"
    assert km.key_action("sam", ord("q")) == "positive"
    assert km.key_action("paint", ord("z")) == "undo"  # from the default layer
    assert "xanylabeling" in available_keymaps()
    assert km.qt_unreachable() == [] and load_keymap("default", user_file=False).qt_unreachable() == []


def test_ctrl_and_upper_case_keys_are_flagged(tmp_path):
    user = tmp_path / "keymap.toml"
    user.write_text('[paint.undo]\nkeys = ["ctrl+z"]\n[paint.next]\nkeys = ["N"]\n', encoding="utf-8")
    km = load_keymap("default", user_file=user)
    assert km.key_action("paint", 26) == "undo"
    assert len(km.qt_unreachable()) == 2


def test_bad_keymaps_are_refused(tmp_path):
    bad = tmp_path / "k.toml"
    for text in ('[paint.no_such_action]\nkeys = ["x"]\n', '[paint.quit]\nkeys = ["notakey"]\n',
                 '[paint.quit]\nmouse = ["left-triple"]\n', "[nosession.quit]\n", "not toml ["):
        bad.write_text(text, encoding="utf-8")
        with pytest.raises(KeymapError):
            load_keymap("default", user_file=bad)
    with pytest.raises(KeymapError):
        load_keymap("no-such-keymap", user_file=False)
    with pytest.raises(KeymapError):
        key_codes("f13")


def test_markdown_table_and_readme_replacement():
    km = load_keymap("default", user_file=False)
    md = km.markdown()
    assert md.splitlines()[0].startswith("| Window | Action |")
    n_actions = sum(len(v) for v in km.bindings.values())
    assert len(md.strip().splitlines()) == n_actions + 2
    text = "intro\n<!-- keymap:start -->\nold\n<!-- keymap:end -->\noutro\n"
    new = replace_readme_section(text, md)
    assert readme_section(new) == "\n" + md
    assert new.startswith("intro\n") and new.endswith("<!-- keymap:end -->\noutro\n")
    with pytest.raises(ValueError):
        replace_readme_section("no markers", md)


def test_keys_command(tmp_path):
    r = subprocess.run([sys.executable, "-m", "segdeck", "keys", "--markdown", "--no-user"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0
    assert r.stdout == load_keymap("default", user_file=False).markdown()
    readme = tmp_path / "README.md"
    readme.write_text("x\n<!-- keymap:start -->\n<!-- keymap:end -->\n", encoding="utf-8")
    r = subprocess.run([sys.executable, "-m", "segdeck", "keys", "--update-readme", str(readme)],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    assert readme_section(readme.read_text(encoding="utf-8")) == "\n" + load_keymap("default", user_file=False).markdown()
    r = subprocess.run([sys.executable, "-m", "segdeck", "keys", "--no-user"], capture_output=True, text=True,
                       timeout=60, env={**__import__("os").environ, "COLUMNS": "160"})
    assert r.returncode == 0 and "save_next" in r.stdout and "toggle_fill_mode" in r.stdout


def test_readme_keymap_section_is_generated_from_default_toml():
    readme = ROOT / "README.md"
    if not readme.is_file():
        pytest.skip("no README.md yet")
    section = readme_section(readme.read_text(encoding="utf-8"))
    assert section is not None, "README.md lacks the <!-- keymap:start --> / <!-- keymap:end --> markers"
    expected = "\n" + load_keymap("default", user_file=False).markdown()
    assert section == expected, "README keymap section is stale: run `segdeck keys --update-readme README.md`"
    assert (KEYMAPS_DIR / "default.toml").is_file()


def test_status_bar_hints_come_from_the_bindings(tmp_path):
    from segdeck.annotate.keymap import short_gesture

    assert [short_gesture(g) for g in ("left", "right-double", "middle-drag", "ctrl+left-drag", "wheel-up")] == [
        "L", "2xR", "M-drag", "ctrl+L-drag", "wheel"]
    colours = tuple(f"colour_{k}" for k in range(1, 10))
    items = [("fill", "fill"), (colours, "colour"), ("save_next", "save+next"), (("zoom_in", "zoom_out"), "zoom"),
             ("no_such_action", "never shown")]
    km = load_keymap("default", user_file=False)
    assert km.hints("paint", items) == ["L fill", "1-9 colour", "space save+next", "+/- zoom"]
    user = tmp_path / "keymap.toml"
    user.write_text('[paint.save_next]\nkeys = ["s"]\n[paint.colour_2]\nkeys = ["w"]\n', encoding="utf-8")
    km = load_keymap("default", user_file=user)  # a rebinding shows up in the hints at once
    assert km.hints("paint", items)[1:3] == ["1/w/3/4/5/6/7/8/9 colour", "s save+next"]
    assert load_keymap("xanylabeling", user_file=False).hints("sam", [("positive", "+point")]) == ["q/L +point"]
