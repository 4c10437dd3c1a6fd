"""``conclave audit --surface``: per host, what someone else can reach.

For each host: every listening port with its protocol and service, and
from where it can be reached (the internet, the internal network, or this
host only); the SIP methods and event packages a SIP listener answers; and
the TLS versions it accepts. Methods and packages come from the code that
answers them (the router's methods, plus each enabled service's), so a
disabled feature is absent here exactly as it is from Allow and
Allow-Events. For a data directory whose server is running, the sockets it
really listens on are listed too.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from conclave.config import Config
from conclave.topology.catalogue import (
    ROLE_INFO,
    Listener,
    host_listeners,
    is_loopback,
    split_endpoint,
)
from conclave.topology.model import HostRef, Topology

from .live import listening_sockets, running_pid
from .tls import tls_versions


@dataclass(frozen=True)
class Exposure:
    protocol: str
    address: str
    port: int
    service: str
    role: str
    reachable_from: str
    purpose: str


@dataclass
class HostSurface:
    host: str
    zone: str
    roles: list[str]
    exposures: list[Exposure] = field(default_factory=list)
    sip_methods: list[str] = field(default_factory=list)
    event_packages: list[str] = field(default_factory=list)
    tls_versions: list[str] = field(default_factory=list)
    observed: list[str] = field(default_factory=list)
    """sockets the running process listens on (``tcp 127.0.0.1:5061``)"""
    notes: list[str] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


def frontend_sip(presence: bool) -> tuple[list[str], list[str]]:
    """The methods and event packages a Front End answers with presence on or off."""
    from conclave.core.router import allow_list
    from conclave.services.presence.service import PresenceService

    owned = {"REGISTER", *(PresenceService.methods if presence else ())}
    packages = sorted(PresenceService.event_packages) if presence else []
    return allow_list(owned), packages


def _reach(listener: Listener, zone: str) -> str:
    if listener.interface == "loopback":
        return "this host only"
    if listener.interface == "external":
        return "internet"
    if zone == "perimeter":
        return "internal network (through the internal firewall)"
    return "internal network"


def topology_surface(topology: Topology) -> list[HostSurface]:
    """Every host of the topology, as designed."""
    return [_host(ref, topology) for ref in topology.hosts()]


def _host(ref: HostRef, topology: Topology) -> HostSurface:
    surface = HostSurface(ref.name, ref.zone, list(ref.host.roles))
    for listener in host_listeners(ref, topology):
        surface.exposures.append(
            Exposure(
                listener.protocol,
                listener.address,
                listener.port,
                listener.service,
                listener.role,
                _reach(listener, ref.zone),
                listener.purpose,
            )
        )
    if "frontend" in ref.host.roles:
        surface.sip_methods, surface.event_packages = frontend_sip(
            topology.policies.presence.enabled
        )
    for role in ref.host.roles:
        if not ROLE_INFO[role].available:
            surface.notes.append(
                f"{role} is not built yet: its ports are the design's; no SIP method is "
                "answered until it is"
            )
    if any("TLS" in e.service for e in surface.exposures):
        surface.tls_versions = tls_versions()
    return surface


def data_dir_surface(data_dir: Path, config: Config, roles: tuple[str, ...]) -> HostSurface:
    """One data directory's server, from its config (and its sockets when running)."""
    surface = HostSurface(config.server.host, "internal", list(roles))
    t = config.transports
    reach = "this host only" if is_loopback(t.bind) else "any network that routes to it"
    if "frontend" in roles:
        for name, port in t.enabled():
            protocol = "udp" if name == "udp" else "tcp"
            surface.exposures.append(
                Exposure(protocol, t.bind, port, f"SIP/{name.upper()}", "frontend", reach, "SIP")
            )
        surface.sip_methods, surface.event_packages = frontend_sip(config.presence.enabled)
        if config.admin.enabled:
            address, port = split_endpoint(config.admin.bind)
            where = "this host only" if is_loopback(address) else "any network that routes to it"
            surface.exposures.append(
                Exposure("tcp", address, port, "HTTP", "admin", where, "admin interface")
            )
        if config.web.enabled:
            for bind, service, purpose in (
                (config.web.crl_bind, "HTTP", "CRL and CA certificate"),
                (config.web.bind, "HTTPS (TLS)", "web" + (", SIP over WebSocket" if t.ws else "")),
            ):
                address, port = split_endpoint(bind)
                local = is_loopback(address)
                where = "this host only" if local else "any network that routes to it"
                surface.exposures.append(
                    Exposure("tcp", address, port, service, "web", where, purpose)
                )
    if "logging-controller" in roles:
        address, port = split_endpoint(config.logging_controller.listen)
        where = "this host only" if is_loopback(address) else "any network that routes to it"
        surface.exposures.append(
            Exposure("tcp", address, port, "syslog/TLS", "logging-controller", where, "events")
        )
    if any("TLS" in e.service for e in surface.exposures):
        surface.tls_versions = tls_versions()
    if any(e.port == 0 for e in surface.exposures):
        surface.notes.append("port 0: a free port is picked at start (see the server's log)")
    observe(surface, data_dir, roles)
    return surface


def observe(surface: HostSurface, data_dir: Path, roles: tuple[str, ...]) -> None:
    """Add the sockets the host's running servers on ``data_dir`` listen on."""
    for role in roles:
        pid = running_pid(data_dir, role)
        sockets = listening_sockets(pid) if pid is not None else None
        if sockets is not None:
            surface.observed += [
                f"{role} pid {pid}: {s.protocol} {s.address}:{s.port}" for s in sockets
            ]


def render_surface(surfaces: list[HostSurface]) -> str:
    lines: list[str] = []
    for s in surfaces:
        lines.append(f"{s.host} ({s.zone}; roles: {', '.join(s.roles)})")
        if not s.exposures:
            lines.append("  nothing listens")
        for e in s.exposures:
            lines.append(
                f"  {e.protocol.upper()} {e.address}:{e.port} {e.service} [{e.role}] "
                f"from {e.reachable_from}: {e.purpose}"
            )
        if s.sip_methods:
            lines.append(f"  SIP methods: {', '.join(s.sip_methods)}")
            lines.append(f"  event packages: {', '.join(s.event_packages) or '(none)'}")
        if s.tls_versions:
            lines.append(f"  TLS versions: {', '.join(s.tls_versions)}")
        for item in s.observed:
            lines.append(f"  listening now: {item}")
        for note in s.notes:
            lines.append(f"  note: {note}")
    return "\n".join(lines) + "\n"
