"""Connection limits, bans at accept, the idle sweep, and slow readers."""

from __future__ import annotations

import asyncio
import socket
import time

import pytest

from conclave.pki import client_context, server_context
from conclave.transport import (
    SourceGuard,
    TransportError,
    TransportLimits,
    TransportManager,
    Verdict,
)

from .conftest import SERVER_NAME, WAIT, Inbox, Runner, TlsFiles
from .test_stream import message, open_client, read_eof


def test_per_ip_connection_limit(run: Runner[None]) -> None:
    async def main() -> None:
        inbox = Inbox()
        manager = TransportManager(
            on_message=inbox.on_message,
            on_closed=inbox.on_closed,
            limits=TransportLimits(max_connections_per_ip=2),
        )
        server = await manager.listen("tcp", "127.0.0.1", 0)
        clients = [await open_client(server) for _ in range(2)]
        try:
            for n, (_, writer) in enumerate(clients):
                writer.write(message(n))
                await inbox.message()  # admitted and working
            reader, writer = await open_client(server)  # the kernel accepts; we refuse
            clients.append((reader, writer))
            assert await read_eof(reader) == b""
            assert manager.connection_count == 2
            assert inbox.closed.empty()  # never admitted, so never reported closed
            # Another source is not affected by 127.0.0.1's count.
            other = socket.create_connection(server, timeout=WAIT, source_address=("127.0.0.2", 0))
            reader2, writer2 = await asyncio.open_connection(sock=other)
            clients.append((reader2, writer2))
            writer2.write(message(9))
            _, flow = await inbox.message()
            assert flow.remote[0] == "127.0.0.2"
            # A slot freed is a slot available again.
            clients[0][1].close()
            await inbox.closure()
            reader3, writer3 = await open_client(server)
            clients.append((reader3, writer3))
            writer3.write(message(3))
            assert (await inbox.message())[0] == message(3)
        finally:
            for _, client in clients:
                client.close()
            await manager.close()

    run(main())


def test_total_connection_limit(run: Runner[None]) -> None:
    async def main() -> None:
        inbox = Inbox()
        manager = TransportManager(
            on_message=inbox.on_message, limits=TransportLimits(max_connections=1)
        )
        server = await manager.listen("tcp", "127.0.0.1", 0)
        _, first = await open_client(server)
        try:
            first.write(message(1))
            await inbox.message()
            reader, second = await open_client(server)
            assert await read_eof(reader) == b""
            second.close()
            with pytest.raises(TransportError, match="connection limit"):
                await manager.connect("tcp", ("127.0.0.1", 9))
        finally:
            first.close()
            await manager.close()

    run(main())


def test_banned_source_refused_at_accept(run: Runner[None], tls_files: TlsFiles) -> None:
    async def main() -> None:
        inbox = Inbox()
        guard = SourceGuard(rate=5, burst=5, ban_seconds=600)
        clock = [1_000_000.0]  # the guard's clock, stepped by the test
        manager = TransportManager(
            on_message=inbox.on_message,
            on_closed=inbox.on_closed,
            server_ssl=server_context(tls_files.cert, tls_files.key),
            guard=guard,
            guard_clock=lambda: clock[0],
        )
        tcp = await manager.listen("tcp", "127.0.0.1", 0)
        tls = await manager.listen("tls", "127.0.0.1", 0)
        reader, writer = await open_client(tcp)  # admitted before the ban
        try:
            writer.write(message(1))
            _, flow = await inbox.message()
            verdicts = [guard.allow("127.0.0.1", clock[0]) for _ in range(6)]
            assert verdicts[-1] is Verdict.BANNED_NOW
            # New connections are closed before anything is read (no TLS handshake).
            for address in (tcp, tls):
                banned_reader, banned_writer = await open_client(address)
                assert await read_eof(banned_reader) == b""
                banned_writer.close()
            with pytest.raises((ConnectionError, OSError)):
                await asyncio.wait_for(
                    asyncio.open_connection(
                        *tls, ssl=client_context(tls_files.ca_cert), server_hostname=SERVER_NAME
                    ),
                    WAIT,
                )
            # The connection that was already open is closed when it next sends.
            writer.write(message(2))
            assert await inbox.closure() == flow
            assert await read_eof(reader) == b""
            assert manager.connection_count == 0
            assert inbox.messages.empty()
            # Once the ban has expired, the source is welcome again.
            clock[0] += 600
            _, writer = await open_client(tcp)
            writer.write(message(3))
            assert (await inbox.message())[0] == message(3)
        finally:
            writer.close()
            await manager.close()

    run(main())


def test_idle_sweep_closes_silent_connections(run: Runner[None]) -> None:
    async def main() -> None:
        inbox = Inbox()
        manager = TransportManager(
            on_message=inbox.on_message,
            on_closed=inbox.on_closed,
            limits=TransportLimits(idle_timeout=0.3, idle_sweep_interval=0.05),
        )
        server = await manager.listen("tcp", "127.0.0.1", 0)
        silent_reader, silent = await open_client(server)
        _, chatty = await open_client(server)
        try:
            chatty.write(message(0))
            _, chatty_flow = await inbox.message()
            started = time.monotonic()

            async def keep_talking() -> None:
                while True:  # a client's periodic keep-alive, sped up
                    await asyncio.sleep(0.05)
                    chatty.write(b"\r\n\r\n")  # counts as activity

            talker = asyncio.create_task(keep_talking())
            try:
                closed = await inbox.closure()
                assert closed != chatty_flow
                assert time.monotonic() - started >= 0.2
                assert await read_eof(silent_reader) == b""
                assert manager.is_open(chatty_flow)
                assert manager.connection_count == 1
            finally:
                talker.cancel()
            # Once silent, the other goes the same way.
            assert await inbox.closure() == chatty_flow
        finally:
            silent.close()
            chatty.close()
            await manager.close()

    run(main())


def test_slow_reader_is_closed(run: Runner[None], tls_files: TlsFiles) -> None:
    async def main() -> None:
        inbox = Inbox()
        limit = 256 * 1024
        manager = TransportManager(
            on_message=inbox.on_message,
            on_closed=inbox.on_closed,
            server_ssl=server_context(tls_files.cert, tls_files.key),
            limits=TransportLimits(write_buffer_limit=limit),
        )
        tcp = await manager.listen("tcp", "127.0.0.1", 0)
        tls = await manager.listen("tls", "127.0.0.1", 0)
        tls_client = client_context(tls_files.ca_cert)
        writers = []
        try:
            for address, ssl in ((tcp, None), (tls, tls_client)):
                # A client that never reads, with a small receive buffer.
                sock = socket.socket()
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
                sock.connect(address)
                sock.setblocking(False)
                _, writer = await asyncio.wait_for(
                    asyncio.open_connection(
                        sock=sock, ssl=ssl, server_hostname=SERVER_NAME if ssl else None
                    ),
                    WAIT,
                )
                writers.append(writer)
                writer.write(message(1))
                _, flow = await inbox.message()
                chunk = b"x" * 65536
                # Kernel buffers absorb a few MiB at most; then ours fill up.
                results = [manager.send(flow, chunk) for _ in range(2000)]
                assert False in results
                assert not any(results[results.index(False) :])
                assert await inbox.closure() == flow
                assert not manager.is_open(flow)
        finally:
            for writer in writers:
                writer.close()
            await manager.close()

    run(main())
