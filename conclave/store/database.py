"""The database handle: engine creation, transactions and migrations.

URLs are given in their ordinary synchronous form (``sqlite:///DATA/conclave.db``,
``postgresql://host/db``); :func:`async_url` maps them to the asyncio drivers
(aiosqlite, asyncpg) so configuration never names a driver.

Start-up sequence for a server::

    migrate(url)                   # or await migrate_async(url); idempotent
    db = Database(url)
    await db.check_schema()        # refuse to run against an old schema
    users = UserStore(db)
    ...
    await db.dispose()
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import os
from collections.abc import AsyncIterator, Callable, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, IntegrityError, SQLAlchemyError
from sqlalchemy.ext.asyncio import (
    AsyncConnection,
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from conclave.store.errors import ConflictError, StoreError

MIGRATIONS_DIR = Path(__file__).parent / "migrations"

SQLITE_BUSY_TIMEOUT_MS = 5000
"""How long SQLite waits for another writer (say ``conclave user add`` while
the server runs) before failing with "database is locked"."""

PG_CONNECT_TIMEOUT = 3.0
"""Seconds to open a PostgreSQL connection (each host of a multi-host URL) before the
store reports the database unreachable: a request that must write gets a prompt error
(503 with Retry-After), never a hang."""
PG_COMMAND_TIMEOUT = 5.0
"""Seconds any one PostgreSQL statement may take (a primary that died mid-query, a
synchronous standby that stopped acknowledging) before it fails the same way."""

_ASYNC_DRIVERS = {"sqlite": "sqlite+aiosqlite", "postgresql": "postgresql+asyncpg"}

PRIVATE_FILE_MODE = 0o600
"""Mode of every SQLite file we create: the users table holds digest HA1 values
(password equivalents), the log store holds call and user events. SQLite gives
the ``-wal`` and ``-shm`` files it makes the mode of the database file."""

SQLITE_SIDE_FILES = ("-wal", "-shm", "-journal")
"""Files SQLite keeps beside a database, named by suffix."""


def create_private_file(path: Path) -> None:
    """Create ``path`` empty with mode 0600 if it does not exist yet (an existing file is kept).

    Call it before SQLite opens a new database file: SQLite would create it
    with the umask's mode (0644 usually), and its ``-wal`` and ``-shm`` files
    after it. An empty file is a valid new database.
    """
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, PRIVATE_FILE_MODE)
    except FileExistsError:
        return
    try:
        os.fchmod(fd, PRIVATE_FILE_MODE)  # the umask may have removed bits; set exactly
    finally:
        os.close(fd)


def sqlite_path(url: str) -> Path | None:
    """The file of an SQLite URL (``sqlite:///DATA/conclave.db``), or None for any other."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        return None
    path = parsed.database or ""
    if parsed.get_backend_name() != "sqlite" or not path or path == ":memory:":
        return None
    if path.startswith("file:"):
        return None
    return Path(path)


def async_url(url: str) -> URL:
    """Map a database URL to its asyncio driver: sqlite -> aiosqlite, postgresql -> asyncpg."""
    try:
        parsed = make_url(url)
    except ArgumentError:
        raise StoreError(f"invalid database URL: {url!r}") from None
    backend = parsed.get_backend_name()
    driver = _ASYNC_DRIVERS.get(backend)
    if driver is None:
        raise StoreError(f"unsupported database {backend!r}: use sqlite or postgresql")
    return parsed.set(drivername=driver)


def redact(url: str | URL) -> str:
    """The URL with any password hidden, for messages and logs."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<invalid URL>"


def one_line(exc: BaseException) -> str:
    """The first line of a driver's error message (they can span many lines)."""
    orig = exc.orig if isinstance(exc, DBAPIError) else exc
    text = str(orig).strip().splitlines()
    return text[0] if text else type(orig).__name__


def rowcount(result: object) -> int:
    """Rows affected by a DML statement (its Result is a CursorResult at run time)."""
    count = getattr(result, "rowcount", 0)
    return count if isinstance(count, int) and count > 0 else 0


def _prepare_sqlite_file(url: str) -> None:
    path = sqlite_path(url)
    if path is None:
        return
    # SQLite creates the file but not its directory; say so plainly instead
    # of "unable to open database file" (which also trips an aiosqlite race).
    if not path.parent.is_dir():
        raise StoreError(
            f"cannot open database {redact(url)}: directory {path.parent} does not exist"
        )
    try:
        create_private_file(path)
    except OSError as exc:
        raise StoreError(f"cannot create database {redact(url)}: {exc.strerror or exc}") from None


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    try:
        cursor.execute(f"PRAGMA busy_timeout = {SQLITE_BUSY_TIMEOUT_MS}")
        cursor.execute("PRAGMA foreign_keys = ON")
        # WAL lets readers (the server) proceed while a writer (the CLI) commits.
        cursor.execute("PRAGMA journal_mode = WAL")
    finally:
        cursor.close()


@contextmanager
def _store_errors() -> Iterator[None]:
    """Driver errors as :class:`StoreError`, one line each; StoreErrors pass through."""
    try:
        yield
    except StoreError:
        raise
    except IntegrityError as exc:
        raise ConflictError(f"conflicting data: {one_line(exc)}") from exc
    except SQLAlchemyError as exc:
        raise StoreError(f"database error: {one_line(exc)}") from exc
    except (OSError, TimeoutError) as exc:  # the driver's own: refused, unreachable, slow
        raise StoreError(f"database unreachable: {one_line(exc)}") from exc


class Database:
    """An async engine and session factory for one database URL.

    Create one per process, share it between the stores, and
    ``await dispose()`` it at shutdown (or use ``async with``).
    """

    def __init__(self, url: str, *, echo: bool = False) -> None:
        self.url = url
        self._async_url = async_url(url)
        if self.dialect == "sqlite":
            _prepare_sqlite_file(url)
        options: dict[str, Any] = {}
        if self.dialect == "postgresql":
            # Bounded waits, and a connection that died with its server (a failover, a
            # restart) is noticed at checkout and replaced instead of failing a request.
            options = {
                "connect_args": {
                    "timeout": PG_CONNECT_TIMEOUT,
                    "command_timeout": PG_COMMAND_TIMEOUT,
                },
                "pool_pre_ping": True,
            }
        self.engine: AsyncEngine = create_async_engine(self._async_url, echo=echo, **options)
        if self.dialect == "sqlite":
            event.listen(self.engine.sync_engine, "connect", _sqlite_pragmas)
        self._sessions = async_sessionmaker(self.engine, expire_on_commit=False)

    @property
    def dialect(self) -> str:
        """The backend name: ``"sqlite"`` or ``"postgresql"``."""
        return self._async_url.get_backend_name()

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *_exc: object) -> None:
        await self.dispose()

    async def dispose(self) -> None:
        """Close every pooled connection."""
        await self.engine.dispose()

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[AsyncSession]:
        """A session inside one transaction: committed on success, rolled back on error.

        Driver errors come out as :class:`StoreError` with a one-line message
        (:class:`ConflictError` for a broken uniqueness rule); StoreErrors
        raised inside pass through unchanged.
        """
        with _store_errors():
            async with self._sessions() as session, session.begin():
                yield session

    @asynccontextmanager
    async def core_transaction(self) -> AsyncIterator[AsyncConnection]:
        """:meth:`transaction` without the ORM: a connection for Core statements.

        For the write-behind's bulk writes (registrations, CDRs): a Core
        ``executemany`` skips the ORM's bulk-insert machinery, which cost
        more per row than the database does.
        """
        with _store_errors():
            async with self.engine.begin() as connection:
                yield connection

    async def current_revision(self) -> str | None:
        """The schema revision recorded in the database, or None if never migrated."""

        def read(connection: Connection) -> str | None:
            return MigrationContext.configure(connection).get_current_revision()

        try:
            async with self.engine.connect() as connection:
                return await connection.run_sync(read)
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"cannot open database {redact(self.url)}: {one_line(exc)}") from exc

    async def check_schema(self) -> None:
        """Raise :class:`StoreError` unless the schema is at the newest migration."""
        current = await self.current_revision()
        head = head_revision()
        if current != head:
            raise StoreError(
                f"database {redact(self.url)} has schema {current or 'none'}, "
                f"this version needs {head}: run the migrations first"
            )

    async def migrate(self, revision: str = "head") -> None:
        """Upgrade the schema to ``revision`` in one transaction (idempotent)."""
        await self._run_alembic(command.upgrade, revision)

    async def downgrade(self, revision: str) -> None:
        """Revert the schema to ``revision`` ("base": drop everything). For tests and rollbacks."""
        await self._run_alembic(command.downgrade, revision)

    async def _run_alembic(self, action: Callable[[Config, str], None], revision: str) -> None:
        def run(connection: Connection) -> None:
            config = alembic_config()
            config.attributes["connection"] = connection
            action(config, revision)

        try:
            async with self.engine.begin() as connection:
                await connection.run_sync(run)
        except (SQLAlchemyError, OSError) as exc:
            raise StoreError(f"cannot migrate {redact(self.url)}: {one_line(exc)}") from exc


def alembic_config(url: str | None = None) -> Config:
    """An Alembic configuration for the packaged migrations (no alembic.ini needed).

    With ``url``, Alembic commands (``command.revision(cfg, autogenerate=True)``,
    ``command.history(cfg)``...) open that database themselves.
    """
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    if url is not None:
        config.attributes["url"] = url
    return config


def head_revision() -> str:
    """The newest migration revision shipped with this code."""
    head = ScriptDirectory.from_config(alembic_config()).get_current_head()
    if head is None:
        raise StoreError("no migrations found in the package")
    return head


async def migrate_async(url: str, revision: str = "head") -> None:
    """Upgrade the database at ``url`` to ``revision`` from inside an event loop."""
    async with Database(url) as database:
        await database.migrate(revision)


def migrate(url: str, revision: str = "head") -> None:
    """Run ``alembic upgrade head`` on ``url`` (e.g. ``sqlite:///DATA/conclave.db``).

    Safe to call on every start: an up-to-date database is left alone. Callable
    from plain code (the CLI) and, blocking, from inside a running event loop.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        asyncio.run(migrate_async(url, revision))
        return
    # asyncio.run cannot nest: give the migration its own loop on a helper thread.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        pool.submit(asyncio.run, migrate_async(url, revision)).result()
