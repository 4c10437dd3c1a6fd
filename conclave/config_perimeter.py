"""The sections of ``conclave.toml`` for the perimeter roles and the trust between
processes: ``[edge]``, ``[federation]``, ``[director]`` and ``[trust]`` (docs/edge.md), and an
Enterprise pool's ``[pool]`` and ``[pairing]`` (docs/pools.md).
``conclave topology provision`` writes them from the topology."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AfterValidator, model_validator

from .config_fields import (
    Bool,
    Duration,
    Int,
    Port,
    RelPath,
    Str,
    _endpoint,
    _host,
    _host_name,
    _ip,
    _not_empty,
    _Section,
    _within,
    parse_duration,
)  # fmt: skip


class PartnerSection(_Section):
    """One federated partner, as the Edge uses it."""

    domain: Annotated[Str, AfterValidator(_host_name)]
    edge: Str = ""
    """the partner's edge FQDN; empty: DNS SRV _sipfederationtls._tcp.<domain>"""
    port: Port = 5061
    ca: Str = ""
    """PEM file of the CAs that sign the partner's certificates"""
    presence: Bool = False
    rate: Annotated[Int, _within(int, 1, 10_000)] = 20
    """requests per second accepted from the partner"""


class FederationSection(_Section):
    """A Front End's way to partner organisations: through the Edge."""

    enabled: Bool = False
    """route requests for other domains to the Edge, and take partners' requests from it"""
    edge: Annotated[Str, AfterValidator(_endpoint)] = ""
    """ip:port of the Edge's internal side"""
    edge_name: Str = ""
    """the internal FQDN the Edge's certificate names"""


class EdgeSection(_Section):
    """The Access Edge role (docs/edge.md); ``conclave topology provision`` writes it."""

    internal_name: Annotated[Str, AfterValidator(_host)] = "localhost"
    """the internal interface's FQDN (its certificate names it)"""
    internal_bind: Annotated[Str, AfterValidator(_ip)] = "127.0.0.1"
    internal_port: Port = 5061
    """mutual TLS from the pool and directors"""
    external_name: Annotated[Str, AfterValidator(_host)] = "localhost"
    """the access FQDN remote users reach (often sip.<domain>)"""
    external_bind: Annotated[Str, AfterValidator(_ip)] = "127.0.0.1"
    access_port: Port = 443
    """SIP over TLS from remote users"""
    remote_users: Bool = False
    """relay remote users' sign-ins (the external access policy)"""
    domains: tuple[Str, ...] = ()
    """the organisation's SIP domains"""
    next_hop: Annotated[Str, AfterValidator(_endpoint)] = ""
    """ip:port of the Director or Front End pool that remote users' requests go to"""
    next_hop_name: Str = ""
    """the name the next hop's certificate must carry"""
    inside_peers: tuple[Str, ...] = ()
    """names of the servers allowed to connect to the internal side (their certificates)"""
    external_cert: RelPath = "tls/external.crt"
    external_key: RelPath = "tls/external.key"
    federation: Bool = False
    """federate with partner organisations on the federation listener (mutual TLS)"""
    federation_port: Port = 5061
    """SIP over mutual TLS with federated partners, on external_bind"""
    partners: tuple[PartnerSection, ...] = ()
    """partner organisations and their settings"""
    allow: tuple[Str, ...] = ()
    """partner domains allowed (a domain and its subdomains)"""
    block: tuple[Str, ...] = ()
    """domains always refused (beats allow and open)"""
    open: Bool = False
    """federate with any domain not blocked"""
    discovery: Bool = False
    """federate with discovered domains too, throttled (docs/edge.md)"""
    discovery_ca: Str = ""
    """PEM file of the CAs that certify discovered partners; empty: the system's roots"""
    nameservers: tuple[Str, ...] = ()
    """DNS servers (ip:port) for partners' records; none: the system's"""
    private_addresses: Bool = False
    """let partners' DNS name private or loopback addresses (a lab only)"""


class DirectorPoolSection(_Section):
    """A Front End pool a Director sends users to."""

    name: Str
    database: Annotated[Str, AfterValidator(_not_empty)]
    """the pool's back end, where its users are (read only)"""
    next_hop: Annotated[Str, AfterValidator(_endpoint)]
    """ip:port of a Front End of the pool"""
    next_hop_name: Str
    """the name its certificate carries (the pool FQDN)"""


class DirectorSection(_Section):
    """The Director role (docs/edge.md); ``conclave topology provision`` writes it."""

    bind: Annotated[Str, AfterValidator(_ip)] = "127.0.0.1"
    port: Port = 5061
    """SIP over TLS from the Edges (and clients inside)"""
    pools: tuple[DirectorPoolSection, ...] = ()
    """the Front End pools whose users it authenticates and routes"""


class TrustSection(_Section):
    """Servers a Front End trusts to speak for the clients behind them."""

    edges: tuple[Str, ...] = ()
    """internal FQDNs of the Edges whose clients' addresses (in their Via) count (docs/edge.md)"""
    addresses: tuple[Str, ...] = ()
    """the Edges' internal addresses: exempt from per-source limits (their clients are not)"""
    edge_endpoints: tuple[Str, ...] = ()
    """ip:port of each Edge's internal side, in the order of edges (remote users' requests)"""
    directors: tuple[Str, ...] = ()
    """FQDNs of the Directors whose authentication a Front End believes (docs/edge.md)"""
    director_addresses: tuple[Str, ...] = ()
    """the Directors' addresses: exempt from per-source limits"""


def _redis_url(value: str) -> str:
    if value and not value.startswith(("redis://", "rediss://", "unix://", "sentinel://")):
        raise ValueError("must be a redis://, rediss://, unix:// or sentinel:// URL")
    return value


MAX_WORKERS = 64
"""Front End processes one host may run: more than any machine has cores for, few
enough that a typo cannot start thousands of processes."""


class PoolSection(_Section):
    """An Enterprise pool's shared state (docs/pools.md); provisioning writes it."""

    redis: Annotated[Str, AfterValidator(_redis_url)] = ""
    """the pool state: redis://host:port/db, or sentinel://host:port,.../SERVICE; empty: none"""
    key_prefix: Str = "conclave:"
    """prefix of every Redis key and channel of this pool (pools may share one Redis)"""
    members: tuple[Str, ...] = ()
    """FQDNs of the pool's other Front Ends (their server certificates name them)"""
    member_endpoints: tuple[Annotated[Str, AfterValidator(_endpoint)], ...] = ()
    """ip:port of each other Front End, in the order of members"""
    member_names: tuple[Str, ...] = ()
    """each other member's name in the pool state where not its FQDN (workers: w1.<fqdn>)"""
    workers: Annotated[Int, _within(int, 1, MAX_WORKERS)] = 1
    """Front End processes on this host, sharing its SIP listeners (serve --workers N)"""
    worker_port: Port = 5090
    """worker i (from 0) relays for its siblings on the bind address, port worker_port + i"""

    @model_validator(mode="after")
    def _paired(self) -> PoolSection:
        if len(self.members) != len(self.member_endpoints):
            raise ValueError("members and member_endpoints must list the same Front Ends")
        if self.member_names and len(self.member_names) != len(self.members):
            raise ValueError("member_names must name each of members, in order")
        if self.worker_port + self.workers - 1 > 65535:
            raise ValueError("worker_port + workers - 1 must be a port (at most 65535)")
        return self

    def names(self) -> tuple[str, ...]:
        """The other members' names in the pool state (their FQDNs unless renamed)."""
        return self.member_names or self.members

    def endpoint_hosts(self) -> tuple[str, ...]:
        """The other members' addresses (exempt from per-source limits)."""
        return tuple(e.rpartition(":")[0].strip("[]") for e in self.member_endpoints)


class PairingSection(_Section):
    """Pool pairing: the backup service and the partner's heartbeat (docs/pools.md)."""

    partner: Str = ""
    """the partner pool's name; empty: this pool is not paired"""
    pool: Str = ""
    """this pool's name, as the partner knows it"""
    listen: Annotated[Str, AfterValidator(_endpoint)] = ""
    """ip:port of this Front End's pairing listener (mutual TLS, the partner's members only)"""
    partner_members: tuple[Str, ...] = ()
    """FQDNs of the partner pool's Front Ends (their certificates name them)"""
    partner_endpoints: tuple[Annotated[Str, AfterValidator(_endpoint)], ...] = ()
    """ip:port of each partner member's pairing listener, in the order of partner_members"""
    failover: Literal["manual", "automatic"] = "manual"
    """take the partner's users over by hand (conclave pool failover) or when it is silent"""
    failover_after: Annotated[Duration, _within(parse_duration, "5s", "1d")] = 120
    """with automatic failover: how long the partner may be silent"""

    @model_validator(mode="after")
    def _paired(self) -> PairingSection:
        if len(self.partner_members) != len(self.partner_endpoints):
            raise ValueError("partner_members and partner_endpoints must list the same hosts")
        if self.partner and not (self.listen and self.partner_endpoints and self.pool):
            raise ValueError("a paired pool needs pool, listen and the partner's endpoints")
        return self
