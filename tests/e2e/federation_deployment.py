"""Two organisations that federate, each with a Front End and an Edge, on loopback.

org-a.test runs on 127.0.1.x and org-b.test on 127.0.2.x (x=1: the Front End
and the Edge's internal side, x=2: the Edge's external side). Each has its
own topology, CA, data directories and processes. A real DNS server
(Debian's dnsmasq) serves both organisations' external zones as ``conclave
topology publish`` writes them, and the Edges find each other through it:
org-a by DNS SRV ``_sipfederationtls._tcp.org-b.test``, org-b through the
fixed partner Edge FQDN its topology names (an A record).
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from conclave.pki import create_ca
from conclave.topology.document import dumps_toml

from .dnsmasq import Dnsmasq
from .edge_deployment import free_ports
from .server import conclave
from .sipclient import SipClient
from .test_roles import RoleProcess

PASSWORDS = {"alice": "Wonderland-Tea-41", "bob": "Builder-Crane-52", "carol": "Christmas-Song-63"}
ORGS = {"a": "127.0.1", "b": "127.0.2"}


@dataclass
class Org:
    name: str
    root: Path
    net: str
    fe_port: int
    internal_port: int
    access_port: int
    federation_port: int

    @property
    def domain(self) -> str:
        return f"org-{self.name}.test"

    @property
    def topology(self) -> Path:
        return self.root / "topology.toml"

    @property
    def ca(self) -> str:
        return str(self.root / "ca" / "ca.crt")

    def client(self) -> SipClient:
        """A user's client inside the organisation, on its Front End."""
        return SipClient(
            "tls", self.fe_port, domain=self.domain, ca=self.ca, host=f"{self.net}.9",
            server=f"{self.net}.1", server_name=f"fe.{self.domain}",
        )  # fmt: skip

    def document(
        self, partners: list[dict[str, Any]], nameserver: str, discovery_ca: str = ""
    ) -> dict[str, Any]:
        d, net = self.domain, self.net
        return {
            "organisation": {"name": f"Org {self.name.upper()}", "sip_domains": [d]},
            "requirements": {"users": 100, "federation": True},
            "sites": {"hq": {}},
            "pools": {
                "se": {"site": "hq", "edition": "standard", "members": [{
                    "name": f"fe-{self.name}", "fqdn": f"fe.{d}", "address": f"{net}.1",
                    "roles": ["frontend"], "ports": {"sip_tls": self.fe_port}}]},
                "edge": {"site": "hq", "edition": "enterprise", "members": [{
                    "name": f"edge-{self.name}", "fqdn": f"edge.{d}", "address": f"{net}.1",
                    "roles": ["edge"],
                    "ports": {"edge_internal_tls": self.internal_port,
                              "edge_access_tls": self.access_port,
                              "edge_federation_tls": self.federation_port},
                    "edge": {"internal": {"fqdn": f"edge-int.{d}", "address": f"{net}.1"},
                             "external": {"fqdn": f"sip.{d}", "address": f"{net}.2"}}}]},
            },
            "policies": {
                "federation": {
                    "enabled": True, "partners": partners, "block": ["blocked.test"],
                    "nameservers": [nameserver] if nameserver else [],
                    "private_addresses": True,
                    "partner_discovery": bool(discovery_ca), "discovery_ca": discovery_ca,
                },
                "presence": {"external_watchers": "allow"},
            },
        }  # fmt: skip


@dataclass
class KamailioPartner:
    """org-k.test: a partner that is not Conclave (its proxy is Kamailio, started by the
    tests that need it), with its own CA and certificate, found by DNS SRV."""

    root: Path
    tls_port: int
    udp_port: int
    host: str = "127.0.3.2"
    domain: str = "org-k.test"

    @property
    def ca(self) -> Path:
        return self.root / "ca" / "ca.crt"

    def zone(self) -> str:
        """The partner's own external zone (it is not Conclave: written by hand)."""
        return (
            f"local=/{self.domain}/\n"
            f"srv-host=_sipfederationtls._tcp.{self.domain},sip.{self.domain},{self.tls_port},0,0\n"
            f"host-record=sip.{self.domain},{self.host}\n"
        )


@dataclass
class Federation:
    orgs: dict[str, Org]
    dns: Dnsmasq
    kamailio: KamailioPartner
    processes: list[RoleProcess] = field(default_factory=list)

    def start(self, org: str, host: str, ready: str) -> RoleProcess:
        topology = self.orgs[org].topology
        process = RoleProcess(["serve", "--topology", str(topology), "--host", host]).start()
        self.processes.append(process)
        process.event(ready)
        return process

    def edge(self, org: str) -> RoleProcess:
        return next(p for p in self.processes if f"edge-{org}" in p.args)


def partner_entry(me: Org, other: Org, *, fixed_edge: bool) -> dict[str, Any]:
    entry: dict[str, Any] = {
        "domain": other.domain, "ca": f"../{other.name}/ca/ca.crt", "presence": True,
    }  # fmt: skip
    if fixed_edge:
        entry |= {"edge": f"sip.{other.domain}", "port": other.federation_port}
    return entry


def build(base: Path, *, discovery: bool = False) -> Federation:
    """Both organisations; org-k (Kamailio) is a listed partner of org-a, or with
    ``discovery`` one org-a discovers (its CA is then org-a's discovery CA)."""
    orgs = {}
    for name, net in ORGS.items():
        root = base / name
        root.mkdir()
        # The CA first: each organisation's topology names the other's CA file.
        create_ca(root / "ca", common_name=f"Conclave CA for Org {name.upper()}")
        orgs[name] = Org(name, root, net, *free_ports(4))
    a, b = orgs["a"], orgs["b"]
    k_root = base / "k"
    create_ca(k_root / "ca", common_name="Kamailio partner CA for Org K")
    tls_port, udp_port = free_ports(2)
    kamailio = KamailioPartner(k_root, tls_port, udp_port)
    k_entry = {"domain": kamailio.domain, "ca": "../k/ca/ca.crt"}
    entries = {
        "a": [partner_entry(a, b, fixed_edge=False), *([] if discovery else [k_entry])],
        "b": [partner_entry(b, a, fixed_edge=True)],
    }
    discovery_ca = {"a": "../k/ca/ca.crt" if discovery else "", "b": ""}
    zones = [kamailio.zone()]
    for name, org in orgs.items():
        org.topology.write_text(dumps_toml(org.document(entries[name], "", discovery_ca[name])))
        out = org.root / "published"
        conclave("topology", "publish", str(org.topology), "--output", str(out))
        zones.append((out / "dns-external.dnsmasq.conf").read_text())
    conf = base / "dns.conf"
    conf.write_text("\n".join(zones))
    dns = Dnsmasq(conf).start()
    for name, org in orgs.items():
        nameserver = f"127.0.0.1:{dns.port}"
        document = org.document(entries[name], nameserver, discovery_ca[name])
        org.topology.write_text(dumps_toml(document))
        conclave("topology", "provision", str(org.topology), "--all")
        for user, password in PASSWORDS.items():
            conclave(
                "user", "add", user, "--dir", str(org.root / "hosts" / f"fe-{name}"),
                "--password-stdin", stdin=password + "\n",
            )  # fmt: skip
    return Federation(orgs, dns, kamailio)


@pytest.fixture(scope="module")
def federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    """Both organisations provisioned and running, DNS served by dnsmasq."""
    yield from running(tmp_path_factory.mktemp("federation"), discovery=False)


@pytest.fixture(scope="module")
def discovering_federation(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Federation]:
    """The same, with org-a discovering org-k instead of listing it."""
    yield from running(tmp_path_factory.mktemp("discovery"), discovery=True)


def running(base: Path, *, discovery: bool) -> Iterator[Federation]:
    deployment = build(base, discovery=discovery)
    try:
        for name in deployment.orgs:
            deployment.start(name, f"fe-{name}", "ready")
            deployment.start(name, f"edge-{name}", "edge ready")
        yield deployment
    finally:
        for process in deployment.processes:
            if process.proc is not None and process.proc.poll() is None:
                process.stop()
        deployment.dns.stop()
        shutil.rmtree(base / "a" / "published", ignore_errors=True)
