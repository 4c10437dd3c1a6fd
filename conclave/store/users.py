"""User accounts: who may register, and their digest credentials."""

from __future__ import annotations

import builtins
import datetime as dt
import re
from dataclasses import dataclass

from sqlalchemy import delete, select, update

from conclave.store.database import Database, rowcount
from conclave.store.errors import ConflictError, NotFoundError, StoreError
from conclave.store.generations import DIRECTORY, USERS, bump
from conclave.store.models import User
from conclave.store.passwords import MAX_LENGTH, ha1

USER_NAME = re.compile(r"[A-Za-z0-9+][A-Za-z0-9._+-]{0,63}\Z")
"""Accepted user names: a safe subset of the SIP user part (RFC 3261 §25.1)
that needs no escaping in URIs, digest quoted-strings, shells or logs. The
leading '+' admits telephone-style names such as "+4420..."."""

DOMAIN_NAME = re.compile(
    r"(?=.{1,253}\Z)(?!-)[a-z0-9-]{1,63}(?<!-)(\.(?!-)[a-z0-9-]{1,63}(?<!-))*\Z"
)
"""A DNS host name, lower case (domains compare case-insensitively)."""


@dataclass(frozen=True)
class UserRecord:
    """A user as listed by the CLI (no credentials)."""

    id: int
    name: str
    domain: str
    disabled: bool
    created_at: dt.datetime

    @property
    def address(self) -> str:
        """``name@domain``."""
        return f"{self.name}@{self.domain}"


@dataclass(frozen=True)
class Credentials:
    """What the authenticator needs for one user: HA1 per algorithm and status."""

    ha1_md5: str
    ha1_sha256: str
    disabled: bool

    def ha1_for(self, algorithm: str) -> str:
        """The HA1 for a digest algorithm name ("MD5" or "SHA-256")."""
        if algorithm.upper() == "MD5":
            return self.ha1_md5
        if algorithm.upper() == "SHA-256":
            return self.ha1_sha256
        raise KeyError(algorithm)


def normalize(name: str, domain: str) -> tuple[str, str]:
    """Validate a user name and domain; return them with the domain lower-cased."""
    domain = domain.strip().lower().rstrip(".")
    if not USER_NAME.match(name):
        raise StoreError(
            f"invalid user name {name!r}: use letters, digits and . _ + - (at most 64)"
        )
    if not DOMAIN_NAME.match(domain):
        raise StoreError(f"invalid domain {domain!r}")
    return name, domain


def _record(user: User) -> UserRecord:
    return UserRecord(
        id=user.id,
        name=user.name,
        domain=user.domain,
        disabled=user.disabled,
        created_at=user.created_at,
    )


def _hashes(name: str, domain: str, password: str) -> tuple[str, str]:
    if not password:
        raise StoreError("the password must not be empty")
    if len(password) > MAX_LENGTH:
        raise StoreError(f"the password must be at most {MAX_LENGTH} characters")
    # The realm is the domain: one realm per domain keeps HA1s valid as long
    # as the domain exists, whichever server of the pool answers.
    return ha1("MD5", name, domain, password), ha1("SHA-256", name, domain, password)


class UserStore:
    """User accounts. Names are case-sensitive, domains are not.

    Enforce the password policy (:func:`password_policy_problems`) before
    calling :meth:`add` or :meth:`set_password`; the store only refuses an
    empty or oversized password.

    Every write bumps the ``users`` change counter in its own transaction
    (:mod:`conclave.store.generations`): that is how a running server notices
    a change it was not signalled about.
    """

    def __init__(self, database: Database) -> None:
        self._db = database

    async def add(
        self, name: str, domain: str, password: str, *, now: dt.datetime | None = None
    ) -> UserRecord:
        """Create an enabled user; :class:`ConflictError` if it already exists."""
        name, domain = normalize(name, domain)
        md5, sha256 = _hashes(name, domain, password)
        user = User(
            name=name,
            domain=domain,
            ha1_md5=md5,
            ha1_sha256=sha256,
            disabled=False,
            created_at=now or dt.datetime.now(dt.UTC),
        )
        try:
            async with self._db.transaction() as session:
                session.add(user)
                await bump(session, USERS)  # flushes the INSERT first: a duplicate fails here
        except ConflictError:
            raise ConflictError(f"user {name}@{domain} already exists") from None
        return _record(user)

    async def get(self, name: str, domain: str) -> UserRecord | None:
        """The user, or None if there is none."""
        name, domain = normalize(name, domain)
        async with self._db.transaction() as session:
            user = await session.scalar(
                select(User).where(User.name == name, User.domain == domain)
            )
            return _record(user) if user else None

    async def credentials(self, name: str, domain: str) -> Credentials | None:
        """One user's digest credentials, or None."""
        name, domain = normalize(name, domain)
        async with self._db.transaction() as session:
            user = await session.scalar(
                select(User).where(User.name == name, User.domain == domain)
            )
            if user is None:
                return None
            return Credentials(user.ha1_md5, user.ha1_sha256, user.disabled)

    async def set_password(self, name: str, domain: str, password: str) -> None:
        """Replace the user's HA1 values; :class:`NotFoundError` if no such user."""
        name, domain = normalize(name, domain)
        md5, sha256 = _hashes(name, domain, password)
        await self._update(name, domain, ha1_md5=md5, ha1_sha256=sha256)

    async def set_disabled(self, name: str, domain: str, disabled: bool) -> None:
        """Disable (True) or re-enable (False) the user; a disabled user cannot sign in."""
        name, domain = normalize(name, domain)
        await self._update(name, domain, disabled=disabled)

    async def remove(self, name: str, domain: str) -> None:
        """Delete the user, their contact list and privacy rules; :class:`NotFoundError` if none."""
        name, domain = normalize(name, domain)
        async with self._db.transaction() as session:
            result = await session.execute(
                delete(User).where(User.name == name, User.domain == domain)
            )
            if not rowcount(result):
                raise NotFoundError(f"no such user: {name}@{domain}")
            # The list and rules went too (ON DELETE CASCADE): the directory changed.
            await bump(session, USERS, DIRECTORY)

    async def all_credentials(self) -> dict[tuple[str, str], Credentials]:
        """Every user's credentials keyed by (name, domain), for an in-memory cache.

        The authenticator answers from that cache so no SIP request waits on
        the database; reload it when the ``users`` change counter moves (the
        CLI writes directly here, then signals the server).
        """
        async with self._db.transaction() as session:
            rows = await session.execute(
                select(User.name, User.domain, User.ha1_md5, User.ha1_sha256, User.disabled)
            )
            return {
                (row.name, row.domain): Credentials(row.ha1_md5, row.ha1_sha256, row.disabled)
                for row in rows
            }

    async def list(self, domain: str | None = None) -> builtins.list[UserRecord]:
        """All users (of one domain if given), ordered by domain then name."""
        query = select(User).order_by(User.domain, User.name)
        if domain is not None:
            query = query.where(User.domain == domain.strip().lower().rstrip("."))
        async with self._db.transaction() as session:
            return [_record(user) for user in await session.scalars(query)]

    async def _update(self, name: str, domain: str, **values: object) -> None:
        async with self._db.transaction() as session:
            result = await session.execute(
                update(User).where(User.name == name, User.domain == domain).values(**values)
            )
            if not rowcount(result):
                raise NotFoundError(f"no such user: {name}@{domain}")
            await bump(session, USERS)
