"""One TCP or TLS connection as an asyncio protocol: bytes in to the framer, frames out.

The protocol only moves bytes. Every decision (admission, limits, logging,
closing, callbacks) is the :class:`~conclave.transport.manager.TransportManager`'s,
reached only through :class:`StreamHost`, so this class and
:mod:`conclave.transport.udp` stay thin, as the aioquic adapter does.

The event loop calls ``connection_made`` once the connection is usable, so on
TLS only after the handshake: until then the TLS layer owns the bytes.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Protocol, cast

from conclave.sip.errors import RemoteProtocolError
from conclave.sip.flow import Flow
from conclave.sip.framing import KeepAlive, StreamFramer
from conclave.transport.flow import socket_address
from conclave.transport.limits import LISTEN_BACKLOG


class StreamHost(Protocol):
    """What a connection may ask of its manager: the whole interface between them."""

    max_message_size: int

    def new_conn_id(self) -> int: ...
    def connection_established(self, conn: StreamConnection) -> bool:
        """Usable now (TLS handshake done); False: refuse it (shutting down)."""
        ...

    def connection_received(self, conn: StreamConnection) -> None:
        """Bytes arrived: not idle; its source may be banned by now."""
        ...

    def deliver(self, data: bytes, flow: Flow, queued: float = 0.0) -> None:
        """One whole message, to the stack."""
        ...

    def framing_error(self, conn: StreamConnection, exc: RemoteProtocolError) -> None: ...
    def check_backlog(self, conn: StreamConnection) -> bool:
        """After a write: False (and closed) if the peer stopped reading."""
        ...

    def connection_lost(self, conn: StreamConnection, exc: Exception | None) -> None: ...


class StreamConnection(asyncio.Protocol):
    """The state of one stream connection.

    An inbound connection knows its flow from the accepted socket, before any
    handshake; an outbound one learns it in ``connection_made``.
    """

    def __init__(
        self,
        manager: StreamHost,
        transport_name: str,
        *,
        flow: Flow | None = None,
        server_hostname: str | None = None,
    ) -> None:
        self._manager = manager
        self.transport_name = transport_name
        self.flow = flow
        self.outbound = flow is None
        self.server_hostname = server_hostname
        """For outbound TLS: the name the peer's certificate was verified against."""
        self.sock: socket.socket | None = None
        """An accepted socket not yet handed to the event loop: whoever holds it closes it."""
        self.transport: asyncio.Transport | None = None
        """What to write on (the TLS transport on TLS), once established."""
        self.established = False
        """True from ``connection_made`` on: messages can flow."""
        self.closed = False
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Done when the loop reports the connection gone (only once established)."""
        self._framer = StreamFramer(max_message_size=manager.max_message_size)
        self._corked: list[bytes] | None = None

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = stream = cast(asyncio.Transport, transport)
        if self.flow is None:
            try:
                remote = socket_address(transport.get_extra_info("peername"))
                local = socket_address(transport.get_extra_info("sockname"))
            except ValueError:  # not an IP socket: nothing we can route back to
                self.closed = True
                stream.abort()
                return
            self.flow = Flow(self.transport_name, remote, local, self._manager.new_conn_id())
        self.established = True
        if not self._manager.connection_established(self):
            self.closed = True
            stream.abort()

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self._manager.connection_received(self)
        if not self.closed:  # the source may have been banned meanwhile
            self._feed(data)

    def eof_received(self) -> bool | None:
        return False  # SIP has no use for half-closed connections: close

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        self._manager.connection_lost(self, exc)

    # used by the manager

    def write(self, data: bytes) -> bool:
        """Queue ``data``; False if closed, or if this write made the peer a slow reader.

        While this connection's own input is being processed, writes to it are
        held back (corked) and go out as one write when the batch is done:
        one TLS record and one system call for all the answers to a burst.
        """
        transport = self._writable()
        if transport is None:
            return False
        if self._corked is not None:
            self._corked.append(data)
            return True
        transport.write(data)
        return self._manager.check_backlog(self)

    def _writable(self) -> asyncio.Transport | None:
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            return None
        return transport

    def uncork(self, *, check: bool = True) -> None:
        """Write what the batch being processed has queued (also before a close).

        ``check=False`` skips the slow-reader check: for the manager, which is
        closing the connection anyway.
        """
        corked, self._corked = self._corked, None
        transport = self._writable()
        if not corked or transport is None:
            return
        transport.write(b"".join(corked))
        if check:
            self._manager.check_backlog(self)

    def buffered(self) -> int:
        """Octets written but not yet handed to the kernel (TLS layer included)."""
        return 0 if self.transport is None else self.transport.get_write_buffer_size()

    def _feed(self, data: bytes) -> None:
        self._corked = []
        try:
            self._feed_frames(data)
        finally:
            self.uncork()

    def _feed_frames(self, data: bytes) -> None:
        framer = self._framer
        framer.receive_data(data)
        flow = self.flow
        assert flow is not None
        while not self.closed:
            try:
                event = framer.next_event()
            except RemoteProtocolError as exc:
                self._manager.framing_error(self, exc)
                return
            if event is None:
                return
            if isinstance(event, KeepAlive):
                self.write(event.pong)  # RFC 5626 §3.5.1
            else:
                self._manager.deliver(event.data, flow)


def listening_socket(host: str, port: int, *, reuse_port: bool = False) -> socket.socket:
    """A non-blocking TCP socket listening on ``host`` (an IP literal) and ``port``.

    ``reuse_port``: several processes of this user listen on the same address
    and the kernel spreads new connections over them (SO_REUSEPORT, Linux).
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Rebind at once after a restart, despite connections in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # One listener per family, as the topology lists them, and no
            # IPv4-mapped peers (the same rule as asyncio's create_server).
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        if reuse_port:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def describe_error(exc: BaseException) -> str:
    """A short reason for a log line or a TransportError message."""
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__
