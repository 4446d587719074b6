"""Build SAM models from their package configs and load official checkpoints strictly.

Neither family's own loader is used for weights: the family's builder
(:data:`~.families.FAMILIES`) makes the architecture without a checkpoint (their loaders
load with ``strict=False`` and print), then the state dict is read with ``torch.load(..., weights_only=True)`` and loaded with a
strict key check here.

Checkpoint layouts (as published):

* SAM 2.1: ``{"model": state_dict}``.
* SAM-HQ: a plain ``state_dict``.
"""

from __future__ import annotations

from pathlib import Path

from segdeck.core.errors import SetupError
from segdeck.core.models import ModelSpec
from segdeck.core.sam.families import get_family


def build_empty(spec: ModelSpec, device: str = "cpu"):
    """Build the architecture of ``spec`` with random (untrained) weights, in eval mode.

    Parameters
    ----------
    spec : ModelSpec
        Of a family in :data:`~.families.FAMILIES` (``spec.config`` is that family's
        build config, e.g. ``configs/sam2.1/sam2.1_hiera_t.yaml`` or ``vit_tiny``).
    device : str
        torch device string.

    Returns
    -------
    torch.nn.Module

    Raises
    ------
    SetupError
        Not a SAM family, or an unknown config.
    """
    model = get_family(spec.family).build(spec)
    model.eval()
    return model.to(device)


def read_state_dict(spec: ModelSpec, path: str | Path) -> dict:
    """Read a checkpoint file safely (``weights_only=True``) and return its state dict.

    Raises
    ------
    SetupError
        Unreadable, truncated or non-checkpoint file, or the wrong layout for the family.
    """
    import torch

    path = Path(path)
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except FileNotFoundError:
        raise SetupError(f"{path}: checkpoint file not found") from None
    except Exception as exc:  # noqa: BLE001 - any unpickling failure is a bad file
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        if "Weights only load failed" in str(exc):
            # torch's advice (load with weights_only=False) would run code from the file
            import re

            detail = re.search(r"WeightsUnpickler error:\s*(.+)", str(exc))
            reason = ("not a PyTorch file of plain tensors (refused by the safe loader"
                      + (f": {detail.group(1).strip()}" if detail else "") + ")")
        raise SetupError(
            f"{path}: not a readable checkpoint for {spec.name} (truncated or corrupt?): {reason[:160]}"
        ) from None
    family = get_family(spec.family)
    key = family.checkpoint_key
    if key is not None:
        if not isinstance(obj, dict) or key not in obj or not isinstance(obj[key], dict):
            raise SetupError(f"{path}: expected a {family.title} checkpoint {{'{key}': state_dict}} for {spec.name}")
        obj = obj[key]
    elif isinstance(obj, dict) and "model" in obj and isinstance(obj["model"], dict):
        obj = obj["model"]
    if not isinstance(obj, dict) or not all(hasattr(v, "shape") for v in obj.values()):
        raise SetupError(f"{path}: expected a state dict of tensors for {spec.name}")
    return obj


def load_strict(model, state_dict: dict, path: str | Path, name: str) -> None:
    """``model.load_state_dict(state_dict, strict=True)`` with a one-line error.

    Raises
    ------
    SetupError
        Missing or unexpected keys (a few are named) or shape mismatches.
    """
    own = model.state_dict()
    missing = [k for k in own if k not in state_dict]
    unexpected = [k for k in state_dict if k not in own]
    if missing or unexpected:
        parts = []
        if missing:
            parts.append(f"{len(missing)} missing keys (e.g. {', '.join(missing[:3])})")
        if unexpected:
            parts.append(f"{len(unexpected)} unexpected keys (e.g. {', '.join(unexpected[:3])})")
        raise SetupError(
            f"{path}: checkpoint does not match {name}: {'; '.join(parts)} (weights of another model size or family?)"
        )
    bad = [k for k, v in own.items() if tuple(v.shape) != tuple(state_dict[k].shape)]
    if bad:
        k = bad[0]
        raise SetupError(
            f"{path}: checkpoint does not match {name}: {len(bad)} tensors with wrong shapes "
            f"(e.g. {k}: {tuple(state_dict[k].shape)} vs {tuple(own[k].shape)}; weights of another model size?)"
        )
    model.load_state_dict(state_dict, strict=True)


def load_model(spec: ModelSpec, path: str | Path, device: str = "cpu"):
    """Build ``spec``'s architecture and load the checkpoint at ``path`` strictly.

    Raises
    ------
    SetupError
        Bad file or key mismatch (see :func:`read_state_dict`, :func:`load_strict`).
    """
    state = read_state_dict(spec, path)
    model = build_empty(spec, "cpu")
    load_strict(model, state, path, spec.name)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model.to(device)


def save_checkpoint(spec: ModelSpec, model, path: str | Path) -> None:
    """Save ``model`` in the official layout of its family (used by tests and benchmarks)."""
    import torch

    state = model.state_dict()
    key = get_family(spec.family).checkpoint_key
    obj = state if key is None else {key: state}
    torch.save(obj, path)


def save_random_checkpoint(spec: ModelSpec, path: str | Path, seed: int = 0) -> Path:
    """Build ``spec``'s architecture with seeded random weights (the packaged init plus
    N(0, 0.02) noise from a ``torch.Generator`` seeded with ``seed``) and save it in the
    family's official layout. For tests and benchmarks, where no trained weights can be
    downloaded: the same seed gives the same file's weights on every machine.

    Returns
    -------
    Path
        ``path``.
    """
    import torch

    torch.manual_seed(seed)
    model = build_empty(spec)
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(torch.randn(p.shape, generator=g) * 0.02)
    save_checkpoint(spec, model, path)
    return Path(path)
