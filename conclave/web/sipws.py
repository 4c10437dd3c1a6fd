"""SIP over WebSocket (RFC 7118) on the HTTPS web listener: ``wss://HOST:PORT/sip``.

A browser (JsSIP) opens a WebSocket with the subprotocol ``sip``; each
WebSocket message is one SIP message, and the connection becomes a ``wss``
flow of the transport manager (:mod:`conclave.transport.websocket`), so the
same stack serves it as it serves TLS: registrar, digest authentication, IM,
presence and calls, flows removed when the WebSocket closes.

Refused before the upgrade (HTTP 403, logged at info):

* an ``Origin`` that is not one of the deployment's own web origins (a page
  on another site must not use a visitor's browser to reach the server:
  cross-site WebSocket hijacking). Clients that are not browsers send no
  ``Origin`` and are let through: they are not a visitor's browser;
* an offer without the ``sip`` subprotocol;
* a source the transport manager refuses (banned, over the connection limits).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterable
from typing import Final

import structlog
from starlette.websockets import WebSocket

from conclave.transport.manager import TransportManager
from conclave.transport.websocket import WebSocketConnection
from conclave.web.http import WS_PING_INTERVAL

log = structlog.get_logger("conclave.web")

SIP_PATH: Final = "/sip"
SUBPROTOCOL: Final = "sip"
CLOSE_TIMEOUT: Final = 5.0
"""Seconds to flush and close a WebSocket the flow ended."""
MAX_ORIGIN: Final = 256
"""Characters of a refused Origin written to the log."""


def web_origins(names: Iterable[str], port: int, extra: Iterable[str] = ()) -> frozenset[str]:
    """The deployment's own origins: ``https://NAME[:PORT]`` for each name, and ``extra``."""
    suffix = "" if port == 443 else f":{port}"
    own = {f"https://{name.lower()}{suffix}" for name in names if name}
    return frozenset(own | {origin.lower().rstrip("/") for origin in extra})


class _Channel:
    """The outgoing side of one WebSocket, as :class:`MessageChannel`."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        self.queued = 0
        self.closing = False
        self.aborted = False

    def send(self, data: bytes) -> None:
        if not self.closing:
            self.queued += len(data)
            self.queue.put_nowait(data)

    def buffered(self) -> int:
        return self.queued

    def close(self) -> None:
        if not self.closing:
            self.closing = True
            self.queue.put_nowait(None)

    def abort(self) -> None:
        self.aborted = True
        self.close()


class SipWebSocket:
    """The ASGI WebSocket endpoint; ``origins`` may be set once the port is known."""

    def __init__(self, transports: TransportManager, origins: frozenset[str] = frozenset()):
        self.transports = transports
        self.origins = origins

    async def __call__(self, websocket: WebSocket) -> None:
        origin = websocket.headers.get("origin")
        if origin is not None and origin.lower().rstrip("/") not in self.origins:
            log.info("websocket refused", reason="origin not ours", origin=origin[:MAX_ORIGIN])
            await websocket.close(code=1008)
            return
        if SUBPROTOCOL not in websocket.scope.get("subprotocols", []):
            log.info("websocket refused", reason="no sip subprotocol")
            await websocket.close(code=1002)
            return
        client, server = websocket.scope.get("client"), websocket.scope.get("server")
        channel = _Channel()
        conn = None
        if client and server:
            conn = self.transports.open_channel(
                (client[0], int(client[1])), (server[0], int(server[1])), channel
            )
        if conn is None:
            await websocket.close(code=1008)
            return
        await websocket.accept(subprotocol=SUBPROTOCOL)
        loop = asyncio.get_running_loop()
        sender = loop.create_task(_send(websocket, channel))
        fresh = loop.create_task(_keep_fresh(conn))
        try:
            while not conn.closed:
                message = await websocket.receive()
                if message["type"] == "websocket.disconnect":
                    break
                data = message.get("bytes")
                if data is None:
                    data = (message.get("text") or "").encode("utf-8")
                conn.receive_message(data)
        except Exception as exc:  # the peer vanished mid-read
            log.debug("websocket ended", reason=str(exc))
        finally:
            fresh.cancel()
            conn.channel_lost()
            channel.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(sender, CLOSE_TIMEOUT)


async def _keep_fresh(conn: WebSocketConnection) -> None:
    """While the WebSocket lives (its pings answered), its flow is not idle."""
    while not conn.closed:
        await asyncio.sleep(WS_PING_INTERVAL)
        conn.alive()


async def _send(websocket: WebSocket, channel: _Channel) -> None:
    """Write queued messages, one WebSocket message each, then close."""
    try:
        while not channel.aborted:
            data = await channel.queue.get()
            if data is None:
                break
            channel.queued -= len(data)
            try:
                text = data.decode("utf-8")
            except UnicodeDecodeError:
                await websocket.send_bytes(data)  # RFC 7118 §5.1: binary when not UTF-8
            else:
                await websocket.send_text(text)
        await websocket.close(code=1008 if channel.aborted else 1000)
    except Exception as exc:  # already closed by the peer
        log.debug("websocket send ended", reason=str(exc))
