"""Contact lists and privacy settings, held in memory for the notify path.

The presence service never waits on the database while notifying: every
user's contact list and privacy rules are read once at start-up and again
whenever they may have changed (:meth:`PresenceService.reload
<conclave.services.presence.service.PresenceService.reload>`), into one
immutable :class:`Directory` that is swapped in whole.

**Relationship rule** (who sees what; the levels and what each sees are
defined in :mod:`.model`). For owner O and watcher W:

1. W is O: everything (the highest level), so a user's devices agree;
2. O set a level for W's address of record: that level;
3. O set a level for W's domain: that level;
4. otherwise :func:`~.model.default_relationship` (Colleagues inside the
   domain, External outside it).

**Authorisation of external watchers.** A watcher outside the domain is
*decided* when O named it (rule 2 or 3, any level including Blocked) or has
it in a contact list. An undecided external watcher stays pending while the
``presence.external_watchers`` policy is ``pending``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import structlog

from conclave.store.contacts import ContactStore, PrivacyStore
from conclave.store.database import Database

from .model import Relationship, canonical_aor, default_relationship

log = structlog.get_logger("conclave.services.presence")

SELF_LEVEL = Relationship.FRIENDS_FAMILY
"""What a user sees of themself: the most detailed level."""


def domain_part(aor: str) -> str:
    """The domain of a canonical AOR (no parsing: ``aor`` is already canonical)."""
    return aor.rpartition("@")[2]


def _aor_or_none(text: str) -> str | None:
    try:
        return canonical_aor(text)
    except ValueError:
        return None


def parse_level(text: str) -> Relationship | None:
    """A stored level ("blocked", "friends-family"...) or None if unknown."""
    try:
        return Relationship(text)
    except ValueError:
        return None


@dataclass(frozen=True)
class Directory:
    """One consistent snapshot of every contact list and privacy rule."""

    domain: str
    contacts: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    """owner AOR -> contact AORs, in list order (duplicates removed)."""
    groups: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    """owner AOR -> contact AOR -> group name."""
    privacy: Mapping[str, Mapping[str, Relationship]] = field(default_factory=dict)
    """owner AOR -> target (an AOR, or a bare domain) -> level."""

    def relationship(self, owner: str, watcher: str) -> Relationship:
        """The level ``watcher`` has toward ``owner`` (module docstring, steps 1-4)."""
        if owner == watcher:
            return SELF_LEVEL
        rules = self.privacy.get(owner)
        if rules:
            level = rules.get(watcher)
            if level is None:
                level = rules.get(domain_part(watcher))
            if level is not None:
                return level
        return default_relationship(watcher, domain_part(owner))

    def decided(self, owner: str, watcher: str) -> bool:
        """True when ``owner`` has said anything about ``watcher`` (see the module docstring)."""
        rules = self.privacy.get(owner, {})
        if watcher in rules or domain_part(watcher) in rules:
            return True
        return watcher in self.groups.get(owner, {})

    def contacts_of(self, owner: str) -> tuple[str, ...]:
        return self.contacts.get(owner, ())

    @classmethod
    def build(
        cls,
        domain: str,
        contacts: Mapping[str, list[tuple[str, str | None]]],
        privacy: Mapping[str, Mapping[str, str]],
    ) -> Directory:
        """From store rows: ``{owner: [(contact, group)]}`` and ``{owner: {target: level}}``.

        Unusable rows (an address that does not parse, an unknown level) are
        skipped and logged: one bad row must not take presence down.
        """
        lists: dict[str, tuple[str, ...]] = {}
        groups: dict[str, dict[str, str]] = {}
        for owner_text, entries in contacts.items():
            owner = _aor_or_none(owner_text)
            if owner is None:
                log.warning("contact list of an unusable owner skipped", owner=owner_text)
                continue
            seen: dict[str, str] = {}
            for contact_text, group in entries:
                contact = _aor_or_none(contact_text)
                if contact is None:
                    log.warning("unusable contact skipped", owner=owner, contact=contact_text)
                    continue
                seen.setdefault(contact, group or "")
            lists[owner] = tuple(seen)
            groups[owner] = seen
        rules: dict[str, dict[str, Relationship]] = {}
        for owner_text, targets in privacy.items():
            owner = _aor_or_none(owner_text)
            if owner is None:
                continue
            for target_text, level_text in targets.items():
                level = parse_level(level_text)
                target = (
                    _aor_or_none(target_text)
                    if "@" in target_text
                    else target_text.strip().lower().rstrip(".")
                )
                if level is None or not target:
                    log.warning("privacy rule skipped", owner=owner, target=target_text)
                    continue
                rules.setdefault(owner, {})[target] = level
        return cls(domain.lower(), lists, groups, rules)


async def read_directory(db: Database, domain: str) -> Directory:
    """Read every contact list and privacy rule from the store (start-up and reloads)."""
    contacts = await ContactStore(db).all()
    privacy = await PrivacyStore(db).get_all()
    return Directory.build(
        domain,
        {owner: [(e.contact, e.group) for e in entries] for owner, entries in contacts.items()},
        privacy,
    )
