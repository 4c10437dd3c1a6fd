"""The web API's backend: what :mod:`conclave.web.api` asks of a running server,
done with the server's own stores, checks and state.

The API layer knows no store or feature (an import rule); this module is
where it meets them. It does what the command line does (``conclave user``,
``contacts``, ``lockout``, ``certs list``, ``audit``, ``cdr``, ``logs
search``, ``archive export``), in the server's process, so a change takes
effect at once (the user cache is reloaded, sessions end) and every change
is logged as ``admin change`` with the administrator's name. Blocking file
work (the archive, the log store, the audit, Graphviz) runs in a thread.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import itertools
import json
import ssl
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, Final

import structlog

from conclave.commands.archive import user_aor
from conclave.services.archive import archive_directory
from conclave.services.archive.export import iter_messages
from conclave.services.archive.record import decode_body
from conclave.services.relay import load_secret, relay_credentials
from conclave.store.cdr import CdrStore
from conclave.store.contacts import ContactStore, PrivacyStore
from conclave.store.errors import NotFoundError, StoreError
from conclave.store.passwords import generate_password, password_policy_problems
from conclave.store.users import UserRecord, UserStore
from conclave.web.api.models import (
    ApiError,
    CallRecord,
    Certificate,
    Check,
    Contact,
    Credentials,
    Finding,
    Health,
    HostHealth,
    Lockout,
    Message,
    Presence,
    PrivacyRule,
    Relay,
    TopologyCheck,
    TopologyPlan,
    TopologyProblem,
    TopologySummary,
    UserInfo,
)
from conclave.web.tokens import Sessions

if TYPE_CHECKING:
    from conclave.server import Server

log = structlog.get_logger("conclave.webapi")

EXPORT_BATCH: Final = 200
"""Archive records read per step of a streamed export: the response streams
while the thread reads the next batch, and memory stays bounded."""
HEALTH_TIMEOUT: Final = 3.0
"""Seconds another host's admin interface has to answer ``/ready`` for the console."""
RELAY_LIFETIME: Final = 3600.0
"""Seconds media relay credentials from the API work (a call's set-up and more);
the ``[media_relay] lifetime`` caps it."""


def _utc(value: dt.datetime | None) -> dt.datetime | None:
    """A query's time: naive means UTC."""
    if value is None or value.tzinfo is not None:
        return value
    return value.replace(tzinfo=dt.UTC)


class ServerBackend:
    """:class:`conclave.web.api.models.Backend` for ``server``."""

    def __init__(self, server: Server, sessions: Sessions) -> None:
        self.server = server
        self.sessions = sessions
        self.config = server.config
        self.data_dir = server.data_dir
        self.domain = server.config.server.domain
        self._admins = frozenset(a.lower() for a in server.config.admin.admins)

    # -- sessions -----------------------------------------------------------------------
    def sign_in(self, user: str, password: str, source: str) -> str | None:
        return self.server.signin.verify_password(user, password, source)

    def is_admin(self, user: str) -> bool:
        return user.lower() in self._admins

    def is_active(self, user: str) -> bool:
        """Still an enabled user (disabled or removed elsewhere, e.g. by the CLI: no)."""
        return self.server.users.canonical(user) is not None

    def _aor(self, user: str) -> str:
        return f"sip:{user}@{self.domain}"

    # -- a user's own things --------------------------------------------------------------
    async def contacts(self, user: str) -> list[Contact]:
        entries = await ContactStore(self.server.db).list(self._aor(user))
        return [Contact(address=e.contact, group=e.group) for e in entries]

    def _address(self, text: str) -> tuple[str, str, str]:
        """``text`` as (AOR, name, domain): ``bob`` is ``sip:bob@`` our domain."""
        aor = user_aor(text, self.domain)
        name, _, host = aor.removeprefix("sip:").rpartition("@")
        return aor, name, host

    async def _contact_address(self, text: str) -> str:
        """``text`` as an AOR; a local one must be an existing user (404 otherwise)."""
        aor, name, host = self._address(text)
        if host == self.domain and self.server.users.canonical(name) is None:
            raise ApiError(404, f"no user {name} in {self.domain}")
        return aor

    async def set_contact(self, user: str, address: str, group: str) -> Contact:
        contact = await self._contact_address(address)
        try:
            entry = await ContactStore(self.server.db).add(self._aor(user), contact, group)
        except StoreError as exc:
            raise ApiError(422, str(exc)) from None
        return Contact(address=entry.contact, group=entry.group)

    async def remove_contact(self, user: str, address: str) -> None:
        try:
            await ContactStore(self.server.db).remove(self._aor(user), self._address(address)[0])
        except NotFoundError:
            raise ApiError(404, f"{address} is not on the contact list") from None
        except StoreError as exc:
            raise ApiError(422, str(exc)) from None

    async def privacy(self, user: str) -> list[PrivacyRule]:
        rules = await PrivacyStore(self.server.db).get(self._aor(user))
        return [PrivacyRule.model_validate({"target": t, "level": v}) for t, v in rules.items()]

    async def set_privacy(self, user: str, target: str, level: str) -> PrivacyRule:
        try:
            saved, kept = await PrivacyStore(self.server.db).set(self._aor(user), target, level)
        except StoreError as exc:
            raise ApiError(422, str(exc)) from None
        return PrivacyRule.model_validate({"target": saved, "level": kept})

    async def remove_privacy(self, user: str, target: str) -> None:
        try:
            await PrivacyStore(self.server.db).remove(self._aor(user), target)
        except NotFoundError:
            raise ApiError(404, f"no privacy rule for {target}") from None
        except StoreError as exc:
            raise ApiError(422, str(exc)) from None

    def _archive(self) -> Path:
        if not self.config.archive.enabled:
            raise ApiError(404, "this deployment does not archive messages")
        return archive_directory(self.data_dir, self.config)

    async def messages(
        self, user: str, since: dt.datetime | None, until: dt.datetime | None, limit: int
    ) -> list[Message]:
        directory = self._archive()

        def read() -> list[dict[str, Any]]:
            aor, start, end = self._aor(user), _utc(since), _utc(until)
            found = iter_messages(directory, user=aor, since=start, until=end)
            return list(itertools.islice(found, limit))

        out = []
        for record in await asyncio.to_thread(read):
            body = decode_body(record).decode("utf-8", "replace")
            out.append(
                Message(
                    time=str(record["time"]), sender=str(record.get("sender", "")),
                    recipients=[str(r) for r in record.get("recipients", [])],
                    content_type=str(record.get("content_type", "")), body=body,
                )
            )  # fmt: skip
        return out

    def relay(self, user: str) -> Relay:
        section = self.config.media_relay
        if not section.enabled or not section.servers:
            raise ApiError(404, "this deployment has no media relay")
        secret = load_secret(self.config.path(self.data_dir, section.secret_file))
        lifetime = min(RELAY_LIFETIME, float(section.lifetime))
        creds = relay_credentials(secret, self._aor(user), time.time(), lifetime)
        urls = [f"turn:{s}?transport={t}" for s in section.servers for t in ("udp", "tcp")]
        return Relay(
            urls=urls, username=creds.username, credential=creds.password, expires=creds.expires
        )

    def _presence(self) -> Any:
        from conclave.services.presence.feature import PresenceFeature

        feature = self.server.features.get("presence")
        if not isinstance(feature, PresenceFeature):
            raise ApiError(404, "presence is off in this deployment")
        return feature

    def presence(self, user: str) -> Presence:
        view = self._presence().own_view(self._aor(user))
        return Presence(availability=view.availability.token, note=view.note)

    def set_note(self, user: str, note: str | None) -> Presence:
        view = self._presence().set_note(self._aor(user), note)
        log.info("presence note set" if note else "presence note removed", user=user)
        return Presence(availability=view.availability.token, note=view.note)

    # -- administration -------------------------------------------------------------------
    def _changed(self, admin: str, action: str, **detail: object) -> None:
        log.warning("admin change", admin=admin, action=action, **detail)

    def _info(self, record: UserRecord) -> UserInfo:
        return UserInfo(
            name=record.name, address=record.address, disabled=record.disabled,
            admin=self.is_admin(record.name),
        )  # fmt: skip

    async def _users_changed(self) -> None:
        await self.server.user_reloader.reload_if_changed()

    async def users(self) -> list[UserInfo]:
        return [self._info(r) for r in await UserStore(self.server.db).list(self.domain)]

    def _password(self, name: str, given: str | None) -> tuple[str, bool]:
        if given is None:
            return generate_password(), True
        problems = password_policy_problems(given, user=name)
        if problems:
            raise ApiError(422, f"password rejected: {problems[0]}")
        return given, False

    async def add_user(self, admin: str, name: str, password: str | None) -> Credentials:
        secret, generated = self._password(name, password)
        try:
            record = await UserStore(self.server.db).add(name, self.domain, secret)
        except StoreError as exc:
            raise ApiError(409 if "exists" in str(exc) else 422, str(exc)) from None
        await self._users_changed()
        self._changed(admin, "user added", user=record.name)
        return Credentials(name=record.name, password=secret if generated else None)

    async def _record(self, name: str, action: str, *args: object) -> UserRecord:
        try:
            record: UserRecord = await getattr(UserStore(self.server.db), action)(
                name, self.domain, *args
            )
        except NotFoundError:
            raise ApiError(404, f"no user {name} in {self.domain}") from None
        except StoreError as exc:
            raise ApiError(422, str(exc)) from None
        return record

    async def set_disabled(self, admin: str, name: str, disabled: bool) -> UserInfo:
        if disabled and name.lower() == admin.lower():
            raise ApiError(409, "an administrator cannot disable their own account")
        record = await self._record(name, "set_disabled", disabled)
        await self._users_changed()
        if disabled:
            self.sessions.end_user(record.name)
        self._changed(admin, "user disabled" if disabled else "user enabled", user=record.name)
        return self._info(record)

    async def set_password(self, admin: str, name: str, password: str | None) -> Credentials:
        secret, generated = self._password(name, password)
        record = await self._record(name, "set_password", secret)
        await self._users_changed()
        self.sessions.end_user(record.name)
        self._changed(admin, "password reset", user=record.name)
        return Credentials(name=record.name, password=secret if generated else None)

    def lockouts(self) -> list[Lockout]:
        lockout = self.server.lockout.lockout
        return [
            Lockout(user=s.user, failures=dict(s.failures), locked_until=dict(s.locked_until))
            for s in lockout.status(time.time())
        ]

    def reset_lockout(self, admin: str, name: str) -> None:
        user = self.server.users.canonical(name)
        if user is None:
            raise ApiError(404, f"no user {name} in {self.domain}")
        was_locked = self.server.lockout.lockout.reset(user, time.time())
        self.server.lockout.save()
        self._changed(admin, "lockout reset", user=user, was_locked=was_locked)

    async def certificates(self) -> list[Certificate]:
        from conclave.pki.inventory import listing

        now = dt.datetime.now(dt.UTC)
        rows = await asyncio.to_thread(listing, self.data_dir, self.config, now)

        def days(when: dt.datetime | None) -> float | None:
            return None if when is None else (when - now).total_seconds() / 86400

        return [
            Certificate(
                role=r.role, path=r.path, subject=r.subject, names=list(r.sans), issuer=r.issuer,
                not_after=r.not_after, serial=r.serial, status=r.status,
                days_left=days(r.not_after),
            )
            for r in rows
        ]  # fmt: skip

    def _topology_path(self) -> Path | None:
        path = self.config.admin.topology
        return self.config.path(self.data_dir, path) if path else None

    async def findings(self) -> list[Finding]:
        from conclave.audit import RULES, run_audit
        from conclave.audit.findings import sort_findings

        topology = self._topology_path()
        report = await asyncio.to_thread(run_audit, topology, None if topology else [self.data_dir])
        return [
            Finding(
                rule=f.rule, level=f.level, title=RULES[f.rule].title, found=f.found,
                where=f.where, fix=RULES[f.rule].fix,
            )
            for f in sort_findings(report.findings)
        ]  # fmt: skip

    async def health(self) -> Health:
        admin = self.server.ops.admin
        ok, checks = (True, {}) if admin is None else await admin.ready()
        hosts = await self._hosts_health() if self._topology_path() is not None else []
        return Health(
            role="standard" if self._topology_path() is None else "frontend",
            host=self.config.server.host,
            ready=ok,
            checks=[Check(name=n, ok=v) for n, v in checks.items()],
            registrations=int(self.server.location.count()),
            connections=self.server.transports.connection_count,
            hosts=hosts,
        )

    async def _hosts_health(self) -> list[HostHealth]:
        """Every other host's ``/ready``, asked of its admin interface (where it has one
        this server can reach), all at once and each bounded by :data:`HEALTH_TIMEOUT`."""
        import httpx

        topology = await asyncio.to_thread(self._load_topology)
        me = self.config.server.host.lower()
        trust = ssl.create_default_context(
            cafile=str(self.config.path(self.data_dir, self.config.tls.ca))
        )
        trust.check_hostname = False  # dialled by address; the chain is still verified

        async def ask(ref: Any, http: httpx.AsyncClient) -> HostHealth:
            roles = list(ref.host.roles)
            if not ref.host.admin:
                return HostHealth(
                    host=ref.name, roles=roles, ready=None, detail="no admin interface"
                )
            scheme = "https" if ref.host.console else "http"
            try:
                answer = await http.get(f"{scheme}://{ref.host.admin}/ready")
            except httpx.HTTPError as exc:
                return HostHealth(
                    host=ref.name, roles=roles, ready=None, detail=f"not reachable: {exc}"
                )
            return HostHealth(
                host=ref.name, roles=roles, ready=answer.status_code == 200,
                detail=f"/ready answered {answer.status_code}",
            )  # fmt: skip

        others = [r for r in topology.hosts() if r.host.fqdn.lower() != me]
        async with httpx.AsyncClient(verify=trust, timeout=HEALTH_TIMEOUT) as http:
            return list(await asyncio.gather(*(ask(r, http) for r in others)))

    def _load_topology(self) -> Any:
        from conclave.topology.document import TopologyError, load_topology

        path = self._topology_path()
        if path is None:
            raise ApiError(404, "a Standard Edition has no topology document")
        try:
            return load_topology(path)
        except (OSError, TopologyError) as exc:
            raise ApiError(409, f"the topology cannot be read: {exc}") from None

    async def topology(self) -> TopologySummary:
        if self._topology_path() is None:
            return TopologySummary(kind="standard", document=None)
        topology = await asyncio.to_thread(self._load_topology)
        return TopologySummary(kind="topology", document=topology.model_dump(mode="json"))

    async def topology_svg(self) -> bytes:
        from conclave.topology.diagram import DiagramError, render

        topology = await asyncio.to_thread(self._load_topology)
        try:
            return await asyncio.to_thread(render, topology, "svg")
        except DiagramError as exc:
            raise ApiError(503, str(exc)) from None

    async def check_topology(self, toml: str) -> TopologyCheck:
        from conclave.topology.checks import check_topology
        from conclave.topology.document import TopologyError, loads_topology

        def run() -> list[TopologyProblem]:
            try:
                topology = loads_topology(toml, source="document")
            except TopologyError as exc:
                found = list(exc.problems)
            else:
                found = check_topology(topology)
            return [TopologyProblem(path=p.path, message=p.message, level=p.level) for p in found]

        problems = await asyncio.to_thread(run)
        return TopologyCheck(valid=all(p.level != "error" for p in problems), problems=problems)

    async def plan_topology(self, answers: dict[str, Any]) -> TopologyPlan:
        from conclave.topology.document import TopologyError, dumps_topology
        from conclave.topology.planner import answers_from_mapping, plan

        try:
            proposed = plan(answers_from_mapping(answers))
        except TopologyError as exc:
            raise ApiError(422, f"answers: {exc.problems[0]}") from None
        return TopologyPlan(
            toml=dumps_topology(proposed.topology), sizing=proposed.sizing, notes=proposed.notes
        )

    async def calls(
        self,
        user: str | None,
        kind: str | None,
        since: dt.datetime | None,
        until: dt.datetime | None,
        limit: int,
    ) -> list[CallRecord]:
        aor = self._address(user)[0] if user else None
        records = await CdrStore(self.server.db).query(
            user=aor, kind=kind, since=_utc(since), until=_utc(until), limit=limit
        )
        return [CallRecord.model_validate(r.as_dict()) for r in records]

    async def logs(
        self,
        user: str | None,
        call_id: str | None,
        text: str | None,
        since: dt.datetime | None,
        until: dt.datetime | None,
        limit: int,
    ) -> list[dict[str, Any]]:
        from conclave.ops.logstore import open_readonly

        path = self.config.path(self.data_dir, self.config.logging_controller.store)

        def search() -> list[dict[str, Any]]:
            store = open_readonly(path)
            try:
                return store.search(
                    user=user, call_id=call_id, text=text,
                    since=None if since is None else _utc(since).timestamp(),  # type: ignore[union-attr]
                    until=None if until is None else _utc(until).timestamp(),  # type: ignore[union-attr]
                    limit=limit,
                )  # fmt: skip
            finally:
                store.close()

        try:
            events = await asyncio.to_thread(search)
        except FileNotFoundError:
            raise ApiError(
                404,
                "no log store on this host: the logging controller keeps it (run one here, "
                "`conclave logs controller`, and point [logging] controller at it)",
            ) from None
        return [json.loads(json.dumps(e, default=str)) for e in events]

    def export(
        self, admin: str, user: str | None, since: dt.datetime | None, until: dt.datetime | None
    ) -> AsyncIterator[bytes]:
        directory = self._archive()
        aor = self._address(user)[0] if user else None
        found: Iterator[dict[str, Any]] = iter_messages(
            directory, user=aor, since=_utc(since), until=_utc(until)
        )
        log.warning("archive exported", admin=admin, user=aor)

        def batch() -> bytes:
            lines = [
                json.dumps(r, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
                + b"\n"
                for r in itertools.islice(found, EXPORT_BATCH)
            ]
            return b"".join(lines)

        async def stream() -> AsyncIterator[bytes]:
            while chunk := await asyncio.to_thread(batch):
                yield chunk

        return stream()
