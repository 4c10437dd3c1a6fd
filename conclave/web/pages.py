"""What every read-only page set shares: no documentation pages, no redirects,
and refusals as JSON problem documents (RFC 9457)."""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response
from starlette.exceptions import HTTPException

from conclave.web.http import SetHeaders


def problem(status: int, detail: str, headers: Mapping[str, str] | None = None) -> JSONResponse:
    """An RFC 9457 problem document."""
    return JSONResponse(
        {"type": "about:blank", "title": HTTPStatus(status).phrase, "status": status,
         "detail": detail},
        status_code=status,
        media_type="application/problem+json",
        headers=dict(headers or {}),
    )  # fmt: skip


def read_only_app(not_found: str, headers: Mapping[str, str]) -> FastAPI:
    """An application for ``GET``/``HEAD`` pages: unknown paths are 404 with
    ``not_found`` as the detail, other methods 405; ``headers`` on every refusal.

    No ``/docs`` or ``/openapi.json``, and no redirect from ``/x/`` to ``/x``
    (Starlette builds it from the client's ``Host`` header)."""
    app = FastAPI(openapi_url=None, docs_url=None, redoc_url=None, redirect_slashes=False)

    @app.exception_handler(HTTPException)
    async def refused(_request: Request, exc: HTTPException) -> Response:
        if exc.status_code == 404:
            return problem(404, not_found, headers)
        if exc.status_code == 405:
            return problem(405, "use GET", {**headers, "Allow": "GET, HEAD"})
        return problem(exc.status_code, str(exc.detail), headers)

    return app


SECURITY_HEADERS: Final = (
    (b"strict-transport-security", b"max-age=31536000"),
    (
        b"content-security-policy",
        b"default-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
        b"frame-ancestors 'none'",
    ),
    (b"x-frame-options", b"DENY"),
    (b"x-content-type-options", b"nosniff"),
    (b"referrer-policy", b"no-referrer"),
    (b"cross-origin-opener-policy", b"same-origin"),
    (b"cross-origin-resource-policy", b"same-origin"),
    (b"permissions-policy", b"camera=(), geolocation=(), payment=(), usb=()"),
)
"""On every answer of an HTTPS listener: HTTPS only from now on (HSTS, a year);
nothing loaded from elsewhere, no plugins, no framing by another site
(clickjacking), no MIME sniffing, no referrer leaking paths, no sharing of
the browsing context or of responses with other origins."""


class SecureHeaders(SetHeaders):
    """ASGI middleware: :data:`SECURITY_HEADERS` on every HTTP answer, replacing
    whatever the application set for the same names."""

    def __init__(self, app: Any) -> None:
        super().__init__(app, SECURITY_HEADERS)
