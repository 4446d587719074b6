"""The reference store: labelled reference images of each group, on disk.

Layout under ``refs_dir`` (default ``<spec stem>.refs/`` beside the spec)::

    <group slug>/<key slug>.png    label map (H, W) at the image's upright size (EXIF
                                   applied): uint8, uint16 above 255; 0 = background,
                                   1..N the labeller's object IDs
    <group slug>/<key slug>.json   {"key", "image", "group", "group_label", "ids",
                                   "width", "height"}
    <group slug>/references.json   {"keys": [...], "turn": n}: the group's current
                                   reference list after swaps (optional; written by the
                                   labelling window)

``refs_dir`` holds a ``.segdeck-store`` marker (:data:`segdeck.core.imageio.STORE_MARKER`),
written with the first reference, so image jobs run on the project folder never take
the reference label maps for photos.

Both files of a reference are written atomically, the PNG first: a reference counts as
labelled when its JSON exists (the JSON is the completeness marker). Slugs are
:func:`~segdeck.core.propagate.spec.file_slug`; :func:`~.spec.load_project` refuses
keys or groups whose slugs collide.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from segdeck.core import imageio
from segdeck.core.errors import SegdeckError
from segdeck.core.propagate.spec import Group, file_slug

__all__ = ["ReferenceEntry", "ReferenceError", "ReferenceStore"]

CHOICE_NAME = "references.json"


class ReferenceError(SegdeckError, ValueError):  # noqa: A001 - the field's word, not the builtin
    """A reference label map or its JSON is bad (one line naming the file)."""


@dataclass(frozen=True)
class ReferenceEntry:
    """One labelled reference as recorded in its JSON.

    Attributes
    ----------
    key : str
        Primary key of the reference row.
    image : str
        Image path relative to the project root (POSIX).
    ids : tuple of int
        Object IDs present in the label map, increasing.
    width, height : int
        Label map size in pixels (the upright image size).
    labels_path, json_path : Path
    """

    key: str
    image: str
    ids: tuple[int, ...]
    width: int
    height: int
    labels_path: Path
    json_path: Path


class ReferenceStore:
    """Reference label maps of a project, one folder per group.

    Parameters
    ----------
    refs_dir : path-like
        The store's folder (created on the first save).
    """

    def __init__(self, refs_dir: str | Path):
        self.refs_dir = Path(refs_dir)

    def _folder(self, group: Group) -> Path:
        return self.refs_dir / group.slug

    def paths(self, group: Group, key: str) -> tuple[Path, Path]:
        """(label map PNG, JSON) paths of ``key`` in ``group``.

        The stem is the key's slug; a key whose slug is ``references`` (any case) gets
        ``references~ref`` instead (``~`` is outside the slug alphabet), so its JSON never
        meets the group's ``references.json``.
        """
        stem = file_slug(key)
        if stem.lower() + ".json" == CHOICE_NAME:
            stem += "~ref"
        folder = self._folder(group)
        return folder / f"{stem}.png", folder / f"{stem}.json"

    def save(
        self,
        group: Group,
        key: str,
        label_map: np.ndarray,
        ids: Iterable[int] | None = None,
        *,
        image: str = "",
    ) -> ReferenceEntry:
        """Write a reference's label map and JSON (atomically, PNG first).

        Parameters
        ----------
        group : Group
            The reference's group (its slug names the folder).
        key : str
            Primary key of the reference row.
        label_map : ndarray of shape (H, W), integer
            0 = background, 1..65535 object IDs, at the image's upright size.
        ids : iterable of int, optional
            The object IDs the labeller assigned; default: the non-zero values present.
            Must equal the values present (an ID without pixels, or pixels without an
            ID, is refused).
        image : str
            Image path relative to the project root, recorded in the JSON.

        Returns
        -------
        ReferenceEntry

        Raises
        ------
        ValueError
            Not a 2-D integer map, negative or > 65535 labels, or ``ids`` inconsistent.
        """
        labels = np.asarray(label_map)
        if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer) and labels.dtype != bool:
            raise ValueError(f"a reference label map must be a (H, W) integer array, got {labels.dtype} {labels.shape}")
        labels = labels.astype(np.int64)
        if labels.size and (labels.min() < 0 or labels.max() > 65535):
            raise ValueError("reference labels must lie in 0..65535")
        present = sorted(int(v) for v in np.unique(labels) if v != 0)
        chosen = present if ids is None else sorted({int(i) for i in ids})
        if chosen != present:
            raise ValueError(f"reference {key!r}: ids {chosen} differ from the labels in the map {present}")
        png, js = self.paths(group, key)
        png.parent.mkdir(parents=True, exist_ok=True)
        self._mark()
        imageio.write_label_map(png, labels)
        h, w = labels.shape
        meta = {"key": key, "image": image, "group": dict(group.values), "group_label": group.label,
                "ids": present, "width": int(w), "height": int(h)}
        imageio.write_text_atomic(js, json.dumps(meta, ensure_ascii=False, indent=1))
        return ReferenceEntry(key, image, tuple(present), int(w), int(h), png, js)

    def entry(self, group: Group, key: str) -> ReferenceEntry | None:
        """The recorded reference ``key`` of ``group``, or None when not labelled.

        Raises
        ------
        ReferenceError
            Its JSON is unreadable or its label map is missing.
        """
        png, js = self.paths(group, key)
        if not js.is_file():
            return None
        return self._read_entry(js, png)

    def _read_entry(self, js: Path, png: Path) -> ReferenceEntry:
        try:
            meta = json.loads(js.read_text(encoding="utf-8"))
            entry = ReferenceEntry(str(meta["key"]), str(meta.get("image", "")),
                                   tuple(int(i) for i in meta["ids"]), int(meta["width"]), int(meta["height"]),
                                   png, js)
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ReferenceError(f"{js}: not a reference record ({type(exc).__name__}: {exc})") from None
        if not png.is_file():
            raise ReferenceError(f"{js}: its label map {png.name} is missing")
        return entry

    def load(self, group: Group, key: str) -> tuple[np.ndarray, ReferenceEntry] | None:
        """The label map (H, W) int32 and entry of reference ``key``, or None when not labelled.

        Raises
        ------
        ReferenceError
            Unreadable files, or a map whose size or IDs differ from its JSON.
        """
        entry = self.entry(group, key)
        if entry is None:
            return None
        try:
            labels = imageio.read_label_map(entry.labels_path)
        except SegdeckError as exc:
            raise ReferenceError(str(exc)) from None
        if labels.ndim != 2 or labels.shape != (entry.height, entry.width):
            raise ReferenceError(f"{entry.labels_path}: size {labels.shape[::-1]} differs from its JSON "
                                 f"({entry.width}, {entry.height})")
        present = tuple(int(v) for v in np.unique(labels) if v != 0)
        if present != entry.ids:
            raise ReferenceError(f"{entry.labels_path}: labels {list(present)} differ from the ids of its JSON "
                                 f"{list(entry.ids)}")
        return labels, entry

    def labelled(self, group: Group) -> dict[str, ReferenceEntry]:
        """Every labelled reference of ``group``: key -> entry, ordered by key slug.

        Raises
        ------
        ReferenceError
            A JSON that is unreadable or lacks its label map.
        """
        folder = self._folder(group)
        if not folder.is_dir():
            return {}
        out = {}
        for js in sorted(folder.glob("*.json")):
            if js.name == CHOICE_NAME or js.name.startswith("."):
                continue
            entry = self._read_entry(js, js.with_suffix(".png"))
            out[entry.key] = entry
        return out

    def delete(self, group: Group, key: str) -> None:
        """Forget reference ``key`` (JSON first, then the map; missing files are fine)."""
        png, js = self.paths(group, key)
        for p in (js, png):
            p.unlink(missing_ok=True)

    def chosen(self, group: Group) -> tuple[list[str], int] | None:
        """The group's reference keys after swaps and the swap count, or None (the
        seeded sample stands)."""
        path = self._folder(group) / CHOICE_NAME
        if not path.is_file():
            return None
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
            return [str(k) for k in doc["keys"]], int(doc.get("turn", 0))
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise ReferenceError(f"{path}: not a reference list ({exc})") from None

    def _mark(self) -> None:
        """Write the store marker that keeps image jobs out of this folder (once)."""
        marker = self.refs_dir / imageio.STORE_MARKER
        if not marker.is_file():
            imageio.write_text_atomic(marker, "segdeck reference store: label maps, not photos\n")

    def choose(self, group: Group, keys: Sequence[str], turn: int = 0) -> None:
        """Record the group's reference keys (after a swap) and the swap count."""
        path = self._folder(group) / CHOICE_NAME
        path.parent.mkdir(parents=True, exist_ok=True)
        self._mark()
        imageio.write_text_atomic(path, json.dumps({"keys": list(keys), "turn": int(turn)}))

    def progress(self, group: Group, wanted: int) -> str:
        """``"group specimen=12: 3/5 references labelled"``.

        Parameters
        ----------
        group : Group
        wanted : int
            References the group should have (the spec's ``references``, or fewer when
            the group is smaller).
        """
        return f"group {group.label}: {len(self.labelled(group))}/{wanted} references labelled"
