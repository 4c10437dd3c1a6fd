"""What the rest of the network must provide for a topology: DNS, firewall rules, certificates.

``conclave topology publish`` prints :func:`publish` as text or JSON.

DNS is split-brain, as in Lync: the *internal* zone lets clients inside find
their pool (``_sipinternaltls._tcp`` and, for standard SIP clients following
RFC 3263, ``_sip._tls``), and names every host and pool; the *external* zone
exists only when an edge is needed and publishes the access edge for remote
users (``_sip._tls``) and for federation (``_sipfederationtls._tcp``).

Firewall rules are derived from the listeners of :mod:`.catalogue`, so they
open exactly what the hosts listen on. Each rule says which firewall holds
it: ``external`` (internet and perimeter), ``internal`` (perimeter and
internal network) or ``host`` (inside the internal network, host firewalls),
and who opens connections to whom.
"""

from __future__ import annotations

import ipaddress
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError

from .catalogue import Listener, host_listeners, logging_controller_for, next_hops_of_edge
from .certs import CertificateNeed, certificate_needs
from .model import HostRef, Topology


@dataclass(frozen=True)
class DnsRecord:
    zone: str
    """``internal`` or ``external`` (split-brain DNS)"""
    name: str
    type: str
    """A, AAAA or SRV"""
    value: str
    """an address, or ``priority weight port target.`` for SRV"""
    purpose: str


@dataclass(frozen=True)
class FirewallRule:
    firewall: str
    """``external`` (internet <-> perimeter), ``internal`` (perimeter <-> internal) or
    ``host`` (host firewalls inside the internal network)"""
    source_zone: str
    source: str
    destination_zone: str
    destination: str
    protocol: str
    port: int
    purpose: str
    port_max: int | None = None
    """the last port of a range starting at ``port``"""

    @property
    def ports(self) -> str:
        return f"{self.port}-{self.port_max}" if self.port_max else str(self.port)

    @property
    def direction(self) -> str:
        return f"{self.source_zone} -> {self.destination_zone}"


@dataclass(frozen=True)
class Publication:
    dns: list[DnsRecord]
    firewall: list[FirewallRule]
    certificates: list[CertificateNeed]

    def to_json(self) -> dict[str, Any]:
        return {
            "dns": [asdict(r) for r in self.dns],
            "firewall": [asdict(r) | {"direction": r.direction} for r in self.firewall],
            "certificates": [asdict(c) | {"names": list(c.names)} for c in self.certificates],
        }

    def to_text(self) -> str:
        return render_text(self)


def _address_type(address: str) -> str:
    return "AAAA" if ipaddress.ip_address(address).version == 6 else "A"


def _srv(port: int, target: str, priority: int = 0) -> str:
    return f"{priority} 0 {port} {target}."


def dns_records(topology: Topology) -> list[DnsRecord]:
    """Every record both zones need, internal first."""
    records: list[DnsRecord] = []

    def add(zone: str, name: str, kind: str, value: str, purpose: str) -> None:
        record = DnsRecord(zone, name, kind, value, purpose)
        if record not in records:
            records.append(record)

    hosts = topology.hosts()
    for ref in hosts:
        internal = ref.edge_internal
        if internal is not None and internal.fqdn == ref.host.fqdn:
            address = internal.address  # the edge's name belongs to its internal interface
        else:
            address = ref.host.address
        add("internal", ref.host.fqdn, _address_type(address), address, f"host {ref.name}")
        if internal is not None and internal.fqdn != ref.host.fqdn:
            add(
                "internal",
                internal.fqdn,
                _address_type(internal.address),
                internal.address,
                f"edge {ref.name}, internal interface",
            )
    for name, pool in topology.pools.items():
        if pool.edition != "enterprise" or not pool.fqdn:
            continue
        for member in pool.members:
            edge = member.edge
            address = edge.internal.address if edge and edge.internal else member.address
            add(
                "internal",
                pool.fqdn,
                _address_type(address),
                address,
                f"pool {name}: DNS load balancing over its members",
            )
    frontend_pools = [
        (name, pool)
        for name, pool in topology.pools.items()
        if any("frontend" in h.roles for h in pool.members)
    ]
    for priority, (name, pool) in enumerate(frontend_pools):
        target = pool.fqdn or pool.members[0].fqdn
        ports = pool.members[0].ports
        for domain in topology.organisation.sip_domains:
            why = f"clients inside find pool {name}"
            if "tls" in pool.transports:
                value = _srv(ports.sip_tls, target, priority * 10)
                add("internal", f"_sipinternaltls._tcp.{domain}", "SRV", value, why)
                add("internal", f"_sip._tls.{domain}", "SRV", value, why + " (RFC 3263)")
            for transport in ("tcp", "udp"):
                if transport in pool.transports:
                    value = _srv(ports.sip, target, priority * 10)
                    add("internal", f"_sip._{transport}.{domain}", "SRV", value, why)
    if frontend_pools:
        name, home = frontend_pools[0]
        for domain in topology.organisation.sip_domains:
            for member in home.members:
                add(
                    "internal",
                    f"sip.{domain}",
                    _address_type(member.address),
                    member.address,
                    f"home pool {name} (clients that try sip.<domain>)",
                )
    _external_records(topology, hosts, add)
    return records


def _external_records(
    topology: Topology, hosts: list[HostRef], add: Callable[[str, str, str, str, str], None]
) -> None:
    policies = topology.policies
    remote = policies.external_access.remote_users
    federation = policies.federation.enabled or policies.external_access.public_im
    edges = [(r, r.edge_external) for r in hosts if "edge" in r.host.roles]
    if not (remote or federation):
        return
    for ref, external in edges:
        if external is None:
            continue
        kind = _address_type(external.address)
        add("external", external.fqdn, kind, external.address, f"edge {ref.name}, external")
    for ref, external in edges:
        if external is None:
            continue
        ports = ref.host.ports
        for domain in topology.organisation.sip_domains:
            if remote:
                add(
                    "external",
                    f"_sip._tls.{domain}",
                    "SRV",
                    _srv(ports.edge_access_tls, external.fqdn),
                    "remote users find the access edge",
                )
                if external.fqdn != f"sip.{domain}":
                    add(
                        "external",
                        f"sip.{domain}",
                        _address_type(external.address),
                        external.address,
                        "remote users that try sip.<domain>",
                    )
            if federation:
                add(
                    "external",
                    f"_sipfederationtls._tcp.{domain}",
                    "SRV",
                    _srv(ports.edge_federation_tls, external.fqdn),
                    "partners find our federation edge",
                )


def _where(ref: HostRef, listener: Listener) -> str:
    return f"{ref.name} {listener.address} ({listener.role})"


def _sources(ref: HostRef, listener: Listener, topology: Topology) -> list[tuple[str, str]]:
    """(zone, who) pairs that open connections to ``listener``."""
    hosts = topology.hosts()
    role, key = listener.role, listener.port_key
    internal_clients = ("internal", "clients and servers of the internal network")
    if key == "pairing_tls":
        partner = topology.pools.get(ref.pool.paired_with)
        members = partner.members if partner is not None else []
        return [
            ("internal", f"Front End {m.name} {m.address} (partner pool)")
            for m in members
            if "frontend" in m.roles
        ]
    if key == "worker_tls":  # this host's other workers, and the pool's other Front Ends
        return [
            ("internal", f"Front End {m.name} {m.address} (pool member)")
            for m in ref.pool.members
            if "frontend" in m.roles
        ]
    if key in ("web_https", "web_crl"):  # browsers inside; no edge relays HTTP
        return [internal_clients]
    if role == "frontend" or key == "director_tls":
        sources = [internal_clients]
        if ref in next_hops_of_edge(topology):
            sources += [
                ("perimeter", f"edge {e.name} {internal.address}")
                for e in hosts
                if (internal := e.edge_internal) is not None
            ]
        return sources if key != "sip" else [internal_clients]
    if key == "mediation_tls" or key == "chat_tls":
        return [
            ("internal", f"Front End {r.name} {r.host.address}")
            for r in hosts
            if "frontend" in r.host.roles
        ]
    if key in ("gateway_tls", "gateway_tcp"):
        transport = "tls" if key == "gateway_tls" else "tcp"
        return [
            ("internal", f"gateway {g.fqdn}") for g in ref.pool.gateways if g.transport == transport
        ]
    if key == "syslog_tls":
        return [
            (r.zone, f"{r.name} {r.host.address} (logging agent)")
            for r in hosts
            if logging_controller_for(r, topology) == ref
        ]
    if key == "edge_internal_tls":
        return [(r.zone, f"{r.name} {r.host.address}") for r in next_hops_of_edge(topology)]
    if key == "edge_access_tls":
        return [("internet", "remote users (any address)")]
    if key in ("turn", "turn_relay"):
        return [("internet", "remote users and federated partners' clients (media)")]
    if key == "edge_federation_tls":
        federation = topology.policies.federation
        if federation.open or federation.partner_discovery:
            who = "any federated domain not blocked"
        else:
            who = "edges of allowed partners: " + (", ".join(federation.allow) or "(none yet)")
        return [("internet", who)]
    if role == "admin":
        return [] if listener.interface == "loopback" else [("internal", "management network")]
    return [("internet" if listener.interface == "external" else "internal", "operator-declared")]


def _firewall_name(source_zone: str, destination_zone: str) -> str:
    zones = {source_zone, destination_zone}
    if "internet" in zones:
        return "external"
    if "perimeter" in zones and "internal" in zones:
        return "internal"
    return "host"


def firewall_rules(topology: Topology) -> list[FirewallRule]:
    """Every connection the deployment needs, inbound to each listener and outbound."""
    rules: list[FirewallRule] = []
    for ref in topology.hosts():
        for listener in host_listeners(ref, topology):
            zone = "perimeter" if ref.zone == "perimeter" else "internal"
            if listener.interface == "external":
                zone = "perimeter"
            for source_zone, who in _sources(ref, listener, topology):
                rules.append(
                    FirewallRule(
                        _firewall_name(source_zone, zone),
                        source_zone,
                        who,
                        zone,
                        _where(ref, listener),
                        listener.protocol.upper(),
                        listener.port,
                        f"{listener.service}: {listener.purpose}",
                        listener.port_max,
                    )
                )
        rules += _outbound(ref, topology)
    return rules


def _outbound(ref: HostRef, topology: Topology) -> list[FirewallRule]:
    rules: list[FirewallRule] = []
    me = f"{ref.name} {ref.host.address} ({', '.join(ref.host.roles)})"
    if "frontend" in ref.host.roles and ref.pool.database:
        try:
            url = make_url(ref.pool.database)
            rules.append(
                FirewallRule(
                    "host", "internal", me, "internal", f"back end {url.host or 'localhost'}",
                    "TCP", url.port or 5432, "PostgreSQL: the pool's back end",
                )
            )  # fmt: skip
        except ArgumentError:
            pass  # topology check reports the URL
    if "mediation" in ref.host.roles:
        for gateway in ref.pool.gateways:
            rules.append(
                FirewallRule(
                    "host", "internal", me, "internal", f"gateway {gateway.fqdn}", "TCP",
                    gateway.port, f"SIP/{gateway.transport.upper()}: calls toward the gateway",
                )
            )  # fmt: skip
    external = ref.edge_external
    if "edge" in ref.host.roles and external is not None:
        federation = topology.policies.federation
        address = external.address
        if federation.enabled or topology.policies.external_access.public_im:
            rules.append(
                FirewallRule(
                    "external", "perimeter", f"{ref.name} {address} (edge)", "internet",
                    "partner edges", "TCP", 5061, "SIP/TLS: mutual TLS toward partners",
                )
            )  # fmt: skip
        if federation.partner_discovery:
            for protocol in ("UDP", "TCP"):
                rules.append(
                    FirewallRule(
                        "external", "perimeter", f"{ref.name} {address} (edge)", "internet",
                        "DNS resolvers", protocol, 53, "DNS SRV lookups for partner discovery",
                    )
                )  # fmt: skip
    return rules


def publish(topology: Topology, topology_path: Path | None = None) -> Publication:
    """DNS, firewall and certificate requirements of ``topology``."""
    return Publication(
        dns=dns_records(topology),
        firewall=firewall_rules(topology),
        certificates=certificate_needs(topology, topology_path),
    )


def render_text(publication: Publication) -> str:
    """The publication as three plain-text sections."""
    lines = ["DNS records", "==========="]
    for zone in ("internal", "external"):
        records = [r for r in publication.dns if r.zone == zone]
        lines.append(f"{zone} zone:" + ("" if records else " (none)"))
        for r in records:
            lines.append(f"  {r.name:<40} {r.type:<5} {r.value:<42} ; {r.purpose}")
    lines += ["", "Firewall rules", "=============="]
    for firewall in ("external", "internal", "host"):
        rules = [r for r in publication.firewall if r.firewall == firewall]
        lines.append(f"{firewall} firewall:" + ("" if rules else " (none)"))
        for rule in rules:
            lines.append(
                f"  allow {rule.protocol} {rule.ports:<5} {rule.source_zone} -> "
                f"{rule.destination_zone}: from {rule.source} to {rule.destination}; "
                f"{rule.purpose}"
            )
    lines += ["", "Certificates", "============"]
    for need in publication.certificates:
        lines.append(f"  {need.host} ({need.interface}): from the {need.issuer}")
        lines.append(f"    subject CN={need.subject}; names {', '.join(need.names)}")
        lines.append(f"    usage: {need.usage}")
        lines.append(f"    in use: {need.file or '(none yet)'}")
    return "\n".join(lines) + "\n"


def render_json(publication: Publication) -> str:
    return json.dumps(publication.to_json(), indent=2) + "\n"
