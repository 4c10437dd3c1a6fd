"""Instant messages held for recipients who are offline.

A MESSAGE (RFC 3428) for a user with no registered contact is stored here
and delivered when the user next registers. Each user's queue is bounded in
count and in age, so one sender cannot fill the disk.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import delete, func, select, text

from conclave.store.database import Database, rowcount
from conclave.store.errors import StoreError
from conclave.store.models import OfflineMessage

DEFAULT_MAX_PER_USER = 100
"""Matches the configuration default ``[im] offline_max_per_user``."""

DEFAULT_MAX_AGE = dt.timedelta(days=7)
"""Matches the configuration default ``[im] offline_max_age``."""


@dataclass(frozen=True)
class StoredMessage:
    """One held message, ready to be re-sent as a MESSAGE request."""

    id: int
    recipient: str
    sender: str
    """The From header value of the original request."""
    content_type: str
    body: bytes
    date_header: str | None
    received_at: dt.datetime


def _as_delta(value: dt.timedelta | float) -> dt.timedelta:
    return value if isinstance(value, dt.timedelta) else dt.timedelta(seconds=value)


class OfflineMessageStore:
    """Bounded per-recipient queues of messages.

    ``max_per_user`` and ``max_age`` (a timedelta or seconds) are the defaults
    for :meth:`enqueue`; pass the ``[im]`` configuration values here.
    """

    def __init__(
        self,
        database: Database,
        *,
        max_per_user: int = DEFAULT_MAX_PER_USER,
        max_age: dt.timedelta | float = DEFAULT_MAX_AGE,
    ) -> None:
        self._db = database
        self.max_per_user = max_per_user
        self.max_age = _as_delta(max_age)

    async def enqueue(
        self,
        recipient: str,
        *,
        sender: str,
        content_type: str,
        body: bytes,
        date_header: str | None = None,
        now: dt.datetime | None = None,
        max_per_user: int | None = None,
        max_age: dt.timedelta | float | None = None,
    ) -> bool:
        """Hold a message for ``recipient``; False (nothing stored) if the queue is full.

        Messages older than ``max_age`` no longer count: they are dropped
        first. On False, answer the sender with an error (for example 480 or
        486) rather than pretending the message will be delivered.
        """
        now = now or dt.datetime.now(dt.UTC)
        limit = self.max_per_user if max_per_user is None else max_per_user
        cutoff = now - (self.max_age if max_age is None else _as_delta(max_age))
        if limit <= 0:
            return False
        async with self._db.transaction() as session:
            if self._db.dialect == "postgresql":
                # Serialise enqueues per recipient so concurrent ones cannot both
                # see room for one more message; released at commit.
                await session.execute(
                    text("SELECT pg_advisory_xact_lock(hashtext(:recipient))"),
                    {"recipient": recipient},
                )
            # On SQLite this DELETE opens the write transaction first, so the
            # count below cannot be raced by another writer either.
            await session.execute(
                delete(OfflineMessage).where(
                    OfflineMessage.recipient == recipient, OfflineMessage.received_at < cutoff
                )
            )
            held = await session.scalar(
                select(func.count())
                .select_from(OfflineMessage)
                .where(OfflineMessage.recipient == recipient)
            )
            if (held or 0) >= limit:
                return False
            session.add(
                OfflineMessage(
                    recipient=recipient,
                    sender=sender,
                    content_type=content_type,
                    body=body,
                    date_header=date_header,
                    received_at=now,
                )
            )
        return True

    async def count_for(self, recipient: str) -> int:
        """How many messages are held for ``recipient``."""
        async with self._db.transaction() as session:
            held = await session.scalar(
                select(func.count())
                .select_from(OfflineMessage)
                .where(OfflineMessage.recipient == recipient)
            )
            return held or 0

    async def recipients(self) -> set[str]:
        """Every address of record that has at least one message held."""
        async with self._db.transaction() as session:
            rows = await session.scalars(select(OfflineMessage.recipient).distinct())
            return set(rows)

    async def take_for(self, recipient: str) -> list[StoredMessage]:
        """Remove and return every message held for ``recipient``, oldest first.

        A single DELETE ... RETURNING: two concurrent takers never both get
        the same message. If delivery then fails, :meth:`enqueue` it again.
        """
        statement = (
            delete(OfflineMessage)
            .where(OfflineMessage.recipient == recipient)
            .returning(
                OfflineMessage.id,
                OfflineMessage.recipient,
                OfflineMessage.sender,
                OfflineMessage.content_type,
                OfflineMessage.body,
                OfflineMessage.date_header,
                OfflineMessage.received_at,
            )
        )
        async with self._db.transaction() as session:
            rows = (await session.execute(statement)).all()
        messages = [
            StoredMessage(
                id=row.id,
                recipient=row.recipient,
                sender=row.sender,
                content_type=row.content_type,
                body=bytes(row.body),
                date_header=row.date_header,
                received_at=row.received_at,
            )
            for row in rows
        ]
        # RETURNING order is unspecified; delivery order must be arrival order.
        messages.sort(key=lambda m: (m.received_at, m.id))
        return messages

    async def purge_older_than(self, cutoff: dt.datetime) -> int:
        """Delete messages received before ``cutoff``; returns how many went."""
        if cutoff.tzinfo is None:
            raise StoreError("purge_older_than needs an aware UTC datetime")
        async with self._db.transaction() as session:
            result = await session.execute(
                delete(OfflineMessage).where(OfflineMessage.received_at < cutoff)
            )
            return rowcount(result)
