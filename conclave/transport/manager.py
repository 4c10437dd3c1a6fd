"""The transport manager: listeners, the connection table, limits and flow reuse.

This is the only code in Conclave that touches sockets. It moves bytes: each
UDP datagram and each framed stream message goes to ``on_message(data, flow,
queued)`` (``queued``: seconds a datagram waited in the kernel, 0 on streams),
called synchronously from the event loop, and :meth:`TransportManager.send`
writes bytes back on a flow. It parses nothing beyond stream framing.

TCP and TLS listeners accept on their own sockets, so a banned or over-limit
source is refused (closed) before anything is spent on it, a TLS handshake
above all; an admitted socket goes to ``loop.connect_accepted_socket`` and
counts against the limits from then on, handshake included.

Connections live in one table keyed by connection id. Besides that table the
manager keeps, per connection: its route key (transport, remote address) for
reuse (RFC 3261 §18.1.1: send on an existing connection to the destination if
there is one), the inbound count per source IP, and its place in a dict of
last-receive times ordered oldest first, so that one periodic sweep closes idle
connections without a timer per connection.

Idleness is measured on ``time.monotonic()``. The guard is shared with the
SIP stack, so ``now`` for it comes from ``guard_clock``, which must be the
clock the stack passes to ``guard.allow()`` (``time.time`` by default, as the
stack's ``wall_clock``).
"""

from __future__ import annotations

import asyncio
import errno
import itertools
import secrets
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import structlog

from conclave.sip.errors import RemoteProtocolError
from conclave.sip.flow import TRANSPORTS, Flow, canonical_host, format_address
from conclave.sip.limits import MAX_MESSAGE_SIZE
from conclave.transport.flow import TransportError, socket_address
from conclave.transport.guard import SourceGuard, source_key
from conclave.transport.limits import (
    ACCEPT_RETRY_DELAY,
    DEFAULT_LIMITS,
    SHUTDOWN_GRACE,
    TLS_SHUTDOWN_TIMEOUT,
    TransportLimits,
)
from conclave.transport.stream import StreamConnection, describe_error, listening_socket
from conclave.transport.table import ConnectionTable
from conclave.transport.udp import UdpEndpoint, udp_socket
from conclave.transport.websocket import MessageChannel, WebSocketConnection

log = structlog.get_logger("conclave.transport")

_ACCEPT_RESOURCE_ERRORS: Final = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
)
"""accept() errors that retrying at once cannot cure."""


class TransportManager:
    """Listeners, connections and flows for one process. See the module docstring."""

    def __init__(
        self,
        *,
        on_message: Callable[[bytes, Flow, float], None],
        on_closed: Callable[[Flow], None] | None = None,
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
        guard: SourceGuard | None = None,
        limits: TransportLimits = DEFAULT_LIMITS,
        guard_clock: Callable[[], float] = time.time,
        max_message_size: int = MAX_MESSAGE_SIZE,
    ) -> None:
        if not 1 <= max_message_size <= MAX_MESSAGE_SIZE:
            raise ValueError(f"max_message_size must be 1-{MAX_MESSAGE_SIZE} octets")
        self.max_message_size = max_message_size
        """Largest message taken in, in octets (``[limits] max_message_size``): a
        longer stream message is a framing error (413, the connection is closed),
        a longer UDP datagram is dropped and counted (:attr:`oversized_datagrams`)."""
        self._on_message = on_message
        self._on_closed = on_closed
        self._server_ssl = server_ssl
        self._client_ssl = client_ssl
        self.guard = guard
        self.guard_clock = guard_clock
        self.limits = limits
        self._table = ConnectionTable()
        self._udp: dict[tuple[str, int], UdpEndpoint] = {}
        self._listening: list[_Listener] = []
        self._connecting: dict[tuple[str, tuple[str, int], str | None], asyncio.Future[Flow]] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False
        # Ids start at a random point so that a token stored before a restart
        # does not name a connection of the new process.
        self._ids = itertools.count(secrets.randbelow(1 << 32) + 1)

    # public API

    @property
    def connection_count(self) -> int:
        """Open stream connections, handshakes in progress included."""
        return len(self._table)

    @property
    def oversized_datagrams(self) -> int:
        """UDP datagrams dropped for exceeding :attr:`max_message_size`, on open sockets."""
        return sum(endpoint.oversized for endpoint in self._udp.values())

    @property
    def listeners(self) -> list[tuple[str, str, int]]:
        """``(transport, host, port)`` of every listening socket."""
        out = [("udp", *local) for local in self._udp]
        out.extend((item.transport, *item.address) for item in self._listening)
        return out

    async def listen(
        self,
        transport: str,
        host: str,
        port: int,
        *,
        tls: ssl.SSLContext | None = None,
        reuse_port: bool = False,
    ) -> tuple[str, int]:
        """Listen on ``host:port`` and return the bound address.

        ``tls``: this listener's own server context instead of ``server_ssl``
        (an Edge's internal side demands client certificates, its external
        side does not). ``reuse_port``: the address is shared with this host's
        other workers (SO_REUSEPORT; docs/pools.md).

        ``host`` is an IP literal (``0.0.0.0`` and ``::`` for all addresses; an
        IPv6 socket takes IPv6 only, so listen on both for both); port 0 picks
        a free port. Raises
        TransportError if the address cannot be bound, the transport is
        unknown, or TLS is asked for without ``server_ssl``.
        """
        if self._closed:
            raise TransportError("transport manager is closed")
        if transport not in TRANSPORTS or transport == "wss":
            # wss flows arrive through the web listener (open_channel), not a listener here
            raise TransportError(f"unknown transport {transport!r}")
        context = tls if tls is not None else self._server_ssl
        if transport == "tls" and context is None:
            raise TransportError("a TLS listener needs server_ssl")
        try:
            host = canonical_host(host)
        except ValueError as exc:
            raise TransportError(f"cannot listen on {transport} {host}:{port}: {exc}") from None
        loop = asyncio.get_running_loop()
        try:
            if transport == "udp":
                endpoint = UdpEndpoint(self, udp_socket(host, port, reuse_port=reuse_port))
                self._udp[endpoint.local] = endpoint
                address = endpoint.local
            else:
                sock = listening_socket(host, port, reuse_port=reuse_port)
                address = socket_address(sock.getsockname())
                task = loop.create_task(self._accept_loop(transport, sock, context))
                self._listening.append(_Listener(transport, address, sock, task))
        except OSError as exc:
            raise TransportError(
                f"cannot listen on {transport} {host}:{port}: {exc.strerror or exc}"
            ) from exc
        self._ensure_sweeper()
        log.info("listening", transport=transport, host=address[0], port=address[1])
        return address

    def send(self, flow: Flow, data: bytes) -> bool:
        """Send ``data`` on ``flow``; False if that cannot be done.

        UDP: a datagram to ``flow.remote`` from the socket bound at
        ``flow.local``. TCP/TLS: a write on connection ``flow.conn_id`` if it is
        still open and is that flow. False means the caller must find another
        way (RFC 3261 §18.2.2: open a new connection to the Via address) or fail
        the transaction; a False write may also have closed a slow reader.
        """
        if flow.transport == "udp":
            endpoint = self._udp.get(flow.local)
            if endpoint is None:
                return False
            return endpoint.send(data, flow.remote)
        conn = self._table.live(flow)
        return conn is not None and conn.write(data)

    def open_channel(
        self, remote: tuple[str, int], local: tuple[str, int], channel: MessageChannel
    ) -> WebSocketConnection | None:
        """Admit a WebSocket the web listener accepted as a ``wss`` flow; None: refused.

        The same rules as an accepted TLS connection: a banned source, the
        connection limit and the per-source limit refuse it (the caller closes
        the WebSocket). Messages then go in through
        :meth:`WebSocketConnection.receive_message`, and
        :meth:`WebSocketConnection.channel_lost` ends the flow.
        """
        if self._closed:
            return None
        try:
            remote = (canonical_host(remote[0]), int(remote[1]))
            local = (canonical_host(local[0]), int(local[1]))
        except ValueError:
            return None
        if not self._admit(remote):
            return None
        flow = Flow("wss", remote, local, self.new_conn_id())
        conn = WebSocketConnection(self, flow, channel)
        self._table.add(conn)
        self._table.touch(flow.conn_id, time.monotonic())
        self._ensure_sweeper()
        log.debug("connection opened", flow=str(conn.flow), outbound=False)
        return conn

    async def connect(
        self,
        transport: str,
        remote: tuple[str, int],
        *,
        server_hostname: str | None = None,
        tls: ssl.SSLContext | None = None,
    ) -> Flow:
        """An open flow to ``remote`` (an IP literal and port) over TCP or TLS.

        Reuses an open connection to ``remote`` on the same transport, inbound
        or outbound, if there is one. For TLS with ``server_hostname`` only an
        outbound connection verified against that name is reused. Concurrent
        calls for the same destination share one attempt. Raises
        TransportError on failure, refusal or timeout.
        """
        if transport not in ("tcp", "tls"):
            raise TransportError(f"connect() is for tcp or tls, not {transport!r}")
        if transport == "tls" and (tls or self._client_ssl) is None:
            raise TransportError("TLS connections need client_ssl")
        try:
            remote = (canonical_host(remote[0]), int(remote[1]))
        except ValueError as exc:
            raise TransportError(str(exc)) from None
        existing = self._table.find(transport, remote, server_hostname)
        if existing is not None and existing.flow is not None:
            return existing.flow
        key = (transport, remote, server_hostname)
        pending = self._connecting.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Flow] = asyncio.get_running_loop().create_future()
        self._connecting[key] = future
        try:
            flow = await self._dial(transport, remote, server_hostname, tls)
        except BaseException as exc:
            error = exc if isinstance(exc, TransportError) else TransportError("connect abandoned")
            future.set_exception(error)
            future.exception()  # retrieved: nobody else may be waiting
            raise
        else:
            future.set_result(flow)
            return flow
        finally:
            del self._connecting[key]

    def find_connection(self, transport: str, remote: tuple[str, int]) -> Flow | None:
        """The flow of an open connection to ``remote`` on ``transport``, if any."""
        try:
            remote = (canonical_host(remote[0]), remote[1])
        except ValueError:
            return None
        conn = self._table.find(transport, remote, None)
        return None if conn is None else conn.flow

    def is_open(self, flow: Flow) -> bool:
        """True if :meth:`send` on ``flow`` can still work."""
        if flow.transport == "udp":
            endpoint = self._udp.get(flow.local)
            return endpoint is not None and endpoint.open
        return self._table.live(flow) is not None

    def peer_certificate(self, flow: Flow) -> dict[str, Any] | None:
        """The peer's verified certificate (``SSLSocket.getpeercert()`` form) on TLS.

        None unless the flow is an open TLS connection whose peer presented a
        certificate that was verified (the server context must request one).
        """
        conn = self._table.live(flow)
        if conn is None or not flow.secure or conn.transport is None:
            return None
        cert = conn.transport.get_extra_info("peercert")
        return dict(cert) if cert else None

    def peer_certificate_der(self, flow: Flow) -> bytes | None:
        """The peer's verified certificate in DER, on an open TLS flow (else None)."""
        conn = self._table.live(flow)
        if conn is None or not flow.secure or conn.transport is None:
            return None
        ssl_object = conn.transport.get_extra_info("ssl_object")
        try:
            der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
        except ValueError:
            return None
        return der or None

    def close_tls_connections(
        self, condemned: Callable[[bytes], bool], *, reason: str = "peer certificate revoked"
    ) -> list[tuple[Flow, bytes]]:
        """Close every open TLS connection whose verified peer certificate is ``condemned``.

        ``condemned`` gets the certificate in DER (for instance: is its serial
        in our CRL now?). Returns each closed flow with that certificate; each
        closure calls ``on_closed`` as any other, so bindings on the flow go.
        """
        closed: list[tuple[Flow, bytes]] = []
        for conn in self._table.connections():
            flow = conn.flow
            if flow is None or not flow.secure or conn.transport is None or conn.closed:
                continue
            ssl_object = conn.transport.get_extra_info("ssl_object")
            try:
                der = ssl_object.getpeercert(binary_form=True) if ssl_object else None
            except ValueError:  # handshake not finished: nothing verified to judge
                continue
            if der and condemned(der):
                self._drop(conn, reason)
                closed.append((flow, der))
        return closed

    def close_connections_from(self, ip: str) -> int:
        """Close every inbound connection from ``ip`` (it was just banned); how many."""
        key = source_key(ip)
        condemned = [
            conn
            for conn in self._table.connections()
            if conn.flow is not None
            and not conn.outbound
            and source_key(conn.flow.remote[0]) == key
        ]
        for conn in condemned:
            self._drop(conn, "source banned")
        return len(condemned)

    def close_connection(self, flow: Flow) -> bool:
        """Close a stream flow's connection after flushing; False if it was not open."""
        conn = self._table.live(flow)
        if conn is None:
            return False
        self._drop(conn, "closed locally")
        return True

    async def stop_listening(self, *, keep_udp: bool = False) -> None:
        """Graceful shutdown, step 1: close listening sockets and keep connections.

        UDP sockets are closed too, so UDP flows stop working, unless
        ``keep_udp`` (to let UDP transactions finish while draining).
        """
        listening, self._listening = self._listening, []
        for item in listening:
            item.task.cancel()
        await asyncio.gather(*(item.task for item in listening), return_exceptions=True)
        for item in listening:
            item.sock.close()
            host, port = item.address
            log.info("stopped listening", transport=item.transport, host=host, port=port)
        if keep_udp or not self._udp:
            return
        endpoints = list(self._udp.values())
        self._udp.clear()
        for endpoint in endpoints:
            endpoint.close()
            host, port = endpoint.local
            log.info("stopped listening", transport="udp", host=host, port=port)
        await asyncio.wait([endpoint.lost for endpoint in endpoints], timeout=SHUTDOWN_GRACE)

    async def close(self) -> None:
        """Close everything: listeners, connections (``on_closed`` for each) and tasks."""
        if self._closed:
            return
        self._closed = True
        await self.stop_listening()
        tasks = list(self._tasks)
        if self._sweeper is not None:
            tasks.append(self._sweeper)
            self._sweeper = None
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        conns = self._table.connections()
        for conn in conns:
            self._drop(conn, "shutdown")
        waiting = [conn for conn in conns if conn.transport is not None]
        if waiting:
            await asyncio.wait([conn.lost for conn in waiting], timeout=SHUTDOWN_GRACE)
            for conn in waiting:
                if not conn.lost.done() and conn.transport is not None:
                    conn.transport.abort()

    # for StreamConnection and UdpEndpoint

    def new_conn_id(self) -> int:
        return next(self._ids)

    async def _accept_loop(
        self, transport: str, sock: socket.socket, context: ssl.SSLContext | None
    ) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                client, address = await loop.sock_accept(sock)
            except OSError as exc:
                if exc.errno in _ACCEPT_RESOURCE_ERRORS:
                    log.error("accept failed", transport=transport, error=str(exc))
                    await asyncio.sleep(ACCEPT_RETRY_DELAY)
                continue  # otherwise the peer gave up before accept: nothing to do
            self._accepted(transport, client, address, context)

    def _accepted(
        self,
        transport: str,
        client: socket.socket,
        address: object,
        context: ssl.SSLContext | None = None,
    ) -> None:
        """Admit or refuse a freshly accepted socket, before any byte is read."""
        try:
            remote = socket_address(address)
            local = socket_address(client.getsockname())
        except (ValueError, OSError):
            client.close()
            return
        if not self._admit(remote):
            client.close()
            return
        conn = StreamConnection(
            self, transport, flow=Flow(transport, remote, local, self.new_conn_id())
        )
        conn.sock = client  # ours to close until _serve hands it to the event loop
        self._table.add(conn)
        task = asyncio.get_running_loop().create_task(self._serve(conn, context))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, conn: StreamConnection, context: ssl.SSLContext | None = None) -> None:
        """Hand an admitted socket to the event loop; on TLS, wait out the handshake."""
        loop = asyncio.get_running_loop()
        tls = conn.transport_name == "tls"
        client, conn.sock = conn.sock, None
        if client is None:  # dropped before this task ran
            return
        try:
            await loop.connect_accepted_socket(
                lambda: conn,
                client,
                ssl=(context or self._server_ssl) if tls else None,
                ssl_handshake_timeout=self.limits.tls_handshake_timeout if tls else None,
                ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT if tls else None,
            )
        except Exception as exc:  # the loop has closed the socket
            flow = conn.flow
            assert flow is not None
            if tls:
                log.info("tls handshake failed", peer=_peer(flow), reason=describe_error(exc))
            self._drop(conn, "tls handshake failed" if tls else "accept failed")
        except BaseException:
            self._drop(conn, "shutdown")
            raise

    def connection_established(self, conn: StreamConnection) -> bool:
        """``connection_made``: start the idle clock, or False to refuse (shutting down)."""
        flow = conn.flow
        assert flow is not None
        if self._closed or (not conn.outbound and flow.conn_id not in self._table):
            return False
        if conn.outbound:
            self._table.add(conn)
        self._table.touch(flow.conn_id, time.monotonic())
        log.debug("connection opened", flow=str(flow), outbound=conn.outbound)
        return True

    def connection_received(self, conn: StreamConnection) -> None:
        """Data arrived on ``conn``: it is not idle, and its source may be banned by now."""
        flow = conn.flow
        assert flow is not None
        self._table.touch(flow.conn_id, time.monotonic())
        guard = self.guard
        if guard is not None and guard.is_banned(flow.remote[0], self.guard_clock()):
            self._drop(conn, "source banned", abort=True)

    def deliver(self, data: bytes, flow: Flow, queued: float = 0.0) -> None:
        try:
            self._on_message(data, flow, queued)
        except Exception:
            log.exception("on_message failed", flow=str(flow))

    def framing_error(self, conn: StreamConnection, exc: RemoteProtocolError) -> None:
        flow = conn.flow
        assert flow is not None
        log.warning(
            "framing error",
            reason=exc.reason,
            status=exc.status,
            peer=_peer(flow),
            transport=flow.transport,
            conn_id=flow.conn_id,
        )
        self._drop(conn, "framing error")

    def check_backlog(self, conn: StreamConnection) -> bool:
        """After a write: close ``conn`` if its peer has stopped reading."""
        buffered = conn.buffered()
        if buffered <= self.limits.write_buffer_limit:
            return True
        flow = conn.flow
        assert flow is not None
        log.warning("slow reader", peer=_peer(flow), conn_id=flow.conn_id, buffered=buffered)
        self._drop(conn, "slow reader", abort=True)
        return False

    def connection_lost(self, conn: StreamConnection, exc: Exception | None) -> None:
        reason = "closed by peer" if exc is None else f"connection lost: {exc}"
        self._drop(conn, reason)

    # internals

    async def _dial(
        self,
        transport: str,
        remote: tuple[str, int],
        server_hostname: str | None,
        context: ssl.SSLContext | None = None,
    ) -> Flow:
        if len(self._table) >= self.limits.max_connections:
            raise TransportError("connection limit reached")
        loop = asyncio.get_running_loop()
        where = format_address(remote)
        sock = socket.socket(socket.AF_INET6 if ":" in remote[0] else socket.AF_INET)
        try:
            sock.setblocking(False)
            await asyncio.wait_for(loop.sock_connect(sock, remote), self.limits.connect_timeout)
        except BaseException as exc:
            sock.close()
            if isinstance(exc, TimeoutError):
                raise TransportError(f"timed out connecting to {where}") from None
            if isinstance(exc, OSError):
                raise TransportError(f"cannot connect to {where}: {describe_error(exc)}") from None
            raise
        conn = StreamConnection(self, transport, server_hostname=server_hostname)
        tls = transport == "tls"
        try:  # from here on the event loop owns the socket and closes it on failure
            await loop.create_connection(
                lambda: conn,
                sock=sock,
                ssl=(context or self._client_ssl) if tls else None,
                # "" means no SNI; a context that checks names then refuses it
                server_hostname=(server_hostname or "") if tls else None,
                ssl_handshake_timeout=self.limits.tls_handshake_timeout if tls else None,
                ssl_shutdown_timeout=TLS_SHUTDOWN_TIMEOUT if tls else None,
            )
        except Exception as exc:
            reason = describe_error(exc)
            if tls:
                log.info("tls handshake failed", peer=where, reason=reason)
                raise TransportError(f"TLS handshake with {where} failed: {reason}") from exc
            raise TransportError(f"cannot connect to {where}: {reason}") from exc
        if conn.closed or conn.flow is None:
            raise TransportError(f"connection to {where} closed at once")
        self._ensure_sweeper()
        return conn.flow

    def _admit(self, remote: tuple[str, int]) -> bool:
        """Whether a new inbound connection from ``remote`` may open (logged if not)."""
        ip = source_key(remote[0])
        if self.guard is not None and self.guard.is_banned(ip, self.guard_clock()):
            # Debug only: a banned source's flood must not become a log flood.
            log.debug("connection refused", reason="source banned", peer=format_address(remote))
            return False
        if len(self._table) >= self.limits.max_connections:
            log.warning(
                "connection refused", reason="connection limit", peer=format_address(remote)
            )
            return False
        if self._table.inbound_from(ip) >= self.limits.max_connections_per_ip:
            log.info("connection refused", reason="per-source limit", peer=format_address(remote))
            return False
        return True

    def _drop(self, conn: StreamConnection, reason: str, *, abort: bool = False) -> None:
        """Forget ``conn``, close its socket and tell ``on_closed``. Idempotent."""
        flow = conn.flow
        if flow is None:
            return
        self._table.remove(conn)
        if conn.closed:
            return
        if not abort:
            conn.uncork(check=False)  # an answer queued before the close still goes out
        conn.closed = True
        if conn.sock is not None:  # accepted, but _serve never ran
            conn.sock.close()
            conn.sock = None
        transport = conn.transport  # else None during a TLS handshake, which _serve owns
        if transport is not None:
            if abort:
                transport.abort()
            else:
                transport.close()
        log.debug("connection closed", flow=str(flow), reason=reason)
        if conn.established and self._on_closed is not None:
            try:
                self._on_closed(flow)
            except Exception:
                log.exception("on_closed failed", flow=str(flow))

    def _ensure_sweeper(self) -> None:
        if self._sweeper is None and not self._closed:
            self._sweeper = asyncio.get_running_loop().create_task(self._sweep())

    async def _sweep(self) -> None:
        """The one idle timer: every interval, close connections silent for too long."""
        while True:
            await asyncio.sleep(self.limits.idle_sweep_interval)
            for conn in self._table.idle_since(time.monotonic() - self.limits.idle_timeout):
                self._drop(conn, "idle")


@dataclass(frozen=True, slots=True)
class _Listener:
    """A TCP or TLS listening socket and the task accepting on it."""

    transport: str
    address: tuple[str, int]
    sock: socket.socket
    task: asyncio.Task[None]


def _peer(flow: Flow) -> str:
    return format_address(flow.remote)
