"""The transport manager: listeners, the connection table, limits and flow reuse.

This is the only code in Conclave that touches sockets. It moves bytes: each
UDP datagram and each framed stream message goes to ``on_message(data, flow)``,
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

Times for the guard and for idleness come from ``time.monotonic()``.
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
from conclave.transport.flow import (
    STREAM_TRANSPORTS,
    TRANSPORTS,
    Flow,
    TransportError,
    canonical_host,
    socket_address,
)
from conclave.transport.guard import SourceGuard
from conclave.transport.stream import StreamConnection
from conclave.transport.udp import UdpEndpoint

LISTEN_BACKLOG: Final = 1024
"""Pending accepts the kernel may queue. After a Front End restart or a pool
failover thousands of clients reconnect within seconds; the usual 100 would
turn that burst into SYN retries and slow sign-in."""

ACCEPT_RETRY_DELAY: Final = 1.0
"""Seconds to pause accepting after a resource error (out of descriptors or
memory): retrying at once would spin, and closing connections frees them."""

_ACCEPT_RESOURCE_ERRORS: Final = frozenset(
    {errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM}
)

SHUTDOWN_GRACE: Final = 2.0
"""Seconds :meth:`TransportManager.close` waits for connections to flush and
finish closing (TLS close_notify included) before aborting what is left."""

log = structlog.get_logger("conclave.transport")


@dataclass(frozen=True, slots=True)
class TransportLimits:
    """Resource limits for stream connections. Durations in seconds, sizes in octets."""

    max_connections: int = 20_000
    """Open stream connections in total, handshakes included. A Front End serves
    about 10,000 users, each with one or two connections (desktop and phone),
    so this leaves headroom while keeping descriptors and buffers bounded."""
    max_connections_per_ip: int = 64
    """Inbound connections from one source IP. Enough for a NAT or a peer server
    with several flows, far too few for one host to exhaust the table."""
    tls_handshake_timeout: float = 10.0
    """Time for a TLS handshake. A real client needs a few round trips; a peer
    that stalls longer is holding a connection slot open for nothing."""
    idle_timeout: float = 300.0
    """Close a connection whose peer has sent nothing for this long. RFC 5626
    clients ping every 95-120 s (§4.4.1) and others refresh registrations or
    subscriptions well within it; a silent connection is dead or abandoned."""
    idle_sweep_interval: float = 10.0
    """How often the single idle sweep runs, so a connection is closed between
    ``idle_timeout`` and ``idle_timeout + idle_sweep_interval`` after it fell silent."""
    write_buffer_limit: int = 1 << 20
    """Octets queued for a peer that is not reading, after which the connection is
    closed as a slow reader. A NOTIFY burst at sign-in is tens of KiB; a MiB
    queued means the peer has stopped reading, and memory must not grow with it."""
    connect_timeout: float = 5.0
    """Time to establish an outbound TCP connection (before any TLS handshake).
    Transaction timer B/F is 32 s (RFC 3261 §17.1.1.2), so a failure must be
    known well before that to try the next target (RFC 3263 §4.3)."""

    def __post_init__(self) -> None:
        for name in self.__dataclass_fields__:
            if getattr(self, name) <= 0:
                raise ValueError(f"TransportLimits.{name} must be positive")


class TransportManager:
    """Listeners, connections and flows for one process. See the module docstring."""

    def __init__(
        self,
        *,
        on_message: Callable[[bytes, Flow], None],
        on_closed: Callable[[Flow], None] | None = None,
        server_ssl: ssl.SSLContext | None = None,
        client_ssl: ssl.SSLContext | None = None,
        guard: SourceGuard | None = None,
        limits: TransportLimits = TransportLimits(),  # frozen, so one shared default is safe
    ) -> None:
        self._on_message = on_message
        self._on_closed = on_closed
        self._server_ssl = server_ssl
        self._client_ssl = client_ssl
        self.guard = guard
        self.limits = limits
        self._conns: dict[int, StreamConnection] = {}
        self._routes: dict[tuple[str, tuple[str, int]], dict[int, StreamConnection]] = {}
        self._per_ip: dict[str, int] = {}
        self._last_rx: dict[int, float] = {}  # oldest first
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
        return len(self._conns)

    @property
    def listeners(self) -> list[tuple[str, str, int]]:
        """``(transport, host, port)`` of every listening socket."""
        out = [("udp", *local) for local in self._udp]
        out.extend((item.transport, *item.address) for item in self._listening)
        return out

    async def listen(self, transport: str, host: str, port: int) -> tuple[str, int]:
        """Listen on ``host:port`` and return the bound address.

        ``host`` is an IP literal (``0.0.0.0`` and ``::`` for all addresses; an
        IPv6 listener takes IPv6 only); port 0 picks a free port. Raises
        TransportError if the address cannot be bound, the transport is
        unknown, or TLS is asked for without ``server_ssl``.
        """
        if self._closed:
            raise TransportError("transport manager is closed")
        if transport not in TRANSPORTS:
            raise TransportError(f"unknown transport {transport!r}")
        if transport == "tls" and self._server_ssl is None:
            raise TransportError("a TLS listener needs server_ssl")
        try:
            host = canonical_host(host)
        except ValueError as exc:
            raise TransportError(f"cannot listen on {transport} {host}:{port}: {exc}") from None
        loop = asyncio.get_running_loop()
        try:
            if transport == "udp":
                _, endpoint = await loop.create_datagram_endpoint(
                    lambda: UdpEndpoint(self), local_addr=(host, port)
                )
                self._udp[endpoint.local] = endpoint
                address = endpoint.local
            else:
                sock = _listening_socket(host, port)
                address = socket_address(sock.getsockname())
                task = loop.create_task(self._accept_loop(transport, sock))
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
            return endpoint.send(data, flow.remote, self.limits.write_buffer_limit)
        conn = self._live(flow)
        return conn is not None and conn.write(data)

    async def connect(
        self, transport: str, remote: tuple[str, int], *, server_hostname: str | None = None
    ) -> Flow:
        """An open flow to ``remote`` (an IP literal and port) over TCP or TLS.

        Reuses an open connection to ``remote`` on the same transport, inbound
        or outbound, if there is one. For TLS with ``server_hostname`` only an
        outbound connection verified against that name is reused. Concurrent
        calls for the same destination share one attempt. Raises
        TransportError on failure, refusal or timeout.
        """
        if transport not in STREAM_TRANSPORTS:
            raise TransportError(f"connect() is for tcp or tls, not {transport!r}")
        if transport == "tls" and self._client_ssl is None:
            raise TransportError("TLS connections need client_ssl")
        try:
            remote = (canonical_host(remote[0]), int(remote[1]))
        except ValueError as exc:
            raise TransportError(str(exc)) from None
        existing = self._find(transport, remote, server_hostname)
        if existing is not None:
            return existing
        key = (transport, remote, server_hostname)
        pending = self._connecting.get(key)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[Flow] = asyncio.get_running_loop().create_future()
        self._connecting[key] = future
        try:
            flow = await self._dial(transport, remote, server_hostname)
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
        return self._find(transport, remote, None)

    def is_open(self, flow: Flow) -> bool:
        """True if :meth:`send` on ``flow`` can still work."""
        if flow.transport == "udp":
            endpoint = self._udp.get(flow.local)
            return endpoint is not None and endpoint.transport is not None
        return self._live(flow) is not None

    def peer_certificate(self, flow: Flow) -> dict[str, Any] | None:
        """The peer's verified certificate (``SSLSocket.getpeercert()`` form) on TLS.

        None unless the flow is an open TLS connection whose peer presented a
        certificate that was verified (the server context must request one).
        """
        conn = self._live(flow)
        if conn is None or not flow.secure or conn.transport is None:
            return None
        cert = conn.transport.get_extra_info("peercert")
        return dict(cert) if cert else None

    def close_connection(self, flow: Flow) -> bool:
        """Close a stream flow's connection after flushing; False if it was not open."""
        conn = self._live(flow)
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
            if endpoint.transport is not None:
                endpoint.transport.close()
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
        conns = list(self._conns.values())
        for conn in conns:
            self._drop(conn, "shutdown")
        waiting = [conn for conn in conns if conn.transport is not None]
        if waiting:
            await asyncio.wait([conn.lost for conn in waiting], timeout=SHUTDOWN_GRACE)
            for conn in waiting:
                if not conn.lost.done() and conn.transport is not None:
                    conn.transport.abort()

    # for StreamConnection and UdpEndpoint

    def _next_conn_id(self) -> int:
        return next(self._ids)

    @staticmethod
    def _source_ip(host: str) -> str:
        """The IP the guard and per-IP limits know a peer by (IPv4-mapped made plain)."""
        if host.startswith("::ffff:") and "." in host:
            return host[7:]
        return host

    async def _accept_loop(self, transport: str, sock: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                client, address = await loop.sock_accept(sock)
            except OSError as exc:
                if exc.errno in _ACCEPT_RESOURCE_ERRORS:
                    log.error("accept failed", transport=transport, error=str(exc))
                    await asyncio.sleep(ACCEPT_RETRY_DELAY)
                continue  # otherwise the peer gave up before accept: nothing to do
            self._accepted(transport, client, address)

    def _accepted(self, transport: str, client: socket.socket, address: object) -> None:
        """Admit or refuse a freshly accepted socket, before any byte is read."""
        try:
            remote = socket_address(address)
            local = socket_address(client.getsockname())
        except (ValueError, OSError):
            client.close()
            return
        ip = self._source_ip(remote[0])
        reason = None
        if self.guard is not None and self.guard.is_banned(ip, time.monotonic()):
            reason = "source banned"  # at debug level: a banned flood must not flood the log
        elif len(self._conns) >= self.limits.max_connections:
            reason = "connection limit"
            log.warning("connection refused", reason=reason, peer=_format(remote))
        elif self._per_ip.get(ip, 0) >= self.limits.max_connections_per_ip:
            reason = "per-source limit"
            log.info("connection refused", reason=reason, peer=_format(remote))
        if reason is not None:
            log.debug("connection refused", reason=reason, peer=_format(remote))
            client.close()
            return
        conn = StreamConnection(
            self, transport, flow=Flow(transport, remote, local, self._next_conn_id())
        )
        self._register(conn)
        task = asyncio.get_running_loop().create_task(self._serve(conn, client))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, conn: StreamConnection, client: socket.socket) -> None:
        """Hand an admitted socket to the event loop; on TLS, wait out the handshake."""
        loop = asyncio.get_running_loop()
        tls = conn.transport_name == "tls"
        try:
            await loop.connect_accepted_socket(
                lambda: conn,
                client,
                ssl=self._server_ssl if tls else None,
                ssl_handshake_timeout=self.limits.tls_handshake_timeout if tls else None,
            )
        except Exception as exc:  # the loop has closed the socket
            flow = conn.flow
            assert flow is not None
            if tls:
                log.info("tls handshake failed", peer=_peer(flow), reason=_reason(exc))
            self._drop(conn, "tls handshake failed" if tls else "accept failed")
        except BaseException:
            self._drop(conn, "shutdown")
            raise

    def _register(self, conn: StreamConnection) -> None:
        flow = conn.flow
        assert flow is not None
        self._conns[flow.conn_id] = conn
        self._routes.setdefault((flow.transport, flow.remote), {})[flow.conn_id] = conn
        if not conn.outbound:
            ip = self._source_ip(flow.remote[0])
            self._per_ip[ip] = self._per_ip.get(ip, 0) + 1

    def _established(self, conn: StreamConnection) -> bool:
        """``connection_made``: start the idle clock, or False to refuse (shutting down)."""
        flow = conn.flow
        assert flow is not None
        if self._closed or (not conn.outbound and flow.conn_id not in self._conns):
            return False
        if conn.outbound:
            self._register(conn)
        self._last_rx[flow.conn_id] = time.monotonic()
        log.debug("connection opened", flow=str(flow), outbound=conn.outbound)
        return True

    def _received(self, conn: StreamConnection) -> None:
        """Data arrived on ``conn``: it is not idle, and its source may be banned by now."""
        flow = conn.flow
        assert flow is not None
        now = time.monotonic()
        last_rx = self._last_rx
        if last_rx.pop(flow.conn_id, None) is not None:
            last_rx[flow.conn_id] = now  # re-inserted at the end: newest
        guard = self.guard
        if guard is not None and guard.is_banned(self._source_ip(flow.remote[0]), now):
            self._drop(conn, "source banned", abort=True)

    def _deliver(self, data: bytes, flow: Flow) -> None:
        try:
            self._on_message(data, flow)
        except Exception:
            log.exception("on_message failed", flow=str(flow))

    def _framing_error(self, conn: StreamConnection, exc: RemoteProtocolError) -> None:
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

    def _check_backlog(self, conn: StreamConnection) -> bool:
        """After a write: close ``conn`` if its peer has stopped reading."""
        buffered = conn.buffered()
        if buffered <= self.limits.write_buffer_limit:
            return True
        flow = conn.flow
        assert flow is not None
        log.warning("slow reader", peer=_peer(flow), conn_id=flow.conn_id, buffered=buffered)
        self._drop(conn, "slow reader", abort=True)
        return False

    def _lost(self, conn: StreamConnection, exc: Exception | None) -> None:
        reason = "closed by peer" if exc is None else f"connection lost: {exc}"
        self._drop(conn, reason)

    # internals

    def _live(self, flow: Flow) -> StreamConnection | None:
        conn = self._conns.get(flow.conn_id)
        if conn is None or conn.flow != flow or conn.closed or not conn.established:
            return None
        return conn

    def _find(
        self, transport: str, remote: tuple[str, int], server_hostname: str | None
    ) -> Flow | None:
        conns = self._routes.get((transport, remote))
        if not conns:
            return None
        for conn in reversed(conns.values()):  # newest first
            if not conn.established or conn.closed:
                continue
            if (
                transport == "tls"
                and server_hostname is not None
                and conn.server_hostname != server_hostname
            ):
                continue  # verified against another name, or not verified (inbound)
            return conn.flow
        return None

    async def _dial(
        self, transport: str, remote: tuple[str, int], server_hostname: str | None
    ) -> Flow:
        if len(self._conns) >= self.limits.max_connections:
            raise TransportError("connection limit reached")
        loop = asyncio.get_running_loop()
        where = _format(remote)
        sock = socket.socket(socket.AF_INET6 if ":" in remote[0] else socket.AF_INET)
        try:
            sock.setblocking(False)
            await asyncio.wait_for(loop.sock_connect(sock, remote), self.limits.connect_timeout)
        except BaseException as exc:
            sock.close()
            if isinstance(exc, TimeoutError):
                raise TransportError(f"timed out connecting to {where}") from None
            if isinstance(exc, OSError):
                raise TransportError(f"cannot connect to {where}: {_reason(exc)}") from None
            raise
        conn = StreamConnection(self, transport, server_hostname=server_hostname)
        tls = transport == "tls"
        try:  # from here on the event loop owns the socket and closes it on failure
            await loop.create_connection(
                lambda: conn,
                sock=sock,
                ssl=self._client_ssl if tls else None,
                # "" means no SNI; a context that checks names then refuses it
                server_hostname=(server_hostname or "") if tls else None,
                ssl_handshake_timeout=self.limits.tls_handshake_timeout if tls else None,
            )
        except Exception as exc:
            reason = _reason(exc)
            if tls:
                log.info("tls handshake failed", peer=where, reason=reason)
                raise TransportError(f"TLS handshake with {where} failed: {reason}") from exc
            raise TransportError(f"cannot connect to {where}: {reason}") from exc
        if conn.closed or conn.flow is None:
            raise TransportError(f"connection to {where} closed at once")
        self._ensure_sweeper()
        return conn.flow

    def _drop(self, conn: StreamConnection, reason: str, *, abort: bool = False) -> None:
        """Forget ``conn``, close its socket and tell ``on_closed``. Idempotent."""
        flow = conn.flow
        if flow is None:
            return
        if self._conns.pop(flow.conn_id, None) is not None:
            route = (flow.transport, flow.remote)
            conns = self._routes.get(route)
            if conns is not None:
                conns.pop(flow.conn_id, None)
                if not conns:
                    del self._routes[route]
            self._last_rx.pop(flow.conn_id, None)
            if not conn.outbound:
                ip = self._source_ip(flow.remote[0])
                count = self._per_ip.get(ip, 0) - 1
                if count > 0:
                    self._per_ip[ip] = count
                else:
                    self._per_ip.pop(ip, None)
        if conn.closed:
            return
        conn.closed = True
        transport = conn.transport  # None during a handshake: _serve's loop call owns it
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
            cutoff = time.monotonic() - self.limits.idle_timeout
            idle: list[int] = []
            for conn_id, last in self._last_rx.items():  # oldest first: stop at the first fresh
                if last > cutoff:
                    break
                idle.append(conn_id)
            for conn_id in idle:
                conn = self._conns.get(conn_id)
                if conn is not None:
                    self._drop(conn, "idle")


class _Listener:
    """A TCP or TLS listening socket and the task accepting on it."""

    __slots__ = ("address", "sock", "task", "transport")

    def __init__(
        self,
        transport: str,
        address: tuple[str, int],
        sock: socket.socket,
        task: asyncio.Task[None],
    ) -> None:
        self.transport = transport
        self.address = address
        self.sock = sock
        self.task = task


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # Rebind at once after a restart, despite connections in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        if family == socket.AF_INET6:
            # One listener per family, as the topology lists them, and no
            # IPv4-mapped peers (the same rule as asyncio's create_server).
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((host, port))
        sock.listen(LISTEN_BACKLOG)
        sock.setblocking(False)
    except BaseException:
        sock.close()
        raise
    return sock


def _reason(exc: BaseException) -> str:
    if isinstance(exc, TimeoutError):
        return "timed out"
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    return str(exc) or type(exc).__name__


def _format(address: tuple[str, int]) -> str:
    host, port = address
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _peer(flow: Flow) -> str:
    return _format(flow.remote)
