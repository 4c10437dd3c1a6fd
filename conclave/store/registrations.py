"""Registrar bindings, persisted so a restarted server keeps its location service.

The registrar answers from memory (nothing on the request path waits on the
database); it writes bindings through to this store and reloads them with
:meth:`RegistrationStore.load_all` at start-up.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, cast

from sqlalchemy import Table, delete, insert, select
from sqlalchemy.dialects import postgresql, sqlite

from conclave.store.database import Database, rowcount
from conclave.store.errors import StoreError
from conclave.store.models import Registration


@dataclass(frozen=True)
class Binding:
    """One contact of an address of record, with the flow it was registered over.

    ``aor`` and ``contact`` are the canonical URI strings the registrar
    compares with (RFC 3261 §10.3 step 6); the store compares them bytewise.
    Timestamps are timezone-aware UTC.
    """

    aor: str
    contact: str
    expires_at: dt.datetime
    call_id: str
    cseq: int
    transport: str
    """"udp", "tcp", "tls", "ws" or "wss"."""
    remote_addr: str
    """Source of the REGISTER, "host:port" ("[v6]:port")."""
    updated_at: dt.datetime
    q: float = 1.0
    instance_id: str | None = None
    reg_id: int | None = None
    connection_id: str | None = None
    path: str | None = None
    user_agent: str | None = None


_COLUMNS = tuple(f.name for f in fields(Binding))


def _row(binding: Binding) -> dict[str, Any]:
    # Not dataclasses.asdict: that deep-copies every value, and these are all
    # immutable (str, int, float, datetime, None).
    return {name: getattr(binding, name) for name in _COLUMNS}


_KEY_COLUMNS = ("aor", "contact")

SQL_IN_CHUNK = 500
"""AORs per ``IN (...)`` list: SQLite before 3.32 allows 999 bound parameters
per statement, and one list per chunk stays far below every limit."""


def _from_row(row: Registration) -> Binding:
    return Binding(
        aor=row.aor,
        contact=row.contact,
        expires_at=row.expires_at,
        call_id=row.call_id,
        cseq=row.cseq,
        transport=row.transport,
        remote_addr=row.remote_addr,
        updated_at=row.updated_at,
        q=row.q,
        instance_id=row.instance_id,
        reg_id=row.reg_id,
        connection_id=row.connection_id,
        path=row.path,
        user_agent=row.user_agent,
    )


class RegistrationStore:
    """Persistent copy of the location service's bindings."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def replace_all_for_aor(self, aor: str, bindings: Sequence[Binding]) -> None:
        """Make ``bindings`` the complete set for ``aor`` (empty: remove them all).

        Done in one transaction, matching a REGISTER that the registrar
        processed atomically (RFC 3261 §10.3).
        """
        await self.replace_many({aor: bindings})

    async def replace_many(self, sets: Mapping[str, Sequence[Binding]]) -> None:
        """:meth:`replace_all_for_aor` for many AORs, in one transaction.

        The location service's write-behind flushes every AOR changed in the
        last interval at once: one DELETE per chunk of AORs and one multi-row
        INSERT, instead of a transaction (and a commit) per AOR.
        """
        rows: list[dict[str, Any]] = []
        for aor, bindings in sets.items():
            for binding in bindings:
                if binding.aor != aor:
                    raise StoreError(f"binding for {binding.aor} given for {aor}")
                rows.append(_row(binding))
        if not sets:
            return
        aors = list(sets)
        table = cast(Table, Registration.__table__)
        async with self._db.core_transaction() as connection:
            for i in range(0, len(aors), SQL_IN_CHUNK):
                chunk = aors[i : i + SQL_IN_CHUNK]
                await connection.execute(delete(table).where(table.c.aor.in_(chunk)))
            if rows:
                await connection.execute(insert(table), rows)

    async def upsert(self, binding: Binding) -> None:
        """Insert the binding, or replace the one with the same (aor, contact)."""
        values = _row(binding)
        insert_fn: Any = postgresql.insert if self._db.dialect == "postgresql" else sqlite.insert
        statement = insert_fn(Registration).values(**values)
        statement = statement.on_conflict_do_update(
            index_elements=list(_KEY_COLUMNS),
            set_={k: statement.excluded[k] for k in values if k not in _KEY_COLUMNS},
        )
        async with self._db.transaction() as session:
            await session.execute(statement)

    async def delete(self, aor: str, contact: str) -> bool:
        """Remove one binding; False if it was not there."""
        async with self._db.transaction() as session:
            result = await session.execute(
                delete(Registration).where(Registration.aor == aor, Registration.contact == contact)
            )
            return rowcount(result) > 0

    async def load_for(self, aor: str) -> list[Binding]:
        """The bindings of one address of record, highest q first."""
        query = (
            select(Registration)
            .where(Registration.aor == aor)
            .order_by(Registration.q.desc(), Registration.id)
        )
        async with self._db.transaction() as session:
            return [_from_row(row) for row in await session.scalars(query)]

    async def load_all(self) -> list[Binding]:
        """Every stored binding, grouped by AOR. Call :meth:`purge_expired` first."""
        query = select(Registration).order_by(Registration.aor, Registration.id)
        async with self._db.transaction() as session:
            return [_from_row(row) for row in await session.scalars(query)]

    async def purge_expired(self, now: dt.datetime) -> int:
        """Delete bindings with ``expires_at <= now``; returns how many went."""
        async with self._db.transaction() as session:
            result = await session.execute(
                delete(Registration).where(Registration.expires_at <= now)
            )
            return rowcount(result)
