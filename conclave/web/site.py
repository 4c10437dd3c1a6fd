"""The HTTPS web listener's application: what ``[web] bind`` serves.

The CA's two documents (:mod:`conclave.web.publish`) and, with SIP over
WebSocket on (``[transports] ws``), the SIP WebSocket
(:mod:`conclave.web.sipws`) and the browser client (:mod:`conclave.web.client`),
all behind the security headers of :mod:`conclave.web.pages`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Final

from fastapi import WebSocket

from conclave.web.api import PREFIX
from conclave.web.client import add_client
from conclave.web.http import HttpLimits
from conclave.web.pages import SecureHeaders
from conclave.web.publish import publication_app
from conclave.web.sipws import SIP_PATH, SipWebSocket

WEB_LIMITS: Final = HttpLimits(
    max_connections=256, listen_backlog=128, max_head=8 * 1024, head_timeout=10.0,
    connection_timeout=None, keep_alive=True,
)  # fmt: skip
"""The HTTPS listener is for people's browsers: connections kept alive between
requests (each next head still due within ``head_timeout``), a few per user."""


def web_app(
    ca_dir: Path, sip: SipWebSocket | None = None, domain: str = "", *, api: Any = None
) -> Any:
    """What the HTTPS listener serves: the CA's two documents and, with ``sip``,
    SIP over WebSocket at :data:`~conclave.web.sipws.SIP_PATH` and the browser
    client at ``/`` (:mod:`conclave.web.client`); ``api`` (the user API,
    :func:`conclave.web.api.user_api`) at :data:`~conclave.web.api.PREFIX`; the
    security headers of :mod:`conclave.web.pages` on every answer."""
    app = publication_app(ca_dir)
    if api is not None:
        app.mount(PREFIX, api)
    if sip is not None:
        add_client(app, domain)

        async def sip_socket(websocket: WebSocket) -> None:
            await sip(websocket)

        app.add_api_websocket_route(SIP_PATH, sip_socket)
    return SecureHeaders(app)
