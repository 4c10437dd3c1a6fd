"""The admin console: a page on the admin listener over the admin API.

``[admin] console = true`` serves, beside ``/metrics``, ``/health`` and
``/ready``:

* ``/console``: the console (a page, a stylesheet and a script from
  ``conclave/web/console_files``, plain files: nothing to build), which signs
  an administrator in with the session cookie and the CSRF token
  (:mod:`conclave.web.api.auth`) and shows the deployment's health, the
  topology picture, certificates and their expiry, audit findings, users and
  lockouts (disable, enable, new password, unlock) and a log search;
* ``/api/v1``: the admin API (:func:`conclave.web.api.admin_api`).
"""

from __future__ import annotations

from pathlib import Path
from typing import Final

from fastapi import FastAPI
from fastapi.responses import Response

from conclave.web.api import PREFIX, admin_api
from conclave.web.api.models import Backend
from conclave.web.tokens import Sessions

FILES_DIR: Final = Path(__file__).with_name("console_files")
CONSOLE_PATH: Final = "/console"
FILES: Final = {
    CONSOLE_PATH: ("index.html", "text/html; charset=utf-8"),
    f"{CONSOLE_PATH}/console.js": ("console.js", "text/javascript; charset=utf-8"),
    f"{CONSOLE_PATH}/console.css": ("console.css", "text/css; charset=utf-8"),
}


def add_console(app: FastAPI, backend: Backend, sessions: Sessions) -> None:
    """Serve the console's files and mount the admin API on ``app``."""
    for path, (name, media_type) in FILES.items():
        body = (FILES_DIR / name).read_bytes()

        def serve(body: bytes = body, media_type: str = media_type) -> Response:
            return Response(body, media_type=media_type, headers={"Cache-Control": "no-cache"})

        app.add_api_route(path, serve, methods=["GET", "HEAD"], include_in_schema=False)
    app.mount(PREFIX, admin_api(backend, sessions))
