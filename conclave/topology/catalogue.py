"""What each role is, whether it is built yet, and exactly which ports a host opens.

:func:`host_listeners` is the single answer to "what does this host listen
on": ``topology check`` looks for collisions in it, ``topology publish``
turns it into firewall rules, ``conclave audit --surface`` shows it, and
the role tests compare it with the sockets a served host really opens. A
port appears only when a role and a policy need it (secure by default):
plain SIP only when the pool lists tcp or udp, the edge's external ports
only when remote access or federation is on.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Callable
from dataclasses import dataclass
from typing import Literal

from .model import HostRef, Topology

Interface = Literal["internal", "external", "loopback"]


@dataclass(frozen=True)
class RoleInfo:
    """A server role as Conclave defines it."""

    name: str
    lync: str
    """the Lync / Skype for Business role it corresponds to"""
    purpose: str
    available: bool
    """``conclave serve`` can run it; unbuilt roles are described and checked only"""


ROLE_INFO: dict[str, RoleInfo] = {
    r.name: r
    for r in (
        RoleInfo(
            "frontend",
            "Front End (Standard Edition when alone in a standard pool)",
            "registrar, authentication, presence, IM, call routing",
            True,
        ),
        RoleInfo(
            "edge",
            "Edge Server (Access Edge)",
            "the only role facing the internet: remote users and federation",
            True,
        ),
        RoleInfo(
            "director",
            "Director",
            "authenticates external sign-ins and redirects them to the home pool",
            True,
        ),
        RoleInfo(
            "mediation", "Mediation Server", "SIP trunk gateway toward an IP-PBX or PSTN", False
        ),
        RoleInfo("chat", "Persistent Chat Server", "rooms, history, compliance store", False),
        RoleInfo(
            "logging-controller",
            "Centralized Logging Service controller",
            "stores every server's events and SIP traces, searchable in one place",
            True,
        ),
    )
}

AVAILABLE_ROLES = frozenset(r.name for r in ROLE_INFO.values() if r.available)

ROLE_ALONE = frozenset({"edge"})
"""Roles that share a host with no other role: the edge sits in the perimeter network."""
NOT_TOGETHER = (frozenset({"director", "frontend"}),)
"""Pairs that may not share a host (Lync: a Director is never collocated with a Front End)."""


@dataclass(frozen=True)
class Listener:
    """One listening socket a host opens for a role."""

    role: str
    """the role (or ``admin``, ``extra``) that opens it"""
    port_key: str
    """its key under the host's ``ports`` table (or ``admin``, ``extra_ports[i]``)"""
    protocol: Literal["tcp", "udp"]
    address: str
    port: int
    interface: Interface
    service: str
    """what speaks on it: ``SIP/TLS``, ``SIP/TCP``, ``syslog/TLS``, ``HTTP``..."""
    purpose: str
    path: str
    """the setting's path in the document, for error messages"""
    port_max: int | None = None
    """the last port of a range that starts at ``port`` (a relay's media ports)"""

    @property
    def ports(self) -> str:
        return f"{self.port}-{self.port_max}" if self.port_max else str(self.port)

    @property
    def endpoint(self) -> str:
        host = f"[{self.address}]" if ":" in self.address else self.address
        return f"{self.protocol.upper()} {host}:{self.ports}"


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def split_endpoint(value: str) -> tuple[str, int]:
    """``("::1", 80)`` from ``"[::1]:80"``, ``("10.0.0.1", 80)`` from ``"10.0.0.1:80"``."""
    host, _, port = value.rpartition(":")
    return host.strip("[]"), int(port)


def _frontend(ref: HostRef, topology: Topology) -> list[Listener]:
    host, ports, path = ref.host, ref.host.ports, f"{ref.path}.ports"
    found: list[Listener] = []
    transports = ref.pool.transports
    if "tls" in transports:
        found.append(
            Listener(
                "frontend", "sip_tls", "tcp", host.address, ports.sip_tls, "internal",
                "SIP/TLS", "clients sign in; mutual TLS from other servers",
                f"{path}.sip_tls",
            )
        )  # fmt: skip
    for transport in ("tcp", "udp"):
        if transport in transports:
            found.append(
                Listener(
                    "frontend", "sip", transport, host.address, ports.sip, "internal",
                    f"SIP/{transport.upper()}", "plain-text SIP (the pool lists it)",
                    f"{path}.sip",
                )
            )  # fmt: skip
    if ref.pool.paired_with:
        found.append(
            Listener(
                "frontend", "pairing_tls", "tcp", host.address, ports.pairing_tls, "internal",
                "TLS", "backup service and heartbeat: mutual TLS from the partner pool",
                f"{path}.pairing_tls",
            )
        )  # fmt: skip
    if ref.pool.web:
        found += [
            Listener(
                "frontend", "web_https", "tcp", host.address, ports.web_https, "internal",
                "HTTPS", "web face: browser client, user API, SIP over WebSocket",
                f"{path}.web_https",
            ),
            Listener(
                "frontend", "web_crl", "tcp", host.address, ports.web_crl, "internal",
                "HTTP", "the CA's CRL and certificate (revocation checks)", f"{path}.web_crl",
            ),
        ]  # fmt: skip
    if host.workers > 1:
        for index in range(host.workers):
            found.append(
                Listener(
                    "frontend", "worker_tls", "tcp", host.address, ports.worker_tls + index,
                    "internal", "TLS", f"worker {index}: the pool's relays (mutual TLS)",
                    f"{path}.worker_tls",
                )
            )  # fmt: skip
    return found


RELAY_PORTS = (49152, 65535)
"""The media relay's own ports (coturn's default range, RFC 6335's dynamic ports):
one per relayed stream, so the range must be wide."""


def _edge(ref: HostRef, topology: Topology) -> list[Listener]:
    edge = ref.host.edge
    ports, path = ref.host.ports, f"{ref.path}.ports"
    found: list[Listener] = []
    if edge is not None and edge.internal is not None:
        found.append(
            Listener(
                "edge", "edge_internal_tls", "tcp", edge.internal.address,
                ports.edge_internal_tls, "internal", "SIP/TLS",
                "mutual TLS from directors and Front Ends", f"{path}.edge_internal_tls",
            )
        )  # fmt: skip
    if edge is not None and edge.external is not None:
        policies = topology.policies
        if policies.external_access.remote_users:
            found.append(
                Listener(
                    "edge", "edge_access_tls", "tcp", edge.external.address,
                    ports.edge_access_tls, "external", "SIP/TLS",
                    "remote users sign in from the internet", f"{path}.edge_access_tls",
                )
            )  # fmt: skip
        if policies.federation.enabled or policies.external_access.public_im:
            found.append(
                Listener(
                    "edge", "edge_federation_tls", "tcp", edge.external.address,
                    ports.edge_federation_tls, "external", "SIP/TLS",
                    "mutual TLS with federated partners and public IM providers",
                    f"{path}.edge_federation_tls",
                )
            )  # fmt: skip
        if policies.external_access.remote_users or policies.federation.enabled:
            address = edge.external.address
            found += [
                Listener(
                    "edge", "turn", protocol, address, ports.turn, "external", "TURN",
                    "media relay allocations from signed-in users (coturn)", f"{path}.turn",
                )
                for protocol in ("udp", "tcp")
            ]  # fmt: skip
            found.append(
                Listener(
                    "edge", "turn_relay", "udp", address, RELAY_PORTS[0], "external", "RTP/SRTP",
                    "relayed media (the relay's ports)", f"{path}.turn",
                    port_max=RELAY_PORTS[1],
                )
            )  # fmt: skip
    return found


RoleListeners = Callable[[HostRef, Topology], list[Listener]]


def _single(role: str, key: str, service: str, purpose: str) -> RoleListeners:
    def listeners(ref: HostRef, topology: Topology) -> list[Listener]:
        port = getattr(ref.host.ports, key)
        return [
            Listener(
                role, key, "tcp", ref.host.address, port, "internal", service, purpose,
                f"{ref.path}.ports.{key}",
            )
        ]  # fmt: skip

    return listeners


def _mediation(ref: HostRef, topology: Topology) -> list[Listener]:
    host, ports, path = ref.host, ref.host.ports, f"{ref.path}.ports"
    found = [
        Listener(
            "mediation", "mediation_tls", "tcp", host.address, ports.mediation_tls, "internal",
            "SIP/TLS", "mutual TLS from the Front End pool", f"{path}.mediation_tls",
        )
    ]  # fmt: skip
    kinds = {g.transport for g in ref.pool.gateways}
    if "tls" in kinds:
        found.append(
            Listener(
                "mediation", "gateway_tls", "tcp", host.address, ports.gateway_tls, "internal",
                "SIP/TLS", "calls from gateways", f"{path}.gateway_tls",
            )
        )  # fmt: skip
    if "tcp" in kinds:
        found.append(
            Listener(
                "mediation", "gateway_tcp", "tcp", host.address, ports.gateway_tcp, "internal",
                "SIP/TCP", "calls from gateways without TLS (plain text)", f"{path}.gateway_tcp",
            )
        )  # fmt: skip
    return found


_ROLE_LISTENERS: dict[str, RoleListeners] = {
    "frontend": _frontend,
    "edge": _edge,
    "director": _single(
        "director", "director_tls", "SIP/TLS", "external sign-ins, redirected to the home pool"
    ),
    "mediation": _mediation,
    "chat": _single("chat", "chat_tls", "SIP/TLS", "mutual TLS from the Front End pool"),
    "logging-controller": _single(
        "logging-controller", "syslog_tls", "syslog/TLS", "events from every server (RFC 5425)"
    ),
}


def role_listeners(ref: HostRef, topology: Topology, role: str) -> list[Listener]:
    """The listeners that ``role`` opens on the host (none if the host lacks the role)."""
    if role not in ref.host.roles:
        return []
    return list(_ROLE_LISTENERS[role](ref, topology))


def host_listeners(ref: HostRef, topology: Topology) -> list[Listener]:
    """Every socket the host opens: its roles' ports, the admin interface, extra ports."""
    found: list[Listener] = []
    for role in ref.host.roles:
        found += role_listeners(ref, topology, role)
    if ref.host.admin:
        address, port = split_endpoint(ref.host.admin)
        interface: Interface = "loopback" if is_loopback(address) else "internal"
        found.append(
            Listener(
                "admin", "admin", "tcp", address, port, interface,
                "HTTPS" if ref.host.console else "HTTP",
                "admin interface: health and /metrics"
                + (", admin console and admin API" if ref.host.console else ""),
                f"{ref.path}.admin",
            )
        )  # fmt: skip
    for i, extra in enumerate(ref.host.extra_ports):
        external = extra.interface == "external"
        edge = ref.host.edge
        if external and edge is not None and edge.external is not None:
            address = edge.external.address
        else:
            address = ref.host.address
        found.append(
            Listener(
                "extra", f"extra_ports[{i}]", extra.protocol, address, extra.port,
                "external" if external else "internal", extra.protocol.upper(), extra.purpose,
                f"{ref.path}.extra_ports[{i}]",
            )
        )  # fmt: skip
    return found


def logging_controller_for(ref: HostRef, topology: Topology) -> HostRef | None:
    """The logging controller the host's logging agent sends to.

    The host's own controller when it runs one beside other roles, else one
    in its site, else the first; None when the topology has none, and for a
    host that runs only a controller (it stores its own events directly).
    """
    if "logging-controller" in ref.host.roles:
        return ref if len(ref.host.roles) > 1 else None
    controllers = [r for r in topology.hosts() if "logging-controller" in r.host.roles]
    local = [r for r in controllers if r.pool.site == ref.pool.site]
    candidates = local or controllers
    return candidates[0] if candidates else None


def next_hops_of_edge(topology: Topology) -> list[HostRef]:
    """Where an edge sends inbound traffic: the directors if any, else the Front Ends."""
    hosts = topology.hosts()
    directors = [r for r in hosts if "director" in r.host.roles]
    return directors or [r for r in hosts if "frontend" in r.host.roles]
