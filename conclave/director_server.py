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

from pathlib import Path

import structlog

from conclave.config import Config
from conclave.core.auth import Authenticator, CredentialCache, UserCredentials
from conclave.core.dialogs import DialogTable
from conclave.core.director import DirectorRouter, NoLocations
from conclave.core.features import FeatureHost, Registry
from conclave.core.proxy import Proxy
from conclave.core.signin import SignIn
from conclave.ops import log as logsetup
from conclave.ops.lockout import lockout_from_config
from conclave.pki.tls import mutual_client_context, server_context
from conclave.relaying import PeerTrust, RelayProcess
from conclave.sip.flow import Flow, canonical_host
from conclave.sip.local import LocalEndpoint
from conclave.store.database import Database
from conclave.store.errors import StoreError
from conclave.store.generations import USERS, GenerationStore
from conclave.store.pairing import PairingStore
from conclave.store.users import Credentials, UserStore
from conclave.transport.manager import TransportManager

log = structlog.get_logger("conclave.director")

USER_POLL_INTERVAL = 5.0
"""Seconds between reads of each pool's ``users`` change counter."""


class DirectorServer(RelayProcess):
    """One Director process. Create, then ``await run()``."""

    role = "director"

    def __init__(self, data_dir: Path, config: Config) -> None:
        # Edges: the clients behind them are judged one by one.
        super().__init__(data_dir, config, exempt=config.trust.addresses)
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
            max_message_size=config.limits.max_message_size,
        )
        self.peers = PeerTrust(self.transports, edges=config.trust.edges)
        domain = config.server.domain
        self.local = LocalEndpoint(
            host=config.server.host, domain=domain, names={f"sip.{domain}", config.server.host}
        )
        self.users = CredentialCache()
        self.databases = {p.name: Database(p.database) for p in config.director.pools}
        self._generations = {name: -1 for name in self.databases}
        self._homes: dict[str, str] = {}
        self._pool_rows: dict[str, tuple[dict[tuple[str, str], Credentials], set[str]]] = {}
        """Per pool: its users as last read, and the pools it serves for (failed over)."""
        self._pool_flows: dict[str, Flow] = {}

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
        edges = bool(self.peers.edges)
        signin = SignIn(
            self.stack, auth, self.users, self.guard, lockout=lockout_from_config(c.lockout),
            client_source=self.peers.edge_client if edges else None,
        )  # fmt: skip
        self.host = host
        self.router = DirectorRouter(
            host=host, proxy=self.proxy, signin=signin, reach=self, homes=self,
            edges=frozenset(c.trust.edges), is_edge=self.peers.from_edge if edges else None,
        )  # fmt: skip
        self.stack.attach(self.router, self.transports)
        await self.serve([(USER_POLL_INTERVAL, self._reload_users)])
        log.info(
            "director ready",
            pools=sorted(self.databases),
            users=len(self.users),
            listeners=[f"{t}:{h}:{p}" for t, h, p in self.transports.listeners],
        )
        await self.wait_and_stop()

    async def _reload_users(self) -> None:
        """Every pool's users, when any pool's counter moved: one cache, and each user's
        home (the pool whose back end holds them; after a pool failover, the partner that
        serves them: docs/pools.md). A pool whose back end cannot be read keeps the users
        it had (its site may be down; its partner lists them once it takes them over)."""
        moved = False
        for name, db in self.databases.items():
            try:
                generation = await GenerationStore(db).get(USERS)
            except StoreError as exc:
                log.warning("pool back end unreadable", pool=name, reason=str(exc))
                continue
            if generation != self._generations[name]:
                self._generations[name], moved = generation, True
        if not moved:
            return
        for name, db in self.databases.items():
            try:
                self._pool_rows[name] = (
                    await UserStore(db).all_credentials(),
                    set(await PairingStore(db).failed_over()),
                )
            except StoreError as exc:
                log.warning("pool back end unreadable; its last users kept", pool=name,
                            reason=str(exc))  # fmt: skip
        table: dict[str, UserCredentials] = {}
        homes: dict[str, str] = {}
        domain = self.config.server.domain
        # A pool serving for a failed partner comes first: those users are at home there now.
        order = sorted(self._pool_rows, key=lambda n: (not self._pool_rows[n][1], n))
        for name in order:
            rows, _serving = self._pool_rows[name]
            for (user, user_domain), creds in rows.items():
                if user_domain != domain:
                    continue
                if user in homes:
                    if not self._pool_rows[homes[user]][1]:
                        log.error("user in two pools; the first keeps it", user=user, pool=name)
                    continue
                homes[user] = name
                table[user] = UserCredentials(
                    {"MD5": creds.ha1_md5, "SHA-256": creds.ha1_sha256}, creds.disabled
                )
        self.users.replace(table)
        self._homes = homes
        log.info("users reloaded", users=len(table), pools=len(self.databases))

    def pending(self) -> int:
        return self.proxy.pending() + self.host.pending()

    def _on_closed(self, flow: Flow) -> None:
        self.peers.forget(flow)
        self.local.forget_reach(flow)

    async def closing(self) -> None:
        for db in self.databases.values():
            await db.dispose()


def run_director(data_dir: Path, config: Config) -> None:
    """Run a Director in the foreground until SIGTERM/SIGINT."""
    import uvloop

    async def main() -> None:
        logsetup.log_loop_errors()
        await DirectorServer(data_dir, config).run()

    uvloop.run(main())
