"""The Qt environment set before highgui loads (windows over SSH X forwarding)."""

from __future__ import annotations

from segdeck.annotate.gui import QT_X11_ENV, prepare_qt_environment


def test_mitshm_switched_off_for_a_fresh_environment():
    env = {"DISPLAY": "localhost:10.0"}
    changed = prepare_qt_environment(env)
    assert env["QT_XCB_NO_MITSHM"] == "1" and env["QT_X11_NO_MITSHM"] == "1"
    assert changed == QT_X11_ENV


def test_users_own_setting_is_kept():
    env = {"DISPLAY": ":0", "QT_XCB_NO_MITSHM": "0"}
    changed = prepare_qt_environment(env)
    assert env["QT_XCB_NO_MITSHM"] == "0"
    assert "QT_XCB_NO_MITSHM" not in changed


def test_opt_out_keeps_mitshm():
    env = {"DISPLAY": ":0", "SEGDECK_MITSHM": "1"}
    assert prepare_qt_environment(env) == {}
    assert "QT_XCB_NO_MITSHM" not in env


def test_gui_sets_it_before_qt_starts(monkeypatch):
    import os

    from segdeck.annotate.gui import Gui

    monkeypatch.delenv("QT_XCB_NO_MITSHM", raising=False)
    Gui()
    assert os.environ["QT_XCB_NO_MITSHM"] == "1"
