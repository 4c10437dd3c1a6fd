"""The web API's documents (pydantic models: they are its OpenAPI schema) and
what it asks of the server (:class:`Backend`).

The API itself knows no SIP, store or feature: the server hands it a
:class:`Backend` (``conclave.webapi``) that does the work with the same
stores and checks as the command line, and raises :class:`ApiError` for what
it refuses.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator
from typing import Annotated, Any, Final, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field

MAX_NAME: Final = 64
"""Characters of a user name (the store's own limit is the same)."""
MAX_PASSWORD: Final = 256
"""Characters of a password: longer is refused before any hashing."""
MAX_ADDRESS: Final = 320
"""Characters of a SIP address (64 for the user, 255 for the domain, and sip:)."""
MAX_GROUP: Final = 64
MAX_NOTE: Final = 500
"""Characters of a presence note (what a PIDF note keeps)."""
MAX_RESULTS: Final = 1000
"""Rows one search answers at most (CDRs, log events, messages)."""
MAX_TEXT: Final = 200
"""Characters of a search text."""
MAX_DOCUMENT: Final = 512 * 1024
"""Characters of a topology document sent to be checked: a deployment of hundreds
of hosts is tens of KiB."""

Name = Annotated[str, Field(min_length=1, max_length=MAX_NAME)]
Password = Annotated[str, Field(min_length=1, max_length=MAX_PASSWORD)]


class ApiError(Exception):
    """A refusal: HTTP ``status`` with ``detail`` (an RFC 9457 problem)."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(detail)
        self.status, self.detail = status, detail


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid")


class SignInRequest(_Model):
    user: Name
    password: Password


class SessionInfo(_Model):
    token: str = Field(description="present as Authorization: Bearer TOKEN")
    csrf: str = Field(description="repeat in X-CSRF-Token on changes made with the cookie")
    expires_in: int = Field(description="seconds the token is good for; then sign in again")
    user: str
    admin: bool


class Profile(_Model):
    user: str
    address: str
    admin: bool


class Contact(_Model):
    address: str
    group: str


class ContactChange(_Model):
    group: Annotated[str, Field(min_length=1, max_length=MAX_GROUP)] = "Contacts"


PrivacyLevel = Literal["blocked", "external", "colleagues", "workgroup", "friends"]


class PrivacyRule(_Model):
    target: str = Field(description="an address, a domain, or * for everyone")
    level: PrivacyLevel


class PrivacyChange(_Model):
    level: PrivacyLevel


class Message(_Model):
    time: str
    sender: str
    recipients: list[str]
    content_type: str
    body: str


class Presence(_Model):
    availability: str = Field(description="the aggregate of the user's devices, e.g. available")
    note: str | None


class NoteChange(_Model):
    note: Annotated[str, Field(min_length=1, max_length=MAX_NOTE)]


class Relay(_Model):
    urls: list[str]
    username: str
    credential: str
    expires: int = Field(description="Unix seconds")


class UserInfo(_Model):
    name: str
    address: str
    disabled: bool
    admin: bool


class NewUser(_Model):
    name: Name
    password: Password | None = Field(
        default=None, description="omitted: one is generated and answered once"
    )


class PasswordChange(_Model):
    password: Password | None = None


class Credentials(_Model):
    name: str
    password: str | None = Field(description="the generated password, shown only this once")


class Lockout(_Model):
    user: str
    failures: dict[str, int] = Field(description="recent failures by kind of source")
    locked_until: dict[str, float] = Field(
        description="kinds of source locked out now, and until when (Unix seconds)"
    )


class Certificate(_Model):
    role: str
    path: str
    subject: str
    names: list[str]
    issuer: str
    not_after: dt.datetime | None
    days_left: float | None
    serial: str
    status: str


class Finding(_Model):
    rule: str
    level: str
    title: str
    found: str
    where: str
    fix: str


class Check(_Model):
    name: str
    ok: bool


class HostHealth(_Model):
    host: str
    roles: list[str]
    ready: bool | None = Field(description="its /ready answer; null: could not be asked")
    detail: str


class Health(_Model):
    role: str
    host: str
    ready: bool
    checks: list[Check]
    registrations: int
    connections: int
    hosts: list[HostHealth] = Field(
        description="with a topology: every other host's readiness, asked of its admin interface"
    )


class CallRecord(_Model):
    id: int | None
    kind: str
    call_id: str
    caller: str
    callee: str | None
    start: str
    answered: str | None
    end: str | None
    duration: float
    status: int
    reason: str
    detail: dict[str, Any]


class TopologyDocument(_Model):
    toml: Annotated[str, Field(max_length=MAX_DOCUMENT)] = Field(
        description="the topology document, as topology.toml holds it"
    )


class TopologyProblem(_Model):
    path: str
    message: str
    level: str


class TopologyCheck(_Model):
    valid: bool = Field(description="no errors (warnings may remain)")
    problems: list[TopologyProblem]


class PlanAnswers(BaseModel):
    """What ``conclave topology plan`` asks (its answers file, as JSON)."""

    model_config = ConfigDict(extra="allow")
    domain: str
    users: int


class TopologyPlan(_Model):
    toml: str = Field(description="the proposed topology.toml")
    sizing: list[str]
    notes: list[str]


class TopologySummary(_Model):
    kind: Literal["standard", "topology"]
    document: dict[str, Any] | None


class Backend(Protocol):
    """What the API needs from the server."""

    domain: str

    def sign_in(self, user: str, password: str, source: str) -> str | None: ...
    def is_admin(self, user: str) -> bool: ...
    def is_active(self, user: str) -> bool: ...

    async def contacts(self, user: str) -> list[Contact]: ...
    async def set_contact(self, user: str, address: str, group: str) -> Contact: ...
    async def remove_contact(self, user: str, address: str) -> None: ...
    async def privacy(self, user: str) -> list[PrivacyRule]: ...
    async def set_privacy(self, user: str, target: str, level: str) -> PrivacyRule: ...
    async def remove_privacy(self, user: str, target: str) -> None: ...
    async def messages(
        self, user: str, since: dt.datetime | None, until: dt.datetime | None, limit: int
    ) -> list[Message]: ...
    def relay(self, user: str) -> Relay: ...
    def presence(self, user: str) -> Presence: ...
    def set_note(self, user: str, note: str | None) -> Presence: ...

    async def users(self) -> list[UserInfo]: ...
    async def add_user(self, admin: str, name: str, password: str | None) -> Credentials: ...
    async def set_disabled(self, admin: str, name: str, disabled: bool) -> UserInfo: ...
    async def set_password(self, admin: str, name: str, password: str | None) -> Credentials: ...
    def lockouts(self) -> list[Lockout]: ...
    def reset_lockout(self, admin: str, name: str) -> None: ...
    async def certificates(self) -> list[Certificate]: ...
    async def findings(self) -> list[Finding]: ...
    async def health(self) -> Health: ...
    async def topology(self) -> TopologySummary: ...
    async def topology_svg(self) -> bytes: ...
    async def check_topology(self, toml: str) -> TopologyCheck: ...
    async def plan_topology(self, answers: dict[str, Any]) -> TopologyPlan: ...
    async def calls(
        self,
        user: str | None,
        kind: str | None,
        since: dt.datetime | None,
        until: dt.datetime | None,
        limit: int,
    ) -> list[CallRecord]: ...
    async def logs(
        self,
        user: str | None,
        call_id: str | None,
        text: str | None,
        since: dt.datetime | None,
        until: dt.datetime | None,
        limit: int,
    ) -> list[dict[str, Any]]: ...
    def export(
        self, admin: str, user: str | None, since: dt.datetime | None, until: dt.datetime | None
    ) -> AsyncIterator[bytes]: ...
