"""The per-job manifest: one SQLite file recording each work item's state.

States: ``pending`` -> ``running`` -> ``done`` | ``failed``. An item left ``running``
by a killed process is treated as not done on the next run. SQLite in WAL mode lets
the TUI read the manifest while the job process writes it.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from dataclasses import dataclass
from pathlib import Path

MANIFEST_NAME = "manifest.sqlite"

#: Committing is batched: a commit costs about as much as hashing one small image, so
#: committing every state change would dominate fast jobs. The rules:
#:
#: * an item's end (``mark_done`` / ``mark_failed``) commits at once unless another end
#:   was committed less than ``COMMIT_INTERVAL`` seconds ago (slow items: every end is
#:   durable before its ``ItemDone`` event goes out; fast items: ends are batched);
#: * a background thread commits whatever is queued at most ``COMMIT_INTERVAL`` seconds
#:   after it was queued, even when no further change comes (the last item of a burst,
#:   ``mark_running`` of a long item).
#:
#: So a reader (the TUI, ``segdeck jobs``) is never more than this far behind, and a
#: killed run loses at most this much finished work, which the next run redoes
#: (outputs are written atomically, so redoing is safe).
COMMIT_INTERVAL = 0.5

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

    def __init__(self, job_dir: str | Path, *, readonly: bool = False, commit_interval: float = COMMIT_INTERVAL):
        self.path = Path(job_dir) / MANIFEST_NAME
        self.commit_interval = commit_interval
        self._dirty = False
        self._queue: list[tuple[str, tuple]] = []
        self._queued_at = 0.0  # monotonic time of the oldest change not yet committed
        self._last_end_commit = -float("inf")
        # one connection shared by the runner's threads and the flusher thread
        self._lock = threading.Condition(threading.RLock())
        self._closed = False
        self._flusher: threading.Thread | None = None
        if readonly:
            if not self.path.exists():
                raise FileNotFoundError(self.path)
            self._db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True, timeout=10, check_same_thread=False)
        else:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self._db = sqlite3.connect(self.path, timeout=30, check_same_thread=False)
            try:
                self._db.execute("PRAGMA journal_mode=WAL")
                self._db.execute("PRAGMA synchronous=NORMAL")
                self._db.executescript(SCHEMA)
                self._db.commit()
            except sqlite3.Error:  # a damaged file: let the caller move it aside
                self._db.close()
                raise

    def check(self) -> None:
        """Check that the file is a sound manifest (SQLite ``quick_check`` plus a read of
        the items table); cheap (milliseconds for tens of thousands of items).

        Raises
        ------
        sqlite3.DatabaseError
            The file is damaged (truncated, overwritten, not a database).
        """
        with self._lock:
            rows = self._db.execute("PRAGMA quick_check").fetchall()
            if rows != [("ok",)]:
                first = rows[0][0] if rows else "no answer"
                raise sqlite3.DatabaseError(f"integrity check failed: {first}")
            self._db.execute("SELECT item, state, started, duration, error, outputs FROM items").fetchall()

    def close(self) -> None:
        """Commit what is queued, stop the flusher thread, close the connection."""
        with self._lock:
            if self._closed:
                return
            self.flush()
            self._closed = True
            self._lock.notify_all()
        if self._flusher is not None and self._flusher is not threading.current_thread():
            self._flusher.join()
        self._db.close()

    def flush(self) -> None:
        """Write and commit the state changes not yet committed."""
        with self._lock:
            self._apply_queue()
            if self._dirty:
                self._db.commit()
                self._dirty = False

    def _apply_queue(self) -> None:
        # reads through this connection see the queued changes (not yet committed);
        # callers hold self._lock
        if self._queue:
            queue, self._queue = self._queue, []
            for sql, args in queue:
                self._db.execute(sql, args)
            self._dirty = True

    def _update(self, sql: str, args: tuple, *, item_end: bool = False) -> None:
        # queued, then written in one transaction: per-item SQLite calls release and
        # re-take the GIL, which the busy loader threads make slow (see COMMIT_INTERVAL)
        with self._lock:
            if self._closed:
                raise RuntimeError(f"{self.path} is closed")
            now = time.monotonic()
            if not self._queue and not self._dirty:
                self._queued_at = now
            self._queue.append((sql, args))
            if item_end and now - self._last_end_commit >= self.commit_interval:
                self._last_end_commit = now
                self.flush()
                return
            if self._flusher is None:
                self._flusher = threading.Thread(target=self._flush_loop, name="manifest-flush", daemon=True)
                self._flusher.start()
            else:
                self._lock.notify()

    def _flush_loop(self) -> None:
        """Commit queued changes ``commit_interval`` seconds after the oldest was queued;
        sleeps (no polling) while nothing is queued."""
        with self._lock:
            while not self._closed:
                if not (self._queue or self._dirty):
                    self._lock.wait()
                    continue
                left = self._queued_at + self.commit_interval - time.monotonic()
                if left > 0:
                    self._lock.wait(left)
                    continue
                try:
                    self.flush()
                except sqlite3.Error:  # e.g. the disk is full: the next flush or close() retries
                    self._queued_at = time.monotonic()

    def __enter__(self) -> Manifest:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def add_items(self, items: list[str]) -> None:
        """Register items (existing rows keep their state)."""
        with self._lock:
            self._apply_queue()
            with self._db:
                self._db.executemany("INSERT OR IGNORE INTO items(item) VALUES (?)", [(i,) for i in items])

    def retain(self, items: list[str]) -> int:
        """Drop the rows of items not in ``items`` (inputs deleted since an earlier run), so
        totals, progress and the ETA count only what the input holds now. Their output
        files are left where they are. Returns the number of rows dropped."""
        with self._lock:
            self._apply_queue()
            keep = set(items)
            gone = [(r[0],) for r in self._db.execute("SELECT item FROM items") if r[0] not in keep]
            if gone:
                with self._db:
                    self._db.executemany("DELETE FROM items WHERE item=?", gone)
            return len(gone)

    def state(self, item: str) -> str | None:
        with self._lock:
            self._apply_queue()
            row = self._db.execute("SELECT state FROM items WHERE item=?", (item,)).fetchone()
            return row[0] if row else None

    def done_items(self) -> set[str]:
        with self._lock:
            self._apply_queue()
            return {r[0] for r in self._db.execute("SELECT item FROM items WHERE state='done'")}

    def mark_running(self, item: str) -> None:
        self._update("UPDATE items SET state='running', started=?, error=NULL WHERE item=?", (time.time(), item))

    def mark_pending(self, item: str) -> None:
        """Put an item back to ``pending`` (computed but not written when a run stopped)."""
        self._update("UPDATE items SET state='pending', started=NULL WHERE item=?", (item,))

    def mark_done(self, item: str, duration: float | None, outputs: list[str]) -> None:
        """Record a finished item (committed at once, or batched; see ``COMMIT_INTERVAL``)."""
        self._update(
            "UPDATE items SET state='done', duration=?, error=NULL, outputs=? WHERE item=?",
            (duration, json.dumps(outputs), item),
            item_end=True,
        )

    def mark_failed(self, item: str, duration: float, error: str) -> None:
        """Record a failed item with its one-line error (committed like ``mark_done``)."""
        self._update(
            "UPDATE items SET state='failed', duration=?, error=? WHERE item=?", (duration, error, item), item_end=True
        )

    def reset_running(self) -> None:
        """Items a killed run left ``running`` go back to ``pending``."""
        with self._lock:
            self._apply_queue()
            with self._db:
                self._db.execute("UPDATE items SET state='pending' WHERE state='running'")
            self._dirty = False

    def counts(self) -> Counts:
        with self._lock:
            self._apply_queue()
            rows = dict(self._db.execute("SELECT state, COUNT(*) FROM items GROUP BY state").fetchall())
            return Counts(
                total=sum(rows.values()),
                done=rows.get("done", 0),
                failed=rows.get("failed", 0),
                running=rows.get("running", 0),
            )

    def records(self) -> list[ItemRecord]:
        with self._lock:
            self._apply_queue()
            rows = self._db.execute("SELECT item, state, started, duration, error, outputs FROM items ORDER BY item")
            return [
                ItemRecord(r[0], r[1], r[2], r[3], r[4], json.loads(r[5]) if r[5] else []) for r in rows.fetchall()
            ]

    def mean_duration(self) -> float | None:
        """Mean seconds per finished item, or None before the first one."""
        with self._lock:
            self._apply_queue()
            row = self._db.execute("SELECT AVG(duration) FROM items WHERE state='done'").fetchone()
            return row[0]

    def last_failure(self) -> str | None:
        """The most recently started failed item as ``"<item>: <error>"`` (just the error
        when it already names the item), or None when no item failed."""
        with self._lock:
            self._apply_queue()
            row = self._db.execute(
                "SELECT item, error FROM items WHERE state='failed' ORDER BY started DESC, item LIMIT 1"
            ).fetchone()
        if row is None:
            return None
        item, error = row[0], row[1] or "failed"
        at = error.find(item)
        if at < 0:
            return f"{item}: {error}"
        if at > 0 and error[at - 1] in "/\\" and ": " not in error[:at]:
            error = error[at:]  # "/long/input/path/a/b.png: ..." -> "a/b.png: ..."
        return error
