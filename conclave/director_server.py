"""The Director process: ``conclave serve --topology FILE --host DIRECTOR``.

One TLS listener (``[director] bind``, ``port``), which the Edges reach with
mutual TLS (their certificates tell the Director to believe the client
address they stamp in the Via) and clients inside may reach with TLS. Every
request is authenticated here against the users of every Front End pool
the Director serves, read from each pool's back end (``[director] pools``,
reloaded when its ``users`` change counter moves), then sent to the user's
home pool over mutual TLS (:mod:`conclave.core.director`).
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import time
from pathlib import Path

import structlog

from conclave.config import Config
from conclave.core.auth import Authenticator, CredentialCache, UserCredentials
from conclave.core.dialogs import DialogTable
from conclave.core.director import DirectorRouter, NoLocations
from conclave.core.features import FeatureHost, Registry
from conclave.core.proxy import Proxy
from conclave.core.signin import SignIn
from conclave.core.stack import SipStack
from conclave.ops import metrics
from conclave.ops.lockout import lockout_from_config
from conclave.ops.runtime import Operations
from conclave.pki.errors import PkiError
from conclave.pki.identity import server_identity
from conclave.pki.tls import mutual_client_context, server_context
from conclave.sip.flow import Flow, canonical_host
from conclave.sip.local import LocalEndpoint
from conclave.sip.message import Request
from conclave.sip.transaction import TransactionLayer
from conclave.store.database import Database
from conclave.store.generations import USERS, GenerationStore
from conclave.store.users import UserStore
from conclave.transport.guard import SourceGuard
from conclave.transport.manager import TransportManager

log = structlog.get_logger("conclave.director")

PID_FILE = "conclave.pid"
USER_POLL_INTERVAL = 5.0
"""Seconds between reads of each pool's ``users`` change counter."""
DRAIN_TIMEOUT = 10.0
BAN_SWEEP_INTERVAL = 1.0


class DirectorServer:
    """One Director process. Create, then ``await run()``."""

    def __init__(self, data_dir: Path, config: Config) -> None:
        self.data_dir = data_dir
        self.config = config
        self.ops = Operations(data_dir, config, role="director")
        self.stop_event = asyncio.Event()
        limits = config.limits
        self.guard = SourceGuard(
            rate=limits.requests_per_second,
            burst=limits.burst,
            ban_seconds=limits.ban_seconds,
            max_ban_seconds=limits.max_ban_seconds,
            auth_failures_per_minute=limits.auth_failures_per_minute,
            exempt=config.trust.addresses,  # Edges: their clients are judged one by one
        )
        self.layer = TransactionLayer()
        self.stack = SipStack(
            layer=self.layer, guard=self.guard, supported=frozenset({"path", "outbound"})
        )
        tls = config.tls
        cert, key = config.path(data_dir, tls.cert), config.path(data_dir, tls.key)
        ca, crl = config.path(data_dir, tls.ca), config.path(data_dir, tls.crl)
        # Client certificates are asked for, not required: Edges present theirs.
        self.server_tls = server_context(cert, key, ca_path=ca, crl_path=crl)
        self.transports = TransportManager(
            on_message=self.stack.on_message,
            on_closed=self._on_closed,
            server_ssl=self.server_tls,
            client_ssl=mutual_client_context(cert, key, ca_path=ca, crl_path=crl),
            guard=self.guard,
            max_message_size=limits.max_message_size,
        )
        domain = config.server.domain
        self.local = LocalEndpoint(
            host=config.server.host, domain=domain, names={f"sip.{domain}", config.server.host}
        )
        self.users = CredentialCache()
        self.databases = {p.name: Database(p.database) for p in config.director.pools}
        self._generations = {name: -1 for name in self.databases}
        self._homes: dict[str, str] = {}
        self._pool_flows: dict[str, Flow] = {}
        self._edges = frozenset(n.lower() for n in config.trust.edges)
        self._edge_flows: dict[int, bool] = {}
        self.tasks: list[asyncio.Task[None]] = []

    # -- HomePools -------------------------------------------------------------------------
    def home(self, user: str) -> str | None:
        canonical = self.users.canonical(user)
        return self._homes.get(canonical) if canonical is not None else None

    def flow(self, pool: str) -> Flow | None:
        flow = self._pool_flows.get(pool)
        return flow if flow is not None and self.transports.is_open(flow) else None

    async def connect(self, pool: str) -> Flow:
        entry = next(p for p in self.config.director.pools if p.name == pool)
        host, _, port = entry.next_hop.rpartition(":")
        flow = await self.transports.connect(
            "tls", (host.strip("[]"), int(port)), server_hostname=entry.next_hop_name
        )
        self._pool_flows[pool] = flow
        return flow

    # -- Reach ------------------------------------------------------------------------------
    def usable(self, flow: Flow) -> Flow | None:
        return flow if self.transports.is_open(flow) else None

    # -- Edges ------------------------------------------------------------------------------
    def _from_edge(self, flow: Flow) -> bool:
        if not flow.secure or not self._edges:
            return False
        known = self._edge_flows.get(flow.conn_id)
        if known is None:
            der = self.transports.peer_certificate_der(flow)
            try:
                names = set(server_identity(der).names) if der else set()
            except PkiError:
                names = set()
            known = self._edge_flows[flow.conn_id] = bool(names & self._edges)
        return known

    def _edge_client(self, request: Request, flow: Flow) -> str | None:
        if not self._from_edge(flow):
            return None
        vias = request.vias
        if len(vias) < 2:
            return None
        try:
            return canonical_host(vias[1].received or vias[1].host)
        except ValueError:
            return None

    # -- lifecycle --------------------------------------------------------------------------
    async def run(self) -> None:
        await self._reload_users()
        settings = self.config.director
        _host, port = await self.transports.listen("tls", settings.bind, settings.port)
        self.local.ports["tls"] = port
        self.local.addresses.add(canonical_host(settings.bind))
        c = self.config
        host = FeatureHost(
            registry=Registry(), stack=self.stack, local=self.local, location=NoLocations(),
            users=self.users,
        )  # fmt: skip
        self.proxy = Proxy(self.stack, self.local, DialogTable())
        auth = Authenticator(
            realm=c.server.domain, users=self.users, nonce_lifetime=c.auth.nonce_lifetime,
            algorithms=tuple(c.auth.algorithms), md5_only_agents=tuple(c.auth.md5_only_user_agents),
        )  # fmt: skip
        signin = SignIn(
            self.stack, auth, self.users, self.guard, lockout=lockout_from_config(c.lockout),
            client_source=self._edge_client if self._edges else None,
        )  # fmt: skip
        self.host = host
        self.router = DirectorRouter(
            host=host, proxy=self.proxy, signin=signin, reach=self, homes=self,
            edges=frozenset(c.trust.edges), is_edge=self._from_edge if self._edges else None,
        )  # fmt: skip
        self.stack.attach(self.router, self.transports)
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop_event.set)
        loop.add_signal_handler(signal.SIGINT, self.stop_event.set)
        (self.data_dir / PID_FILE).write_text(f"{os.getpid()}\n")
        self.tasks = [
            asyncio.create_task(self._every(USER_POLL_INTERVAL, self._reload_users)),
            asyncio.create_task(self._every(BAN_SWEEP_INTERVAL, self._ended_bans)),
        ]
        await self.ops.start(
            registrations=lambda: 0,
            connections=lambda: self.transports.connection_count,
            subscriptions=None,
            certificate_expiry=None,
            listening=lambda: bool(self.transports.listeners) and not self.stack.draining,
            database=None,
        )
        log.info(
            "director ready",
            pools=sorted(self.databases),
            users=len(self.users),
            listeners=[f"{t}:{h}:{p}" for t, h, p in self.transports.listeners],
        )
        try:
            await self.stop_event.wait()
        finally:
            await self._shutdown()

    async def _reload_users(self) -> None:
        """Every pool's users, when any pool's counter moved: one cache, and each user's
        home (the pool whose back end holds them)."""
        moved = False
        for name, db in self.databases.items():
            generation = await GenerationStore(db).get(USERS)
            if generation != self._generations[name]:
                self._generations[name], moved = generation, True
        if not moved:
            return
        table: dict[str, UserCredentials] = {}
        homes: dict[str, str] = {}
        domain = self.config.server.domain
        for name, db in self.databases.items():
            rows = await UserStore(db).all_credentials()
            for (user, user_domain), creds in rows.items():
                if user_domain != domain:
                    continue
                if user in homes:
                    log.error("user in two pools; the first keeps it", user=user, pool=name)
                    continue
                homes[user] = name
                table[user] = UserCredentials(
                    {"MD5": creds.ha1_md5, "SHA-256": creds.ha1_sha256}, creds.disabled
                )
        self.users.replace(table)
        self._homes = homes
        log.info("users reloaded", users=len(table), pools=len(self.databases))

    async def _every(self, interval: float, job: object) -> None:
        assert callable(job)
        while True:
            await asyncio.sleep(interval)
            try:
                await job()
            except Exception as exc:  # the next round retries
                log.warning("background job failed", reason=str(exc))

    async def _ended_bans(self) -> None:
        for source in self.guard.ended_bans(time.time())[:100]:
            metrics.SOURCE_UNBANS.inc()
            log.info("source ban ended", source=source)

    def _on_closed(self, flow: Flow) -> None:
        self._edge_flows.pop(flow.conn_id, None)
        self.local.forget_reach(flow)

    async def _shutdown(self) -> None:
        log.info("stopping", open_transactions=len(self.layer))
        self.stack.draining = True
        await self.transports.stop_listening()
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while (self.proxy.pending() or self.host.pending()) and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        self.stack.stop()
        await self.transports.close()
        for db in self.databases.values():
            await db.dispose()
        with contextlib.suppress(OSError):
            (self.data_dir / PID_FILE).unlink()
        log.info("stopped")
        await self.ops.stop()


def run_director(data_dir: Path, config: Config) -> None:
    """Run a Director in the foreground until SIGTERM/SIGINT."""
    import uvloop

    async def main() -> None:
        await DirectorServer(data_dir, config).run()

    uvloop.run(main())
