"""The logging controller's store: every server's events in one SQLite file, indexed.

One row per event: the correlation keys in their own indexed columns (time,
host, role, level, event, Call-ID, user, conversation id) and the whole event
as JSON. ``(origin, seq)`` is unique, so an event an agent resends after a
reconnection is stored once. Events from plain syslog senders have no origin
and are all kept.

The controller writes (:meth:`LogStore.insert`); ``conclave logs search``
reads the same file (:func:`open_readonly`), which WAL mode allows while
the controller runs. Searches return events in time order across servers.
"""

from __future__ import annotations

import datetime as dt
import json
import sqlite3
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

from conclave.store.database import create_private_file

DEFAULT_LIMIT: Final = 10_000
"""Events one search returns unless told otherwise."""

_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS events (
        id INTEGER PRIMARY KEY,
        origin TEXT,
        seq INTEGER,
        ts REAL NOT NULL,
        host TEXT,
        role TEXT,
        level TEXT,
        event TEXT,
        call_id TEXT,
        user TEXT,
        conversation_id TEXT,
        data TEXT NOT NULL,
        received REAL NOT NULL,
        UNIQUE (origin, seq)
    )""",
    "CREATE INDEX IF NOT EXISTS events_ts ON events (ts)",
    "CREATE INDEX IF NOT EXISTS events_call_id ON events (call_id, ts)",
    "CREATE INDEX IF NOT EXISTS events_user ON events (user, ts)",
    "CREATE INDEX IF NOT EXISTS events_conversation ON events (conversation_id, ts)",
)


def parse_time(value: object) -> float | None:
    """Seconds since the epoch from an ISO 8601 time (UTC when no offset), or None."""
    if not isinstance(value, str) or not value:
        return None
    try:
        when = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return when.timestamp()


def _user_of(event: Mapping[str, Any]) -> str | None:
    user = event.get("user")
    if not user and isinstance(event.get("aor"), str):
        user = str(event["aor"]).removeprefix("sip:").removeprefix("sips:").split("@", 1)[0]
    return str(user).lower() if user else None


@dataclass(frozen=True)
class Received:
    """One event as the controller got it."""

    event: Mapping[str, Any]
    origin: str | None
    seq: int | None
    received: float


class LogStore:
    """The events file. One writer (the controller); readers use :func:`open_readonly`."""

    def __init__(self, path: Path, *, readonly: bool = False) -> None:
        self.path = Path(path)
        if readonly:
            uri = self.path.resolve().as_uri() + "?mode=ro"
            self._db = sqlite3.connect(uri, uri=True, isolation_level=None)
        else:
            self.path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            # Mode 0600 before SQLite makes it (its -wal and -shm then get 0600 too):
            # every server's events, users and Call-IDs are in here.
            create_private_file(self.path)
            self._db = sqlite3.connect(self.path, isolation_level=None)
            self._db.execute("PRAGMA journal_mode=WAL")
            self._db.execute("PRAGMA synchronous=NORMAL")
            for statement in _SCHEMA:
                self._db.execute(statement)
        self._db.execute("PRAGMA busy_timeout=5000")

    def insert(self, items: Iterable[Received]) -> int:
        """Store ``items`` in one transaction; returns how many were new."""
        rows = []
        for item in items:
            event = item.event
            ts = parse_time(event.get("time"))
            conversation = event.get("conversation_id") or event.get("conversation")
            rows.append(
                (
                    item.origin,
                    item.seq,
                    item.received if ts is None else ts,
                    _text(event.get("host")),
                    _text(event.get("role")),
                    _text(event.get("level")),
                    _text(event.get("event")),
                    _text(event.get("call_id")),
                    _user_of(event),
                    _text(conversation),
                    json.dumps(event, default=str, ensure_ascii=False),
                    item.received,
                )
            )
        if not rows:
            return 0
        before = self._db.total_changes
        self._db.execute("BEGIN")
        try:
            self._db.executemany(
                "INSERT OR IGNORE INTO events (origin, seq, ts, host, role, level, event, "
                "call_id, user, conversation_id, data, received) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                rows,
            )
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")
        return self._db.total_changes - before

    def search(
        self,
        *,
        call_id: str | None = None,
        user: str | None = None,
        conversation_id: str | None = None,
        since: float | None = None,
        until: float | None = None,
        text: str | None = None,
        limit: int = DEFAULT_LIMIT,
    ) -> list[dict[str, Any]]:
        """Matching events (all conditions must hold), oldest first, across every server."""
        where: list[str] = []
        args: list[object] = []
        if call_id:
            where.append("call_id = ?")
            args.append(call_id)
        if user:
            name = user.strip().lower().removeprefix("sip:")
            where.append("(user = ? OR user = ?)")
            args += [name, name.split("@", 1)[0]] if "@" in name else [name, name]
        if conversation_id:
            where.append("conversation_id = ?")
            args.append(conversation_id)
        if since is not None:
            where.append("ts >= ?")
            args.append(since)
        if until is not None:
            where.append("ts <= ?")
            args.append(until)
        if text:
            escaped = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            where.append("data LIKE ? ESCAPE '\\'")
            args.append(f"%{escaped}%")
        sql = "SELECT data, origin, seq FROM events"
        if where:
            sql += " WHERE " + " AND ".join(where)
        sql += " ORDER BY ts, host, origin, seq, id LIMIT ?"
        args.append(limit)
        out = []
        for data, _origin, _seq in self._db.execute(sql, args):
            try:
                event = json.loads(data)
            except json.JSONDecodeError:
                event = {"event": data}
            out.append(event if isinstance(event, dict) else {"event": event})
        return out

    def purge_before(self, ts: float) -> int:
        """Delete events older than ``ts``; returns how many."""
        return self._db.execute("DELETE FROM events WHERE ts < ?", (ts,)).rowcount

    def count(self) -> int:
        return int(self._db.execute("SELECT count(*) FROM events").fetchone()[0])

    def close(self) -> None:
        self._db.close()


def _text(value: object) -> str | None:
    return None if value is None or value == "" else str(value)


def open_readonly(path: Path) -> LogStore:
    """Open an existing store for searching; raises FileNotFoundError if there is none."""
    if not Path(path).is_file():
        raise FileNotFoundError(f"no event store at {path} (has the controller run here?)")
    return LogStore(path, readonly=True)
