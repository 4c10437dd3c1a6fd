"""CdrStore and ArchivePolicyStore on SQLite and PostgreSQL; migration 0003 matches the models."""

from __future__ import annotations

import asyncio
import datetime as dt
from pathlib import Path

from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection, inspect

from conclave.store import Database, head_revision, migrate
from conclave.store.archive import ArchivePolicyStore
from conclave.store.cdr import Cdr, CdrStore
from conclave.store.errors import StoreError
from conclave.store.models import Base
from tests.store.conftest import RunWithDb

T0 = dt.datetime(2026, 11, 26, 8, 0, tzinfo=dt.UTC)
ALICE, BOB = "sip:alice@example.test", "sip:bob@example.test"


def cdr(
    kind: str, minutes: int, caller: str = ALICE, callee: str | None = BOB, **kw: object
) -> Cdr:
    start = T0 + dt.timedelta(minutes=minutes)
    return Cdr(
        kind=kind, call_id=f"{kind}-{minutes}", caller=caller, callee=callee, started_at=start,
        ended_at=start + dt.timedelta(seconds=30), duration=30.0, status=200, reason="ok",
        detail={"n": minutes}, **kw,  # type: ignore[arg-type]
    )  # fmt: skip


def test_migration_creates_the_tables_the_models_describe(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    migrate(url)

    async def inspect_db() -> tuple[set[str], list[object], str | None]:
        async with Database(url) as db, db.engine.connect() as connection:
            tables = await connection.run_sync(lambda c: set(inspect(c).get_table_names()))

            def differences(c: Connection) -> list[object]:
                context = MigrationContext.configure(c, opts={"compare_type": True})
                return list(compare_metadata(context, Base.metadata))

            return tables, await connection.run_sync(differences), await db.current_revision()

    tables, differences, revision = asyncio.run(inspect_db())
    assert {"cdrs", "archive_policies"} <= tables
    assert differences == []
    assert revision == head_revision()


def test_downgrade_removes_the_tables(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'c.db'}"
    migrate(url)

    async def down() -> set[str]:
        async with Database(url) as db:
            await db.downgrade("0002")
            async with db.engine.connect() as connection:
                return await connection.run_sync(lambda c: set(inspect(c).get_table_names()))

    tables = asyncio.run(down())
    assert "cdrs" not in tables and "archive_policies" not in tables


def test_cdrs_insert_query_purge(run_with_db: RunWithDb) -> None:
    async def scenario(db: Database) -> None:
        store = CdrStore(db)
        assert await store.insert_many([]) == 0
        await store.insert_many(
            [
                cdr("call", 0, answered_at=T0),
                cdr("im", 1),
                cdr("register", 2, callee=None),
                cdr("im", 3, caller=BOB, callee="sip:carol@example.test"),
            ]
        )
        everything = await store.query()
        assert [r.kind for r in everything] == ["call", "im", "register", "im"]
        assert everything[0].answered_at == T0 and everything[0].detail == {"n": 0}
        assert [r.kind for r in await store.query(kind="im")] == ["im", "im"]
        assert len(await store.query(user=ALICE)) == 3
        assert len(await store.query(user="sip:carol@example.test")) == 1
        window = await store.query(
            since=T0 + dt.timedelta(minutes=1), until=T0 + dt.timedelta(minutes=3)
        )
        assert [r.call_id for r in window] == ["im-1", "register-2"]
        assert [r.call_id for r in await store.query(limit=2)] == ["call-0", "im-1"]
        first = everything[0]
        assert first.id is not None
        assert await store.get(first.id) == first
        assert await store.get(999_999) is None
        assert (await store.query(call_id="im-3"))[0].caller == BOB
        as_dict = first.as_dict()
        assert as_dict["start"] == "2026-11-26T08:00:00Z" and as_dict["duration"] == 30.0
        assert await store.purge_older_than(T0 + dt.timedelta(minutes=2)) == 2
        assert [r.kind for r in await store.query()] == ["register", "im"]

    run_with_db(scenario)


def test_policy_overrides(run_with_db: RunWithDb) -> None:
    async def scenario(db: Database) -> None:
        store = ArchivePolicyStore(db)
        assert await store.all() == []
        row = await store.put("user", "alice@example.test", internal=True, federated=None)
        assert row is not None and (row.internal, row.federated) == (True, None)
        await store.put("pool", "default", internal=None, federated=False)
        updated = await store.put("user", "alice@example.test", internal=False, federated=True)
        assert updated is not None and (updated.internal, updated.federated) == (False, True)
        assert [(r.scope, r.name) for r in await store.all()] == [
            ("pool", "default"),
            ("user", "alice@example.test"),
        ]
        # Both switches unset: the row says nothing and goes.
        assert await store.put("pool", "default", internal=None, federated=None) is None
        assert await store.get("pool", "default") is None
        assert await store.clear("user", "alice@example.test")
        assert not await store.clear("user", "alice@example.test")
        try:
            await store.get("planet", "earth")
        except StoreError as exc:
            assert "unknown policy scope" in str(exc)
        else:
            raise AssertionError("bad scope accepted")

    run_with_db(scenario)
