"""UDP: datagrams in, replies out through send(), banned sources dropped."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest
import structlog.testing

from conclave.transport import Flow, SourceGuard, TransportError, TransportManager

from .conftest import WAIT, Inbox, Runner

OPTIONS = b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nContent-Length: 0\r\n\r\n"


class Client(asyncio.DatagramProtocol):
    """A UDP peer whose received datagrams land in a queue."""

    def __init__(self) -> None:
        self.received: asyncio.Queue[tuple[bytes, tuple[str, int]]] = asyncio.Queue()

    def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
        self.received.put_nowait((data, addr))


async def udp_client(host: str = "127.0.0.1") -> tuple[asyncio.DatagramTransport, Client]:
    loop = asyncio.get_running_loop()
    return await loop.create_datagram_endpoint(Client, local_addr=(host, 0))


def test_round_trip(run: Runner[None]) -> None:
    async def main() -> None:
        inbox = Inbox()
        manager = TransportManager(on_message=inbox.on_message)
        server = await manager.listen("udp", "127.0.0.1", 0)
        assert server[1] != 0
        assert manager.listeners == [("udp", "127.0.0.1", server[1])]
        transport, client = await udp_client()
        client_addr = transport.get_extra_info("sockname")[:2]
        try:
            transport.sendto(OPTIONS, server)
            data, flow = await inbox.message()
            assert data == OPTIONS
            assert flow == Flow("udp", client_addr, server)
            assert not flow.reliable and manager.is_open(flow)
            assert manager.send(flow, b"SIP/2.0 200 OK\r\n\r\n")
            reply, source = await asyncio.wait_for(client.received.get(), WAIT)
            assert reply == b"SIP/2.0 200 OK\r\n\r\n"
            assert source == server
            # A flow rebuilt from its token works just the same.
            assert manager.send(Flow.from_token(flow.token()), b"again")
            assert (await asyncio.wait_for(client.received.get(), WAIT))[0] == b"again"
            # No socket bound at that local address: cannot send.
            assert not manager.send(Flow("udp", client_addr, ("127.0.0.1", 9)), b"x")
        finally:
            transport.close()
            await manager.close()
        assert not manager.is_open(flow)
        assert not manager.send(flow, b"late")
        assert manager.listeners == []

    run(main())


def test_crlf_keepalive_datagrams_are_not_messages(run: Runner[None]) -> None:
    async def main() -> None:
        inbox = Inbox()
        manager = TransportManager(on_message=inbox.on_message)
        server = await manager.listen("udp", "127.0.0.1", 0)
        transport, _ = await udp_client()
        try:
            transport.sendto(b"\r\n\r\n", server)
            transport.sendto(OPTIONS, server)  # same socket: arrives after the ping
            data, _flow = await inbox.message()
            assert data == OPTIONS
        finally:
            transport.close()
            await manager.close()

    run(main())


def test_banned_source_is_dropped(run: Runner[None]) -> None:
    async def main() -> None:
        inbox = Inbox()
        guard = SourceGuard(rate=1, burst=1, ban_seconds=600)
        now = time.time()  # the default guard clock, as the SIP stack uses
        manager = TransportManager(on_message=inbox.on_message, guard=guard)
        server = await manager.listen("udp", "127.0.0.1", 0)
        banned, _ = await udp_client("127.0.0.1")
        other, _ = await udp_client("127.0.0.2")  # all of 127/8 is loopback on Linux
        try:
            banned.sendto(b"before ban", server)
            assert (await inbox.message())[0] == b"before ban"
            while not guard.is_banned("127.0.0.1", now):  # a flood from loopback
                guard.allow("127.0.0.1", now)
            banned.sendto(b"while banned", server)
            # Loopback delivers in order of sending, so once this one is in,
            # the banned datagram would have been too.
            other.sendto(b"from elsewhere", server)
            data, flow = await inbox.message()
            assert data == b"from elsewhere" and flow.remote[0] == "127.0.0.2"
            assert inbox.messages.empty()
        finally:
            banned.close()
            other.close()
            await manager.close()

    run(main())


def test_listen_errors(run: Runner[None]) -> None:
    async def main() -> None:
        manager = TransportManager(on_message=lambda *_: None)
        taken = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        taken.bind(("127.0.0.1", 0))
        try:
            port = taken.getsockname()[1]
            with pytest.raises(TransportError, match="cannot listen on udp"):
                await manager.listen("udp", "127.0.0.1", port)
            with pytest.raises(TransportError, match="unknown transport"):
                await manager.listen("sctp", "127.0.0.1", 0)
            with pytest.raises(TransportError, match="server_ssl"):
                await manager.listen("tls", "127.0.0.1", 0)
        finally:
            taken.close()
            await manager.close()
        with pytest.raises(TransportError, match="closed"):
            await manager.listen("udp", "127.0.0.1", 0)

    run(main())


def padded(size: int) -> bytes:
    """An OPTIONS datagram of exactly ``size`` octets (the body pads it)."""
    head = b"OPTIONS sip:a@127.0.0.1 SIP/2.0\r\nContent-Length: %05d\r\n\r\n"
    body_len = size - len(head % 0)
    return head % body_len + b"x" * body_len


def test_datagram_over_max_message_size_is_dropped_counted_and_logged(run: Runner[None]) -> None:
    async def main() -> None:
        inbox = Inbox()
        manager = TransportManager(on_message=inbox.on_message, max_message_size=1024)
        server = await manager.listen("udp", "127.0.0.1", 0)
        transport, _ = await udp_client()
        try:
            with structlog.testing.capture_logs() as logs:
                for _ in range(3):
                    transport.sendto(padded(1025), server)
                transport.sendto(padded(1024), server)  # in order on loopback
                data, _flow = await inbox.message()
            assert len(data) == 1024
            assert inbox.messages.empty()
            assert manager.oversized_datagrams == 3
            warnings = [e for e in logs if e["event"] == "oversized datagram dropped"]
            # One line, not one per datagram: a flood must not become a log flood.
            assert len(warnings) == 1
            assert warnings[0]["size"] == 1025 and warnings[0]["limit"] == 1024
            assert warnings[0]["log_level"] == "warning"
        finally:
            transport.close()
            await manager.close()

    run(main())


@pytest.mark.parametrize("size", [0, 64 * 1024 + 1])
def test_max_message_size_is_bounded_by_the_hard_limit(size: int) -> None:
    with pytest.raises(ValueError, match="max_message_size"):
        TransportManager(on_message=lambda *_: None, max_message_size=size)


def test_each_datagram_says_how_long_it_waited_in_the_kernel(run: Runner[None]) -> None:
    # Overload control judges the queue where it forms: the receive buffer.
    async def main() -> None:
        inbox = Inbox()
        manager = TransportManager(on_message=inbox.on_message)
        server = await manager.listen("udp", "127.0.0.1", 0)
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sender.sendto(OPTIONS, server)
            time.sleep(0.2)  # the event loop is busy: the datagram waits unread
            await inbox.message()
            assert inbox.queued[-1] >= 0.15
        finally:
            sender.close()
            await manager.close()

    run(main())
