"""Where the Python client remembers which message ids it has shown (its dedupe store).

Delivery is at least once: a message whose ack was lost comes again, also after the application
restarts. :class:`DeliveryClient <delivery.client.DeliveryClient>` asks a :class:`SeenStore`
before handing a message to the application and records the id once the application has
processed it, before acking. Two stores, both keeping only the most recent ``max_ids`` ids
(the oldest is forgotten first; the gateway replays only unacked messages, so an id needs to be
remembered only until its ack is recorded):

- :class:`MemorySeenStore`: the default; forgotten when the process exits.
- :class:`SqliteSeenStore`: a SQLite file (``DeliveryClient(..., dedupe_path=PATH)``); survives
  restarts and crashes of the process (WAL journal, every ``add`` committed before it returns).

Any object with ``seen`` and ``add`` works (:class:`SeenStore`); both are called on the event
loop, so they must be quick.

Both stores also keep, per conversation, the highest ``seq`` shown (:class:`OrderMarks`): a
client built on a store resumes each conversation's order from there (delivery/client_order.py)
instead of waiting for messages it showed before. A store without ``last_seqs`` and
``mark_seq`` works too; the first message of each conversation may then wait for its ``prev``.
"""

from __future__ import annotations

import os
import sqlite3
from collections import OrderedDict
from typing import Protocol, runtime_checkable

MEMORY_MAX_IDS = 10_000
FILE_MAX_IDS = 100_000


@runtime_checkable
class SeenStore(Protocol):
    def seen(self, msg_id: str) -> bool:
        """True if ``msg_id`` was recorded (and not yet evicted)."""
        ...

    def add(self, msg_id: str) -> None:
        """Record ``msg_id`` as shown; durable (as far as the store promises) once it returns."""
        ...


@runtime_checkable
class OrderMarks(Protocol):
    def last_seqs(self) -> dict[str, int]:
        """Conversation -> the highest seq shown."""
        ...

    def mark_seq(self, conversation: str, seq: int) -> None:
        """``seq`` of ``conversation`` was shown (a lower one than recorded changes nothing)."""
        ...


MAX_CONVERSATIONS = 10_000  # order marks kept in memory (the most recently marked)


class MemorySeenStore:
    """The most recent ``max_ids`` ids in memory, in the order they were first recorded."""

    def __init__(self, max_ids: int = MEMORY_MAX_IDS) -> None:
        if max_ids < 1:
            raise ValueError("max_ids must be at least 1")
        self.max_ids = max_ids
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._seqs: OrderedDict[str, int] = OrderedDict()

    def seen(self, msg_id: str) -> bool:
        return msg_id in self._ids

    def add(self, msg_id: str) -> None:
        if msg_id in self._ids:
            return
        self._ids[msg_id] = None
        while len(self._ids) > self.max_ids:
            self._ids.popitem(last=False)

    def __len__(self) -> int:
        return len(self._ids)

    def last_seqs(self) -> dict[str, int]:
        return dict(self._seqs)

    def mark_seq(self, conversation: str, seq: int) -> None:
        best = max(seq, self._seqs.pop(conversation, seq))
        self._seqs[conversation] = best
        while len(self._seqs) > MAX_CONVERSATIONS:
            self._seqs.popitem(last=False)


class SqliteSeenStore:
    """The most recent ``max_ids`` ids in a SQLite file, one row each.

    Rows are numbered in the order ids were first recorded (``n``, the rowid); after each new
    id, rows more than ``max_ids`` behind the newest are deleted. ``synchronous=NORMAL`` in WAL
    mode: a commit survives the process being killed, though the last commits may be rolled
    back by a power cut (then a few messages may be shown again, never lost). Several processes
    may share one file. :meth:`close` releases the file; using the store again reopens it.
    """

    def __init__(self, path: str | os.PathLike[str], max_ids: int = FILE_MAX_IDS) -> None:
        if max_ids < 1:
            raise ValueError("max_ids must be at least 1")
        self.path = os.fspath(path)
        self.max_ids = max_ids
        self._conn: sqlite3.Connection | None = None
        db = self._db()
        newest = db.execute("SELECT max(n) FROM seen_ids").fetchone()[0]
        if newest is not None:  # reopened with a smaller bound
            self._evict(int(newest))

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            # Autocommit; the client may be built in one thread and run its loop in another.
            db = sqlite3.connect(self.path, timeout=10.0, isolation_level=None,
                                 check_same_thread=False)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.execute("CREATE TABLE IF NOT EXISTS seen_ids ("
                       "n INTEGER PRIMARY KEY, id TEXT NOT NULL UNIQUE)")
            db.execute("CREATE TABLE IF NOT EXISTS conversation_seqs ("
                       "conversation TEXT PRIMARY KEY, seq INTEGER NOT NULL)")
            self._conn = db
        return self._conn

    def seen(self, msg_id: str) -> bool:
        row = self._db().execute("SELECT 1 FROM seen_ids WHERE id = ?", (msg_id,)).fetchone()
        return row is not None

    def add(self, msg_id: str) -> None:
        cur = self._db().execute("INSERT OR IGNORE INTO seen_ids (id) VALUES (?)", (msg_id,))
        if cur.rowcount == 1 and cur.lastrowid is not None:
            self._evict(cur.lastrowid)

    def _evict(self, newest: int) -> None:
        self._db().execute("DELETE FROM seen_ids WHERE n <= ?", (newest - self.max_ids,))

    def __len__(self) -> int:
        return int(self._db().execute("SELECT count(*) FROM seen_ids").fetchone()[0])

    def last_seqs(self) -> dict[str, int]:
        rows = self._db().execute("SELECT conversation, seq FROM conversation_seqs").fetchall()
        return {str(c): int(n) for c, n in rows}

    def mark_seq(self, conversation: str, seq: int) -> None:
        self._db().execute(
            "INSERT INTO conversation_seqs (conversation, seq) VALUES (?, ?) "
            "ON CONFLICT (conversation) DO UPDATE SET seq = max(seq, excluded.seq)",
            (conversation, seq))

    def close(self) -> None:
        """Release the file; a later call opens it again."""
        if self._conn is not None:
            self._conn.close()
            self._conn = None
