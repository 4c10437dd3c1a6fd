"""The location service: bindings in memory, flows, listeners, write-behind persistence."""

from __future__ import annotations

import asyncio
import dataclasses
import datetime as dt
from collections.abc import Mapping, Sequence
from pathlib import Path

import pytest

from conclave.services.location import (
    Contact,
    ContactUpdate,
    LocationService,
    MemoryLocationService,
    OutOfOrder,
    RegisterChange,
    TooManyBindings,
)
from conclave.sip.flow import Flow
from conclave.sip.uri import SipURI, parse_uri
from conclave.store import Binding, Database, RegistrationStore, StoreError, migrate

NOW = 1_772_366_400.0  # 2026-03-01 12:00:00 UTC
ALICE = "sip:alice@example.test"
BOB = "sip:bob@example.test"
UDP = Flow("udp", ("192.0.2.10", 5060), ("198.51.100.1", 5060))
TCP = Flow("tcp", ("192.0.2.20", 40000), ("198.51.100.1", 5060), conn_id=3)
TLS = Flow("tls", ("2001:db8::20", 40001), ("2001:db8::1", 5061), conn_id=4)
INSTANCE = "<urn:uuid:00000000-0000-1000-8000-000A95A0E128>"


def update(uri: str, expires: int = 3600, **extra: object) -> ContactUpdate:
    parsed = parse_uri(uri)
    assert isinstance(parsed, SipURI)
    return ContactUpdate(parsed, f"<{uri}>", expires, **extra)  # type: ignore[arg-type]


def change(
    *updates: ContactUpdate, flow: Flow = UDP, call_id: str = "c1", cseq: int = 1, **extra: object
) -> RegisterChange:
    return RegisterChange(call_id, cseq, flow, updates, **extra)  # type: ignore[arg-type]


def uris(contacts: Sequence[Contact]) -> list[str]:
    return [str(c.uri) for c in contacts]


# --- canonical AORs -----------------------------------------------------------------


# --- bindings -------------------------------------------------------------------------


def test_memory_service_satisfies_the_protocol() -> None:
    service: LocationService = MemoryLocationService()
    assert service.count() == 0


def test_apply_lookup_and_bindings_order() -> None:
    service = MemoryLocationService()
    service.apply(ALICE, change(update("sip:a@192.0.2.1", q=0.5)), NOW)
    service.apply(ALICE, change(update("sip:a@192.0.2.2", q=0.5), call_id="c2"), NOW + 1)
    result = service.apply(ALICE, change(update("sip:a@192.0.2.3"), call_id="c3"), NOW + 2)
    assert uris(result) == ["sip:a@192.0.2.1", "sip:a@192.0.2.2", "sip:a@192.0.2.3"]
    assert uris(service.bindings(ALICE, NOW + 3)) == uris(result)
    assert uris(service.lookup(ALICE, NOW + 3)) == [
        "sip:a@192.0.2.3",
        "sip:a@192.0.2.2",
        "sip:a@192.0.2.1",
    ]
    assert service.lookup(BOB, NOW) == []
    assert service.count() == 3


def test_binding_fields() -> None:
    service = MemoryLocationService()
    [contact] = service.apply(
        ALICE,
        change(
            update("sip:a@[2001:db8::20]:40001;transport=tls", 600, instance_id=INSTANCE, reg_id=2),
            flow=TLS,
            path=("<sip:edge.example.test;lr>",),
            user_agent="Client/1.0",
        ),
        NOW,
    )
    assert contact.aor == ALICE and contact.expires_at == NOW + 600
    assert (contact.transport, contact.remote_addr) == ("tls", "[2001:db8::20]:40001")
    assert contact.flow == TLS and contact.reachable
    assert (contact.instance_id, contact.reg_id) == (INSTANCE, 2)
    assert contact.path == ("<sip:edge.example.test;lr>",)
    assert contact.expires_in(NOW + 100) == 500 and contact.expires_in(NOW + 600) == 0


def test_out_of_order_changes_nothing() -> None:
    service = MemoryLocationService()
    service.apply(ALICE, change(update("sip:a@192.0.2.1"), cseq=5), NOW)
    with pytest.raises(OutOfOrder):
        service.apply(
            ALICE, change(update("sip:a@192.0.2.2"), update("sip:a@192.0.2.1"), cseq=5), NOW
        )
    assert uris(service.bindings(ALICE, NOW)) == ["sip:a@192.0.2.1"]


def test_max_contacts_counts_unexpired_bindings_only() -> None:
    service = MemoryLocationService()
    service.apply(ALICE, change(update("sip:a@192.0.2.1", 60)), NOW)
    service.apply(ALICE, change(update("sip:a@192.0.2.2"), call_id="c2"), NOW)
    with pytest.raises(TooManyBindings):
        service.apply(ALICE, change(update("sip:a@192.0.2.3"), call_id="c3"), NOW, max_contacts=2)
    # Once the first has expired there is room again.
    result = service.apply(
        ALICE, change(update("sip:a@192.0.2.3"), call_id="c3"), NOW + 60, max_contacts=2
    )
    assert uris(result) == ["sip:a@192.0.2.2", "sip:a@192.0.2.3"]
    assert service.count() == 2


def test_remove_flow_removes_its_bindings_everywhere() -> None:
    service = MemoryLocationService()
    service.apply(ALICE, change(update("sip:a@192.0.2.20;transport=tcp"), flow=TCP), NOW)
    service.apply(ALICE, change(update("sip:a@192.0.2.10"), call_id="c2"), NOW)
    service.apply(BOB, change(update("sip:b@192.0.2.20;transport=tcp"), flow=TCP), NOW)
    assert service.remove_flow(TCP) == 2
    assert uris(service.bindings(ALICE, NOW)) == ["sip:a@192.0.2.10"]
    assert service.bindings(BOB, NOW) == []
    assert service.count() == 1
    assert service.remove_flow(TCP) == 0
    # A new connection from the same address is a different flow.
    assert service.remove_flow(dataclasses.replace(UDP, conn_id=0)) == 1


def test_refresh_over_a_new_flow_moves_the_binding() -> None:
    service = MemoryLocationService()
    service.apply(ALICE, change(update("sip:a@192.0.2.20;transport=tcp"), flow=TCP), NOW)
    new = dataclasses.replace(TCP, conn_id=9)
    service.apply(ALICE, change(update("sip:a@192.0.2.20;transport=tcp"), flow=new, cseq=2), NOW)
    assert service.remove_flow(TCP) == 0
    assert service.remove_flow(new) == 1


def test_purge_expired() -> None:
    service = MemoryLocationService()
    service.apply(ALICE, change(update("sip:a@192.0.2.1", 60), update("sip:a@192.0.2.2", 120)), NOW)
    service.apply(BOB, change(update("sip:b@192.0.2.3", 60)), NOW)
    assert service.purge_expired(NOW + 59) == 0
    assert service.purge_expired(NOW + 60) == 2
    assert service.count() == 1
    assert service.aors() == [ALICE]
    assert service.purge_expired(NOW + 120) == 1
    assert (service.count(), service.aors()) == (0, [])


def test_listeners_on_add_and_refresh_not_on_removal() -> None:
    service = MemoryLocationService()
    seen: list[tuple[str, str, int]] = []

    def on_registered(aor: str, contact: Contact) -> None:
        seen.append((aor, str(contact.uri), contact.cseq))

    def broken(aor: str, contact: Contact) -> None:
        raise RuntimeError("listener bug")

    service.add_listener(broken)
    service.add_listener(on_registered)
    service.apply(ALICE, change(update("sip:a@192.0.2.1"), update("sip:a@192.0.2.2")), NOW)
    service.apply(ALICE, change(update("sip:a@192.0.2.1"), cseq=2), NOW)
    service.apply(ALICE, change(update("sip:a@192.0.2.1", 0), cseq=3), NOW)
    service.apply(ALICE, change(remove_all=True, cseq=4), NOW)
    assert seen == [
        (ALICE, "sip:a@192.0.2.1", 1),
        (ALICE, "sip:a@192.0.2.2", 1),
        (ALICE, "sip:a@192.0.2.1", 2),
    ]
    service.remove_listener(on_registered)
    service.remove_listener(on_registered)  # absent: no error
    service.apply(ALICE, change(update("sip:a@192.0.2.1"), cseq=5), NOW)
    assert len(seen) == 3


# --- conversion to and from the store ----------------------------------------------------


def test_contact_binding_round_trip() -> None:
    service = MemoryLocationService()
    [udp] = service.apply(
        ALICE,
        change(
            update("sip:a@192.0.2.10;ob", q=0.5, instance_id=INSTANCE, reg_id=1),
            path=("<sip:e1.example.test;lr>", '<sip:e2.example.test;lr;x="a,b">'),
            user_agent="U" * 300,
        ),
        NOW,
    )
    binding = udp.to_binding()
    assert binding.contact == "sip:a@192.0.2.10;ob"
    assert binding.expires_at == dt.datetime(2026, 3, 1, 13, 0, 0, tzinfo=dt.UTC)
    assert (binding.transport, binding.remote_addr) == ("udp", "192.0.2.10:5060")
    assert binding.connection_id == UDP.token()
    assert binding.user_agent == "U" * 255
    back = Contact.from_binding(binding)
    assert back == dataclasses.replace(
        udp,
        contact=f'<sip:a@192.0.2.10;ob>;+sip.instance="{INSTANCE}";reg-id=1',
        user_agent="U" * 255,
    )


@pytest.mark.parametrize(
    ("transport", "token", "reachable"),
    [
        ("udp", UDP.token(), True),
        ("udp", None, False),  # no token: the local socket is unknown
        ("udp", "not a token", False),
        ("udp", TCP.token(), False),  # a stream token under "udp": refuse it
        ("tcp", TCP.token(), False),  # stream connections never survive a restart
        ("tls", TLS.token(), False),
    ],
)
def test_restored_flows(transport: str, token: str | None, reachable: bool) -> None:
    binding = Binding(
        aor=ALICE,
        contact="sip:a@192.0.2.10",
        expires_at=dt.datetime(2026, 3, 1, 13, tzinfo=dt.UTC),
        call_id="c1",
        cseq=1,
        transport=transport,
        remote_addr="192.0.2.10:5060",
        updated_at=dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC),
        connection_id=token,
    )
    contact = Contact.from_binding(binding)
    assert contact.reachable is reachable
    assert contact.flow == (UDP if reachable else None)
    assert contact.to_binding().connection_id == (token if reachable else None)


@pytest.mark.parametrize("stored", ["not a uri", "tel:+15551234"])
def test_unusable_stored_contact(stored: str) -> None:
    binding = dataclasses.replace(
        Contact.from_binding(
            Binding(
                aor=ALICE,
                contact="sip:a@192.0.2.10",
                expires_at=dt.datetime(2026, 3, 1, 13, tzinfo=dt.UTC),
                call_id="c1",
                cseq=1,
                transport="udp",
                remote_addr="192.0.2.10:5060",
                updated_at=dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC),
            )
        ).to_binding(),
        contact=stored,
    )
    with pytest.raises(ValueError):
        Contact.from_binding(binding)


# --- write-behind persistence ----------------------------------------------------------


class FakeStore:
    """Records what replace_many writes, one entry per AOR; can be told to fail."""

    def __init__(self) -> None:
        self.writes: list[tuple[str, list[str]]] = []
        self.fail = False

    async def replace_many(self, sets: Mapping[str, Sequence[Binding]]) -> None:
        if self.fail:
            raise StoreError("database is locked")
        self.writes.extend((aor, [b.contact for b in bindings]) for aor, bindings in sets.items())


def fake_service() -> tuple[MemoryLocationService, FakeStore]:
    store = FakeStore()
    return MemoryLocationService(store), store  # type: ignore[arg-type]


def test_flush_coalesces_changes_per_aor() -> None:
    service, store = fake_service()
    service.apply(ALICE, change(update("sip:a@192.0.2.1")), NOW)
    service.apply(ALICE, change(update("sip:a@192.0.2.2"), cseq=2), NOW)
    service.apply(ALICE, change(update("sip:a@192.0.2.1", 0), cseq=3), NOW)
    service.apply(BOB, change(update("sip:b@192.0.2.3", 0)), NOW)  # nothing bound: no change
    assert service.pending == 1
    assert asyncio.run(service.flush()) == 1
    assert store.writes == [(ALICE, ["sip:a@192.0.2.2"])]
    assert (service.pending, asyncio.run(service.flush())) == (0, 0)
    service.apply(ALICE, change(remove_all=True, cseq=4), NOW)
    asyncio.run(service.flush())
    assert store.writes[-1] == (ALICE, [])


def test_failed_flush_keeps_changes_queued() -> None:
    service, store = fake_service()
    service.apply(ALICE, change(update("sip:a@192.0.2.1")), NOW)
    service.apply(BOB, change(update("sip:b@192.0.2.2")), NOW)
    store.fail = True
    with pytest.raises(StoreError):
        asyncio.run(service.flush())
    assert service.pending == 2
    store.fail = False
    assert asyncio.run(service.flush()) == 2
    assert sorted(aor for aor, _ in store.writes) == [ALICE, BOB]


def test_run_persistence_flushes_periodically_and_survives_errors() -> None:
    service, store = fake_service()

    async def scenario() -> None:
        task = asyncio.create_task(service.run_persistence(interval=0.01))
        store.fail = True
        service.apply(ALICE, change(update("sip:a@192.0.2.1")), NOW)
        await asyncio.sleep(0.05)
        assert store.writes == [] and service.pending == 1
        store.fail = False
        for _ in range(100):
            await asyncio.sleep(0.01)
            if store.writes:
                break
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task

    asyncio.run(asyncio.wait_for(scenario(), 10))
    assert store.writes == [(ALICE, ["sip:a@192.0.2.1"])]


def test_without_a_store_nothing_is_queued() -> None:
    service = MemoryLocationService()
    service.apply(ALICE, change(update("sip:a@192.0.2.1")), NOW)
    assert service.pending == 0
    assert asyncio.run(service.flush()) == 0
    assert asyncio.run(service.load(NOW)) == 0


def test_persistence_round_trip_on_sqlite(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'conclave.db'}"
    migrate(url)

    async def scenario() -> None:
        async with Database(url) as db:
            store = RegistrationStore(db)
            first = MemoryLocationService(store)
            first.apply(ALICE, change(update("sip:a@192.0.2.10", q=0.7), user_agent="UA/1"), NOW)
            first.apply(
                ALICE,
                change(
                    update("sip:a@192.0.2.20;transport=tcp", instance_id=INSTANCE, reg_id=1),
                    flow=TCP,
                    call_id="c2",
                    path=("<sip:edge.example.test;lr>",),
                ),
                NOW,
            )
            first.apply(BOB, change(update("sip:b@192.0.2.30", 60)), NOW)
            first.apply(BOB, change(update("sip:b@192.0.2.31", 60), call_id="gone"), NOW)
            first.apply(BOB, change(update("sip:b@192.0.2.31", 0), call_id="gone", cseq=2), NOW)
            assert await first.flush() == 2

            # A restart, two minutes later: Bob's binding has expired meanwhile.
            later = NOW + 120
            second = MemoryLocationService(store)
            assert await second.load(later) == 2
            assert second.lookup(BOB, later) == []
            tcp, udp = second.lookup(ALICE, later)  # q 1 before q 0.7
            assert (str(udp.uri), udp.flow, udp.reachable, udp.q) == (
                "sip:a@192.0.2.10",
                UDP,
                True,
                0.7,
            )
            assert udp.user_agent == "UA/1" and udp.expires_at == NOW + 3600
            assert (str(tcp.uri), tcp.flow, tcp.reachable) == (
                "sip:a@192.0.2.20;transport=tcp",
                None,
                False,
            )
            assert (tcp.transport, tcp.remote_addr) == ("tcp", "192.0.2.20:40000")
            assert (tcp.instance_id, tcp.reg_id, tcp.call_id) == (INSTANCE, 1, "c2")
            assert tcp.path == ("<sip:edge.example.test;lr>",)
            # Loading queues nothing; the expired row was deleted from the store.
            assert second.pending == 0
            assert [b.aor for b in await store.load_all()] == [ALICE, ALICE]

            # The client re-registers over a new connection: reachable again,
            # and the store follows.
            new = dataclasses.replace(TCP, conn_id=1)
            second.apply(
                ALICE,
                change(
                    update("sip:a@192.0.2.20;transport=tcp", instance_id=INSTANCE, reg_id=1),
                    flow=new,
                    call_id="c2",
                    cseq=2,
                ),
                later,
            )
            assert second.lookup(ALICE, later)[0].flow == new
            await second.flush()
            stored = {b.contact: b for b in await store.load_for(ALICE)}
            assert stored["sip:a@192.0.2.20;transport=tcp"].connection_id == new.token()
            assert stored["sip:a@192.0.2.20;transport=tcp"].cseq == 2

    asyncio.run(asyncio.wait_for(scenario(), 30))
