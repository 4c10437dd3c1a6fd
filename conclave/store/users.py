"""User accounts: who may register, and their digest credentials.

User names are stored as written at creation (the *canonical* name) but are
unique without regard to case within a domain: ``Alice`` cannot be added
while ``alice`` exists, and every lookup by name (:meth:`UserStore.get`,
``set_password``, ``set_disabled``, ``remove``, ``credentials``) finds the
user whatever the case of the name given and works on the canonical name
(digest HA1 values are computed with it). Two users may tell apart what one
client sends in a SIP URI only by case (RFC 3261 §19.1.4 compares user parts
case-sensitively), but people, address books and the credential cache do
not: one name, one identity.

A database written before this rule may hold case variants already.
:meth:`UserStore.case_collisions` lists them; :meth:`UserStore.all_credentials`
still returns every row so that the server can see them and refuse to guess
which one is meant. Lookups by a name that matches several of them exactly
by case find that one; otherwise they fail with :class:`ConflictError`.
"""

from __future__ import annotations

import builtins
import datetime as dt
import re
from dataclasses import dataclass

from sqlalchemy import delete, func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from conclave.store.database import Database
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


def fold(name: str) -> str:
    """The key two user names are compared by: equal folds are the same user.

    User names are ASCII (:data:`USER_NAME`), so this is plain lower-casing,
    the same as SQL ``lower()`` on every supported engine.
    """
    return name.lower()


@dataclass(frozen=True)
class CaseCollision:
    """Users of one domain whose names differ only in case (an old database)."""

    domain: str
    names: tuple[str, ...]
    """The stored names, sorted; at least two."""

    @property
    def folded(self) -> str:
        """The name they all fold to (:func:`fold`)."""
        return fold(self.names[0])


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
    """User accounts. Names are unique and found without regard to case, as are domains.

    Names keep the case they were created with (the canonical name, which
    every method returns); see the module docstring.

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
        """Create an enabled user.

        :class:`ConflictError` if a user of that name exists in the domain,
        in any case: adding ``Alice`` while ``alice`` exists is refused.
        """
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
                # The counter first: its row lock (PostgreSQL) or the write lock
                # (SQLite) serialises writers of users, so two concurrent adds of
                # case variants cannot both pass the check below.
                await bump(session, USERS)
                existing = await _variants(session, name, domain)
                if existing:
                    raise ConflictError(_exists(name, domain, existing))
                session.add(user)
                await session.flush()  # a duplicate the check missed fails here
        except ConflictError as exc:
            if isinstance(exc.__cause__, IntegrityError):
                raise ConflictError(f"user {name}@{domain} already exists") from None
            raise
        return _record(user)

    async def get(self, name: str, domain: str) -> UserRecord | None:
        """The user whose name equals ``name`` in any case, or None if there is none.

        The record carries the canonical (stored) name. :class:`ConflictError`
        if ``name`` matches several case variants (an old database) and none
        exactly.
        """
        name, domain = normalize(name, domain)
        async with self._db.transaction() as session:
            user = await _find(session, name, domain)
            return _record(user) if user else None

    async def credentials(self, name: str, domain: str) -> Credentials | None:
        """One user's digest credentials (found as :meth:`get` finds it), or None.

        The HA1 values are those of the canonical name, which :meth:`get` gives.
        """
        name, domain = normalize(name, domain)
        async with self._db.transaction() as session:
            user = await _find(session, name, domain)
            if user is None:
                return None
            return Credentials(user.ha1_md5, user.ha1_sha256, user.disabled)

    async def set_password(self, name: str, domain: str, password: str) -> UserRecord:
        """Replace the user's HA1 values; :class:`NotFoundError` if no such user.

        The user is found as :meth:`get` finds it, and the HA1 values are
        computed with the canonical name (the one clients authenticate as).
        """
        name, domain = normalize(name, domain)
        _hashes(name, domain, password)  # refuse a bad password before touching anything
        async with self._db.transaction() as session:
            user = await _found(session, name, domain)
            user.ha1_md5, user.ha1_sha256 = _hashes(user.name, domain, password)
            await bump(session, USERS)
            return _record(user)

    async def set_disabled(self, name: str, domain: str, disabled: bool) -> UserRecord:
        """Disable (True) or re-enable (False) the user; a disabled user cannot sign in."""
        name, domain = normalize(name, domain)
        async with self._db.transaction() as session:
            user = await _found(session, name, domain)
            user.disabled = disabled
            await bump(session, USERS)
            return _record(user)

    async def remove(self, name: str, domain: str) -> UserRecord:
        """Delete the user, their contact list and privacy rules; :class:`NotFoundError` if none."""
        name, domain = normalize(name, domain)
        async with self._db.transaction() as session:
            user = await _found(session, name, domain)
            record = _record(user)
            await session.execute(delete(User).where(User.id == user.id))
            # The list and rules went too (ON DELETE CASCADE): the directory changed.
            await bump(session, USERS, DIRECTORY)
            return record

    async def case_collisions(self, domain: str | None = None) -> builtins.list[CaseCollision]:
        """Users whose names differ only in case (of one domain if given).

        Only a database written before names were unique without regard to
        case can hold them. A server must not serve such names by guessing
        which user is meant; an operator removes or renames all but one.
        Ordered by domain, then folded name.
        """
        folded = func.lower(User.name)
        query = (
            select(User.domain, folded.label("folded"))
            .group_by(User.domain, folded)
            .having(func.count() > 1)
        )
        if domain is not None:
            query = query.where(User.domain == domain.strip().lower().rstrip("."))
        async with self._db.transaction() as session:
            groups = (await session.execute(query)).all()
            found: builtins.list[CaseCollision] = []
            for group in sorted(groups):
                names = await session.scalars(
                    select(User.name)
                    .where(User.domain == group.domain, func.lower(User.name) == group.folded)
                    .order_by(User.name)
                )
                found.append(CaseCollision(group.domain, tuple(names)))
            return found

    async def all_credentials(self) -> dict[tuple[str, str], Credentials]:
        """Every user's credentials keyed by (name, domain), for an in-memory cache.

        The authenticator answers from that cache so no SIP request waits on
        the database; reload it when the ``users`` change counter moves (the
        CLI writes directly here, then signals the server).

        Names are the stored, canonical ones. Every row is returned, case
        variants from an old database included (see :meth:`case_collisions`):
        a cache that folds names must detect them and refuse them all rather
        than let one silently replace the other.
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


async def _variants(session: AsyncSession, name: str, domain: str) -> builtins.list[User]:
    """Every user of ``domain`` whose name folds to the same as ``name``, by name."""
    rows = await session.scalars(
        select(User)
        .where(User.domain == domain, func.lower(User.name) == fold(name))
        .order_by(User.name)
    )
    return builtins.list(rows)


async def _find(session: AsyncSession, name: str, domain: str) -> User | None:
    """The user ``name`` stands for: the one of exactly that name, else the one case variant.

    :class:`ConflictError` when several case variants exist (an old database)
    and none is named exactly: guessing could act on the wrong account.
    """
    variants = await _variants(session, name, domain)
    for user in variants:
        if user.name == name:
            return user
    if len(variants) > 1:
        names = ", ".join(user.name for user in variants)
        raise ConflictError(
            f"user name {name}@{domain} matches several users that differ only in case "
            f"({names}): give the exact name"
        )
    return variants[0] if variants else None


async def _found(session: AsyncSession, name: str, domain: str) -> User:
    """:func:`_find`, or :class:`NotFoundError`."""
    user = await _find(session, name, domain)
    if user is None:
        raise NotFoundError(f"no such user: {name}@{domain}")
    return user


def _exists(name: str, domain: str, existing: builtins.list[User]) -> str:
    """The message refusing to add ``name`` because ``existing`` users fold the same."""
    if any(user.name == name for user in existing):
        return f"user {name}@{domain} already exists"
    other = existing[0].name
    return f"user {other}@{domain} already exists (names differing only in case are one user)"
