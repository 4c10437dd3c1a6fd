"""SQLAlchemy models of the back-end database.

The schema itself is owned by the Alembic migrations in ``migrations/``;
these classes must match them, and a test compares the two. When changing a
model, add a migration in the same commit.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from sqlalchemy import (
    Boolean,
    Dialect,
    Float,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    false,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column
from sqlalchemy.types import DateTime, TypeDecorator

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}
"""Explicit constraint names, so migrations can refer to them on every engine."""


class UtcDateTime(TypeDecorator[dt.datetime]):
    """A timestamp that is always timezone-aware UTC in Python.

    PostgreSQL stores ``timestamptz``; SQLite has no time zones, so values are
    stored as naive UTC there and given back their tzinfo on the way out.
    Naive datetimes are refused: they are ambiguous and a classic source of
    registrations expiring hours early or late.
    """

    impl = DateTime(timezone=True)
    cache_ok = True

    def process_bind_param(self, value: dt.datetime | None, dialect: Dialect) -> Any:
        if value is None:
            return None
        if value.tzinfo is None:
            raise ValueError("naive datetime given to the store: use an aware UTC datetime")
        value = value.astimezone(dt.UTC)
        if dialect.name == "sqlite":
            value = value.replace(tzinfo=None)
        return value

    def process_result_value(self, value: Any, dialect: Dialect) -> dt.datetime | None:
        if value is None:
            return None
        assert isinstance(value, dt.datetime)
        if value.tzinfo is None:
            return value.replace(tzinfo=dt.UTC)
        return value.astimezone(dt.UTC)


class Base(DeclarativeBase):
    """Declarative base with the project's constraint naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class User(Base):
    """A SIP user account. Only digest HA1 values are stored, never the password."""

    __tablename__ = "users"
    __table_args__ = (UniqueConstraint("name", "domain"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    name: Mapped[str] = mapped_column(String(64))
    """The user part of the address of record (case-sensitive, RFC 3261 §19.1.4)."""
    domain: Mapped[str] = mapped_column(String(253))
    """The domain, lower case; also the digest realm."""
    ha1_md5: Mapped[str] = mapped_column(String(32))
    """hex MD5(name:realm:password) (RFC 2617 §3.2.2.2)."""
    ha1_sha256: Mapped[str] = mapped_column(String(64))
    """hex SHA-256(name:realm:password) (RFC 7616 §3.4.2, RFC 8760)."""
    disabled: Mapped[bool] = mapped_column(Boolean, server_default=false())
    created_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())


class StoreGeneration(Base):
    """A change counter: bumped in the same transaction as every write it covers.

    A server keeps users and the presence directory in memory; it polls these
    rows (one primary-key SELECT) and re-reads a whole table only when its
    counter moved (:mod:`conclave.store.generations`).
    """

    __tablename__ = "store_generation"

    name: Mapped[str] = mapped_column(String(32), primary_key=True)
    """What the counter covers: ``users`` or ``directory`` (contacts and privacy rules)."""
    value: Mapped[int] = mapped_column(Integer, server_default="0")


class Registration(Base):
    """One contact binding of an address of record (RFC 3261 §10, RFC 5626)."""

    __tablename__ = "registrations"
    __table_args__ = (UniqueConstraint("aor", "contact"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    aor: Mapped[str] = mapped_column(String(512), index=True)
    contact: Mapped[str] = mapped_column(String(2048))
    expires_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), index=True)
    q: Mapped[float] = mapped_column(Float, server_default="1.0")
    call_id: Mapped[str] = mapped_column(String(255))
    cseq: Mapped[int] = mapped_column(Integer)
    instance_id: Mapped[str | None] = mapped_column(String(255))
    """The +sip.instance Contact parameter (RFC 5626 §4.1), if any."""
    reg_id: Mapped[int | None] = mapped_column(Integer)
    """The reg-id Contact parameter (RFC 5626 §4.2), if any."""
    transport: Mapped[str] = mapped_column(String(16))
    remote_addr: Mapped[str] = mapped_column(String(64))
    """Where the REGISTER came from, as "host:port" ("[v6]:port")."""
    connection_id: Mapped[str | None] = mapped_column(String(128))
    """The transport's identifier of the flow, for reusing it (RFC 5626 §5.3)."""
    path: Mapped[str | None] = mapped_column(Text)
    """The Path header values (RFC 3327), comma-separated, if any."""
    user_agent: Mapped[str | None] = mapped_column(String(255))
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())


class OfflineMessage(Base):
    """An instant message kept for a recipient who was not registered."""

    __tablename__ = "offline_messages"
    __table_args__ = (
        Index("ix_offline_messages_recipient_received_at", "recipient", "received_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    recipient: Mapped[str] = mapped_column(String(512))
    sender: Mapped[str] = mapped_column(Text)
    """The From header value of the original MESSAGE."""
    content_type: Mapped[str] = mapped_column(String(255))
    body: Mapped[bytes] = mapped_column(LargeBinary)
    date_header: Mapped[str | None] = mapped_column(String(128))
    """The Date header of the original MESSAGE, if it had one."""
    received_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), index=True)


class ContactListItem(Base):
    """One contact on a user's server-side contact list, in exactly one named group.

    Rows go with their owner: deleting the user deletes their list.
    """

    __tablename__ = "contacts"
    __table_args__ = (UniqueConstraint("owner_id", "contact"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    contact: Mapped[str] = mapped_column(String(512))
    """The contact's canonical address of record, ``sip:user@domain``."""
    group_name: Mapped[str] = mapped_column(String(64))


class PrivacyRule(Base):
    """A user's relationship level for one contact AOR or one whole domain.

    Rows go with their owner: deleting the user deletes their rules.
    """

    __tablename__ = "privacy_rules"
    __table_args__ = (UniqueConstraint("owner_id", "target"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    owner_id: Mapped[int] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    target: Mapped[str] = mapped_column(String(512))
    """``sip:user@domain`` for one contact, or a lower-case domain for all of it."""
    level: Mapped[str] = mapped_column(String(16))
    """blocked, external, colleagues, workgroup or friends."""


class ArchivePolicyOverride(Base):
    """An archiving policy for one user, pool or site (the global one is in the config).

    A NULL switch inherits from the level above (user > pool > site > global).
    """

    __tablename__ = "archive_policies"
    __table_args__ = (UniqueConstraint("scope", "name"),)

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    scope: Mapped[str] = mapped_column(String(8))
    """user, pool or site."""
    name: Mapped[str] = mapped_column(String(320))
    """``user@domain`` for a user; the pool's or site's name otherwise."""
    internal: Mapped[bool | None] = mapped_column(Boolean)
    """Archive conversations among local users (NULL: inherit)."""
    federated: Mapped[bool | None] = mapped_column(Boolean)
    """Archive conversations with federated users (NULL: inherit)."""
    updated_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())


class CallDetailRecord(Base):
    """One call detail record: a registration, an instant message or a call."""

    __tablename__ = "cdrs"
    __table_args__ = (
        Index("ix_cdrs_caller_started_at", "caller", "started_at"),
        Index("ix_cdrs_callee_started_at", "callee", "started_at"),
    )

    id: Mapped[int] = mapped_column(Integer, primary_key=True)
    kind: Mapped[str] = mapped_column(String(16))
    """register, im or call."""
    call_id: Mapped[str] = mapped_column(String(255), index=True)
    caller: Mapped[str] = mapped_column(String(512))
    """The registering user, the sender or the caller (``sip:user@domain``)."""
    callee: Mapped[str | None] = mapped_column(String(512))
    """The recipient or the callee; NULL for a registration."""
    started_at: Mapped[dt.datetime] = mapped_column(UtcDateTime(), index=True)
    """When the request arrived."""
    answered_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    """When a call was answered (2xx); NULL otherwise."""
    ended_at: Mapped[dt.datetime | None] = mapped_column(UtcDateTime())
    """When the final answer was sent, or the call hung up; NULL if unknown."""
    duration: Mapped[float] = mapped_column(Float)
    """Seconds talking for a call (answer to hang-up); request to answer otherwise."""
    status: Mapped[int] = mapped_column(Integer)
    """The final SIP status (a call that was answered and ended: 200)."""
    reason: Mapped[str] = mapped_column(String(255))
    detail: Mapped[str] = mapped_column(Text)
    """A JSON object with kind-specific facts (contact, expires, conversation id...)."""


class PoolBackup(Base):
    """The latest copy of a partner pool's user data (pool pairing, docs/pools.md)."""

    __tablename__ = "pool_backups"

    pool: Mapped[str] = mapped_column(String(64), primary_key=True)
    """The partner pool the copy is of."""
    payload: Mapped[str] = mapped_column(Text)
    """JSON: its users (with their digest HA1s), contact lists and privacy rules."""
    changed_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    """When the partner's data last changed (its clock), as the partner said."""
    received_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    heard_at: Mapped[dt.datetime] = mapped_column(UtcDateTime())
    """The partner's last heartbeat."""


class PoolFailover(Base):
    """A partner pool whose users this pool serves since a failover."""

    __tablename__ = "pool_failovers"

    pool: Mapped[str] = mapped_column(String(64), primary_key=True)
    users: Mapped[str] = mapped_column(Text)
    """JSON list of the user names taken over (failback moves exactly these home)."""
    since: Mapped[dt.datetime] = mapped_column(UtcDateTime())
