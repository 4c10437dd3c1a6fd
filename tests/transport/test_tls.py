"""TLS: a real certificate verified by the client, reuse, mutual TLS, failures."""

from __future__ import annotations

import asyncio

import pytest

from conclave.pki import client_context, server_context
from conclave.transport import TransportError, TransportLimits, TransportManager

from .conftest import SERVER_NAME, WAIT, Inbox, Runner, TlsFiles
from .test_stream import message, read_eof


def test_tls_listener_and_verifying_client(run: Runner[None], tls_files: TlsFiles) -> None:
    async def main() -> None:
        inbox = Inbox()
        manager = TransportManager(
            on_message=inbox.on_message,
            on_closed=inbox.on_closed,
            server_ssl=server_context(tls_files.cert, tls_files.key),
        )
        address = await manager.listen("tls", "127.0.0.1", 0)
        assert manager.listeners == [("tls", *address)]
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(
                *address, ssl=client_context(tls_files.ca_cert), server_hostname=SERVER_NAME
            ),
            WAIT,
        )
        try:
            peer = writer.get_extra_info("peercert")
            assert ("DNS", SERVER_NAME) in peer["subjectAltName"]
            writer.write(message(1)[:10])
            await writer.drain()
            writer.write(message(1)[10:] + b"\r\n\r\n" + message(2))
            data, flow = await inbox.message()
            assert data == message(1)
            assert flow.transport == "tls" and flow.secure and flow.reliable
            assert await asyncio.wait_for(reader.readexactly(2), WAIT) == b"\r\n"
            assert await inbox.message() == (message(2), flow)
            assert manager.peer_certificate(flow) is None  # no client certificate asked for
            assert manager.send(flow, b"SIP/2.0 200 OK\r\n")
            assert await asyncio.wait_for(reader.readline(), WAIT) == b"SIP/2.0 200 OK\r\n"
        finally:
            writer.close()
        assert await inbox.closure() == flow
        await manager.close()

    run(main())


def test_connect_over_tls_with_mutual_auth(run: Runner[None], tls_files: TlsFiles) -> None:
    async def main() -> None:
        server_inbox, client_inbox = Inbox(), Inbox()
        server = TransportManager(
            on_message=server_inbox.on_message,
            server_ssl=server_context(
                tls_files.cert, tls_files.key, ca_path=tls_files.ca_cert, require_client_cert=True
            ),
        )
        client = TransportManager(
            on_message=client_inbox.on_message,
            client_ssl=client_context(
                tls_files.ca_cert, cert_path=tls_files.client_cert, key_path=tls_files.client_key
            ),
        )
        address = await server.listen("tls", "127.0.0.1", 0)
        try:
            flows = await asyncio.gather(
                *(client.connect("tls", address, server_hostname=SERVER_NAME) for _ in range(2))
            )
            flow = flows[0]
            assert flows[1] == flow and flow.secure and client.connection_count == 1
            assert await client.connect("tls", address, server_hostname=SERVER_NAME) == flow
            assert await client.connect("tls", address) == flow  # no name asked: any will do
            server_cert = client.peer_certificate(flow)
            assert server_cert is not None
            assert ("DNS", SERVER_NAME) in server_cert["subjectAltName"]

            assert client.send(flow, message(1))
            data, inbound = await server_inbox.message()
            assert data == message(1) and inbound.secure
            client_cert = server.peer_certificate(inbound)
            assert client_cert is not None
            assert ("DNS", "peer.example.test") in client_cert["subjectAltName"]
            # An inbound TLS connection was never verified against a name, so a
            # connect() that names one opens a new connection rather than reuse it.
            assert server.find_connection("tls", inbound.remote) == inbound
            assert server.send(inbound, message(2))
            assert await client_inbox.message() == (message(2), flow)
        finally:
            await client.close()
            await server.close()

    run(main())


def test_client_rejects_wrong_name(run: Runner[None], tls_files: TlsFiles) -> None:
    async def main() -> None:
        server = TransportManager(
            on_message=lambda *_: None,
            server_ssl=server_context(tls_files.cert, tls_files.key),
        )
        client = TransportManager(
            on_message=lambda *_: None,
            client_ssl=client_context(tls_files.ca_cert),
        )
        address = await server.listen("tls", "127.0.0.1", 0)
        try:
            with pytest.raises(TransportError, match="TLS handshake"):
                await client.connect("tls", address, server_hostname="other.example.test")
            assert client.connection_count == 0
        finally:
            await client.close()
            await server.close()

    run(main())


def test_plain_tcp_to_tls_listener_fails_cleanly(run: Runner[None], tls_files: TlsFiles) -> None:
    async def main() -> None:
        inbox = Inbox()
        manager = TransportManager(
            on_message=inbox.on_message,
            on_closed=inbox.on_closed,
            server_ssl=server_context(tls_files.cert, tls_files.key),
        )
        address = await manager.listen("tls", "127.0.0.1", 0)
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), WAIT)
        try:
            writer.write(message(1))
            assert await read_eof(reader) == b""
            assert inbox.messages.empty() and inbox.closed.empty()  # never established
            assert manager.connection_count == 0
        finally:
            writer.close()
            await manager.close()

    run(main())


def test_silent_tls_handshake_times_out(run: Runner[None], tls_files: TlsFiles) -> None:
    async def main() -> None:
        manager = TransportManager(
            on_message=lambda *_: None,
            server_ssl=server_context(tls_files.cert, tls_files.key),
            limits=TransportLimits(tls_handshake_timeout=0.2),
        )
        address = await manager.listen("tls", "127.0.0.1", 0)
        reader, writer = await asyncio.wait_for(asyncio.open_connection(*address), WAIT)
        try:
            assert await read_eof(reader) == b""  # no ClientHello: closed after the timeout
            assert manager.connection_count == 0
        finally:
            writer.close()
            await manager.close()

    run(main())
