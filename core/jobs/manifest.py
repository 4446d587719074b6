"""The per-job manifest: one SQLite file recording each work item's state.

States: ``pending`` -> ``running`` -> ``done`` | ``failed``. An item left ``running``
by a killed process is treated as not done on the next run. SQLite in WAL mode lets
the TUI read the manifest while the job process writes it.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path

MANIFEST_NAME = "manifest.sqlite"

SCHEMA = """
CREATE TABLE IF NOT EXISTS items (
    item      TEXT PRIMARY KEY,
    state     TEXT NOT NULL DEFAULT 'pending',
    started   REAL,
    duration  REAL,
    error     TEXT,
    outputs   TEXT
);
"""


@dataclass(frozen=True)
class ItemRecord:
    """One manifest row. ``duration`` in seconds, ``started`` as a Unix time."""

    item: str
    state: str
    started: float | None
    duration: float | None
    error: str | None
    outputs: list[str]


@dataclass(frozen=True)
class Counts:
    """How many items are in each state."""

    total: int = 0
    done: int = 0
    failed: int = 0
    running: int = 0

    @property
    def pending(self) -> int:
        return self.total - self.done - self.failed - self.running


class Manifest:
    """SQLite manifest of a job folder.

    Parameters
    ----------
    job_dir : path-like
        The job folder; the file is ``job_dir/manifest.sqlite``.
    readonly : bool
        Open for reading only (the TUI); never creates the file.

    Raises
    ------
    FileNotFoundError
        If ``readonly`` and the manifest does not exist.
    """

    def __init__(self, job_dir: str | Path, *, readonly: bool = False):
        self.path = Path(job_dir) / MANIFEST_NAME
        if readonly:
            if not self.path.exists():
                raise FileNotFoundError(self.path)
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10, check_same_thread=False)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            self._db.executescript(SCHEMA)
            self._db.commit()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def add_items(self, items: list[str]) -> None:
        """Register items (existing rows keep their state)."""
        with self._db:
            self._db.executemany("INSERT OR IGNORE INTO items(item) VALUES (?)", [(i,) for i in items])

    def state(self, item: str) -> str | None:
        row = self._db.execute("SELECT state FROM items WHERE item=?", (item,)).fetchone()
        return row[0] if row else None

    def done_items(self) -> set[str]:
        return {r[0] for r in self._db.execute("SELECT item FROM items WHERE state='done'")}

    def mark_running(self, item: str) -> None:
        with self._db:
            self._db.execute(
                "UPDATE items SET state='running', started=?, error=NULL WHERE item=?", (time.time(), item)
            )

    def mark_done(self, item: str, duration: float, outputs: list[str]) -> None:
        with self._db:
            self._db.execute(
                "UPDATE items SET state='done', duration=?, error=NULL, outputs=? WHERE item=?",
                (duration, json.dumps(outputs), item),
            )

    def mark_failed(self, item: str, duration: float, error: str) -> None:
        with self._db:
            self._db.execute(
                "UPDATE items SET state='failed', duration=?, error=? WHERE item=?", (duration, error, item)
            )

    def reset_running(self) -> None:
        """Items a killed run left ``running`` go back to ``pending``."""
        with self._db:
            self._db.execute("UPDATE items SET state='pending' WHERE state='running'")

    def counts(self) -> Counts:
        rows = dict(self._db.execute("SELECT state, COUNT(*) FROM items GROUP BY state").fetchall())
        return Counts(
            total=sum(rows.values()),
            done=rows.get("done", 0),
            failed=rows.get("failed", 0),
            running=rows.get("running", 0),
        )

    def records(self) -> list[ItemRecord]:
        rows = self._db.execute("SELECT item, state, started, duration, error, outputs FROM items ORDER BY item")
        return [
            ItemRecord(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]) if r[5] else []) for r in rows.fetchall()
        ]

    def mean_duration(self) -> float | None:
        """Mean seconds per finished item, or None before the first one."""
        row = self._db.execute("SELECT AVG(duration) FROM items WHERE state='done'").fetchone()
        return row[0]
