"""The agent's local cache: events waiting for the controller, on disk, bounded.

Every event the agent forwards is first appended here and stays until the
controller confirms it stored it (or, for a plain syslog server that sends
no confirmations, until it was written to the connection). The buffer is a
FIFO in one SQLite file, ``DATA/logbuffer/buffer.db``: a sequence number
per event (never reused: AUTOINCREMENT) and the event's JSON.

The bound is in octets of event data (``[logging] buffer_max``, default
:data:`conclave.config.LOG_BUFFER_DEFAULT`). Nothing is lost within it. An
event that does not fit is dropped and counted; the agent reports the count
once space is back (see :mod:`conclave.ops.agent`).

``origin`` is a random identifier kept beside the buffer: with the sequence
numbers it names each event uniquely, so a controller that receives an
event twice (resent after a reconnection) stores it once.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import sqlite3
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Final

from conclave.store.database import create_private_file

BUFFER_DIR: Final = "logbuffer"
"""In the data directory."""
DB_FILE: Final = "buffer.db"
ORIGIN_FILE: Final = "origin"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS events (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    payload BLOB NOT NULL
)
"""


def read_origin(directory: Path) -> str:
    """This agent's origin identifier, created on first use."""
    path = Path(directory) / ORIGIN_FILE
    try:
        origin = path.read_text(encoding="ascii").strip()
    except (OSError, UnicodeDecodeError):
        origin = ""
    if len(origin) < 8 or not origin.isalnum():
        origin = secrets.token_hex(8)
        tmp = path.with_name(f".{ORIGIN_FILE}.{os.getpid()}")
        tmp.write_text(origin + "\n", encoding="ascii")
        os.replace(tmp, path)
    return origin


class LogBuffer:
    """A bounded on-disk FIFO of ``(seq, payload)``. One owner; not thread-safe."""

    def __init__(self, directory: Path, max_bytes: int) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(mode=0o700, parents=True, exist_ok=True)
        self.max_bytes = max_bytes
        self.origin = read_origin(self.directory)
        create_private_file(self.directory / DB_FILE)  # events name users and calls
        self._db = sqlite3.connect(self.directory / DB_FILE, isolation_level=None)
        # WAL without a sync per commit: an event costs a page write, not an
        # fsync. A power cut may lose the last moments of a buffer; a crash of
        # the process loses nothing already appended.
        self._db.execute("PRAGMA journal_mode=WAL")
        self._db.execute("PRAGMA synchronous=NORMAL")
        self._db.execute(_SCHEMA)
        row = self._db.execute("SELECT count(*), coalesce(sum(length(payload)), 0) FROM events")
        self.count, self.bytes = (int(v) for v in row.fetchone())

    def append(self, payloads: Iterable[bytes]) -> int:
        """Store as many of ``payloads`` as fit, in order; returns how many were dropped."""
        rows: list[tuple[bytes]] = []
        dropped = 0
        size = self.bytes
        for payload in payloads:
            if size + len(payload) > self.max_bytes:
                dropped += 1
                continue
            size += len(payload)
            rows.append((payload,))
        if rows:
            with self._transaction():
                self._db.executemany("INSERT INTO events (payload) VALUES (?)", rows)
            self.bytes = size
            self.count += len(rows)
        return dropped

    def read_after(self, seq: int, limit: int) -> list[tuple[int, bytes]]:
        """Up to ``limit`` events with a sequence number above ``seq``, oldest first."""
        cursor = self._db.execute(
            "SELECT seq, payload FROM events WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
        )
        return [(int(s), bytes(p)) for s, p in cursor.fetchall()]

    def delete_through(self, seq: int) -> int:
        """Forget every event up to and including ``seq`` (delivered); returns how many."""
        with self._transaction():
            row = self._db.execute(
                "SELECT count(*), coalesce(sum(length(payload)), 0) FROM events WHERE seq <= ?",
                (seq,),
            ).fetchone()
            self._db.execute("DELETE FROM events WHERE seq <= ?", (seq,))
        removed, size = int(row[0]), int(row[1])
        self.count -= removed
        self.bytes -= size
        return removed

    def first_seq(self) -> int | None:
        row = self._db.execute("SELECT min(seq) FROM events").fetchone()
        return None if row[0] is None else int(row[0])

    def close(self) -> None:
        self._db.close()

    @contextlib.contextmanager
    def _transaction(self) -> Iterator[None]:
        # isolation_level=None leaves transactions to us: one per batch.
        self._db.execute("BEGIN")
        try:
            yield
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
