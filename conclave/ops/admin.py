"""The admin HTTP listener: ``/metrics``, ``/health`` and ``/ready``.

Off unless ``[admin] enabled = true``, and bound to loopback by default
(``[admin] bind``; port 0 picks a free port, named in the ``admin listening``
event). It is read-only and unauthenticated, so expose it beyond loopback
only behind something that authenticates (a reverse proxy, or a Prometheus
scraper on the same host).

This is a deliberately tiny HTTP/1.1 server (one request per connection,
``GET`` and ``HEAD`` only) rather than a framework: three fixed read-only
pages do not justify an ASGI stack in the SIP server's event loop.

Connections are bounded before they are accepted: the listener accepts only
while fewer than :data:`MAX_CONNECTIONS` are open, so further clients wait in
the kernel's listen backlog (:data:`LISTEN_BACKLOG`, then they are refused)
and an idle client costs the server no descriptor, task or buffer. A client
has :data:`IDLE_TIMEOUT` seconds to send its request (it then gets 408) and
every connection ends within :data:`CONNECTION_TIMEOUT`, so a slot is never
held for long.

* ``/health``: 200 while the process runs its event loop (liveness).
* ``/ready``: 200 when every readiness check passes (listeners up, database
  reachable), else 503; the body is JSON naming each check.
* ``/metrics``: the Prometheus text exposition of :data:`conclave.ops.metrics.REGISTRY`.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import ipaddress
import json
import os
import socket
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

import structlog

from conclave.ops import metrics

log = structlog.get_logger("conclave.admin")

MAX_REQUEST_HEAD: Final = 8 * 1024
"""Octets of request line plus headers accepted. A scraper sends a few hundred."""
IDLE_TIMEOUT: Final = 5.0
"""Seconds a client has to send its request head, and that any later read or
write may wait: a scraper sends its request at once, and a silent client must
not hold one of the few slots."""
CONNECTION_TIMEOUT: Final = 15.0
"""Seconds one connection may last in all (request, answer, lingering close)."""
CHECK_TIMEOUT: Final = 5.0
"""Seconds one readiness check may take before it counts as failed."""
LINGER_READ: Final = 64 * 1024
"""Octets read and discarded after refusing a request (see ``_serve``)."""
MAX_CONNECTIONS: Final = 32
"""Admin connections open at once. Beyond it nothing is accepted: a handful of
scrapers and probes need a few, and a flood must not cost descriptors."""
LISTEN_BACKLOG: Final = 16
"""Connections the kernel holds, unaccepted, while every slot is busy; past
that it refuses them (or drops their SYN) without us spending anything."""
ACCEPT_RETRY_DELAY: Final = 0.5
"""Seconds to wait after accept() failed for lack of descriptors or memory."""

ReadyCheck = Callable[[], Awaitable[bool]]

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
_REASONS |= {408: "Request Timeout", 431: "Request Header Fields Too Large"}
_REASONS |= {503: "Service Unavailable"}


class AdminListenError(OSError):
    """The admin listener could not bind; ``strerror`` names its address and the reason."""


class AdminServer:
    """Serve the admin pages on ``host:port``. ``await start()``, later ``await stop()``."""

    def __init__(
        self,
        host: str,
        port: int,
        checks: Mapping[str, ReadyCheck],
        *,
        idle_timeout: float = IDLE_TIMEOUT,
        connection_timeout: float = CONNECTION_TIMEOUT,
    ) -> None:
        self.host = host
        self.port = port
        self.checks = dict(checks)
        self.idle_timeout = idle_timeout
        self.connection_timeout = connection_timeout
        self._sock: socket.socket | None = None
        self._acceptor: asyncio.Task[None] | None = None
        self._connections: set[asyncio.Task[None]] = set()
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)

    @property
    def open_connections(self) -> int:
        """Connections accepted and not yet closed (at most :data:`MAX_CONNECTIONS`)."""
        return len(self._connections)

    async def start(self) -> int:
        """Listen; returns the bound port (logged as ``admin listening``).

        Raises :class:`AdminListenError` (an OSError with the errno) when the
        address cannot be bound."""
        try:
            self._sock = _listening_socket(self.host, self.port)
        except OSError as exc:
            where = f"[{self.host}]" if ":" in self.host else self.host
            # create_server adds "(while attempting to bind on address …)": say it once.
            reason = os.strerror(exc.errno) if exc.errno else str(exc)
            raise AdminListenError(
                exc.errno or 0, f"cannot listen on admin {where}:{self.port}: {reason}"
            ) from exc
        self.port = int(self._sock.getsockname()[1])
        self._acceptor = asyncio.get_running_loop().create_task(self._accept_loop(self._sock))
        log.info("admin listening", address=self.host, port=self.port)
        return self.port

    async def stop(self) -> None:
        if self._acceptor is not None:
            self._acceptor.cancel()
            await asyncio.gather(self._acceptor, return_exceptions=True)
            self._acceptor = None
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        tasks = list(self._connections)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

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
                    log.error("admin accept failed", reason=str(exc))
                    await asyncio.sleep(ACCEPT_RETRY_DELAY)
                continue
            except BaseException:
                self._slots.release()
                raise
            task = loop.create_task(self._connection(client))
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)

    async def _connection(self, client: socket.socket) -> None:
        try:
            reader, writer = await asyncio.open_connection(sock=client, limit=MAX_REQUEST_HEAD)
        except OSError:
            client.close()
            self._slots.release()
            return
        try:
            await asyncio.wait_for(self._serve(reader, writer), self.connection_timeout)
        except TimeoutError:
            pass
        finally:
            writer.close()
            self._slots.release()

    async def ready(self) -> tuple[bool, dict[str, bool]]:
        """Run every readiness check; a check that raises or times out fails."""
        results: dict[str, bool] = {}
        for name, check in self.checks.items():
            try:
                results[name] = bool(await asyncio.wait_for(check(), CHECK_TIMEOUT))
            except Exception:
                results[name] = False
        return all(results.values()), results

    # -- one connection ----------------------------------------------------------------------
    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            status, headers, body, head_only = await self._answer(reader)
            reason = _REASONS.get(status, "Error")
            lines = [f"HTTP/1.1 {status} {reason}"]
            lines += [f"{k}: {v}" for k, v in headers]
            lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
            writer.write("\r\n".join(lines).encode("latin-1") + (b"" if head_only else body))
            await asyncio.wait_for(writer.drain(), self.idle_timeout)
            if status >= 400 and writer.can_write_eof():
                # Lingering close: read what the client already sent, so that
                # closing does not reset the connection before it reads our answer.
                writer.write_eof()
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(reader.read(LINGER_READ), self.idle_timeout)
        except (OSError, TimeoutError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(writer.wait_closed(), self.idle_timeout)

    async def _answer(
        self, reader: asyncio.StreamReader
    ) -> tuple[int, list[tuple[str, str]], bytes, bool]:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), self.idle_timeout)
        except TimeoutError:
            return _text(408, "request head not received in time\n")
        except asyncio.LimitOverrunError:
            return _text(431, "request head too large\n")
        except asyncio.IncompleteReadError:
            return _text(400, "incomplete request\n")
        request_line = head.split(b"\r\n", 1)[0].decode("latin-1")
        parts = request_line.split(" ")
        if len(parts) != 3 or not parts[2].startswith("HTTP/1."):
            return _text(400, "malformed request line\n")
        method, target = parts[0], parts[1].split("?", 1)[0]
        if target not in ("/metrics", "/health", "/ready"):
            return _text(404, "not found: try /metrics, /health or /ready\n")
        if method not in ("GET", "HEAD"):
            status, headers, body, _ = _text(405, "use GET\n")
            return status, [*headers, ("Allow", "GET, HEAD")], body, False
        head_only = method == "HEAD"
        if target == "/health":
            status, headers, body, _ = _text(200, "alive\n")
        elif target == "/ready":
            ok, results = await self.ready()
            body = json.dumps({"ready": ok, "checks": results}).encode() + b"\n"
            status, headers = (200 if ok else 503), [("Content-Type", "application/json")]
        else:
            body, content_type = metrics.render()
            status, headers = 200, [("Content-Type", content_type)]
        return status, [*headers, ("Cache-Control", "no-store")], body, head_only


def _text(status: int, text: str) -> tuple[int, list[tuple[str, str]], bytes, bool]:
    return status, [("Content-Type", "text/plain; charset=utf-8")], text.encode(), False


def _listening_socket(host: str, port: int) -> socket.socket:
    """A non-blocking TCP socket listening on ``host:port`` with :data:`LISTEN_BACKLOG`."""
    try:
        family = socket.AF_INET6 if ipaddress.ip_address(host).version == 6 else socket.AF_INET
    except ValueError:  # a name: take what it resolves to first
        family = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0][0]
    sock = socket.create_server((host, port), family=family, backlog=LISTEN_BACKLOG)
    sock.setblocking(False)
    return sock
