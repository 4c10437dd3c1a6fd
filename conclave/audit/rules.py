"""Audit rules for the topology document: what the design gets wrong.

Each function returns findings for one concern; :func:`audit_topology`
runs them all. Data directories of provisioned hosts are audited by
:mod:`.deployment`.
"""

from __future__ import annotations

import datetime as dt
from pathlib import Path

from cryptography import x509

from conclave.topology.catalogue import is_loopback, split_endpoint
from conclave.topology.checks import check_topology, errors
from conclave.topology.layout import ca_dir, resolve
from conclave.topology.model import HostRef, Topology

from .deployment import MAX_FAILURES_PER_MINUTE, MIN_BAN_SECONDS
from .findings import Finding
from .tls import certificate_findings, is_self_signed, issued_by, policy_findings


def audit_topology(topology: Topology, topology_path: Path, now: dt.datetime) -> list[Finding]:
    """Every finding about the topology itself (not its hosts' data directories)."""
    source = str(topology_path)
    findings = [
        Finding("TOPOLOGY-INVALID", problem.message, f"{source}: {problem.path}")
        for problem in errors(check_topology(topology, topology_path))
    ]
    rules = (
        _requirements,
        _unused_roles,
        _policies,
        _federation_without_partners,
        _federation_settings,
        _lockout,
        _pools,
        _single_frontend,
        _logging_host,
        _director,
        _archiving,
    )
    for rule in rules:
        findings += [
            Finding(f.rule, f.found, f"{source}: {f.where}", f.severity) for f in rule(topology)
        ]
    findings += _exposure(topology, source)
    findings += _certificates(topology, topology_path, now)
    findings += policy_findings()
    return findings


def _requirements(topology: Topology) -> list[Finding]:
    if topology.requirements is not None:
        return []
    return [Finding("REQUIREMENTS-MISSING", "the topology states no requirements", "requirements")]


def _unused_roles(topology: Topology) -> list[Finding]:
    findings: list[Finding] = []
    policies = topology.policies
    external = (
        policies.external_access.remote_users
        or policies.federation.enabled
        or policies.external_access.public_im
        or policies.anonymous_users
    )
    hosts = topology.hosts()
    has_edge = any("edge" in r.host.roles for r in hosts)
    has_frontend = any("frontend" in r.host.roles for r in hosts)
    for ref in hosts:
        roles = set(ref.host.roles)
        if "edge" in roles and not external:
            findings.append(
                Finding(
                    "ROLE-UNUSED",
                    f"edge {ref.name} runs, but remote access, federation, public IM and "
                    "anonymous users are all off",
                    f"{ref.path}.roles",
                )
            )
        if "director" in roles and not (has_edge and policies.external_access.remote_users):
            findings.append(
                Finding(
                    "ROLE-UNUSED",
                    f"director {ref.name} runs, but no remote user signs in through an edge",
                    f"{ref.path}.roles",
                )
            )
        if roles & {"chat", "mediation"} and not has_frontend:
            role = "chat" if "chat" in roles else "mediation"
            findings.append(
                Finding(
                    "ROLE-UNUSED",
                    f"{role} {ref.name} runs, but there is no Front End pool to serve",
                    f"{ref.path}.roles",
                )
            )
    wanted = topology.requirements
    if wanted is None:
        return findings
    unneeded = (
        (
            policies.external_access.remote_users and not wanted.remote_access,
            "policies.external_access.remote_users",
            "remote access is on but requirements.remote_access is false",
        ),
        (
            policies.federation.enabled and not wanted.federation,
            "policies.federation.enabled",
            "federation is on but requirements.federation is false",
        ),
        (
            policies.external_access.public_im and not wanted.federation,
            "policies.external_access.public_im",
            "public IM is on but requirements.federation is false",
        ),
    )
    for on, path, text in unneeded:
        if on:
            findings.append(Finding("FEATURE-UNNEEDED", text, path))
    return findings


def _policies(topology: Topology) -> list[Finding]:
    findings: list[Finding] = []
    policies = topology.policies
    for name, pool in topology.pools.items():
        if not any("frontend" in h.roles for h in pool.members):
            continue
        for transport in ("udp", "tcp"):
            if transport in pool.transports:
                findings.append(
                    Finding(
                        "TRANSPORT-PLAIN",
                        f"pool {name} accepts plain SIP over {transport.upper()}",
                        f"pools.{name}.transports",
                    )
                )
    for name, pool in topology.pools.items():
        for index, gateway in enumerate(pool.gateways):
            if gateway.transport == "tcp":
                findings.append(
                    Finding(
                        "TRANSPORT-PLAIN",
                        f"gateway {gateway.fqdn} is reached over plain TCP",
                        f"pools.{name}.gateways[{index}].transport",
                    )
                )
    federation = policies.federation
    if federation.open:
        findings.append(
            Finding(
                "FEDERATION-OPEN",
                "any domain not blocked may federate",
                "policies.federation.open",
            )
        )
    if federation.partner_discovery:
        findings.append(
            Finding(
                "FEDERATION-DISCOVERY",
                "partners found through DNS SRV are federated with automatically",
                "policies.federation.partner_discovery",
            )
        )
    if policies.external_access.public_im:
        findings.append(
            Finding(
                "PUBLIC-IM", "public IM connectivity is on", "policies.external_access.public_im"
            )
        )
    if policies.anonymous_users:
        findings.append(
            Finding("ANONYMOUS-ACCESS", "anonymous users may join", "policies.anonymous_users")
        )
    if policies.file_transfer == "on":
        findings.append(
            Finding(
                "FILE-TRANSFER-UNFILTERED",
                "every file type may be transferred",
                "policies.file_transfer",
            )
        )
    return findings


USER_FACING_ROLES = ("frontend", "edge", "director", "mediation", "chat")
"""Roles that users, partners or the internet connect to (the rest serve other servers)."""


def _federation_settings(topology: Topology) -> list[Finding]:
    """Partners trusted by public CAs, and partners' DNS allowed to name private addresses.
    (An edge's internal side on its external address is a topology error already, and a
    data directory's is EDGE-INTERNAL-EXPOSED.)"""
    federation = topology.policies.federation
    findings = []
    if federation.enabled:
        for index, partner in enumerate(federation.partners):
            if not partner.ca:
                findings.append(
                    Finding(
                        "FEDERATION-PARTNER-NO-CA",
                        f"partner {partner.domain} has no CA bundle: any public CA speaks for it",
                        f"policies.federation.partners[{index}].ca",
                    )
                )
        if federation.private_addresses:
            findings.append(
                Finding(
                    "FEDERATION-PRIVATE-ADDRESSES",
                    "partners' DNS may name private, loopback or reserved addresses",
                    "policies.federation.private_addresses",
                )
            )
    return findings


def _federation_without_partners(topology: Topology) -> list[Finding]:
    federation = topology.policies.federation
    if not federation.enabled or federation.allow or federation.open or federation.partners:
        return []
    if federation.partner_discovery:
        return []  # FEDERATION-DISCOVERY says worse
    edges = [ref for ref in topology.hosts() if "edge" in ref.host.roles]
    if edges:
        ports = sorted({ref.host.ports.edge_federation_tls for ref in edges})
        opened = (
            f"edge {', '.join(ref.name for ref in edges)} still opens its federation port "
            f"(TCP {', '.join(map(str, ports))}) to the internet"
        )
    else:
        opened = "the federation port is planned on an edge"
    return [
        Finding(
            "FEDERATION-NO-PARTNERS",
            f"federation is on with an empty allow-list: no partner can federate, yet {opened}",
            "policies.federation.allow",
        )
    ]


def _single_frontend(topology: Topology) -> list[Finding]:
    wanted = topology.requirements
    if wanted is None or not wanted.high_availability:
        return []
    findings: list[Finding] = []
    for name, pool in topology.pools.items():
        frontends = [h.name for h in pool.members if "frontend" in h.roles]
        if len(frontends) == 1:
            findings.append(
                Finding(
                    "POOL-SINGLE-FRONTEND",
                    f"pool {name} has one Front End ({frontends[0]}) while high availability "
                    "is required: losing that server stops the pool",
                    f"pools.{name}.members",
                )
            )
    return findings


def _logging_host(topology: Topology) -> list[Finding]:
    findings: list[Finding] = []
    for ref in topology.hosts():
        if "logging-controller" not in ref.host.roles:
            continue
        shared = [role for role in USER_FACING_ROLES if role in ref.host.roles]
        if shared:
            findings.append(
                Finding(
                    "LOGGING-COLLOCATED",
                    f"logging controller {ref.name} also runs {', '.join(shared)}, "
                    "which users reach",
                    f"{ref.path}.roles",
                )
            )
    return findings


def _director(topology: Topology) -> list[Finding]:
    hosts = topology.hosts()
    enterprise = any(
        pool.edition == "enterprise" and any("frontend" in h.roles for h in pool.members)
        for pool in topology.pools.values()
    )
    remote = topology.policies.external_access.remote_users and any(
        "edge" in ref.host.roles for ref in hosts
    )
    if not (enterprise and remote) or any("director" in ref.host.roles for ref in hosts):
        return []
    return [
        Finding(
            "REMOTE-NO-DIRECTOR",
            "remote users sign in through the edge straight to the Enterprise Front End "
            "pools: no director in between",
            "pools",
        )
    ]


def _lockout(topology: Topology) -> list[Finding]:
    lockout = topology.policies.lockout
    if lockout is None:
        return [
            Finding(
                "LOCKOUT-MISSING",
                "no [policies.lockout]: the servers' built-in limits apply (10 failures a "
                "minute per source, 10 minute ban)",
                "policies.lockout",
            )
        ]
    findings: list[Finding] = []
    if lockout.directory_threshold and lockout.threshold >= lockout.directory_threshold:
        findings.append(
            Finding(
                "LOCKOUT-ABOVE-DIRECTORY",
                f"threshold {lockout.threshold} is not below the directory's "
                f"{lockout.directory_threshold}",
                "policies.lockout.threshold",
            )
        )
    if lockout.threshold > MAX_FAILURES_PER_MINUTE:
        findings.append(
            Finding(
                "LOCKOUT-WEAK",
                f"{lockout.threshold} failures a minute are allowed per source",
                "policies.lockout.threshold",
            )
        )
    if lockout.duration < MIN_BAN_SECONDS:
        findings.append(
            Finding(
                "LOCKOUT-WEAK",
                f"a banned source is refused for {lockout.duration:g}s only",
                "policies.lockout.duration",
            )
        )
    return findings


def _pools(topology: Topology) -> list[Finding]:
    findings: list[Finding] = []
    paired = {n for n, p in topology.pools.items() if p.paired_with}
    paired |= {p.paired_with for p in topology.pools.values() if p.paired_with}
    ha = topology.requirements is not None and topology.requirements.high_availability
    for name, pool in topology.pools.items():
        frontend = any("frontend" in h.roles for h in pool.members)
        if pool.edition == "enterprise" and frontend and name not in paired:
            findings.append(
                Finding(
                    "POOL-UNPAIRED",
                    f"Enterprise pool {name} has no paired pool"
                    + (" and high availability is required" if ha else ""),
                    f"pools.{name}.paired_with",
                    "high" if ha else None,
                )
            )
    if not any("logging-controller" in r.host.roles for r in topology.hosts()):
        findings.append(
            Finding(
                "LOGGING-NO-CONTROLLER",
                "no host has the logging-controller role",
                "pools",
            )
        )
    return findings


def _archiving(topology: Topology) -> list[Finding]:
    wanted = topology.requirements
    if wanted is None or not wanted.compliance_archiving:
        return []
    archiving = topology.policies.archiving
    findings: list[Finding] = []
    federation = topology.policies.federation.enabled
    if archiving.mode == "off":
        findings.append(
            Finding(
                "ARCHIVING-OFF-COMPLIANCE",
                "compliance archiving is required but archiving is off",
                "policies.archiving.mode",
            )
        )
    elif archiving.mode == "internal" and federation:
        findings.append(
            Finding(
                "ARCHIVING-OFF-COMPLIANCE",
                "conversations with federated partners are not archived",
                "policies.archiving.mode",
            )
        )
    elif archiving.mode == "federated":
        findings.append(
            Finding(
                "ARCHIVING-OFF-COMPLIANCE",
                "conversations inside the organisation are not archived",
                "policies.archiving.mode",
            )
        )
    if archiving.mode != "off" and not archiving.critical:
        findings.append(
            Finding(
                "ARCHIVING-NOT-CRITICAL",
                "messages are delivered even when they cannot be archived",
                "policies.archiving.critical",
            )
        )
    return findings


def _exposure(topology: Topology, source: str) -> list[Finding]:
    findings: list[Finding] = []
    for ref in topology.hosts():
        edge = "edge" in ref.host.roles
        if ref.host.admin:
            address, port = split_endpoint(ref.host.admin)
            if not is_loopback(address):
                findings.append(
                    Finding(
                        "ADMIN-EXPOSED",
                        f"{ref.name}'s admin interface listens on {ref.host.admin}",
                        f"{source}: {ref.path}.admin",
                    )
                )
            if edge:
                findings.append(
                    Finding(
                        "EDGE-EXTRA-PORTS",
                        f"edge {ref.name} opens an admin interface (TCP {port})",
                        f"{source}: {ref.path}.admin",
                    )
                )
        if edge:
            for index, extra in enumerate(ref.host.extra_ports):
                findings.append(
                    Finding(
                        "EDGE-EXTRA-PORTS",
                        f"edge {ref.name} opens {extra.protocol.upper()} {extra.port} on its "
                        f"{extra.interface} interface ({extra.purpose})",
                        f"{source}: {ref.path}.extra_ports[{index}]",
                    )
                )
    return findings


def _certificates(topology: Topology, topology_path: Path, now: dt.datetime) -> list[Finding]:
    source = str(topology_path)
    findings: list[Finding] = []
    ca_path = ca_dir(topology_path, topology) / "ca.crt"
    org_ca = None
    if ca_path.exists():
        found, org_ca = certificate_findings(
            ca_path, f"{source}: files.ca", now, what="CA certificate"
        )
        findings += found
    for ref in topology.hosts():
        if ref.host.certificate:
            path = resolve(topology_path, ref.host.certificate)
            found, _leaf = certificate_findings(path, f"{source}: {ref.path}.certificate", now)
            findings += found
        findings += _edge_certificate(topology, topology_path, ref, org_ca, now)
    return findings


def _edge_certificate(
    topology: Topology,
    topology_path: Path,
    ref: HostRef,
    org_ca: x509.Certificate | None,
    now: dt.datetime,
) -> list[Finding]:
    external = ref.edge_external
    policies = topology.policies
    in_use = (
        policies.external_access.remote_users
        or policies.federation.enabled
        or policies.external_access.public_im
    )
    if external is None or "edge" not in ref.host.roles or not in_use:
        return []
    where = f"{topology_path}: {ref.path}.edge.external.certificate"
    if not external.certificate:
        return [
            Finding("EDGE-CERT-MISSING", f"edge {ref.name} names no external certificate", where)
        ]
    path = resolve(topology_path, external.certificate)
    findings, leaf = certificate_findings(path, where, now, what="external certificate")
    if leaf is None:
        return findings
    if is_self_signed(leaf):
        findings.append(Finding("EDGE-CERT-UNTRUSTED", f"{path} is self-signed", where))
    elif issued_by(leaf, org_ca):
        findings.append(
            Finding(
                "EDGE-CERT-UNTRUSTED",
                f"{path} was issued by the organisation's internal CA",
                where,
            )
        )
    return findings
