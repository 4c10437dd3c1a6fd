"""One TCP or TLS connection as an asyncio protocol: bytes in to the framer, frames out.

The protocol only moves bytes. Every decision (admission, limits, logging,
closing, callbacks) is the :class:`~conclave.transport.manager.TransportManager`'s,
so this class and :mod:`conclave.transport.udp` stay thin, as the aioquic
adapter does.

A TLS connection is accepted as plain TCP first and upgraded with
``loop.start_tls()``: the manager can then refuse a banned or over-limit
source before spending a handshake on it, and a half-open handshake counts
against the connection limits like any other connection. Reading is paused
from ``connection_made`` until the upgrade, so the ClientHello goes to the TLS
layer and not to the framer.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, cast

from conclave.sip.errors import RemoteProtocolError
from conclave.sip.framing import KeepAlive, StreamFramer
from conclave.transport.flow import Flow, socket_address

if TYPE_CHECKING:
    from conclave.transport.manager import TransportManager


class StreamConnection(asyncio.Protocol):
    """The state of one stream connection. Created by the manager's protocol factory."""

    def __init__(
        self,
        manager: TransportManager,
        transport_name: str,
        *,
        outbound: bool,
        server_hostname: str | None = None,
    ) -> None:
        self._manager = manager
        self.transport_name = transport_name
        self.outbound = outbound
        self.server_hostname = server_hostname
        """For outbound TLS: the name the peer's certificate was verified against."""
        self.flow: Flow | None = None
        self.raw: asyncio.Transport | None = None
        """The socket transport."""
        self.transport: asyncio.Transport | None = None
        """What to write on: ``raw`` for TCP, the TLS transport once upgraded; else None."""
        self.established = False
        """True once messages can flow (after the handshake on TLS)."""
        self.closed = False
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        """Done when the socket is really gone (``connection_lost``)."""
        self._framer = StreamFramer()
        self._pending: list[bytes] = []

    # asyncio callbacks

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        raw = cast(asyncio.Transport, transport)
        self.raw = raw
        try:
            remote = socket_address(raw.get_extra_info("peername"))
            local = socket_address(raw.get_extra_info("sockname"))
        except ValueError:  # not an IP socket: nothing we can route back to
            self.closed = True
            raw.abort()
            return
        self.flow = Flow(self.transport_name, remote, local, self._manager._next_conn_id())
        if self.transport_name == "tls":
            raw.pause_reading()  # until start_tls() has put the TLS layer in between
        if not self._manager._admit(self):
            self.closed = True
            raw.abort()
            return
        if self.transport_name != "tls":
            self.establish(raw)
        elif not self.outbound:
            self._manager._start_server_tls(self)

    def data_received(self, data: bytes) -> None:
        if self.closed:
            return
        self._manager._received(self)
        if self.closed:  # the source was banned meanwhile
            return
        if not self.established:
            # TLS: the peer's first records can be decrypted and handed to us
            # before start_tls() has returned to the manager.
            self._pending.append(data)
            return
        self._feed(data)

    def eof_received(self) -> bool | None:
        return False  # SIP has no use for half-closed connections: close

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)
        self._manager._lost(self, exc)

    # used by the manager

    def establish(self, transport: asyncio.Transport) -> None:
        """Start moving messages on ``transport``, including any data that came early."""
        self.transport = transport
        self.established = True
        pending, self._pending = self._pending, []
        for data in pending:
            if self.closed:
                return
            self._feed(data)

    def write(self, data: bytes) -> bool:
        """Queue ``data``; False if closed, or if this write made the peer a slow reader."""
        transport = self.transport
        if self.closed or transport is None or transport.is_closing():
            return False
        transport.write(data)
        return self._manager._check_backlog(self)

    def buffered(self) -> int:
        """Octets written but not yet handed to the kernel, TLS layer included."""
        size = 0
        if self.transport is not None:
            size += self.transport.get_write_buffer_size()
        if self.raw is not None and self.raw is not self.transport:
            size += self.raw.get_write_buffer_size()
        return size

    def _feed(self, data: bytes) -> None:
        framer = self._framer
        framer.receive_data(data)
        flow = self.flow
        assert flow is not None
        while not self.closed:
            try:
                event = framer.next_event()
            except RemoteProtocolError as exc:
                self._manager._framing_error(self, exc)
                return
            if event is None:
                return
            if isinstance(event, KeepAlive):
                self.write(event.pong)  # RFC 5626 §3.5.1
            else:
                self._manager._deliver(event.data, flow)
