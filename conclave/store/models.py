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
