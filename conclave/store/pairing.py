"""Pool pairing in the store: a pool's user data as one document, the partner's copy,
and the takeover of a failed partner's users (docs/pools.md).

A *snapshot* is everything a partner needs to serve this pool's users: each user
(name, domain, digest HA1s, disabled), their contact list and their privacy rules.
The partner keeps the latest one it received (``pool_backups``). Failover writes the
failed pool's users from that copy into the survivor's own tables and records which
(``pool_failovers``); failback exports those users' current data (whatever changed
while they were away comes home), writes it into the home pool and removes them from
the survivor. Every write bumps the change counters, so the Front Ends reload.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass
from typing import Any

from sqlalchemy import delete, select

from conclave.store.database import Database
from conclave.store.errors import ConflictError, StoreError
from conclave.store.generations import DIRECTORY, USERS, bump
from conclave.store.models import (
    ContactListItem,
    PoolBackup,
    PoolFailover,
    PrivacyRule,
    User,
)

MAX_SNAPSHOT_BYTES = 64 * 1024 * 1024
"""Largest snapshot accepted from a partner: about 200,000 users with contact lists;
a bigger one (or a hostile one) is refused, not parsed."""


@dataclass(frozen=True)
class Backup:
    """The copy of a partner pool held here."""

    pool: str
    snapshot: dict[str, Any]
    changed_at: dt.datetime
    received_at: dt.datetime
    heard_at: dt.datetime

    @property
    def users(self) -> list[str]:
        return [u["name"] for u in self.snapshot.get("users", [])]


def _user_record(user: User, contacts: list[ContactListItem], rules: list[PrivacyRule]) -> Any:
    return {
        "name": user.name,
        "domain": user.domain,
        "ha1_md5": user.ha1_md5,
        "ha1_sha256": user.ha1_sha256,
        "disabled": user.disabled,
        "created_at": user.created_at.isoformat(),
        "contacts": [{"contact": c.contact, "group": c.group_name} for c in contacts],
        "privacy": [{"target": r.target, "level": r.level} for r in rules],
    }


class PairingStore:
    """Snapshots, backups and failover records of one pool's database."""

    def __init__(self, database: Database) -> None:
        self.db = database

    async def snapshot(self, names: list[str] | None = None) -> dict[str, Any]:
        """This pool's users (only ``names`` when given) with their lists and rules."""
        async with self.db.transaction() as session:
            query = select(User).order_by(User.id)
            if names is not None:
                query = query.where(User.name.in_(names))
            users = list((await session.scalars(query)).all())
            ids = [u.id for u in users]
            contacts = (
                await session.scalars(
                    select(ContactListItem).where(ContactListItem.owner_id.in_(ids))
                )
            ).all()
            rules = (
                await session.scalars(select(PrivacyRule).where(PrivacyRule.owner_id.in_(ids)))
            ).all()
        by_owner: dict[int, list[ContactListItem]] = {}
        for item in contacts:
            by_owner.setdefault(item.owner_id, []).append(item)
        rules_by: dict[int, list[PrivacyRule]] = {}
        for rule in rules:
            rules_by.setdefault(rule.owner_id, []).append(rule)
        return {
            "users": [
                _user_record(u, by_owner.get(u.id, []), rules_by.get(u.id, [])) for u in users
            ]
        }

    # -- the partner's copy --------------------------------------------------------------------
    async def save_backup(
        self, pool: str, snapshot_json: str, changed_at: dt.datetime, now: dt.datetime
    ) -> None:
        if len(snapshot_json) > MAX_SNAPSHOT_BYTES:
            raise StoreError(f"snapshot of pool {pool} is larger than {MAX_SNAPSHOT_BYTES} bytes")
        async with self.db.transaction() as session:
            row = await session.get(PoolBackup, pool)
            if row is None:
                session.add(PoolBackup(pool=pool, payload=snapshot_json, changed_at=changed_at,
                                       received_at=now, heard_at=now))  # fmt: skip
            elif changed_at >= row.changed_at:
                row.payload, row.changed_at = snapshot_json, changed_at
                row.received_at = row.heard_at = now

    async def heard(self, pool: str, now: dt.datetime) -> bool:
        """Record the partner's heartbeat; False when no copy of it exists yet."""
        async with self.db.transaction() as session:
            row = await session.get(PoolBackup, pool)
            if row is None:
                return False
            row.heard_at = now
            return True

    async def heard_at(self, pool: str) -> dt.datetime | None:
        """The partner's last heartbeat (None: no copy of it yet), without its copy."""
        async with self.db.transaction() as session:
            return await session.scalar(select(PoolBackup.heard_at).where(PoolBackup.pool == pool))

    async def backup(self, pool: str) -> Backup | None:
        async with self.db.transaction() as session:
            row = await session.get(PoolBackup, pool)
            if row is None:
                return None
            return Backup(pool, json.loads(row.payload), row.changed_at, row.received_at,
                          row.heard_at)  # fmt: skip

    # -- failover and failback ----------------------------------------------------------------
    async def failed_over(self) -> dict[str, tuple[list[str], dt.datetime]]:
        """Pools whose users this pool serves now: their user names and since when."""
        async with self.db.transaction() as session:
            rows = (await session.scalars(select(PoolFailover))).all()
            return {r.pool: (json.loads(r.users), r.since) for r in rows}

    async def take_over(self, pool: str, snapshot: dict[str, Any], now: dt.datetime) -> int:
        """Serve ``pool``'s users from ``snapshot`` (failover); return how many.
        Refused (ConflictError) when already done, or when a name is taken here."""
        users = snapshot.get("users", [])
        async with self.db.transaction() as session:
            if await session.get(PoolFailover, pool) is not None:
                raise ConflictError(f"pool {pool} has failed over to this pool already")
            names = [u["name"] for u in users]
            taken = (await session.scalars(select(User.name).where(User.name.in_(names)))).all()
            if taken:
                raise ConflictError(f"users of pool {pool} exist here already: {sorted(taken)}")
            await _insert(session, users)
            session.add(PoolFailover(pool=pool, users=json.dumps(names), since=now))
            await bump(session, USERS, DIRECTORY)
        return len(users)

    async def hand_back(self, pool: str) -> list[str]:
        """Forget ``pool``'s users here (after failback wrote them home); their names."""
        async with self.db.transaction() as session:
            row = await session.get(PoolFailover, pool)
            if row is None:
                raise ConflictError(f"pool {pool} has not failed over to this pool")
            names = list(json.loads(row.users))
            await session.execute(delete(User).where(User.name.in_(names)))
            await session.delete(row)
            await bump(session, USERS, DIRECTORY)
        return names

    async def replace_users(self, snapshot: dict[str, Any]) -> int:
        """Write ``snapshot``'s users here, replacing any of the same name (failback)."""
        users = snapshot.get("users", [])
        async with self.db.transaction() as session:
            names = [u["name"] for u in users]
            await session.execute(delete(User).where(User.name.in_(names)))
            await session.flush()
            await _insert(session, users)
            await bump(session, USERS, DIRECTORY)
        return len(users)


async def _insert(session: Any, users: list[dict[str, Any]]) -> None:
    for record in users:
        user = User(
            name=str(record["name"]),
            domain=str(record["domain"]),
            ha1_md5=str(record["ha1_md5"]),
            ha1_sha256=str(record["ha1_sha256"]),
            disabled=bool(record.get("disabled", False)),
            created_at=dt.datetime.fromisoformat(str(record["created_at"])),
        )
        session.add(user)
        await session.flush()
        for item in record.get("contacts", []):
            session.add(ContactListItem(owner_id=user.id, contact=str(item["contact"]),
                                        group_name=str(item["group"])))  # fmt: skip
        for rule in record.get("privacy", []):
            session.add(PrivacyRule(owner_id=user.id, target=str(rule["target"]),
                                    level=str(rule["level"])))  # fmt: skip
