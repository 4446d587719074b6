"""Hands-on annotation in OpenCV highgui windows.

Each session is a pure state machine (``PaintState``, ``GrabCutState``, ``SamState``:
events in, arrays out, no window) plus a thin window loop that draws only when the
state changed. Bindings come from ``keymaps/*.toml`` (:mod:`segdeck.annotate.keymap`).
"""
