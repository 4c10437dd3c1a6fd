"""HTTP listeners: uvicorn's HTTP/1.1 protocol on sockets Conclave accepts itself.

uvicorn brings the protocol (h11) and the ASGI plumbing, so every page is an
ordinary Starlette/FastAPI application served in the server's own event loop.
What uvicorn's own ``Server`` leaves to a reverse proxy, and a listener facing
strangers needs, is done here:

* **Connections are bounded before they are accepted.** The listener accepts
  only while fewer than ``max_connections`` are open; further clients wait in
  the kernel's listen backlog (``listen_backlog``, then they are refused), so
  an idle client costs the server no descriptor, task or buffer. uvicorn's
  ``limit_concurrency`` accepts first and answers 503 after.
* **A request head must arrive in time.** A client has ``head_timeout``
  seconds from connecting (or from the previous answer) to send a complete
  request head, or it is answered 408 and closed: uvicorn alone would hold a
  silent or dripping client for ever.
* **A connection has a lifetime** (``connection_timeout``), when the listener
  is for short exchanges.
* **Refusals say what was wrong**: 431 for a head over ``max_head`` octets,
  400 for a malformed or unfinished one, each followed by a lingering close
  (what the client already sent is read and dropped, so closing does not
  reset the connection before the client reads the answer).

uvicorn's own log lines (stdlib logging) are not written: refusals are logged
here at debug level (a stranger's malformed requests must not flood the log),
and an exception in an application reaches the structured log as an error.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import http
import ipaddress
import logging
import os
import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Final

import h11
import structlog
from uvicorn.config import Config
from uvicorn.protocols.http.h11_impl import H11Protocol
from uvicorn.server import ServerState

from conclave.transport.guard import SourceGuard, Verdict, source_key

log = structlog.get_logger("conclave.web")

LINGER_READ: Final = 64 * 1024
"""Octets read and dropped after a refusal before the connection is closed anyway."""
ACCEPT_RETRY_DELAY: Final = 0.5
"""Seconds to wait after accept() failed for lack of descriptors or memory."""

ASGIApp = Callable[..., Any]

WS_PING_INTERVAL: Final = 30.0
"""Seconds between the server's WebSocket pings: keeps NAT bindings open and
finds a vanished peer (a WebSocket client sends no keep-alives of its own)."""
WS_PING_TIMEOUT: Final = 30.0
"""Seconds a ping may go unanswered before the WebSocket is closed."""


@dataclass(frozen=True, slots=True)
class HttpLimits:
    """What one listener allows a client."""

    max_connections: int = 32
    """Connections open at once; beyond it nothing is accepted."""
    listen_backlog: int = 16
    """Connections the kernel holds unaccepted while every slot is busy."""
    max_head: int = 8 * 1024
    """Octets of request line plus headers."""
    head_timeout: float = 5.0
    """Seconds to send a complete request head (also the TLS handshake's limit,
    and how long any later read or write may wait)."""
    connection_timeout: float | None = 15.0
    """Seconds a connection may last in all; None: as long as it is used."""
    keep_alive: bool = False
    """False: one request per connection (``Connection: close`` on every answer)."""


class HttpListenError(OSError):
    """The listener could not bind; ``strerror`` names its address and the reason."""


class _Counting(logging.Handler):
    """uvicorn's stdlib log records: errors to the structured log, the rest dropped."""

    def emit(self, record: logging.LogRecord) -> None:
        if record.levelno < logging.ERROR:
            return
        reason = record.getMessage()
        if record.exc_info and record.exc_info[1] is not None:
            exc = record.exc_info[1]
            reason = f"{reason}: {type(exc).__name__}: {exc}"
        log.error("http application error", reason=reason)


def _quiet_uvicorn() -> None:
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logger = logging.getLogger(name)
        logger.propagate = False
        if not any(isinstance(h, _Counting) for h in logger.handlers):
            logger.addHandler(_Counting())


@dataclass(frozen=True, slots=True)
class _Sentry:
    """The server's per-source guard as a listener uses it (see :class:`HttpListener`)."""

    guard: SourceGuard
    clock: Callable[[], float]
    on_ban: Callable[[str], None]


class _GuardedH11(H11Protocol):
    """uvicorn's HTTP/1.1 protocol with a head timeout, a lifetime, exact refusals
    and, with a sentry, every request counted against its source."""

    def __init__(
        self,
        config: Config,
        server_state: ServerState,
        limits: HttpLimits,
        on_open: Callable[[_GuardedH11], None],
        on_close: Callable[[_GuardedH11], None],
        sentry: _Sentry | None = None,
    ) -> None:
        super().__init__(config, server_state, {})
        self._limits = limits
        self._sentry = sentry
        self._counted = False  # this request head was counted against its source
        self._on_open, self._on_close = on_open, on_close
        self._head_timer: asyncio.TimerHandle | None = None
        self._life_timer: asyncio.TimerHandle | None = None
        self._refused = False
        self._lingered = 0

    @property
    def refusing(self) -> bool:
        """A refusal was written: the connection is closing after its answer."""
        return self._refused

    # -- lifecycle -------------------------------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)  # type: ignore[arg-type]
        self._on_open(self)
        self._arm_head()
        if self._limits.connection_timeout is not None:
            self._life_timer = self.loop.call_later(
                self._limits.connection_timeout, self.transport.abort
            )

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._life_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._life_timer = None
        try:
            super().connection_lost(exc)
        finally:
            self._on_close(self)

    def _arm_head(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(self._limits.head_timeout, self._head_late)

    def _head_late(self) -> None:
        self._head_timer = None
        if self._refused or self.transport.is_closing():
            return
        if self.conn.their_state is h11.IDLE and self.conn.our_state is h11.IDLE:
            self._refuse(408, "request head not received in time")

    # -- data ----------------------------------------------------------------------------
    def data_received(self, data: bytes) -> None:
        if self._refused:
            self._lingered += len(data)
            if self._lingered > LINGER_READ:
                self.transport.close()
            return
        if self.conn.their_state is h11.IDLE:
            if not self._admitted():
                return
            if self._head_too_large(data):
                self._refuse(431, "request head too large")
                return
        super().data_received(data)

    def _admitted(self) -> bool:
        """Count a new request against its source once; False: refused or dropped.

        Over the rate: 429 with Retry-After (the ban's length), the ban reported
        once; already banned: dropped unanswered (answering a flood amplifies it)."""
        sentry = self._sentry
        if sentry is None or self._counted or self.client is None:
            return True
        self._counted = True
        ip = self.client[0]
        verdict = sentry.guard.allow(ip, sentry.clock())
        if verdict is Verdict.ALLOWED:
            return True
        if verdict is Verdict.BANNED:
            self._refused = True
            self.transport.abort()
            return False
        wait = max(1, int(sentry.guard.ban_length(ip)))
        self._refuse(429, "too many requests", retry_after=wait)
        if verdict is Verdict.BANNED_NOW:
            sentry.on_ban(ip)  # after the answer: this connection closes on its own
        return False

    def _head_too_large(self, data: bytes) -> bool:
        """Whether the request head being received is over ``max_head`` octets
        (h11's own limit applies only to a head not yet complete)."""
        limit = self._limits.max_head
        buffered = self.conn.trailing_data[0]
        if len(buffered) + len(data) <= limit:
            return False
        end = (buffered + data).find(b"\r\n\r\n", 0, limit + 4)
        return end == -1

    def handle_events(self) -> None:
        super().handle_events()
        if (
            self._head_timer is not None
            and not self._refused
            and self.conn.their_state is not h11.IDLE
        ):
            self._head_timer.cancel()
            self._head_timer = None

    def eof_received(self) -> bool | None:  # type: ignore[override]  # asyncio allows True
        if self._refused:
            return None
        if self.conn.their_state is h11.IDLE and self.conn.trailing_data[0]:
            self._refuse(400, "incomplete request", linger=False)
            return True
        return None

    def handle_websocket_upgrade(self, event: h11.Request) -> None:
        """Hand the connection to uvicorn's WebSocket protocol, keeping its slot: the
        slot is given back when the WebSocket's connection is lost."""
        for timer in (self._head_timer, self._life_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._life_timer = None
        base = self.ws_protocol_class
        assert base is not None
        owner = self

        class _Owned(base):  # type: ignore[misc, valid-type]
            def connection_lost(self, exc: Exception | None) -> None:
                try:
                    super().connection_lost(exc)
                finally:
                    owner._on_close(owner)

        self.ws_protocol_class = _Owned
        super().handle_websocket_upgrade(event)

    def on_response_complete(self) -> None:
        self._counted = False  # the next request on this connection counts again
        super().on_response_complete()
        if not self.transport.is_closing():
            self._arm_head()  # the next request head, on a kept-alive connection

    # -- refusals --------------------------------------------------------------------------
    def send_400_response(self, msg: str) -> None:
        """uvicorn's answer to anything h11 refused: say which it was."""
        if self.conn.their_state is h11.ERROR and (
            len(self.conn.trailing_data[0]) > self._limits.max_head
        ):
            self._refuse(431, "request head too large")
        else:
            self._refuse(400, "malformed request")

    def _refuse(
        self, status: int, text: str, *, linger: bool = True, retry_after: int | None = None
    ) -> None:
        self._refused = True
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None
        log.debug("http request refused", status=status, reason=text, peer=self.client)
        body = (text + "\n").encode()
        phrase = http.HTTPStatus(status).phrase
        head = (
            f"HTTP/1.1 {status} {phrase}\r\n"
            "Content-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\n"
            "Cache-Control: no-store\r\n"
            + ("" if retry_after is None else f"Retry-After: {retry_after}\r\n")
            + "Connection: close\r\n\r\n"
        )
        self.transport.write(head.encode("latin-1") + body)
        if linger and self.transport.can_write_eof():
            # Lingering close: keep reading (and dropping) what the client
            # already sent, for a moment, so closing does not reset the
            # connection before the client reads the answer.
            self.transport.write_eof()
            self.loop.call_later(self._limits.head_timeout, self.transport.close)
        else:
            self.transport.close()


class SetHeaders:
    """ASGI middleware: ``headers`` on every HTTP answer, replacing whatever the
    application set for the same names (lower-case bytes, as ASGI has them)."""

    def __init__(self, app: ASGIApp, headers: tuple[tuple[bytes, bytes], ...]) -> None:
        self.app = app
        self.headers = headers
        self._names = frozenset(name for name, _value in headers)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        names, extra = self._names, self.headers

        async def with_headers(message: Any) -> None:
            if message["type"] == "http.response.start":
                kept = [(k, v) for k, v in message.get("headers", []) if k.lower() not in names]
                message = {**message, "headers": [*kept, *extra]}
            await send(message)

        await self.app(scope, receive, with_headers)


class HttpListener:
    """One ASGI application on ``host:port`` (TLS when ``tls`` is given).

    ``await start()`` returns the bound port; ``await stop()`` closes the
    socket and every connection."""

    def __init__(
        self,
        app: ASGIApp,
        host: str,
        port: int,
        *,
        name: str,
        limits: HttpLimits | None = None,
        tls: ssl.SSLContext | None = None,
        guard: SourceGuard | None = None,
        guard_clock: Callable[[], float] = time.time,
        on_ban: Callable[[str], None] = lambda _ip: None,
        websocket_max_size: int | None = None,
    ) -> None:
        """``guard``: the server's per-source guard, shared with SIP: its bans refuse
        connections before any handshake and every request counts against its
        source's rate (``guard_clock`` must be the clock SIP gives it).
        ``websocket_max_size``: accept WebSocket upgrades (wsproto), with messages
        of at most that many octets, pinged every :data:`WS_PING_INTERVAL` seconds;
        None: no WebSocket."""
        self.host, self.port, self.name = host, port, name
        self.guard, self.guard_clock = guard, guard_clock
        self.limits = limits or HttpLimits()
        self.tls = tls
        _quiet_uvicorn()
        # One request per connection unless kept alive: Connection: close on every answer.
        served = app if self.limits.keep_alive else SetHeaders(app, ((b"connection", b"close"),))
        self._sentry = None if guard is None else _Sentry(guard, guard_clock, on_ban)
        self._config = Config(
            served,
            http="h11",
            ws="none" if websocket_max_size is None else "wsproto",
            ws_max_size=websocket_max_size or 65536,
            ws_ping_interval=WS_PING_INTERVAL,
            ws_ping_timeout=WS_PING_TIMEOUT,
            ws_per_message_deflate=False,  # compression of secrets beside attacker data: no
            lifespan="off",
            log_config=None,
            access_log=False,
            proxy_headers=False,  # never believe X-Forwarded-For from a client
            server_header=False,
            date_header=False,
            h11_max_incomplete_event_size=self.limits.max_head,
            timeout_keep_alive=int(max(1.0, self.limits.head_timeout)),
        )
        self._config.load()
        self._state = ServerState()
        self._sock: socket.socket | None = None
        self._acceptor: asyncio.Task[None] | None = None
        self._handshakes: set[asyncio.Task[None]] = set()
        self._open: set[_GuardedH11] = set()
        self._slots = asyncio.Semaphore(self.limits.max_connections)
        self._in_use = 0

    @property
    def open_connections(self) -> int:
        """Connections accepted and not yet closed (at most ``max_connections``)."""
        return self._in_use

    def _give(self) -> None:
        """An accepted connection ended: its slot is free again."""
        self._in_use -= 1
        self._slots.release()

    async def start(self) -> int:
        """Listen; returns the bound port. Raises :class:`HttpListenError` when the
        address cannot be bound."""
        try:
            self._sock = _listening_socket(self.host, self.port, self.limits.listen_backlog)
        except OSError as exc:
            where = f"[{self.host}]" if ":" in self.host else self.host
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise HttpListenError(
                exc.errno or 0, f"cannot listen on {self.name} {where}:{self.port}: {reason}"
            ) from exc
        self.port = int(self._sock.getsockname()[1])
        self._acceptor = asyncio.get_running_loop().create_task(self._accept_loop(self._sock))
        return self.port

    async def stop(self) -> None:
        if self._acceptor is not None:
            self._acceptor.cancel()
            await asyncio.gather(self._acceptor, return_exceptions=True)
            self._acceptor = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        for task in list(self._handshakes):
            task.cancel()
        await asyncio.gather(*self._handshakes, return_exceptions=True)
        for protocol in list(self._open):
            protocol.transport.abort()
        for task in list(self._state.tasks):
            task.cancel()
        await asyncio.gather(*self._state.tasks, return_exceptions=True)

    async def _accept_loop(self, sock: socket.socket) -> None:
        """Accept one connection per free slot; with none free, leave them to the kernel."""
        loop = asyncio.get_running_loop()
        while True:
            await self._slots.acquire()
            try:
                client, _address = await loop.sock_accept(sock)
            except OSError as exc:
                self._slots.release()
                if exc.errno in (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM):
                    log.error("http accept failed", listener=self.name, reason=str(exc))
                    await asyncio.sleep(ACCEPT_RETRY_DELAY)
                continue
            except BaseException:
                self._slots.release()
                raise
            self._in_use += 1
            task = loop.create_task(self._connect(client))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _connect(self, client: socket.socket) -> None:
        """Hand the accepted socket to the protocol (after the TLS handshake, if any)."""
        loop = asyncio.get_running_loop()
        opened: list[_GuardedH11] = []
        if self.guard is not None:
            try:
                peer = str(client.getpeername()[0])
            except OSError:
                peer = ""
            if not peer or self.guard.is_banned(peer, self.guard_clock()):
                client.close()  # before any handshake: a banned source costs nothing
                self._give()
                return

        def factory() -> _GuardedH11:
            protocol = _GuardedH11(
                self._config, self._state, self.limits, self._opened, self._closed, self._sentry
            )
            opened.append(protocol)
            return protocol

        try:
            await loop.connect_accepted_socket(
                factory,
                client,
                ssl=self.tls,
                ssl_handshake_timeout=self.limits.head_timeout if self.tls else None,
            )
        except (OSError, ssl.SSLError, TimeoutError, asyncio.CancelledError) as exc:
            client.close()
            if not opened or opened[0] not in self._open:
                self._give()  # the protocol never took the slot
            if isinstance(exc, asyncio.CancelledError):
                raise
            log.debug("http connection failed", listener=self.name, reason=str(exc))

    def close_from(self, ip: str) -> int:
        """Abort every connection from ``ip``'s source (it was just banned); how many."""
        key = source_key(ip)
        condemned = [
            p
            for p in self._open
            if p.client is not None and source_key(p.client[0]) == key and not p.refusing
        ]
        for protocol in condemned:
            protocol.transport.abort()
        return len(condemned)

    def _opened(self, protocol: _GuardedH11) -> None:
        self._open.add(protocol)

    def _closed(self, protocol: _GuardedH11) -> None:
        if protocol in self._open:
            self._open.discard(protocol)
            self._give()


def _listening_socket(host: str, port: int, backlog: int) -> socket.socket:
    """A non-blocking TCP socket listening on ``host:port`` with ``backlog``."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:  # a name: take what it resolves to first
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.create_server((host, port), family=family, backlog=backlog)
    sock.setblocking(False)
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    return sock
