"""Store fixtures: migrated SQLite files, and PostgreSQL databases made per session.

The store is async; tests run each scenario in its own ``asyncio.run`` with a
fresh :class:`Database`, so no connection crosses event loops.

PostgreSQL tests use ``CONCLAVE_TEST_POSTGRES`` (default: the machine's local
server with trust auth). When it cannot be reached they are skipped, except
under ``CI=true`` where they fail: CI must not pass silently without them.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import NoReturn

import asyncpg
import pytest
from sqlalchemy.engine import make_url

from conclave.store import Database, migrate
from conclave.store.models import Base

Scenario = Callable[[Database], Awaitable[None]]
RunWithDb = Callable[[Scenario], None]

POSTGRES_ADMIN_URL = os.environ.get(
    "CONCLAVE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432/postgres"
)


def postgres_unavailable(reason: str) -> NoReturn:
    """Skip, or fail under CI, when PostgreSQL cannot be used."""
    message = f"PostgreSQL at {POSTGRES_ADMIN_URL} not usable: {reason}"
    if os.environ.get("CI") == "true":
        pytest.fail(message)
    pytest.skip(message)  # outside CI only: under CI=true it failed above


async def _admin(sql: str) -> None:
    connection = await asyncpg.connect(POSTGRES_ADMIN_URL, timeout=5)
    try:
        await connection.execute(sql)
    finally:
        await connection.close()


def create_postgres_database() -> str:
    """Create a uniquely named empty database; return its URL."""
    name = f"conclave_test_{uuid.uuid4().hex[:12]}"
    try:
        asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        postgres_unavailable(f"{type(exc).__name__}: {exc}")
    url = make_url(POSTGRES_ADMIN_URL).set(database=name)
    return url.render_as_string(hide_password=False)


def drop_postgres_database(url: str) -> None:
    """Drop a database made by :func:`create_postgres_database`."""
    name = make_url(url).database
    asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))


@pytest.fixture
def fresh_postgres_url() -> Iterator[str]:
    """A new, empty, uniquely named PostgreSQL database, dropped afterwards."""
    url = create_postgres_database()
    try:
        yield url
    finally:
        drop_postgres_database(url)


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """One migrated PostgreSQL database shared by the session's tests."""
    url = create_postgres_database()
    try:
        migrate(url)
        yield url
    finally:
        drop_postgres_database(url)


async def _empty_tables(database: Database) -> None:
    async with database.transaction() as session:
        for table in reversed(Base.metadata.sorted_tables):
            await session.execute(table.delete())


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A migrated, empty database URL: a SQLite file, or the shared PostgreSQL one."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'conclave.db'}"
        migrate(url)
        return url
    url = str(request.getfixturevalue("postgres_url"))

    async def clean() -> None:
        async with Database(url) as database:
            await _empty_tables(database)

    asyncio.run(clean())
    return url


@pytest.fixture
def run_with_db(database_url: str) -> RunWithDb:
    """Run ``await scenario(db)`` in a fresh event loop with a fresh Database."""

    def run(scenario: Scenario) -> None:
        async def main() -> None:
            async with Database(database_url) as database:
                await scenario(database)

        asyncio.run(asyncio.wait_for(main(), 30))

    return run
