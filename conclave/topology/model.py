"""The topology document (``topology.toml``) as frozen pydantic models.

One document describes a whole deployment, as Lync's Topology Builder does:
the organisation and its SIP domains, sites, pools and their member hosts,
the roles each host runs, the edge's two interfaces, ports, policies and
pool pairing. This module checks the *shape* of the document (types,
ranges, names, unknown keys); :mod:`conclave.topology.checks` checks its
*meaning* (federation needs an edge, ports do not collide, ...).

Unknown keys are errors so typos are caught. Every error names its path in
the document, e.g. ``pools.eu1.members[2].fqdn`` (see
:mod:`conclave.topology.document`).
"""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, Strict

from conclave.config_fields import Duration
from conclave.config_perimeter import MAX_WORKERS

ROLES = ("frontend", "edge", "director", "mediation", "chat", "logging-controller")
"""Every role a host can be given, in the order documents list them."""

Role = Literal["frontend", "edge", "director", "mediation", "chat", "logging-controller"]
Edition = Literal["standard", "enterprise"]
TransportName = Literal["tls", "tcp", "udp"]

_NAME = re.compile(r"[a-z][a-z0-9-]{0,62}")
_LABEL = r"(?!-)[a-z0-9-]{1,63}(?<!-)"


def _name(value: str) -> str:
    if not _NAME.fullmatch(value):
        raise ValueError(
            f"must be a short name of lower-case letters, digits and '-' "
            f"starting with a letter, not {value!r}"
        )
    return value


def _dns_name(value: str) -> str:
    name = value.strip().lower().rstrip(".")
    if len(name) > 253 or not re.fullmatch(rf"{_LABEL}(\.{_LABEL})+", name):
        raise ValueError(
            f"must be a fully qualified DNS name such as host.example.com, not {value!r}"
        )
    return name


def _ip(value: str) -> str:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        raise ValueError(f"must be an IP address, not {value!r}") from None


def _network(value: str) -> str:
    try:
        return str(ipaddress.ip_network(value.strip(), strict=False))
    except ValueError:
        raise ValueError(f"must be an IP network such as 10.0.0.0/8, not {value!r}") from None


def _endpoint(value: str) -> str:
    """``ip:port`` (IPv6 as ``[::1]:port``), or empty for none."""
    text = value.strip()
    if not text:
        return ""
    match = re.fullmatch(r"\[([0-9A-Fa-f:.]+)\]:(\d{1,5})|([0-9.]+):(\d{1,5})", text)
    if not match:
        raise ValueError(f"must be ip:port (IPv6 as [::1]:port) or empty, not {value!r}")
    host = _ip(match.group(1) or match.group(3))
    port = int(match.group(2) or match.group(4))
    if not 1 <= port <= 65535:
        raise ValueError("port must be 1-65535")
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _not_blank(value: str) -> str:
    if not value.strip():
        raise ValueError("must not be empty")
    return value


def _unique(values: list[str]) -> list[str]:
    seen: set[str] = set()
    for value in values:
        if value in seen:
            raise ValueError(f"lists {value!r} twice")
        seen.add(value)
    return values


Bool = Annotated[bool, Strict()]
Str = Annotated[str, Strict()]
Name = Annotated[Str, AfterValidator(_name)]
DnsName = Annotated[Str, AfterValidator(_dns_name)]
Address = Annotated[Str, AfterValidator(_ip)]
Network = Annotated[Str, AfterValidator(_network)]
Endpoint = Annotated[Str, AfterValidator(_endpoint)]
Port = Annotated[int, Strict(), Field(ge=1, le=65535)]
Text = Annotated[Str, AfterValidator(_not_blank)]


class _Model(BaseModel):
    model_config = ConfigDict(
        frozen=True, extra="forbid", validate_default=True, use_attribute_docstrings=True
    )


class Organisation(_Model):
    """Who the deployment belongs to and the SIP domains its users sign in to."""

    name: Text
    """organisation name (the internal CA is named after it)"""
    sip_domains: Annotated[list[DnsName], Field(min_length=1), AfterValidator(_unique)]
    """SIP domains; the first is the default domain"""


class Requirements(_Model):
    """What the deployment was planned for (``conclave topology plan`` writes it)."""

    users: Annotated[int, Strict(), Field(ge=1)]
    """users to serve"""
    remote_access: Bool = False
    """users sign in from the internet"""
    federation: Bool = False
    """users talk to partner organisations"""
    high_availability: Bool = False
    """a server or a site may fail without losing service"""
    compliance_archiving: Bool = False
    """instant messages must be archived for compliance"""


class Files(_Model):
    """Where the deployment's files live, relative to the topology file."""

    ca: Text = "ca"
    """the organisation's internal CA (made by ``conclave topology provision``)"""
    hosts: Text = "hosts"
    """each host's data directory is hosts/NAME unless --dir says otherwise"""


class Site(_Model):
    """A location: a data centre or office with its own network."""

    description: Str = ""


class Ports(_Model):
    """Listening ports of a host. Only the ports of the host's roles are opened."""

    sip_tls: Port = 5061
    """frontend: SIP over TLS for clients and other servers (mutual TLS)"""
    sip: Port = 5060
    """frontend: plain SIP over TCP and UDP, only when the pool's transports list them"""
    director_tls: Port = 5061
    """director: SIP over TLS"""
    mediation_tls: Port = 5070
    """mediation: SIP over mutual TLS from the pool"""
    gateway_tls: Port = 5067
    """mediation: SIP over TLS from gateways"""
    gateway_tcp: Port = 5068
    """mediation: plain SIP over TCP from gateways that cannot do TLS"""
    chat_tls: Port = 5041
    """chat: SIP over mutual TLS from the pool"""
    syslog_tls: Port = 6514
    """logging-controller: syslog over TLS from every server (RFC 5425)"""
    pairing_tls: Port = 5078
    """paired Front End pools: the backup service (mutual TLS from the partner pool)"""
    worker_tls: Port = 5090
    """frontend with workers > 1: worker i relays for the pool on worker_tls + i (mutual TLS)"""
    edge_internal_tls: Port = 5061
    """edge, internal interface: SIP over mutual TLS from directors and Front Ends"""
    edge_access_tls: Port = 443
    """edge, external interface: SIP over TLS for remote users"""
    edge_federation_tls: Port = 5061
    """edge, external interface: SIP over mutual TLS with federated partners"""
    turn: Port = 3478
    """edge, external interface: the media relay (TURN over UDP and TCP, RFC 8656)"""
    web_https: Port = 443
    """frontend in a pool with web: HTTPS (browser client, user API, SIP over WebSocket)"""
    web_crl: Port = 80
    """frontend in a pool with web: plain HTTP publishing the CA's CRL and certificate"""


class ExtraPort(_Model):
    """A port the operator opens on a host beyond its roles' (management, monitoring)."""

    protocol: Literal["tcp", "udp"]
    port: Port
    interface: Literal["internal", "external"] = "internal"
    """external: on an edge's external interface (internet-facing)"""
    purpose: Text


class EdgeInternal(_Model):
    """The edge's interface toward the internal network."""

    fqdn: DnsName
    address: Address


class EdgeExternal(_Model):
    """The edge's internet-facing interface."""

    fqdn: DnsName
    """access edge FQDN that remote users and partners resolve (often sip.<domain>)"""
    address: Address
    """public address"""
    certificate: Str = ""
    """certificate file (PEM) presented to the internet, relative to the topology file"""


class EdgeInterfaces(_Model):
    """Both interfaces of an edge. Each must be given (``topology check``)."""

    internal: EdgeInternal | None = None
    external: EdgeExternal | None = None


class Host(_Model):
    """One server: its identity, roles and ports."""

    name: Name
    """short name used by ``conclave serve --host NAME``"""
    fqdn: DnsName
    address: Address
    """internal address; the host's listeners bind to it"""
    roles: Annotated[list[Role], Field(min_length=1), AfterValidator(_unique)]
    ports: Ports = Ports()
    edge: EdgeInterfaces | None = None
    """edge only: internal and external interfaces"""
    certificate: Str = ""
    """certificate file (PEM) the host presents, relative to the topology file, for check and
    audit to read when the host's data directory is not hosts/NAME beside the topology (another
    machine, or --dir); empty: the one provisioned in hosts/NAME, if any"""
    admin: Endpoint = ""
    """ip:port of the admin HTTP interface (health, /metrics); empty: off"""
    console: Bool = False
    """frontend with admin: the admin console and admin API on the admin interface (HTTPS)"""
    workers: Annotated[int, Strict(), Field(ge=1, le=MAX_WORKERS)] = 1
    """frontend: Front End processes on this host, sharing its SIP ports (one per core;
    more than one needs the pool's state, pools.X.state)"""
    extra_ports: list[ExtraPort] = []
    """other ports opened on this host; listed in the firewall rules and audited"""


class Gateway(_Model):
    """A PSTN gateway or IP-PBX that a mediation pool talks to."""

    fqdn: DnsName
    port: Port = 5067
    transport: Literal["tls", "tcp"] = "tls"


class DatabaseServer(_Model):
    """One PostgreSQL server of a pool's back end."""

    name: Name
    address: Address
    port: Port = 5432
    api_port: Port = 8008
    """Patroni's REST API (health checks; the other servers and operators use it)"""


class BackEnd(_Model):
    """An Enterprise Front End pool's PostgreSQL servers (docs/pools.md)."""

    servers: Annotated[list[DatabaseServer], Field(min_length=1)]
    failover: Literal["manual", "patroni"] = "patroni"
    """patroni: Patroni promotes a standby when the primary is lost (topology publish writes
    its configuration); manual: the operator promotes, Conclave finds the new primary"""
    synchronous: Bool = True
    """a commit is acknowledged once a standby has it: nothing answered 2xx is lost"""
    etcd: list[Endpoint] = []
    """ip:port of each etcd server that holds Patroni's leader lock"""
    database: Name = "conclave"
    user: Name = "conclave"
    """the database's owner, as whom Front Ends and Directors connect"""
    data_dir: Str = "/var/lib/postgresql/conclave"
    """on each server: the data directories are made under it"""
    bin_dir: Str = "/usr/lib/postgresql/15/bin"
    """on each server: PostgreSQL's programs"""
    socket_dir: Str = "/var/run/postgresql"
    """on each server: PostgreSQL's Unix socket directory"""


class Pool(_Model):
    """Hosts that run the same roles and share one FQDN (and, for Front Ends, a back end)."""

    site: Name
    edition: Edition
    """standard: one host with embedded storage; enterprise: hosts sharing a back end"""
    fqdn: DnsName | None = None
    """pool FQDN (DNS load balancing over the members); required for enterprise pools"""
    database: Str = ""
    """enterprise Front End pools: the back end, postgresql://... (or describe back_end)"""
    back_end: BackEnd | None = None
    """enterprise Front End pools: the PostgreSQL servers, instead of database"""
    state: Str = ""
    state_prefix: Str = ""
    """prefix of the pool's Redis keys; default conclave:<pool>: (deployments sharing a Redis)"""
    """enterprise Front End pools: shared state, redis://... or sentinel://... (docs/pools.md)"""
    transports: Annotated[list[TransportName], Field(min_length=1), AfterValidator(_unique)] = [
        "tls"
    ]
    """SIP transports of the Front Ends: tls; tcp and udp are plain text"""
    web: Bool = False
    """Front End pools: the web face on each Front End (ports.web_https and web_crl; needs tls)"""
    paired_with: Str = ""
    """the pool in another site that takes over if this one fails"""
    failover: Literal["manual", "automatic"] = "manual"
    """paired pools: the partner takes this pool's users over by hand (conclave pool
    failover), or by itself when this pool has been silent for failover_after"""
    failover_after: Duration = 120
    """with automatic failover: seconds (or 90s, 5m) of silence before the partner acts"""
    gateways: list[Gateway] = []
    """mediation pools: the gateways they serve"""
    members: Annotated[list[Host], Field(min_length=1)]


class ExternalAccess(_Model):
    """Who may reach the deployment from outside (Lync's external access policy)."""

    remote_users: Bool = False
    """users sign in from the internet through an edge"""
    public_im: Bool = False
    """IM with public IM providers through an edge"""


def _unique_partners(partners: list[Partner]) -> list[Partner]:
    domains = [p.domain.lower() for p in partners]
    if len(set(domains)) != len(domains):
        raise ValueError("each partner domain may be listed once")
    return partners


class Partner(_Model):
    """A partner organisation this one federates with (its settings beyond the allow-list)."""

    domain: DnsName
    """the partner's SIP domain (also allowed by being listed here)"""
    edge: DnsName | None = None
    """the partner's access edge FQDN; none: found by DNS SRV _sipfederationtls._tcp"""
    port: Port = 5061
    """the partner edge's federation port, with ``edge``"""
    ca: Str = ""
    """PEM file of the CA(s) that sign the partner's certificates, relative to the topology
    file; its certificate must be issued by one of them and name the partner's domain"""
    presence: Bool = False
    """exchange presence (SUBSCRIBE/NOTIFY) with this partner, not only IM and calls"""
    rate: Annotated[int, Strict(), Field(ge=1, le=10_000)] = 20
    """requests per second accepted from this partner (Lync's figure for discovered
    partners is 20); beyond it, 503 with Retry-After"""


class Federation(_Model):
    """Communication with partner organisations through an edge."""

    enabled: Bool = False
    allow: Annotated[list[DnsName], AfterValidator(_unique)] = []
    """partner domains allowed (the allow-list)"""
    block: Annotated[list[DnsName], AfterValidator(_unique)] = []
    """domains always refused"""
    open: Bool = False
    """federate with any domain not blocked (not recommended)"""
    partner_discovery: Bool = False
    """find partners by DNS SRV and federate with them (not recommended)"""
    discovery_ca: Str = ""
    """with discovery: PEM file of the CAs trusted to certify discovered partners, relative
    to the topology file; empty: the system's public roots"""
    partners: Annotated[list[Partner], AfterValidator(_unique_partners)] = []
    """partners with their own settings (CA, edge, presence, rate)"""
    nameservers: list[Endpoint] = []
    """DNS servers (ip:port) the edges ask for partners' SRV and address records; none:
    the system's resolver"""
    private_addresses: Bool = False
    """let a partner's DNS name private, loopback or reserved addresses (a lab only)"""


class Archiving(_Model):
    """Archiving of instant messages."""

    mode: Literal["off", "internal", "federated", "all"] = "off"
    """what is archived: nothing, conversations inside, with partners, or both"""
    critical: Bool = True
    """refuse a message that must be archived but cannot be"""


class PresencePolicy(_Model):
    """Presence (SIMPLE) and its default privacy."""

    enabled: Bool = True
    external_watchers: Literal["pending", "allow"] = "pending"
    """default privacy for watchers outside the organisation: pending until the user
    allows them, or allow (they see the bare state)"""


class Lockout(_Model):
    """Password-guessing protection: a source that fails too often is banned, and an
    account that fails too often is locked for the kind of source that failed."""

    threshold: Annotated[int, Strict(), Field(ge=1, le=1000)] = 10
    """failed authentications per source per minute before a ban, and per account (from
    familiar or from unfamiliar sources, counted apart) before that kind of access locks"""
    duration: Duration = 600
    """how long a banned source, or a locked kind of access, is refused"""
    internal_networks: Annotated[list[Network], AfterValidator(_unique)] = []
    """the organisation's own networks: sign-ins from them are always familiar"""
    directory_threshold: Annotated[int, Strict(), Field(ge=0)] = 0
    """the user directory's own account lockout threshold (0: none stated); ours must be
    lower so that guessing through Conclave cannot lock accounts in the directory"""


class Policies(_Model):
    """What users may do. Everything is off until turned on."""

    external_access: ExternalAccess = ExternalAccess()
    federation: Federation = Federation()
    anonymous_users: Bool = False
    """people without an account may join conferences from the internet"""
    file_transfer: Literal["off", "filtered", "on"] = "off"
    """file transfer in IM: off, filtered (only safe file types) or on"""
    archiving: Archiving = Archiving()
    presence: PresencePolicy = PresencePolicy()
    lockout: Lockout | None = None
    """none: no lockout policy stated (the server's built-in limits apply)"""
    administrators: list[Text] = []
    """users who may sign in to the admin console and admin API (hosts with console)"""


class Topology(_Model):
    """The whole of topology.toml."""

    organisation: Organisation
    requirements: Requirements | None = None
    files: Files = Files()
    sites: Annotated[dict[Name, Site], Field(min_length=1)]
    pools: Annotated[dict[Name, Pool], Field(min_length=1)]
    policies: Policies = Policies()

    @property
    def domain(self) -> str:
        """The default SIP domain."""
        return self.organisation.sip_domains[0]

    def hosts(self) -> list[HostRef]:
        """Every host with its pool and its path in the document, in document order."""
        return [
            HostRef(pool_name, pool, index, host)
            for pool_name, pool in self.pools.items()
            for index, host in enumerate(pool.members)
        ]

    def host(self, name: str) -> HostRef | None:
        """The host called ``name``, or None."""
        return next((ref for ref in self.hosts() if ref.host.name == name), None)


class HostRef:
    """A host together with its pool, and where it sits in the document."""

    __slots__ = ("host", "index", "pool", "pool_name")

    def __init__(self, pool_name: str, pool: Pool, index: int, host: Host) -> None:
        self.pool_name = pool_name
        self.pool = pool
        self.index = index
        self.host = host

    @property
    def path(self) -> str:
        """``pools.NAME.members[I]``: where the host is in the document."""
        return f"pools.{self.pool_name}.members[{self.index}]"

    @property
    def name(self) -> str:
        return self.host.name

    @property
    def roles(self) -> tuple[str, ...]:
        return tuple(self.host.roles)

    @property
    def zone(self) -> str:
        """``perimeter`` for an edge, ``internal`` for everything else."""
        return "perimeter" if "edge" in self.host.roles else "internal"

    @property
    def edge_internal(self) -> EdgeInternal | None:
        """The edge's internal interface (None for other hosts)."""
        return self.host.edge.internal if self.host.edge is not None else None

    @property
    def edge_external(self) -> EdgeExternal | None:
        """The edge's external interface (None for other hosts)."""
        return self.host.edge.external if self.host.edge is not None else None

    @property
    def pool_fqdn(self) -> str:
        """The pool's FQDN; a Standard Edition pool's is its one host's."""
        return self.pool.fqdn or self.host.fqdn

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, HostRef):
            return NotImplemented
        return (self.pool_name, self.index) == (other.pool_name, other.index)

    def __hash__(self) -> int:
        return hash((self.pool_name, self.index))

    def __repr__(self) -> str:
        return f"HostRef({self.path}: {self.host.name})"
