"""OfflineMessageStore on SQLite and PostgreSQL."""

from __future__ import annotations

import asyncio
import datetime as dt

from conclave.store import Database, OfflineMessageStore
from tests.store.conftest import RunWithDb

T0 = dt.datetime(2026, 5, 1, 8, 0, 0, tzinfo=dt.UTC)
BOB = "sip:bob@example.test"


async def put(store: OfflineMessageStore, n: int, at: dt.datetime, **limits: object) -> bool:
    return await store.enqueue(
        BOB,
        sender=f'"Alice" <sip:alice@example.test>;tag={n}',
        content_type="text/plain;charset=UTF-8",
        body=f"message {n}".encode(),
        date_header="Fri, 01 May 2026 08:00:00 GMT",
        now=at,
        **limits,  # type: ignore[arg-type]
    )


def test_enqueue_and_take_in_order(run_with_db: RunWithDb) -> None:
    async def scenario(db: Database) -> None:
        store = OfflineMessageStore(db)
        for n in range(3):
            assert await put(store, n, T0 + dt.timedelta(seconds=10 - n))
        assert await store.count_for(BOB) == 3
        messages = await store.take_for(BOB)
        assert [m.body for m in messages] == [b"message 2", b"message 1", b"message 0"]
        first = messages[0]
        assert first.recipient == BOB and first.content_type == "text/plain;charset=UTF-8"
        assert first.sender.endswith(";tag=2") and first.date_header is not None
        assert first.received_at == T0 + dt.timedelta(seconds=8)
        assert await store.take_for(BOB) == []
        assert await store.count_for(BOB) == 0

    run_with_db(scenario)


def test_queue_limit(run_with_db: RunWithDb) -> None:
    async def scenario(db: Database) -> None:
        store = OfflineMessageStore(db, max_per_user=2, max_age=dt.timedelta(days=7))
        assert await put(store, 1, T0)
        assert await put(store, 2, T0)
        assert not await put(store, 3, T0)
        assert await store.count_for(BOB) == 2
        # Per-call limits override the store's defaults.
        assert await put(store, 3, T0, max_per_user=3)
        assert not await put(store, 4, T0, max_per_user=0)
        # Other recipients have their own queues.
        assert await store.enqueue(
            "sip:carol@example.test", sender="a", content_type="t/p", body=b"x", now=T0
        )

    run_with_db(scenario)


def test_expired_messages_free_the_queue(run_with_db: RunWithDb) -> None:
    async def scenario(db: Database) -> None:
        store = OfflineMessageStore(db, max_per_user=2, max_age=3600)
        assert await put(store, 1, T0)
        assert await put(store, 2, T0 + dt.timedelta(minutes=30))
        later = T0 + dt.timedelta(minutes=61)
        assert await put(store, 3, later)  # message 1 is older than an hour: dropped
        assert [m.body for m in await store.take_for(BOB)] == [b"message 2", b"message 3"]

    run_with_db(scenario)


def test_purge_older_than(run_with_db: RunWithDb) -> None:
    async def scenario(db: Database) -> None:
        store = OfflineMessageStore(db)
        await put(store, 1, T0)
        await put(store, 2, T0 + dt.timedelta(days=1))
        assert await store.purge_older_than(T0 + dt.timedelta(hours=1)) == 1
        assert [m.body for m in await store.take_for(BOB)] == [b"message 2"]

    run_with_db(scenario)


def test_concurrent_takers_never_share_a_message(run_with_db: RunWithDb) -> None:
    async def scenario(db: Database) -> None:
        store = OfflineMessageStore(db)
        for n in range(20):
            await put(store, n, T0 + dt.timedelta(seconds=n))
        results = await asyncio.gather(*(store.take_for(BOB) for _ in range(4)))
        ids = [m.id for batch in results for m in batch]
        assert sorted(ids) == sorted(set(ids)) and len(ids) == 20

    run_with_db(scenario)


def test_concurrent_enqueues_respect_limit(run_with_db: RunWithDb) -> None:
    async def scenario(db: Database) -> None:
        store = OfflineMessageStore(db, max_per_user=5)
        accepted = await asyncio.gather(*(put(store, n, T0) for n in range(12)))
        assert sum(accepted) == 5
        assert await store.count_for(BOB) == 5

    run_with_db(scenario)
