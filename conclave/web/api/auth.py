"""Signing in to the web API, and who a request is from.

``POST /session`` takes a user name and password and checks them as a SIP
sign-in is checked (the same per-source bans, the same smart lockout, the
same answer for a wrong password, a locked account and a name that does not
exist). It answers a short-lived token (:mod:`conclave.web.tokens`) and sets
it as a cookie too, for the admin console:

* ``Authorization: Bearer TOKEN`` works everywhere and needs nothing more:
  a browser never sends it on its own, so another site cannot forge it.
* The cookie (``HttpOnly``, ``Secure``, ``SameSite=Strict``, host-only) is
  enough for reading; a change (any method but GET/HEAD) made with it must
  also carry the session's CSRF token in ``X-CSRF-Token`` and, if the browser
  sent an ``Origin``, come from the listener's own origin. Another site can
  make a browser send the cookie, but it can read neither the CSRF token nor
  our answers (no CORS), so it cannot change anything.

Each listener issues and accepts its own kind of session: the web listener
user sessions, the admin listener administrator sessions (for users the
configuration names as administrators, ``[admin] admins``). A token of one
kind is refused by the other listener.
"""

import hmac
import time
from collections.abc import Awaitable, Callable
from typing import Annotated, Final

import structlog
from fastapi import APIRouter, Depends, Request, Response
from fastapi.security import APIKeyCookie, HTTPAuthorizationCredentials, HTTPBearer

from conclave.web.api.models import ApiError, Backend, SessionInfo, SignInRequest
from conclave.web.tokens import Session, Sessions

log = structlog.get_logger("conclave.web.api")

COOKIES: Final = {False: "__Host-conclave", True: "__Host-conclave-admin"}
"""The session cookies' names, one per kind of listener (cookies ignore ports, so
both listeners on one host would otherwise overwrite each other's). The
``__Host-`` prefix makes browsers insist each be Secure, host-only and for
path /, so no other host or path can plant one."""
CSRF_HEADER: Final = "X-CSRF-Token"
SAFE_METHODS: Final = frozenset({"GET", "HEAD", "OPTIONS"})
REFUSED: Final = "wrong user name or password, or sign-in not possible now"
"""The one answer to every failed sign-in: it tells nobody whether the name
exists, whether the account is locked, or whether the source is banned."""

_bearer = HTTPBearer(auto_error=False, description="the token POST /session answered")

Clock = Callable[[], float]


def source_of(request: Request) -> str:
    """The peer's address (the listener never believes forwarding headers)."""
    return request.client.host if request.client is not None else ""


class Authority:
    """Issues and checks one listener's sessions (``admin``: the admin listener's)."""

    def __init__(
        self, backend: Backend, sessions: Sessions, *, admin: bool, clock: Clock = time.time
    ) -> None:
        self.backend = backend
        self.sessions = sessions
        self.admin = admin
        self.clock = clock
        self.cookie = COOKIES[admin]
        self._cookie = APIKeyCookie(
            name=self.cookie, auto_error=False, description="set by POST /session"
        )

    def dependency(self) -> Callable[..., Awaitable[Session]]:
        """A FastAPI dependency answering the request's session (401/403 otherwise)."""

        async def signed_in(
            request: Request,
            bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
            cookie: Annotated[str | None, Depends(self._cookie)],
        ) -> Session:
            return self.check(request, bearer, cookie)

        return signed_in

    def check(
        self, request: Request, bearer: HTTPAuthorizationCredentials | None, cookie: str | None
    ) -> Session:
        header = request.headers.get("authorization")
        if header is not None and bearer is None:
            raise ApiError(401, "use Authorization: Bearer TOKEN")
        token = bearer.credentials if bearer is not None else cookie
        if not token:
            raise ApiError(401, "sign in first: POST /api/v1/session")
        session = self.sessions.check(token, self.clock())
        if session is None or session.admin != self.admin:
            raise ApiError(401, "the token is not valid here, or has expired: sign in again")
        if not self.backend.is_active(session.user):  # disabled since (the CLI, another admin)
            self.sessions.end_user(session.user)
            raise ApiError(401, "the token is not valid here, or has expired: sign in again")
        if bearer is None and request.method not in SAFE_METHODS:
            self._check_csrf(request, session)
        return session

    def _check_csrf(self, request: Request, session: Session) -> None:
        sent = request.headers.get(CSRF_HEADER, "")
        if not hmac.compare_digest(sent.encode(), session.csrf.encode()):
            raise ApiError(403, f"a change made with the session cookie needs {CSRF_HEADER}")
        origin = request.headers.get("origin")
        if origin is not None and origin != _own_origin(request):
            raise ApiError(403, "cross-origin change refused")

    def routes(self) -> APIRouter:
        router = APIRouter(tags=["session"])
        signed_in = self.dependency()

        @router.post(
            "/session",
            response_model=SessionInfo,
            responses={401: {"description": REFUSED}, 403: {"description": "not an admin"}},
        )
        async def sign_in(body: SignInRequest, request: Request, response: Response) -> SessionInfo:
            """Sign in with a user name and password; answers a short-lived token."""
            user = self.backend.sign_in(body.user, body.password, source_of(request))
            if user is None:
                raise ApiError(401, REFUSED)
            if self.admin and not self.backend.is_admin(user):
                log.warning("admin sign-in refused: not an administrator", user=user)
                raise ApiError(403, f"{user} is not an administrator")
            now = self.clock()
            token, session = self.sessions.issue(user, now, admin=self.admin)
            lifetime = int(session.expires - now)
            response.set_cookie(
                self.cookie, token, max_age=lifetime, path="/", secure=True, httponly=True,
                samesite="strict",
            )  # fmt: skip
            response.headers["Cache-Control"] = "no-store"
            log.info("api signed in", user=user, admin=self.admin, source=source_of(request))
            return SessionInfo(
                token=token, csrf=session.csrf, expires_in=lifetime, user=user, admin=self.admin
            )

        @router.delete("/session", status_code=204)
        async def sign_out(
            request: Request,
            response: Response,
            session: Annotated[Session, Depends(signed_in)],
            bearer: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
            cookie: Annotated[str | None, Depends(self._cookie)],
        ) -> None:
            """End this session (the token stops working at once)."""
            token = bearer.credentials if bearer is not None else cookie
            if token:
                self.sessions.end(token)
            response.delete_cookie(
                self.cookie, path="/", secure=True, httponly=True, samesite="strict"
            )
            log.info("api signed out", user=session.user, admin=self.admin)

        return router


def _own_origin(request: Request) -> str:
    """``https://host[:port]`` of the listener the request reached."""
    host, port = request.url.hostname or "", request.url.port
    if ":" in host:
        host = f"[{host}]"
    return f"https://{host}" + (f":{port}" if port not in (None, 443) else "")
