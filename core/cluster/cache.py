"""Per-file feature cache: SQLite keyed by (path, feature key), valid while the file's
size and modification time are unchanged.

One cache lives in each output root (``<root>/cluster-cache.sqlite``), shared by
every cluster run there, so a re-run on a grown folder (or with another threshold,
which is another job folder) only computes features of new or changed files.
"""

from __future__ import annotations

import os
import sqlite3
import threading
from pathlib import Path

from segdeck.core.cluster.features import pack, unpack

CACHE_NAME = "cluster-cache.sqlite"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS features (
    path     TEXT NOT NULL,
    key      TEXT NOT NULL,
    size     INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    blob     BLOB NOT NULL,
    PRIMARY KEY (path, key)
);
"""


def file_stamp(path: str | Path) -> tuple[int, int]:
    """(size in bytes, modification time in ns) of a file."""
    st = os.stat(path)
    return st.st_size, st.st_mtime_ns


class FeatureCache:
    """Thread-safe SQLite store of packed features.

    Parameters
    ----------
    path : path-like
        The SQLite file (created with its folder).
    commit_every : int
        Commit after this many :meth:`put` calls (and on :meth:`flush` / :meth:`close`);
        a crash loses at most that many entries, which are recomputed later.
    """

    def __init__(self, path: str | Path, commit_every: int = 1):
        self.path = Path(path)
        self.commit_every = max(1, commit_every)
        self._pending = 0
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.executescript(_SCHEMA)
        self._lock = threading.Lock()

    def get(self, path: str | Path, key: str, stamp: tuple[int, int] | None = None) -> dict | None:
        """The cached feature of ``path`` for ``key``, or None when absent or stale
        (``stamp``: the file's (size, mtime_ns) when the caller has just read it)."""
        p = os.path.abspath(path)  # resolving every component costs an lstat per folder level
        if stamp is None:
            try:
                stamp = file_stamp(p)
            except OSError:
                return None
        size, mtime = stamp
        with self._lock:
            row = self._db.execute(
                "SELECT size, mtime_ns, blob FROM features WHERE path = ? AND key = ?", (p, key)
            ).fetchone()
        if row is None or row[0] != size or row[1] != mtime:
            return None
        return unpack(row[2])

    def put(self, path: str | Path, key: str, feature: dict, stamp: tuple[int, int] | None = None) -> None:
        """Store ``feature`` for ``path`` (stamped with the file's current size and mtime,
        or ``stamp`` when the caller read it before computing)."""
        p = os.path.abspath(path)  # resolving every component costs an lstat per folder level
        size, mtime = stamp if stamp is not None else file_stamp(p)
        with self._lock:
            self._db.execute(
                "INSERT OR REPLACE INTO features (path, key, size, mtime_ns, blob) VALUES (?, ?, ?, ?, ?)",
                (p, key, size, mtime, pack(feature)),
            )
            self._pending += 1
            if self._pending >= self.commit_every:
                self._db.commit()
                self._pending = 0

    def flush(self) -> None:
        """Commit buffered writes (``commit_every > 1``)."""
        with self._lock:
            self._db.commit()
            self._pending = 0

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT COUNT(*) FROM features").fetchone()[0])

    def close(self) -> None:
        with self._lock:
            self._db.commit()
            self._db.close()
