"""UserStore on SQLite and PostgreSQL."""

from __future__ import annotations

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
        assert await users.get("Alice", "example.test") is None  # user part is case-sensitive
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
        await users.add("Alice", "example.test", "pw-four-123456")

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
