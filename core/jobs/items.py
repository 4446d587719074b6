"""Work items that are not (only) one image: a stable id plus what the job needs to load it.

An :class:`Item` *is* its id (a ``str`` subclass): the manifest stores it, events name
it, ``Job.output_stem`` turns it into output names, and every place that treats items
as strings (resume, ``segdeck jobs``, the TUI) keeps working. Next to the id it carries
the job's loading recipe: ``paths`` (zero, one or several files) and ``row`` (a CSV
row, a spec entry). Image jobs keep returning plain relative paths from
``Job.list_items``; their behaviour and output names do not change.

:func:`csv_items` turns a CSV file into items (one per row) with stable ids.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable, Mapping
from pathlib import Path

__all__ = ["Item", "check_item_ids", "csv_items"]


class Item(str):
    """A work item: the string value is its stable id.

    Parameters
    ----------
    id : str
        Stable, unique within the job, non-empty, one line. Outputs are named after it
        (``Job.output_stem``) and the manifest records it, so it must not change between
        runs for the same work (use a CSV id column rather than a row number when the
        file may be re-ordered).
    paths : iterable of path-like, optional
        Input files of the item (absolute, or relative to the job's input).
    row : mapping, optional
        Anything else the job needs to load it (a CSV row: column -> text).

    Raises
    ------
    ValueError
        If ``id`` is empty or holds a line break.
    """

    paths: tuple[Path, ...]
    row: Mapping[str, str]

    def __new__(cls, id: str, *, paths: Iterable[str | Path] = (), row: Mapping[str, str] | None = None):
        text = str(id)
        if not text.strip():
            raise ValueError("an item id must not be empty")
        if "\n" in text or "\r" in text:
            raise ValueError(f"an item id must be one line, got {text!r}")
        self = super().__new__(cls, text)
        self.paths = tuple(Path(p) for p in paths)
        self.row = dict(row or {})
        return self

    @property
    def id(self) -> str:
        """The id as a plain ``str``."""
        return str.__str__(self)

    def __repr__(self) -> str:
        return f"Item({self.id!r}, paths={[str(p) for p in self.paths]!r})"

    def __reduce__(self):  # pickles (process pools, executors) with its recipe
        return (_rebuild_item, (self.id, self.paths, self.row))


def _rebuild_item(id: str, paths, row) -> Item:
    return Item(id, paths=paths, row=row)


def check_item_ids(items: Iterable[str]) -> None:
    """Check that item ids are unique (the manifest and the output names depend on it).

    Raises
    ------
    ValueError
        Naming the first repeated id.
    """
    seen: set[str] = set()
    for item in items:
        key = str.__str__(item)
        if not key.strip():
            raise ValueError("the job listed an item with an empty id")
        if key in seen:
            raise ValueError(f"the job listed the item id {key!r} twice; item ids must be unique")
        seen.add(key)


def csv_items(
    path: str | Path,
    *,
    id_column: str | None = None,
    path_columns: Iterable[str] = (),
    id_prefix: str = "row-",
) -> list[Item]:
    """One :class:`Item` per data row of a CSV file (UTF-8, optional BOM, header row).

    Parameters
    ----------
    path : path-like
        The CSV file.
    id_column : str, optional
        Column holding each row's id (stable across re-ordering). Without it the id
        is ``<id_prefix><row number>`` (1-based, zero-padded to the row count's width),
        stable only while rows keep their order.
    path_columns : iterable of str
        Columns holding input file paths (absolute or relative to the CSV's folder);
        empty cells are skipped. They become ``Item.paths`` in column order.
    id_prefix : str
        Prefix of row-number ids.

    Returns
    -------
    list of Item
        In file order; ``Item.row`` is the row as ``{column: text}``.

    Raises
    ------
    ValueError
        The file is not readable as CSV, has no header, lacks a named column, or an
        id is empty or repeated (the message names the row).
    """
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as fh:
            reader = csv.DictReader(fh)
            columns = reader.fieldnames or []
            rows = list(reader)
    except UnicodeDecodeError:
        raise ValueError(f"{path}: not a UTF-8 text file (a CSV is expected)") from None
    except csv.Error as exc:
        raise ValueError(f"{path}: not a readable CSV file ({exc})") from None
    if not columns:
        raise ValueError(f"{path}: empty CSV file (a header row is expected)")
    path_columns = list(path_columns)
    for col in [id_column, *path_columns]:
        if col is not None and col not in columns:
            raise ValueError(f"{path}: no column {col!r} (columns: {', '.join(columns)})")
    width = len(str(len(rows)))
    items: list[Item] = []
    first_row: dict[str, int] = {}
    for n, row in enumerate(rows, start=1):
        line = n + 1  # the header is line 1
        row = {k: (v if v is not None else "") for k, v in row.items() if k is not None}
        key = row[id_column].strip() if id_column else f"{id_prefix}{n:0{width}d}"
        if not key:
            raise ValueError(f"{path}, line {line}: empty {id_column!r}")
        if key in first_row:
            raise ValueError(f"{path}, line {line}: id {key!r} repeats line {first_row[key]}")
        first_row[key] = line
        paths = [
            (p if p.is_absolute() else path.parent / p)
            for p in (Path(row[c].strip()) for c in path_columns if row[c].strip())
        ]
        items.append(Item(key, paths=paths, row=row))
    return items
