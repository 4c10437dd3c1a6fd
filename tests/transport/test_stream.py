"""TCP: framing, keep-alive pongs, framing errors, closing, and connection reuse."""

from __future__ import annotations

import asyncio

import pytest

from conclave.transport import Flow, TransportError, TransportManager

from .conftest import WAIT, Inbox, Runner


def message(n: int, body: bytes = b"") -> bytes:
    return (
        f"MESSAGE sip:u@example.test SIP/2.0\r\nCSeq: {n} MESSAGE\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body


async def open_client(
    address: tuple[str, int],
) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    return await asyncio.wait_for(asyncio.open_connection(*address), WAIT)


async def read_eof(reader: asyncio.StreamReader) -> bytes:
    """What the server sent before closing (a reset counts as closing)."""
    try:
        return await asyncio.wait_for(reader.read(), WAIT)
    except ConnectionResetError:
        return b""


def test_framing_split_and_coalesced(run: Runner[None]) -> None:
    async def main() -> None:
        inbox = Inbox()
        manager = TransportManager(on_message=inbox.on_message, on_closed=inbox.on_closed)
        server = await manager.listen("tcp", "127.0.0.1", 0)
        reader, writer = await open_client(server)
        try:
            first = message(1, b"hello\r\n\r\nworld")  # CRLFCRLF inside a body is body
            writer.write(first[:20])
            await writer.drain()
            writer.write(first[20:-3])
            await writer.drain()
            writer.write(first[-3:] + message(2) + message(3, b"x"))
            data, flow = await inbox.message()
            assert data == first
            assert flow.transport == "tcp" and flow.reliable and not flow.secure
            assert flow.remote == writer.get_extra_info("sockname")[:2]
            assert flow.local == server and flow.conn_id != 0
            assert await inbox.message() == (message(2), flow)
            assert await inbox.message() == (message(3, b"x"), flow)
            assert manager.connection_count == 1 and manager.is_open(flow)
            assert manager.send(flow, b"SIP/2.0 200 OK\r\nContent-Length: 0\r\n\r\n")
            line = await asyncio.wait_for(reader.readline(), WAIT)
            assert line == b"SIP/2.0 200 OK\r\n"
            # The same connection under another id, or another transport, is not this flow.
            assert not manager.send(Flow("tcp", flow.remote, flow.local, flow.conn_id + 1), b"x")
            assert not manager.send(Flow("tls", flow.remote, flow.local, flow.conn_id), b"x")
            assert manager.send(Flow.from_token(flow.token()), b"\r\n")
        finally:
            writer.close()
        assert await inbox.closure() == flow  # the peer closed
        assert not manager.is_open(flow)
        assert not manager.send(flow, b"late")
        assert manager.connection_count == 0
        await manager.close()

    run(main())


def test_keepalive_ping_is_answered(run: Runner[None]) -> None:
    async def main() -> None:
        inbox = Inbox()
        manager = TransportManager(on_message=inbox.on_message)
        server = await manager.listen("tcp", "127.0.0.1", 0)
        reader, writer = await open_client(server)
        try:
            writer.write(b"\r\n\r\n")
            assert await asyncio.wait_for(reader.readexactly(2), WAIT) == b"\r\n"
            writer.write(b"\r\n")  # a ping split across writes
            await writer.drain()
            writer.write(b"\r\n" + message(1))
            assert await asyncio.wait_for(reader.readexactly(2), WAIT) == b"\r\n"
            assert (await inbox.message())[0] == message(1)
        finally:
            writer.close()
            await manager.close()

    run(main())


def test_framing_error_closes_the_connection(run: Runner[None]) -> None:
    async def main() -> None:
        inbox = Inbox()
        manager = TransportManager(on_message=inbox.on_message, on_closed=inbox.on_closed)
        server = await manager.listen("tcp", "127.0.0.1", 0)
        reader, writer = await open_client(server)
        try:
            # A good message, then one without Content-Length (mandatory on streams).
            writer.write(message(1) + b"OPTIONS sip:x SIP/2.0\r\nCSeq: 2 OPTIONS\r\n\r\n")
            data, flow = await inbox.message()
            assert data == message(1)
            assert await inbox.closure() == flow
            assert await read_eof(reader) == b""
            assert manager.connection_count == 0
            assert not manager.is_open(flow)
        finally:
            writer.close()
            await manager.close()

    run(main())


def test_on_message_errors_do_not_break_the_connection(run: Runner[None]) -> None:
    async def main() -> None:
        inbox = Inbox()

        def on_message(data: bytes, flow: Flow, queued: float = 0.0) -> None:
            inbox.on_message(data, flow)
            if data == message(1):
                raise RuntimeError("handler bug")

        manager = TransportManager(on_message=on_message)
        server = await manager.listen("tcp", "127.0.0.1", 0)
        _, writer = await open_client(server)
        try:
            writer.write(message(1) + message(2))
            assert (await inbox.message())[0] == message(1)
            assert (await inbox.message())[0] == message(2)
        finally:
            writer.close()
            await manager.close()

    run(main())


def test_connect_reuses_connections(run: Runner[None]) -> None:
    async def main() -> None:
        server_inbox, client_inbox = Inbox(), Inbox()
        server = TransportManager(
            on_message=server_inbox.on_message, on_closed=server_inbox.on_closed
        )
        client = TransportManager(
            on_message=client_inbox.on_message, on_closed=client_inbox.on_closed
        )
        address = await server.listen("tcp", "127.0.0.1", 0)
        try:
            assert client.find_connection("tcp", address) is None
            flows = await asyncio.gather(*(client.connect("tcp", address) for _ in range(3)))
            assert len(set(flows)) == 1 and client.connection_count == 1
            flow = flows[0]
            assert flow.remote == address
            assert await client.connect("tcp", address) == flow
            assert client.find_connection("tcp", address) == flow
            assert client.find_connection("tls", address) is None

            assert client.send(flow, message(1))
            data, inbound = await server_inbox.message()
            assert data == message(1) and inbound.remote == flow.local
            # The server reuses the inbound connection to reach the client.
            assert await server.connect("tcp", inbound.remote) == inbound
            assert server.send(inbound, message(2))
            assert await client_inbox.message() == (message(2), flow)

            assert client.close_connection(flow)
            assert not client.close_connection(flow)
            assert await client_inbox.closure() == flow
            assert await server_inbox.closure() == inbound
            second = await client.connect("tcp", address)
            assert second != flow and second.conn_id != flow.conn_id
        finally:
            await client.close()
            await server.close()

    run(main())


def test_connect_failures(run: Runner[None]) -> None:
    async def main() -> None:
        manager = TransportManager(on_message=lambda data, flow: None)
        # Find a port with nothing listening on it.
        probe = await asyncio.get_running_loop().create_server(asyncio.Protocol, "127.0.0.1", 0)
        port = probe.sockets[0].getsockname()[1]
        probe.close()
        await probe.wait_closed()
        try:
            with pytest.raises(TransportError, match="cannot connect"):
                await manager.connect("tcp", ("127.0.0.1", port))
            with pytest.raises(TransportError, match="tcp or tls"):
                await manager.connect("udp", ("127.0.0.1", port))
            with pytest.raises(TransportError, match="client_ssl"):
                await manager.connect("tls", ("127.0.0.1", port))
            with pytest.raises(TransportError, match="not an IP address"):
                await manager.connect("tcp", ("localhost", port))
            assert manager.connection_count == 0
        finally:
            await manager.close()

    run(main())


def test_stop_listening_keeps_connections(run: Runner[None]) -> None:
    async def main() -> None:
        inbox = Inbox()
        manager = TransportManager(on_message=inbox.on_message, on_closed=inbox.on_closed)
        server = await manager.listen("tcp", "127.0.0.1", 0)
        udp = await manager.listen("udp", "127.0.0.1", 0)
        reader, writer = await open_client(server)
        try:
            writer.write(message(1))
            _, flow = await inbox.message()
            await manager.stop_listening()
            assert manager.listeners == []
            with pytest.raises(OSError):
                await asyncio.wait_for(asyncio.open_connection(*server), WAIT)
            assert not manager.is_open(Flow("udp", ("127.0.0.1", 9), udp))
            # The established connection still works both ways.
            writer.write(message(2))
            assert await inbox.message() == (message(2), flow)
            assert manager.send(flow, b"\r\n")
            assert await asyncio.wait_for(reader.readexactly(2), WAIT) == b"\r\n"
            await manager.close()
            assert await inbox.closure() == flow
            assert await read_eof(reader) == b""
            assert manager.connection_count == 0
        finally:
            writer.close()
            await manager.close()

    run(main())


class CountingTransport:
    """Wraps a transport and records each write (uvloop's are read-only)."""

    def __init__(self, inner: object) -> None:
        self.inner = inner
        self.writes: list[bytes] = []

    def write(self, data: bytes) -> None:
        self.writes.append(bytes(data))
        self.inner.write(data)  # type: ignore[attr-defined]

    def __getattr__(self, name: str) -> object:
        return getattr(self.inner, name)


def test_answers_to_a_burst_leave_in_one_write(run: Runner[None]) -> None:
    """Replies sent while a connection's input is processed are corked into one write."""

    async def main() -> None:
        manager: TransportManager
        answered: list[bytes] = []

        def on_message(data: bytes, flow: Flow, queued: float = 0.0) -> None:
            seq = data.split(b"CSeq: ", 1)[1].split(b" ", 1)[0]
            reply = b"SIP/2.0 200 OK\r\nCSeq: " + seq + b" MESSAGE\r\nContent-Length: 0\r\n\r\n"
            answered.append(reply)
            assert manager.send(flow, reply)

        manager = TransportManager(on_message=on_message, on_closed=lambda flow: None)
        server = await manager.listen("tcp", "127.0.0.1", 0)
        reader, writer = await open_client(server)
        try:
            writer.write(message(1))  # establishes the connection on the server side
            await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), WAIT)
            (conn,) = manager._table.connections()
            counting = CountingTransport(conn.transport)
            conn.transport = counting  # type: ignore[assignment]
            writer.write(message(2) + message(3) + message(4))
            got = b""
            while len(answered) < 4 or len(got) < len(b"".join(answered[1:])):
                got += await asyncio.wait_for(reader.read(4096), WAIT)
            expected = b"".join(answered[1:])
            assert got == expected  # all three, in order
            writes = counting.writes
            assert len(writes) <= 2  # one per received chunk, not one per reply
            assert b"".join(writes) == expected
            # A write from outside the connection's own input goes straight out.
            assert manager.send(conn.flow, b"\r\n\r\n")  # type: ignore[arg-type]
            assert writes[-1] == b"\r\n\r\n"
        finally:
            writer.close()
        await manager.close()

    run(main())


def test_message_over_max_message_size_closes_the_connection(run: Runner[None]) -> None:
    async def main() -> None:
        inbox = Inbox()
        limit = len(message(1, b"x" * 100))
        manager = TransportManager(
            on_message=inbox.on_message, on_closed=inbox.on_closed, max_message_size=limit
        )
        server = await manager.listen("tcp", "127.0.0.1", 0)
        reader, writer = await open_client(server)
        try:
            writer.write(message(1, b"x" * 100))  # exactly the limit: delivered
            data, flow = await inbox.message()
            assert len(data) == limit
            # One octet more, judged from Content-Length before the body is sent.
            writer.write(message(2, b"x" * 101)[:-101])
            assert await inbox.closure() == flow
            assert await read_eof(reader) == b""
            assert inbox.messages.empty()
        finally:
            writer.close()
            await manager.close()

    run(main())
