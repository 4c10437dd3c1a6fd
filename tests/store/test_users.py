"""UserStore on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt

import pytest
from sqlalchemy import text

from conclave.store import (
    ConflictError,
    Database,
    NotFoundError,
    StoreError,
    UserStore,
    ha1,
)
from conclave.store.users import CaseCollision
from tests.store.conftest import RunWithDb

T0 = dt.datetime(2026, 1, 2, 3, 4, 5, tzinfo=dt.UTC)


def test_add_get_and_credentials(run_with_db: RunWithDb) -> None:
    async def scenario(db: Database) -> None:
        users = UserStore(db)
        record = await users.add("alice", "Example.TEST", "correct horse battery", now=T0)
        assert (record.name, record.domain, record.disabled) == ("alice", "example.test", False)
        assert record.address == "alice@example.test"
        assert record.created_at == T0
        assert await users.get("alice", "example.test") == record
        assert await users.get("ALICE", "example.test") == record  # one user, any case
        credentials = await users.credentials("alice", "example.test")
        assert credentials is not None
        assert credentials.ha1_md5 == ha1("MD5", "alice", "example.test", "correct horse battery")
        assert credentials.ha1_for("SHA-256") == ha1(
            "SHA-256", "alice", "example.test", "correct horse battery"
        )
        assert await users.credentials("bob", "example.test") is None

    run_with_db(scenario)


def test_password_is_never_stored(run_with_db: RunWithDb) -> None:
    async def scenario(db: Database) -> None:
        await UserStore(db).add("alice", "example.test", "UniqueSecret-1234")
        async with db.transaction() as session:
            rows = (await session.execute(text("SELECT * FROM users"))).all()
        assert all("UniqueSecret-1234" not in str(value) for row in rows for value in row)

    run_with_db(scenario)


def test_duplicate_user(run_with_db: RunWithDb) -> None:
    async def scenario(db: Database) -> None:
        users = UserStore(db)
        await users.add("alice", "example.test", "pw-one-123456")
        with pytest.raises(ConflictError) as info:
            await users.add("alice", "EXAMPLE.test", "pw-two-123456")
        assert str(info.value) == "user alice@example.test already exists"
        await users.add("alice", "other.test", "pw-three-12345")
        with pytest.raises(ConflictError) as info:
            await users.add("Alice", "example.test", "pw-four-123456")
        assert str(info.value) == (
            "user alice@example.test already exists (names differing only in case are one user)"
        )

    run_with_db(scenario)


def test_list_set_password_disable_remove(run_with_db: RunWithDb) -> None:
    async def scenario(db: Database) -> None:
        users = UserStore(db)
        for name, domain in [("bob", "b.test"), ("alice", "b.test"), ("carol", "a.test")]:
            await users.add(name, domain, "password-123456")
        assert [u.address for u in await users.list()] == [
            "carol@a.test",
            "alice@b.test",
            "bob@b.test",
        ]
        assert [u.name for u in await users.list("B.TEST")] == ["alice", "bob"]

        before = await users.credentials("bob", "b.test")
        await users.set_password("bob", "b.test", "another-password-1")
        after = await users.credentials("bob", "b.test")
        assert before is not None and after is not None
        assert after.ha1_sha256 == ha1("SHA-256", "bob", "b.test", "another-password-1")
        assert after.ha1_md5 != before.ha1_md5

        await users.set_disabled("bob", "b.test", True)
        bob = await users.get("bob", "b.test")
        assert bob is not None and bob.disabled
        cache = await users.all_credentials()
        assert set(cache) == {("alice", "b.test"), ("bob", "b.test"), ("carol", "a.test")}
        assert cache[("bob", "b.test")].disabled
        await users.set_disabled("bob", "b.test", False)
        assert not (await users.all_credentials())[("bob", "b.test")].disabled

        await users.remove("bob", "b.test")
        assert await users.get("bob", "b.test") is None
        with pytest.raises(NotFoundError, match=r"^no such user: bob@b.test$"):
            await users.remove("bob", "b.test")
        with pytest.raises(NotFoundError):
            await users.set_password("bob", "b.test", "x-password-1234")
        with pytest.raises(NotFoundError):
            await users.set_disabled("nobody", "b.test", True)

    run_with_db(scenario)


@pytest.mark.parametrize(
    ("name", "domain", "password", "message"),
    [
        ("bad name", "example.test", "password-1234", "invalid user name 'bad name'"),
        ("", "example.test", "password-1234", "invalid user name ''"),
        ("a:b", "example.test", "password-1234", "invalid user name 'a:b'"),
        ("alice", "bad_domain", "password-1234", "invalid domain 'bad_domain'"),
        ("alice", "example.test", "", "the password must not be empty"),
    ],
)
def test_add_rejects(
    run_with_db: RunWithDb, name: str, domain: str, password: str, message: str
) -> None:
    async def scenario(db: Database) -> None:
        with pytest.raises(StoreError) as info:
            await UserStore(db).add(name, domain, password)
        assert str(info.value).startswith(message)

    run_with_db(scenario)


def test_telephone_style_name(run_with_db: RunWithDb) -> None:
    async def scenario(db: Database) -> None:
        record = await UserStore(db).add("+442071234567", "example.test", "password-1234")
        assert record.name == "+442071234567"

    run_with_db(scenario)


# User names are unique regardless of case (issue 12, item 4).


def test_case_variants_are_refused_at_creation(run_with_db: RunWithDb) -> None:
    async def scenario(db: Database) -> None:
        users = UserStore(db)
        await users.add("alice", "example.test", "pw-one-123456")
        for variant in ("Alice", "ALICE", "aLiCe"):
            with pytest.raises(ConflictError, match=r"alice@example\.test already exists"):
                await users.add(variant, "example.test", "pw-two-123456")
        assert [u.name for u in await users.list()] == ["alice"]
        assert await users.case_collisions() == []

    run_with_db(scenario)


def test_lookups_fold_case_and_act_on_the_canonical_name(run_with_db: RunWithDb) -> None:
    async def scenario(db: Database) -> None:
        users = UserStore(db)
        await users.add("Alice", "example.test", "pw-one-123456")
        record = await users.get("alice", "example.test")
        assert record is not None and record.name == "Alice"
        assert await users.credentials("ALICE", "example.test") is not None

        changed = await users.set_password("aLICE", "example.test", "another-password-1")
        assert changed.name == "Alice"
        creds = await users.credentials("Alice", "example.test")
        assert creds is not None
        # HA1 of the stored name, which clients authenticate as, not of the name typed.
        assert creds.ha1_md5 == ha1("MD5", "Alice", "example.test", "another-password-1")
        assert creds.ha1_sha256 == ha1("SHA-256", "Alice", "example.test", "another-password-1")

        assert (await users.set_disabled("alice", "example.test", True)).name == "Alice"
        assert (await users.all_credentials())[("Alice", "example.test")].disabled
        assert (await users.remove("ALICE", "example.test")).name == "Alice"
        assert await users.list() == []
        with pytest.raises(NotFoundError, match=r"^no such user: alice@example.test$"):
            await users.remove("alice", "example.test")

    run_with_db(scenario)


async def _insert_raw(db: Database, name: str, domain: str = "example.test") -> None:
    """A row written as an old version (or a script) could have, bypassing the store."""
    async with db.transaction() as session:
        await session.execute(
            text(
                "INSERT INTO users (name, domain, ha1_md5, ha1_sha256, disabled, created_at) "
                "VALUES (:name, :domain, :md5, :sha, false, :created)"
            ),
            {
                "name": name,
                "domain": domain,
                "md5": ha1("MD5", name, domain, "pw"),
                "sha": ha1("SHA-256", name, domain, "pw"),
                "created": T0.replace(tzinfo=None),
            },
        )


def test_case_collisions_in_an_old_database(run_with_db: RunWithDb) -> None:
    async def scenario(db: Database) -> None:
        users = UserStore(db)
        for name in ("alice", "Alice", "bob"):
            await _insert_raw(db, name)
        await _insert_raw(db, "ALICE", "other.test")  # alone in its domain: no collision
        collisions = await users.case_collisions()
        assert collisions == [CaseCollision("example.test", ("Alice", "alice"))]
        assert collisions[0].folded == "alice"
        assert await users.case_collisions("other.test") == []
        # Every row is still there for the server's cache to see (and refuse).
        assert {("alice", "example.test"), ("Alice", "example.test")} <= set(
            await users.all_credentials()
        )
        # An exact name finds its own row; anything else would be a guess.
        exact = await users.get("Alice", "example.test")
        assert exact is not None and exact.name == "Alice"
        with pytest.raises(ConflictError, match=r"several users .*\(Alice, alice\)"):
            await users.get("ALICE", "example.test")
        with pytest.raises(ConflictError):
            await users.set_password("aLICE", "example.test", "password-123456")
        with pytest.raises(ConflictError):
            await users.add("ALICE", "example.test", "password-123456")
        # The operator resolves it by exact name.
        await users.remove("Alice", "example.test")
        assert await users.case_collisions() == []
        left = await users.get("ALICE", "example.test")
        assert left is not None and left.name == "alice"

    run_with_db(scenario)


def test_concurrent_case_variants_cannot_both_be_added(database_url: str) -> None:
    async def add(name: str) -> str:
        async with Database(database_url) as db:
            try:
                await UserStore(db).add(name, "example.test", "password-123456")
            except ConflictError:
                return "refused"
            return "added"

    async def main() -> list[str]:
        return list(await asyncio.gather(*(add(n) for n in ("alice", "Alice", "ALICE", "aLice"))))

    outcomes = asyncio.run(asyncio.wait_for(main(), 30))
    assert sorted(outcomes) == ["added", "refused", "refused", "refused"]
