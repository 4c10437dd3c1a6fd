"""The admin routes: users and lockouts, certificates, audit findings, health,
topology, call records, log search and the archive export.

Only an administrator session from the admin listener reaches them. Every
change is logged by the backend with the administrator's name (``admin
change``), so the central log says who did what.
"""

import datetime as dt
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Depends, Path, Query
from fastapi.responses import Response, StreamingResponse

from conclave.web.api.models import (
    MAX_ADDRESS,
    MAX_NAME,
    MAX_RESULTS,
    MAX_TEXT,
    Backend,
    CallRecord,
    Certificate,
    Credentials,
    Finding,
    Health,
    Lockout,
    NewUser,
    PasswordChange,
    PlanAnswers,
    TopologyCheck,
    TopologyDocument,
    TopologyPlan,
    TopologySummary,
    UserInfo,
)
from conclave.web.tokens import Session

Limit = Annotated[int, Query(ge=1, le=MAX_RESULTS)]
Name = Annotated[str, Path(min_length=1, max_length=MAX_NAME)]
Text = Annotated[str | None, Query(min_length=1, max_length=MAX_TEXT)]
UserFilter = Annotated[str | None, Query(min_length=1, max_length=MAX_ADDRESS)]
_PROBLEMS: dict[int | str, dict[str, Any]] = {
    401: {"description": "not signed in as an administrator"},
    404: {"description": "not found"},
    409: {"description": "conflicts with what exists"},
    422: {"description": "invalid request"},
}


def admin_routes(backend: Backend, signed_in: Callable[..., Awaitable[Session]]) -> APIRouter:
    router = APIRouter(prefix="/admin", tags=["admin"], responses=_PROBLEMS)
    Admin = Annotated[Session, Depends(signed_in)]

    @router.get("/users", response_model=list[UserInfo])
    async def users(_admin: Admin) -> list[UserInfo]:
        """Every user of the deployment's domain."""
        return await backend.users()

    @router.post("/users", response_model=Credentials, status_code=201)
    async def add_user(admin: Admin, new: NewUser) -> Credentials:
        """Add a user; without a password one is generated and answered once."""
        return await backend.add_user(admin.user, new.name, new.password)

    @router.post("/users/{name}/disable", response_model=UserInfo)
    async def disable(admin: Admin, name: Name) -> UserInfo:
        """Disable a user: their sign-ins, registrations and sessions end."""
        return await backend.set_disabled(admin.user, name, True)

    @router.post("/users/{name}/enable", response_model=UserInfo)
    async def enable(admin: Admin, name: Name) -> UserInfo:
        """Enable a disabled user again."""
        return await backend.set_disabled(admin.user, name, False)

    @router.post("/users/{name}/password", response_model=Credentials)
    async def password(admin: Admin, name: Name, change: PasswordChange) -> Credentials:
        """Set a new password (generated when none is given); the user's API sessions end."""
        return await backend.set_password(admin.user, name, change.password)

    @router.get("/lockouts", response_model=list[Lockout])
    async def lockouts(_admin: Admin) -> list[Lockout]:
        """Accounts locked now, and for which kind of source."""
        return backend.lockouts()

    @router.delete("/lockouts/{name}", status_code=204)
    async def unlock(admin: Admin, name: Name) -> None:
        """Lift a user's lockout and forget their failures."""
        backend.reset_lockout(admin.user, name)

    @router.get("/certificates", response_model=list[Certificate])
    async def certificates(_admin: Admin) -> list[Certificate]:
        """Certificates in use and issued, with their expiry."""
        return await backend.certificates()

    @router.get("/audit", response_model=list[Finding])
    async def audit(_admin: Admin) -> list[Finding]:
        """The security audit's findings for this deployment, most severe first."""
        return await backend.findings()

    @router.get("/health", response_model=Health)
    async def health(_admin: Admin) -> Health:
        """This server's readiness checks and load."""
        return await backend.health()

    @router.get("/topology", response_model=TopologySummary)
    async def topology(_admin: Admin) -> TopologySummary:
        """The deployment's topology document (none for a Standard Edition)."""
        return await backend.topology()

    @router.get(
        "/topology/diagram.svg",
        response_class=Response,
        responses={200: {"content": {"image/svg+xml": {}}}},
    )
    async def diagram(_admin: Admin) -> Response:
        """The topology as a picture (SVG, drawn by Graphviz)."""
        return Response(await backend.topology_svg(), media_type="image/svg+xml")

    @router.post("/topology/check", response_model=TopologyCheck)
    async def check(_admin: Admin, document: TopologyDocument) -> TopologyCheck:
        """Check a topology document as ``conclave topology check`` does (without
        reading certificate files): every problem, errors and warnings."""
        return await backend.check_topology(document.toml)

    @router.post("/topology/plan", response_model=TopologyPlan)
    async def plan(_admin: Admin, answers: PlanAnswers) -> TopologyPlan:
        """Propose a topology from stated figures, as ``conclave topology plan`` does."""
        return await backend.plan_topology(answers.model_dump())

    @router.get("/calls", response_model=list[CallRecord])
    async def calls(
        _admin: Admin,
        user: UserFilter = None,
        kind: Literal["register", "im", "call"] | None = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        limit: Limit = 100,
    ) -> list[CallRecord]:
        """Call detail records (calls, IM sessions, registrations), oldest first."""
        return await backend.calls(user, kind, since, until, limit)

    @router.get("/logs", response_model=list[dict[str, Any]])
    async def logs(
        _admin: Admin,
        user: UserFilter = None,
        call_id: Text = None,
        text: Text = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
        limit: Limit = 100,
    ) -> list[dict[str, Any]]:
        """Events from every server's log (the logging controller's store), oldest first."""
        return await backend.logs(user, call_id, text, since, until, limit)

    @router.get(
        "/archive/export",
        response_class=StreamingResponse,
        responses={200: {"content": {"application/x-ndjson": {}}}},
    )
    async def export(
        admin: Admin,
        user: UserFilter = None,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
    ) -> StreamingResponse:
        """The archived messages, one JSON record per line, streamed as they are read."""
        return StreamingResponse(
            backend.export(admin.user, user, since, until), media_type="application/x-ndjson"
        )

    return router
