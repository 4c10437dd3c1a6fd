"""Archiving policy overrides: per user, pool and site (the global policy is in the config).

Each row sets a level's ``internal`` and ``federated`` switches; NULL means
"inherit". A row whose switches are both NULL says nothing, so it is deleted.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from sqlalchemy import delete, select

from conclave.store.database import Database, rowcount
from conclave.store.errors import StoreError
from conclave.store.models import ArchivePolicyOverride

SCOPES = ("user", "pool", "site")


@dataclass(frozen=True)
class PolicyRow:
    """One stored override."""

    scope: str
    name: str
    internal: bool | None
    federated: bool | None
    updated_at: dt.datetime


def _check_scope(scope: str) -> None:
    if scope not in SCOPES:
        raise StoreError(f"unknown policy scope {scope!r}: use user, pool or site")


class ArchivePolicyStore:
    """Reads and writes :class:`~conclave.store.models.ArchivePolicyOverride` rows."""

    def __init__(self, database: Database) -> None:
        self._db = database

    async def all(self) -> list[PolicyRow]:
        """Every override, by scope then name."""
        async with self._db.transaction() as session:
            rows = await session.scalars(
                select(ArchivePolicyOverride).order_by(
                    ArchivePolicyOverride.scope, ArchivePolicyOverride.name
                )
            )
            return [_row(r) for r in rows]

    async def get(self, scope: str, name: str) -> PolicyRow | None:
        _check_scope(scope)
        async with self._db.transaction() as session:
            row = await session.scalar(
                select(ArchivePolicyOverride).where(
                    ArchivePolicyOverride.scope == scope, ArchivePolicyOverride.name == name
                )
            )
            return None if row is None else _row(row)

    async def put(
        self,
        scope: str,
        name: str,
        *,
        internal: bool | None,
        federated: bool | None,
        now: dt.datetime | None = None,
    ) -> PolicyRow | None:
        """Set both switches of one level (None: inherit); None if nothing is left set."""
        _check_scope(scope)
        now = now or dt.datetime.now(dt.UTC)
        async with self._db.transaction() as session:
            row = await session.scalar(
                select(ArchivePolicyOverride).where(
                    ArchivePolicyOverride.scope == scope, ArchivePolicyOverride.name == name
                )
            )
            if internal is None and federated is None:
                if row is not None:
                    await session.delete(row)
                return None
            if row is None:
                row = ArchivePolicyOverride(scope=scope, name=name)
                session.add(row)
            row.internal, row.federated, row.updated_at = internal, federated, now
            await session.flush()
            return _row(row)

    async def clear(self, scope: str, name: str) -> bool:
        """Remove one level's override; False if there was none."""
        _check_scope(scope)
        async with self._db.transaction() as session:
            result = await session.execute(
                delete(ArchivePolicyOverride).where(
                    ArchivePolicyOverride.scope == scope, ArchivePolicyOverride.name == name
                )
            )
            return rowcount(result) > 0


def _row(row: ArchivePolicyOverride) -> PolicyRow:
    return PolicyRow(row.scope, row.name, row.internal, row.federated, row.updated_at)
