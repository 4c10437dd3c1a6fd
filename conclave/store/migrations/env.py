"""Alembic environment for Conclave's packaged migrations.

Run through :func:`conclave.store.migrate` (or ``Database.migrate``), which
hands in an open connection. For development, Alembic commands work with
:func:`conclave.store.database.alembic_config`::

    from alembic import command
    from conclave.store.database import alembic_config
    command.revision(alembic_config("sqlite:///dev.db"), "add rooms", autogenerate=True)

Batch mode is on so that future ALTERs also work on SQLite, which rebuilds
tables instead of altering them.
"""

from __future__ import annotations

import asyncio

from alembic import context
from sqlalchemy import Connection

from conclave.store.models import Base

config = context.config
target_metadata = Base.metadata


def _configure(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=target_metadata,
        render_as_batch=True,
        compare_type=True,
    )


def run_offline() -> None:
    """Emit SQL for ``alembic upgrade --sql`` without a database."""
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    context.configure(
        url=url,
        target_metadata=target_metadata,
        literal_binds=True,
        render_as_batch=True,
        dialect_opts={"paramstyle": "named"},
    )
    with context.begin_transaction():
        context.run_migrations()


def run_on(connection: Connection) -> None:
    """Run the migrations on an already open (synchronous-facing) connection."""
    _configure(connection)
    with context.begin_transaction():
        context.run_migrations()


async def run_with_own_engine(url: str) -> None:
    """Open the database at ``url`` with its async driver and migrate it."""
    from conclave.store.database import Database

    async with Database(url) as database, database.engine.begin() as connection:
        await connection.run_sync(run_on)


def run_online() -> None:
    """Migrate the connection given by the caller, or open ``url`` ourselves."""
    connection = config.attributes.get("connection")
    if connection is not None:
        run_on(connection)
        return
    url = config.attributes.get("url") or config.get_main_option("sqlalchemy.url")
    if not url:
        raise RuntimeError("no database: pass a connection or a url to alembic_config()")
    asyncio.run(run_with_own_engine(url))


if context.is_offline_mode():
    run_offline()
else:
    run_online()
