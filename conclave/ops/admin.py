"""The admin HTTP listener: ``/metrics``, ``/health`` and ``/ready``.

Off unless ``[admin] enabled = true``, and bound to loopback by default
(``[admin] bind``; port 0 picks a free port, named in the ``admin listening``
event). It is read-only and unauthenticated, so expose it beyond loopback
only behind something that authenticates (a reverse proxy, or a Prometheus
scraper on the same host).

The pages are a FastAPI application served by :mod:`conclave.web.http`
(uvicorn's HTTP/1.1 protocol on sockets this listener accepts itself), one
request per connection, with no API documentation pages.

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
import json
import ssl
from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Final

import structlog
from fastapi import FastAPI
from fastapi.responses import PlainTextResponse, Response

from conclave.ops import metrics
from conclave.web.http import HttpLimits, HttpListener, HttpListenError
from conclave.web.pages import SecureHeaders, read_only_app

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
MAX_CONNECTIONS: Final = 32
"""Admin connections open at once. Beyond it nothing is accepted: a handful of
scrapers and probes need a few, and a flood must not cost descriptors."""
LISTEN_BACKLOG: Final = 16
"""Connections the kernel holds, unaccepted, while every slot is busy; past
that it refuses them (or drops their SYN) without us spending anything."""
CONSOLE_LIMITS: Final = HttpLimits(
    max_connections=64, listen_backlog=32, max_head=MAX_REQUEST_HEAD, head_timeout=10.0,
    connection_timeout=None, keep_alive=True,
)  # fmt: skip
"""With the console on, browsers keep connections open between requests (each
next head still due within ``head_timeout``): a few administrators' browsers
and the scrapers fit."""

Extend = Callable[[FastAPI], None]
"""Adds the console and the admin API to the pages' application."""

ReadyCheck = Callable[[], Awaitable[bool]]

PAGES: Final = ("/metrics", "/health", "/ready")


class AdminListenError(HttpListenError):
    """The admin listener could not bind; ``strerror`` names its address and the reason."""


def ops_app(ready: Callable[[], Awaitable[tuple[bool, dict[str, bool]]]]) -> FastAPI:
    """The three read-only pages, as an ASGI application."""
    no_store = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
    app = read_only_app("not found: try " + ", ".join(PAGES), no_store)

    @app.api_route("/health", methods=["GET", "HEAD"])
    async def health() -> Response:
        return PlainTextResponse("alive\n", headers=no_store)

    @app.api_route("/ready", methods=["GET", "HEAD"])
    async def readiness() -> Response:
        ok, results = await ready()
        body = json.dumps({"ready": ok, "checks": results}).encode() + b"\n"
        return Response(
            body, status_code=200 if ok else 503, media_type="application/json", headers=no_store
        )

    @app.api_route("/metrics", methods=["GET", "HEAD"])
    async def scrape() -> Response:
        body, content_type = metrics.render()
        return Response(body, headers={**no_store, "Content-Type": content_type})

    return app


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
        console: Extend | None = None,
        tls: ssl.SSLContext | None = None,
        guard: dict[str, Any] | None = None,
    ) -> None:
        """``console`` (with ``tls``, the server's HTTPS context) adds the admin
        console and API and makes the listener HTTPS with browser security
        headers; ``guard`` shares SIP's per-source limits (as
        :class:`~conclave.web.http.HttpListener` takes them)."""
        self.host = host
        self.port = port
        self.checks = dict(checks)
        limits = HttpLimits(
            max_connections=MAX_CONNECTIONS,
            listen_backlog=LISTEN_BACKLOG,
            max_head=MAX_REQUEST_HEAD,
            head_timeout=idle_timeout,
            connection_timeout=connection_timeout,
        )
        app: Any = ops_app(self.ready)
        if console is not None:
            console(app)
            app, limits = SecureHeaders(app), CONSOLE_LIMITS
        self.scheme = "https" if tls is not None else "http"
        self._listener = HttpListener(
            app, host, port, name="admin", limits=limits, tls=tls, **(guard or {})
        )

    @property
    def open_connections(self) -> int:
        """Connections accepted and not yet closed (at most :data:`MAX_CONNECTIONS`)."""
        return self._listener.open_connections

    async def start(self) -> int:
        """Listen; returns the bound port (logged as ``admin listening``).

        Raises :class:`AdminListenError` (an OSError with the errno) when the
        address cannot be bound."""
        try:
            self.port = await self._listener.start()
        except HttpListenError as exc:
            raise AdminListenError(exc.errno or 0, exc.strerror) from exc
        log.info("admin listening", address=self.host, port=self.port, scheme=self.scheme)
        return self.port

    async def stop(self) -> None:
        await self._listener.stop()

    def close_from(self, ip: str) -> None:
        """Close every connection from ``ip`` (a banned source)."""
        self._listener.close_from(ip)

    async def ready(self) -> tuple[bool, dict[str, bool]]:
        """Run every readiness check; a check that raises or times out fails."""
        results: dict[str, bool] = {}
        for name, check in self.checks.items():
            try:
                results[name] = bool(await asyncio.wait_for(check(), CHECK_TIMEOUT))
            except Exception:
                results[name] = False
        return all(results.values()), results
