"""The Access Edge process: ``conclave serve --topology FILE --host EDGE``.

It listens on two sides (docs/edge.md):

* the **external** listener (``[edge] external_bind``, ``access_port``):
  SIP over TLS from remote users, with the Edge's external certificate; open
  only when the external access policy lets remote users in;
* the **internal** listener (``internal_bind``, ``internal_port``): SIP over
  mutual TLS only. A peer must present a *server* certificate from the
  organisation's CA that names one of ``inside_peers`` (the pool's and the
  Directors' hosts); anything else is closed at its first message.

Toward the inside it dials the next hop (``next_hop``, verified as
``next_hop_name``) with its internal certificate, and keeps that connection
alive with RFC 5626 CRLF pings. What it relays, and how it hides the inside,
is :mod:`conclave.services.edge.relay`. Per-source limits and bans apply to
outside sources (the next hop is exempt): a ban the Front End reports for a
client is applied here, at the perimeter.
"""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Awaitable
from pathlib import Path

import dns.resolver
import structlog

from conclave.config import Config
from conclave.ops import log as logsetup
from conclave.ops import metrics
from conclave.pki import load_certificates
from conclave.pki.errors import PkiError
from conclave.pki.identity import server_identity
from conclave.pki.tls import mutual_client_context, mutual_server_context, server_context
from conclave.relaying import RelayProcess
from conclave.services.edge.federation import (
    FederationPolicy,
    PartnerPolicy,
    certificate_dns_names,
    covers,
    partner_for_certificate,
)
from conclave.services.edge.relay import EdgeNames, EdgeRelay, Side
from conclave.sip.flow import Flow, canonical_host
from conclave.transport.flow import TransportError
from conclave.transport.manager import TransportManager
from conclave.transport.resolve import FEDERATION_SERVICE, SipResolver, is_public

log = structlog.get_logger("conclave.edge")

KEEPALIVE_INTERVAL = 30.0
"""Seconds between CRLF pings on the connection to the next hop (RFC 5626 §3.5.1),
well inside any idle timeout between the Edge and the pool (Conclave's: 300 s)."""


class EdgeServer(RelayProcess):
    """One Edge process. Create, then ``await run()``."""

    role = "edge"

    def __init__(self, data_dir: Path, config: Config) -> None:
        edge = config.edge
        limits = config.limits
        hop = edge.next_hop.rpartition(":")[0].strip("[]")
        super().__init__(data_dir, config, exempt=[hop] if hop else [])
        tls = config.tls
        cert, key = config.path(data_dir, tls.cert), config.path(data_dir, tls.key)
        ca, crl = config.path(data_dir, tls.ca), config.path(data_dir, tls.crl)
        self.internal_tls = mutual_server_context(cert, key, ca_path=ca, crl_path=crl)
        self.external_tls = server_context(
            config.path(data_dir, edge.external_cert), config.path(data_dir, edge.external_key)
        )
        client_tls = mutual_client_context(cert, key, ca_path=ca, crl_path=crl)
        self.transports = TransportManager(
            on_message=self._on_message,
            on_closed=self._on_closed,
            server_ssl=self.external_tls,
            client_ssl=client_tls,
            guard=self.guard,
            max_message_size=limits.max_message_size,
        )
        self.external: tuple[str, int] | None = None
        self.internal: tuple[str, int] | None = None
        self.federation_address: tuple[str, int] | None = None
        self._trusted: dict[int, bool] = {}
        """Connections on the internal side: whether their certificate is a pool server's."""
        self.federation = federation_policy(data_dir, config)
        self._partners: dict[int, str | None] = {}
        self._cert_names: dict[int, tuple[str, ...]] = {}
        """Federation connections: the DNS names their certificates carry."""
        self._spawned: set[asyncio.Task[None]] = set()
        self.relay: EdgeRelay | None = None
        """Federation connections: the partner each is authenticated as (None: none)."""
        self._partner_tls: dict[str, ssl.SSLContext] = {}
        self.federation_tls = self._federation_server_context() if edge.federation else None
        self.resolver = partner_resolver(config) if edge.federation else None

    # -- the relay's view of the transport (conclave.services.edge.relay.Links) -----------
    def side(self, flow: Flow) -> Side:
        if self.external is not None and flow.local == self.external:
            return "access"
        if flow.conn_id in self._partners or (
            self.federation_address is not None and flow.local == self.federation_address
        ):
            return "federation"
        return "inside"

    def partner_of(self, flow: Flow, claimed: str | None = None) -> str | None:
        if flow.conn_id not in self._partners:
            der = self.transports.peer_certificate_der(flow)
            partner = partner_for_certificate(der, self.federation) if der else None
            self._partners[flow.conn_id] = partner
            self._cert_names[flow.conn_id] = tuple(certificate_dns_names(der)) if der else ()
            if partner is None and not self.federation.discovery:
                log.warning("federation connection refused", peer=str(flow),
                            reason="its certificate names no allowed partner")  # fmt: skip
        listed = self._partners[flow.conn_id]
        if listed is not None or claimed is None or not self.federation.discovery:
            return listed
        # Discovery: a certificate (from the discovery CAs) for a host in the claimed domain.
        claimed = claimed.lower()
        names = self._cert_names.get(flow.conn_id, ())
        if self.federation.allowed(claimed) and any(covers(claimed, n) for n in names):
            return claimed
        return None

    async def to_partner(self, domain: str) -> Flow:
        """Dial ``domain``'s edge: the fixed one the topology names, else DNS SRV."""
        assert self.resolver is not None
        partner = self.federation.partner(domain)
        if partner.edge:
            hops = [(partner.edge, a, partner.port) for a in await self._addresses(partner.edge)]
        else:
            found = await self.resolver.servers(domain, FEDERATION_SERVICE)
            hops = [(h.target, h.address, h.port) for h in found]
        context = self._client_context(domain)
        failures = []
        for name, address, port in hops:
            try:
                flow = await self.transports.connect(
                    "tls", (address, port), server_hostname=name, tls=context
                )
            except TransportError as exc:
                failures.append(str(exc))
                continue
            der = self.transports.peer_certificate_der(flow)
            names = certificate_dns_names(der) if der else []
            if self.federation.discovered(domain):
                # Verified against the discovery CAs for the SRV target's name (TLS did it).
                ours = any(covers(domain, n) for n in names)
            else:
                ours = der is not None and partner_for_certificate(der, self.federation) == domain
            if not ours:
                self.transports.close_connection(flow)
                failures.append(f"{name}: its certificate is not {domain}'s")
                continue
            self._partners[flow.conn_id] = domain
            self._cert_names[flow.conn_id] = tuple(names)
            log.info("partner connected", partner=domain, edge=name, address=address)
            return flow
        raise TransportError(f"no edge of {domain} reachable: {'; '.join(failures) or 'none'}")

    async def _addresses(self, host: str) -> list[str]:
        assert self.resolver is not None
        found = await self.resolver.addresses(host)
        usable = [a for a in found if self.resolver.allow_private or is_public(a)]
        if not usable:
            raise TransportError(f"{host} resolves to no usable address")
        return usable

    def _client_context(self, domain: str) -> ssl.SSLContext:
        context = self._partner_tls.get(domain)
        if context is None:
            edge = self.config.edge
            cert = self.config.path(self.data_dir, edge.external_cert)
            key = self.config.path(self.data_dir, edge.external_key)
            entry = next((p for p in edge.partners if p.domain.lower() == domain), None)
            bundle = entry.ca if entry is not None else ""
            if not bundle and self.federation.discovered(domain):
                bundle = edge.discovery_ca
            if bundle:
                context = mutual_client_context(
                    cert, key, ca_path=self.config.path(self.data_dir, bundle), crl_path=None
                )
            else:  # a partner with a public certificate
                context = ssl.create_default_context()
                context.load_cert_chain(cert, key)
            self._partner_tls[domain] = context
        return context

    def _federation_server_context(self) -> ssl.SSLContext:
        """Mutual TLS on the federation listener: every partner's CAs (and the public
        roots when a partner has none); which partner a peer is comes after."""
        edge = self.config.edge
        cert = self.config.path(self.data_dir, edge.external_cert)
        key = self.config.path(self.data_dir, edge.external_key)
        bundles = [self.config.path(self.data_dir, p.ca) for p in edge.partners if p.ca]
        if edge.discovery and edge.discovery_ca:
            bundles.append(self.config.path(self.data_dir, edge.discovery_ca))
        context = server_context(cert, key)
        for bundle in bundles:
            context.load_verify_locations(cafile=str(bundle))
        public = any(not p.ca for p in edge.partners) or edge.allow or edge.open
        if not bundles or public or (edge.discovery and not edge.discovery_ca):
            context.load_default_certs(ssl.Purpose.CLIENT_AUTH)
        context.verify_mode = ssl.CERT_REQUIRED
        return context

    def usable(self, flow: Flow) -> bool:
        return self.transports.is_open(flow)

    async def inward(self) -> Flow:
        edge = self.config.edge
        host, _, port = edge.next_hop.rpartition(":")
        return await self.transports.connect(
            "tls", (host.strip("[]"), int(port)), server_hostname=edge.next_hop_name
        )

    def ban(self, ip: str, seconds: float) -> None:
        self.guard.ban(ip, time.time(), seconds)
        metrics.SOURCE_BANS.inc()
        log.warning("source banned", source=ip, reason="reported by the pool", seconds=seconds)
        self.transports.close_connections_from(ip)

    # -- lifecycle -------------------------------------------------------------------------
    async def run(self) -> None:
        edge = self.config.edge
        names = self._names()
        self.relay = EdgeRelay(
            self.stack, names, self, spawn=self._spawn, federation=self.federation
        )
        self.stack.attach(self.relay, self.transports)
        self.internal = await self.transports.listen(
            "tls", edge.internal_bind, edge.internal_port, tls=self.internal_tls
        )
        if edge.remote_users:
            self.external = await self.transports.listen(
                "tls", edge.external_bind, edge.access_port
            )
        if self.federation_tls is not None:
            self.federation_address = await self.transports.listen(
                "tls", edge.external_bind, edge.federation_port, tls=self.federation_tls
            )
        await self.serve([(KEEPALIVE_INTERVAL, self._keepalive)])
        log.info(
            "edge ready",
            external=f"{edge.external_name}:{edge.access_port}" if edge.remote_users else "",
            internal=f"{edge.internal_name}:{edge.internal_port}",
            next_hop=edge.next_hop_name,
            remote_users=edge.remote_users,
            federation=edge.federation,
            partners=sorted(self.federation.partners),
            listeners=[f"{t}:{h}:{p}" for t, h, p in self.transports.listeners],
        )
        await self.wait_and_stop(self._spawned)

    def _names(self) -> EdgeNames:
        edge = self.config.edge
        return EdgeNames(
            external_host=edge.external_name,
            external_port=edge.access_port,
            internal_host=edge.internal_name,
            internal_port=edge.internal_port,
            domains=frozenset(d.lower() for d in edge.domains),
            federation_port=edge.federation_port,
            external_aliases=frozenset({canonical_host(edge.external_bind)}),
            internal_aliases=frozenset({canonical_host(edge.internal_bind)}),
        )

    def _spawn(self, job: Awaitable[None]) -> None:
        async def wrapped() -> None:
            await job

        task = asyncio.get_running_loop().create_task(wrapped())
        self._spawned.add(task)
        task.add_done_callback(self._spawned.discard)

    def _on_message(self, data: bytes, flow: Flow, queued: float = 0.0) -> None:
        if self.internal is not None and flow.local == self.internal and not self._inside_ok(flow):
            return
        if flow.conn_id in self._partners or (
            self.federation_address is not None and flow.local == self.federation_address
        ):
            if self.partner_of(flow) is None and not self.federation.discovery:
                self.transports.close_connection(flow)
                return
            # All of a partner's users share its connections: limited per partner instead.
            self.stack.on_message(data, flow, queued, guarded=False)
            return
        self.stack.on_message(data, flow, queued)

    def _inside_ok(self, flow: Flow) -> bool:
        """A connection on the internal side must be one of ``inside_peers``' servers."""
        known = self._trusted.get(flow.conn_id)
        if known is not None:
            return known
        der = self.transports.peer_certificate_der(flow)
        allowed = {n.lower() for n in self.config.edge.inside_peers}
        reason = ""
        try:
            identity = server_identity(der) if der else None
        except PkiError as exc:
            identity, reason = None, str(exc)
        ok = identity is not None and bool(allowed & set(identity.names))
        if not ok:
            log.warning(
                "internal connection refused",
                peer=str(flow),
                reason=reason or "its certificate names no server of the pool",
            )
            self.transports.close_connection(flow)
        self._trusted[flow.conn_id] = ok
        return ok

    def _on_closed(self, flow: Flow) -> None:
        self._trusted.pop(flow.conn_id, None)
        self._partners.pop(flow.conn_id, None)
        self._cert_names.pop(flow.conn_id, None)
        if self.relay is not None:
            self.relay.flow_closed(flow)

    async def _keepalive(self) -> None:
        inside = self.relay.inside if self.relay is not None else None
        if inside is not None and self.transports.is_open(inside):
            self.transports.send(inside, b"\r\n\r\n")

    def pending(self) -> int:
        return self.relay.pending() if self.relay is not None else 0


def federation_policy(data_dir: Path, config: Config) -> FederationPolicy:
    """The Edge's federation settings, with each partner's CA certificates loaded."""
    edge = config.edge
    partners = {}
    for entry in edge.partners:
        cas = tuple(load_certificates(config.path(data_dir, entry.ca))) if entry.ca else ()
        domain = entry.domain.lower()
        partners[domain] = PartnerPolicy(
            domain, entry.edge, entry.port, entry.presence, entry.rate, cas
        )
    return FederationPolicy(
        enabled=edge.federation,
        partners=partners,
        allow=tuple(d.lower() for d in edge.allow),
        block=tuple(d.lower() for d in edge.block),
        open=edge.open,
        discovery=edge.discovery,
    )


def partner_resolver(config: Config) -> SipResolver:
    """The resolver for partners' records: the name servers the topology gives, else the
    system's."""
    edge = config.edge
    if edge.nameservers:
        first = edge.nameservers[0]
        port = int(first.rpartition(":")[2]) if ":" in first else 53
        hosts = [n.rpartition(":")[0].strip("[]") if ":" in n else n for n in edge.nameservers]
    else:
        hosts, port = [str(n) for n in dns.resolver.Resolver().nameservers], 53
    return SipResolver(hosts, port=port, allow_private=edge.private_addresses)


def run_edge(data_dir: Path, config: Config) -> None:
    """Run an Edge in the foreground until SIGTERM/SIGINT."""
    import uvloop

    async def main() -> None:
        logsetup.log_loop_errors()
        await EdgeServer(data_dir, config).run()

    uvloop.run(main())
