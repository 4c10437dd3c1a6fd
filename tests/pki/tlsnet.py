"""Real-socket TLS helpers for the PKI tests: an echo server and probing clients.

Everything binds 127.0.0.1 on an ephemeral port and every wait has a deadline.
"""

from __future__ import annotations

import asyncio
import hashlib
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager, suppress
from dataclasses import dataclass, field
from typing import Any

TIMEOUT = 10.0


@dataclass
class EchoServer:
    """A TLS echo server; ``peers`` records each accepted connection's peer certificate."""

    port: int = 0
    peers: list[dict[str, Any] | None] = field(default_factory=list)


@asynccontextmanager
async def echo_server(
    context: ssl.SSLContext,
    check: Callable[[dict[str, Any] | None], None] | None = None,
) -> AsyncIterator[EchoServer]:
    """Serve ``context`` on 127.0.0.1; ``check(peercert)`` may raise to refuse a peer."""
    state = EchoServer()

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        sslobj = writer.get_extra_info("ssl_object")
        peer = sslobj.getpeercert() if sslobj is not None else None
        state.peers.append(peer or None)
        try:
            if check is not None:
                check(peer or None)
            while data := await reader.read(4096):
                writer.write(data)
                await writer.drain()
        except Exception:
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=context)
    state.port = server.sockets[0].getsockname()[1]
    try:
        yield state
    finally:
        server.close()
        await server.wait_closed()


@dataclass
class Client:
    """An open TLS client connection."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter

    @property
    def fingerprint(self) -> str:
        der = self.writer.get_extra_info("ssl_object").getpeercert(binary_form=True)
        return hashlib.sha256(der).hexdigest()

    async def echo(self, data: bytes = b"ping") -> bytes:
        """Send ``data`` and read the echo; b"" when the server closed the connection."""
        self.writer.write(data)
        await self.writer.drain()
        got = b""
        while len(got) < len(data):
            chunk = await asyncio.wait_for(self.reader.read(4096), TIMEOUT)
            if not chunk:
                return got
            got += chunk
        return got

    async def close(self) -> None:
        self.writer.close()
        with suppress(OSError, ssl.SSLError, TimeoutError):
            await asyncio.wait_for(self.writer.wait_closed(), TIMEOUT)


async def connect(port: int, context: ssl.SSLContext, server_hostname: str) -> Client:
    """Open a TLS connection (raises ssl.SSLError / OSError if the handshake fails)."""
    reader, writer = await asyncio.wait_for(
        asyncio.open_connection("127.0.0.1", port, ssl=context, server_hostname=server_hostname),
        TIMEOUT,
    )
    return Client(reader, writer)


def der_fingerprint(pem_cert: Any) -> str:
    """SHA-256 hex of a cryptography certificate's DER (to compare with Client.fingerprint)."""
    from cryptography.hazmat.primitives.serialization import Encoding

    return hashlib.sha256(pem_cert.public_bytes(Encoding.DER)).hexdigest()


def run(coro_factory: Callable[[], Awaitable[Any]]) -> Any:
    """Run one async scenario with an overall deadline."""

    async def main() -> Any:
        return await asyncio.wait_for(coro_factory(), 120)

    return asyncio.run(main())


async def accepted(port: int, context: ssl.SSLContext, server_hostname: str) -> bool:
    """True when a connection handshakes and echoes; False when either side refused it.

    In TLS 1.3 the server judges a client certificate after the client has
    finished its handshake, so a refusal may only show on the first read.
    """
    try:
        client = await connect(port, context, server_hostname)
    except (ssl.SSLError, OSError):
        return False
    try:
        return await client.echo(b"ping") == b"ping"
    except (ssl.SSLError, OSError):
        return False
    finally:
        await client.close()
