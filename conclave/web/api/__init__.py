"""The web API (``/api/v1``): typed routes, an OpenAPI document, short-lived tokens.

Two applications, one per listener:

* :func:`user_api` on the HTTPS web listener: a user signs in and reads and
  changes their own things (:mod:`conclave.web.api.user`);
* :func:`admin_api` on the admin listener: an administrator signs in and
  manages the deployment (:mod:`conclave.web.api.admin`).

Each serves its OpenAPI document at ``/api/v1/openapi.json`` (no documentation
pages: nothing loaded from elsewhere). Every refusal is an RFC 9457 problem
document; a body that does not fit its schema is 422 naming the fields.
"""

from __future__ import annotations

from typing import Any, Final

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import Response
from starlette.exceptions import HTTPException

from conclave.web.api.auth import Authority
from conclave.web.api.models import ApiError, Backend
from conclave.web.pages import problem
from conclave.web.tokens import Sessions

PREFIX: Final = "/api/v1"
OPENAPI_PATH: Final = "/openapi.json"
"""Under :data:`PREFIX`: ``/api/v1/openapi.json``."""
MAX_BODY: Final = 1024 * 1024
"""Octets of a request body: the largest document the API takes is a topology to
check (tens of KiB for hundreds of hosts); more is 413 before it is parsed."""
NO_STORE: Final = {"Cache-Control": "no-store"}


def _app(title: str, description: str) -> FastAPI:
    app = FastAPI(
        title=title,
        description=description,
        version="1",
        openapi_url=OPENAPI_PATH,
        docs_url=None,
        redoc_url=None,
        redirect_slashes=False,
        servers=[{"url": PREFIX}],
    )

    @app.exception_handler(ApiError)
    async def refused(_request: Request, exc: ApiError) -> Response:
        headers = {**NO_STORE}
        if exc.status == 401:
            headers["WWW-Authenticate"] = "Bearer"
        return problem(exc.status, exc.detail, headers)

    @app.exception_handler(HTTPException)
    async def http_refused(_request: Request, exc: HTTPException) -> Response:
        return problem(exc.status_code, str(exc.detail), {**NO_STORE, **(exc.headers or {})})

    @app.exception_handler(RequestValidationError)
    async def invalid(_request: Request, exc: RequestValidationError) -> Response:
        fields = "; ".join(
            f"{'.'.join(str(p) for p in e.get('loc', ()))}: {e.get('msg', 'invalid')}"
            for e in exc.errors()[:10]
        )
        return problem(422, f"invalid request: {fields}", NO_STORE)

    @app.middleware("http")
    async def limit_body(request: Request, call_next: Any) -> Response:
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            return problem(413, f"request body over {MAX_BODY} octets", NO_STORE)
        if request.headers.get("transfer-encoding") is not None:
            return problem(411, "send a Content-Length", NO_STORE)
        response: Response = await call_next(request)
        response.headers.setdefault("Cache-Control", "no-store")
        return response

    return app


def _api(
    backend: Backend, sessions: Sessions, *, admin: bool, title: str, description: str
) -> FastAPI:
    from conclave.web.api.admin import admin_routes
    from conclave.web.api.user import user_routes

    app = _app(title, description)
    authority = Authority(backend, sessions, admin=admin)
    app.include_router(authority.routes())
    routes = admin_routes if admin else user_routes
    app.include_router(routes(backend, authority.dependency()))
    return app


def user_api(backend: Backend, sessions: Sessions) -> FastAPI:
    """The user API, for the HTTPS web listener (mount at :data:`PREFIX`)."""
    return _api(
        backend, sessions, admin=False, title="Conclave user API",
        description="A signed-in user's own profile, contacts and history.",
    )  # fmt: skip


def admin_api(backend: Backend, sessions: Sessions) -> FastAPI:
    """The admin API, for the admin listener (mount at :data:`PREFIX`)."""
    return _api(
        backend, sessions, admin=True, title="Conclave admin API",
        description="Users, lockouts, certificates, audit, health, topology and records.",
    )  # fmt: skip
