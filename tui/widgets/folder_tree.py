"""Folder tree of the chosen root with recursive image counts per folder, and the
input files other than images that the jobs take (a CSV, a spec file).

The counts come from :func:`segdeck.core.imageio.discover` run once in a thread
worker, so the tree appears at once and fills in its numbers when they are ready.
segdeck output folders (``*.segdeck``, job folders, a propagate project's reference
store, marked ``.segdeck-store`` or named ``*.refs``, with its hidden ``.candidates``
cache) and hidden folders are skipped:
neither listed nor counted, so a reference label map is no photo.
Which files are listed is the jobs' word (``Job.tui_input_files``, a set of suffixes
given to :meth:`FolderTree.set_file_suffixes`); images are counted, never listed.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from rich.text import Text
from textual import work
from textual.message import Message
from textual.widgets import Tree
from textual.widgets.tree import TreeNode

#: Bounds on the folder walk (a tree of a whole disk stays usable).
MAX_DEPTH = 8
MAX_FOLDERS = 5000
#: Input files listed per folder (the rest are left out of the tree).
MAX_FILES = 200


#: Folder-name endings of segdeck outputs besides ``*.segdeck``: the reference store of
#: ``segdeck annotate refs`` (``<spec stem>.refs``, label maps as PNG).
REFS_SUFFIX = ".refs"


def _output_name(name: str) -> bool:
    """Whether a folder named ``name`` is hidden or a segdeck output by its name."""
    from segdeck.core.imageio import OUTPUT_ROOT_SUFFIX

    return name.startswith(".") or name.endswith((OUTPUT_ROOT_SUFFIX, REFS_SUFFIX))


def _skip_dir(path: Path) -> bool:
    """Whether the tree leaves ``path`` out: hidden, a segdeck output by its name, a job
    folder, or a folder marked as a store of label maps (:data:`imageio.STORE_MARKER`:
    a reference store under any name; older stores are known by ``*.refs``)."""
    from segdeck.core.imageio import JOB_MARKER, STORE_MARKER

    return _output_name(path.name) or (path / JOB_MARKER).is_file() or (path / STORE_MARKER).is_file()


def painted_counts(images: list[Path], folders: list[Path]) -> dict[Path, int]:
    """How many of the images under each folder have a saved painting.

    ``segdeck annotate MODE F`` saves ``<flat name>.labels.png`` into
    ``F.segdeck/annotate-<method>/`` (flat name: :func:`imageio.flatten_name` relative
    to ``F``). An image counts as painted for ``F`` when any of those folders holds its
    label map.

    Returns
    -------
    dict
        folder -> painted image count, only for folders that have annotations.
    """
    from segdeck.core.imageio import OUTPUT_ROOT_SUFFIX, flatten_name

    painted: dict[Path, int] = {}
    for folder in folders:
        out_root = folder.parent / f"{folder.name}{OUTPUT_ROOT_SUFFIX}"
        try:
            saved = {p.name for d in out_root.glob("annotate-*") if d.is_dir() for p in d.glob("*.labels.png")}
        except OSError:
            continue
        if not saved:
            continue
        painted[folder] = sum(
            1 for img in images
            if folder in img.parents and f"{flatten_name(img, folder)}.labels.png" in saved
        )
    return painted


def scan_folders(root: Path, suffixes=()) -> tuple[dict[Path, list[Path]], dict[Path, int], dict[Path, int],
                                                  dict[Path, list[Path]]]:
    """Walk ``root``: sub-folders per folder (sorted), recursive image counts, painted
    counts (:func:`painted_counts`) and the input files with one of ``suffixes``.

    Parameters
    ----------
    root : Path
        The folder to walk (resolved).
    suffixes : iterable of str
        File suffixes to list (lower case, with the dot, e.g. ``".csv"``); hidden
        files are left out, at most :data:`MAX_FILES` per folder.

    Returns
    -------
    children : dict
        folder -> its sub-folders (segdeck outputs and hidden folders left out).
    counts : dict
        folder -> number of images under it (as :func:`discover` finds them, less
        those inside a folder the tree skips, such as a ``*.refs`` reference store).
    painted : dict
        folder -> images with a saved painting, for folders that have annotations.
    files : dict
        folder -> its files with one of ``suffixes`` (sorted), for folders that have some.
    """
    from segdeck.core.imageio import discover

    wanted = {s.lower() for s in suffixes}
    children: dict[Path, list[Path]] = {}
    files: dict[Path, list[Path]] = {}
    n = 0
    for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
        here = Path(dirpath)
        depth = len(here.relative_to(root).parts)
        keep = sorted(d for d in dirnames if not _skip_dir(here / d))
        dirnames[:] = keep if depth < MAX_DEPTH and n < MAX_FOLDERS else []
        children[here] = [here / d for d in keep]
        n += len(keep)
        if wanted:
            found = sorted(f for f in filenames if not f.startswith(".") and Path(f).suffix.lower() in wanted)
            if found:
                files[here] = [here / f for f in found[:MAX_FILES]]
    counts: dict[Path, int] = {root: 0}
    try:
        images = discover(root)
    except (FileNotFoundError, OSError):
        images = []
    # the tree's own rule on top of discover's (which skips *.segdeck and job folders):
    # a reference store's label maps are outputs, not photos
    images = [img for img in images if not any(_output_name(part) for part in img.relative_to(root).parts[:-1])]
    for img in images:
        folder = img.parent
        while True:
            counts[folder] = counts.get(folder, 0) + 1
            if folder == root or folder == folder.parent:
                break
            folder = folder.parent
    return children, counts, painted_counts(images, list(children)), files


class FolderTree(Tree[Path]):
    """Tree of folders under ``root``, each labelled with its image count, and the
    input files the jobs take (:meth:`set_file_suffixes`) as leaves."""

    @dataclass
    class Scanned(Message):
        """The background scan finished."""

        children: dict
        counts: dict
        painted: dict
        files: dict
        suffixes: frozenset = frozenset()

    @dataclass
    class FolderChosen(Message):
        """The cursor moved to a folder (``count`` images under it, None while
        counting) or, with ``is_file``, to an input file (``count`` None)."""

        path: Path
        count: int | None
        is_file: bool = False

    def __init__(self, root: Path, **kwargs):
        self.root_path = Path(root).resolve()
        super().__init__(self._label(self.root_path, None, root=True), data=self.root_path, **kwargs)
        self.counts: dict[Path, int] = {}
        self.painted: dict[Path, int] = {}
        self.files: dict[Path, list[Path]] = {}
        self.file_suffixes: frozenset[str] = frozenset()
        self.scanned = False

    def _label(self, path: Path, count: int | None, root: bool = False) -> Text:
        name = (path.name or str(path)) if root else path.name
        num = "counting…" if count is None else f"{count} image{'s' if count != 1 else ''}"
        if count is not None and path in self.painted:
            num = f"{self.painted[path]} painted / {num}"
        return Text.assemble(name, (f"  ({num})", "dim" if count else "dim italic"))

    def on_mount(self) -> None:
        self.root.expand()
        self.call_after_refresh(self.rescan)

    def set_file_suffixes(self, suffixes) -> None:
        """List the files with these suffixes (``".csv"``...) too; rescans when they change."""
        suffixes = frozenset(s.lower() for s in suffixes)
        if suffixes != self.file_suffixes:
            self.file_suffixes = suffixes
            self.rescan()

    def rescan(self) -> None:
        """Scan the folders again (new photos, removed folders)."""
        self.scanned = False
        self.root.set_label(self._label(self.root_path, None, root=True))
        self._scan()

    @work(thread=True, exclusive=True, group="folder-scan")
    def _scan(self) -> None:
        suffixes = self.file_suffixes
        children, counts, painted, files = scan_folders(self.root_path, suffixes)
        self.post_message(self.Scanned(children, counts, painted, files, suffixes))

    def on_folder_tree_scanned(self, message: Scanned) -> None:
        message.stop()
        if message.suffixes != self.file_suffixes:
            # a scan started before the suffixes changed (an exclusive thread worker is
            # not stopped, it finishes): its files are not the ones wanted, a newer scan follows
            return
        self.counts = message.counts
        self.painted = message.painted
        self.files = message.files
        expanded = {n.data for n in self._walk(self.root) if n.is_expanded}
        self.root.remove_children()
        self.root.set_label(self._label(self.root_path, message.counts.get(self.root_path, 0), root=True))

        def add(node: TreeNode[Path], folder: Path) -> None:
            for sub in message.children.get(folder, []):
                kids = message.children.get(sub, []) or message.files.get(sub, [])
                child = node.add(self._label(sub, message.counts.get(sub, 0)), data=sub, allow_expand=bool(kids))
                add(child, sub)
                if sub in expanded:
                    child.expand()
            for path in message.files.get(folder, []):
                node.add_leaf(Text(path.name, style="italic"), data=path)

        add(self.root, self.root_path)
        self.root.expand()
        self.scanned = True
        self._announce()

    def is_input_file(self, path: Path) -> bool:
        """Whether ``path`` is one of the listed input files (not a folder)."""
        return any(path in listed for listed in self.files.values())

    def _walk(self, node: TreeNode[Path]):
        yield node
        for child in node.children:
            yield from self._walk(child)

    @property
    def selected_path(self) -> Path:
        node = self.cursor_node
        return node.data if node is not None and node.data is not None else self.root_path

    def _announce(self) -> None:
        path = self.selected_path
        if self.is_input_file(path):
            self.post_message(self.FolderChosen(path, None, is_file=True))
            return
        self.post_message(self.FolderChosen(path, self.counts.get(path, 0) if self.scanned else None))

    def on_tree_node_highlighted(self, event: Tree.NodeHighlighted) -> None:
        event.stop()
        self._announce()
