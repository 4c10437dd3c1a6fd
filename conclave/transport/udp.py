"""One bound UDP socket as an asyncio protocol: each datagram is one message.

SIP over UDP needs no framing: a datagram holds exactly one message (RFC 3261
§18.3), so each goes to ``on_message`` whole. Datagrams holding nothing but CR
and LF are dropped here: many user agents send them as NAT keep-alives, and
the parser would otherwise log every one as unparseable.
"""

from __future__ import annotations

import asyncio
import socket
from typing import TYPE_CHECKING, Final, cast

import structlog

from conclave.transport.flow import Flow, socket_address
from conclave.transport.table import source_ip

if TYPE_CHECKING:
    from conclave.transport.manager import TransportManager

MAX_DATAGRAM: Final = 65_535
"""The largest UDP payload over IPv4 (less, really, after headers); anything
bigger cannot be a single SIP-over-UDP message."""

log = structlog.get_logger("conclave.transport")


class UdpEndpoint(asyncio.DatagramProtocol):
    """A listening UDP socket, which is also the one we send from for its flows."""

    def __init__(self, manager: TransportManager) -> None:
        self._manager = manager
        self.transport: asyncio.DatagramTransport | None = None
        self.local: tuple[str, int] = ("", 0)
        self.lost: asyncio.Future[None] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.DatagramTransport, transport)
        self.local = socket_address(transport.get_extra_info("sockname"))

    def datagram_received(self, data: bytes, addr: tuple[str | object, ...]) -> None:
        if not data.strip(b"\r\n") or len(data) > MAX_DATAGRAM:
            return
        try:
            remote = socket_address(addr)
        except ValueError:
            return
        manager = self._manager
        guard = manager.guard
        if guard is not None and guard.is_banned(source_ip(remote[0]), manager.guard_clock()):
            return  # silently: logging each datagram of a flood would amplify it
        manager._deliver(data, Flow("udp", remote, self.local))

    def error_received(self, exc: Exception) -> None:
        # Usually an ICMP error for an earlier sendto(); the transaction layer
        # times out on its own, so this is only worth a debug line.
        log.debug("udp error", local=self.local, error=str(exc))

    def connection_lost(self, exc: Exception | None) -> None:
        if not self.lost.done():
            self.lost.set_result(None)

    def send(self, data: bytes, remote: tuple[str, int], limit: int) -> bool:
        """``sendto`` unless closed, oversized, or ``limit`` octets are already queued."""
        transport = self.transport
        if transport is None or transport.is_closing() or len(data) > MAX_DATAGRAM:
            return False
        # Every event loop's datagram transport has it, though the ABC does not declare it.
        queued: int = getattr(transport, "get_write_buffer_size", lambda: 0)()
        if queued > limit:
            return False  # the kernel is not keeping up: drop, as UDP would
        try:
            transport.sendto(data, remote)
        except (OSError, ValueError, TypeError) as exc:
            log.debug("udp send failed", local=self.local, remote=remote, error=str(exc))
            return False
        return True


def udp_socket(host: str, port: int) -> socket.socket:
    """A non-blocking UDP socket bound to ``host`` (an IP literal) and ``port``.

    Bound here rather than by the event loop so that a failed bind leaves
    nothing behind (uvloop leaks its transport when its own bind fails), and so
    that UDP follows the TCP rule of one socket per address family.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        if family == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock
