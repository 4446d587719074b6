"""The project spec of group propagation: a TOML file naming a metadata CSV, how to find
each row's image, how rows form groups, and the propagation settings.

Example (``butterflies.toml``)::

    csv = "metadata.csv"           # relative to this file's folder
    key = "id"                     # primary-key column (unique, names the outputs)
    template = "{specimen}/{view}_{id}.jpg"   # or: path = "image_column"
    group_by = ["specimen"]        # [] = the whole CSV is one group
    root = "images"                # image paths resolve against it (relative to this file)
    model = "sam2.1-tiny"
    mask_mode = "original"         # original | position | binary
    references = 5                 # reference images per group
    seed = 0                       # sampling seed
    # refs_dir = "butterflies.refs"  # default: <spec stem>.refs beside the spec

:func:`load_spec` validates the file alone; :func:`load_project` reads the CSV too and
returns a :class:`Project`: every row with its image path, the groups, and the rows
whose image file is missing (listed, not fatal: the rest goes on).

CSV reading (:func:`read_csv`)
------------------------------
UTF-8 with or without a BOM (UTF-16 with a BOM, as spreadsheet programs save "Unicode
text", is read too); any other encoding is refused with the byte offset and line of the
first undecodable byte. The delimiter is ``,``, ``;`` or a tab, whichever occurs most
often outside quotes in the header line. Quoted fields may hold delimiters, quotes
(doubled) and line breaks; line numbers in messages are the physical line where the
record starts (the header is line 1). Blank lines are skipped.

Image paths
-----------
From a column (``path``) or a template (``template``) whose replacement fields name
columns only: ``{column}``. Conversions (``{a!r}``), format specs (``{a:>3}``),
attribute or index access (``{a.b}``, ``{a[0]}``) and positional fields (``{}``) are
refused; the template is never passed to ``str.format`` nor evaluated. Backslashes are
read as folder separators. A path that is absolute or holds a ``..`` part is refused
(it would leave ``root``).

File-name-safe names (:func:`file_slug`)
----------------------------------------
Outputs and reference files are named after primary keys and groups: every run of
characters outside ``A-Z a-z 0-9 . _ = -`` becomes ``-``, leading dots and dashes are
dropped, an empty result becomes ``_``. Two keys (or two groups) whose names differ but
whose slugs are equal ignoring case are refused, naming both, so no output overwrites
another on any file system.

Errors are :class:`SpecError` (a :class:`~segdeck.core.errors.SegdeckError` and
``ValueError``), one line each, naming the file and, for CSV problems, the line.
"""

from __future__ import annotations

import csv
import io
import random
import re
import string
import tomllib
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from segdeck.core.errors import SegdeckError

__all__ = [
    "MASK_MODES",
    "Group",
    "Project",
    "ProjectSpec",
    "Row",
    "SpecError",
    "file_slug",
    "load_project",
    "load_spec",
    "read_csv",
    "sample_references",
    "swap_reference",
    "template_fields",
]

MASK_MODES = ("original", "position", "binary")
#: The group label when ``group_by`` is empty.
ALL_GROUP = "all"
#: At most this many offenders are named in one message.
_NAMED = 5


class SpecError(SegdeckError, ValueError):
    """A bad project spec or metadata CSV; the message is one line naming the file."""


def file_slug(text: str) -> str:
    """File-name-safe form of a key or group label (see the module docstring).

    >>> file_slug("specimen=12, view=dorsal")
    'specimen=12-view=dorsal'
    >>> file_slug("../etc/passwd")
    'etc-passwd'
    """
    out = re.sub(r"[^A-Za-z0-9._=-]+", "-", str(text)).lstrip(".-").rstrip("-")
    return out or "_"


# ---- the spec file --------------------------------------------------------------------


def template_fields(template: str) -> list[str]:
    """The column names a path template refers to, in order of appearance.

    Parameters
    ----------
    template : str
        E.g. ``"{specimen}/{view}_{id}.jpg"``; ``{{`` and ``}}`` are literal braces.

    Returns
    -------
    list of str

    Raises
    ------
    ValueError
        Unbalanced braces, a positional field, a conversion, a format spec, or
        attribute / index access.
    """
    names = []
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"template {template!r}: {exc}") from None
    for _literal, name, spec, conversion in parsed:
        if name is None:
            continue
        if name == "" or name.isdigit():
            raise ValueError(f"template {template!r}: every {{field}} must name a column")
        if conversion is not None:
            raise ValueError(f"template {template!r}: conversions such as '!{conversion}' are not allowed")
        if spec:
            raise ValueError(f"template {template!r}: format specs such as ':{spec}' are not allowed")
        if "." in name or "[" in name or "]" in name:
            raise ValueError(f"template {template!r}: {{{name}}}: attribute or index access is not allowed")
        names.append(name)
    if not names:
        raise ValueError(f"template {template!r} names no column")
    return names


def _fill_template(template: str, row: dict[str, str]) -> str:
    """The template with each field replaced by the row's value (no ``str.format``)."""
    parts = []
    for literal, name, _spec, _conv in string.Formatter().parse(template):
        parts.append(literal)
        if name is not None:
            parts.append(row[name].strip())
    return "".join(parts)


class ProjectSpec(BaseModel):
    """The project spec (the TOML file's keys; see the module docstring for an example).

    Attributes
    ----------
    csv : str
        Metadata CSV, relative to the spec file's folder (or absolute).
    key : str
        Primary-key column: unique per row, names the outputs.
    path, template : str
        Exactly one: the column holding each image's path, or a template of columns.
    group_by : list of str
        Columns whose values form the groups; empty: one group.
    root : str
        Folder the image paths resolve against, relative to the spec's folder.
    model : str
        A registered SAM 2.1 model (``segdeck models list``).
    mask_mode : {"original", "position", "binary"}
        How object IDs are written (see :mod:`segdeck.core.propagate.modes`).
    references : int
        Reference images sampled per group (>= 1).
    seed : int
        Sampling seed of the references.
    refs_dir : str, optional
        Where the reference label maps live (default ``<spec stem>.refs`` beside the spec).
    """

    model_config = ConfigDict(extra="forbid")

    csv: str = Field(..., min_length=1, description="metadata CSV (relative to the spec file's folder)")
    key: str = Field(..., min_length=1, description="primary-key column")
    path: str | None = Field(None, min_length=1, description="column holding each image's path")
    template: str | None = Field(None, min_length=1, description="image path built from columns: '{a}/{b}.jpg'")
    group_by: list[str] = Field(default_factory=list, description="columns forming the groups (empty: one group)")
    root: str = Field(".", description="folder image paths resolve against (relative to the spec's folder)")
    model: str = Field("sam2.1-tiny", description="SAM 2.1 model")
    mask_mode: Literal["original", "position", "binary"] = Field("original", description="object IDs of the outputs")
    references: int = Field(5, ge=1, le=1000, description="reference images per group")
    seed: int = Field(0, description="reference sampling seed")
    refs_dir: str | None = Field(None, description="reference label maps folder (default: <spec stem>.refs)")

    @field_validator("template")
    @classmethod
    def _check_template(cls, value: str | None) -> str | None:
        if value is not None:
            template_fields(value)
        return value

    @field_validator("group_by")
    @classmethod
    def _unique_group_by(cls, value: list[str]) -> list[str]:
        if len(set(value)) != len(value):
            raise ValueError(f"group_by names a column twice: {value}")
        return value

    @field_validator("model")
    @classmethod
    def _sam2_model(cls, value: str) -> str:
        from segdeck.core.models import model_names

        names = model_names("sam2")
        if value not in names:
            raise ValueError(f"unknown SAM 2.1 model {value!r} (known: {', '.join(names)})")
        return value

    @model_validator(mode="after")
    def _path_or_template(self) -> ProjectSpec:
        if (self.path is None) == (self.template is None):
            raise ValueError("give exactly one of 'path' (a column) and 'template' (built from columns)")
        return self

    def columns_used(self) -> list[tuple[str, str]]:
        """(setting, column) pairs this spec needs from the CSV header."""
        used = [("key", self.key)]
        if self.path is not None:
            used.append(("path", self.path))
        else:
            used += [("template", c) for c in template_fields(self.template or "")]
        used += [("group_by", c) for c in self.group_by]
        return used


#: Suffixes of metadata tables: given where the spec is expected, they get a hint.
TABLE_SUFFIXES = (".csv", ".tsv", ".tab", ".txt")


def not_a_spec_line(path: str | Path) -> str:
    """The one-line refusal of ``path`` where a project spec (TOML) is expected.

    A metadata table (``.csv``, ``.tsv``, ...) is the likely mix-up: the line says how
    to write the spec that names it (``csv = "<name>"`` plus the key, the image paths
    and the groups), so the user does not have to guess the layout.
    """
    path = Path(path)
    if path.suffix.lower() in TABLE_SUFFIXES:
        return (f"{path}: a project spec (.toml) is expected, not the metadata table; write one beside it "
                f"with csv = \"{path.name}\", key, template (or path) and group_by (README: propagate)")
    return f"{path}: a project spec (.toml) is expected"


def load_spec(path: str | Path) -> ProjectSpec:
    """Read and validate a project spec TOML file.

    Parameters
    ----------
    path : path-like

    Returns
    -------
    ProjectSpec

    Raises
    ------
    SpecError
        Missing or unreadable file, bad TOML, unknown or bad keys (one line).
    """
    path = Path(path)
    if path.suffix.lower() in TABLE_SUFFIXES and path.is_file():
        raise SpecError(not_a_spec_line(path))
    try:
        text = path.read_bytes().decode("utf-8-sig")
    except FileNotFoundError:
        raise SpecError(f"{path}: no such spec file") from None
    except IsADirectoryError:
        raise SpecError(f"{path}: a folder, not a spec file (TOML)") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read ({exc.strerror or exc})") from None
    except UnicodeDecodeError as exc:
        if path.suffix.lower() != ".toml":  # an image, a spreadsheet, ...
            raise SpecError(not_a_spec_line(path)) from None
        raise SpecError(f"{path}: not UTF-8 text (byte {exc.start}); a TOML spec file is expected") from None
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise SpecError(f"{path}: not valid TOML ({exc})") from None
    try:
        return ProjectSpec.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            where = ".".join(str(p) for p in err["loc"])
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = f"unknown setting (known: {', '.join(ProjectSpec.model_fields)})"
            problems.append(f"{where}: {msg}" if where else msg)
        raise SpecError(f"{path}: " + "; ".join(problems)) from None


# ---- the CSV --------------------------------------------------------------------------


def _decode(path: Path, raw: bytes) -> str:
    if raw.startswith((b"\xff\xfe", b"\xfe\xff")):
        try:
            return raw.decode("utf-16")
        except UnicodeDecodeError as exc:
            raise SpecError(f"{path}: bad UTF-16 text at byte {exc.start}") from None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = raw.count(b"\n", 0, exc.start) + 1
        raise SpecError(
            f"{path}: not UTF-8 text (byte 0x{raw[exc.start]:02x} at byte offset {exc.start}, line {line}); "
            "save the CSV as UTF-8"
        ) from None


def _sniff_delimiter(text: str) -> str:
    """``,``, ``;`` or tab: the one occurring most often outside quotes in the first record."""
    counts = {",": 0, ";": 0, "\t": 0}
    quoted = False
    for ch in text:
        if ch == '"':
            quoted = not quoted
        elif not quoted and ch in "\r\n":
            break
        elif not quoted and ch in counts:
            counts[ch] += 1
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def read_csv(path: str | Path) -> tuple[list[str], list[tuple[int, dict[str, str]]]]:
    """Read a metadata CSV (see the module docstring for encodings and delimiters).

    Parameters
    ----------
    path : path-like

    Returns
    -------
    columns : list of str
        The header, stripped of surrounding spaces.
    rows : list of (int, dict)
        (physical line where the record starts, {column: text}) per data record.

    Raises
    ------
    SpecError
        Unreadable file, bad encoding, malformed CSV, an empty or repeated header name,
        a record with more fields than the header.
    """
    path = Path(path)
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        raise SpecError(f"{path}: no such CSV file") from None
    except OSError as exc:
        raise SpecError(f"{path}: cannot read ({exc.strerror or exc})") from None
    text = _decode(path, raw)
    if "\x00" in text:
        raise SpecError(f"{path}: holds NUL bytes; not a text CSV file")
    delimiter = _sniff_delimiter(text)
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=delimiter, strict=True)
    records: list[tuple[int, list[str]]] = []
    end = 0
    try:
        for rec in reader:
            start, end = end + 1, reader.line_num
            if rec and any(c.strip() for c in rec):
                records.append((start, rec))
    except csv.Error as exc:
        raise SpecError(f"{path}, line {reader.line_num}: not readable as CSV ({exc})") from None
    if not records:
        raise SpecError(f"{path}: empty CSV file (a header row is expected)")
    (_, header), body = records[0], records[1:]
    columns = [c.strip() for c in header]
    for k, name in enumerate(columns):
        if not name:
            raise SpecError(f"{path}: column {k + 1} of the header has no name")
        if name in columns[:k]:
            raise SpecError(f"{path}: the header names column {name!r} twice")
    rows = []
    for line, rec in body:
        if len(rec) > len(columns):
            raise SpecError(
                f"{path}, line {line}: {len(rec)} fields but the header has {len(columns)} "
                f"(delimiter {delimiter!r}; quote fields that hold it)"
            )
        rows.append((line, {c: (rec[k] if k < len(rec) else "") for k, c in enumerate(columns)}))
    return columns, rows


# ---- the project ----------------------------------------------------------------------


@dataclass(frozen=True)
class Row:
    """One CSV record.

    Attributes
    ----------
    key : str
        Primary key (stripped).
    line : int
        Physical CSV line where the record starts.
    values : dict of str to str
        The record, column -> text.
    relpath : str
        Image path relative to the root, POSIX style.
    path : Path
        Absolute image path.
    group : tuple of str
        Values of the ``group_by`` columns.
    """

    key: str
    line: int
    values: dict[str, str]
    relpath: str
    path: Path
    group: tuple[str, ...]


@dataclass
class Group:
    """The rows sharing the values of the ``group_by`` columns.

    Attributes
    ----------
    values : dict of str to str
        ``group_by`` column -> value (empty for the single group).
    label : str
        ``"specimen=12, view=dorsal"`` (``"all"`` for the single group).
    slug : str
        File-name-safe label (:func:`file_slug`), unique in the project.
    rows : list of Row
        In CSV order.
    """

    values: dict[str, str]
    label: str
    slug: str
    rows: list[Row] = field(default_factory=list)

    @property
    def key(self) -> tuple[str, ...]:
        return tuple(self.values.values())


@dataclass
class Project:
    """A loaded spec with its CSV: rows, groups, missing files.

    Attributes
    ----------
    spec_path : Path
        The spec file (absolute).
    spec : ProjectSpec
    csv_path, root, refs_dir : Path
        Resolved against the spec's folder.
    columns : list of str
        The CSV header.
    rows : list of Row
        Every record, CSV order.
    groups : list of Group
        In order of first appearance in the CSV.
    missing : list of Row
        Rows whose image file does not exist (they stay in ``rows``; sampling skips them).
    """

    spec_path: Path
    spec: ProjectSpec
    csv_path: Path
    root: Path
    refs_dir: Path
    columns: list[str]
    rows: list[Row]
    groups: list[Group]
    missing: list[Row]

    def group_of(self, row: Row) -> Group:
        """The group holding ``row``."""
        return self._by_key[row.group]

    def group_named(self, label_or_slug: str) -> Group:
        """The group with this label or slug.

        Raises
        ------
        KeyError
        """
        for g in self.groups:
            if label_or_slug in (g.label, g.slug):
                return g
        raise KeyError(label_or_slug)

    def row(self, key: str) -> Row:
        """The row with this primary key (KeyError when none)."""
        return self._by_row_key[key]

    def __post_init__(self) -> None:
        self._by_key = {g.key: g for g in self.groups}
        self._by_row_key = {r.key: r for r in self.rows}
        missing = {r.key for r in self.missing}
        self._present = {g.key: [r for r in g.rows if r.key not in missing] for g in self.groups}

    def present_rows(self, group: Group) -> list[Row]:
        """The rows of ``group`` whose image file exists, CSV order."""
        return self._present[group.key]

    def sampled_references(self, group: Group) -> list[Row]:
        """The group's seeded reference sample (:func:`sample_references` over the rows
        whose image exists, with the spec's ``references`` and ``seed``)."""
        return sample_references(self.present_rows(group), self.spec.references, self.spec.seed)

    def missing_text(self) -> str:
        """``"3 of 40 images missing: a.jpg (line 4), ..."`` or ``""``."""
        if not self.missing:
            return ""
        named = ", ".join(f"{r.relpath!r} (line {r.line})" for r in self.missing[:_NAMED])
        more = f" and {len(self.missing) - _NAMED} more" if len(self.missing) > _NAMED else ""
        return f"{len(self.missing)} of {len(self.rows)} images missing under {self.root}: {named}{more}"


def _clean_relpath(text: str) -> str | None:
    """POSIX relative path, or None when it is absolute or climbs out with ``..``."""
    t = text.strip().replace("\\", "/")
    if not t or t.startswith("/") or re.match(r"^[A-Za-z]:", t):
        return None
    parts = [p for p in PurePosixPath(t).parts if p != "."]
    if not parts or ".." in parts:
        return None
    return "/".join(parts)


def _lines(pairs: list[tuple[str, int]]) -> str:
    shown = ", ".join(f"{v!r} (line {n})" for v, n in pairs[:_NAMED])
    return shown + (f" and {len(pairs) - _NAMED} more" if len(pairs) > _NAMED else "")


def load_project(spec_path: str | Path, spec: ProjectSpec | None = None) -> Project:
    """Load a spec and its CSV into a :class:`Project` (no image is decoded).

    Parameters
    ----------
    spec_path : path-like
        The TOML spec file; relative paths in it resolve against its folder.
    spec : ProjectSpec, optional
        Already loaded spec (default: :func:`load_spec` of ``spec_path``).

    Returns
    -------
    Project

    Raises
    ------
    SpecError
        Bad spec, unreadable CSV, a column the spec names that the header lacks (the
        header is listed), empty or duplicate primary keys (the lines are named), an
        empty image path, a path leaving the root (``..`` or absolute), two keys or
        groups with the same file-name slug, a root that is not a folder.
    """
    spec_path = Path(spec_path).absolute()
    spec = spec or load_spec(spec_path)
    base = spec_path.parent
    csv_path = base / spec.csv
    root = base / spec.root
    refs_dir = base / (spec.refs_dir or f"{spec_path.stem}.refs")
    columns, records = read_csv(csv_path)
    for setting, col in spec.columns_used():
        if col not in columns:
            raise SpecError(
                f"{spec_path}: {setting} names column {col!r}, which {csv_path.name} lacks "
                f"(columns: {', '.join(columns)})"
            )
    if not root.is_dir():
        raise SpecError(f"{spec_path}: root {spec.root!r} is not a folder ({root})")
    if not records:
        raise SpecError(f"{csv_path}: no data rows below the header")

    empty = [line for line, rec in records if not rec[spec.key].strip()]
    if empty:
        raise SpecError(f"{csv_path}: empty primary key {spec.key!r} on line(s) {', '.join(map(str, empty[:_NAMED]))}")
    broken = [line for line, rec in records if "\n" in rec[spec.key].strip() or "\r" in rec[spec.key].strip()]
    if broken:
        raise SpecError(f"{csv_path}: primary key {spec.key!r} holds a line break on line(s) "
                        f"{', '.join(map(str, broken[:_NAMED]))}")
    first: dict[str, int] = {}
    dups: dict[str, list[int]] = {}
    for line, rec in records:
        k = rec[spec.key].strip()
        if k in first:
            dups.setdefault(k, [first[k]]).append(line)
        else:
            first[k] = line
    if dups:
        shown = "; ".join(f"{k!r} on lines {', '.join(map(str, v))}" for k, v in list(dups.items())[:_NAMED])
        more = f" and {len(dups) - _NAMED} more" if len(dups) > _NAMED else ""
        raise SpecError(f"{csv_path}: duplicate primary keys in column {spec.key!r}: {shown}{more}")

    rows: list[Row] = []
    bad: list[tuple[str, int]] = []
    blank: list[int] = []
    for line, rec in records:
        text = rec[spec.path].strip() if spec.path is not None else _fill_template(spec.template or "", rec)
        if not text.strip() or (spec.template is not None and any(
                not rec[c].strip() for c in template_fields(spec.template))):
            blank.append(line)
            continue
        rel = _clean_relpath(text)
        if rel is None:
            bad.append((text, line))
            continue
        group = tuple(rec[c].strip() for c in spec.group_by)
        rows.append(Row(rec[spec.key].strip(), line, rec, rel, root / rel, group))
    if blank:
        what = f"column {spec.path!r}" if spec.path is not None else f"a column of template {spec.template!r}"
        raise SpecError(f"{csv_path}: empty image path ({what}) on line(s) {', '.join(map(str, blank[:_NAMED]))}")
    if bad:
        raise SpecError(
            f"{csv_path}: image paths must stay inside the root (no absolute paths, no '..'): {_lines(bad)}"
        )

    _refuse_slug_collisions(csv_path, [(r.key, r.line) for r in rows], "primary keys")
    groups: dict[tuple[str, ...], Group] = {}
    for r in rows:
        g = groups.get(r.group)
        if g is None:
            values = dict(zip(spec.group_by, r.group, strict=True))
            label = ", ".join(f"{c}={v}" for c, v in values.items()) if values else ALL_GROUP
            g = groups[r.group] = Group(values, label, file_slug(label))
        g.rows.append(r)
    _refuse_slug_collisions(csv_path, [(g.label, g.rows[0].line) for g in groups.values()], "groups")
    missing = [r for r in rows if not r.path.is_file()]
    return Project(spec_path, spec, csv_path, root, refs_dir, columns, rows, list(groups.values()), missing)


def _refuse_slug_collisions(csv_path: Path, names: list[tuple[str, int]], what: str) -> None:
    seen: dict[str, tuple[str, int]] = {}
    for name, line in names:
        s = file_slug(name).lower()
        if s in seen and seen[s][0] != name:
            other, oline = seen[s]
            raise SpecError(
                f"{csv_path}: {what} {other!r} (line {oline}) and {name!r} (line {line}) give the same "
                f"file name {file_slug(name)!r}; make them differ in letters or digits"
            )
        seen.setdefault(s, (name, line))


# ---- references -----------------------------------------------------------------------


def sample_references(rows: list, k: int, seed: int) -> list:
    """The seeded reference sample of a group: ``random.Random(seed).sample(rows, k)``.

    The same rows in the same order with the same ``seed`` give the same references (as
    SST does); fewer than ``k`` rows give all of them (in sampled order).

    Parameters
    ----------
    rows : list
        The group's candidate rows (or keys), in a stable order (CSV order).
    k : int
        References wanted, >= 1.
    seed : int

    Returns
    -------
    list
        ``min(k, len(rows))`` distinct elements of ``rows``.

    Raises
    ------
    ValueError
        If ``k < 1``.
    """
    if k < 1:
        raise ValueError(f"references per group must be at least 1, got {k}")
    rows = list(rows)
    return random.Random(seed).sample(rows, min(k, len(rows)))


def swap_reference(rows: list, current: list, position: int, seed: int, turn: int = 0) -> list:
    """Replace the reference at ``position`` with another random row of the group.

    Deterministic: the choice depends on ``seed``, ``turn`` (how many swaps this group
    had before; the window counts them) and the rows; the new row is drawn among the
    rows not in ``current``, in their given order.

    Parameters
    ----------
    rows : list
        The group's candidate rows, stable order.
    current : list
        The current references (elements of ``rows``).
    position : int
        Index in ``current`` to replace.
    seed, turn : int

    Returns
    -------
    list
        A new list, ``current`` with one element replaced; ``current`` unchanged (a copy)
        when every row is already a reference.

    Raises
    ------
    IndexError
        ``position`` out of range.
    """
    if not 0 <= position < len(current):
        raise IndexError(f"reference position {position} out of range (0..{len(current) - 1})")
    others = [r for r in rows if r not in current]
    out = list(current)
    if others:
        out[position] = random.Random(f"segdeck-swap/{seed}/{turn}").choice(others)
    return out
