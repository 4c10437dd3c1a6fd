"""Contacts and privacy are re-read only when the ``directory`` change counter moved.

A fake store (a load function and a counter) counts the full reads; one test
uses a real SQLite store with the server's wiring.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from conclave.services.presence.directory import Directory, read_directory
from conclave.services.presence.service import PresenceService
from conclave.services.presence.settings import PresenceSettings
from conclave.sip.local import LocalEndpoint
from conclave.store import (
    DIRECTORY,
    ContactStore,
    Database,
    GenerationStore,
    PrivacyStore,
    StoreError,
    UserStore,
    migrate,
)

from .test_service_harness import DOMAIN, HOST, FakeStack, aor


class FakeDirectoryStore:
    """The rows and the counter; counts full reads."""

    def __init__(self) -> None:
        self.generation = 0
        self.contacts: dict[str, list[tuple[str, str | None]]] = {}
        self.reads = 0
        self.counter_reads = 0
        self.fail = False

    def change(self, owner: str, contact: str) -> None:
        self.contacts.setdefault(owner, []).append((contact, "Team"))
        self.generation += 1

    async def load(self) -> Directory:
        self.reads += 1
        if self.fail:
            raise StoreError("database error: gone")
        return Directory.build(DOMAIN, self.contacts, {})

    async def read_generation(self) -> int:
        self.counter_reads += 1
        return self.generation


def service(store: FakeDirectoryStore, *, with_counter: bool = True) -> PresenceService:
    return PresenceService(
        stack=FakeStack(),
        local=LocalEndpoint(host=HOST, domain=DOMAIN, ports={"tls": 5061}),
        settings=PresenceSettings(merge_window=0.0),
        user_exists=lambda name: True,
        load=store.load,
        generation=store.read_generation if with_counter else None,
    )


def test_unchanged_counter_means_no_reread() -> None:
    store = FakeDirectoryStore()
    presence = service(store)

    async def scenario() -> None:
        assert await presence.reload_if_changed() is True  # the first load
        assert presence.loaded
        for _ in range(5):
            assert await presence.reload_if_changed() is False
        assert (store.reads, store.counter_reads) == (1, 6)
        store.change(aor("alice"), aor("bob"))
        assert await presence.reload_if_changed() is True
        assert presence.directory.contacts_of(aor("alice")) == (aor("bob"),)
        assert await presence.reload_if_changed() is False
        assert store.reads == 2

    asyncio.run(scenario())


def test_signal_reloads_even_when_unchanged() -> None:
    store = FakeDirectoryStore()
    presence = service(store)

    async def scenario() -> None:
        await presence.reload_if_changed()
        await presence.reload()
        await presence.reload()
        assert store.reads == 3
        assert await presence.reload_if_changed() is False

    asyncio.run(scenario())


def test_failed_reload_keeps_the_snapshot_and_the_next_poll_retries() -> None:
    store = FakeDirectoryStore()
    store.change(aor("alice"), aor("bob"))
    presence = service(store)

    async def scenario() -> None:
        await presence.reload_if_changed()
        before = presence.directory
        store.change(aor("alice"), aor("carol"))
        store.fail = True
        with pytest.raises(StoreError):
            await presence.reload_if_changed()
        assert presence.directory is before
        store.fail = False
        assert await presence.reload_if_changed() is True
        assert presence.directory.contacts_of(aor("alice")) == (aor("bob"), aor("carol"))

    asyncio.run(scenario())


def test_without_a_counter_every_poll_reloads() -> None:
    store = FakeDirectoryStore()
    presence = service(store, with_counter=False)

    async def scenario() -> None:
        for _ in range(3):
            assert await presence.reload_if_changed() is True

    asyncio.run(scenario())
    assert store.reads == 3


def test_run_reload_polls_the_counter_not_the_tables() -> None:
    store = FakeDirectoryStore()
    presence = service(store)

    async def polls(count: int) -> None:
        target = store.counter_reads + count
        while store.counter_reads < target:
            await asyncio.sleep(0.001)

    async def scenario() -> None:
        task = asyncio.create_task(presence.run_reload(interval=0.001))
        try:
            await asyncio.wait_for(polls(20), 10)
            assert store.reads == 1
            store.change(aor("alice"), aor("bob"))
            await asyncio.wait_for(polls(3), 10)
            assert store.reads == 2
            store.fail = True  # a failed poll is logged and retried, the task lives on
            store.change(aor("alice"), aor("carol"))
            await asyncio.wait_for(polls(3), 10)
            assert store.reads > 2 and not task.done()
            store.fail = False
            await asyncio.wait_for(polls(3), 10)
            assert presence.directory.contacts_of(aor("alice")) == (aor("bob"), aor("carol"))
            reads = store.reads
            await asyncio.wait_for(polls(10), 10)
            assert store.reads == reads
        finally:
            task.cancel()

    asyncio.run(scenario())


def test_with_the_store_as_the_server_wires_it(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'conclave.db'}"
    migrate(url)

    async def scenario() -> None:
        async with Database(url) as db:
            for name in ("alice", "bob"):
                await UserStore(db).add(name, DOMAIN, "pw-123456789")
            reads: list[int] = []

            async def load() -> Directory:
                reads.append(1)
                return await read_directory(db, DOMAIN)

            presence = PresenceService(
                stack=FakeStack(),
                local=LocalEndpoint(host=HOST, domain=DOMAIN, ports={"tls": 5061}),
                settings=PresenceSettings(merge_window=0.0),
                user_exists=lambda name: True,
                load=load,
                generation=lambda: GenerationStore(db).get(DIRECTORY),
            )
            assert await presence.reload_if_changed() is True
            assert await presence.reload_if_changed() is False
            await ContactStore(db).add(aor("alice"), aor("bob"))
            assert await presence.reload_if_changed() is True
            assert presence.directory.contacts_of(aor("alice")) == (
                aor(
                    "bob",
                ),
            )
            await PrivacyStore(db).set(aor("alice"), aor("bob"), "blocked")
            assert await presence.reload_if_changed() is True
            await UserStore(db).add("carol", DOMAIN, "pw-123456789")  # users only
            assert await presence.reload_if_changed() is False
            await UserStore(db).remove("alice", DOMAIN)  # her list goes with her
            assert await presence.reload_if_changed() is True
            assert presence.directory.contacts == {}
            assert len(reads) == 4

    asyncio.run(scenario())
