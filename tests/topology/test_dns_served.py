"""The DNS zones ``topology publish`` writes, served by a real DNS server and resolved.

``topology publish --output`` writes each zone as dnsmasq configuration;
Debian's ``dnsmasq`` serves it on loopback and :class:`SipResolver` (dnspython)
finds what clients, pool members and federated partners would: every member
of an enterprise pool behind its FQDN (DNS load balancing), the home pool for
``_sip._tls``, and the access edge for ``_sipfederationtls._tcp``.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

from conclave.topology.dnsconf import dnsmasq_conf
from conclave.topology.document import topology_from_mapping
from conclave.topology.publish import publish
from conclave.transport.resolve import FEDERATION_SERVICE, SIP_TLS_SERVICE, Hop, SipResolver
from tests.commands.test_topology import conclave
from tests.e2e.dnsmasq import Dnsmasq

from .helpers import write
from .test_publish import full_topology


def test_the_zones_as_dnsmasq_configuration() -> None:
    records = publish(topology_from_mapping(full_topology())).dns
    internal = dnsmasq_conf(records, "internal").splitlines()
    assert (
        "host-record=ee1.example.test,10.1.0.1  # pool ee1: DNS load balancing over its members"
        in internal
    )
    assert any(
        line.startswith("srv-host=_sipinternaltls._tcp.example.test,fe1.example.test,5061,0,0")
        for line in internal
    )
    assert "local=/ee1.example.test/" in internal
    external = dnsmasq_conf(records, "external")
    assert "srv-host=_sipfederationtls._tcp.example.test,sip.example.test,5061,0,0" in external
    assert "10.1.0.1" not in external  # split-brain: nothing internal outside


def test_published_zones_resolve_through_a_real_dns_server(tmp_path: Path) -> None:
    path = write(tmp_path, full_topology())
    out = tmp_path / "published"
    result = conclave("topology", "publish", str(path), "--output", str(out))
    assert result.exit_code == 0, result.output
    for name in ("dns-internal.dnsmasq.conf", "dns-external.dnsmasq.conf"):
        assert str(out / name) in result.stdout

    async def internal(port: int) -> tuple[list[str], list[Hop]]:
        # The internal zone holds internal addresses by design.
        resolver = SipResolver(["127.0.0.1"], port=port, allow_private=True)
        members = await resolver.addresses("ee1.example.test")
        return members, await resolver.servers("example.test", SIP_TLS_SERVICE)

    with Dnsmasq(out / "dns-internal.dnsmasq.conf") as dns:
        members, clients = asyncio.run(internal(dns.port))
    assert sorted(members) == ["10.1.0.1", "10.1.0.2"]
    # The home pool first (priority 0), then the others.
    assert clients[0] == Hop("fe1.example.test", "10.0.0.1", 5061)
    assert {h.address for h in clients[1:]} >= {"10.1.0.1", "10.1.0.2"}

    async def external(port: int) -> list[Hop]:
        resolver = SipResolver(["127.0.0.1"], port=port, allow_private=True)
        return await resolver.servers("example.test", FEDERATION_SERVICE)

    with Dnsmasq(out / "dns-external.dnsmasq.conf") as dns:
        assert asyncio.run(external(dns.port)) == [Hop("sip.example.test", "203.0.113.10", 5061)]
