"""Change counters on SQLite and PostgreSQL: every write bumps, a failed one does not;
the Reloader follows them; migration 0004 keeps the data it finds."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from sqlalchemy import inspect, text

from conclave.store import (
    DIRECTORY,
    USERS,
    ConflictError,
    ContactStore,
    Database,
    GenerationStore,
    NotFoundError,
    PrivacyStore,
    Reloader,
    StoreError,
    UserStore,
    head_revision,
    migrate,
)
from conclave.store.generations import bump
from tests.store.conftest import RunWithDb

DOMAIN = "example.test"
ALICE, BOB, CAROL = (f"sip:{name}@{DOMAIN}" for name in ("alice", "bob", "carol"))
PASSWORD = "pw-123456789"


async def counters(db: Database) -> tuple[int, int]:
    generations = GenerationStore(db)
    return await generations.get(USERS), await generations.get(DIRECTORY)


async def bumps(db: Database, action: Callable[[], Awaitable[object]]) -> tuple[int, int]:
    """How far ``action`` moved (users, directory)."""
    users, directory = await counters(db)
    await action()
    after_users, after_directory = await counters(db)
    return after_users - users, after_directory - directory


async def unchanged_after_failure(
    db: Database, action: Callable[[], Awaitable[object]], error: type[Exception]
) -> None:
    before = await counters(db)
    with pytest.raises(error):
        await action()
    assert await counters(db) == before


def test_every_user_write_bumps_users(run_with_db: RunWithDb) -> None:
    async def scenario(db: Database) -> None:
        users = UserStore(db)
        assert await counters(db) == (0, 0)
        assert await bumps(db, lambda: users.add("alice", DOMAIN, PASSWORD)) == (1, 0)
        assert await bumps(db, lambda: users.set_password("alice", DOMAIN, "pw-2-3456789")) == (
            1,
            0,
        )
        assert await bumps(db, lambda: users.set_disabled("alice", DOMAIN, True)) == (1, 0)
        assert await bumps(db, lambda: users.set_disabled("alice", DOMAIN, False)) == (1, 0)
        # Removing a user removes their list and rules too: both counters move.
        assert await bumps(db, lambda: users.remove("alice", DOMAIN)) == (1, 1)
        # Reads move nothing.
        assert await bumps(db, users.all_credentials) == (0, 0)
        assert await bumps(db, lambda: users.list(DOMAIN)) == (0, 0)

    run_with_db(scenario)


def test_failed_user_writes_do_not_bump(run_with_db: RunWithDb) -> None:
    async def scenario(db: Database) -> None:
        users = UserStore(db)
        await users.add("alice", DOMAIN, PASSWORD)
        await unchanged_after_failure(
            db, lambda: users.add("alice", DOMAIN, PASSWORD), ConflictError
        )
        await unchanged_after_failure(
            db, lambda: users.set_password("bob", DOMAIN, PASSWORD), NotFoundError
        )
        await unchanged_after_failure(
            db, lambda: users.set_disabled("bob", DOMAIN, True), NotFoundError
        )
        await unchanged_after_failure(db, lambda: users.remove("bob", DOMAIN), NotFoundError)
        await unchanged_after_failure(db, lambda: users.add("bob", DOMAIN, ""), StoreError)

    run_with_db(scenario)


def test_every_contact_and_privacy_write_bumps_directory(run_with_db: RunWithDb) -> None:
    async def scenario(db: Database) -> None:
        await UserStore(db).add("alice", DOMAIN, PASSWORD)
        contacts, privacy = ContactStore(db), PrivacyStore(db)
        assert await bumps(db, lambda: contacts.add(ALICE, BOB)) == (0, 1)
        assert await bumps(db, lambda: contacts.add(ALICE, BOB, "Team")) == (0, 1)  # a move
        assert await bumps(db, lambda: contacts.add(ALICE, BOB, "Team")) == (0, 0)  # no change
        assert await bumps(db, lambda: contacts.remove(ALICE, BOB)) == (0, 1)
        assert await bumps(db, lambda: privacy.set(ALICE, CAROL, "blocked")) == (0, 1)
        assert await bumps(db, lambda: privacy.set(ALICE, CAROL, "friends")) == (0, 1)
        assert await bumps(db, lambda: privacy.set(ALICE, CAROL, "friends-family")) == (0, 0)
        assert await bumps(db, lambda: privacy.set(ALICE, "partner.test", "external")) == (0, 1)
        assert await bumps(db, lambda: privacy.remove(ALICE, CAROL)) == (0, 1)
        assert await bumps(db, contacts.all) == (0, 0)
        assert await bumps(db, privacy.get_all) == (0, 0)

    run_with_db(scenario)


def test_failed_contact_and_privacy_writes_do_not_bump(run_with_db: RunWithDb) -> None:
    async def scenario(db: Database) -> None:
        await UserStore(db).add("alice", DOMAIN, PASSWORD)
        contacts = ContactStore(db, max_contacts=1)
        privacy = PrivacyStore(db, max_rules=1)
        await contacts.add(ALICE, BOB)
        await privacy.set(ALICE, BOB, "friends")
        await unchanged_after_failure(db, lambda: contacts.add(ALICE, CAROL), StoreError)
        await unchanged_after_failure(db, lambda: contacts.add(BOB, ALICE), NotFoundError)
        await unchanged_after_failure(db, lambda: contacts.remove(ALICE, CAROL), NotFoundError)
        await unchanged_after_failure(db, lambda: privacy.set(ALICE, CAROL, "blocked"), StoreError)
        await unchanged_after_failure(db, lambda: privacy.remove(ALICE, CAROL), NotFoundError)
        await unchanged_after_failure(db, lambda: privacy.set(ALICE, CAROL, "nope"), StoreError)

    run_with_db(scenario)


def test_a_rolled_back_transaction_takes_its_bump_with_it(run_with_db: RunWithDb) -> None:
    async def scenario(db: Database) -> None:
        class Abort(Exception):
            pass

        with pytest.raises(Abort):
            async with db.transaction() as session:
                await bump(session, USERS, DIRECTORY)
                raise Abort
        assert await counters(db) == (0, 0)
        async with db.transaction() as session:
            await bump(session, USERS, DIRECTORY)
            await bump(session, DIRECTORY)
        assert await counters(db) == (1, 2)

    run_with_db(scenario)


def test_a_missing_counter_reads_zero_and_starts_again(run_with_db: RunWithDb) -> None:
    async def scenario(db: Database) -> None:
        async with db.transaction() as session:
            await session.execute(text("DELETE FROM store_generation"))
        assert await counters(db) == (0, 0)
        await UserStore(db).add("alice", DOMAIN, PASSWORD)
        assert await counters(db) == (1, 0)

    run_with_db(scenario)


def test_concurrent_writers_each_bump_once(run_with_db: RunWithDb) -> None:
    async def scenario(db: Database) -> None:
        users = UserStore(db)
        names = [f"user{i}" for i in range(8)]
        await asyncio.gather(*(users.add(name, DOMAIN, PASSWORD) for name in names))
        assert await counters(db) == (len(names), 0)

    run_with_db(scenario)


# --- Reloader -----------------------------------------------------------------------------


class Copy:
    """An in-memory copy of the users table, as a server keeps one."""

    def __init__(self, db: Database) -> None:
        self.db = db
        self.names: set[str] = set()
        self.reads = 0
        self.fail = False

    async def load(self) -> None:
        self.reads += 1
        if self.fail:
            raise StoreError("database error: gone")
        self.names = {name for name, _domain in await UserStore(self.db).all_credentials()}


def test_reloader_reads_only_after_a_change(run_with_db: RunWithDb) -> None:
    async def scenario(db: Database) -> None:
        users, copy = UserStore(db), Copy(db)
        reloader = Reloader("users", copy.load, lambda: GenerationStore(db).get(USERS))
        assert await reloader.reload_if_changed() is True  # nothing loaded yet
        assert await reloader.reload_if_changed() is False
        assert await reloader.reload_if_changed() is False
        assert copy.reads == 1
        await users.add("alice", DOMAIN, PASSWORD)
        assert await reloader.reload_if_changed() is True
        assert copy.names == {"alice"} and copy.reads == 2
        assert reloader.loaded_generation == 1
        assert await reloader.reload_if_changed() is False
        # A signal reloads whatever the counter says.
        await reloader.reload()
        assert copy.reads == 3
        assert await reloader.reload_if_changed() is False
        # A contact change moves the other counter only.
        await ContactStore(db).add(ALICE, BOB)
        assert await reloader.reload_if_changed() is False
        assert copy.reads == 3

    run_with_db(scenario)


def test_reloader_keeps_the_old_copy_and_retries_after_a_failure(run_with_db: RunWithDb) -> None:
    async def scenario(db: Database) -> None:
        users, copy = UserStore(db), Copy(db)
        reloader = Reloader("users", copy.load, lambda: GenerationStore(db).get(USERS))
        await users.add("alice", DOMAIN, PASSWORD)
        await reloader.reload(trigger="startup")
        await users.add("bob", DOMAIN, PASSWORD)
        copy.fail = True
        with pytest.raises(StoreError):
            await reloader.reload_if_changed()
        with pytest.raises(StoreError):
            await reloader.reload()
        assert copy.names == {"alice"} and reloader.loaded_generation == 1
        copy.fail = False
        assert await reloader.reload_if_changed() is True  # the counter still differs
        assert copy.names == {"alice", "bob"}
        assert await reloader.reload_if_changed() is False

    run_with_db(scenario)


def test_reloader_without_a_counter_always_reloads() -> None:
    loads: list[int] = []

    async def load() -> None:
        loads.append(1)

    async def scenario() -> None:
        reloader = Reloader("things", load)
        assert await reloader.reload_if_changed() is True
        assert await reloader.reload_if_changed() is True
        assert reloader.loaded_generation is None

    asyncio.run(scenario())
    assert len(loads) == 2


def test_reloads_never_overlap() -> None:
    active: list[int] = []
    overlapped: list[bool] = []

    async def load() -> None:
        active.append(1)
        overlapped.append(len(active) > 1)
        await asyncio.sleep(0.01)
        active.pop()

    async def generation() -> int:
        return 7

    async def scenario() -> list[bool | None]:
        reloader = Reloader("things", load, generation)
        return await asyncio.gather(
            reloader.reload(), reloader.reload_if_changed(), reloader.reload()
        )

    # The poll waits for the first signal's load, then finds generation 7
    # current and skips; the second signal reloads anyway.
    assert asyncio.run(scenario()) == [None, False, None]
    assert overlapped == [False, False]


# --- migration 0004 -----------------------------------------------------------------------


async def _upgrade_keeps_data(url: str) -> None:
    async with Database(url) as db:
        await db.downgrade("0003")
        async with db.engine.connect() as connection:
            tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
        assert "store_generation" not in tables
        # Data written by a 0003 server (no counter table yet: plain SQL).
        async with db.transaction() as session:
            await session.execute(
                text(
                    "INSERT INTO users (name, domain, ha1_md5, ha1_sha256, disabled, created_at)"
                    " VALUES ('alice', 'example.test', :md5, :sha, false, CURRENT_TIMESTAMP)"
                ),
                {"md5": "0" * 32, "sha": "0" * 64},
            )
        await db.migrate()
        await db.check_schema()
        assert await db.current_revision() == head_revision()
        assert set(await UserStore(db).all_credentials()) == {("alice", DOMAIN)}
        assert await counters(db) == (0, 0)
        async with db.transaction() as session:
            rows = (await session.execute(text("SELECT name, value FROM store_generation"))).all()
        assert sorted(tuple(row) for row in rows) == [("directory", 0), ("users", 0)]
        await UserStore(db).set_disabled("alice", DOMAIN, True)
        assert await counters(db) == (1, 0)
        await db.downgrade("0003")
        assert set(await UserStore(db).all_credentials()) == {("alice", DOMAIN)}
        await db.migrate()
        assert await counters(db) == (0, 0)  # the counters start again; a restart reloads


def test_migration_0004_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'conclave.db'}"
    migrate(url)
    asyncio.run(_upgrade_keeps_data(url))


def test_migration_0004_postgres(fresh_postgres_url: str) -> None:
    migrate(fresh_postgres_url)
    asyncio.run(_upgrade_keeps_data(fresh_postgres_url))
