"""The embedding cache of a SAM engine: a few embeddings in memory, more on disk.

Keys are :meth:`SamEngine.image_key <segdeck.core.sam.engine.SamEngine.image_key>`
(sha256 over the family, the model file's sha256, the image's shape, dtype and
pixels), so a cached embedding can only be found again by the same model and the same
picture. Disk files are ``<model cache>/embeddings/<model>/<key>.pt`` (``torch.save``
of a dict of tensors, read back with ``weights_only=True``), written atomically; the
oldest are removed beyond :data:`DISK_CACHE_FILES`. A damaged file is deleted and
recomputed; a read-only disk only disables the disk half.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path

#: Embeddings kept in memory per engine.
MEMORY_CACHE_SIZE = 4
#: Files kept in the on-disk embedding cache per model (oldest removed first).
DISK_CACHE_FILES = 48


class EmbeddingCache:
    """Memory (LRU, :data:`MEMORY_CACHE_SIZE`) + disk cache of image embeddings.

    Parameters
    ----------
    folder : Path
        Where the disk files go (created on the first save).
    device : str
        torch device the loaded tensors are mapped to.

    Attributes
    ----------
    disk : bool
        Use the disk half (False: memory only).
    """

    def __init__(self, folder: Path, device: str):
        self.folder = Path(folder)
        self.device = device
        self.disk = True
        self._memory: OrderedDict[str, dict] = OrderedDict()
        self._lock = threading.RLock()

    def __contains__(self, key: str) -> bool:
        with self._lock:
            return key in self._memory

    def get(self, key: str) -> dict | None:
        """The embedding in memory under ``key``, else None (the disk is not read)."""
        with self._lock:
            return self._memory.get(key)

    def is_cached(self, key: str) -> bool:
        """In memory, or (with ``disk``) on disk."""
        return key in self or (self.disk and (self.folder / f"{key}.pt").is_file())

    def clear_memory(self) -> None:
        with self._lock:
            self._memory.clear()

    def fetch(self, key: str, compute: Callable[[], dict], *, use: bool = True) -> dict:
        """The embedding of ``key``: from memory, else from disk, else ``compute()``
        (then saved to disk); it ends up most recent in memory.

        Parameters
        ----------
        key : str
        compute : callable
            ``() -> dict`` of tensors (the encoder run); may be slow, called without the lock.
        use : bool
            False: neither read nor fill the caches, just ``compute()``.
        """
        if not use:
            return compute()
        feats = self.get(key)
        if feats is None and self.disk:
            feats = self._load(key)
        if feats is None:
            feats = compute()
            if self.disk:
                self._save(key, feats)
        with self._lock:
            self._memory[key] = feats
            self._memory.move_to_end(key)
            while len(self._memory) > MEMORY_CACHE_SIZE:
                self._memory.popitem(last=False)
        return feats

    def _load(self, key: str) -> dict | None:
        import torch

        path = self.folder / f"{key}.pt"
        if not path.is_file():
            return None
        try:
            feats = torch.load(path, map_location=self.device, weights_only=True)
            path.touch()
            return feats
        except Exception:  # noqa: BLE001 - a damaged cache entry is recomputed
            path.unlink(missing_ok=True)
            return None

    def _save(self, key: str, feats: dict) -> None:
        import torch

        folder = self.folder
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{key}.pt.tmp"
            torch.save({k: _to_cpu(v) for k, v in feats.items()}, tmp)
            tmp.replace(folder / f"{key}.pt")
            files = sorted(folder.glob("*.pt"), key=lambda p: p.stat().st_mtime)
            for old in files[:-DISK_CACHE_FILES]:
                old.unlink(missing_ok=True)
        except OSError:
            pass  # the cache is an optimisation; a read-only disk must not break prompting


def _to_cpu(v):
    if isinstance(v, (list, tuple)):
        return [x.cpu() for x in v]
    return v.cpu() if hasattr(v, "cpu") else v
