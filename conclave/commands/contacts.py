"""``conclave contacts …`` and ``conclave privacy …``: server-side contact lists and privacy.

USER is a local user: ``bob``, ``bob@DOMAIN`` or ``sip:bob@DOMAIN`` (DOMAIN
being the deployment's). CONTACT is ``bob`` (a local user, who must exist)
or any ``user@domain`` / ``sip:user@domain``. A privacy target with ``@`` or
``sip:`` is a contact, a name with a dot (``partner.example``) is a whole
domain, and a plain name (``bob``) is a local user. Each change signals a
running server to reload.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import click

from conclave.store.contacts import (
    DEFAULT_GROUP,
    ContactStore,
    PrivacyStore,
    normalize_aor,
    normalize_target,
)
from conclave.store.database import Database
from conclave.store.errors import NotFoundError, StoreError
from conclave.store.users import UserStore

from .common import Group, data_dir_option, load, notify_server, run_async

T = TypeVar("T")


def _with_db(data_dir: Path, work: Callable[[Database, str], Awaitable[T]]) -> T:
    """Run ``await work(db, domain)`` on the deployment's database; one-line errors."""
    config = load(data_dir)
    url = config.database_url(data_dir)
    domain = config.server.domain

    async def go() -> T:
        async with Database(url) as db:
            await db.check_schema()
            return await work(db, domain)

    return run_async(go)


def _aor(text: str, domain: str) -> str:
    """``bob`` -> ``sip:bob@DOMAIN``; anything else must be an address."""
    text = text.strip()
    if "@" not in text and ":" not in text:
        text = f"{text}@{domain}"
    return normalize_aor(text)


async def _existing_local(db: Database, aor: str, domain: str) -> str:
    """``aor`` of an existing local user, in the user's stored spelling: ``BOB``
    is ``bob``, never a second identity (docs/security.md)."""
    name, _, host = aor.removeprefix("sip:").rpartition("@")
    if host != domain:
        raise StoreError(f"{name}@{host} is not a user of this deployment ({domain})")
    record = await UserStore(db).get(name, host)
    if record is None:
        raise NotFoundError(f"no such user: {name}@{host}")
    return normalize_aor(f"sip:{record.name}@{host}")


async def _user(db: Database, text: str, domain: str) -> str:
    return await _existing_local(db, _aor(text, domain), domain)


async def _contact(db: Database, text: str, domain: str) -> str:
    aor = _aor(text, domain)
    if aor.rpartition("@")[2] == domain:
        return await _existing_local(db, aor, domain)
    return aor


def _target_key(text: str, domain: str) -> tuple[str, str]:
    """(privacy target as stored, "contact" or "domain")."""
    text = text.strip()
    if "@" in text or ":" in text or "." not in text:
        return _aor(text, domain), "contact"
    return normalize_target(text), "domain"


async def _target(db: Database, text: str, domain: str) -> tuple[str, str]:
    key, kind = _target_key(text, domain)
    if kind == "contact" and key.rpartition("@")[2] == domain:
        return await _existing_local(db, key, domain), kind
    return key, kind


@click.group("contacts", cls=Group)
def contacts_group() -> None:
    """Manage users' server-side contact lists (the lists clients subscribe to)."""


@contacts_group.command("add")
@click.argument("user")
@click.argument("contact")
@data_dir_option
@click.option("--group", default=DEFAULT_GROUP, show_default=True, help="The group to put it in.")
def contacts_add(user: str, contact: str, data_dir: Path, group: str) -> None:
    """Add CONTACT to USER's list (or move it to --group if it is already there)."""

    async def work(db: Database, domain: str) -> tuple[str, str, str]:
        owner = await _user(db, user, domain)
        entry = await ContactStore(db).add(owner, await _contact(db, contact, domain), group)
        return owner, entry.contact, entry.group

    owner, added, in_group = _with_db(data_dir, work)
    notify_server(data_dir)
    click.echo(f"added {added} to group {in_group!r} of {owner}")


@contacts_group.command("remove")
@click.argument("user")
@click.argument("contact")
@data_dir_option
def contacts_remove(user: str, contact: str, data_dir: Path) -> None:
    """Take CONTACT off USER's list."""

    async def work(db: Database, domain: str) -> tuple[str, str]:
        owner = await _user(db, user, domain)
        # No existence check: a removed local user can still be taken off a list.
        removed = _aor(contact, domain)
        await ContactStore(db).remove(owner, removed)
        return owner, removed

    owner, removed = _with_db(data_dir, work)
    notify_server(data_dir)
    click.echo(f"removed {removed} from {owner}")


@contacts_group.command("list")
@click.argument("user")
@data_dir_option
def contacts_list(user: str, data_dir: Path) -> None:
    """List USER's contacts: group and contact, tab-separated, one per line."""

    async def work(db: Database, domain: str) -> list[tuple[str, str]]:
        entries = await ContactStore(db).list(await _user(db, user, domain))
        return [(e.group, e.contact) for e in entries]

    for group, contact in _with_db(data_dir, work):
        click.echo(f"{group}\t{contact}")


@click.group("privacy", cls=Group)
def privacy_group() -> None:
    """Manage who sees how much of a user's presence (docs/presence.md)."""


@privacy_group.command("set")
@click.argument("user")
@click.argument("target", metavar="CONTACT-OR-DOMAIN")
@click.argument("level")
@data_dir_option
def privacy_set(user: str, target: str, level: str, data_dir: Path) -> None:
    """Set USER's relationship with a contact or a whole domain.

    LEVEL is one of: blocked, external, colleagues, workgroup, friends
    (friends and family; "friends-family" also works).
    """

    async def work(db: Database, domain: str) -> tuple[str, str, str, str]:
        owner = await _user(db, user, domain)
        key, kind = await _target(db, target, domain)
        stored, value = await PrivacyStore(db).set(owner, key, level)
        return owner, stored, kind, value

    owner, stored, kind, value = _with_db(data_dir, work)
    notify_server(data_dir)
    click.echo(f"{owner}: {kind} {stored} is {value}")


@privacy_group.command("remove")
@click.argument("user")
@click.argument("target", metavar="CONTACT-OR-DOMAIN")
@data_dir_option
def privacy_remove(user: str, target: str, data_dir: Path) -> None:
    """Drop USER's rule for a contact or domain (back to the default level)."""

    async def work(db: Database, domain: str) -> tuple[str, str]:
        owner = await _user(db, user, domain)
        key = _target_key(target, domain)[0]
        await PrivacyStore(db).remove(owner, key)
        return owner, key

    owner, key = _with_db(data_dir, work)
    notify_server(data_dir)
    click.echo(f"{owner}: removed the rule for {key}")


@privacy_group.command("list")
@click.argument("user")
@data_dir_option
def privacy_list(user: str, data_dir: Path) -> None:
    """List USER's rules: target and level, tab-separated, one per line."""

    async def work(db: Database, domain: str) -> dict[str, str]:
        return await PrivacyStore(db).get(await _user(db, user, domain))

    for key, value in _with_db(data_dir, work).items():
        click.echo(f"{key}\t{value}")
