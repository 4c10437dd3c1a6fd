"""Database handle and migrations, on SQLite files and a fresh PostgreSQL database."""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect, text

from conclave.store import Database, StoreError, async_url, head_revision, migrate, migrate_async
from conclave.store.database import redact
from conclave.store.models import Base

TABLES = {
    "alembic_version",
    "archive_policies",
    "cdrs",
    "contacts",
    "offline_messages",
    "pool_backups",
    "pool_failovers",
    "privacy_rules",
    "registrations",
    "store_generation",
    "users",
}


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("sqlite:///data/conclave.db", "sqlite+aiosqlite:///data/conclave.db"),
        ("sqlite+aiosqlite:///x.db", "sqlite+aiosqlite:///x.db"),
        ("postgresql://127.0.0.1/test", "postgresql+asyncpg://127.0.0.1/test"),
        ("postgresql+psycopg://u@h:5433/db", "postgresql+asyncpg://u@h:5433/db"),
    ],
)
def test_async_url(url: str, expected: str) -> None:
    assert async_url(url).render_as_string(hide_password=False) == expected


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("mysql://h/db", "unsupported database 'mysql': use sqlite or postgresql"),
        ("not a url", "invalid database URL: 'not a url'"),
    ],
)
def test_async_url_rejects(url: str, message: str) -> None:
    with pytest.raises(StoreError) as info:
        async_url(url)
    assert str(info.value) == message


def test_redact_hides_password() -> None:
    assert redact("postgresql://u:secret@h/db") == "postgresql://u:***@h/db"


def schema_differences(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"compare_type": True})
    return list(compare_metadata(context, Base.metadata))


async def inspect_database(url: str) -> tuple[set[str], list[object], str | None]:
    async with Database(url) as database, database.engine.connect() as connection:
        tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))
        differences = await connection.run_sync(schema_differences)
        return tables, differences, await database.current_revision()


def test_migrate_sqlite_file(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'conclave.db'}"
    migrate(url)
    migrate(url)  # idempotent
    tables, differences, revision = asyncio.run(inspect_database(url))
    assert tables == TABLES
    assert differences == [], "models and migrations disagree"
    assert revision == head_revision()
    with sqlite3.connect(tmp_path / "conclave.db") as raw:
        assert raw.execute("PRAGMA journal_mode").fetchone() == ("wal",)


def test_migrate_fresh_postgres_database(fresh_postgres_url: str) -> None:
    migrate(fresh_postgres_url)
    tables, differences, revision = asyncio.run(inspect_database(fresh_postgres_url))
    assert tables == TABLES
    assert differences == [], "models and migrations disagree on PostgreSQL"
    assert revision == head_revision()

    async def down_and_up() -> None:
        async with Database(fresh_postgres_url) as database:
            await database.downgrade("base")
            assert await database.current_revision() is None
            await database.migrate()
            await database.check_schema()

    asyncio.run(down_and_up())


def test_check_schema_refuses_unmigrated(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'conclave.db'}"

    async def check() -> None:
        async with Database(url) as database:
            with pytest.raises(StoreError, match="has schema none, this version needs"):
                await database.check_schema()
            await database.migrate()
            await database.check_schema()

    asyncio.run(check())


def test_migrate_inside_running_loop(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'conclave.db'}"

    async def inside() -> str | None:
        migrate(url)  # blocking call from async code still works
        await migrate_async(url)
        async with Database(url) as database:
            return await database.current_revision()

    assert asyncio.run(inside()) == head_revision()


def test_migrate_unopenable_path(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'missing-dir' / 'conclave.db'}"
    with pytest.raises(StoreError, match=r"^cannot open database .*missing-dir does not exist$"):
        migrate(url)


def test_unmigrated_database_gives_store_error(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'conclave.db'}"

    async def query() -> None:
        async with Database(url) as database, database.transaction() as session:
            await session.execute(text("SELECT * FROM users"))

    with pytest.raises(StoreError, match=r"^database error: no such table: users$"):
        asyncio.run(query())
