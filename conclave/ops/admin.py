"""The admin HTTP listener: ``/metrics``, ``/health`` and ``/ready``.

Off unless ``[admin] enabled = true``, and bound to loopback by default
(``[admin] bind``; port 0 picks a free port, named in the ``admin listening``
event). It is read-only and unauthenticated, so expose it beyond loopback
only behind something that authenticates (a reverse proxy, or a Prometheus
scraper on the same host).

This is a deliberately tiny HTTP/1.1 server (one request per connection,
``GET`` and ``HEAD`` only) rather than a framework: three fixed read-only
pages do not justify an ASGI stack in the SIP server's event loop.

* ``/health``: 200 while the process runs its event loop (liveness).
* ``/ready``: 200 when every readiness check passes (listeners up, database
  reachable), else 503; the body is JSON naming each check.
* ``/metrics``: the Prometheus text exposition of :data:`conclave.ops.metrics.REGISTRY`.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import Final

import structlog

from conclave.ops import metrics

log = structlog.get_logger("conclave.admin")

MAX_REQUEST_HEAD: Final = 8 * 1024
"""Octets of request line plus headers accepted. A scraper sends a few hundred."""
READ_TIMEOUT: Final = 10.0
"""Seconds a client has to send its request head: a slow or silent client
must not hold a connection open."""
CHECK_TIMEOUT: Final = 5.0
"""Seconds one readiness check may take before it counts as failed."""
LINGER_READ: Final = 64 * 1024
"""Octets read and discarded after refusing a request (see ``_serve``)."""
MAX_CONNECTIONS: Final = 32
"""Admin connections served at once; more wait in the listen backlog."""

ReadyCheck = Callable[[], Awaitable[bool]]

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}
_REASONS |= {408: "Request Timeout", 431: "Request Header Fields Too Large"}
_REASONS |= {503: "Service Unavailable"}


class AdminServer:
    """Serve the admin pages on ``host:port``. ``await start()``, later ``await stop()``."""

    def __init__(self, host: str, port: int, checks: Mapping[str, ReadyCheck]) -> None:
        self.host = host
        self.port = port
        self.checks = dict(checks)
        self._server: asyncio.Server | None = None
        self._slots = asyncio.Semaphore(MAX_CONNECTIONS)

    async def start(self) -> int:
        """Listen; returns the bound port (logged as ``admin listening``)."""
        self._server = await asyncio.start_server(
            self._serve, self.host, self.port, limit=MAX_REQUEST_HEAD
        )
        sockname = self._server.sockets[0].getsockname()
        self.port = int(sockname[1])
        log.info("admin listening", address=self.host, port=self.port)
        return self.port

    async def stop(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 5)
            self._server = None

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
        async with self._slots:
            try:
                status, headers, body, head_only = await self._answer(reader)
                reason = _REASONS.get(status, "Error")
                lines = [f"HTTP/1.1 {status} {reason}"]
                lines += [f"{k}: {v}" for k, v in headers]
                lines += [f"Content-Length: {len(body)}", "Connection: close", "", ""]
                writer.write("\r\n".join(lines).encode("latin-1") + (b"" if head_only else body))
                await asyncio.wait_for(writer.drain(), READ_TIMEOUT)
                if status >= 400 and writer.can_write_eof():
                    # Lingering close: read what the client already sent, so that
                    # closing does not reset the connection before it reads our answer.
                    writer.write_eof()
                    with contextlib.suppress(Exception):
                        await asyncio.wait_for(reader.read(LINGER_READ), READ_TIMEOUT)
            except (OSError, TimeoutError):
                pass
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()

    async def _answer(
        self, reader: asyncio.StreamReader
    ) -> tuple[int, list[tuple[str, str]], bytes, bool]:
        try:
            head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), READ_TIMEOUT)
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
