"""Executions persisted in one SQLite file, so a restarted stack keeps its history.

Each execution is stored as its REST JSON document (camelCase, as the API returns it) beside the
few columns that lists need. One connection guarded by a lock: SQLite serialises writes anyway,
and executions are small. WAL mode lets `python -m localcloud executions list` read while a
server writes.
"""
from __future__ import annotations

import contextlib
import fcntl
import json
import os
import sqlite3
import threading
from pathlib import Path
from typing import IO, Any, Callable, Iterator

SCHEMA = """
CREATE TABLE IF NOT EXISTS executions (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,   -- creation order: ties on createTime and page snapshots
    name TEXT UNIQUE NOT NULL,               -- projects/p/locations/l/workflows/w/executions/id
    parent TEXT NOT NULL,                    -- projects/p/locations/l/workflows/w
    doc TEXT NOT NULL                        -- the Execution resource as JSON
);
CREATE INDEX IF NOT EXISTS executions_parent ON executions (parent, seq);
-- Labels are immutable after create, so an index of them never goes stale. It keeps the proxy's
-- lookup (`labels.run_digest="..."`) from reading every execution of the workflow.
CREATE TABLE IF NOT EXISTS labels (
    seq INTEGER NOT NULL REFERENCES executions (seq),
    key TEXT NOT NULL,
    value TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS labels_key_value ON labels (key, value, seq);
"""
LABELS_INDEXED = 1  # PRAGMA user_version of a store whose labels table is filled

Execution = dict[str, Any]


class StateLocked(Exception):
    """Another API serves this state folder; its live executions are not ours to end."""


def lock_state(state_dir: str | Path) -> IO[str]:
    """Hold the state folder for one API: the lock lives as long as the returned file stays open,
    and the kernel drops it when the process dies, so a crash leaves no stale lock behind.
    A second API would otherwise take the first one's ACTIVE executions for leftovers of a
    crash and end them FAILED while they still run."""
    folder = Path(state_dir)
    folder.mkdir(parents=True, exist_ok=True)
    held = open(folder / "api.lock", "a+")
    try:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        held.seek(0)
        holder = held.read().strip() or "unknown"
        held.close()
        raise StateLocked(f"state folder {folder} is in use by another localcloud API (pid {holder}); "
                          "stop that one or choose another state folder") from None
    held.truncate(0)
    held.write(str(os.getpid()))
    held.flush()
    return held


class Store:
    def __init__(self, state_dir: str | Path):
        self.path = Path(state_dir) / "executions.sqlite3"
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._db = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None,
                                   timeout=10)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(SCHEMA)
        if self._db.execute("PRAGMA user_version").fetchone()[0] < LABELS_INDEXED:
            self._index_labels()

    def _index_labels(self) -> None:
        """Fill the labels table of a store written before it existed."""
        with self._lock, self._transaction():
            for seq, doc in self._db.execute("SELECT seq, doc FROM executions").fetchall():
                self._insert_labels(seq, json.loads(doc))
            self._db.execute(f"PRAGMA user_version = {LABELS_INDEXED}")

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _insert_labels(self, seq: int, execution: Execution) -> None:
        self._db.executemany("INSERT INTO labels (seq, key, value) VALUES (?, ?, ?)",
                             [(seq, key, value) for key, value in (execution.get("labels") or {}).items()])

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def insert(self, execution: Execution) -> None:
        parent = execution["name"].rsplit("/executions/", 1)[0]
        with self._lock, self._transaction():
            cursor = self._db.execute("INSERT INTO executions (name, parent, doc) VALUES (?, ?, ?)",
                                      (execution["name"], parent, json.dumps(execution)))
            self._insert_labels(cursor.lastrowid, execution)

    def get(self, name: str) -> Execution | None:
        with self._lock:
            row = self._db.execute("SELECT doc FROM executions WHERE name = ?", (name,)).fetchone()
        return json.loads(row[0]) if row else None

    def update(self, name: str, change: Callable[[Execution], Execution | None]) -> Execution | None:
        """Apply change(doc) atomically; if it returns None nothing is written. Returns the result."""
        with self._lock:
            row = self._db.execute("SELECT doc FROM executions WHERE name = ?", (name,)).fetchone()
            if row is None:
                return None
            new = change(json.loads(row[0]))
            if new is not None:
                self._db.execute("UPDATE executions SET doc = ? WHERE name = ?", (json.dumps(new), name))
            return new

    def delete(self, name: str) -> bool:
        """Forget an execution, as Workflows does once its history retention has passed."""
        with self._lock, self._transaction():
            row = self._db.execute("SELECT seq FROM executions WHERE name = ?", (name,)).fetchone()
            if row is None:
                return False
            self._db.execute("DELETE FROM labels WHERE seq = ?", (row[0],))
            self._db.execute("DELETE FROM executions WHERE seq = ?", (row[0],))
            return True

    def scan(self, parent: str | None = None, max_seq: int | None = None,
             labels: dict[str, str] | None = None) -> Iterator[tuple[int, Execution]]:
        """(seq, execution) pairs in creation order, for one workflow or all, up to max_seq,
        narrowed to those that carry every one of `labels`."""
        query, args = "SELECT seq, doc FROM executions WHERE 1=1", []
        for key, value in (labels or {}).items():
            query += " AND seq IN (SELECT seq FROM labels WHERE key = ? AND value = ?)"
            args += [key, value]
        if parent is not None:
            query, args = query + " AND parent = ?", args + [parent]
        if max_seq is not None:
            query, args = query + " AND seq <= ?", args + [max_seq]
        with self._lock:
            rows = self._db.execute(query + " ORDER BY seq", args).fetchall()
        return ((seq, json.loads(doc)) for seq, doc in rows)

    def docs(self, seqs: list[int]) -> list[Execution]:
        """The executions with these seqs, in that order (any deleted meanwhile left out)."""
        rows: dict[int, str] = {}
        with self._lock:
            for first in range(0, len(seqs), 500):  # under SQLite's oldest variable limit (999)
                chunk = seqs[first:first + 500]
                rows.update(self._db.execute(f"SELECT seq, doc FROM executions WHERE seq IN ({','.join('?' * len(chunk))})",
                                             chunk).fetchall())
        return [json.loads(rows[seq]) for seq in seqs if seq in rows]

    def last_seq(self) -> int:
        with self._lock:
            return self._db.execute("SELECT COALESCE(MAX(seq), 0) FROM executions").fetchone()[0]

    def active(self) -> list[Execution]:
        return [doc for _, doc in self.scan() if doc.get("state") in ("ACTIVE", "QUEUED")]
