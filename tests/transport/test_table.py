"""ConnectionTable bookkeeping, without sockets."""

from __future__ import annotations

import asyncio

from conclave.transport import Flow, TransportManager
from conclave.transport.guard import source_key
from conclave.transport.stream import StreamConnection
from conclave.transport.table import ConnectionTable

SERVER = ("192.0.2.10", 5061)


def make(
    manager: TransportManager,
    conn_id: int,
    remote: tuple[str, int],
    *,
    outbound: bool = False,
    hostname: str | None = None,
) -> StreamConnection:
    flow = Flow("tls", remote, ("192.0.2.1", 40000 + conn_id), conn_id)
    conn = StreamConnection(manager, "tls", flow=flow, server_hostname=hostname)
    conn.outbound = outbound
    conn.established = True
    return conn


def test_table_indexes() -> None:
    async def main() -> None:
        manager = TransportManager(on_message=lambda *_: None)
        table = ConnectionTable()
        inbound = make(manager, 1, SERVER)
        verified = make(manager, 2, SERVER, outbound=True, hostname="sip.example.test")
        other = make(manager, 3, ("::ffff:192.0.2.20", 5060))
        v6a = make(manager, 4, ("2001:db8:0:1::a", 5060))
        v6b = make(manager, 5, ("2001:db8:0:1::b", 5060))
        for conn in (inbound, verified, other, v6a, v6b):
            table.add(conn)
        assert len(table) == 5 and 2 in table
        assert table.inbound_from("192.0.2.10") == 1  # outbound ones do not count
        assert table.inbound_from("192.0.2.20") == 1  # IPv4-mapped counts as IPv4
        assert table.inbound_from(source_key("2001:db8:0:1::c")) == 2  # one /64, one source

        assert table.find("tls", SERVER, None) is verified  # newest first
        assert table.find("tls", SERVER, "sip.example.test") is verified
        assert table.find("tls", SERVER, "other.example.test") is None
        assert table.find("tcp", SERVER, None) is None
        assert inbound.flow is not None and table.live(inbound.flow) is inbound

        table.touch(1, 10.0)
        table.touch(2, 20.0)
        table.touch(3, 30.0)
        table.touch(1, 40.0)  # now the newest
        assert table.idle_since(25.0) == [verified]
        assert table.idle_since(35.0) == [verified, other]

        assert table.remove(verified) and not table.remove(verified)
        assert table.find("tls", SERVER, "sip.example.test") is None
        assert table.find("tls", SERVER, None) is inbound
        table.remove(inbound)
        table.remove(other)
        table.remove(v6a)
        table.remove(v6b)
        assert len(table) == 0 and table.inbound_from("192.0.2.10") == 0
        assert table.idle_since(100.0) == []

    asyncio.run(main())


def test_sources_are_counted_as_the_guard_keys_them() -> None:
    # One IPv6 host owns its whole /64: counting each address apart would let
    # it open max_connections_per_ip connections from every one of them.
    assert source_key("::ffff:192.0.2.1") == "192.0.2.1"
    assert source_key("2001:db8::1") == source_key("2001:db8::2") == "2001:db8::/64"
    assert source_key("192.0.2.1") == "192.0.2.1"
