"""Contact lists and privacy rules: per user, stored in the back end.

Both belong to a local user (rows are deleted with the user). The presence
service loads everything once at start-up with :meth:`ContactStore.all` and
:meth:`PrivacyStore.get_all` and answers from memory, because nothing on the
notify path may wait on the database; it reloads after the CLI changes
something (SIGHUP, see ``conclave.commands.common.notify_server``), and when
the ``directory`` change counter moved (a missed signal). Every write here
bumps that counter in the same transaction (:mod:`conclave.store.generations`).

Addresses are stored in canonical form, ``sip:user@domain`` (domain lower
case, the same string ``conclave.sip.address.aor_of`` produces), so
lookups are plain string comparisons. Privacy targets are either such an
address or a bare lower-case domain.

This layer does not import the presence service: privacy levels are the
strings of :data:`PRIVACY_LEVELS`, the values of
``conclave.services.presence.model.Relationship`` (a test keeps them equal).
"""

from __future__ import annotations

import builtins
import re
from dataclasses import dataclass

from sqlalchemy import ColumnElement, and_, delete, func, select
from sqlalchemy.ext.asyncio import AsyncSession

from conclave.store.database import Database, rowcount
from conclave.store.errors import NotFoundError, StoreError
from conclave.store.generations import DIRECTORY, bump
from conclave.store.models import ContactListItem, PrivacyRule, User
from conclave.store.users import DOMAIN_NAME, normalize

MAX_CONTACTS_PER_USER = 1000
"""Most contacts on one list. Each is one resource in the user's eventlist
subscription, so this bounds the fan-out and the size of a full-state RLMI
NOTIFY (about 1 KiB per contact); it is also the most Lync can be set to."""

MAX_GROUPS_PER_USER = 64
"""Most distinct groups on one list: enough to organise 1000 contacts, small
enough that a client's group pane stays usable and the check stays cheap."""

MAX_GROUP_NAME_LENGTH = 64
"""Longest group name, in characters (the column size)."""

MAX_PRIVACY_RULES_PER_USER = 2000
"""Most privacy rules per user: one per contact (1000) plus as many domains,
which is more than any real list needs and bounds the in-memory rule map."""

MAX_AOR_LENGTH = 512
"""Longest stored address (the column size)."""

DEFAULT_GROUP = "Contacts"
"""The group a contact goes to when none is named."""

PRIVACY_LEVELS = ("blocked", "external", "colleagues", "workgroup", "friends")
"""The relationship levels, least to most trusted (the CLI spellings)."""

_LEVEL_ALIASES = {"friends-family": "friends", "friends-and-family": "friends"}

_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


@dataclass(frozen=True)
class ContactEntry:
    """One contact on a list: its canonical AOR and its group."""

    contact: str
    group: str


def normalize_aor(text: str) -> str:
    """``sip:user@domain`` from ``user@domain``, ``sip:user@domain`` or ``sips:…``.

    The user part must be a safe name (letters, digits, ``. _ + -``; see
    :data:`conclave.store.users.USER_NAME`) and the domain a host name.
    Raises :class:`StoreError` otherwise.
    """
    address = text.strip()
    scheme, colon, rest = address.partition(":")
    if colon and "@" not in scheme:
        if scheme.lower() not in ("sip", "sips"):
            raise StoreError(f"not a SIP address: {text!r}")
        address = rest
    user, at, domain = address.rpartition("@")
    if not at:
        raise StoreError(f"not an address (user@domain): {text!r}")
    name, domain = normalize(user, domain)
    aor = f"sip:{name}@{domain}"
    if len(aor) > MAX_AOR_LENGTH:  # pragma: no cover - name and domain limits come first
        raise StoreError(f"address too long: {text[:80]!r}")
    return aor


def normalize_target(text: str) -> str:
    """A privacy target: a canonical AOR (if ``text`` has ``@`` or a scheme) or a domain."""
    stripped = text.strip()
    if "@" in stripped or ":" in stripped:
        return normalize_aor(stripped)
    domain = stripped.lower().rstrip(".")
    if not DOMAIN_NAME.match(domain):
        raise StoreError(f"invalid domain {text!r}")
    return domain


def normalize_level(level: str) -> str:
    """One of :data:`PRIVACY_LEVELS` (``friends-family`` and case variants accepted)."""
    key = "-".join(str(level).strip().lower().replace("_", " ").replace("&", " and ").split())
    key = _LEVEL_ALIASES.get(key, key)
    if key not in PRIVACY_LEVELS:
        raise StoreError(f"invalid privacy level {level!r}: use {', '.join(PRIVACY_LEVELS)}")
    return key


def normalize_group(group: str) -> str:
    """A group name: trimmed, 1-64 characters, no control characters (names are case-sensitive)."""
    name = group.strip()
    if not name or len(name) > MAX_GROUP_NAME_LENGTH or _CONTROL.search(name):
        raise StoreError(
            f"invalid group name {group!r}: use 1-{MAX_GROUP_NAME_LENGTH} printable characters"
        )
    return name


def _rule(owner_id: int, target: str) -> ColumnElement[bool]:
    return and_(PrivacyRule.owner_id == owner_id, PrivacyRule.target == target)


def _split_aor(aor: str) -> tuple[str, str]:
    name, _, domain = aor.removeprefix("sip:").rpartition("@")
    return name, domain


async def _owner_id(session: AsyncSession, owner: str) -> int:
    name, domain = _split_aor(owner)
    owner_id = await session.scalar(select(User.id).where(User.name == name, User.domain == domain))
    if owner_id is None:
        raise NotFoundError(f"no such user: {name}@{domain}")
    return owner_id


class ContactStore:
    """Server-side contact lists. A contact is in exactly one group per list.

    ``max_contacts`` and ``max_groups`` default to :data:`MAX_CONTACTS_PER_USER`
    and :data:`MAX_GROUPS_PER_USER`.
    """

    def __init__(
        self,
        database: Database,
        *,
        max_contacts: int = MAX_CONTACTS_PER_USER,
        max_groups: int = MAX_GROUPS_PER_USER,
    ) -> None:
        self._db = database
        self._max_contacts = max_contacts
        self._max_groups = max_groups

    async def add(
        self, owner_aor: str, contact_aor: str, group: str = DEFAULT_GROUP
    ) -> ContactEntry:
        """Put ``contact_aor`` on the owner's list in ``group``.

        A contact already on the list moves to ``group``. Raises
        :class:`NotFoundError` if the owner is not a user, and
        :class:`StoreError` for a bad address or group, for the owner
        themself, and beyond the store's contact or group limit. The contact itself may be anyone
        (remote users included); the caller checks local users exist.
        """
        owner = normalize_aor(owner_aor)
        contact = normalize_aor(contact_aor)
        group = normalize_group(group)
        if contact == owner:
            raise StoreError("a user cannot be on their own contact list")
        async with self._db.transaction() as session:
            owner_id = await _owner_id(session, owner)
            row = await session.scalar(
                select(ContactListItem).where(
                    ContactListItem.owner_id == owner_id, ContactListItem.contact == contact
                )
            )
            groups = set(
                await session.scalars(
                    select(ContactListItem.group_name)
                    .where(ContactListItem.owner_id == owner_id)
                    .distinct()
                )
            )
            if group not in groups and len(groups) >= self._max_groups:
                raise StoreError(f"at most {self._max_groups} groups per contact list")
            if row is not None:
                if row.group_name != group:
                    row.group_name = group
                    await bump(session, DIRECTORY)
                return ContactEntry(contact, group)
            count = await session.scalar(
                select(func.count())
                .select_from(ContactListItem)
                .where(ContactListItem.owner_id == owner_id)
            )
            if (count or 0) >= self._max_contacts:
                raise StoreError(f"at most {self._max_contacts} contacts per list")
            session.add(ContactListItem(owner_id=owner_id, contact=contact, group_name=group))
            await bump(session, DIRECTORY)
        return ContactEntry(contact, group)

    async def remove(self, owner_aor: str, contact_aor: str) -> None:
        """Take a contact off the list; :class:`NotFoundError` if it is not on it."""
        owner = normalize_aor(owner_aor)
        contact = normalize_aor(contact_aor)
        async with self._db.transaction() as session:
            owner_id = await _owner_id(session, owner)
            result = await session.execute(
                delete(ContactListItem).where(
                    ContactListItem.owner_id == owner_id, ContactListItem.contact == contact
                )
            )
            if not rowcount(result):
                raise NotFoundError(f"{contact} is not on the contact list of {owner}")
            await bump(session, DIRECTORY)

    async def list(self, owner_aor: str) -> builtins.list[ContactEntry]:
        """One user's list, ordered by group then contact."""
        owner = normalize_aor(owner_aor)
        async with self._db.transaction() as session:
            owner_id = await _owner_id(session, owner)
            rows = await session.execute(
                select(ContactListItem.contact, ContactListItem.group_name)
                .where(ContactListItem.owner_id == owner_id)
                .order_by(ContactListItem.group_name, ContactListItem.contact)
            )
            return [ContactEntry(row.contact, row.group_name) for row in rows]

    async def all(self) -> dict[str, builtins.list[ContactEntry]]:
        """Every list, keyed by owner AOR (owners with an empty list are absent).

        For the presence service's in-memory copy, loaded at start-up and on reload.
        """
        query = (
            select(User.name, User.domain, ContactListItem.contact, ContactListItem.group_name)
            .join(User, User.id == ContactListItem.owner_id)
            .order_by(User.domain, User.name, ContactListItem.group_name, ContactListItem.contact)
        )
        lists: dict[str, builtins.list[ContactEntry]] = {}
        async with self._db.transaction() as session:
            for row in await session.execute(query):
                owner = f"sip:{row.name}@{row.domain}"
                lists.setdefault(owner, []).append(ContactEntry(row.contact, row.group_name))
        return lists


class PrivacyStore:
    """Per-user relationship levels for contacts and domains.

    Resolution (contact rule, then domain rule, then the default) is the
    presence model's job: ``conclave.services.presence.model.resolve_relationship``.
    ``max_rules`` defaults to :data:`MAX_PRIVACY_RULES_PER_USER`.
    """

    def __init__(self, database: Database, *, max_rules: int = MAX_PRIVACY_RULES_PER_USER) -> None:
        self._db = database
        self._max_rules = max_rules

    async def set(self, owner_aor: str, target: str, level: str) -> tuple[str, str]:
        """Set the level for ``target`` (an AOR or a domain); return (target, level) as stored.

        Replaces any earlier rule for the same target. Raises
        :class:`NotFoundError` if the owner is not a user, :class:`StoreError`
        for a bad target or level, for the owner themself, and beyond the
        store's rule limit.
        """
        owner = normalize_aor(owner_aor)
        key = normalize_target(target)
        value = normalize_level(level)
        if key == owner:
            raise StoreError("a user cannot set a privacy level for themself")
        async with self._db.transaction() as session:
            owner_id = await _owner_id(session, owner)
            row = await session.scalar(select(PrivacyRule).where(_rule(owner_id, key)))
            if row is not None:
                if row.level != value:
                    row.level = value
                    await bump(session, DIRECTORY)
                return key, value
            count = await session.scalar(
                select(func.count())
                .select_from(PrivacyRule)
                .where(PrivacyRule.owner_id == owner_id)
            )
            if (count or 0) >= self._max_rules:
                raise StoreError(f"at most {self._max_rules} privacy rules per user")
            session.add(PrivacyRule(owner_id=owner_id, target=key, level=value))
            await bump(session, DIRECTORY)
        return key, value

    async def remove(self, owner_aor: str, target: str) -> None:
        """Drop the rule for ``target`` (back to the default); :class:`NotFoundError` if none."""
        owner = normalize_aor(owner_aor)
        key = normalize_target(target)
        async with self._db.transaction() as session:
            owner_id = await _owner_id(session, owner)
            result = await session.execute(delete(PrivacyRule).where(_rule(owner_id, key)))
            if not rowcount(result):
                raise NotFoundError(f"{owner} has no privacy rule for {key}")
            await bump(session, DIRECTORY)

    async def get(self, owner_aor: str) -> dict[str, str]:
        """One user's rules, target -> level, ordered by target."""
        owner = normalize_aor(owner_aor)
        async with self._db.transaction() as session:
            owner_id = await _owner_id(session, owner)
            rows = await session.execute(
                select(PrivacyRule.target, PrivacyRule.level)
                .where(PrivacyRule.owner_id == owner_id)
                .order_by(PrivacyRule.target)
            )
            return {row.target: row.level for row in rows}

    async def get_all(self) -> dict[str, dict[str, str]]:
        """Every user's rules: owner AOR -> target -> level (owners without rules absent)."""
        query = (
            select(User.name, User.domain, PrivacyRule.target, PrivacyRule.level)
            .join(User, User.id == PrivacyRule.owner_id)
            .order_by(User.domain, User.name, PrivacyRule.target)
        )
        rules: dict[str, dict[str, str]] = {}
        async with self._db.transaction() as session:
            for row in await session.execute(query):
                owner = f"sip:{row.name}@{row.domain}"
                rules.setdefault(owner, {})[row.target] = row.level
        return rules
