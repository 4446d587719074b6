"""Typed job parameters: one pydantic model per job, the single source for the CLI
options, the TUI form, TOML presets and the ``job.toml`` saved with every run.

A job's model subclasses :class:`JobParams`. Each field carries a ``description``
(one line, shown as CLI help and TUI hint) and, for numbers, a range (``ge``/``le``).
Fields may be nested models (one level is enough in practice); they are addressed
with dotted names, ``felzenszwalb.scale``, everywhere: ``--felzenszwalb.scale 200``,
``--set felzenszwalb.scale=200``, a ``[felzenszwalb]`` table in TOML.

Precedence, lowest first: model defaults < preset (``--preset NAME``) < config file
(``--config FILE``) < ``--set key=value`` < explicit ``--option`` flags.
"""

from __future__ import annotations

import hashlib
import json
import tomllib
import types
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError

from segdeck.core.errors import ParamsError

PRESETS_DIR = Path(__file__).parent / "presets"


class JobParams(BaseModel):
    """Base class of every job's parameters: unknown keys are refused, assignment is validated."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)


@dataclass(frozen=True)
class FieldSpec:
    """One leaf parameter of a params model, flattened for forms and CLIs.

    Attributes
    ----------
    name : str
        Dotted name (``"filters.min_area"``).
    kind : {"int", "float", "bool", "str", "choice", "list", "other"}
        The widget / parser to use.
    default : Any
        Default value from the model.
    description : str
        One-line help.
    choices : tuple
        Allowed values for ``kind == "choice"`` (from a ``Literal`` annotation).
    ge, le, gt, lt : float or None
        Numeric bounds from the field's constraints.
    optional : bool
        Whether ``None`` is allowed.
    derived : bool
        Filled in by the model's validators (e.g. a checkpoint's sha256), never typed by
        a user: recorded in ``job.toml`` and the run name, not offered as a CLI option or
        a form field. Declared with ``json_schema_extra=DERIVED``.
    """

    name: str
    kind: str
    default: Any
    description: str
    choices: tuple = ()
    ge: float | None = None
    le: float | None = None
    gt: float | None = None
    lt: float | None = None
    optional: bool = False
    derived: bool = False

    @property
    def group(self) -> str:
        """The nested-model name this field belongs to, or ``""`` at top level."""
        return self.name.rpartition(".")[0]


#: ``json_schema_extra`` of a field filled in by validators, not by a user (see
#: :attr:`FieldSpec.derived`); the TUI form hides it too (its ``"tui": "hidden"`` mark).
DERIVED = {"derived": True, "tui": "hidden"}


def _unwrap_optional(annotation: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        if len(args) == 1 and len(typing.get_args(annotation)) == 2:
            return args[0], True
    return annotation, False


def _kind(annotation: Any) -> tuple[str, tuple]:
    if typing.get_origin(annotation) is Literal:
        return "choice", tuple(typing.get_args(annotation))
    if annotation is bool:
        return "bool", ()
    if annotation is int:
        return "int", ()
    if annotation is float:
        return "float", ()
    if annotation is str:
        return "str", ()
    if typing.get_origin(annotation) in (list, tuple):
        return "list", ()
    return "other", ()


def field_specs(model_cls: type[BaseModel], prefix: str = "") -> list[FieldSpec]:
    """Flatten a params model into :class:`FieldSpec` leaves, nested models first-level dotted.

    Parameters
    ----------
    model_cls : type of pydantic.BaseModel
    prefix : str
        Used in recursion; leave empty.
    """
    specs: list[FieldSpec] = []
    for name, info in model_cls.model_fields.items():
        annotation, optional = _unwrap_optional(info.annotation)
        dotted = f"{prefix}{name}"
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            specs.extend(field_specs(annotation, prefix=f"{dotted}."))
            continue
        kind, choices = _kind(annotation)
        bounds: dict[str, float | None] = {"ge": None, "le": None, "gt": None, "lt": None}
        for meta in info.metadata:
            for key in bounds:
                if getattr(meta, key, None) is not None:
                    bounds[key] = getattr(meta, key)
        default = info.get_default(call_default_factory=True)
        specs.append(
            FieldSpec(
                name=dotted,
                kind=kind,
                default=default,
                description=(info.description or "").strip(),
                choices=choices,
                optional=optional,
                derived=isinstance(info.json_schema_extra, dict) and bool(info.json_schema_extra.get("derived")),
                **bounds,
            )
        )
    return specs


def set_dotted(data: dict, key: str, value: Any) -> None:
    """Set ``data["a"]["b"] = value`` for ``key == "a.b"``, creating tables as needed."""
    parts = key.split(".")
    node = data
    for part in parts[:-1]:
        nxt = node.get(part)
        if not isinstance(nxt, dict):
            nxt = {}
            node[part] = nxt
        node = nxt
    node[parts[-1]] = value


def _is_field(model_cls: type[BaseModel], key: str) -> bool:
    """Whether dotted ``key`` names a field of ``model_cls`` (through its sections)."""
    cls: Any = model_cls
    for part in key.split("."):
        fields = getattr(cls, "model_fields", None)
        if not fields or part not in fields:
            return False
        ann = fields[part].annotation
        cls = next((a for a in (ann, *typing.get_args(ann)) if isinstance(a, type) and issubclass(a, BaseModel)),
                   None)
    return True


def unset_dotted(data: dict, key: str) -> None:
    """Remove ``data["a"]["b"]`` for ``key == "a.b"`` (nothing when absent), so the
    field takes its default."""
    *parents, last = key.split(".")
    node: Any = data
    for part in parents:
        node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            return
    node.pop(last, None)


def get_dotted(data: dict | BaseModel, key: str) -> Any:
    """Read a dotted key from a nested dict or model."""
    node: Any = data
    for part in key.split("."):
        node = node[part] if isinstance(node, dict) else getattr(node, part)
    return node


def deep_merge(base: dict, update: dict) -> dict:
    """Recursively merge ``update`` into a copy of ``base`` (tables merge, values replace)."""
    out = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = deep_merge(out[key], value)
        else:
            out[key] = value
    return out


def parse_scalar(text: str) -> Any:
    """Parse a ``--set`` value as a TOML value (``3``, ``0.5``, ``true``, ``[1, 2]``, ``"x"``);
    anything that is not valid TOML is kept as a plain string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        return text


def user_presets_dir() -> Path:
    """Folder for the user's own presets: ``<platformdirs config>/segdeck/presets``."""
    from platformdirs import user_config_dir

    return Path(user_config_dir("segdeck")) / "presets"


def load_presets(job_name: str) -> dict[str, dict]:
    """Presets for a job: the shipped ``core/presets/<job>.toml`` tables, then the user's
    ``<config>/presets/<job>.toml`` tables (which win on name clashes).

    Returns
    -------
    dict
        preset name -> nested dict of values. ``"default"`` is always present (empty
        when no file defines it: the model defaults).
    """
    presets: dict[str, dict] = {"default": {}}
    for folder in (PRESETS_DIR, user_presets_dir()):
        path = folder / f"{job_name}.toml"
        if path.is_file():
            try:
                data = tomllib.loads(path.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError) as exc:
                raise ParamsError(f"{path}: cannot read presets ({exc})") from None
            except tomllib.TOMLDecodeError as exc:
                raise ParamsError(f"{path}: invalid TOML ({exc})") from None
            for name, table in data.items():
                if isinstance(table, dict):
                    presets[name] = deep_merge(presets.get(name, {}), table)
    return presets


def _dotted_leaves(value: Any, prefix: str) -> list[str]:
    """``{"a": {"b": 1}, "c": 2}`` under ``prefix`` -> ``["prefix.a.b", "prefix.c"]``."""
    if isinstance(value, dict) and value:
        return [leaf for k, v in value.items() for leaf in _dotted_leaves(v, f"{prefix}.{k}")]
    return [prefix]


def close_names(model_cls: type[BaseModel], key: str, n: int = 3) -> list[str]:
    """The parameter names of ``model_cls`` closest to a misspelt dotted ``key``
    (:func:`difflib.get_close_matches`): within the key's section when that section
    exists (``slic.rular`` -> ``slic.ruler``), else among all names (``max-side`` ->
    ``max_side``), else by the last part alone (``region_size`` -> ``slic.region_size``:
    the section forgotten). Empty when nothing is close."""
    import difflib

    leaves = [s.name for s in field_specs(model_cls)]
    sections = sorted({leaf.rpartition(".")[0] for leaf in leaves if "." in leaf})
    key = key.replace("-", "_")
    section = key.rpartition(".")[0]
    if section in sections:  # compare the last parts: the shared prefix would make anything look close
        tails = [x.rpartition(".")[2] for x in leaves if x.rpartition(".")[0] == section]
        return [f"{section}.{t}" for t in difflib.get_close_matches(key.rpartition(".")[2], tails, n=n, cutoff=0.6)]
    found = difflib.get_close_matches(key, leaves + sections, n=n, cutoff=0.6)
    if not found:
        by_tail: dict[str, list[str]] = {}
        for name in leaves:
            by_tail.setdefault(name.rpartition(".")[2], []).append(name)
        for tail in difflib.get_close_matches(key.rpartition(".")[2], list(by_tail), n=n, cutoff=0.75):
            found.extend(by_tail[tail])
    return found[:n]


def _known_here(model_cls: type[BaseModel], key: str, most: int = 20) -> str:
    """The names a user could have meant at ``key``'s level: ``a, b, c`` (sections with
    a trailing dot), or the nearest existing section's."""
    leaves = [s.name for s in field_specs(model_cls)]
    section = key.replace("-", "_").rpartition(".")[0]
    sections = {leaf.rpartition(".")[0] for leaf in leaves if "." in leaf}
    while section and section not in sections:
        section = section.rpartition(".")[0]
    here = [x for x in leaves if x.rpartition(".")[0] == section]
    here += sorted({x[len(section) + 1 if section else 0:].split(".")[0] + "." for x in leaves
                    if x.startswith(f"{section}." if section else "") and x.count(".") > section.count(".") + bool(section)})
    text = ", ".join(here[:most]) + (f", ... ({len(here) - most} more)" if len(here) > most else "")
    return f"known{' in ' + section if section else ''}: {text}"


def _or_list(names: list[str]) -> str:
    quoted = [repr(x) for x in names]
    return quoted[0] if len(quoted) == 1 else f"{', '.join(quoted[:-1])} or {quoted[-1]}"


def _error_line(err: dict, model_cls: type[BaseModel] | None) -> list[str]:
    loc = ".".join(str(p) for p in err["loc"])
    got = err.get("input")
    msg = str(err["msg"])
    if err.get("type") == "value_error" and msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]  # our validators' own words, without pydantic's prefix
    if not loc:  # a model validator: its message names the fields itself
        return [msg]
    if err.get("type") == "extra_forbidden":
        lines = []
        for name in _dotted_leaves(got, loc):
            hint = ""
            if model_cls is not None:
                close = close_names(model_cls, name)
                hint = f"; did you mean {_or_list(close)}?" if close else f"; {_known_here(model_cls, name)}"
            lines.append(f"{name}: unknown parameter{hint}")
        return lines
    got_txt = "" if isinstance(got, dict) else f" (got {got!r})"
    hint = ""
    if err.get("type") == "literal_error" and isinstance(got, str) and model_cls is not None:
        import difflib

        spec = next((s for s in field_specs(model_cls) if s.name == loc), None)
        close = difflib.get_close_matches(got, [str(c) for c in spec.choices], n=1) if spec else []
        hint = f"; did you mean {close[0]!r}?" if close else ""
    return [f"{loc}: {msg}{got_txt}{hint}"]


def format_validation_error(exc: ValidationError, model_cls: type[BaseModel] | None = None) -> str:
    """One line per bad field: ``name: message (got value)``, lines joined by newlines.

    An unknown key says which (``slic.rular: unknown parameter; did you mean
    'slic.ruler'?``, a nested table spelt out leaf by leaf) when ``model_cls`` (the model
    validated) is given; a bad choice suggests the closest allowed value.
    """
    lines: list[str] = []
    for err in exc.errors():
        for line in _error_line(err, model_cls):
            if line not in lines:
                lines.append(line)
    return "\n".join(lines)


def validate(model_cls: type[BaseModel], data: dict) -> BaseModel:
    """Validate ``data`` into ``model_cls``.

    Raises
    ------
    ParamsError
        With every bad field, its message and the offending value, one line each.
    """
    try:
        return model_cls.model_validate(data)
    except ValidationError as exc:
        raise ParamsError(format_validation_error(exc, model_cls)) from None


def resolve(
    model_cls: type[BaseModel],
    job_name: str,
    *,
    preset: str | None = None,
    config: str | Path | None = None,
    sets: typing.Iterable[str] = (),
    overrides: dict[str, Any] | None = None,
) -> BaseModel:
    """Build a job's parameters from all sources (see the module docstring for precedence).

    Parameters
    ----------
    preset : str, optional
        Name of a preset from :func:`load_presets`.
    config : path-like, optional
        TOML file with the parameter values (the ``[params]`` table of a ``job.toml``
        works too).
    sets : iterable of str
        ``key=value`` strings, dotted keys, TOML values; ``key=`` (empty) restores the
        field's default.
    overrides : dict, optional
        Dotted key -> value, from explicit CLI options.

    Raises
    ------
    ParamsError
        Unknown preset, unreadable config, malformed ``--set``, or values that do not validate.
    """
    data: dict = {}
    if preset:
        presets = load_presets(job_name)
        if preset not in presets:
            raise ParamsError(f"unknown preset {preset!r} for {job_name}; known: {', '.join(sorted(presets))}")
        data = deep_merge(data, presets[preset])
    if config:
        path = Path(config)
        try:
            loaded = tomllib.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ParamsError(f"config file {path} not found") from None
        except OSError as exc:  # a folder, no permission
            raise ParamsError(f"config file {path}: cannot read ({exc.strerror or exc})") from None
        except UnicodeDecodeError:
            raise ParamsError(f"config file {path} is not a TOML text file") from None
        except tomllib.TOMLDecodeError as exc:
            raise ParamsError(f"{path}: invalid TOML ({exc})") from None
        if "params" in loaded and isinstance(loaded["params"], dict):
            loaded = loaded["params"]
        data = deep_merge(data, loaded)
    for item in sets:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise ParamsError(f"--set expects key=value, got {item!r}")
        if not value.strip():  # key= : the default (as an empty field in the forms)
            if not _is_field(model_cls, key.strip()):
                raise ParamsError(f"--set {item}: no parameter {key.strip()!r}")
            unset_dotted(data, key.strip())
        else:
            set_dotted(data, key.strip(), parse_scalar(value.strip()))
    for key, value in (overrides or {}).items():
        set_dotted(data, key, value)
    return validate(model_cls, data)


def to_toml_dict(params: BaseModel) -> dict:
    """Params as a TOML-ready dict (None values dropped: TOML has no null)."""

    def clean(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: clean(v) for k, v in value.items() if v is not None}
        if isinstance(value, tuple):
            return [clean(v) for v in value]
        if isinstance(value, list):
            return [clean(v) for v in value]
        return value

    return clean(params.model_dump(mode="json"))


def params_digest(params: BaseModel, length: int = 8, exclude: set[str] | None = None) -> str:
    """Short stable hash of the parameter values (hex), for run folder names.

    ``exclude`` names fields left out (options the run does not read): top-level
    (``"dup"``) or dotted for a field of a section (``"deep.epochs"``).
    """
    nested: dict = {}
    for name in exclude or ():
        head, _, rest = name.partition(".")
        if not rest:
            nested[head] = True
        elif nested.get(head) is not True:
            nested.setdefault(head, {})[rest] = True
    blob = json.dumps(params.model_dump(mode="json", exclude=nested or None), sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:length]
