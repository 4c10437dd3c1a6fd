"""The certificate each host needs, and whether the certificates in use cover it.

Every host presents one *internal* certificate, from the organisation's CA,
used both as a TLS server certificate and for mutual TLS between servers
(it carries serverAuth and clientAuth). Its names:

* the host's FQDN, always;
* Front End and Director: the pool FQDN (enterprise pools), every SIP
  domain and ``sip.<domain>`` (clients connect to those names);
* Mediation and Chat: the pool FQDN (enterprise pools);
* Edge: the internal interface's FQDN and the edge pool's FQDN.

An edge also presents an *external* certificate on its internet-facing
interface. Partners and remote users do not trust our CA, so it must come
from a public CA and name the access FQDN and, with remote access,
``sip.<domain>`` for every SIP domain.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from conclave.pki import CertInfo, PkiError, describe, load_certificates
from conclave.pki.validate import uncovered

from .layout import certificate_in_use, resolve
from .model import HostRef, Topology


@dataclass(frozen=True)
class CertificateNeed:
    """One certificate a host must present."""

    host: str
    interface: Literal["internal", "external"]
    subject: str
    """the common name to request"""
    names: tuple[str, ...]
    """every DNS name it must carry (subjectAltName)"""
    issuer: Literal["internal CA", "public CA"]
    usage: str
    path: str
    """the document path of the setting that names its file"""
    file: str | None = field(default=None, compare=False)
    """the certificate in use, if there is one"""


def _dedupe(names: list[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(n.lower() for n in names))


def internal_names(ref: HostRef, topology: Topology) -> tuple[str, ...]:
    """The names the host's internal certificate must carry, the host FQDN first."""
    host, roles = ref.host, set(ref.host.roles)
    names = [host.fqdn]
    enterprise = ref.pool.edition == "enterprise" and ref.pool.fqdn
    if roles & {"frontend", "director"}:
        if enterprise:
            names.append(ref.pool_fqdn)
        for domain in topology.organisation.sip_domains:
            names += [domain, f"sip.{domain}"]
    if roles & {"mediation", "chat"} and enterprise:
        names.append(ref.pool_fqdn)
    if "edge" in roles:
        if host.edge is not None and host.edge.internal is not None:
            names.append(host.edge.internal.fqdn)
        if enterprise:
            names.append(ref.pool_fqdn)
    return _dedupe(names)


def external_names(ref: HostRef, topology: Topology) -> tuple[str, ...]:
    """The names an edge's external certificate must carry (empty for other hosts)."""
    edge = ref.host.edge
    if "edge" not in ref.host.roles or edge is None or edge.external is None:
        return ()
    names = [edge.external.fqdn]
    if topology.policies.external_access.remote_users:
        names += [f"sip.{domain}" for domain in topology.organisation.sip_domains]
    return _dedupe(names)


def certificate_needs(
    topology: Topology, topology_path: Path | None = None
) -> list[CertificateNeed]:
    """What every host needs, in document order (edges: internal, then external)."""
    needs: list[CertificateNeed] = []
    for ref in topology.hosts():
        in_use = certificate_in_use(topology_path, topology, ref) if topology_path else None
        names = internal_names(ref, topology)
        needs.append(
            CertificateNeed(
                host=ref.name,
                interface="internal",
                subject=names[0],
                names=names,
                issuer="internal CA",
                usage="TLS server and mutual TLS between servers (serverAuth, clientAuth)",
                path=f"{ref.path}.certificate",
                file=str(in_use) if in_use else None,
            )
        )
        external = external_names(ref, topology)
        if external:
            edge = ref.host.edge
            named = edge.external.certificate if edge and edge.external else ""
            file = str(resolve(topology_path, named)) if named and topology_path else None
            needs.append(
                CertificateNeed(
                    host=ref.name,
                    interface="external",
                    subject=external[0],
                    names=external,
                    issuer="public CA",
                    usage="TLS server for remote users, mutual TLS with partners",
                    path=f"{ref.path}.edge.external.certificate",
                    file=file,
                )
            )
    return needs


def read_leaf(path: Path) -> CertInfo:
    """The first certificate in a PEM file, summarised; :class:`PkiError` if unreadable."""
    certificates = load_certificates(path)
    if not certificates:
        raise PkiError(f"no certificate in {path}")
    return describe(certificates[0])


def coverage_problems(need: CertificateNeed) -> list[str]:
    """Why the certificate in use does not serve ``need`` (empty: it does, or none is in use)."""
    if need.file is None:
        return []
    try:
        info = read_leaf(Path(need.file))
    except PkiError as exc:
        return [str(exc).splitlines()[0]]
    missing = uncovered(info, need.names)
    if missing:
        return [f"certificate {need.file} does not cover {', '.join(missing)}"]
    return []
