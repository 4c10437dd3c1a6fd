"""The Standard Edition server: every Front End service and the embedded back end.

:func:`serve` assembles the parts (config, store, PKI, transport, stack,
router and services), runs until SIGTERM or SIGINT, and then stops
gracefully:

1. stop listening and refuse new out-of-dialog work with 503;
2. let open transactions finish (bounded by :data:`DRAIN_TIMEOUT`);
3. flush registrations to the store, close connections and the database.

SIGHUP reloads the user list, contact lists and privacy rules at once
(``conclave user|contacts|privacy …`` send it). In case a signal is missed,
the store's change counters (:mod:`conclave.store.generations`) are read
every :data:`USER_POLL_INTERVAL` (users) and
:data:`~conclave.services.presence.service.RELOAD_POLL_INTERVAL` (contacts
and privacy) seconds, and a table is re-read only when its counter moved.
SIGHUP also reloads the TLS certificate (``conclave certs reload`` sends it); a
watcher task reloads it when its files change, warns before it expires and
renews it when our CA issued it (:mod:`conclave.pki.lifecycle`).
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import gc
import ipaddress
import os
import signal
import time
from pathlib import Path
from typing import Any

import structlog

from conclave.cluster.locations import PoolLocationService
from conclave.cluster.lockout import SharedLockout
from conclave.cluster.pairing import PairingService
from conclave.cluster.presence import PoolPresenceState
from conclave.cluster.state import PoolState, start_pool
from conclave.cluster.tokens import MemberTokens
from conclave.config import PID_FILE, Config
from conclave.core.auth import CredentialCache, UserCredentials
from conclave.core.features import Feature
from conclave.core.locations import Binding
from conclave.core.router import SUPPORTED
from conclave.core.stack import SipStack
from conclave.ops import log as logsetup
from conclave.ops import metrics
from conclave.ops.gcpause import PauseWatch, run_full_collections, settle_heap, tune_collector
from conclave.ops.lockout import LockoutKeeper
from conclave.ops.runtime import Operations, split_endpoint
from conclave.pki.identity import identity_from_peer_cert
from conclave.pki.info import describe
from conclave.pki.lifecycle import CertificateWatcher, RenewalPolicy, open_server_tls
from conclave.pki.reload import ServerTls
from conclave.pki.settings import ca_directory, renewal_policy, server_tls_files
from conclave.pki.tls import mutual_client_context, server_context
from conclave.relaying import (
    BAN_SWEEP_INTERVAL,
    PeerTrust,
    every,
    log_ended_bans,
    source_guard,
)
from conclave.services.location import MemoryLocationService
from conclave.sip.address import parse_name_addr
from conclave.sip.errors import RemoteProtocolError
from conclave.sip.flow import Flow
from conclave.sip.local import LocalEndpoint
from conclave.sip.transaction import TransactionLayer
from conclave.sip.uri import SipURI
from conclave.store.database import Database
from conclave.store.generations import USERS, GenerationStore, Reloader
from conclave.store.registrations import RegistrationStore
from conclave.store.users import UserStore
from conclave.transport.manager import TransportManager
from conclave.web.api import user_api
from conclave.web.console import add_console
from conclave.web.http import HttpListener
from conclave.web.publish import Publication
from conclave.web.sipws import SipWebSocket, web_origins
from conclave.web.site import WEB_LIMITS, web_app
from conclave.web.tokens import Sessions
from conclave.webapi import ServerBackend
from conclave.wiring import assemble
from conclave.workers import Worker, member_name, relay_host, worker_config

log = structlog.get_logger("conclave.server")

DRAIN_TIMEOUT = 10.0
"""Longest a graceful stop waits for open transactions to get their final
responses. An INVITE that is still ringing is cancelled by its caller's
CANCEL or ends with the connection; 10 s covers any non-INVITE exchange."""
USER_POLL_INTERVAL = 5.0
"""Seconds between reads of the ``users`` change counter, so that `conclave
user …` takes effect within this long even when the SIGHUP it sends cannot
reach the server. A poll is one primary-key SELECT; the full re-read of the
users table (on the event loop: 6% of the call benchmark's CPU with 10,000
users when it ran every 5 s, BENCHMARKS.md) runs only when the counter moved."""
PURGE_INTERVAL = 10.0
"""Seconds between sweeps of expired registrations."""


class Server:
    """One Standard Edition process. Create, then ``await run()``."""

    def __init__(self, data_dir: Path, config: Config, worker: Worker | None = None) -> None:
        self.data_dir = data_dir
        self.config = config
        self.worker = worker
        """This host's worker this process is (``serve --workers N``), with ``config``
        already the worker's (:func:`conclave.workers.worker_config`)."""
        self.chief = worker is None or worker.index == 0
        """Runs the once-per-host duties: renewals, the lockout file, pairing."""
        index = worker.index if worker is not None else 0
        self.ops = Operations(data_dir, config, role="standard", worker=index)  # agent first
        self.publication: Publication | None = None
        self.web: HttpListener | None = None
        self.stop_event = asyncio.Event()
        self.users = CredentialCache()
        self.db = Database(config.database_url(data_dir))
        generations = GenerationStore(self.db)
        self.user_reloader = Reloader("users", self._reload_users, lambda: generations.get(USERS))
        self.pool: PoolState | None = None
        self.member_tokens = MemberTokens()
        self.presence_state: PoolPresenceState | None = None
        if config.pool.redis:  # an Enterprise pool member: registrations and presence shared
            host = config.server.host
            member = host if worker is None else member_name(host, index)
            self.pool = PoolState(config.pool.redis, config.pool.key_prefix, member)
            self.location: MemoryLocationService = PoolLocationService(
                self.pool, self.member_tokens, self._member_hop, via_edge=self._via_edge
            )
            self.presence_state = PoolPresenceState(self.pool)
        else:
            self.location = MemoryLocationService(RegistrationStore(self.db))
        limits = config.limits
        # Edges, Directors and pool members: the clients behind them are judged one by one.
        trust = config.trust
        # A worker's siblings are not exempt by address (loopback is everyone's on this
        # host): what they relay arrives on the relay listener, unlimited (_on_message).
        pool = config.pool
        members = [
            endpoint.rpartition(":")[0].strip("[]")
            for fqdn, endpoint in zip(pool.members, pool.member_endpoints, strict=True)
            if fqdn.lower() != config.server.host.lower()
        ]
        self.guard = source_guard(config, (*trust.addresses, *trust.director_addresses, *members))
        self.layer = TransactionLayer()
        self.stack = SipStack(layer=self.layer, guard=self.guard, supported=frozenset(SUPPORTED))
        ssl_context = None
        self.tls: ServerTls | None = None
        if config.transports.tls:
            # Validated (and renewed first if it is ours and that fixes it); its
            # context stays the listener's for good and reloads switch handshakes.
            self.tls = open_server_tls(
                server_tls_files(data_dir, config),
                self._renewal(),
                ca_dir=ca_directory(data_dir, config),
                data_dir=data_dir,
            )
            ssl_context = self.tls.context
        client_ssl = None
        if config.federation.enabled or config.trust.edges or config.pool.members:
            # Edges' internal sides and the pool's other members: mutual TLS
            files = server_tls_files(data_dir, config)
            client_ssl = mutual_client_context(
                files.cert, files.key, ca_path=files.ca, crl_path=files.crl
            )
        self._relay: tuple[str, int] | None = None  # a worker's relay listener
        self.transports = TransportManager(
            on_message=self._on_message,
            on_closed=self._on_closed,
            server_ssl=ssl_context,
            client_ssl=client_ssl,
            guard=self.guard,
            max_message_size=limits.max_message_size,
        )
        self.edge_links = EdgeLinks(self)
        self.peers = PeerTrust(
            self.transports, edges=trust.edges, directors=trust.directors,
            members=config.pool.members, on_edge=self.edge_links.seen,
        )  # fmt: skip
        if self.tls is not None:  # a reload that brings a revocation closes what it condemns
            self.tls.peer_closer = self.transports.close_tls_connections
        domain = config.server.domain
        names = {f"sip.{domain}"}
        if self.tls is not None:  # a client verifying our certificate uses one of its names
            names.update(n for n in describe(self.tls.certificate).dns_names if "*" not in n)
        if self.pool is not None:  # Path entries through this member name it
            names.add(self.pool.member)
        self.local = LocalEndpoint(host=config.server.host, domain=domain, names=names)
        self.tasks: list[asyncio.Task[None]] = []
        self.features: dict[str, Feature] = {}  # set by _wire: the enabled ones, by name
        self.pairing: PairingService | None = None

    # -- lifecycle -------------------------------------------------------------------------
    async def run(self) -> None:
        await self.db.check_schema()
        await self.user_reloader.reload(trigger="startup")
        restored = await self.location.load(time.time())
        await self._listen()
        self._wire()
        if self.pool is not None:
            self.tasks += await start_pool(self.pool)
        self.pairing = await self._start_pairing()
        for feature in self.features.values():
            await feature.start()
        self._install_signals()
        self._write_pid()
        self.tasks += [
            asyncio.create_task(self.location.run_persistence(1.0)),
            asyncio.create_task(every(USER_POLL_INTERVAL, self._poll_users)),
            asyncio.create_task(every(PURGE_INTERVAL, self._purge)),
            asyncio.create_task(every(BAN_SWEEP_INTERVAL, self._ended_bans)),
        ]
        if self.chief:  # one lockout file per data directory
            self.tasks.append(asyncio.create_task(self.lockout.run()))
        for feature in self.features.values():
            self.tasks += [asyncio.create_task(job) for job in feature.jobs()]
        if self.tls is not None:
            watcher = CertificateWatcher(
                self.tls,
                self._renewal(),
                ca_dir=ca_directory(self.data_dir, self.config),
                data_dir=self.data_dir,
            )
            self.tasks.append(asyncio.create_task(watcher.run()))
        presence, tls = self.features.get("presence"), self.tls
        sessions = Sessions()  # web API sign-ins, for both listeners
        backend = ServerBackend(self, sessions)
        console = self.config.admin.console and self.chief and tls is not None
        await self.ops.start(  # log delivery, debug sessions, gauges, admin /metrics
            registrations=self.location.count,
            connections=lambda: self.transports.connection_count,
            subscriptions=(lambda: presence.stats()["subscriptions"]) if presence else None,
            certificate_expiry=(lambda: tls.certificate.not_valid_after_utc) if tls else None,
            listening=lambda: bool(self.transports.listeners) and not self.stack.draining,
            database=self.db,
            console=(lambda app: add_console(app, backend, sessions)) if console else None,
            tls=tls.context if console and tls is not None else None,
            guard=self._http_guard() if console else None,
        )
        if self.config.web.enabled and self.chief:  # one publication point per host
            host, port = split_endpoint(self.config.web.crl_bind)
            self.publication = Publication(
                ca_directory(self.data_dir, self.config),
                host,
                port,
                self.config.web.crl_url,
                **self._http_guard(),
            )
            await self.publication.start(self.config.server.host)
        if self.config.web.enabled and self.chief and self.tls is not None:
            host, port = split_endpoint(self.config.web.bind)
            sip = SipWebSocket(self.transports) if self.config.transports.ws else None
            self.web = HttpListener(
                web_app(
                    ca_directory(self.data_dir, self.config),
                    sip,
                    self.config.server.domain,
                    api=user_api(backend, sessions),
                ),
                host,
                port,
                name="web",
                limits=WEB_LIMITS,
                tls=self.tls.context,  # the SIP listener's: same certificate, same reloads
                websocket_max_size=self.transports.max_message_size,
                **self._http_guard(),
            )
            port = await self.web.start()
            self.local.ports["wss"] = port  # our Via and Record-Route toward WebSocket clients
            server = self.config.server
            origins = web_origins((server.host, server.domain), port, self.config.web.origins)
            if sip is not None:
                sip.origins = origins
            log.info(
                "web listening", address=host, port=port, origins=sorted(origins),
                sip_websocket=sip is not None,
            )  # fmt: skip
        admission = self.stack.admission
        gc_watch = PauseWatch(on_pause=lambda s: admission.paused(s, self.stack.now()))
        gc_watch.install()
        thresholds = tune_collector()
        self.tasks.append(asyncio.create_task(run_full_collections()))
        log.info(
            "ready",
            domain=self.config.server.domain,
            users=len(self.users),
            registrations_restored=restored,
            listeners=[f"{t}:{h}:{p}" for t, h, p in self.transports.listeners],
            frozen_objects=settle_heap(),  # start-up data out of the collector's scans
        )
        try:
            await self.stop_event.wait()
        finally:
            gc_watch.remove()
            gc.set_threshold(*thresholds)
            await self._shutdown()

    def _http_guard(self) -> dict[str, Any]:
        """What an HTTP listener needs to share SIP's per-source limits and bans."""
        return {"guard": self.guard, "guard_clock": self.stack.wall_clock, "on_ban": self._http_ban}

    def _http_ban(self, ip: str) -> None:
        """A source went over the request rate on HTTP: the ban SIP would log, and
        every connection from it closed, SIP and HTTP alike."""
        metrics.SOURCE_BANS.inc()
        log.warning(
            "source banned", source=ip, reason="request rate", seconds=self.guard.ban_length(ip)
        )
        self.transports.close_connections_from(ip)
        for listener in (self.web, self.publication, self.ops.admin):
            if listener is not None:
                listener.close_from(ip)

    async def _listen(self) -> None:
        t = self.config.transports
        shared = self.worker is not None  # the host's workers share the SIP addresses
        for transport, port in t.enabled():
            _host, bound = await self.transports.listen(transport, t.bind, port, reuse_port=shared)
            self.local.ports[transport] = bound  # the transport logs "listening"
        self.local.addresses.add(t.bind)
        if self.worker is not None:  # its siblings relay here (mutual TLS, members only)
            files = server_tls_files(self.data_dir, self.config)
            crl = files.crl if files.crl is not None and files.crl.exists() else None
            relay = server_context(
                files.cert, files.key, ca_path=files.ca, require_client_cert=True, crl_path=crl
            )
            port = self.config.pool.worker_port + self.worker.index
            _host, bound = await self.transports.listen(
                "tls", relay_host(self.config), port, tls=relay
            )
            self.local.ports["relay"] = bound
            self._relay = (_host, bound)

    def _on_message(self, data: bytes, flow: Flow, queued: float = 0.0) -> None:
        if self._relay is not None and flow.local == self._relay:
            # A worker's relay listener: its siblings only (the TLS handshake took any
            # certificate of our CA, a user's too), each carrying many clients' requests,
            # which the sibling that took them from the client has limited already.
            if not self.peers.from_member(flow):
                log.warning("relay connection refused: not a pool member", peer=str(flow))
                self.transports.close_connection(flow)
                return
            self.stack.on_message(data, flow, queued, guarded=False)
            return
        self.stack.on_message(data, flow, queued)
        with contextlib.suppress(ValueError):
            self.local.addresses.add(str(ipaddress.ip_address(self.config.server.host)))

    def _wire(self) -> None:
        """Build the core and every enabled feature (:func:`conclave.wiring.assemble`)."""
        c = self.config
        built = assemble(
            c,
            self.data_dir,
            self.db,
            stack=self.stack,
            local=self.local,
            location=self.location,
            users=self.users,
            guard=self.guard,
            reach=self,
            certificate_user=self._client_cert_user if c.tls.client_auth == "optional" else None,
            client_source=self.peers.edge_client if self.peers.edges else None,
            federation=EdgeConnection(self) if c.federation.enabled else None,
            is_edge=self._from_trusted
            if self.peers.edges or self.peers.directors or self.peers.members
            else None,
            director=self.peers.from_director if self.peers.directors else None,
            edge_routes=self.edge_links if self.peers.edges or self.peers.members else None,
            device_flow=self._device_flow,
            members=self if self.peers.members else None,
            presence_state=self.presence_state,
        )
        self.host, self.features = built.host, built.features
        self.proxy, self.router = built.proxy, built.router
        self.signin = built.signin
        self.lockout = LockoutKeeper(self.data_dir, built.signin.lockout)
        built.signin.on_lock_change = self.lockout.changed
        if self.pool is not None:  # one lockout for the pool (and the host's workers)
            SharedLockout(self.pool, built.signin.lockout, self.lockout.changed)
        restored = self.lockout.load()
        if restored:
            log.info("lockout state restored", accounts=restored)
        self.stack.attach(self.router, self.transports)

    async def _start_pairing(self) -> PairingService | None:
        """Pool pairing (docs/pools.md): the backup service's listener, sender and watchdog."""
        settings = self.config.pairing
        if not settings.partner or not self.chief:
            return None
        files = server_tls_files(self.data_dir, self.config)
        crl = files.crl if files.crl is not None and files.crl.exists() else None
        server_ssl = server_context(
            files.cert, files.key, ca_path=files.ca, require_client_cert=True, crl_path=crl
        )
        client_ssl = mutual_client_context(
            files.cert, files.key, ca_path=files.ca, crl_path=files.crl
        )
        host, _, port = settings.listen.rpartition(":")
        endpoints = []
        for name, endpoint in zip(
            settings.partner_members, settings.partner_endpoints, strict=True
        ):
            address, _, member_port = endpoint.rpartition(":")
            endpoints.append((name, address.strip("[]"), int(member_port)))
        service = PairingService(
            pool=settings.pool, partner=settings.partner, db=self.db,
            listen=(host.strip("[]"), int(port)), partner_endpoints=endpoints,
            server_ssl=server_ssl, client_ssl=client_ssl, failover=settings.failover,
            failover_after=settings.failover_after,
            on_takeover=lambda: asyncio.ensure_future(self._on_hangup()),
            copies=self._copies_for_pool,
        )  # fmt: skip
        await service.start()
        self.tasks += [
            asyncio.create_task(service.run_sender()),
            asyncio.create_task(service.run_watchdog()),
        ]
        return service

    def _copies_for_pool(self) -> bool:
        """This member sends its pool's backup copies: the first alive by name."""
        if self.pool is None or not self.pool.alive:
            return True
        return min(self.pool.alive | {self.pool.member}) == self.pool.member

    def _from_trusted(self, flow: Flow) -> bool:
        """An Edge, a Director or another member of the pool: each binds the
        in-dialog requests it carries to their parties itself."""
        return self.peers.from_relay(flow) or self.peers.from_member(flow)

    # -- the pool (docs/pools.md) ------------------------------------------------------------
    def from_member(self, flow: Flow) -> bool:
        return self.peers.from_member(flow)

    def device(self, token: str) -> Flow | None:
        """The client connection one of our member tokens names, if still open."""
        flow = self.member_tokens.flow(token)
        return flow if flow is not None and self.transports.is_open(flow) else None

    def _member_hop(self, member: str, token: str) -> str | None:
        """The Path entry through ``member`` to the connection ``token`` names there."""
        port = self.edge_links.member_port(member)
        if port is None:
            return None
        return f"<sip:{token}@{member}:{port};transport=tls;lr>"

    def _via_edge(self, path: tuple[str, ...]) -> bool:
        edge = self.edge_links.edge_of(path)
        return edge is not None and edge in self.peers.edges

    def _device_flow(self, binding: Binding) -> Flow | None:
        """Where a feature's request for a device goes: a remote user's to the Edge its
        Path starts at (an open connection with it), anyone else's on its own flow."""
        edge = self.edge_links.edge_of(binding.path) if binding.path else None
        if edge is not None:
            return self.edge_links.flow(edge)
        return binding.flow if binding.flow is not None else None

    def usable(self, flow: Flow) -> Flow | None:
        """``flow`` if it still works (the router's :class:`~conclave.core.router.Reach`).
        A UDP flow is only an address: if the socket it names is gone (a
        restart on a new port), any of our UDP sockets reaches the same device."""
        if self.transports.is_open(flow):
            return flow
        if flow.transport == "udp":
            return self._udp_flow(flow.remote)
        return None

    def _udp_flow(self, remote: tuple[str, int]) -> Flow | None:
        port = self.local.ports.get("udp")
        if port is None:
            return None
        return Flow("udp", remote, (self.config.transports.bind, port))

    def _install_signals(self) -> None:
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGTERM, self.stop_event.set)
        loop.add_signal_handler(signal.SIGINT, self.stop_event.set)
        loop.add_signal_handler(signal.SIGHUP, lambda: asyncio.ensure_future(self._on_hangup()))

    async def _on_hangup(self) -> None:
        """SIGHUP: reload users, contacts/privacy (whatever the counters say) and the TLS
        certificate (a bad one is refused and logged)."""
        if self.tls is not None:
            self.tls.reload("signal")
        if self.chief:  # `conclave lockout reset` (the pool hears of it)
            self.lockout.apply_resets()
        # A failure keeps the old copy; if a write moved the counter, the next poll retries.
        try:
            await self.user_reloader.reload()
        except Exception as exc:
            log.warning("user reload failed", reason=str(exc))
        for name, feature in self.features.items():
            try:
                await feature.reload()
            except Exception as exc:
                log.warning("feature reload failed", feature=name, reason=str(exc))

    def _client_cert_user(self, flow: Flow) -> str | None:
        identity = identity_from_peer_cert(
            self.transports.peer_certificate(flow), self.config.server.domain
        )
        return identity.user if identity is not None else None

    async def _shutdown(self) -> None:
        log.info("stopping", open_transactions=len(self.layer))
        self.stack.draining = True
        await self.transports.stop_listening(keep_udp=True)
        if self.pairing is not None:
            await self.pairing.close()
        if self.publication is not None:
            await self.publication.stop()
        if self.web is not None:
            await self.web.stop()
        deadline = time.monotonic() + DRAIN_TIMEOUT
        while self._busy() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        if self.pool is not None:
            self.pool.closing = True
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for feature in self.features.values():
            await feature.close()
        await self.host.settle()
        if self.chief:
            self.lockout.save()
        if self.pool is not None:
            await self.pool.leave()
        try:
            written = await self.location.flush()
        except Exception as exc:  # the store is gone: say so, keep stopping
            log.error("registrations not flushed", reason=str(exc))
            written = 0
        self.stack.stop()
        await self.transports.close()
        await self.db.dispose()
        if self.worker is None:
            with contextlib.suppress(OSError):
                (self.data_dir / PID_FILE).unlink()
        log.info("stopped", registrations_flushed=written)
        await self.ops.stop()  # last: the agent forwards "stopped" too

    def _busy(self) -> bool:
        return self.proxy.pending() > 0 or self.host.pending() > 0

    # -- background work -------------------------------------------------------------------
    async def _poll_users(self) -> None:
        await self.user_reloader.reload_if_changed()

    async def _reload_users(self) -> None:
        """Read every user and swap the authenticator's cache (through ``user_reloader``)."""
        domain = self.config.server.domain
        rows = await UserStore(self.db).all_credentials()
        mine = {name: creds for (name, user_domain), creds in rows.items() if user_domain == domain}
        self.users.replace(
            {
                name: UserCredentials(
                    {"MD5": creds.ha1_md5, "SHA-256": creds.ha1_sha256}, creds.disabled
                )
                for name, creds in mine.items()
            }
        )
        enabled = {name for name, creds in mine.items() if not creds.disabled}
        disabled = {name for name, creds in mine.items() if creds.disabled}
        for feature in self.features.values():
            # Removed or disabled users: e.g. their watchers are told, theirs end.
            feature.users_changed(enabled, disabled)

    async def _purge(self) -> None:
        self.location.purge_expired(time.time())

    async def _ended_bans(self) -> None:
        log_ended_bans(self.guard)

    def _on_closed(self, flow: Flow) -> None:
        relay = self.peers.forget(flow)
        self.local.forget_reach(flow)
        if relay:
            # Remote users behind an Edge stay reachable through it on another connection.
            return
        removed = self.location.remove_flow(flow)
        if removed:
            log.info("flow closed; bindings removed", flow=str(flow), removed=removed)

    def _write_pid(self) -> None:
        if self.worker is None:  # workers: their supervisor's pid is the server's
            (self.data_dir / PID_FILE).write_text(f"{os.getpid()}\n")

    def _renewal(self) -> RenewalPolicy:
        """``[tls]`` renewal; a host's workers other than the first only reload what it renews."""
        policy = renewal_policy(self.config)
        return policy if self.chief else dataclasses.replace(policy, auto_renew=False)


class EdgeLinks:
    """The Front End's connections to its Edges, for remote users' requests, and to
    the other members of its pool, for their clients' (:class:`conclave.core.router.EdgeRoutes`)."""

    def __init__(self, server: Server) -> None:
        trust = server.config.trust
        self.server = server
        pool = server.config.pool
        self.endpoints = {
            name.lower(): endpoint
            for name, endpoint in (
                *zip(trust.edges, trust.edge_endpoints, strict=False),
                *zip(pool.names(), pool.member_endpoints, strict=True),
            )
        }
        self.members = frozenset(n.lower() for n in pool.names())
        """The pool's other members by their names in the pool state."""
        self.tls_names = {
            name.lower(): fqdn.lower()
            for name, fqdn in zip(pool.names(), pool.members, strict=True)
            if name.lower() != fqdn.lower()
        }
        """A member whose certificate names it otherwise (a worker: its host)."""
        self._flows: dict[str, Flow] = {}

    def edge_of(self, path: tuple[str, ...]) -> str | None:
        try:
            uri = parse_name_addr(path[0], angle_required=True).uri
        except RemoteProtocolError:
            return None
        host = uri.host.lower() if isinstance(uri, SipURI) else ""
        return host if host in self.endpoints else None

    def member_port(self, member: str) -> int | None:
        endpoint = self.endpoints.get(member.lower())
        if endpoint is None or member.lower() not in self.members:
            return None
        return int(endpoint.rpartition(":")[2])

    def seen(self, edge: str, flow: Flow) -> None:
        """A connection with ``edge`` (it connected to us, or we to it)."""
        self._flows[edge] = flow

    def flow(self, edge: str) -> Flow | None:
        flow = self._flows.get(edge)
        return flow if flow is not None and self.server.transports.is_open(flow) else None

    async def connect(self, edge: str) -> Flow:
        host, _, port = self.endpoints[edge].rpartition(":")
        flow = await self.server.transports.connect(
            "tls", (host.strip("[]"), int(port)), server_hostname=self.tls_names.get(edge, edge)
        )
        self._flows[edge] = flow
        return flow


class EdgeConnection:
    """The Front End's way to the Edge for federation (:class:`conclave.core.router.EdgeLink`)."""

    def __init__(self, server: Server) -> None:
        settings = server.config.federation
        host, _, port = settings.edge.rpartition(":")
        self.server = server
        self.address = (host.strip("[]"), int(port))
        self.name = settings.edge_name
        self.route = f"<sip:{settings.edge_name}:{port};transport=tls;lr>"
        self._flow: Flow | None = None

    def flow(self) -> Flow | None:
        flow = self._flow
        return flow if flow is not None and self.server.transports.is_open(flow) else None

    async def connect(self) -> Flow:
        self._flow = await self.server.transports.connect(
            "tls", self.address, server_hostname=self.name
        )
        return self._flow


def serve(
    data_dir: Path, config: Config, *, worker: Worker | None = None, role: str = "standard"
) -> None:
    """Run a Standard Edition server (or one worker of it) in the foreground until
    SIGTERM/SIGINT."""
    import uvloop

    logsetup.configure(
        level=config.logging.level,
        role=role,
        host=config.server.host,
        worker=None if worker is None else worker.index,
    )
    if worker is not None:
        config = worker_config(config, worker)

    async def main() -> None:
        logsetup.log_loop_errors()
        await Server(data_dir, config, worker).run()

    uvloop.run(main())
