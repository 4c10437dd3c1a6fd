"""Change counters, and :class:`Reloader`, which keeps an in-memory copy current with them.

A server answers from memory: the user list (the authenticator) and every
contact list and privacy rule (presence). Re-reading those tables is O(all
rows) on the event loop, so it must happen only when something changed. Each
write that changes them bumps a counter in ``store_generation`` **in the same
transaction** (:func:`bump`): a committed change always has a new counter, a
rolled-back one never has. Reading a counter is one primary-key SELECT
(:meth:`GenerationStore.get`), cheap enough to poll every few seconds.

Counters (:data:`USERS`, :data:`DIRECTORY`):

* ``users``: :class:`~conclave.store.users.UserStore` add, password, enable,
  disable, remove;
* ``directory``: :class:`~conclave.store.contacts.ContactStore` and
  :class:`~conclave.store.contacts.PrivacyStore` writes, and removing a user
  (their list and rules go with them).

Using them::

    users = Reloader("users", load_users, lambda: GenerationStore(db).get(USERS))
    await users.reload(trigger="startup")   # at start-up and on SIGHUP: unconditional
    await users.reload_if_changed()         # every few seconds: a SELECT, rarely more

Only code that writes through the stores bumps a counter; a script that
writes rows itself must bump too (or signal the server), or the server will
not notice until its next restart or SIGHUP.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable

import structlog
from sqlalchemy import select
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from conclave.store.database import Database
from conclave.store.models import StoreGeneration

log = structlog.get_logger("conclave.store")

USERS = "users"
"""Bumped by every write to the users table."""

DIRECTORY = "directory"
"""Bumped by every write to contact lists and privacy rules (and by removing a user)."""


async def bump(session: AsyncSession, *names: str) -> None:
    """Add one to each counter in ``names`` inside the caller's transaction.

    Call it after the change itself, inside the same ``Database.transaction()``:
    the bump commits or rolls back with the change. Pending ORM changes are
    flushed first, so a constraint violation still surfaces here, before the
    counter moves. On PostgreSQL the counter row stays locked until commit,
    which serialises writers of the same counter (administrative writes: rare);
    with several names, pass them in one fixed order (:data:`USERS` first) so
    two writers cannot wait on each other.
    """
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    for name in names:
        # An upsert, so a missing row (a table emptied by hand) starts again.
        statement = insert(StoreGeneration).values(name=name, value=1)
        statement = statement.on_conflict_do_update(
            index_elements=[StoreGeneration.name],
            set_={"value": StoreGeneration.value + 1},
        )
        await session.execute(statement)


class GenerationStore:
    """Reads the change counters."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def get(self, name: str) -> int:
        """The counter ``name`` (0 if it has never been bumped): one primary-key SELECT."""
        async with self._db.transaction() as session:
            value = await session.scalar(
                select(StoreGeneration.value).where(StoreGeneration.name == name)
            )
        return value or 0


class Reloader:
    """Keeps an in-memory copy of some tables current, guided by their change counter.

    ``load`` reads the tables and swaps the new copy in; if it raises, the old
    copy must stay in force (the reload is retried at the next poll, because
    the counter still differs). ``generation`` reads the counter; without one
    every :meth:`reload_if_changed` reloads. Reloads never overlap: a signal
    arriving during a poll's reload waits for it, then reloads again.
    """

    def __init__(
        self,
        what: str,
        load: Callable[[], Awaitable[None]],
        generation: Callable[[], Awaitable[int]] | None = None,
    ) -> None:
        self.what = what
        self._load = load
        self._generation = generation
        self._lock = asyncio.Lock()
        self.loaded_generation: int | None = None
        """The counter read just before the last successful load (None: never loaded)."""
        self.loads = 0
        """Successful loads so far."""

    async def reload(self, *, trigger: str = "signal") -> None:
        """Reload now, whatever the counter says (start-up, SIGHUP). Raises what ``load`` raises."""
        async with self._lock:
            await self._reload(await self._read(), trigger)

    async def reload_if_changed(self) -> bool:
        """Reload only if the counter moved since the last successful load; True if it did.

        The first call (nothing loaded yet) always loads. Raises what the
        counter read or ``load`` raises; the caller logs and polls again.
        """
        async with self._lock:
            current = await self._read()
            if current is not None and current == self.loaded_generation:
                return False
            await self._reload(current, "change" if self.loads else "startup")
            return True

    async def _read(self) -> int | None:
        return None if self._generation is None else await self._generation()

    async def _reload(self, generation: int | None, trigger: str) -> None:
        # The counter is read before the data: a change committed in between is
        # in the data and also moves the counter, so at worst it is read twice,
        # never missed.
        await self._load()
        self.loaded_generation = generation
        self.loads += 1
        log.info(f"{self.what} reloaded", generation=generation, trigger=trigger)
