"""The browser client's files, served by the HTTPS web listener at ``/``.

``web/client`` holds the sources (a page, a stylesheet, and the script that
drives JsSIP); ``make`` bundles them with esbuild into ``conclave/web/static``
(see the Makefile), which is what is served. Nothing is inlined: the page
runs under the listener's strict Content-Security-Policy. The page learns its
SIP domain from ``/client/config.json`` and opens ``wss://<its own
host>/sip``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Final

from fastapi import FastAPI
from fastapi.responses import Response

from conclave.web.pages import problem

STATIC: Final = Path(__file__).with_name("static")
"""Where ``make`` puts the built client."""

FILES: Final = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/client/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/client/app.css": ("app.css", "text/css; charset=utf-8"),
}
NOT_BUILT: Final = "the web client is not built here: run `make` (npm and esbuild)"


def add_client(app: FastAPI, domain: str, static: Path = STATIC) -> None:
    """Serve the built client on ``app`` (a 503 problem while it is not built)."""
    config = json.dumps({"domain": domain, "websocket": "/sip"}).encode()

    def route(path: str, name: str, media_type: str) -> None:
        async def serve() -> Response:
            try:
                body = (static / name).read_bytes()
            except OSError:
                return problem(503, NOT_BUILT)
            return Response(body, media_type=media_type, headers={"Cache-Control": "no-cache"})

        app.add_api_route(path, serve, methods=["GET", "HEAD"], include_in_schema=False)

    for path, (name, media_type) in FILES.items():
        route(path, name, media_type)

    async def client_config() -> Response:
        return Response(
            config, media_type="application/json", headers={"Cache-Control": "no-store"}
        )

    app.add_api_route(
        "/client/config.json", client_config, methods=["GET", "HEAD"], include_in_schema=False
    )
