"""``topology publish``: DNS, firewall and certificates follow the topology exactly."""

from __future__ import annotations

import json
from pathlib import Path

from conclave.topology.catalogue import host_listeners
from conclave.topology.document import topology_from_mapping
from conclave.topology.publish import DnsRecord, publish, render_json

from .helpers import base, enterprise, host, with_edge, write


def full_topology() -> dict[str, object]:
    doc = with_edge(enterprise(base(), "ee1", "hq"))
    doc = enterprise(doc, "ee2", "dr", "10.2.0")
    doc["pools"]["ee1"]["paired_with"] = "ee2"
    doc["pools"]["ee1"]["members"].append(host("ee1-fe2", "10.1.0.2", ["frontend"]))
    doc["policies"]["federation"] = {"enabled": True, "allow": ["partner.test"]}
    doc["requirements"]["federation"] = True
    doc["pools"]["se1"]["members"][0]["admin"] = "127.0.0.1:9100"
    return doc


def test_dns_records_follow_the_topology() -> None:
    topology = topology_from_mapping(full_topology())
    records = publish(topology).dns
    internal = {(r.name, r.type, r.value) for r in records if r.zone == "internal"}
    external = {(r.name, r.type, r.value) for r in records if r.zone == "external"}
    for ref in topology.hosts():
        assert (ref.host.fqdn, "A", ref.host.address) in internal
    assert ("ee1.example.test", "A", "10.1.0.1") in internal
    assert ("ee1.example.test", "A", "10.1.0.2") in internal  # DNS load balancing
    # The first Front End pool is the home pool: priority 0, the others after it.
    assert ("_sipinternaltls._tcp.example.test", "SRV", "0 0 5061 fe1.example.test.") in internal
    assert ("_sipinternaltls._tcp.example.test", "SRV", "10 0 5061 ee1.example.test.") in internal
    assert ("_sip._tls.example.test", "SRV", "0 0 5061 fe1.example.test.") in internal
    assert ("sip.example.test", "A", "10.0.0.1") in internal
    assert external == {
        ("sip.example.test", "A", "203.0.113.10"),
        ("_sip._tls.example.test", "SRV", "0 0 443 sip.example.test."),
        ("_sipfederationtls._tcp.example.test", "SRV", "0 0 5061 sip.example.test."),
    }


def test_no_edge_no_external_zone_and_no_plain_text_records() -> None:
    records = publish(topology_from_mapping(base())).dns
    assert all(r.zone == "internal" for r in records)
    assert not any(r.name.startswith(("_sip._udp", "_sip._tcp")) for r in records)
    doc = base()
    doc["pools"]["se1"]["transports"] = ["tls", "udp"]
    records = publish(topology_from_mapping(doc)).dns
    assert DnsRecord(
        "internal", "_sip._udp.example.test", "SRV", "0 0 5060 fe1.example.test.",
        "clients inside find pool se1",
    ) in records  # fmt: skip


def test_firewall_rules_open_exactly_the_listeners() -> None:
    topology = topology_from_mapping(full_topology())
    rules = publish(topology).firewall
    for ref in topology.hosts():
        for listener in host_listeners(ref, topology):
            matching = [
                r
                for r in rules
                if r.destination.startswith(f"{ref.name} {listener.address} ")
                and r.port == listener.port
                and r.protocol == listener.protocol.upper()
            ]
            if listener.interface == "loopback":
                assert matching == [], listener  # loopback: no rule at all
            else:
                assert matching, listener
    inbound_ports = {
        (r.port, r.protocol)
        for r in rules
        if r.firewall == "external" and r.source_zone == "internet"
    }
    # sign-in, federation, and the media relay: TURN (UDP, TCP) and its relay ports
    assert inbound_ports == {(443, "TCP"), (5061, "TCP"), (3478, "UDP"), (3478, "TCP"),
                             (49152, "UDP")}  # fmt: skip
    [relay] = [r for r in rules if r.port == 49152]
    assert relay.ports == "49152-65535" and "allow UDP 49152-65535" in publish(topology).to_text()
    edge_to_pool = [
        r for r in rules if r.source_zone == "perimeter" and r.destination_zone == "internal"
    ]
    assert {r.port for r in edge_to_pool} == {5061, 6514}  # next hop, and logging
    assert all(r.firewall == "internal" for r in edge_to_pool)
    partners = [r for r in rules if r.port == 5061 and r.source_zone == "internet"]
    assert "partner.test" in partners[0].source
    backend = [r for r in rules if r.port == 5432]
    assert {r.destination for r in backend} == {"back end db.example.test"}
    assert len(backend) == 3  # every Front End of both enterprise pools


def test_certificates_each_host_needs() -> None:
    topology = topology_from_mapping(full_topology())
    needs = {(n.host, n.interface): n for n in publish(topology).certificates}
    assert needs[("fe1", "internal")].names == (
        "fe1.example.test",
        "example.test",
        "sip.example.test",
    )
    assert needs[("ee1-fe2", "internal")].names == (
        "ee1-fe2.example.test", "ee1.example.test", "example.test", "sip.example.test",
    )  # fmt: skip
    assert needs[("log1", "internal")].names == ("log1.example.test",)
    external = needs[("edge1", "external")]
    assert external.issuer == "public CA"
    assert external.names == ("sip.example.test",)
    assert all(n.issuer == "internal CA" for k, n in needs.items() if k[1] == "internal")


def test_text_and_json_agree(tmp_path: Path) -> None:
    doc = full_topology()
    path = write(tmp_path, doc)
    topology = topology_from_mapping(doc)
    publication = publish(topology, path)
    data = json.loads(render_json(publication))
    assert len(data["dns"]) == len(publication.dns)
    assert len(data["firewall"]) == len(publication.firewall)
    assert data["firewall"][0]["direction"] == publication.firewall[0].direction
    text = publication.to_text()
    for record in publication.dns:
        assert record.name in text and record.value in text
    for need in publication.certificates:
        assert ", ".join(need.names) in text
