"""Keymaps: the single source of every key and mouse binding of the annotation windows.

``keymaps/default.toml`` holds one table per action, ``[SESSION.ACTION]`` with ``keys``,
``mouse`` and ``description``. Alternative keymaps (``keymaps/NAME.toml``, chosen with
``--keymap NAME``) and the user file ``<platformdirs user_config_dir("segdeck")>/keymap.toml``
are layers: each action they name replaces that action's keys / mouse gestures (and
description, when given). Conflicts (one key or gesture bound to two actions of one
session, the shared ``view`` actions included) are reported by :meth:`Keymap.conflicts`.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path

#: Folder of the shipped keymaps (top-level ``keymaps/`` of the source tree).
KEYMAPS_DIR = Path(__file__).resolve().parent.parent / "keymaps"

#: Sessions in display order; ``view`` bindings are shared by every window session.
SESSIONS = ("view", "paint", "colours", "grabcut", "sam", "refs", "viewer")
SHARED = "view"
SESSION_TITLES = {
    "view": "every window",
    "paint": "paint (segment window)",
    "colours": "paint (colour window)",
    "grabcut": "grabcut",
    "sam": "sam",
    "refs": "refs (reference labelling)",
    "viewer": "view (image and mask)",
}

MOUSE_GESTURES = frozenset(
    {
        "left", "right", "middle", "ctrl+left", "ctrl+right",
        "left-double", "right-double", "middle-double",
        "left-drag", "right-drag", "middle-drag", "ctrl+left-drag", "ctrl+right-drag",
        "wheel-up", "wheel-down",
    }
)

#: Named keys -> the codes ``cv2.waitKeyEx`` returns for them (Qt and GTK backends).
NAMED_KEYS: dict[str, tuple[int, ...]] = {
    "space": (32,),
    "esc": (27,),
    "enter": (13, 10),
    "tab": (9,),
    "backspace": (8,),
    "delete": (127, 0xFFFF, 0x2E0000),
    "left": (0xFF51, 0x250000, 0x1000012),
    "up": (0xFF52, 0x260000, 0x1000013),
    "right": (0xFF53, 0x270000, 0x1000014),
    "down": (0xFF54, 0x280000, 0x1000015),
}


#: How the key hints of a window's status bar write mouse buttons (``left-double`` -> ``2xL``).
_BUTTON_SHORT = {"left": "L", "right": "R", "middle": "M"}


def short_gesture(gesture: str) -> str:
    """A mouse gesture as the status-bar hints write it: ``left`` -> ``L``,
    ``left-double`` -> ``2xL``, ``middle-drag`` -> ``M-drag``, ``ctrl+right`` -> ``ctrl+R``,
    ``wheel-up`` -> ``wheel``."""
    ctrl = gesture.startswith("ctrl+")
    base = gesture[5:] if ctrl else gesture
    if base.startswith("wheel"):
        return "wheel"
    button, _, kind = base.partition("-")
    text = _BUTTON_SHORT.get(button, button)
    if kind == "double":
        text = "2x" + text
    elif kind == "drag":
        text += "-drag"
    return ("ctrl+" if ctrl else "") + text


class KeymapError(ValueError):
    """A keymap file that cannot be read or names unknown keys / gestures."""


@dataclass(frozen=True)
class Binding:
    """One action of one session: its keys, mouse gestures and a one-line description."""

    session: str
    action: str
    keys: tuple[str, ...] = ()
    mouse: tuple[str, ...] = ()
    description: str = ""


def key_codes(name: str) -> tuple[int, ...]:
    """The ``waitKeyEx`` codes a key name stands for.

    Raises
    ------
    KeymapError
        Unknown key name.
    """
    if name in NAMED_KEYS:
        return NAMED_KEYS[name]
    if name.startswith("ctrl+") and len(name) == 6 and name[5].isalpha():
        letter = name[5].lower()
        return (ord(letter) - ord("a") + 1,)
    if len(name) == 1 and 32 < ord(name) < 127:
        return (ord(name),)
    raise KeymapError(f"unknown key name {name!r} (use one character, ctrl+<letter>, or one of {', '.join(NAMED_KEYS)})")


@dataclass
class Keymap:
    """Bindings per session, with lookup from key codes and mouse gestures to actions."""

    name: str
    bindings: dict[str, dict[str, Binding]] = field(default_factory=dict)
    sources: list[Path] = field(default_factory=list)

    def session_bindings(self, session: str) -> list[Binding]:
        """The session's own bindings followed by the shared ``view`` ones (not for ``colours``)."""
        own = list(self.bindings.get(session, {}).values())
        if session in (SHARED, "colours"):
            return own
        return own + list(self.bindings.get(SHARED, {}).values())

    def key_action(self, session: str, code: int) -> str | None:
        """Action bound to the ``waitKeyEx`` code in ``session`` (view actions included), or None."""
        if code is None or code < 0:
            return None
        for b in self.session_bindings(session):
            for k in b.keys:
                if code in key_codes(k):
                    return b.action
        return None

    def mouse_action(self, session: str, gesture: str) -> str | None:
        """Action bound to a mouse gesture name in ``session``, or None."""
        for b in self.session_bindings(session):
            if gesture in b.mouse:
                return b.action
        return None

    def keys_for(self, session: str, action: str) -> tuple[str, ...]:
        b = self.bindings.get(session, {}).get(action) or self.bindings.get(SHARED, {}).get(action)
        return (b.keys + b.mouse) if b else ()

    def hint(self, session: str, action: str, limit: int = 2) -> str:
        """The first ``limit`` keys / gestures of an action, short: ``"space"``, ``"q/L"``, ``"2xL"``.

        Empty when the action is unbound (its hint is then left out).
        """
        b = self.bindings.get(session, {}).get(action) or self.bindings.get(SHARED, {}).get(action)
        if b is None:
            return ""
        return "/".join((list(b.keys) + [short_gesture(g) for g in b.mouse])[:limit])

    def hints(self, session: str, items) -> list[str]:
        """Key hints for a window's status bar, read from the bindings so they cannot drift.

        Parameters
        ----------
        session : str
        items : sequence of (action or tuple of actions, label)
            In the order to show them (the window drops the tail that does not fit).
            A tuple names a family such as ``colour_1`` .. ``colour_9``: its first keys,
            written ``1-9`` when they are consecutive characters.

        Returns
        -------
        list of str
            ``"KEYS label"`` per bound item, e.g. ``["L fill", "1-9 colour", "space save+next"]``.
        """
        out = []
        for actions, label in items:
            if isinstance(actions, str):
                keys = self.hint(session, actions)
            else:
                first = [k for k in (self.hint(session, a, 1) for a in actions) if k]
                run = len(first) > 2 and all(len(k) == 1 for k in first) and all(
                    ord(b) - ord(a) == 1 for a, b in zip(first, first[1:], strict=False))
                keys = f"{first[0]}-{first[-1]}" if run else "/".join(first)
            if keys:
                out.append(f"{keys} {label}")
        return out

    def conflicts(self) -> list[str]:
        """One line per key or gesture bound to more than one action of one session."""
        lines = []
        for session in self.bindings:
            if session == SHARED:
                continue
            seen: dict[tuple[str, int | str], str] = {}
            for b in self.session_bindings(session):
                for k in b.keys:
                    for code in key_codes(k):
                        prev = seen.setdefault(("key", code), b.action)
                        if prev != b.action:
                            lines.append(f"keymap conflict in {session}: key {k!r} is bound to {prev!r} and {b.action!r}")
                for g in b.mouse:
                    prev = seen.setdefault(("mouse", g), b.action)
                    if prev != b.action:
                        lines.append(f"keymap conflict in {session}: mouse {g!r} is bound to {prev!r} and {b.action!r}")
        return list(dict.fromkeys(lines))

    def qt_unreachable(self) -> list[str]:
        """Bindings OpenCV's Qt windows never deliver (upper-case letters, ctrl+<key>)."""
        out = []
        for session, actions in self.bindings.items():
            for b in actions.values():
                for k in b.keys:
                    if k.startswith("ctrl+") or (len(k) == 1 and k.isupper()):
                        out.append(f"keymap: {session}.{b.action} key {k!r} does not reach OpenCV's Qt windows "
                                   "(letters arrive in lower case, Ctrl+key is kept by Qt)")
        return out

    def rows(self) -> list[tuple[str, str, str, str, str]]:
        """(session title, action, keys, mouse, description) rows in file order."""
        out = []
        for session in SESSIONS:
            for b in self.bindings.get(session, {}).values():
                out.append((SESSION_TITLES.get(session, session), b.action, ", ".join(b.keys), ", ".join(b.mouse), b.description))
        return out

    def markdown(self) -> str:
        """The keymap as a markdown table (what README.md's keymap section holds)."""

        def cell(text: str) -> str:
            return text.replace("|", "\\|")

        def code(items: str) -> str:
            return ", ".join(f"`{cell(i.strip())}`" for i in items.split(", ") if i.strip())

        lines = ["| Window | Action | Keys | Mouse | What it does |", "|---|---|---|---|---|"]
        for session, action, keys, mouse, desc in self.rows():
            lines.append(f"| {session} | {action} | {code(keys)} | {code(mouse)} | {cell(desc)} |")
        return "\n".join(lines) + "\n"


def user_keymap_path() -> Path:
    """``<platformdirs user_config_dir("segdeck")>/keymap.toml`` (may not exist)."""
    from platformdirs import user_config_dir

    return Path(user_config_dir("segdeck")) / "keymap.toml"


def available_keymaps() -> list[str]:
    return sorted(p.stem for p in KEYMAPS_DIR.glob("*.toml"))


def _read(path: Path) -> dict:
    try:
        with open(path, "rb") as fh:
            return tomllib.load(fh)
    except OSError as exc:
        raise KeymapError(f"{path}: cannot read keymap ({exc.strerror})") from None
    except tomllib.TOMLDecodeError as exc:
        raise KeymapError(f"{path}: invalid TOML ({exc})") from None


def _apply(bindings: dict[str, dict[str, Binding]], doc: dict, path: Path, *, base: bool) -> None:
    for session, actions in doc.items():
        if session not in SESSIONS:
            raise KeymapError(f"{path}: unknown session [{session}] (known: {', '.join(SESSIONS)})")
        if not isinstance(actions, dict):
            raise KeymapError(f"{path}: [{session}] must be a table of actions")
        table = bindings.setdefault(session, {})
        for action, spec in actions.items():
            if not isinstance(spec, dict):
                raise KeymapError(f"{path}: [{session}.{action}] must be a table with keys / mouse / description")
            old = table.get(action)
            if old is None and not base:
                raise KeymapError(f"{path}: unknown action {session}.{action} (see `segdeck keys`)")
            keys = spec.get("keys", old.keys if old else ())
            mouse = spec.get("mouse", old.mouse if old else ())
            if isinstance(keys, str):
                keys = [keys]
            if isinstance(mouse, str):
                mouse = [mouse]
            for k in keys:
                key_codes(str(k))
            for g in mouse:
                if g not in MOUSE_GESTURES:
                    raise KeymapError(f"{path}: unknown mouse gesture {g!r} in {session}.{action} (known: {', '.join(sorted(MOUSE_GESTURES))})")
            desc = spec.get("description", old.description if old else "")
            b = Binding(session, action, tuple(str(k) for k in keys), tuple(mouse), str(desc))
            table[action] = replace(b)


def load_keymap(name: str = "default", user_file: str | Path | None | bool = None) -> Keymap:
    """Load a keymap: ``default.toml``, then ``NAME.toml`` when another name is given,
    then the user's file.

    Parameters
    ----------
    name : str
        A shipped keymap name (``keymaps/NAME.toml``) or a path to a TOML file.
    user_file : path-like, None or False
        The user's override file; None uses :func:`user_keymap_path`, False skips it.

    Raises
    ------
    KeymapError
        Unknown keymap, unreadable file, unknown session / action / key / gesture.
    """
    default = KEYMAPS_DIR / "default.toml"
    bindings: dict[str, dict[str, Binding]] = {}
    _apply(bindings, _read(default), default, base=True)
    sources = [default]
    if name and name != "default":
        path = Path(name) if name.endswith(".toml") else KEYMAPS_DIR / f"{name}.toml"
        if not path.is_file():
            raise KeymapError(f"unknown keymap {name!r} (shipped: {', '.join(available_keymaps())}, or a .toml path)")
        _apply(bindings, _read(path), path, base=False)
        sources.append(path)
    if user_file is not False:
        upath = Path(user_file) if user_file else user_keymap_path()
        if upath.is_file():
            _apply(bindings, _read(upath), upath, base=False)
            sources.append(upath)
    return Keymap(name=name or "default", bindings=bindings, sources=sources)


MARK_START = "<!-- keymap:start -->"
MARK_END = "<!-- keymap:end -->"


def replace_readme_section(text: str, table: str) -> str:
    """``text`` with the part between the keymap markers replaced by ``table``.

    Raises
    ------
    ValueError
        The markers are missing or out of order.
    """
    start = text.find(MARK_START)
    end = text.find(MARK_END)
    if start < 0 or end < 0 or end < start:
        raise ValueError(f"README has no {MARK_START} ... {MARK_END} section")
    return text[: start + len(MARK_START)] + "\n" + table + text[end:]


def readme_section(text: str) -> str | None:
    """The text between the keymap markers, or None without markers."""
    start = text.find(MARK_START)
    end = text.find(MARK_END)
    if start < 0 or end < start:
        return None
    return text[start + len(MARK_START) : end]
