"""ConnectionTable bookkeeping, without sockets."""

from __future__ import annotations

import asyncio

from conclave.transport import Flow, TransportManager
from conclave.transport.stream import StreamConnection
from conclave.transport.table import ConnectionTable, source_ip

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
        manager = TransportManager(on_message=lambda data, flow: None)
        table = ConnectionTable()
        inbound = make(manager, 1, SERVER)
        verified = make(manager, 2, SERVER, outbound=True, hostname="sip.example.test")
        other = make(manager, 3, ("::ffff:192.0.2.20", 5060))
        for conn in (inbound, verified, other):
            table.add(conn)
        assert len(table) == 3 and 2 in table
        assert table.inbound_from("192.0.2.10") == 1  # outbound ones do not count
        assert table.inbound_from("192.0.2.20") == 1  # IPv4-mapped counts as IPv4

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
        assert len(table) == 0 and table.inbound_from("192.0.2.10") == 0
        assert table.idle_since(100.0) == []

    asyncio.run(main())


def test_source_ip() -> None:
    assert source_ip("::ffff:192.0.2.1") == "192.0.2.1"
    assert source_ip("::ffff:c000:201") == "::ffff:c000:201"
    assert source_ip("2001:db8::1") == "2001:db8::1"
    assert source_ip("192.0.2.1") == "192.0.2.1"
