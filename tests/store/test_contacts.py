"""ContactStore and PrivacyStore on SQLite and PostgreSQL, and migration 0002."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect

from conclave.store import (
    ContactEntry,
    ContactStore,
    Database,
    NotFoundError,
    PrivacyStore,
    StoreError,
    UserStore,
    head_revision,
    migrate,
)
from conclave.store.contacts import (
    MAX_CONTACTS_PER_USER,
    PRIVACY_LEVELS,
    normalize_aor,
    normalize_level,
    normalize_target,
)
from conclave.store.models import Base
from tests.store.conftest import RunWithDb

ALICE = "sip:alice@example.test"
BOB = "sip:bob@example.test"
CAROL = "sip:carol@partner.example"


async def make_users(db: Database, *names: str) -> None:
    users = UserStore(db)
    for name in names:
        await users.add(name, "example.test", "correct horse battery")


# --- normalisation ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("bob@example.test", BOB),
        ("sip:bob@Example.TEST", BOB),
        ("SIPS:bob@example.test", BOB),
        ("  sip:bob@example.test. ", BOB),
        ("first.last+x@partner.example", "sip:first.last+x@partner.example"),
    ],
)
def test_normalize_aor(text: str, expected: str) -> None:
    assert normalize_aor(text) == expected


@pytest.mark.parametrize(
    "text",
    ["bob", "tel:+123@x", "sip:bob@exa mple.test", "sip:b%20b@example.test", "sip:@example.test"],
)
def test_normalize_aor_rejects(text: str) -> None:
    with pytest.raises(StoreError):
        normalize_aor(text)


def test_normalize_target_and_level() -> None:
    assert normalize_target("Partner.Example.") == "partner.example"
    assert normalize_target("bob@example.test") == BOB
    with pytest.raises(StoreError, match="invalid domain"):
        normalize_target("not a domain")
    assert normalize_level("Friends-Family") == "friends"
    assert normalize_level("friends & family") == "friends"
    assert [normalize_level(level) for level in PRIVACY_LEVELS] == list(PRIVACY_LEVELS)
    with pytest.raises(StoreError, match="invalid privacy level 'trusted'"):
        normalize_level("trusted")


# --- contact lists --------------------------------------------------------------------


def test_add_list_move_remove(run_with_db: RunWithDb) -> None:
    async def scenario(db: Database) -> None:
        await make_users(db, "alice", "bob")
        contacts = ContactStore(db)
        assert await contacts.add(ALICE, "bob@example.test") == ContactEntry(BOB, "Contacts")
        await contacts.add("alice@example.test", CAROL, group="Partners")
        assert await contacts.list(ALICE) == [
            ContactEntry(BOB, "Contacts"),
            ContactEntry(CAROL, "Partners"),
        ]
        # Adding again moves the contact: one group per contact.
        await contacts.add(ALICE, BOB, group="Partners")
        assert await contacts.list(ALICE) == [
            ContactEntry(BOB, "Partners"),
            ContactEntry(CAROL, "Partners"),
        ]
        await contacts.add(BOB, ALICE)
        assert await contacts.all() == {
            ALICE: [ContactEntry(BOB, "Partners"), ContactEntry(CAROL, "Partners")],
            BOB: [ContactEntry(ALICE, "Contacts")],
        }
        await contacts.remove(ALICE, BOB)
        assert await contacts.list(ALICE) == [ContactEntry(CAROL, "Partners")]
        with pytest.raises(NotFoundError, match="is not on the contact list"):
            await contacts.remove(ALICE, BOB)

    run_with_db(scenario)


def test_contact_errors(run_with_db: RunWithDb) -> None:
    async def scenario(db: Database) -> None:
        await make_users(db, "alice")
        contacts = ContactStore(db)
        with pytest.raises(NotFoundError, match=r"no such user: nobody@example\.test"):
            await contacts.add("sip:nobody@example.test", BOB)
        with pytest.raises(NotFoundError):
            await contacts.list("sip:nobody@example.test")
        with pytest.raises(StoreError, match="own contact list"):
            await contacts.add(ALICE, "sip:alice@EXAMPLE.test")
        for bad_group in ["", " ", "x" * 65, "tab\there"]:
            with pytest.raises(StoreError, match="invalid group name"):
                await contacts.add(ALICE, BOB, group=bad_group)
        assert await contacts.list(ALICE) == []
        assert await contacts.all() == {}

    run_with_db(scenario)


def test_contact_and_group_limits(run_with_db: RunWithDb) -> None:
    async def scenario(db: Database) -> None:
        await make_users(db, "alice")
        contacts = ContactStore(db, max_contacts=3, max_groups=2)
        await contacts.add(ALICE, "sip:c1@x.test", group="A")
        await contacts.add(ALICE, "sip:c2@x.test", group="B")
        with pytest.raises(StoreError, match="at most 2 groups"):
            await contacts.add(ALICE, "sip:c3@x.test", group="C")
        await contacts.add(ALICE, "sip:c3@x.test", group="A")
        with pytest.raises(StoreError, match="at most 3 contacts"):
            await contacts.add(ALICE, "sip:c4@x.test", group="A")
        # Moving an existing contact is not a new one.
        await contacts.add(ALICE, "sip:c3@x.test", group="B")
        assert len(await contacts.list(ALICE)) == 3

    assert MAX_CONTACTS_PER_USER == 1000
    run_with_db(scenario)


# --- privacy rules --------------------------------------------------------------------


def test_privacy_set_get_remove(run_with_db: RunWithDb) -> None:
    async def scenario(db: Database) -> None:
        await make_users(db, "alice", "bob")
        privacy = PrivacyStore(db)
        assert await privacy.set(ALICE, "bob@example.test", "blocked") == (BOB, "blocked")
        assert await privacy.set(ALICE, "Partner.Example", "friends-family") == (
            "partner.example",
            "friends",
        )
        await privacy.set(ALICE, BOB, "workgroup")  # replaces
        await privacy.set(BOB, "sip:alice@example.test", "friends")
        assert await privacy.get(ALICE) == {"partner.example": "friends", BOB: "workgroup"}
        assert await privacy.get_all() == {
            ALICE: {"partner.example": "friends", BOB: "workgroup"},
            BOB: {ALICE: "friends"},
        }
        await privacy.remove(ALICE, "partner.example")
        with pytest.raises(NotFoundError, match="no privacy rule"):
            await privacy.remove(ALICE, "partner.example")
        assert await privacy.get(ALICE) == {BOB: "workgroup"}

    run_with_db(scenario)


def test_privacy_errors_and_limit(run_with_db: RunWithDb) -> None:
    async def scenario(db: Database) -> None:
        await make_users(db, "alice")
        privacy = PrivacyStore(db, max_rules=1)
        with pytest.raises(StoreError, match="invalid privacy level"):
            await privacy.set(ALICE, BOB, "besties")
        with pytest.raises(StoreError, match="themself"):
            await privacy.set(ALICE, ALICE, "blocked")
        with pytest.raises(NotFoundError, match="no such user"):
            await privacy.set("sip:nobody@example.test", BOB, "blocked")
        await privacy.set(ALICE, BOB, "blocked")
        with pytest.raises(StoreError, match="at most 1 privacy rules"):
            await privacy.set(ALICE, CAROL, "blocked")
        await privacy.set(ALICE, BOB, "external")  # changing a rule is always allowed

    run_with_db(scenario)


def test_removing_a_user_removes_their_list_and_rules(run_with_db: RunWithDb) -> None:
    async def scenario(db: Database) -> None:
        await make_users(db, "alice", "bob")
        await ContactStore(db).add(ALICE, BOB)
        await ContactStore(db).add(BOB, ALICE)
        await PrivacyStore(db).set(ALICE, CAROL, "blocked")
        await UserStore(db).remove("alice", "example.test")
        assert await ContactStore(db).all() == {BOB: [ContactEntry(ALICE, "Contacts")]}
        assert await PrivacyStore(db).get_all() == {}

    run_with_db(scenario)


# --- migration 0002 -------------------------------------------------------------------


def _differences(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def _check_schema(url: str) -> None:
    async with Database(url) as db:
        async with db.engine.connect() as connection:
            tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
            assert {"contacts", "privacy_rules"} <= tables
            assert await connection.run_sync(_differences) == []
        assert await db.current_revision() == head_revision()
        await db.downgrade("0001")
        async with db.engine.connect() as connection:
            tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
            assert not {"contacts", "privacy_rules"} & tables
        await db.migrate()
        await db.check_schema()


def test_migration_0002_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'conclave.db'}"
    migrate(url)
    asyncio.run(_check_schema(url))


def test_migration_0002_postgres(fresh_postgres_url: str) -> None:
    migrate(fresh_postgres_url)
    asyncio.run(_check_schema(fresh_postgres_url))
